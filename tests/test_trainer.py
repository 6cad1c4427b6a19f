"""Oracle tests for the trainer: closed forms, scikit-learn, finite differences."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from core import kernels
from core.config import TrainConfig
from core.data import Dataset, load_digits_dataset
from core.metrics import first_step_closed_form
from core.objective import make_pass, objective_and_gradient, smoothness
from core.run import footprint
from core.runs import run_key
from core.trainer import TrainingCancelled, snapshot_schedule, train


BACKENDS = ["numpy"] + (["numba"] if kernels.AVAILABLE else [])


def make_dataset(x, y, x_test=None, y_test=None, n_classes=None) -> Dataset:
    """A Dataset from arrays, fingerprinted by content like the real ones."""
    x = np.ascontiguousarray(x, dtype=np.uint8)
    y = np.asarray(y, dtype=np.int64)
    if x_test is None:
        x_test, y_test = x[:20], y[:20]
    K = n_classes or int(y.max()) + 1
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:12]
    return Dataset(
        name="synthetic", x_train=x, y_train=y,
        x_test=np.ascontiguousarray(x_test, dtype=np.uint8),
        y_test=np.asarray(y_test, dtype=np.int64),
        class_names=tuple(str(k) for k in range(K)), source="synthetic test data",
        fingerprint=digest, is_fallback=False,
    )


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_dataset()


@pytest.fixture(scope="module")
def unbalanced(digits) -> Dataset:
    """Digits with class k kept at a share growing with k: class sizes differ up to 10x."""
    rng = np.random.default_rng(7)
    keep = np.concatenate([
        rng.choice(np.flatnonzero(digits.y_train == k), size=12 + 12 * k, replace=False)
        for k in range(10)
    ])
    return make_dataset(digits.x_train[keep], digits.y_train[keep],
                        digits.x_test, digits.y_test)


def design(ds: Dataset, run) -> tuple[np.ndarray, np.ndarray]:
    idx = run.train_indices
    return ds.x_train[idx].reshape(len(idx), -1) / 255.0, ds.y_train[idx]


@pytest.mark.parametrize("model", ["softmax", "ovr"])
@pytest.mark.parametrize("balance", ["balanced", "unbalanced"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("lr", ["auto", 0.7])
@pytest.mark.parametrize("backend", BACKENDS)
def test_first_step_is_the_closed_form_contrast_of_class_means(
    digits, unbalanced, model, balance, dtype, tol, lr, backend
):
    ds = digits if balance == "balanced" else unbalanced
    cfg = TrainConfig(model=model, n_train=300, iterations=3, learning_rate=lr,
                      dtype=dtype, n_val=50)
    run = train(ds, cfg, backend=backend)
    x, y = design(ds, run)
    W1, b1 = first_step_closed_form(x, y, ds.n_classes, run.learning_rate, model)
    got = run.weights(1).reshape(ds.n_classes, -1)
    scale = np.abs(W1).max()
    assert scale > 1e-3  # the identity is not trivially satisfied by tiny weights
    assert np.abs(got - W1).max() <= tol
    assert np.abs(run.bias(1) - b1).max() <= tol
    if balance == "unbalanced":
        counts = np.bincount(y, minlength=10)
        assert counts.max() >= 5 * counts.min()
        assert np.abs(b1).max() > 1e-3  # an unbalanced bias is part of what is checked


def test_closed_form_on_balanced_data_is_class_mean_minus_overall_mean(digits):
    run = train(digits, TrainConfig(n_train=500, iterations=1, dtype="float64", n_val=50))
    x, y = design(digits, run)
    counts = np.bincount(y)
    # Stratified subset of balanced-ish digits: use the general form with n_k / n.
    mu = x.mean(axis=0)
    mu_k = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    expected = run.learning_rate * ((counts / len(y))[:, None] * mu_k - mu / 10)
    assert np.allclose(run.weights(1).reshape(10, -1), expected, rtol=0, atol=1e-12)


def test_ovr_first_step_matches_the_answers_sum_over_positives_minus_negatives(digits):
    cfg = TrainConfig(model="ovr", n_train=200, iterations=1, learning_rate=0.3,
                      dtype="float64", n_val=50)
    run = train(digits, cfg)
    x, y = design(digits, run)
    k = 3
    expected = 0.3 / len(y) * 0.5 * (x[y == k].sum(axis=0) - x[y != k].sum(axis=0))
    assert np.abs(run.weights(1)[k].ravel() - expected).max() < 1e-12


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    X = rng.random((40, 6))
    y = rng.integers(0, 4, size=40)
    for model in ("softmax", "ovr"):
        W = rng.normal(size=(4, 6))
        b = rng.normal(size=4)
        _, gW, gb = objective_and_gradient(X, y, W, b, model, l2=0.3)
        eps = 1e-6
        num_W = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            Wp, Wm = W.copy(), W.copy()
            Wp[idx] += eps
            Wm[idx] -= eps
            num_W[idx] = (objective_and_gradient(X, y, Wp, b, model, l2=0.3)[0]
                          - objective_and_gradient(X, y, Wm, b, model, l2=0.3)[0]) / (2 * eps)
        num_b = np.array([
            (objective_and_gradient(X, y, W, b + eps * e, model, l2=0.3)[0]
             - objective_and_gradient(X, y, W, b - eps * e, model, l2=0.3)[0]) / (2 * eps)
            for e in np.eye(4)
        ])
        assert np.abs(gW - num_W).max() < 1e-7
        assert np.abs(gb - num_b).max() < 1e-7


@pytest.mark.parametrize("model", ["softmax", "ovr"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_step_is_a_gradient_step_of_the_stated_objective(digits, model, backend):
    cfg = TrainConfig(model=model, n_train=150, iterations=5, learning_rate=0.05, l2=0.01,
                      dtype="float64", n_val=50)
    run = train(digits, cfg, backend=backend)
    x, y = design(digits, run)
    for t in range(4):
        W, b = run.weights(t).reshape(10, -1), run.bias(t)
        obj, gW, gb = objective_and_gradient(x, y, W, b, model, l2=0.01)
        assert obj == pytest.approx(run.history["objective"][t], rel=1e-12)
        assert np.allclose(run.weights(t + 1).reshape(10, -1), W - 0.05 * gW, atol=1e-13)
        assert np.allclose(run.bias(t + 1), b - 0.05 * gb, atol=1e-13)


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_softmax_weights_sum_to_zero_over_classes_at_every_snapshot(digits, l2):
    run = train(digits, TrainConfig(n_train=300, iterations=500, l2=l2, dtype="float64", n_val=50))
    sums = np.stack([run.weights(int(t)).sum(axis=0) for t in run.snapshot_iterations])
    assert np.abs(run.weights(500)).max() > 0.1
    assert np.abs(sums).max() < 1e-12
    assert np.abs([run.bias(int(t)).sum() for t in run.snapshot_iterations]).max() < 1e-12


@pytest.mark.parametrize("model", ["softmax", "ovr"])
@pytest.mark.parametrize("l1", [0.0, 0.002])
@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_step_never_increases_the_objective(digits, model, l1, backend):
    run = train(digits, TrainConfig(model=model, n_train=400, iterations=400, l1=l1,
                                    dtype="float64", n_val=50), backend=backend)
    obj = run.history["objective"]
    assert obj[-1] < 0.5 * obj[0]
    assert np.diff(obj).max() <= 1e-12 * obj[0]


def test_auto_step_float32_never_increases_beyond_rounding(digits):
    run = train(digits, TrainConfig(n_train=400, iterations=400, n_val=50))
    obj = run.history["objective"]
    assert np.diff(obj).max() <= 1e-6 * obj[0]


def test_smoothness_is_tight_for_two_classes_and_bounds_the_hessian(digits):
    # Two-class softmax at W = 0 has Hessian (1/4)(I - 11^T/2) kron X~^T X~ / n, whose top
    # eigenvalue is exactly (1/2) lambda_max: the bound L is attained there. Elsewhere the
    # Hessian is smaller. The Hessian is built from finite differences of the gradient.
    keep = digits.y_train < 2
    x = digits.x_train[keep][:80].reshape(80, -1)[:, ::8] / 255.0  # 8 pixels keep it small
    y = digits.y_train[keep][:80]
    L = smoothness(x, "softmax")
    K, d = 2, x.shape[1]

    def hessian_max(W, b):
        theta = np.concatenate([W.ravel(), b])
        h, cols = 1e-5, []
        for i in range(len(theta)):
            e = np.zeros_like(theta)
            e[i] = h
            grads = []
            for sign in (1, -1):
                t = theta + sign * e
                _, gW, gb = objective_and_gradient(x, y, t[:K * d].reshape(K, d), t[K * d:],
                                                   "softmax")
                grads.append(np.concatenate([gW.ravel(), gb]))
            cols.append((grads[0] - grads[1]) / (2 * h))
        H = np.array(cols)
        return np.linalg.eigvalsh((H + H.T) / 2)[-1]

    assert hessian_max(np.zeros((K, d)), np.zeros(K)) == pytest.approx(L, rel=1e-6)
    rng = np.random.default_rng(3)
    for _ in range(3):
        assert hessian_max(rng.normal(size=(K, d)), rng.normal(size=K)) <= L * (1 + 1e-6)
    assert smoothness(x, "ovr") == pytest.approx(L / 2)


@pytest.mark.parametrize("l2,steps", [(0.05, 20_000), (0.2, 6000)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_converged_softmax_matches_scikit_learn(digits, l2, steps, backend):
    cfg = TrainConfig(n_train=120, iterations=steps, l2=l2, dtype="float64", n_val=50)
    run = train(digits, cfg, backend=backend)
    x, y = design(digits, run)
    clf = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-12, max_iter=10_000)
    clf.fit(x, y)
    W = run.weights(run.iterations_done).reshape(10, -1)
    scale = np.abs(clf.coef_).max()
    assert np.abs(W - clf.coef_).max() / scale < 1e-4
    # scikit-learn's multinomial intercept is defined up to a constant; ours sums to zero.
    assert np.abs(run.bias(run.iterations_done) - (clf.intercept_ - clf.intercept_.mean())).max() / scale < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_converged_ovr_matches_per_class_binary_fits(digits, backend):
    l2 = 0.1
    run = train(digits, TrainConfig(model="ovr", n_train=120, iterations=6000, l2=l2,
                                    dtype="float64", n_val=50), backend=backend)
    x, y = design(digits, run)
    W = run.weights(run.iterations_done).reshape(10, -1)
    coefs = []
    for k in range(10):
        clf = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-12, max_iter=10_000)
        clf.fit(x, (y == k).astype(int))
        coefs.append(clf.coef_[0])
    coefs = np.array(coefs)
    assert np.abs(W - coefs).max() / np.abs(coefs).max() < 1e-4


def test_l1_solution_satisfies_the_optimality_conditions(digits):
    l1 = 0.003
    run = train(digits, TrainConfig(n_train=200, iterations=20_000, l1=l1, l2=0.01,
                                    dtype="float64", n_val=50))
    x, y = design(digits, run)
    W, b = run.weights(run.iterations_done).reshape(10, -1), run.bias(run.iterations_done)
    _, gW, gb = objective_and_gradient(x, y, W, b, "softmax", l2=0.01)
    zero = W == 0
    assert 0.1 < zero.mean() < 0.95  # the penalty really produces sparsity
    assert np.abs(gW[zero]).max() <= l1 * (1 + 1e-3)
    assert np.abs(gW[~zero] + l1 * np.sign(W[~zero])).max() < 1e-4
    assert np.abs(gb).max() < 1e-4


def test_huge_learning_rate_stops_with_a_reason_and_keeps_finite_weights(digits):
    cfg = TrainConfig(n_train=200, iterations=200, learning_rate=1000.0, n_val=50)
    run = train(digits, cfg)
    assert run.diverged
    assert 0 <= run.iterations_done < 200
    assert f"iteration {run.iterations_done + 1:,}" in run.stop_reason
    assert "auto" in run.stop_reason
    assert run.snapshot_iterations[-1] == run.iterations_done
    assert np.isfinite(run.weights(run.iterations_done)).all()
    for values in list(run.history.values()) + list(run.snapshot_history.values()):
        assert np.isfinite(values).all()
    assert len(run.history["train_loss"]) == run.iterations_done + 1


def test_steps_far_past_the_stability_limit_oscillate_then_diverge(digits):
    # 2/L is a sufficient bound, and loose on this data: steps of a few times 1/L still
    # descend. Far past it the objective rises at some steps, and further still it blows up.
    base = TrainConfig(n_train=200, iterations=3000, n_val=50, dtype="float64")
    L = train(digits, base.replace(iterations=1)).smoothness
    oscillating = train(digits, base.replace(learning_rate=30.0 / L))
    assert not oscillating.diverged
    assert np.diff(oscillating.history["objective"]).max() > 0
    exploding = train(digits, base.replace(learning_rate=100.0 / L))
    assert exploding.diverged and exploding.iterations_done < 3000


def test_same_config_gives_the_same_run_bit_for_bit(digits):
    cfg = TrainConfig(n_train=300, iterations=300, seed=4, n_val=100)
    a, b = train(digits, cfg), train(digits, cfg)
    assert np.array_equal(a.train_indices, b.train_indices)
    assert np.array_equal(a.snapshot_weights, b.snapshot_weights)
    assert np.array_equal(a.history["train_loss"], b.history["train_loss"])
    other = train(digits, cfg.replace(seed=5))
    assert not np.array_equal(a.train_indices, other.train_indices)


def test_training_subset_is_stratified_and_never_overlaps_validation(digits):
    run = train(digits, TrainConfig(n_train=500, iterations=2, n_val=200))
    assert len(set(run.train_indices) & set(run.val_indices)) == 0
    counts = np.bincount(digits.y_train[run.train_indices], minlength=10)
    share = np.bincount(digits.y_train, minlength=10) / len(digits.y_train)
    assert np.abs(counts - 500 * share).max() <= 1
    assert len(run.val_indices) == 200


@pytest.mark.parametrize("T", [101, 150, 300, 1000, 2999, 30_000, 100_000])
def test_snapshot_schedule_has_at_least_60_log_spaced_points_and_the_1_2_5_grid(T):
    its = snapshot_schedule(T)
    assert its[0] == 0 and its[-1] == T
    assert len(its) >= 61
    for t in (1, 2, 5, 10, 20, 50, 100):
        assert t in its
    # log-spaced: beyond the first hundred (where integers are coarse in log terms) no
    # gap in log(t) is wider than a 60-point grid's step
    late = its[its >= 100]
    assert np.diff(np.log(late)).max() <= np.log(T) / 59 + 1e-9


def test_snapshot_schedule_holds_the_1_2_5_sequence_and_a_dense_log_grid():
    its = snapshot_schedule(30_000)
    for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 30_000):
        assert t in its
    assert len(its) >= 60
    assert np.all(np.diff(its) > 0)
    late = its[its >= 20]  # below 20 every integer step is already a large log step
    assert np.diff(np.log(late)).max() < np.log(30_000) / 40
    assert list(snapshot_schedule(7)) == list(range(8))


def test_records_agree_with_the_history_and_with_each_other(digits):
    run = train(digits, TrainConfig(n_train=300, iterations=200, n_val=100))
    for slot, t in enumerate(run.snapshot_iterations):
        t = int(t)
        assert run.example_losses(t).mean() == pytest.approx(run.history["train_loss"][t], rel=1e-5)
        val_pred = run.predictions(t, "val")
        y_val = digits.y_train[run.val_indices]
        assert run.snapshot_history["val_acc"][slot] == pytest.approx((val_pred == y_val).mean())
        assert np.allclose(run.example_losses(t), -np.log(run.p_true(t)), atol=1e-4)
    x, y = design(digits, run)
    # The grad norm of an example with p = e_y is zero; of the worst, large.
    t = run.iterations_done
    p_true = run.p_true(t)
    norms = run.grad_norms(t)
    assert norms[np.argmin(p_true)] > norms[np.argmax(p_true)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_learned_at_and_forgetting_events_match_a_brute_force_count(digits, backend):
    T = 50  # every iteration is a snapshot, so predictions are known at each step
    run = train(digits, TrainConfig(n_train=200, iterations=T, learning_rate=0.15, n_val=50),
                backend=backend)
    assert list(run.snapshot_iterations) == list(range(T + 1))
    y = digits.y_train[run.train_indices]
    correct = np.stack([run.predictions(t) == y for t in range(T + 1)])
    correct[0] = False  # iteration 0 predicts nothing: all logits are equal
    forgets = (correct[:-1] & ~correct[1:]).sum(axis=0)
    assert np.array_equal(run.forgetting_events, forgets)
    assert forgets.sum() > 0  # the count is exercised, not trivially zero
    for i in range(len(y)):
        if not correct[-1, i]:
            assert run.learned_at[i] == -1
        else:
            wrong = np.flatnonzero(~correct[:, i])
            assert run.learned_at[i] == wrong.max() + 1


def test_progress_is_reported_and_can_cancel(digits):
    calls = []
    train(digits, TrainConfig(n_train=200, iterations=300, n_val=50),
          progress=lambda done, total: calls.append((done, total)), progress_interval=0.0)
    assert calls[-1] == (300, 300)
    assert len(calls) >= 100
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))

    def cancel(done, total):
        if done >= 10:
            raise TrainingCancelled

    with pytest.raises(TrainingCancelled):
        train(digits, TrainConfig(n_train=200, iterations=300, n_val=50),
              progress=cancel, progress_interval=0.0)


@pytest.mark.parametrize("changes,field", [
    ({"n_train": 5}, "n_train"),
    ({"n_train": 10**6}, "n_train"),
    ({"iterations": 0}, "iterations"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"l2": -0.1}, "l2"),
    ({"l1": float("inf")}, "l1"),
    ({"model": "svm"}, "model"),
])
def test_invalid_settings_are_refused_with_a_message_per_setting(digits, changes, field):
    cfg = TrainConfig(n_val=50).replace(**changes)
    problems = cfg.problems(digits)
    assert field in problems
    with pytest.raises(ValueError, match=problems[field][:20].replace("(", r"\(")):
        train(digits, cfg)


def test_config_replace_gives_a_new_config_and_equal_configs_share_a_run_key():
    a, b = TrainConfig(l2=0.01), TrainConfig(l2=0.01)
    assert hash(a) == hash(b) and a == b
    assert run_key("data", a) == run_key("data", b)
    c = a.replace(l2=0.1, seed=3)
    assert (a.l2, a.seed) == (0.01, 0) and (c.l2, c.seed) == (0.1, 3)  # the original stays
    assert c != a and run_key("data", c) != run_key("data", a)
    assert c.replace(l2=0.01, seed=0) == a
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.l2 = 0.1  # type: ignore[misc]
    assert a.l2 == 0.01


def _make_numba_pass(env: dict, block_numba: bool = False) -> str:
    """The error of asking for the numba backend in a fresh interpreter ("" if none)."""
    code = ("import sys\n"
            + ("sys.modules['numba'] = None\n" if block_numba else "")
            + "import numpy as np\n"
            "from core.objective import make_pass\n"
            "try:\n"
            "    make_pass('numba', np.zeros((4, 3), np.uint8), np.zeros(4, np.int64), 2,\n"
            "              np.dtype('float32'), 'softmax')\n"
            "except ValueError as exc:\n"
            "    print(exc)\n")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not kernels.INSTALLED, reason=kernels.unavailable_reason())
def test_numba_switched_off_by_the_environment_says_so_not_that_it_is_missing():
    env = dict(os.environ, WEIGHTSCOPE_KERNEL="numpy")
    said = _make_numba_pass(env)
    assert "switched off by WEIGHTSCOPE_KERNEL=numpy" in said
    assert "numba package" not in said and "not installed" not in said
    env.pop("WEIGHTSCOPE_KERNEL")
    assert _make_numba_pass(env) == ""  # without the switch the kernel is used


def test_numba_missing_says_the_package_is_needed():
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTSCOPE_KERNEL"}
    said = _make_numba_pass(env, block_numba=True)
    assert "needs the numba package" in said
    assert "WEIGHTSCOPE_KERNEL" not in said


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="Unknown backend 'gpu'"):
        make_pass("gpu", np.zeros((4, 3), np.uint8), np.zeros(4, np.int64), 2,
                  np.dtype("float32"), "softmax")


@pytest.mark.realdata
def test_300_full_data_steps_reach_70_percent_test_accuracy(fashion_dir):
    from core.data import load_dataset

    ds = load_dataset("fashion-mnist", data_dir=fashion_dir)
    run = train(ds, TrainConfig(n_train=50_000, iterations=300))
    assert len(run.train_indices) == 50_000 and len(run.val_indices) == 10_000
    assert not run.diverged
    # FACTS.md: a plain loop reaches 0.733 after 300 steps on 60,000 images.
    assert run.snapshot_history["test_acc"][-1] >= 0.70
    assert run.snapshot_history["val_acc"][-1] >= 0.70
    # The first step on real data is the class-mean contrast too (float32).
    x = ds.x_train[run.train_indices].reshape(50_000, -1) / 255.0
    W1, _ = first_step_closed_form(x, ds.y_train[run.train_indices], 10, run.learning_rate,
                                   "softmax")
    assert np.abs(run.weights(1).reshape(10, -1) - W1).max() < 1e-5


@pytest.mark.skipif(not kernels.AVAILABLE, reason=kernels.unavailable_reason())
@pytest.mark.parametrize("model", ["softmax", "ovr"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-4)])
def test_compiled_kernel_and_numpy_compute_the_same_run(digits, model, dtype, tol):
    cfg = TrainConfig(model=model, n_train=400, iterations=300, l2=0.001, dtype=dtype, n_val=100)
    a = train(digits, cfg, backend="numpy")
    b = train(digits, cfg, backend="numba")
    scale = np.abs(a.snapshot_weights).max()
    assert np.abs(a.snapshot_weights - b.snapshot_weights).max() / scale < tol
    assert np.allclose(a.history["objective"], b.history["objective"], rtol=tol, atol=0)
    for split in ("train", "val"):
        assert np.allclose(a.records[split].loss, b.records[split].loss, rtol=tol * 10, atol=tol)
        assert (a.records[split].pred == b.records[split].pred).mean() > 0.999
    assert np.allclose(a.snapshot_grad_norms, b.snapshot_grad_norms, rtol=tol * 10, atol=tol)


def test_test_split_is_reported_at_the_end_and_at_the_best_validation_step(digits):
    from core.metrics import example_probabilities

    run = train(digits, TrainConfig(n_train=300, iterations=400, learning_rate=0.5, n_val=100))
    acc = run.snapshot_history["test_acc"]
    best_slot = int(np.searchsorted(run.snapshot_iterations, run.best_iteration()))
    assert set(np.flatnonzero(np.isfinite(acc))) == {best_slot, len(acc) - 1}
    x_test = digits.x_test.reshape(len(digits.y_test), -1) / 255.0
    for slot in (best_slot, len(acc) - 1):
        t = int(run.snapshot_iterations[slot])
        p = example_probabilities(run.weights(t), run.bias(t), x_test, "softmax")
        assert acc[slot] == pytest.approx((p.argmax(axis=1) == digits.y_test).mean())
        assert run.snapshot_history["test_loss"][slot] == pytest.approx(
            -np.log(p[np.arange(len(p)), digits.y_test]).mean(), rel=1e-4)


def test_a_class_absent_from_training_still_trains_and_keeps_the_identity(digits):
    keep = digits.y_train != 9  # class 9 has no training image at all
    ds = make_dataset(digits.x_train[keep], digits.y_train[keep], digits.x_test, digits.y_test,
                      n_classes=10)
    run = train(ds, TrainConfig(n_train=300, iterations=50, dtype="float64", n_val=50))
    x, y = design(ds, run)
    assert 9 not in set(y)
    W1, b1 = first_step_closed_form(x, y, 10, run.learning_rate, "softmax")
    assert np.abs(run.weights(1).reshape(10, -1) - W1).max() < 1e-12
    assert np.allclose(W1[9], -run.learning_rate * x.mean(axis=0) / 10)  # only pushed away
    assert (run.predictions(50, "train") != 9).all()


# --------------------------------------------------------------------------- memory per run


def blobs(n_classes: int, side: int, per_class: int) -> Dataset:
    """Random ``side`` x ``side`` images, ``per_class`` of each of ``n_classes`` classes."""
    rng = np.random.default_rng(n_classes * side)
    y = np.repeat(np.arange(n_classes), per_class)
    x = rng.integers(0, 256, (len(y), side, side))
    return make_dataset(x, y, n_classes=n_classes)


@pytest.fixture(scope="module")
def few() -> Dataset:
    """3 classes of 8 x 8 images."""
    return blobs(3, 8, 60)


@pytest.fixture(scope="module")
def many() -> Dataset:
    """40 classes of 24 x 24 images."""
    return blobs(40, 24, 10)


@pytest.mark.parametrize("model", ["softmax", "ovr"])
@pytest.mark.parametrize("optimizer,dtype", [("gd", "float32"), ("gd", "float64"),
                                             ("lbfgs", "float64")])
@pytest.mark.parametrize("shape", ["few", "many"])
@pytest.mark.parametrize("T", [5, 150])
def test_memory_estimate_is_the_records_of_the_trained_run(request, model, optimizer, dtype,
                                                          shape, T):
    """The estimate made before training is exactly ``Run.nbytes`` of a run that reaches
    T (tolerance: none, 0 bytes), and an upper bound of one that stops early (L-BFGS at
    its tolerance); L-BFGS also holds every iterate, float64, while it trains."""
    ds = request.getfixturevalue(shape)
    cfg = TrainConfig(model=model, optimizer=optimizer, dtype=dtype, iterations=T,
                      n_train=100 if shape == "few" else 120, n_val=50, l2=0.01)
    d = int(np.prod(ds.image_shape))
    before = footprint(cfg, ds)
    run = train(ds, cfg)
    if run.iterations_done == T:
        assert before.run == run.nbytes
        assert before.snapshots == len(run.snapshot_iterations)
    else:
        assert optimizer == "lbfgs" and not run.diverged
        assert run.nbytes <= before.run + before.early
    iterate = (ds.n_classes * d + ds.n_classes) * 8
    assert before.iterates == ((T + 1) * iterate if optimizer == "lbfgs" else 0)
    assert before.total == before.run + before.early + before.iterates


def shaped(n_classes: int, side: int, n_images: int) -> Dataset:
    """A data set of the given shape (zero images: only its shape counts here)."""
    y = np.arange(n_images) % n_classes
    return make_dataset(np.zeros((n_images, side, side)), y, n_classes=n_classes)


def test_memory_estimate_grows_with_every_size_it_depends_on():
    cfg = TrainConfig(n_train=1000, iterations=50)
    base = footprint(cfg, shaped(10, 28, 6000)).run
    assert footprint(cfg.replace(iterations=80), shaped(10, 28, 6000)).run > base
    assert footprint(cfg.replace(n_train=2000), shaped(10, 28, 6000)).run > base
    assert footprint(cfg.replace(dtype="float64"), shaped(10, 28, 6000)).run > base
    assert footprint(cfg, shaped(100, 28, 6000)).run > base
    assert footprint(cfg, shaped(10, 64, 6000)).run > base
    assert footprint(cfg, shaped(10, 28, 12000)).run > base  # a larger validation hold-out
    # the run: 100 classes of 64 x 64, 100 steps on 200 images: 158 MB measured
    big = footprint(TrainConfig(n_train=200, iterations=100, n_val=0), shaped(100, 64, 300))
    assert 158 << 20 <= big.run < 160 << 20


def _suggested(message: str, label: str) -> int:
    found = re.search(re.escape(label) + r" to ([0-9,]+)", message)
    assert found, f"no {label!r} to a number in: {message}"
    return int(found.group(1).replace(",", ""))


def test_a_config_over_the_memory_bound_says_how_many_steps_fit(many):
    bound = 4 << 20
    cfg = TrainConfig(n_train=200, iterations=100, n_val=50)  # 101 snapshots of 40 x 576
    assert footprint(cfg, many).total > bound
    assert cfg.problems(many) == {}  # no bound given, none applied (scripts, the benchmark)
    problem = cfg.problems(many, max_bytes=bound)["iterations"]
    assert "4 MB" in problem and "MB" in problem.split("4 MB")[0]
    steps = _suggested(problem, "Gradient steps")
    assert 1 <= steps < 100
    assert cfg.replace(iterations=steps).problems(many, max_bytes=bound) == {}
    assert footprint(cfg.replace(iterations=steps + 1), many).total > bound  # the largest
    # the weights alone are over: no number of images would do, so none is suggested
    assert "Training images" not in problem


def test_a_config_over_the_memory_bound_by_its_images_says_how_many_fit(digits):
    cfg = TrainConfig(n_train=1000, iterations=100, n_val=300)
    bound = footprint(cfg, digits).total * 2 // 3
    problem = cfg.problems(digits, max_bytes=bound)["iterations"]
    images = _suggested(problem, "Training images")
    assert 10 <= images < 1000
    assert cfg.replace(n_train=images).problems(digits, max_bytes=bound) == {}
    assert footprint(cfg.replace(n_train=images + 1), digits).total > bound
    assert cfg.replace(iterations=_suggested(problem, "Gradient steps")).problems(
        digits, max_bytes=bound) == {}


def test_lbfgs_is_bounded_by_the_iterates_it_holds_while_it_trains(many):
    cfg = TrainConfig(n_train=200, iterations=1000, n_val=50, optimizer="lbfgs",
                      dtype="float64")
    fp = footprint(cfg, many)
    bound = 64 << 20
    assert fp.run < bound < fp.total  # the finished run would fit; its iterates do not
    problem = cfg.problems(many, max_bytes=bound)["iterations"]
    assert "iterates" in problem
    iterations = _suggested(problem, "Iterations (at most)")
    assert cfg.replace(iterations=iterations).problems(many, max_bytes=bound) == {}


def test_a_config_too_large_for_any_setting_says_so(many):
    problem = TrainConfig(n_train=200, iterations=10, n_val=50).problems(
        many, max_bytes=100_000)["iterations"]
    assert "Gradient steps to" not in problem and "Training images to" not in problem
    assert "WEIGHTSCOPE_CACHE_MB" in problem


def test_memory_estimate_bounds_a_run_that_stops_early(few):
    cfg = TrainConfig(optimizer="lbfgs", dtype="float64", iterations=150, n_train=100,
                      n_val=50, l2=1.0)  # strongly penalised: converges in a few iterations
    run = train(few, cfg)
    assert run.iterations_done < 150
    assert run.nbytes < footprint(cfg, few).run
    # Wherever it stops, the run's arrays (the layout the disk cache checks real runs
    # against) fit the bound: stopped at or before 100, L-BFGS keeps every iterate.
    from core.run import run_layout

    need = footprint(cfg, few)
    sizes = [sum(dt.itemsize * int(np.prod(shape)) for dt, shape in run_layout(few, cfg, t)
                 .values() if shape) for t in range(1, 151)]
    assert max(sizes) <= need.run + need.early < need.total
    assert max(sizes) > need.run, "the bound must count the early stop, or this test is moot"


def test_a_divergence_within_the_stability_limit_blames_the_arithmetic_not_the_step():
    """The stop reason names the cause: a step beyond 2/L, or, for a step within it, the
    arithmetic and the penalties (it used to tell every diverged run to lower the step)."""
    from core.trainer import _divergence_reason

    within = _divergence_reason(3, float("inf"), 2.3, lr=0.5, L=1.0, cfg=TrainConfig(l2=1e30))
    assert "within the stability limit 2/L = 2" in within and "L2 penalty 1e+30" in within
    assert "learning rate" not in within and "outgrew float32 arithmetic" in within
    beyond = _divergence_reason(3, 40.0, 2.3, lr=5.0, L=1.0, cfg=TrainConfig())
    assert "2.5x the stability limit" in beyond and 'smaller learning rate or "auto"' in beyond
