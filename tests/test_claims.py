"""The numbers that carry claims 2 and 3: the spectrum, early stopping as L2, the max-margin
limit and who pulls. Oracles are independent numpy/SciPy recomputations; the claims' own
figures are checked on the "Reproduce the answer" run of real Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from core import analysis, metrics, solvers
from core.config import TrainConfig
from core.data import load_dataset, load_digits_dataset
from core.tasks import TaskStore
from core.trainer import residual_edges, train


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def small(digits):
    return train(digits, TrainConfig(n_train=300, iterations=300, n_val=100, dtype="float64"))


# --------------------------------------------------------------------------- residual sums

@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_residual_sums_rebuild_the_weights(digits, backend):
    """Unpenalised, W_t = -(a/n) A_t^T X and b_t = -(a/n) sum_i A_t,i at every edge."""
    run = train(digits, TrainConfig(n_train=200, iterations=120, n_val=100, dtype="float64"),
                backend=backend)
    x, _ = analysis.training_design(run, digits)
    n = len(x)
    assert run.residual_iterations.tolist() == [0, 10, 100, 120]
    for e, t in enumerate(run.residual_iterations):
        A = run.residual_sums[e].astype(np.float64)
        W = -(run.learning_rate / n) * A.T @ x
        np.testing.assert_allclose(W, run.weights(int(t)).reshape(10, -1), atol=1e-7)
        np.testing.assert_allclose(-(run.learning_rate / n) * A.sum(axis=0), run.bias(int(t)),
                                   atol=1e-7)


def test_residual_edges_and_lbfgs_records_none(digits):
    assert residual_edges(30_000).tolist() == [0, 10, 100, 1000, 10_000, 30_000]
    assert residual_edges(1000).tolist() == [0, 10, 100, 1000]
    run = train(digits, TrainConfig(n_train=100, iterations=5, optimizer="lbfgs",
                                    dtype="float64", n_val=100))
    assert len(run.residual_iterations) == 0
    edges, pulls = analysis.window_pulls(run)
    assert pulls.shape == (0, 100)


def test_pull_shares_match_a_direct_sum(small):
    """The share is sum over non-support of ||dA_i|| / sum over all, per window."""
    rng = np.random.default_rng(0)
    support = rng.random(len(small.train_indices)) < 0.3
    shares = analysis.pull_shares(small, support)
    A = small.residual_sums.astype(np.float64)
    for w in range(len(A) - 1):
        norms = [np.sqrt(((A[w + 1, i] - A[w, i]) ** 2).sum()) for i in range(A.shape[1])]
        norms = np.array(norms)
        assert shares[w] == pytest.approx(norms[~support].sum() / norms.sum(), rel=1e-9)
    np.testing.assert_allclose(analysis.pull_shares(small, np.zeros_like(support)), 1.0)


# --------------------------------------------------------------------------- spectrum

def test_energy_sums_to_one_and_reconstructs_the_weights(small, digits):
    sp = analysis.spectrum(small, digits)
    W = small.weights(small.iterations_done)
    assert sp.energy(W).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(sp.class_energy(W).sum(axis=1), 1.0)
    d = len(sp.eigenvalues)
    np.testing.assert_allclose(sp.keep_top(W, d), W, atol=1e-12)
    # the energy is the squared coordinates: rebuilding ||W||^2 along each direction
    coords = W.reshape(10, -1) @ sp.eigenvectors
    np.testing.assert_allclose(sp.energy(W) * (W ** 2).sum(), (coords ** 2).sum(axis=0),
                               rtol=1e-9, atol=1e-15)
    assert np.all(np.diff(sp.eigenvalues) <= 1e-12)


def test_fitted_count_equals_an_independent_count(small, digits):
    x = digits.x_train[small.train_indices].reshape(len(small.train_indices), -1) / 255.0
    lam = np.linalg.eigvalsh(x.T @ x / len(x))
    sp = analysis.spectrum(small, digits)
    for t in (1, 10, 100, 300):
        assert sp.fitted(t) == int((small.learning_rate * t * lam > 1).sum())
    assert sp.fitted(300) > sp.fitted(10) > 0


def test_eigen_roughness_is_the_roughness_of_each_eigen_image(small, digits):
    sp = analysis.spectrum(small, digits)
    imgs = sp.eigenvectors.T.reshape(-1, *digits.image_shape)
    np.testing.assert_allclose(sp.eigen_roughness, metrics.roughness(imgs))
    top = sp.eigen_images(np.arange(3))
    assert np.all(top.reshape(3, -1).max(axis=1) >= -top.reshape(3, -1).min(axis=1))


# --------------------------------------------------------------------------- early stopping as L2

def test_l2_solver_matches_scikit_learn(small, digits):
    from sklearn.linear_model import LogisticRegression

    x, y = analysis.training_design(small, digits)
    l2 = 0.01
    W, b = solvers.l2_logistic(x, y, 10, "softmax", l2, gtol=1e-9)
    ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
    assert analysis.cosine(W, ref.coef_) > 0.99999
    np.testing.assert_allclose(W, ref.coef_, atol=2e-3)


def test_equivalent_l2_and_its_refusals(small, digits):
    eq = analysis.equivalent_l2(small, digits, 100)
    assert eq.predicted_strength == pytest.approx(1 / (small.learning_rate * 100))
    assert eq.strength_range[0] <= eq.strength <= eq.strength_range[1]
    assert eq.cosine >= eq.cosines.max() - 1e-9 and eq.cosine >= eq.predicted_cosine
    assert eq.class_cosines.shape == (10,) and np.all(eq.class_cosines > 0.5)
    assert eq.weights.shape == (10, *digits.image_shape)
    lbfgs = train(digits, TrainConfig(n_train=100, iterations=5, optimizer="lbfgs",
                                      dtype="float64", n_val=100))
    with pytest.raises(ValueError, match="L-BFGS"):
        analysis.equivalent_l2(lbfgs, digits, 5)
    assert analysis.spectrum(lbfgs, digits).fitted(5) == 0


# --------------------------------------------------------------------------- max margin

def _qp_hard_margin(x, y, K):
    """Crammer-Singer hard margin on [x, 1] by SciPy's SLSQP: min ||[W, b]||^2 / 2 with
    w_y . x_i - w_k . x_i >= 1 for every k != y_i."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    D = xb.shape[1]
    cons = []
    for i, yi in enumerate(y):
        for k in range(K):
            if k != yi:
                def f(th, i=i, yi=yi, k=k):
                    Wb = th.reshape(K, D)
                    return (Wb[yi] - Wb[k]) @ xb[i] - 1.0
                cons.append({"type": "ineq", "fun": f})
    res = minimize(lambda th: 0.5 * th @ th, np.zeros(K * D), jac=lambda th: th,
                   constraints=cons, method="SLSQP", options={"maxiter": 500, "ftol": 1e-12})
    Wb = res.x.reshape(K, D)
    return Wb[:, :-1], Wb[:, -1]


