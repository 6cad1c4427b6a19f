"""Training: full-batch gradient descent (or L-BFGS) from zero weights, recorded as a Run.

The objective, its shapes and its gradient are written out in :mod:`core.objective`.
Gradient descent updates from ``W = 0, b = 0`` with step ``a``::

    W <- prox_{a l1}(W - a grad_W),   b <- b - a grad_b

where ``prox`` is soft-thresholding (the identity when l1 = 0). The loss is
L-smooth (:func:`core.objective.smoothness`), so ``learning_rate="auto"``
takes ``a = 1/L``, under which the objective never increases; steps beyond
``2/L`` can diverge. L-BFGS (``optimizer="lbfgs"``) minimises the same
objective without L1 and chooses its own steps; its iterates are replayed
through the same :class:`Recorder`, so both optimizers give the same kind of
:class:`~core.run.Run`.

Iteration ``t`` means the weights after ``t`` updates. Everything recorded at
iteration ``t`` (loss, accuracy, per-example numbers) is measured at those
weights.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from core import kernels
from core.config import VALIDATION_SEED, TrainConfig, validation_size
from core.data import Dataset, stratified_split, stratified_subset
from core.objective import make_pass, objective_and_gradient, smoothness, smoothness_u8
from core.run import Records, Run

# Re-exported for callers that import them from here.
__all__ = ["DIVERGENCE_FACTOR", "Recorder", "Run", "TrainConfig", "TrainingCancelled",
           "VALIDATION_SEED", "default_backend", "objective_and_gradient", "one_two_five",
           "smoothness", "snapshot_schedule", "train", "validation_size"]

#: Loss above this multiple of its starting value counts as divergence.
DIVERGENCE_FACTOR = 10.0


def snapshot_schedule(iterations: int, n_log: int = 60) -> np.ndarray:
    """Iterations at which a run stores weights and per-example records.

    0, the 1-2-5 sequence up to T, ``n_log`` log-spaced points in [1, T] and T
    itself; every iteration when T is at most 100 (short runs, such as L-BFGS
    trajectories, keep every iterate). Sorted, unique, int64.
    """
    T = int(iterations)
    if T <= max(n_log, 100):
        return np.arange(T + 1, dtype=np.int64)
    points = {0, T, *one_two_five(T)}
    # Rounding merges neighbours near the start of a log grid: ask for more points
    # until the grid alone has n_log distinct iterations.
    asked = n_log
    while True:
        grid = np.unique(np.round(np.logspace(0, math.log10(T), asked)).astype(np.int64))
        if len(grid) >= n_log:
            break
        asked += n_log - len(grid)
    points.update(grid.tolist())
    return np.array(sorted(points), dtype=np.int64)


def residual_edges(iterations: int) -> np.ndarray:
    """Iterations at which gradient descent stores its residual sums: 0, the powers of
    ten from 10 up to T, and T (the edges of the windows "1-10", "10-100", ...)."""
    T = int(iterations)
    edges = {0, T} | {10 ** k for k in range(1, 20) if 10 ** k <= T}
    return np.array(sorted(edges), dtype=np.int64)


def one_two_five(last: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``last``, then ``last`` itself (the question's grid)."""
    out, decade = [], 1
    while decade <= last:
        out += [m * decade for m in (1, 2, 5) if m * decade <= last]
        decade *= 10
    return out + ([last] if last not in out and last >= 1 else [])


class TrainingCancelled(Exception):
    """Raised by a progress callback to stop a run early; nothing is returned."""


def default_backend() -> str:
    """"numba" when the compiled kernel is available, else "numpy"."""
    return "numba" if kernels.AVAILABLE else "numpy"


