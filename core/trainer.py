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

import dataclasses
import functools
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
           "smoothness", "snapshot_schedule", "train", "train_many", "validation_size"]

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
    on_snapshot: Callable[[int, np.ndarray, np.ndarray, float], None] | None = None,
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
    on_snapshot : callable, optional
        Called as ``on_snapshot(t, W, b, loss)`` each time the run stores a
        snapshot, in order of ``t`` (the run's ``snapshot_iterations``): ``W``
        (K, d) and ``b`` (K,) are copies of iteration ``t``'s weights in the
        run's dtype (``run.weights(t)``, ``run.bias(t)``) and ``loss`` its mean
        training loss (``run.history["train_loss"][t]``). For showing a run
        while it trains; it runs in the training thread, so it should be quick,
        and it may raise (:class:`TrainingCancelled`) to abandon the run. L-BFGS
        calls it while its iterates are replayed, after the optimizer has run.
        A diverged run's last good iterate, stored as its final snapshot when
        training ends, is reported then unless it was a snapshot already.

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

    train_idx, val_idx, X8, passes = _prepare(ds, cfg, backend)
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

    rec = Recorder(passes, X8, K, cfg, T, lr, L, finished, record, on_snapshot=on_snapshot)
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


#: The settings that configs trained together by :func:`train_many` may differ in.
JOINT_FREE = ("l2", "l1", "learning_rate")


def train_many(
    ds: Dataset,
    cfgs,
    progress: Callable[[int, int], None] | None = None,
    *,
    progress_interval: float = 0.1,
    backend: str | None = None,
    progress_each: Callable[[int, int, int], None] | None = None,
    on_snapshot: Callable[[int, int, np.ndarray, np.ndarray, float], None] | None = None,
) -> list[Run]:
    """Train several gradient-descent configs together, reading the images once per step.

    The configs may differ only in ``l2``, ``l1`` and ``learning_rate`` (so each
    has its own step: "auto" is 1/L and L grows with L2), and share the data, the
    model, the training subset, the precision and the step count. Their weights
    are stacked as one (V K, d) matrix: each step computes all V K logits in one
    product over the training images, finishes each group of K columns as its own
    model's softmax or one-vs-rest sigmoids, and computes all V gradients in one
    product (or one fused compiled pass); then each variant takes its own step
    and its own proximal L1 step. Snapshots evaluate the validation images (and
    the end the test images) for all variants in one pass likewise.

    Each returned :class:`~core.run.Run` is what ``train(ds, cfg)`` returns for
    its config up to rounding: the same snapshots, losses, accuracies,
    per-example records, residual sums and stop reason. A variant that diverges
    stops there, as in :func:`train`, and the others go on. Its ``seconds`` is the
    whole call's time and ``loop_seconds`` the joint loop's time until the variant
    stopped, since the variants' work is not separable.

    Parameters
    ----------
    ds : Dataset
    cfgs : sequence of TrainConfig
        Gradient-descent configs differing only in :data:`JOINT_FREE`.
    progress : callable, optional
        ``progress(done, total)`` as in :func:`train`, with ``done`` the steps taken
        together; it may raise (:class:`TrainingCancelled`) to abandon every run.
    progress_interval : float
        Seconds between progress calls at least.
    backend : {"numba", "numpy"}, optional
        As in :func:`train`.
    progress_each : callable, optional
        ``progress_each(i, done_i, total)`` per config at the same moments, with
        ``done_i`` the iterations config ``i`` has reached (a diverged one stays at
        its last good iteration).
    on_snapshot : callable, optional
        ``on_snapshot(i, t, W, b, loss)``: :func:`train`'s hook with the config's
        index ``i`` first, called for each config at each of its snapshots (the
        configs share one schedule, so at one ``t`` it is called for every config
        still training, in order of ``i``).

    Returns
    -------
    list of Run
        One per config, in order (empty for no configs).

    Raises
    ------
    ValueError
        If a config is invalid for ``ds`` or is not gradient descent, if two
        configs differ in a field other than :data:`JOINT_FREE` (the message names
        it), or if the backend is unknown or unavailable.
    """
    cfgs = list(cfgs)
    if not cfgs:
        return []
    _check_joint(ds, cfgs)
    started = time.perf_counter()
    first = cfgs[0]
    dtype = np.dtype(first.dtype)
    K, T = ds.n_classes, int(first.iterations)
    backend = backend or default_backend()
    train_idx, val_idx, X8, passes = _prepare(ds, first, backend)
    # L = c lambda_max + l2: the data's part is computed once, each config adds its L2
    # (the same sum smoothness_u8 makes for it).
    L0 = smoothness_u8(X8, first.model, 0.0, dtype=dtype)
    Ls = [L0 + float(cfg.l2) for cfg in cfgs]
    lrs = [1.0 / L if cfg.learning_rate == "auto" else float(cfg.learning_rate)
           for cfg, L in zip(cfgs, Ls)]
    x_norm = row_norms(X8)
    hooks = [None if on_snapshot is None else functools.partial(on_snapshot, v)
             for v in range(len(cfgs))]
    recs = [Recorder(passes, X8, K, cfg, T, lr, L, f"Finished all {T:,} iterations.",
                     x_norm=x_norm, on_snapshot=hook)
            for cfg, lr, L, hook in zip(cfgs, lrs, Ls, hooks)]
    acc = passes["train"].accumulate_groups(len(cfgs))
    for v, rec in enumerate(recs):
        rec.sum_residuals(acc[v])

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        if progress_each is not None:
            for v, rec in enumerate(recs):
                progress_each(v, rec.done if rec.diverged else done, total)

    loop_started = time.perf_counter()
    ended = _descend_many(recs, passes, cfgs, lrs, _Ticker(report, T, progress_interval))
    if progress is not None or progress_each is not None:
        report(max(rec.done for rec in recs), T)
    # The test split at each run's early-stopping and last snapshots, all in one pass.
    wanted = [(v, slot) for v, rec in enumerate(recs) for slot in rec.finish()]
    tested: list[dict] = [{} for _ in recs]
    if wanted:
        W = np.concatenate([recs[v].snapshot_weights[slot] for v, slot in wanted])
        b = np.concatenate([recs[v].snapshot_biases[slot] for v, slot in wanted])
        outs, _, _ = passes["test"].run_groups(W, b, len(wanted), want_grad=False,
                                               want_records=True)
        for (v, slot), out in zip(wanted, outs):
            tested[v][slot] = out
    return [
        rec.build(
            tested=tested[v], config=cfgs[v], fingerprint=ds.fingerprint,
            image_shape=tuple(ds.image_shape), class_names=tuple(ds.class_names),
            train_indices=train_idx.copy(), val_indices=val_idx.copy(),
            learning_rate=lrs[v], smoothness=Ls[v], seconds=time.perf_counter() - started,
            loop_seconds=ended[v] - loop_started, backend=backend,
        )
        for v, rec in enumerate(recs)
    ]


def _check_joint(ds: Dataset, cfgs: list[TrainConfig]) -> None:
    """Raise ValueError unless ``cfgs`` can be trained together by :func:`train_many`."""
    for i, cfg in enumerate(cfgs):
        if cfg.optimizer != "gd":
            raise ValueError(
                f"Config {i} uses the optimizer {cfg.optimizer!r}: configs are trained "
                "together by gradient descent only (optimizer 'gd'); train an L-BFGS run "
                "on its own with train().")
        problems = cfg.problems(ds)
        if problems:
            raise ValueError(f"Config {i}: " + " ".join(problems.values()))
    shared = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in JOINT_FREE]
    for name in shared:
        for i, cfg in enumerate(cfgs[1:], start=1):
            a, b = getattr(cfgs[0], name), getattr(cfg, name)
            if a != b:
                raise ValueError(
                    f"Configs trained together must share {name}: config 0 has "
                    f"{name}={a!r}, config {i} has {name}={b!r}. Only "
                    f"{', '.join(JOINT_FREE)} may differ; train the others separately.")