def test_hard_margin_matches_a_qp_on_a_tiny_separable_set():
    rng = np.random.default_rng(3)
    K, per, d = 3, 5, 4
    centres = rng.normal(0, 3, size=(K, d))
    x = np.vstack([centres[k] + rng.normal(0, 0.5, size=(per, d)) for k in range(K)])
    y = np.repeat(np.arange(K), per)
    W, b = solvers.hard_margin(x, y, K, "softmax", tol=1e-8)
    Wq, bq = _qp_hard_margin(x, y, K)
    m = solvers.margins(x, y, W, b, "softmax")
    assert m.min() >= 1 - 1e-3
    got, want = np.hstack([W, b[:, None]]), np.hstack([Wq, bq[:, None]])
    # The QP's solution is unique up to a shift common to all classes: compare the
    # centred weights.
    got, want = got - got.mean(axis=0), want - want.mean(axis=0)
    assert analysis.cosine(got, want) > 0.999
    assert np.linalg.norm(got) == pytest.approx(np.linalg.norm(want), rel=1e-2)


def test_one_vs_rest_hard_margin_is_a_binary_svm_per_class():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(-2, 0.3, (6, 2)), rng.normal(2, 0.3, (6, 2))])
    y = np.repeat([0, 1], 6)
    W, b = solvers.hard_margin(x, y, 2, "ovr", tol=1e-8)
    m = solvers.margins(x, y, W, b, "ovr")
    assert m.min() >= 1 - 1e-3 and m.min() <= 1 + 1e-3  # the closest point sits on the margin
    # class 1's SVM separates 1 from 0, class 0's the reverse: mirror images
    assert analysis.cosine(np.append(W[0], b[0]), -np.append(W[1], b[1])) > 0.999


def test_max_margin_is_not_attempted_above_the_image_limit(small, digits):
    mm = analysis.max_margin(small, digits, max_images=100)
    assert not mm.determined and "300 training images" in mm.reason and mm.weights is None