def train(
    ds: Dataset,
    cfg: TrainConfig,
    progress: Callable[[int, int], None] | None = None,
    *,
    progress_interval: float = 0.1,
    backend: str | None = None,
    record: bool = True,
) -> Run:
    """Train ``cfg`` on ``ds`` from zero weights by gradient descent or L-BFGS.

    Parameters
    ----------
    ds : Dataset
    cfg : TrainConfig
    progress : callable, optional
        Called as ``progress(done, total)`` at least every ``progress_interval``
        seconds and once at the end. It may raise (for example
        :class:`TrainingCancelled`) to abandon the run.
    backend : {"numba", "numpy"}, optional
        The compiled fused kernel (default where Numba is installed) or plain
        numpy matrix products; both compute the same run up to rounding.
    record : bool
        False stores only iterations 0 and T and skips the per-example
        bookkeeping: for measuring what recording costs, not for the app.

    Returns
    -------
    Run

    Raises
    ------
    ValueError
        If the config is invalid for this data set (message per setting), or
        the backend is unknown or unavailable.
    """
    problems = cfg.problems(ds)
    if problems:
        raise ValueError(" ".join(problems.values()))
    started = time.perf_counter()
    dtype = np.dtype(cfg.dtype)
    K = ds.n_classes
    backend = backend or default_backend()

    keep, val_idx = stratified_split(ds.y_train, validation_size(ds, cfg.n_val), VALIDATION_SEED)
    train_idx = keep[stratified_subset(ds.y_train[keep], cfg.n_train, cfg.seed)]
    X8 = _flat(ds.x_train, train_idx)
    passes = {
        "train": make_pass(backend, X8, ds.y_train[train_idx], K, dtype, cfg.model),
        "val": make_pass(backend, _flat(ds.x_train, val_idx), ds.y_train[val_idx], K, dtype,
                         cfg.model),
        "test": make_pass(backend, _flat(ds.x_test, np.arange(len(ds.y_test))), ds.y_test, K,
                          dtype, cfg.model),
    }
    L = smoothness_u8(X8, cfg.model, cfg.l2, dtype=dtype)
    if cfg.optimizer == "lbfgs":
        iterates, finished = _lbfgs_iterates(passes["train"], cfg, K, X8.shape[1],
                                             _Ticker(progress, int(cfg.iterations),
                                                     progress_interval))
        T, lr = len(iterates) - 1, float("nan")

        def optimize(rec: Recorder) -> None:
            _replay(rec, passes["train"], iterates)
    else:
        T = int(cfg.iterations)
        lr = 1.0 / L if cfg.learning_rate == "auto" else float(cfg.learning_rate)
        finished = f"Finished all {T:,} iterations."

        def optimize(rec: Recorder) -> None:
            _descend(rec, passes["train"], cfg, lr,
                     _Ticker(progress, T, progress_interval))

    rec = Recorder(passes, X8, K, cfg, T, lr, L, finished, record)
    if record and cfg.optimizer != "lbfgs":
        rec.sum_residuals(passes["train"].accumulate())
    loop_started = time.perf_counter()
    optimize(rec)
    loop_seconds = time.perf_counter() - loop_started
    if progress is not None:
        progress(rec.done, int(cfg.iterations))
    return rec.build(
        config=cfg, fingerprint=ds.fingerprint, image_shape=tuple(ds.image_shape),
        class_names=tuple(ds.class_names), train_indices=train_idx, val_indices=val_idx,
        learning_rate=lr, smoothness=L, seconds=time.perf_counter() - started,
        loop_seconds=loop_seconds, backend=backend,
    )


