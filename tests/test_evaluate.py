"""One fold's fit: early stopping on the validation fold, then the refit for the epochs it chose."""
import numpy as np

from esc50ann.evaluate import fit_fold
from esc50ann.folds import Split


def test_refit_trains_for_exactly_the_epochs_early_stopping_chose():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 8)), rng.integers(0, 3, 120)  # noise: the validation loss turns early
    split = Split(test_fold=3, val_fold=2, train=np.arange(60), val=np.arange(60, 100), test=np.arange(100, 120))
    params = dict(hidden_layer_sizes=(32,), loss="cross_entropy", solver="adam", learning_rate=0.01,
                  batch_size=10, max_epochs=200, patience=3)
    result = fit_fold(X, y, split, params, refit=True)
    assert 1 <= result.best_epoch < 200 and len(result.history) == result.best_epoch + 3
    # the model that scores the test fold is the refit on train + validation, for best_epoch epochs
    assert result.model.n_iter_ == result.best_epoch
    np.testing.assert_array_equal(result.proba, result.model.predict_proba(X[split.test]))


def test_without_refit_the_early_stopped_model_is_kept():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 8)), rng.integers(0, 3, 120)
    split = Split(test_fold=3, val_fold=2, train=np.arange(60), val=np.arange(60, 100), test=np.arange(100, 120))
    params = dict(hidden_layer_sizes=(32,), loss="cross_entropy", solver="adam", learning_rate=0.01,
                  batch_size=10, max_epochs=200, patience=3)
    result = fit_fold(X, y, split, params, refit=False)
    assert result.model.n_iter_ == result.best_epoch + 3 and result.model.best_epoch_ == result.best_epoch