def _descend_many(recs: list["Recorder"], passes: dict, cfgs: list[TrainConfig],
                  lrs: list[float], tick: "_Ticker") -> list[float]:
    """:func:`_descend` for V configs at once, their weights stacked as (V K, d).

    Each step runs one grouped training pass over the live variants (and, at a
    snapshot, one grouped validation pass), records each variant's iterate with its
    own recorder, drops the variants that stopped from the stack, and updates the
    rest with their own step, L2 and L1 shrink, element for element as
    :func:`_descend` does. Returns the moment (``time.perf_counter``) each variant
    stopped.
    """
    V, T = len(recs), recs[0].T
    dtype = np.dtype(cfgs[0].dtype)
    K, d = recs[0].snapshot_weights.shape[1:]
    train_pass, val_pass = passes["train"], passes["val"]
    inv_n = dtype.type(1.0 / len(train_pass.y))
    top = float(np.finfo(dtype).max)
    unfit = [_beyond(dtype, lr, cfg.l2) for cfg, lr in zip(cfgs, lrs)]
    step = np.array([0.0 if u else lr for u, lr in zip(unfit, lrs)], dtype=dtype)
    l2 = np.array([0.0 if u else cfg.l2 for u, cfg in zip(unfit, cfgs)], dtype=dtype)
    shrink = np.array([min(float(a) * cfg.l1, top) for a, cfg in zip(step, cfgs)], dtype=dtype)
    l1 = np.array([cfg.l1 > 0 for cfg in cfgs])
    ended = [math.nan] * V
    live = np.arange(V)  # variant of each group of K rows in the stack
    W = np.zeros((V * K, d), dtype=dtype)
    b = np.zeros(V * K, dtype=dtype)
    per_row = None
    for t in range(T + 1):
        G = len(live)
        snapshot = recs[live[0]].is_snapshot(t)  # one schedule: every live run is at t
        outs, grad_W, grad_b = train_pass.run_groups(W, b, G, want_grad=t < T,
                                                     want_records=snapshot, slots=live)
        vals = [None] * G
        if snapshot and len(val_pass.y):
            vals = val_pass.run_groups(W, b, G, want_grad=False, want_records=True)[0]
        keep = []
        for g, v in enumerate(live):
            rows = slice(g * K, (g + 1) * K)
            if not recs[v].record(t, W[rows], b[rows], outs[g], vals[g]) or t == T:
                ended[v] = time.perf_counter()
            elif unfit[v]:
                recs[v].stop(t + 1, unfit[v])
                ended[v] = time.perf_counter()
            else:
                keep.append(g)
        if not keep:
            break
        if len(keep) < G or per_row is None:
            if len(keep) < G:
                rows = (np.array(keep)[:, None] * K + np.arange(K)).ravel()
                W, b, grad_W, grad_b = W[rows], b[rows], grad_W[rows], grad_b[rows]
                live = live[keep]
            # Each variant's step, L2 and shrink, repeated for its K rows of the stack.
            per_row = {name: np.repeat(values[live], K)
                       for name, values in (("step", step), ("l2", l2), ("shrink", shrink))}
            any_l2, any_l1 = bool(l2[live].any()), bool(l1[live].any())
        a = per_row["step"]
        grad_W *= inv_n
        grad_b *= inv_n
        if any_l2:
            grad_W += per_row["l2"][:, None] * W
        W = W - a[:, None] * grad_W
        b = b - a * grad_b
        if any_l1:
            W = np.sign(W) * np.maximum(np.abs(W) - per_row["shrink"][:, None], 0)
        tick(t + 1)
    return ended