def _descend(rec: "Recorder", train_pass, cfg: TrainConfig, lr: float, tick: "_Ticker") -> None:
    """Gradient descent with step ``lr`` from zero weights, every iterate fed to ``rec``
    until it has T or reports divergence."""
    dtype = np.dtype(cfg.dtype)
    # A step or an L2 strength the run's dtype cannot hold makes every step overflow:
    # the run stops after iteration 0, saying which setting it was.
    unfit = _beyond(dtype, lr, cfg.l2)
    a = dtype.type(0.0 if unfit else lr)
    K, d = rec.snapshot_weights.shape[1:]
    W = np.zeros((K, d), dtype=dtype)
    b = np.zeros(K, dtype=dtype)
    inv_n = dtype.type(1.0 / len(train_pass.y))
    l2 = dtype.type(0.0 if unfit else cfg.l2)
    # Any shrink beyond the dtype's range sets every weight to zero, as the largest does.
    shrink = dtype.type(min(float(a) * cfg.l1, float(np.finfo(dtype).max)))
    for t in range(rec.T + 1):
        out = train_pass.run(W, b, want_grad=t < rec.T, want_records=rec.is_snapshot(t))
        if not rec.record(t, W, b, out) or t == rec.T:
            return
        if unfit:
            rec.stop(t + 1, unfit)
            return
        grad_W, grad_b = out.grad_W, out.grad_b
        grad_W *= inv_n
        grad_b *= inv_n
        if cfg.l2:
            grad_W += l2 * W
        W = W - a * grad_W
        b = b - a * grad_b
        if cfg.l1:
            W = np.sign(W) * np.maximum(np.abs(W) - shrink, 0)
        tick(t + 1)


def _replay(rec: "Recorder", train_pass, iterates) -> None:
    """Feed the given iterates ``[(W (K, d), b (K,)), ...]`` to ``rec`` in order."""
    for t, (W, b) in enumerate(iterates):
        out = train_pass.run(W, b, want_grad=False, want_records=rec.is_snapshot(t))
        if not rec.record(t, W, b, out):
            return


def _lbfgs_iterates(train_pass, cfg: TrainConfig, K: int, d: int, tick: "_Ticker"):
    """Every iterate of SciPy's L-BFGS-B on the trainer's objective, from zero.

    The objective is the mean loss + (l2/2)||W||^2 with the intercept
    unpenalised: scikit-learn's ``LogisticRegression(C=1/(l2 n))`` (``C=inf`` for
    l2 = 0). The options are scikit-learn's (``maxls=50``, ``ftol=64 eps``); the
    gradient tolerance is 0, so the run stops only at T iterations or when the
    objective stops decreasing in float64.

    Returns
    -------
    iterates : list of (W (K, d), b (K,)) float64, starting with zeros
    reason : str
    """
    from scipy.optimize import minimize

    n = len(train_pass.y)
    l2 = float(cfg.l2)
    iterates = [(np.zeros((K, d)), np.zeros(K))]

    def objective(theta):
        W = theta[: K * d].reshape(K, d)
        b = theta[K * d:]
        out = train_pass.run(W, b, want_grad=True)
        value = float(out.loss.mean(dtype=np.float64)) + 0.5 * l2 * float(np.vdot(W, W))
        grad = np.empty_like(theta)
        grad[: K * d] = (out.grad_W / n + l2 * W).ravel()
        grad[K * d:] = out.grad_b / n
        return value, grad

    def callback(intermediate_result):
        x = intermediate_result.x
        iterates.append((x[: K * d].reshape(K, d).copy(), x[K * d:].copy()))
        tick(len(iterates) - 1)

    result = minimize(
        objective, np.zeros(K * d + K), jac=True, method="L-BFGS-B", callback=callback,
        options={"maxiter": int(cfg.iterations), "maxls": 50, "gtol": 0.0,
                 "ftol": 64 * np.finfo(float).eps, "maxfun": 50 * int(cfg.iterations) + 100},
    )
    done = len(iterates) - 1
    if done >= int(cfg.iterations):
        reason = f"Finished all {done:,} L-BFGS iterations."
    else:
        # SciPy's message is upper case ("CONVERGENCE: REL_REDUCTION_OF_F_<=_FACTR*EPSMCH").
        said = str(result.message).replace("_", " ").strip().rstrip(".")
        reason = (f"L-BFGS stopped after {done:,} of {int(cfg.iterations):,} iterations "
                  f"(SciPy: {said.capitalize() if said.isupper() else said}).")
    return iterates, reason


