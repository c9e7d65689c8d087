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


def test_augmented_copies_of_training_clips_only_are_trained_on(monkeypatch):
    from esc50ann import evaluate

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    # copy k of clip i holds 1000 * i + k + 1 in its first column, so every trained row names its clip
    X_aug = np.repeat(X[:, None, :], 2, axis=1)
    X_aug[:, :, 0] = 1000.0 * np.arange(30)[:, None] + np.array([1.0, 2.0])
    split = Split(test_fold=3, val_fold=2, train=np.arange(10), val=np.arange(10, 20), test=np.arange(20, 30))
    seen = []
    real_fit = evaluate.ANNClassifier.fit

    def spy(self, X_fit, y_fit, **kw):
        seen.append((X_fit.copy(), y_fit.copy(), kw.get("X_val")))
        return real_fit(self, X_fit, y_fit, **kw)

    monkeypatch.setattr(evaluate.ANNClassifier, "fit", spy)
    params = dict(hidden_layer_sizes=(4,), max_epochs=3, patience=2)
    fit_fold(X, y, split, params, refit=True, X_aug=X_aug)
    (first, y_first, X_val), (refit, _, _) = seen
    copies = lambda rows: {int(v) // 1000 for v in rows[:, 0] if v >= 1}  # noqa: E731 (clips whose copies appear)
    assert len(first) == 10 * 3 and copies(first) == set(range(10))  # the training fold: clips and copies
    np.testing.assert_array_equal(y_first, np.concatenate([y[:10], np.repeat(y[:10], 2)]))
    np.testing.assert_array_equal(X_val, X[10:20])  # validation rows as they are, never augmented
    assert len(refit) == 20 * 3 and copies(refit) == set(range(20))  # the refit adds the validation fold's
    assert not copies(refit) & set(split.test)  # no copy of a test clip, ever
