"""Numbers and views computed from a finished run, for the pages and the summary.

Plain functions of a :class:`~core.run.Run` and its :class:`~core.data.Dataset`,
without caching (the UI caches them per run key). Shapes: ``S`` snapshots,
``K`` classes, ``n`` training images of ``d`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core import metrics
from core.data import Dataset
from core.run import Run


def training_design(run: Run, ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The run's training images as ``x`` (n, d) float64 in [0, 1] and labels ``y`` (n,)."""
    idx = run.train_indices
    return ds.x_train[idx].reshape(len(idx), -1) / 255.0, ds.y_train[idx]


def trajectory(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """Per-snapshot metrics of ``run``: :func:`core.metrics.trajectory_metrics`
    (``iteration``, ``similarity``, ``roughness``, ``similarity_mean``,
    ``roughness_mean``, ``coef_range``, ``concentration``).

    Which examples stop pulling is measured against the max-margin limit
    (:func:`pull_shares`), not by how typical the pulling images look: that
    correlation moved only 0.52 -> 0.45 -> 0.46 on the preset, up and down.
    """
    return metrics.trajectory_metrics(run)


def first_step(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """The closed-form first step for a unit step size, and what it is made of.

    Returns
    -------
    dict
        ``unit_W`` (K, d) and ``unit_b`` (K,): weights and bias after one step of
        size 1 from zero (:func:`core.metrics.first_step_closed_form`; multiply by
        :func:`first_step_scale`); ``counts`` (K,) training images per class;
        ``means`` (K, d) class mean images; ``contrasts`` (K, d) ``mu_k - mu``.
    """
    x, y = training_design(run, ds)
    K = ds.n_classes
    unit_W, unit_b = metrics.first_step_closed_form(x, y, K, 1.0, run.config.model)
    return {"unit_W": unit_W, "unit_b": unit_b, "counts": np.bincount(y, minlength=K),
            "means": metrics.class_means(x, y, K), "contrasts": metrics.class_contrasts(x, y, K)}


def first_step_scale(run: Run, fs: dict[str, np.ndarray]) -> float:
    """The step size ``a`` of the run's first step, so that step 1 is ``a * fs["unit_*"]``.

    Gradient descent's is its learning rate. L-BFGS's first iterate is the
    negative gradient at zero times a line-search step: ``a`` is fitted by least
    squares of ``[W(1), b(1)]`` onto ``[unit_W, unit_b]``, the bias included.

    Parameters
    ----------
    run : Run
    fs : dict
        :func:`first_step` of the run.

    Raises
    ------
    KeyError
        For an L-BFGS run without a stored iteration 1.
    """
    if run.config.optimizer != "lbfgs":
        return float(run.learning_rate)
    got = np.concatenate([run.weights(1).ravel(), run.bias(1)]).astype(np.float64)
    unit = np.concatenate([np.ravel(fs["unit_W"]), fs["unit_b"]])
    return float(np.vdot(got, unit) / np.vdot(unit, unit))


# ---------------------------------------------------------------------------
# Why the noise: the spectrum of the training images
# ---------------------------------------------------------------------------

def subset_key(run: Run) -> str:
    """Names the run's training images (data, size, seed, hold-out): runs that differ
    only in penalty, steps or optimizer share their spectrum and max-margin limit."""
    cfg = run.config
    return f"{run.fingerprint}/{cfg.n_train}/{cfg.seed}/{cfg.n_val}/{cfg.model}"


@dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of the training images' second moment ``x^T x / n`` (d, d).

    Pixels in [0, 1], uncentred, the bias left out. Gradient descent with step
    ``a`` from zero fits a direction of eigenvalue ``lambda`` on a time scale of
    about ``1 / (a c lambda)`` steps (``c`` the loss's curvature factor, at most 1/2),
    so by step ``t`` at most the directions with ``a t lambda > 1`` are fitted:
    first the large, smooth, garment-like ones, then ever finer ones.

    Attributes
    ----------
    eigenvalues : (d,) descending
    eigenvectors : (d, d), column j the eigen-image of ``eigenvalues[j]``
    eigen_roughness : (d,) roughness (TV / L1) of each eigen-image
    image_shape : (H, W)
    step : float
        The run's step size ``a`` (NaN for L-BFGS).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    eigen_roughness: np.ndarray
    image_shape: tuple[int, int]
    step: float

    def class_energy(self, weights: np.ndarray) -> np.ndarray:
        """Each class's share of its squared norm along each direction, (K, d); rows sum to 1."""
        coords = np.asarray(weights, dtype=np.float64).reshape(len(weights), -1) @ self.eigenvectors
        sq = coords ** 2
        total = sq.sum(axis=1, keepdims=True)
        return np.divide(sq, total, out=np.zeros_like(sq), where=total > 0)

    def energy(self, weights: np.ndarray) -> np.ndarray:
        """Share of the squared norm of ``weights`` (K, H, W) along each direction, (d,); sums to 1."""
        coords = np.asarray(weights, dtype=np.float64).reshape(len(weights), -1) @ self.eigenvectors
        sq = (coords ** 2).sum(axis=0)
        return sq / sq.sum() if sq.sum() > 0 else sq

    def fitted(self, t: float) -> int:
        """Directions with ``a t lambda > 1``: an upper bound on those fitted by step ``t``."""
        if not np.isfinite(self.step):
            return 0
        return int(np.count_nonzero(self.step * t * self.eigenvalues > 1.0))

    def roughness_estimate(self, weights: np.ndarray) -> np.ndarray:
        """Each class's roughness estimated from its energy over the spectrum, (K,).

        ``sum_j energy_kj * roughness(eigen-image j)``. TV / L1 is not additive over
        directions, so this is an estimate (within a few percent on Fashion-MNIST).
        """
        return self.class_energy(weights) @ self.eigen_roughness

    def keep_top(self, weights: np.ndarray, k: int) -> np.ndarray:
        """``weights`` (K, H, W) projected on the top ``k`` directions, same shape."""
        w = np.asarray(weights, dtype=np.float64).reshape(len(weights), -1)
        V = self.eigenvectors[:, :k]
        return ((w @ V) @ V.T).reshape(np.shape(weights))

    def eigen_images(self, which: np.ndarray) -> np.ndarray:
        """Eigen-images ``which`` (indices) as (len(which), H, W), each signed so that its
        largest-magnitude pixel is positive."""
        vecs = self.eigenvectors[:, which].T.copy()
        signs = np.sign(vecs[np.arange(len(vecs)), np.abs(vecs).argmax(axis=1)])
        return (vecs * signs[:, None]).reshape(len(vecs), *self.image_shape)


def eigen_basis(run: Run, ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (d,) descending and eigenvectors (d, d) of the run's ``x^T x / n``.

    Depends only on the training images (see :func:`subset_key`).
    """
    x, _ = training_design(run, ds)
    lam, V = np.linalg.eigh(x.T @ x / len(x))
    return np.maximum(lam[::-1], 0.0), np.ascontiguousarray(V[:, ::-1])


def spectrum(run: Run, ds: Dataset,
             basis: tuple[np.ndarray, np.ndarray] | None = None) -> Spectrum:
    """The :class:`Spectrum` of the run's training images, with the run's step size.

    ``basis`` (from :func:`eigen_basis`) skips the decomposition when a cache has it.
    """
    lam, V = basis if basis is not None else eigen_basis(run, ds)
    shape = tuple(ds.image_shape)
    rough = metrics.roughness(V.T.reshape(-1, *shape))
    step = float(run.learning_rate) if run.config.optimizer != "lbfgs" else float("nan")
    return Spectrum(lam, V, rough, shape, step)


def accuracy(run: Run, ds: Dataset, weights: np.ndarray, bias: np.ndarray,
             split: str = "val") -> float:
    """Accuracy of (weights (K, H, W), bias (K,)) on the run's "train" or "val" images."""
    idx = run.val_indices if split == "val" else run.train_indices
    if len(idx) == 0:
        return float("nan")
    x = ds.x_train[idx].reshape(len(idx), -1) / 255.0
    z = x @ np.asarray(weights, dtype=np.float64).reshape(len(weights), -1).T + bias
    return float((z.argmax(axis=1) == ds.y_train[idx]).mean())


# ---------------------------------------------------------------------------
# Early stopping as L2
# ---------------------------------------------------------------------------

#: Multiples of 1 / (a t) at which the L2 solution is compared with W_t: 0.25x to 4x.
L2_FACTORS = 2.0 ** np.linspace(-2.0, 2.0, 7)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two arrays taken as flat vectors (0 if either is zero)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else 0.0


def class_cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine between each class's weights in ``A`` and ``B`` (K, ...), (K,)."""
    a = np.asarray(A, dtype=np.float64).reshape(len(A), -1)
    b = np.asarray(B, dtype=np.float64).reshape(len(B), -1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    num = np.einsum("ij,ij->i", a, b)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


@dataclass(frozen=True)
class EquivalentL2:
    """How close gradient descent at step ``t`` is to the converged L2 solution.

    Along gradient flow, stopping at step ``t`` with step ``a`` acts like an L2
    penalty of strength ``1 / (a t)`` (added to the run's own L2). Only the weights
    are compared: the L2 solution's unpenalised bias has converged, gradient
    descent's has not.

    Attributes
    ----------
    step : int
    predicted_strength : float
        ``l2 + 1 / (a t)``.
    factors, cosines : (F,)
        Multiples of the predicted strength and the cosine of ``W_t`` with the L2
        solution at each.
    strength, cosine : float
        The best-matching strength (interpolated) and its cosine.
    strength_range : (float, float)
        Strengths whose cosine is within 0.001 of the best: the curve is flat there.
    predicted_cosine : float
    class_cosines : (K,)
        Per class, at the predicted strength.
    weights, bias : (K, H, W), (K,)
        The L2 solution at the predicted strength.
    norm_ratio : float
        ``||W_t|| / ||W_L2||`` at the predicted strength.
    """

    step: int
    predicted_strength: float
    factors: np.ndarray
    cosines: np.ndarray
    strength: float
    cosine: float
    strength_range: tuple[float, float]
    predicted_cosine: float
    class_cosines: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    norm_ratio: float


def l2_unavailable(run: Run) -> str:
    """Why the early-stopping/L2 match is not shown for ``run`` ("" when it is)."""
    if run.config.optimizer == "lbfgs":
        return ("L-BFGS chooses its own steps, so its iterations have no step size a to "
                "turn into a strength 1/(a t).")
    if run.config.l1:
        return "An L1 run's proximal steps are not a gradient flow: the match is for L2 only."
    n = len(run.train_indices)
    if n > MAX_SOLVE_IMAGES:
        return (f"Not computed: {n:,} training images is more than the {MAX_SOLVE_IMAGES:,} "
                "this view solves L2 for (minutes per step). Use fewer training images to see "
                "it.")
    return ""


def equivalent_l2(run: Run, ds: Dataset, t: int, *,
                  basis: tuple[np.ndarray, np.ndarray] | None = None,
                  solved: dict[float, tuple[np.ndarray, np.ndarray]] | None = None
                  ) -> EquivalentL2:
    """Compare ``W_t`` with the converged L2 solutions at 0.25x to 4x of ``l2 + 1/(a t)``.

    Parameters
    ----------
    t : int
        A stored snapshot, at least 1.
    basis : optional, :func:`eigen_basis` of the run (saves the decomposition).
    solved : dict, optional
        Solutions already known, ``{strength: (W (K, d), b (K,))}``: each solve starts
        from the one at the nearest strength (else from ``W_t``), and adds its own.

    Raises
    ------
    ValueError
        For L-BFGS and L1 runs (no gradient-flow match) and ``t < 1``.
    """
    from core import solvers

    why = l2_unavailable(run)
    if why:
        raise ValueError(why)
    if t < 1:
        raise ValueError("Step 0 has zero weights: there is nothing to compare.")
    x, y = training_design(run, ds)
    K = ds.n_classes
    basis = basis if basis is not None else eigen_basis(run, ds)
    Wt = run.weights(t).reshape(K, -1).astype(np.float64)
    predicted = float(run.config.l2) + 1.0 / (run.learning_rate * t)
    solved = solved if solved is not None else {}
    sols: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for f in sorted(L2_FACTORS, reverse=True):  # strong to weak: each warm-starts the next
        strength = predicted * f
        near = min(solved, key=lambda s: abs(np.log(s / strength)), default=None)
        start = solved[near] if near is not None else (Wt, run.bias(t).astype(np.float64))
        sols[float(f)] = solved[strength] = solvers.l2_logistic(
            x, y, K, run.config.model, strength, init=start, basis=basis, gtol=1e-5)
    cos = np.array([cosine(Wt, sols[float(f)][0]) for f in L2_FACTORS])
    best, lo, hi, best_cos = _flat_peak(np.log2(L2_FACTORS), cos, 0.001)
    W1, b1 = sols[1.0]
    return EquivalentL2(
        step=int(t), predicted_strength=predicted, factors=L2_FACTORS.copy(), cosines=cos,
        strength=predicted * 2 ** best, cosine=best_cos,
        strength_range=(predicted * 2 ** lo, predicted * 2 ** hi),
        predicted_cosine=float(cos[list(L2_FACTORS).index(1.0)]),
        class_cosines=class_cosines(Wt, W1), weights=W1.reshape(K, *ds.image_shape),
        bias=b1, norm_ratio=float(np.linalg.norm(Wt) / max(np.linalg.norm(W1), 1e-300)))


def _flat_peak(u: np.ndarray, v: np.ndarray, within: float) -> tuple[float, float, float, float]:
    """Peak of the smooth curve through (u, v) (cubic spline on a fine grid): its ``u``,
    the ``u`` range within ``within`` of the peak, and the peak value."""
    from scipy.interpolate import CubicSpline

    fine = np.linspace(u[0], u[-1], 801)
    vals = CubicSpline(u, v)(fine)
    i = int(np.argmax(vals))
    near = fine[vals >= vals[i] - within]
    return float(fine[i]), float(near.min()), float(near.max()), float(vals[i])


def l2_steps(run: Run) -> list[int]:
    """The stored 1-2-5 snapshots (1, 2, 5, 10, ..., T) at which the L2 match is computed."""
    from core.trainer import one_two_five
    stored = set(run.snapshot_iterations.tolist())
    return [t for t in one_two_five(run.iterations_done) if t in stored]


def l2_path(run: Run, ds: Dataset, progress=None,
            into: dict | None = None) -> dict[int, EquivalentL2]:
    """:func:`equivalent_l2` at every :func:`l2_steps` snapshot.

    The last step comes first (the step a page shows first), then the others in order.
    ``into`` (a dict) receives each step's result as soon as it is known, so a page can
    show it before the path is complete; ``progress(done, total)`` is called after each.
    """
    steps = l2_steps(run)
    steps = steps[-1:] + steps[:-1]
    basis = eigen_basis(run, ds)
    out: dict[int, EquivalentL2] = into if into is not None else {}
    solved: dict = {}
    for i, t in enumerate(steps):
        out[t] = equivalent_l2(run, ds, t, basis=basis, solved=solved)
        if progress is not None:
            progress(i + 1, len(steps))
    return out


# ---------------------------------------------------------------------------
# Where unpenalised descent heads: the max-margin limit, and who still pulls
# ---------------------------------------------------------------------------

#: Above this many training images the hard-margin and L2 solves are not attempted
#: (minutes each on two cores).
MAX_SOLVE_IMAGES = 5000
#: Seconds a hard-margin solve may take before it is stopped ("not determined").
MAX_MARGIN_SECONDS = 60.0
#: A training example is a support vector when its margin is at most this.
SUPPORT_MARGIN = 1.001


@dataclass(frozen=True)
class MaxMargin:
    """The hard-margin solution of the run's training images, or why there is none.

    Gradient descent on separable data from zero heads, in direction, to the
    hard-margin SVM on ``[x, 1]`` (softmax: Crammer-Singer multiclass; one-vs-rest:
    one binary SVM per class), while its norm grows like ``log t``.

    Attributes
    ----------
    determined : bool
        False when the solve was not attempted or did not finish (``reason`` says why).
    reason : str
    weights : (K, H, W) or None
    bias : (K,) or None
    margin : (n,) or None
        Each training example's margin under the solution (at least 1 when separable).
    support : (n,) bool or None
        Margin at most :data:`SUPPORT_MARGIN`: the examples that define the limit.
    separable : bool
        Every margin at least ``1 - 1e-3``: the hard-margin problem has a solution.
    seconds : float
    """

    determined: bool
    reason: str = ""
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    margin: np.ndarray | None = None
    support: np.ndarray | None = None
    separable: bool = False
    seconds: float = 0.0


def max_margin(run: Run, ds: Dataset, *, max_images: int = MAX_SOLVE_IMAGES,
               seconds: float = MAX_MARGIN_SECONDS, check=None) -> MaxMargin:
    """The hard-margin limit of the run's training images (same for every run on them).

    Solved by :func:`core.solvers.hard_margin` in a child process stopped after
    ``seconds``, or when ``check()`` raises (the exception propagates); not attempted
    above ``max_images`` training images.
    """
    import time

    from core import solvers

    x, y = training_design(run, ds)
    n = len(y)
    if n > max_images:
        return MaxMargin(False, f"Not determined: {n:,} training images is more than the "
                                f"{max_images:,} this view solves for (it would take minutes). "
                                "Use fewer training images to see it.")
    started = time.perf_counter()
    try:
        W, b = solvers.hard_margin_within(x, y, ds.n_classes, run.config.model, seconds,
                                          check=check)
    except solvers.SolveTimeout:
        return MaxMargin(False, f"Not determined: the solve was stopped after {seconds:g} s. "
                                "Use fewer training images to see it.",
                         seconds=time.perf_counter() - started)
    m = solvers.margins(x, y, W, b, run.config.model)
    return MaxMargin(True, "", W.reshape(ds.n_classes, *ds.image_shape), b, m,
                     m <= SUPPORT_MARGIN, bool(m.min() >= 1 - 1e-3),
                     time.perf_counter() - started)


def direction_cosines(run: Run, mm: MaxMargin) -> np.ndarray:
    """Cosine of ``[W_t, b_t]`` with the limit's ``[W, b]`` at every snapshot, (S,)."""
    ref = np.concatenate([mm.weights.ravel(), mm.bias]).astype(np.float64)
    ref /= np.linalg.norm(ref)
    both = np.concatenate([run.snapshot_weights.reshape(len(run.snapshot_weights), -1),
                           run.snapshot_biases], axis=1).astype(np.float64)
    norms = np.linalg.norm(both, axis=1)
    return np.divide(both @ ref, norms, out=np.zeros_like(norms), where=norms > 0)


def parameter_norms(run: Run) -> np.ndarray:
    """``||[W_t, b_t]||`` at every snapshot, (S,): grows like ``log t`` once separable."""
    both = np.concatenate([run.snapshot_weights.reshape(len(run.snapshot_weights), -1),
                           run.snapshot_biases], axis=1).astype(np.float64)
    return np.linalg.norm(both, axis=1)


def window_pulls(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """How much each training example pulled in each window between residual edges.

    Returns
    -------
    edges : (E,)
        The window edges (0, 10, 100, ..., T); window w runs from edge w to w + 1.
    pulls : (E - 1, n)
        ``||A_i(end) - A_i(start)||``: the norm of the example's summed residual
        ``p_i - e_{y_i}`` over the window, its coefficient in the update of ``W``
        up to ``-a / n`` (W's update is the sum of these coefficients times images).
    """
    A = run.residual_sums.astype(np.float64)
    if len(A) < 2:
        return run.residual_iterations, np.zeros((0, len(run.train_indices)))
    return run.residual_iterations, np.linalg.norm(np.diff(A, axis=0), axis=2)


def pull_shares(run: Run, support: np.ndarray) -> np.ndarray:
    """Share of each window's pull carried by examples outside ``support`` (E - 1,).

    ``sum_{i not support} pull_i / sum_i pull_i`` per window of :func:`window_pulls`
    (the sum of norms: the parts of the update cancel, so this is not the norm of
    the non-support part of the update).
    """
    _, pulls = window_pulls(run)
    total = pulls.sum(axis=1)
    rest = pulls[:, ~np.asarray(support, dtype=bool)].sum(axis=1)
    return np.divide(rest, total, out=np.full_like(total, np.nan), where=total > 0)