class Recorder:
    """Everything a run records, fed one iterate at a time by an optimizer.

    An optimizer calls :meth:`is_snapshot` to know whether its pass must keep
    per-example records, then :meth:`record` with every iterate ``t = 0..T`` in
    order, and stops when it returns False (divergence). :meth:`build` then
    stores the last good iterate of a diverged run, evaluates the test split and
    returns the :class:`~core.run.Run`.

    Parameters
    ----------
    passes : dict
        Passes (see :func:`core.objective.make_pass`) over the "train", "val"
        and "test" rows.
    X8 : (n, d) uint8
        The training rows (for the per-example gradient norms).
    n_classes : int
    cfg : TrainConfig
    T : int
        Last iteration the optimizer will feed.
    lr, L : float
        Step size and smoothness constant (for the divergence message).
    finished : str
        Stop reason when all T iterations are reached.
    record : bool
        False keeps only iterations 0 and T and skips the per-example counts.
    """

    def __init__(self, passes: dict, X8: np.ndarray, n_classes: int, cfg: TrainConfig, T: int,
                 lr: float, L: float, finished: str, record: bool = True):
        self.passes, self.cfg, self.T, self.lr, self.L = passes, cfg, T, lr, L
        self.y = passes["train"].y
        self.counting = record
        self.snaps = snapshot_schedule(T) if record else np.array(sorted({0, T}), dtype=np.int64)
        S, (n, d), dtype = len(self.snaps), X8.shape, np.dtype(cfg.dtype)
        self.x_norm = np.sqrt(np.einsum("ij,ij->i", X8, X8, dtype=np.float64)) / 255.0
        self.snapshot_weights = np.zeros((S, n_classes, d), dtype=dtype)
        self.snapshot_biases = np.zeros((S, n_classes), dtype=dtype)
        self.snapshot_grad_norms = np.zeros((S, n), dtype=np.float32)
        self.records = {split: Records.empty(S, len(passes[split].y)) for split in ("train", "val")}
        self.snapshot_history = {k: np.full(S, np.nan) for k in (
            "val_loss", "val_acc", "test_loss", "test_acc", "weight_norm", "coef_range")}
        self.history = {k: np.full(T + 1, np.nan) for k in ("train_loss", "train_acc", "objective")}
        self.correct_prev = np.zeros(n, dtype=bool)
        self.forgets = np.zeros(n, dtype=np.int32)
        self.last_wrong = np.zeros(n, dtype=np.int64)
        self.penalized = bool(cfg.l2 or cfg.l1)
        self.slot = 0  # snapshots stored so far
        self.loss0: float | None = None
        self.last_good = None  # (W, b) of the last recorded iterate
        self.done, self.diverged, self.stop_reason = T, False, finished
        self.acc = None  # residual sums of the training pass (see sum_residuals)
        self.edges = np.zeros(0, dtype=np.int64)
        self.residual_sums = np.zeros((0, n, n_classes), dtype=np.float32)

    def sum_residuals(self, acc: np.ndarray) -> None:
        """Store ``acc`` at the :func:`residual_edges`: the training pass's running sum
        (n, K) of ``p_i - e_{y_i}`` over every gradient it has computed.

        With ``A_t`` the sum over iterates ``0 .. t-1``, an unpenalised run has
        ``W_t = -(a / n) A_t^T X`` exactly: ``A_t`` says how much each example
        has pulled, and ``A_t2 - A_t1`` how much it pulled between two edges.
        """
        self.acc = acc
        self.edges = residual_edges(self.T)
        self.residual_sums = np.zeros((len(self.edges),) + acc.shape, dtype=np.float32)

    def is_snapshot(self, t: int) -> bool:
        """Whether iterate ``t`` (the next to record) is stored with its per-example records."""
        return self.slot < len(self.snaps) and self.snaps[self.slot] == t

    def record(self, t: int, W: np.ndarray, b: np.ndarray, out) -> bool:
        """Record iterate ``t`` at weights ``W`` (K, d), ``b`` (K,) from its training pass.

        ``out`` is the pass at (W, b), with records when :meth:`is_snapshot`.
        ``W`` and ``b`` are kept by reference, so the caller must not change them
        in place afterwards. Returns False, recording nothing, when the objective
        is not finite or exceeds ``DIVERGENCE_FACTOR`` times its value at 0.
        """
        loss = float(out.loss.mean(dtype=np.float64))
        obj = loss + self._penalty(W) if self.penalized else loss
        if self.loss0 is None:
            self.loss0 = obj
        if not (math.isfinite(obj) and obj <= DIVERGENCE_FACTOR * self.loss0
                and np.isfinite(W).all()):
            self.diverged, self.done = True, t - 1
            self.stop_reason = _divergence_reason(t, obj, self.loss0, self.lr, self.L, self.cfg)
            return False
        correct = out.pred == self.y
        h = self.history
        h["train_loss"][t], h["train_acc"][t], h["objective"][t] = loss, float(correct.mean()), obj
        if t > 0 and self.counting:
            # Iteration 0 predicts nothing (all logits equal): counting starts at 1.
            self.forgets += self.correct_prev & ~correct
            self.last_wrong[~correct] = t
            self.correct_prev = correct
        if self.is_snapshot(t):
            self._store(self.slot, W, b, out)
            self.slot += 1
        if self.acc is not None and t < self.T:
            # The pass at t has just added its residuals: the sum is now A_{t+1}.
            edge = int(np.searchsorted(self.edges, t + 1))
            if edge < len(self.edges) and self.edges[edge] == t + 1:
                self.residual_sums[edge] = self.acc
        self.last_good = (W, b)
        return True

    def stop(self, t: int, reason: str) -> None:
        """End the run before iterate ``t``, which cannot be computed, for ``reason``;
        it counts as diverged and keeps the weights of iterate ``t - 1``."""
        self.diverged, self.done, self.stop_reason = True, t - 1, reason

    def build(self, **identity) -> Run:
        """The :class:`~core.run.Run` of what was recorded.

        ``identity`` holds the Run fields the recorder does not know (config,
        data, indices, step, timing, backend).
        """
        S, snaps, done = self.slot, self.snaps, self.done
        if self.diverged:
            # The bad step is dropped; the last good iterate becomes the final snapshot.
            W, b = self.last_good
            S = int((snaps[:S] < done).sum())
            self._store(S, W, b, self.passes["train"].run(W, b, want_grad=False,
                                                          want_records=True))
            snaps = np.append(snaps[:S], done)
            S += 1
        # The test split is only reported: at the end and at the early-stopping snapshot,
        # never used to choose anything (and not evaluated at every snapshot, to save time).
        val_loss = self.snapshot_history["val_loss"][:S]
        best = int(np.nanargmin(val_loss)) if np.isfinite(val_loss).any() else S - 1
        if len(self.passes["test"].y):
            for slot in {best, S - 1}:
                self._evaluate("test", slot, self.snapshot_weights[slot],
                               self.snapshot_biases[slot])
        edges = self.edges <= done
        learned_at = np.where(self.last_wrong < done, self.last_wrong + 1, -1)
        learned_at[~self.correct_prev] = -1
        return Run(
            **identity,
            iterations_done=done,
            history={k: v[: done + 1] for k, v in self.history.items()},
            snapshot_iterations=snaps[:S].copy(),
            snapshot_history={k: v[:S].copy() for k, v in self.snapshot_history.items()},
            learned_at=learned_at,
            forgetting_events=self.forgets,
            diverged=self.diverged,
            stop_reason=self.stop_reason,
            snapshot_weights=self.snapshot_weights[:S].copy(),
            snapshot_biases=self.snapshot_biases[:S].copy(),
            snapshot_grad_norms=self.snapshot_grad_norms[:S].copy(),
            records={k: r.first(S) for k, r in self.records.items()},
            residual_iterations=self.edges[edges].copy(),
            residual_sums=self.residual_sums[edges].copy(),
        )

    def _penalty(self, W: np.ndarray) -> float:
        cfg = self.cfg
        return 0.5 * cfg.l2 * float(np.vdot(W, W)) + cfg.l1 * float(np.abs(W).sum())

    def _evaluate(self, split: str, slot: int, W: np.ndarray, b: np.ndarray):
        """Mean loss and accuracy of ``split`` at (W, b) into snapshot ``slot``; the pass."""
        ps = self.passes[split]
        out = ps.run(W, b, want_grad=False, want_records=True)
        self.snapshot_history[f"{split}_loss"][slot] = float(out.loss.mean(dtype=np.float64))
        self.snapshot_history[f"{split}_acc"][slot] = float((out.pred == ps.y).mean())
        return out

    def _store(self, slot: int, W: np.ndarray, b: np.ndarray, out) -> None:
        self.snapshot_weights[slot], self.snapshot_biases[slot] = W, b
        self.records["train"].store(slot, out)
        self.snapshot_grad_norms[slot] = out.resid * self.x_norm
        if len(self.passes["val"].y):
            self.records["val"].store(slot, self._evaluate("val", slot, W, b))
        self.snapshot_history["weight_norm"][slot] = float(np.linalg.norm(W))
        self.snapshot_history["coef_range"][slot] = float(W.max() - W.min())