def _descend(rec: "Recorder", train_pass, cfg: TrainConfig, lr: float, tick: "_Ticker") -> None:
    """Gradient descent with step ``lr`` from zero weights, every iterate fed to ``rec``
    until it has T or reports divergence.

    On the compiled backend the steps between two snapshots run in compiled calls of
    many steps each (:meth:`core.kernels.Pass.descend`), which take the same steps and
    write the same history into ``rec``; each call is kept to about
    :data:`STEPS_CALL_SECONDS` so progress is reported and a cancel is heard as often.
    """
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
    many = getattr(train_pass, "descend", None) if COMPILED_STEPS else None
    per_call = 8  # steps per compiled call, adjusted to STEPS_CALL_SECONDS as they are timed
    t = 0
    while True:
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
        t += 1
        tick(t)
        if many is None or rec.is_snapshot(t) or t == rec.T:
            continue
        # W and b are this loop's own (not yet handed to rec): the call updates them.
        end = rec.next_stop(t)
        while t < end:
            started = time.perf_counter()
            stop = min(end, t + per_call)
            reached, W_prev, b_prev = many(
                W, b, t, stop, a, l2 if cfg.l2 else dtype.type(0.0),
                shrink if cfg.l1 else dtype.type(0.0), (cfg.l2, cfg.l1),
                DIVERGENCE_FACTOR * rec.loss0,
                (rec.history["train_loss"], rec.history["train_acc"], rec.history["objective"]),
                (rec.counting, rec.correct_prev, rec.forgets, rec.last_wrong))
            if reached > t:
                rec.recorded(reached, W_prev, b_prev)
                seconds = (time.perf_counter() - started) / (reached - t)
                per_call = max(1, int(STEPS_CALL_SECONDS / max(seconds, 1e-7)))
            t = reached
            tick(t)
            if reached < stop:  # diverging: the step-by-step loop records why
                break


