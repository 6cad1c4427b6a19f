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
