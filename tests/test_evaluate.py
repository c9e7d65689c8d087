"""One fold's fit: early stopping on the validation fold, then the refit for the epochs it chose."""
import numpy as np
import pytest

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


def test_an_ensemble_trained_in_parts_is_the_ensemble_trained_whole():
    from esc50ann.evaluate import join_parts, splittable

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 6)), np.arange(90) % 3
    X[np.arange(90), y] += 1.0
    split = Split(test_fold=3, val_fold=None, train=np.arange(60), val=np.arange(0), test=np.arange(60, 90))
    params = dict(hidden_layer_sizes=(8,), solver="adam", learning_rate=0.01, max_epochs=4, patience=None,
                  n_networks=3, mixup=0.2, lr_schedule="cosine", dtype="float64")
    whole = fit_fold(X, y, split, params)
    rows = []
    parts = [fit_fold(X, y, split, params, networks=[0, 1], callback=rows.append),
             fit_fold(X, y, split, params, networks=[2], callback=rows.append)]
    joined = join_parts(parts)
    assert splittable(split, params) == 3 and len(joined.model.networks_) == 3
    for a, b in zip(whole.model.networks_, joined.model.networks_):
        for p, q in zip(a.params, b.params):
            np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(joined.proba, whole.proba, rtol=1e-9)
    np.testing.assert_allclose(joined.model.predict_proba(X[split.test]), whole.proba, rtol=1e-9)
    assert [[r["network"] for r in h] for h in joined.histories] == [[j] * 4 for j in (1, 2, 3)]
    for h, g in zip(whole.histories, joined.histories):
        assert [r["loss"] for r in g] == pytest.approx([r["loss"] for r in h], rel=1e-10)
    assert sorted({r["network"] for r in rows}) == [1, 2, 3]  # progress rows say which network of the whole
    early = Split(test_fold=3, val_fold=2, train=np.arange(40), val=np.arange(40, 60), test=np.arange(60, 90))
    assert splittable(early, {**params, "patience": 3}) == 1  # early stopping: the ensemble stops as a whole


def test_the_last_round_of_folds_is_cut_into_parts_that_fill_the_workers(monkeypatch):
    from esc50ann import parallel
    from esc50ann.parallel import Runner

    monkeypatch.setattr(parallel, "cpu_count", lambda: 8)  # workers as asked, whatever this machine has

    assert Runner(2).parts([3, 3, 3]) == [(0, range(3)), (1, range(3)), (2, range(2)), (2, range(2, 3))]
    assert Runner(2).parts([3] * 5)[4:] == [(4, range(2)), (4, range(2, 3))]
    assert Runner(2).parts([1, 1, 1]) == [(0, range(1)), (1, range(1)), (2, range(1))]  # nothing to cut
    assert Runner(2).parts([3, 3]) == [(0, range(3)), (1, range(3))]  # the rounds are full
    assert Runner(1).parts([3, 3, 3]) == [(0, range(3)), (1, range(3)), (2, range(3))]
    assert Runner(4).parts([3, 3, 3]) == [(1, range(3)), (2, range(3)), (0, range(2)), (0, range(2, 3))]