class _Ticker:
    """Calls ``progress(done, total)`` at most every ``interval`` seconds (none: a no-op)."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int, interval: float):
        self.progress, self.total, self.interval = progress, total, interval
        self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        if self.progress is not None and time.perf_counter() - self.last >= self.interval:
            self.progress(done, self.total)
            self.last = time.perf_counter()


def _flat(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of uint8 ``images`` as a C-contiguous (m, d) uint8 array.

    ``d`` is spelled out rather than inferred (-1): with no rows (a data set too small
    for a validation hold-out) numpy cannot infer it.
    """
    return np.ascontiguousarray(images[idx].reshape(len(idx), math.prod(images.shape[1:])))


def _beyond(dtype: np.dtype, lr: float, l2: float) -> str:
    """Which of the step and the L2 strength ``dtype`` cannot hold, as the sentence that
    stops the run at iteration 1; "" when both fit."""
    top = float(np.finfo(dtype).max)
    for value, what, advice in ((l2, "L2 penalty", "a smaller L2 penalty (the step size is "
                                                   "not the cause)"),
                                (lr, "step", 'a smaller learning rate or "auto"')):
        if value > top:
            return (f"Diverged at iteration 1: the {what} {value:g} is beyond {dtype} "
                    f"arithmetic (whose largest number is {top:.3g}), so no step can be "
                    f"computed with it; choose {advice}. The run keeps the weights of "
                    "iteration 0.")
    return ""