def test_hard_margin_in_a_child_process_can_be_stopped(small, digits):
    x, y = analysis.training_design(small, digits)
    W, b = solvers.hard_margin_within(x, y, 10, "softmax", seconds=120)
    W2, b2 = solvers.hard_margin(x, y, 10, "softmax")
    assert analysis.cosine(np.hstack([W, b[:, None]]), np.hstack([W2, b2[:, None]])) > 0.999999
    with pytest.raises(solvers.SolveTimeout):
        solvers.hard_margin_within(np.tile(x, (40, 1)), np.tile(y, 40), 10, "softmax",
                                   seconds=0.5)


# --------------------------------------------------------------------------- background tasks

def test_task_store_runs_once_publishes_partial_results_and_retries_failures():
    store = TaskStore()
    calls = []

    def work(task):
        calls.append(1)
        task.partial["first"] = 1
        task.progress(1, 2)
        return "done"

    a = store.get("k", work)
    b = store.get("k", work)
    assert a is b and a.wait(10) and a.result == "done" and a.partial == {"first": 1}
    assert len(calls) == 1 and (a.done, a.total) == (1, 2)

    def fail(task):
        raise RuntimeError("boom")

    bad = store.get("bad", fail)
    assert bad.wait(10) and "boom" in bad.error
    again = store.get("bad", lambda task: 5)
    assert again is not bad and again.wait(10) and again.result == 5
    assert store.wait_all(10)


def test_a_running_analysis_nobody_asks_about_is_dropped_and_asked_again_restarts():
    import threading

    store = TaskStore()
    started, steps = threading.Event(), []

    def work(task):
        started.set()
        for i in range(10_000):
            steps.append(i)
            task.progress(i, 10_000)
            threading.Event().wait(0.01)
        return "ran for nobody"

    task = store.get("long", work)
    assert started.wait(10)
    task.seen -= 1000  # nobody has asked for it since long ago (its tabs closed)
    assert task._finished.wait(10), "the abandoned task kept running"
    assert task.dropped and task.result is None and not task.error
    assert len(steps) < 10_000 and store.peek("long") is None
    again = store.get("long", lambda t: "asked again")
    assert again is not task and again.wait(10) and again.result == "asked again"


def test_a_queued_analysis_nobody_asks_about_never_starts():
    import threading

    store = TaskStore()
    release, ran = threading.Event(), []
    busy = store.get("busy", lambda task: release.wait(30))
    queued = store.get("queued", lambda task: ran.append(1))
    queued.seen -= 1000
    release.set()
    assert busy.wait(10) and queued._finished.wait(10)
    assert queued.dropped and ran == [], "a task nobody waits for was run"