#: Seconds one compiled call of many gradient steps aims to take.
STEPS_CALL_SECONDS = 0.05
#: Whether gradient descent on the compiled backend runs the steps between snapshots in
#: compiled calls of many steps (False: one compiled pass per step; for the benchmark).
COMPILED_STEPS = True


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
    x_norm : (n,) float64, optional
        ``||x_i||`` of the training rows when already computed (runs trained together
        share it).
    on_snapshot : callable, optional
        ``on_snapshot(t, W, b, loss)`` after each snapshot is stored (see :func:`train`).
    """

    def __init__(self, passes: dict, X8: np.ndarray, n_classes: int, cfg: TrainConfig, T: int,
                 lr: float, L: float, finished: str, record: bool = True,
                 x_norm: np.ndarray | None = None,
                 on_snapshot: Callable[[int, np.ndarray, np.ndarray, float], None] | None = None):
        self.passes, self.cfg, self.T, self.lr, self.L = passes, cfg, T, lr, L
        self.y = passes["train"].y
        self.counting = record
        self.snaps = snapshot_schedule(T) if record else np.array(sorted({0, T}), dtype=np.int64)
        S, (n, d), dtype = len(self.snaps), X8.shape, np.dtype(cfg.dtype)
        self.x_norm = row_norms(X8) if x_norm is None else x_norm
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
        self.closed: tuple[int, np.ndarray] | None = None  # (S, snaps), set by finish
        self.edges = np.zeros(0, dtype=np.int64)
        self.residual_sums = np.zeros((0, n, n_classes), dtype=np.float32)
        self.on_snapshot = on_snapshot

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

    def record(self, t: int, W: np.ndarray, b: np.ndarray, out, val=None) -> bool:
        """Record iterate ``t`` at weights ``W`` (K, d), ``b`` (K,) from its training pass.

        ``out`` is the pass at (W, b), with records when :meth:`is_snapshot`; ``val``,
        if given at a snapshot, the validation pass at (W, b) with records (else the
        recorder runs it). ``W`` and ``b`` are kept by reference, so the caller must not
        change them in place afterwards. Returns False, recording nothing, when the
        objective is not finite or exceeds ``DIVERGENCE_FACTOR`` times its value at 0.
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
            self._store(self.slot, W, b, out, val)
            if self.on_snapshot is not None:
                self._report(self.slot, t)
            self.slot += 1
        if self.acc is not None and t < self.T:
            # The pass at t has just added its residuals: the sum is now A_{t+1}.
            edge = int(np.searchsorted(self.edges, t + 1))
            if edge < len(self.edges) and self.edges[edge] == t + 1:
                self.residual_sums[edge] = self.acc
        self.last_good = (W, b)
        return True

    def next_stop(self, t: int) -> int:
        """The first iteration after ``t`` at which :meth:`record` keeps more than the
        history: the next snapshot or residual edge (T at most)."""
        stops = [self.T, int(self.snaps[self.slot]) if self.slot < len(self.snaps) else self.T]
        if self.acc is not None:
            later = self.edges[self.edges > t]
            if len(later):
                stops.append(int(later[0]))
        return min(stops)

    def recorded(self, t: int, W: np.ndarray, b: np.ndarray) -> None:
        """Iterates up to ``t - 1`` were recorded outside :meth:`record` (the history and
        counts written in place by a compiled loop); ``W``, ``b`` are iterate ``t - 1``'s.
        Keeps what :meth:`record` keeps after it: the weights, and the residual sums when
        ``t`` is an edge. No snapshot may lie among those iterates."""
        self.last_good = (W, b)
        if self.acc is not None and t - 1 < self.T:
            edge = int(np.searchsorted(self.edges, t))
            if edge < len(self.edges) and self.edges[edge] == t:
                self.residual_sums[edge] = self.acc

    def stop(self, t: int, reason: str) -> None:
        """End the run before iterate ``t``, which cannot be computed, for ``reason``;
        it counts as diverged and keeps the weights of iterate ``t - 1``."""
        self.diverged, self.done, self.stop_reason = True, t - 1, reason

    def finish(self) -> list[int]:
        """Close the record and return the snapshot slots the test split is evaluated at.

        A diverged run's bad step is dropped and its last good iterate becomes the final
        snapshot. The test split is only reported: at the end and at the early-stopping
        snapshot, never used to choose anything (and not evaluated at every snapshot, to
        save time). Calling it again returns the same slots.
        """
        if self.closed is None:
            S, snaps, done = self.slot, self.snaps, self.done
            if self.diverged:
                W, b = self.last_good
                S = int((snaps[:S] < done).sum())
                self._store(S, W, b, self.passes["train"].run(W, b, want_grad=False,
                                                              want_records=True))
                if self.on_snapshot is not None and done not in snaps[:self.slot]:
                    self._report(S, done)
                snaps = np.append(snaps[:S], done)
                S += 1
            self.closed = (S, snaps)
        S = self.closed[0]
        if not len(self.passes["test"].y):
            return []
        val_loss = self.snapshot_history["val_loss"][:S]
        best = int(np.nanargmin(val_loss)) if np.isfinite(val_loss).any() else S - 1
        return sorted({best, S - 1})

    def build(self, tested: dict | None = None, **identity) -> Run:
        """The :class:`~core.run.Run` of what was recorded.

        ``tested`` maps some of :meth:`finish`'s slots to the test pass (with records)
        at that snapshot's weights, when already computed; the recorder runs the
        others. ``identity`` holds the Run fields the recorder does not know (config,
        data, indices, step, timing, backend).
        """
        for slot in self.finish():
            self._evaluate("test", slot, self.snapshot_weights[slot],
                           self.snapshot_biases[slot], (tested or {}).get(slot))
        (S, snaps), done = self.closed, self.done
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

    def _report(self, slot: int, t: int) -> None:
        """Hand snapshot ``slot`` (iteration ``t``) to the ``on_snapshot`` hook, as copies."""
        self.on_snapshot(t, self.snapshot_weights[slot].copy(),
                         self.snapshot_biases[slot].copy(), float(self.history["train_loss"][t]))

    def _penalty(self, W: np.ndarray) -> float:
        cfg = self.cfg
        return 0.5 * cfg.l2 * float(np.vdot(W, W)) + cfg.l1 * float(np.abs(W).sum())

    def _evaluate(self, split: str, slot: int, W: np.ndarray, b: np.ndarray, out=None):
        """Mean loss and accuracy of ``split`` at (W, b) into snapshot ``slot``; the pass
        (``out`` when it has been run already)."""
        ps = self.passes[split]
        if out is None:
            out = ps.run(W, b, want_grad=False, want_records=True)
        self.snapshot_history[f"{split}_loss"][slot] = float(out.loss.mean(dtype=np.float64))
        self.snapshot_history[f"{split}_acc"][slot] = float((out.pred == ps.y).mean())
        return out

    def _store(self, slot: int, W: np.ndarray, b: np.ndarray, out, val=None) -> None:
        self.snapshot_weights[slot], self.snapshot_biases[slot] = W, b
        self.records["train"].store(slot, out)
        self.snapshot_grad_norms[slot] = out.resid * self.x_norm
        if len(self.passes["val"].y):
            self.records["val"].store(slot, self._evaluate("val", slot, W, b, val))
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


def _prepare(ds: Dataset, cfg: TrainConfig, backend: str):
    """The rows a run of ``cfg`` trains and is judged on: ``(train_idx, val_idx, X8,
    passes)``, with ``X8`` (n, d) uint8 the training rows and ``passes`` the "train",
    "val" and "test" passes (see :func:`core.objective.make_pass`)."""
    dtype, K = np.dtype(cfg.dtype), ds.n_classes
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
    return train_idx, val_idx, X8, passes


def row_norms(X8: np.ndarray) -> np.ndarray:
    """``||x_i||`` (n,) float64 of the rows of ``X8`` (n, d) uint8 scaled to [0, 1]."""
    return np.sqrt(np.einsum("ij,ij->i", X8, X8, dtype=np.float64)) / 255.0


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