def _divergence_reason(t: int, obj: float, loss0: float, lr: float, L: float,
                       cfg: TrainConfig) -> str:
    """Why the run stopped at iterate ``t``: the step beyond the stability limit 2/L, or,
    for a step within it, the arithmetic (with the penalties, which set L)."""
    what = "is no longer finite" if not math.isfinite(obj) else (
        f"reached {obj:.3g}, over {DIVERGENCE_FACTOR:g}x its starting value {loss0:.3g}"
    )
    kept = f"The run keeps the weights of iteration {t - 1:,}."
    if not lr * L / 2 <= 1:
        # L includes the L2 strength: when that is most of it, it is what narrowed 2/L.
        narrowed = (f" (the L2 penalty {cfg.l2:g} makes up most of L = {L:.4g})"
                    if cfg.l2 > L / 2 else "")
        return (
            f"Diverged at iteration {t:,}: the training objective {what}. The step {lr:.4g} "
            f"is {lr * L / 2:.3g}x the stability limit 2/L = {2 / L:.4g}{narrowed}; choose a "
            f'smaller learning rate or "auto" (1/L = {1 / L:.4g}). {kept}')
    penalties = ", ".join(f"{name} {value:g}" for name, value in
                          (("L2 penalty", cfg.l2), ("L1 penalty", cfg.l1)) if value)
    return (
        f"Diverged at iteration {t:,}: the training objective {what}, although the step "
        f"{lr:.4g} is within the stability limit 2/L = {2 / L:.4g}: the step size is not the "
        f"cause, the numbers outgrew {cfg.dtype} arithmetic"
        + (f" (with {penalties}); choose smaller penalties. " if penalties else ". ") + kept)