def test_a_hard_margin_solve_is_killed_when_its_check_fails(small, digits, monkeypatch):
    children = []
    real = solvers.subprocess.Popen

    def popen(*args, **kwargs):
        children.append(real(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(solvers.subprocess, "Popen", popen)
    x, y = analysis.training_design(small, digits)

    def check():
        raise RuntimeError("nobody waits")

    with pytest.raises(RuntimeError, match="nobody waits"):
        solvers.hard_margin_within(np.tile(x, (40, 1)), np.tile(y, 40), 10, "softmax",
                                   seconds=60, check=check)
    assert len(children) == 1 and children[0].poll() is not None, "the child still runs"


# --------------------------------------------------------------------------- the claims on real data

@pytest.fixture(scope="module")
def preset(answer_run):
    """The "Reproduce the answer" run: softmax, 1,000 images, seed 0, a = 1/L, 30,000 steps."""
    cfg = answer_run[1].config
    assert (cfg.n_train, cfg.iterations, cfg.l2, cfg.l1) == (1000, 30_000, 0.0, 0.0)
    return answer_run


@pytest.fixture(scope="module")
def preset_limit(preset):
    ds, run = preset
    return analysis.max_margin(run, ds)


@pytest.mark.realdata
def test_roughness_estimate_within_ten_percent_of_the_measured(preset):
    ds, run = preset
    sp = analysis.spectrum(run, ds)
    for t in (100, 1000, 10_000, 30_000):
        W = run.weights(t)
        est, measured = sp.roughness_estimate(W).mean(), metrics.roughness(W).mean()
        assert est == pytest.approx(measured, rel=0.10), t
    assert [sp.fitted(t) for t in (100, 1000, 10_000, 30_000)] == [12, 92, 341, 473]


@pytest.mark.realdata
def test_keeping_the_top_hundred_directions_keeps_accuracy_and_cuts_roughness(preset):
    ds, run = preset
    sp = analysis.spectrum(run, ds)
    T = run.iterations_done
    W, b = run.weights(T), run.bias(T)
    kept = sp.keep_top(W, 100)
    assert abs(analysis.accuracy(run, ds, kept, b) - analysis.accuracy(run, ds, W, b)) <= 0.01
    assert metrics.roughness(kept).mean() <= 0.85 * metrics.roughness(W).mean()


@pytest.mark.realdata
@pytest.mark.parametrize("t", [1000, 10_000])
def test_best_l2_strength_is_near_one_over_a_t(preset, t):
    ds, run = preset
    eq = analysis.equivalent_l2(run, ds, t)
    assert 0.75 <= eq.strength / eq.predicted_strength <= 1.33
    assert eq.predicted_cosine > 0.95


@pytest.mark.realdata
def test_max_margin_limit_of_the_preset(preset, preset_limit):
    ds, run = preset
    mm = preset_limit
    assert mm.determined and mm.separable
    assert mm.margin.min() >= 1 - 1e-3
    assert 0 < mm.support.sum() < len(mm.support)
    cos = analysis.direction_cosines(run, mm)
    assert cos[run.slot(100)] < cos[run.slot(1000)] < cos[run.slot(10_000)] < cos[-1]


@pytest.mark.realdata
def test_max_margin_direction_is_stable_across_c(fashion_dir):
    """The direction does not depend on how hard the margin is made (C = 1e2 .. 1e4), on
    300 real images (separable too; the preset's 1,000 take 10 s a solve)."""
    ds = load_dataset("fashion-mnist", data_dir=fashion_dir)
    run = train(ds, TrainConfig(n_train=300, iterations=10))
    x, y = analysis.training_design(run, ds)
    sols = {}
    for C in (1e2, 1e3, 1e4):
        W, b = solvers.hard_margin(x, y, 10, "softmax", C=C)
        sols[C] = np.hstack([W, b[:, None]])
    assert solvers.margins(x, y, sols[1e3][:, :-1], sols[1e3][:, -1], "softmax").min() >= 1 - 1e-3
    for C in (1e2, 1e4):
        assert analysis.cosine(sols[C], sols[1e3]) > 0.999


@pytest.mark.realdata
def test_non_support_vectors_share_of_the_pull_falls_threefold(preset, preset_limit):
    _, run = preset
    shares = analysis.pull_shares(run, preset_limit.support)
    assert len(shares) == 5  # 1-10, 10-100, 100-1k, 1k-10k, 10k-30k
    assert shares[0] >= 3 * shares[-1]
    assert np.all(np.diff(shares) < 0)


def test_summary_reports_the_claims_numbers(small, digits):
    from core import report

    traj = analysis.trajectory(small, digits)
    sp = analysis.spectrum(small, digits)
    mm = analysis.max_margin(small, digits)
    path = {300: analysis.equivalent_l2(small, digits, 300)}
    page = report.summary_html(small, digits, traj,
                               claims={"spectrum": sp, "l2": path, "max_margin": mm})
    assert f"{sp.fitted(300):,} of 64" in page
    assert f"cosine {path[300].predicted_cosine:.3f}" in page
    assert f"{int(mm.support.sum()):,} support vectors of 300" in page
    shares = analysis.pull_shares(small, mm.support)
    assert f"steps 101-300: {shares[-1]:.1%}" in page
    bare = report.summary_html(small, digits, traj)
    assert "not computed (open the page 'Why the noise')" in bare
    assert "step used" in page and "nan" not in bare.split("step used")[1][:80]


def test_overlapping_classes_are_reported_not_separable(digits):
    """Two copies of an image with different labels: no linear rule sorts both."""
    x = np.vstack([np.eye(3), np.eye(3)[:1]])
    y = np.array([0, 1, 2, 1])
    W, b = solvers.hard_margin(x, y, 3, "softmax")
    assert solvers.margins(x, y, W, b, "softmax").min() < 1 - 1e-3


def test_float64_runs_get_a_float64_smoothness_constant(digits):
    """The constant L is computed in the run's precision (float32 was 1.6e-7 off)."""
    from core.objective import smoothness

    cfg = TrainConfig(n_train=1000, iterations=1, n_val=100, dtype="float64")
    run = train(digits, cfg, backend="numpy")
    x, _ = analysis.training_design(run, digits)
    assert run.smoothness == pytest.approx(smoothness(x, "softmax"), rel=1e-13)
