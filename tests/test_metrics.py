"""Unit tests of the numbers that describe weight images and examples."""

from __future__ import annotations

import numpy as np
import pytest

from core import metrics


def checkerboard(H: int, W: int) -> np.ndarray:
    return np.where((np.arange(H)[:, None] + np.arange(W)) % 2 == 0, 1.0, -1.0)


# --------------------------------------------------------------------------- roughness


def test_roughness_of_a_constant_image_is_zero():
    images = np.stack([np.full((5, 7), 3.0), np.full((5, 7), -0.2)])
    assert np.array_equal(metrics.roughness(images), [0.0, 0.0])


def test_roughness_of_an_all_zero_image_is_zero():
    assert metrics.roughness(np.zeros((1, 4, 4)))[0] == 0.0


def test_roughness_of_a_checkerboard_is_the_largest_possible():
    # Every neighbour pair of a +-1 checkerboard differs by 2: an H x W image has
    # H (W - 1) horizontal and (H - 1) W vertical pairs, over an L1 norm of H W.
    H, W = 5, 7
    expected = 2 * (H * (W - 1) + (H - 1) * W) / (H * W)
    board = checkerboard(H, W)
    assert metrics.roughness(board[None])[0] == pytest.approx(expected)
    # That is the maximum: each |difference| is at most the sum of the two |pixels|,
    # so no image of that size is rougher.
    rng = np.random.default_rng(0)
    others = rng.normal(size=(200, H, W))
    assert metrics.roughness(others).max() < expected


def test_roughness_of_a_step_edge_counts_one_jump_per_row():
    image = np.zeros((4, 6))
    image[:, 3:] = 1.0  # 4 rows with one jump of 1 each, 12 pixels of 1
    assert metrics.roughness(image[None])[0] == pytest.approx(4 / 12)


def test_roughness_is_invariant_to_scale_and_sign():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 6, 6))
    base = metrics.roughness(images)
    for factor in (1e-6, 0.5, -3.0, 1e4):
        assert np.allclose(metrics.roughness(factor * images), base, rtol=1e-12)


# --------------------------------------------------------------------------- similarity


def test_similarity_of_identical_images_is_one_and_of_negated_ones_minus_one():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(4, 5, 5))
    assert np.allclose(metrics.similarity(images, images), 1.0)
    assert np.allclose(metrics.similarity(-images, images), -1.0)


def test_similarity_with_a_constant_image_is_zero():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(2, 4, 4))
    constant = np.full_like(images, 7.0)
    assert np.array_equal(metrics.similarity(images, constant), [0.0, 0.0])
    assert np.array_equal(metrics.similarity(constant, images), [0.0, 0.0])


def test_similarity_is_invariant_to_positive_affine_changes():
    rng = np.random.default_rng(4)
    a, r = rng.normal(size=(3, 6, 6)), rng.normal(size=(3, 6, 6))
    base = metrics.similarity(a, r)
    assert np.allclose(metrics.similarity(5.0 * a - 2.0, 0.1 * r + 9.0), base, atol=1e-12)
    assert np.allclose(metrics.similarity(-2.0 * a + 1.0, r), -base, atol=1e-12)
    expected = [np.corrcoef(a[k].ravel(), r[k].ravel())[0, 1] for k in range(3)]
    assert np.allclose(base, expected, atol=1e-12)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("n,top", [(100, 0.1), (50, 0.2), (7, 0.5)])
def test_equal_gradient_norms_give_the_top_fraction(n, top):
    k = max(1, round(top * n))
    assert metrics.gradient_concentration(np.full(n, 2.5), top) == pytest.approx(k / n)


def test_one_example_carrying_the_gradient_gives_concentration_one():
    norms = np.zeros(100)
    norms[37] = 4.0
    assert metrics.gradient_concentration(norms) == 1.0
    assert np.isnan(metrics.gradient_concentration(np.zeros(10)))


def test_concentration_is_the_share_of_the_largest_norms():
    norms = np.arange(1.0, 21.0)  # top 10 % of 20 = the two largest, 19 + 20
    assert metrics.gradient_concentration(norms) == pytest.approx(39 / 210)


def test_top_gradient_examples_are_the_largest_norms_largest_first():
    rng = np.random.default_rng(5)
    norms = rng.permutation(np.arange(30.0))
    top = metrics.top_gradient_examples(norms, 5)
    assert list(norms[top]) == [29.0, 28.0, 27.0, 26.0, 25.0]
    assert list(metrics.top_gradient_examples(norms, 100)) == list(np.argsort(-norms))
    # Ties keep index order.
    assert list(metrics.top_gradient_examples(np.array([1.0, 3.0, 3.0, 0.0]), 3)) == [1, 2, 0]


def test_top_share_is_the_share_of_the_k_largest():
    norms = np.array([5.0, 1.0, 3.0, 1.0])  # sum 10
    assert metrics.top_share(norms, 1) == pytest.approx(0.5)
    assert metrics.top_share(norms, 2) == pytest.approx(0.8)
    assert metrics.top_share(norms, 10) == pytest.approx(1.0)  # k beyond n: all of them
    assert np.isnan(metrics.top_share(np.zeros(3), 1))


