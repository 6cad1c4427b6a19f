"""core.analysis against recomputations from the metrics' definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from core import analysis, report
from core.config import TrainConfig
from core.data import load_digits_dataset
from core.trainer import train


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def run(digits):
    return train(digits, TrainConfig(n_train=300, iterations=150, n_val=100, dtype="float64"))


@pytest.fixture(scope="module")
def lbfgs_run(digits):
    return train(digits, TrainConfig(n_train=300, iterations=20, optimizer="lbfgs",
                                     dtype="float64", l2=0.01, n_val=100))


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def total_variation_ratio(image: np.ndarray) -> float:
    """Sum of |differences| between 4-neighbours over the sum of |pixels|, by loops."""
    H, W = image.shape
    tv = 0.0
    for i in range(H):
        for j in range(W):
            if i + 1 < H:
                tv += abs(image[i + 1, j] - image[i, j])
            if j + 1 < W:
                tv += abs(image[i, j + 1] - image[i, j])
    return tv / np.abs(image).sum()


def test_trajectory_agrees_with_a_recomputation_from_the_definitions(run, digits):
    traj = analysis.trajectory(run, digits)
    its = run.snapshot_iterations
    S, K = len(its), 10
    assert set(traj) == {"iteration", "similarity", "roughness", "similarity_mean",
                         "roughness_mean", "coef_range", "concentration"}
    assert np.array_equal(traj["iteration"], its) and its[1] == 1
    idx = run.train_indices
    x = digits.x_train[idx].reshape(len(idx), -1) / 255.0
    y = digits.y_train[idx]
    n = len(y)

    W1 = run.weights(1)
    for s in range(1, S):
        t = int(its[s])
        W = run.weights(t)
        sim = [pearson(W[k], W1[k]) for k in range(K)]
        rough = [total_variation_ratio(W[k]) for k in range(K)]
        assert np.allclose(traj["similarity"][s], sim, atol=1e-12)
        assert np.allclose(traj["roughness"][s], rough, rtol=1e-12)
        assert traj["similarity_mean"][s] == pytest.approx(np.mean(sim), abs=1e-12)
        assert traj["roughness_mean"][s] == pytest.approx(np.mean(rough), rel=1e-12)
        assert traj["coef_range"][s] == pytest.approx(W.max() - W.min(), rel=1e-12)
        # Per-example gradient norms from the weights, then the top-10 % share.
        p = softmax(x @ W.reshape(K, -1).T + run.bias(t), axis=1)
        p[np.arange(n), y] -= 1.0
        g = np.linalg.norm(p, axis=1) * np.linalg.norm(x, axis=1)
        assert np.allclose(run.grad_norms(t), g, rtol=1e-5, atol=1e-7)
        g = run.grad_norms(t).astype(np.float64)
        top = np.sort(g)[::-1][: round(0.1 * n)]
        assert traj["concentration"][s] == pytest.approx(top.sum() / g.sum(), rel=1e-12)
    # Zero weights have no shape.
    assert np.isnan(traj["similarity"][0]).all() and np.isnan(traj["roughness"][0]).all()
    assert traj["similarity_mean"][1] == pytest.approx(1.0)
    assert traj["similarity_mean"][-1] < 0.99  # the images do change shape


def test_first_step_holds_the_closed_form_and_its_parts(run, digits):
    fs = analysis.first_step(run, digits)
    idx = run.train_indices
    x = digits.x_train[idx].reshape(len(idx), -1) / 255.0
    y = digits.y_train[idx]
    assert np.array_equal(fs["counts"], np.bincount(y, minlength=10))
    means = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    assert np.allclose(fs["means"], means, atol=1e-12)
    assert np.allclose(fs["contrasts"], means - x.mean(axis=0), atol=1e-12)
    a = analysis.first_step_scale(run, fs)
    assert np.allclose(run.weights(1).reshape(10, -1), a * fs["unit_W"], rtol=0, atol=1e-12)
    assert np.allclose(run.bias(1), a * fs["unit_b"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("model", ["softmax", "ovr"])
def test_first_step_scale_of_gradient_descent_is_its_learning_rate(digits, model):
    run = train(digits, TrainConfig(model=model, n_train=200, iterations=2, learning_rate=0.3,
                                    dtype="float64", n_val=50))
    fs = analysis.first_step(run, digits)
    assert analysis.first_step_scale(run, fs) == 0.3
    got = np.concatenate([run.weights(1).ravel(), run.bias(1)])
    assert np.allclose(got, 0.3 * np.concatenate([fs["unit_W"].ravel(), fs["unit_b"]]),
                       rtol=0, atol=1e-12)


def test_first_step_scale_of_lbfgs_is_the_least_squares_fit_with_the_bias(lbfgs_run, digits):
    run = lbfgs_run
    fs = analysis.first_step(run, digits)
    a = analysis.first_step_scale(run, fs)
    unit = np.concatenate([fs["unit_W"].ravel(), fs["unit_b"]])[:, None]
    got = np.concatenate([run.weights(1).ravel(), run.bias(1)])
    (fit,), *_ = np.linalg.lstsq(unit, got, rcond=None)
    assert a == pytest.approx(fit, rel=1e-12)
    assert a > 0
    # The first iterate lies on that line: a step along the negative gradient at zero.
    assert np.abs(got - a * unit[:, 0]).max() < 1e-10 * np.abs(got).max()


def test_summary_reports_the_step_of_first_step_scale(lbfgs_run, digits):
    fs = analysis.first_step(lbfgs_run, digits)
    a = analysis.first_step_scale(lbfgs_run, fs)
    page = report.summary_html(lbfgs_run, digits, analysis.trajectory(lbfgs_run, digits))
    assert f"step {a:.4g}, fitted" in page