def test_the_step_zero_baseline_is_the_image_norms_share_not_the_top_fraction():
    """At zero weights every residual ||p - e_y|| is the same, so the step-0 share of the
    top 10 % is that of the image norms: on real images it is not 10 %."""
    from core.config import TrainConfig
    from core.data import load_digits_dataset
    from core.trainer import train

    ds = load_digits_dataset()
    for model in ("softmax", "ovr"):
        run = train(ds, TrainConfig(model=model, n_train=200, iterations=3, n_val=50))
        x = ds.x_train[run.train_indices].reshape(200, -1) / 255.0
        image_norms = np.linalg.norm(x, axis=1)
        step0 = metrics.trajectory_metrics(run)["concentration"][0]
        assert step0 == pytest.approx(metrics.gradient_concentration(image_norms), rel=1e-5)
        assert step0 > 0.105  # not the 10 % that "equal pulls" would give
        assert metrics.top_share(run.grad_norms(0), 20) == pytest.approx(
            metrics.top_share(image_norms, 20), rel=1e-5)


# --------------------------------------------------------------------------- forgetting


def test_never_learned_examples_count_as_forgotten_infinitely_often():
    learned_at = np.array([3, -1, -1, 0, -1])
    events = np.array([0, 0, 2, 1, 1])
    assert list(metrics.never_learned(learned_at, events)) == [False, True, False, False, False]
    counts = metrics.forgetting_counts(learned_at, events)
    assert list(counts) == [0.0, np.inf, 2.0, 1.0, 1.0]
    assert events.dtype.kind == "i"  # the run's own count is left as it was


def test_never_learned_means_wrong_at_every_step_in_a_real_run():
    from core.config import TrainConfig
    from core.data import load_digits_dataset
    from core.trainer import train

    ds = load_digits_dataset()
    T = 40  # every iteration is a snapshot, so the predictions of each step are stored
    run = train(ds, TrainConfig(n_train=300, iterations=T, n_val=50))
    y = ds.y_train[run.train_indices]
    ever_right = np.stack([run.predictions(t) == y for t in range(1, T + 1)]).any(axis=0)
    never = metrics.never_learned(run.learned_at, run.forgetting_events)
    assert np.array_equal(never, ~ever_right)
    assert 0 < never.sum() < len(y)


# --------------------------------------------------------------------------- roughness rise


def _edge(H=4, W=6):
    image = np.zeros((H, W))
    image[:, W // 2:] = 1.0
    return image


class _Run:
    """Just what :func:`metrics.roughness_rise` reads from a run."""

    def __init__(self, images: dict[int, np.ndarray], val_loss):
        self.snapshot_iterations = np.array(sorted(images))
        self._images = images
        self.snapshot_history = {"val_loss": np.asarray(val_loss, dtype=float)}

    def weights(self, t):
        return self._images[t][None]

    def best_iteration(self):
        val = self.snapshot_history["val_loss"]
        if not np.isfinite(val).any():
            return int(self.snapshot_iterations[-1])
        return int(self.snapshot_iterations[int(np.nanargmin(val))])


def test_roughness_rise_splits_the_rise_at_the_validation_minimum():
    # Roughness 0 (constant) at step 1, 4/12 (one edge per row) at step 10, the checkerboard
    # maximum at step 100, with the validation minimum at step 10.
    board = checkerboard(4, 6)
    top = 2 * (4 * 5 + 3 * 6) / 24
    run = _Run({0: np.zeros((4, 6)), 1: np.ones((4, 6)), 10: _edge(), 100: board},
               [2.3, 1.0, 0.5, 0.9])
    rise = metrics.roughness_rise(run)
    assert (rise["first"], rise["best"], rise["last"]) == (1, 10, 100)
    assert rise["at_first"] == 0.0 and rise["at_best"] == pytest.approx(1 / 3)
    assert rise["at_last"] == pytest.approx(top)
    assert rise["share"] == pytest.approx((1 / 3) / top)
    assert rise["overfits"]


def test_roughness_rise_without_overfitting_or_without_a_rise():
    still_falling = _Run({0: np.zeros((4, 6)), 1: np.ones((4, 6)), 10: _edge()},
                         [2.3, 1.0, 0.5])
    rise = metrics.roughness_rise(still_falling)
    assert not rise["overfits"] and rise["best"] == rise["last"] == 10
    assert rise["share"] == pytest.approx(1.0)
    flat = _Run({0: np.zeros((4, 6)), 1: _edge(), 5: _edge()}, [np.nan] * 3)
    rise = metrics.roughness_rise(flat)
    assert not rise["overfits"], "no validation data: nothing says where overfitting begins"
    assert np.isnan(rise["share"])


# --------------------------------------------------------------------------- one-vs-rest step


@pytest.mark.parametrize("balanced", [True, False])
def test_ovr_first_step_is_minus_the_mean_image_plus_a_class_contrast(balanced):
    rng = np.random.default_rng(6)
    K, n = 5, 200
    y = np.repeat(np.arange(K), n // K) if balanced else rng.integers(0, K, n)
    x = rng.random((n, 12))
    W, _ = metrics.first_step_closed_form(x, y, K, 1.0, "ovr")
    means, counts = metrics.class_means(x, y, K), np.bincount(y, minlength=K)
    specific, shared = metrics.ovr_first_step_parts(means, counts)
    assert np.allclose(specific + shared, W, atol=1e-12)
    mu = x.mean(axis=0)
    assert np.allclose(specific, (counts / n)[:, None] * (means - mu), atol=1e-12)
    if balanced:  # 1/K = 0.2: w_k = 0.2 (mu_k - mu) - 0.3 mu
        assert np.allclose(shared, -0.3 * np.broadcast_to(mu, shared.shape), atol=1e-12)
