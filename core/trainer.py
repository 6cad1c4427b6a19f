"""Full-batch gradient descent for multinomial and one-vs-rest logistic regression.

Shapes, stated once: ``n`` training images of ``d = H * W`` pixels scaled to
[0, 1], ``K`` classes. ``X`` is (n, d), labels ``y`` are (n,), the weights
``W`` are (K, d) and the bias ``b`` is (K,). Logits are ``Z = X W^T + b``.

Objective (mean over the n examples, intercept never penalised)::

    F(W, b) = (1/n) sum_i loss_i(W, b) + (l2 / 2) ||W||_F^2 + l1 ||W||_1

    softmax: loss_i = -log p_{i, y_i},        p_i = softmax(z_i)
    ovr:     loss_i = sum_k BCE(sigmoid(z_ik), [y_i == k])

Both share one gradient form, ``G = (P - Y) / n`` with ``P`` the
probabilities (softmax or per-class sigmoid) and ``Y`` one-hot labels::

    grad_W = G^T X + l2 W,    grad_b = sum_i G_i

Update from ``W = 0, b = 0`` with step ``a``::

    W <- prox_{a l1}(W - a grad_W),   b <- b - a grad_b

where ``prox`` is soft-thresholding (the identity when l1 = 0). The loss is
L-smooth with ``L = c * lambda_max([X 1]^T [X 1] / n) + l2``, ``c = 1/2`` for
softmax and ``1/4`` for one-vs-rest, so ``learning_rate="auto"`` takes
``a = 1/L``, under which the objective never increases; steps beyond ``2/L``
can diverge.

Iteration ``t`` means the weights after ``t`` updates. Everything recorded at
iteration ``t`` (loss, accuracy, per-example numbers) is measured at those
weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np

from core import kernels
from core.data import Dataset, stratified_split, stratified_subset

MODELS = ("softmax", "ovr")
OPTIMIZERS = ("gd", "lbfgs")
DTYPES = ("float32", "float64")
#: Loss above this multiple of its starting value counts as divergence.
DIVERGENCE_FACTOR = 10.0
#: Seed of the validation hold-out: fixed, so every run of a data set is
#: judged on the same validation images whatever its own seed.
VALIDATION_SEED = 12345


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run (together with the data's fingerprint).

    Parameters
    ----------
    model : {"softmax", "ovr"}
        Multinomial logistic regression, or one sigmoid per class as in the
        answer's derivation.
    n_train : int
        Training images, a stratified sample of the training split that remains
        after the validation hold-out.
    iterations : int
        Gradient steps T.
    learning_rate : float or "auto"
        Step size; "auto" is 1/L (see the module docstring).
    l2, l1 : float
        Penalty strengths (intercept unpenalised).
    seed : int
        Seed of the training subset.
    dtype : {"float32", "float64"}
        Arithmetic precision.
    n_val : int
        Validation hold-out size, at most a fifth of the training split.
    optimizer : {"gd", "lbfgs"}
        Plain gradient descent (the answer's model), or L-BFGS on the same
        objective as scikit-learn's ``LogisticRegression(C=1 / (l2 n))`` (L2 only,
        float64, no learning rate), recording every iterate.
    """

    model: str = "softmax"
    n_train: int = 1000
    iterations: int = 3000
    learning_rate: float | str = "auto"
    l2: float = 0.0
    l1: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    n_val: int = 10_000
    optimizer: str = "gd"

    def problems(self, ds: Dataset | None = None) -> dict[str, str]:
        """Return ``{field: message}`` for every invalid setting (empty if valid)."""
        out: dict[str, str] = {}
        if self.model not in MODELS:
            out["model"] = f"Model must be one of {', '.join(MODELS)}, not {self.model!r}."
        if self.optimizer not in OPTIMIZERS:
            out["optimizer"] = (f"Optimizer must be one of {', '.join(OPTIMIZERS)}, "
                                f"not {self.optimizer!r}.")
        elif self.optimizer == "lbfgs":
            if _is_number(self.l1) and self.l1 > 0:
                out["l1"] = ("L1 needs gradient descent's proximal step; L-BFGS handles the "
                             "L2 penalty only. Set L1 to 0 or choose gradient descent.")
            if self.dtype != "float64":
                out["dtype"] = "L-BFGS runs in float64 (its line search needs the precision)."
        if self.dtype not in DTYPES:
            out["dtype"] = f"Precision must be one of {', '.join(DTYPES)}, not {self.dtype!r}."
        if not _is_int(self.iterations) or self.iterations < 1:
            out["iterations"] = "Iterations must be a whole number of at least 1."
        if not _is_int(self.seed) or self.seed < 0:
            out["seed"] = "Seed must be a whole number of at least 0."
        if self.learning_rate != "auto" and not (
            _is_number(self.learning_rate) and 0 < self.learning_rate < math.inf
        ):
            out["learning_rate"] = 'Learning rate must be a positive number or "auto".'
        for name in ("l2", "l1"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value < math.inf):
                out[name] = f"{name.upper()} must be a number of at least 0."
        if not _is_int(self.n_val) or self.n_val < 0:
            out["n_val"] = "Validation size must be a whole number of at least 0."
        if not _is_int(self.n_train):
            out["n_train"] = "Training-set size must be a whole number."
        elif ds is not None and "n_val" not in out:
            available = len(ds.y_train) - validation_size(ds, self.n_val)
            if self.n_train > available:
                out["n_train"] = (
                    f"Training-set size {self.n_train:,} is larger than the {available:,} "
                    "training images left after the validation hold-out."
                )
            elif self.n_train < ds.n_classes:
                out["n_train"] = (
                    f"Training-set size must be at least the number of classes ({ds.n_classes})."
                )
        elif self.n_train < 2:
            out["n_train"] = "Training-set size must be at least 2."
        return out

    def replace(self, **changes) -> "TrainConfig":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return TrainConfig(**values)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def validation_size(ds: Dataset, n_val: int) -> int:
    """Validation images actually held out: ``n_val``, capped at a fifth of the split.

    A hold-out too small to hold one image of every class is not drawn at all (0):
    tiny data sets train without validation curves rather than fail.
    """
    size = int(min(n_val, len(ds.y_train) // 5))
    return size if size >= ds.n_classes else 0


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


def one_two_five(last: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``last``, then ``last`` itself (the question's grid)."""
    out, decade = [], 1
    while decade <= last:
        out += [m * decade for m in (1, 2, 5) if m * decade <= last]
        decade *= 10
    return out + ([last] if last not in out and last >= 1 else [])


def smoothness(x: np.ndarray, model: str, l2: float = 0.0) -> float:
    """Smoothness constant L of the objective on design ``x`` (n, d), bias included.

    ``c * lambda_max([x 1]^T [x 1] / n) + l2`` with ``c`` = 1/2 (softmax) or 1/4
    (one-vs-rest). Computed from the smaller of the two Gram matrices.
    """
    n = x.shape[0]
    xb = np.hstack([x, np.ones((n, 1), dtype=x.dtype)])
    gram = xb.T @ xb if xb.shape[1] <= n else xb @ xb.T
    lam = float(np.linalg.eigvalsh(gram.astype(np.float64))[-1]) / n
    return (0.5 if model == "softmax" else 0.25) * lam + float(l2)


@dataclass
class _Records:
    """Per-snapshot arrays of one split, filled as training goes."""

    loss: np.ndarray      # (S, m) per-example loss
    p_true: np.ndarray    # (S, m) probability of the true class
    pred: np.ndarray      # (S, m) predicted class


@dataclass
class Run:
    """A finished training run: history, snapshots and per-example records.

    Attributes
    ----------
    config : TrainConfig
    fingerprint : str
        Fingerprint of the data set it was trained on.
    train_indices, val_indices : ndarray of int64
        Indices into ``ds.x_train`` of the training subset and the validation hold-out.
    learning_rate, lipschitz : float
        Step used and the smoothness constant L (stability limit ``2 / L``).
    iterations_done : int
        Last iteration reached (``< config.iterations`` when the run diverged).
    history : dict of ndarray
        ``train_loss``, ``train_acc``, ``objective``: (iterations_done + 1,) at every iteration.
    snapshot_iterations : ndarray (S,)
    snapshot_history : dict of ndarray
        ``val_loss``, ``val_acc``, ``weight_norm``, ``coef_range``: (S,) at every
        snapshot; ``test_loss``, ``test_acc``: (S,), NaN except at the last
        snapshot and at :meth:`best_iteration` (the test split only reports).
    learned_at : ndarray (n,)
        First iteration from which each training example stays correctly
        classified to the end, or -1 if it is wrong at the end.
    forgetting_events : ndarray (n,)
        How often each training example went from correct to wrong (counted at
        every iteration from 1 on).
    diverged : bool
    stop_reason : str
    seconds : float
        Training time, and ``loop_seconds`` of it in the gradient-step loop.
    backend : str
        "numba" or "numpy" (see :func:`train`).
    """

    config: TrainConfig
    fingerprint: str
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    train_indices: np.ndarray
    val_indices: np.ndarray
    learning_rate: float
    lipschitz: float
    iterations_done: int
    history: dict[str, np.ndarray]
    snapshot_iterations: np.ndarray
    snapshot_history: dict[str, np.ndarray]
    learned_at: np.ndarray
    forgetting_events: np.ndarray
    diverged: bool
    stop_reason: str
    seconds: float
    loop_seconds: float
    backend: str
    _weights: np.ndarray = field(repr=False)          # (S, K, d)
    _biases: np.ndarray = field(repr=False)           # (S, K)
    _grad_norms: np.ndarray = field(repr=False)       # (S, n)
    _records: dict[str, _Records] = field(repr=False)

    @property
    def stability_limit(self) -> float:
        return 2.0 / self.lipschitz

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def _slot(self, t: int) -> int:
        slot = int(np.searchsorted(self.snapshot_iterations, t))
        if slot >= len(self.snapshot_iterations) or self.snapshot_iterations[slot] != t:
            raise KeyError(
                f"Iteration {t} is not a stored snapshot; stored ones are "
                f"{self.snapshot_iterations[:5].tolist()}...{self.snapshot_iterations[-1]}."
            )
        return slot

    def nearest_snapshot(self, t: int) -> int:
        """The stored snapshot iteration closest to ``t`` (on a log scale)."""
        its = self.snapshot_iterations
        key = np.abs(np.log1p(its) - math.log1p(max(t, 0)))
        return int(its[int(np.argmin(key))])

    def weights(self, t: int) -> np.ndarray:
        """Weight images (K, H, W) at snapshot iteration ``t``."""
        return self._weights[self._slot(t)].reshape(-1, *self.image_shape)

    def bias(self, t: int) -> np.ndarray:
        """Bias (K,) at snapshot iteration ``t``."""
        return self._biases[self._slot(t)]

    def example_losses(self, t: int, split: str = "train") -> np.ndarray:
        """Per-example loss (m,) at snapshot ``t``: the example's term of the objective."""
        return self._records[split].loss[self._slot(t)]

    def p_true(self, t: int, split: str = "train") -> np.ndarray:
        """Predicted probability of the true class (m,) at snapshot ``t``."""
        return self._records[split].p_true[self._slot(t)]

    def predictions(self, t: int, split: str = "train") -> np.ndarray:
        """Predicted class (m,) at snapshot ``t`` (argmax of the logits)."""
        return self._records[split].pred[self._slot(t)].astype(np.int64)

    def grad_norms(self, t: int) -> np.ndarray:
        """Per-example gradient norm ``||p_i - e_{y_i}|| ||x_i||`` (n,) at snapshot ``t``."""
        return self._grad_norms[self._slot(t)]

    def example_loss_curve(self, i: int, split: str = "train") -> np.ndarray:
        """Loss of example ``i`` at every snapshot (S,)."""
        return self._records[split].loss[:, i]

    def remaining_loss(self, t: int, split: str = "train") -> np.ndarray:
        """-log p(true class) per example (m,) at snapshot ``t``.

        The softmax loss itself; for one-vs-rest, the true class's own sigmoid term
        (its loss also charges the other classes' sigmoids).
        """
        return -np.log(np.maximum(self.p_true(t, split).astype(np.float64), 1e-300))

    def remaining_loss_curve(self, i: int, split: str = "train") -> np.ndarray:
        """-log p(true class) of example ``i`` at every snapshot (S,)."""
        p = self._records[split].p_true[:, i].astype(np.float64)
        return -np.log(np.maximum(p, 1e-300))

    def best_iteration(self) -> int:
        """Snapshot iteration with the lowest validation loss (early stopping)."""
        val = self.snapshot_history["val_loss"]
        if not np.isfinite(val).any():
            return int(self.snapshot_iterations[-1])
        return int(self.snapshot_iterations[int(np.nanargmin(val))])

    @property
    def nbytes(self) -> int:
        arrays = [self._weights, self._biases, self._grad_norms, self.learned_at,
                  self.forgetting_events, self.train_indices, self.val_indices]
        arrays += list(self.history.values()) + list(self.snapshot_history.values())
        for rec in self._records.values():
            arrays += [rec.loss, rec.p_true, rec.pred]
        return int(sum(a.nbytes for a in arrays))


_EXP_FLOOR = {"f": -80.0, "d": -700.0}


class _Forward:
    """One forward pass of a model: per-example loss, probabilities, predictions.

    ``logits`` (m, K) is overwritten.
    """

    def __init__(self, model: str):
        self.model = model

    def __call__(self, logits: np.ndarray, y: np.ndarray, rows: np.ndarray):
        if self.model == "softmax":
            pred = logits.argmax(axis=1)
            logits -= logits.max(axis=1, keepdims=True)
            z_true = logits[rows, y]
            # exp of very negative logits gives subnormal floats, which make the next
            # matrix product about ten times slower; probabilities below e^-80 (float32)
            # or e^-700 (float64) are raised to that floor, a change far below rounding.
            np.maximum(logits, _EXP_FLOOR[logits.dtype.char], out=logits)
            np.exp(logits, out=logits)
            total = logits.sum(axis=1)
            loss = np.log(total) - z_true
            logits /= total[:, None]
            return loss, logits, pred
        pred = logits.argmax(axis=1)
        # BCE summed over classes: softplus(z) - [k == y] z, written stably.
        z_true = logits[rows, y].copy()
        loss = np.logaddexp(0.0, logits).sum(axis=1) - z_true
        # sigmoid(z) = exp(-softplus(-z)), finite for every z; floored like softmax.
        probs = np.exp(np.maximum(-np.logaddexp(0.0, -logits), _EXP_FLOOR[logits.dtype.char]),
                       out=logits)
        return loss, probs, pred


def objective_and_gradient(
    X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, model: str,
    l2: float = 0.0, l1: float = 0.0,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Objective F(W, b) and the gradient of its smooth part, as the trainer computes them.

    Parameters
    ----------
    X : (n, d) design, y : (n,) labels, W : (K, d), b : (K,)

    Returns
    -------
    objective : float
        Mean loss + (l2/2)||W||^2 + l1 ||W||_1.
    grad_W : (K, d), grad_b : (K,)
        Gradient of mean loss + (l2/2)||W||^2 (the L1 term is handled by the prox step).
    """
    out = _NumpyPass.from_float(X, y, model).run(W, b, want_grad=True)
    objective = float(out.loss.mean()) + 0.5 * l2 * float(np.vdot(W, W)) \
        + l1 * float(np.abs(W).sum())
    return objective, out.grad_W / len(y) + l2 * W, out.grad_b / len(y)


class TrainingCancelled(Exception):
    """Raised by a progress callback to stop a run early; nothing is returned."""


def train(
    ds: Dataset,
    cfg: TrainConfig,
    progress: Callable[[int, int], None] | None = None,
    *,
    progress_interval: float = 0.1,
    backend: str | None = None,
    record: bool = True,
) -> Run:
    """Train ``cfg`` on ``ds`` by full-batch gradient descent from zero weights.

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
        If the config is invalid for this data set (message per setting).
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
    y = np.ascontiguousarray(ds.y_train[train_idx])
    X8 = _flat(ds.x_train, train_idx)
    passes = {
        "train": _make_pass(backend, X8, y, K, dtype, cfg.model),
        "val": _make_pass(backend, _flat(ds.x_train, val_idx), ds.y_train[val_idx], K, dtype,
                          cfg.model),
        "test": _make_pass(backend, _flat(ds.x_test, np.arange(len(ds.y_test))), ds.y_test, K,
                           dtype, cfg.model),
    }
    n, d = X8.shape

    L = smoothness_u8(X8, cfg.model, cfg.l2)
    lr = 1.0 / L if cfg.learning_rate == "auto" else float(cfg.learning_rate)
    a = dtype.type(lr)
    inv_n = dtype.type(1.0 / n)
    T = int(cfg.iterations)
    iterates, lbfgs_reason = None, ""
    if cfg.optimizer == "lbfgs":
        # L-BFGS chooses its own steps; its iterates are then replayed through the
        # same recording loop as gradient descent, so both give the same kind of Run.
        iterates, lbfgs_reason = _lbfgs_iterates(passes["train"], cfg, K, d, progress,
                                                 progress_interval)
        T = len(iterates) - 1
        lr = float("nan")
    snaps = snapshot_schedule(T) if record else np.array(sorted({0, T}), dtype=np.int64)
    S = len(snaps)
    x_norm = np.sqrt(np.einsum("ij,ij->i", X8, X8, dtype=np.float64)) / 255.0

    W = np.zeros((K, d), dtype=dtype)
    b = np.zeros(K, dtype=dtype)
    W_prev, b_prev = W.copy(), b.copy()
    weights = np.zeros((S, K, d), dtype=dtype)
    biases = np.zeros((S, K), dtype=dtype)
    grad_norms = np.zeros((S, n), dtype=np.float32)
    records = {split: _new_records(S, len(passes[split].y)) for split in ("train", "val")}
    snap_hist = {k: np.full(S, np.nan) for k in
                 ("val_loss", "val_acc", "test_loss", "test_acc", "weight_norm", "coef_range")}
    train_loss = np.full(T + 1, np.nan)
    train_acc = np.full(T + 1, np.nan)
    objective = np.full(T + 1, np.nan)
    correct_prev = np.zeros(n, dtype=bool)
    forgets = np.zeros(n, dtype=np.int32)
    last_wrong = np.zeros(n, dtype=np.int64)

    def penalty(W_):
        return 0.5 * cfg.l2 * float(np.vdot(W_, W_)) + cfg.l1 * float(np.abs(W_).sum())

    def evaluate(split: str, slot: int, W_, b_):
        ps = passes[split]
        o = ps.run(W_, b_, want_grad=False, want_records=True)
        snap_hist[f"{split}_loss"][slot] = float(o.loss.mean(dtype=np.float64))
        snap_hist[f"{split}_acc"][slot] = float((o.pred == ps.y).mean())
        return o

    def store(slot: int, W_, b_, out) -> None:
        weights[slot], biases[slot] = W_, b_
        rec = records["train"]
        rec.loss[slot], rec.pred[slot], rec.p_true[slot] = out.loss, out.pred, out.p_true
        grad_norms[slot] = out.resid * x_norm
        if len(passes["val"].y):
            o = evaluate("val", slot, W_, b_)
            rs = records["val"]
            rs.loss[slot], rs.pred[slot], rs.p_true[slot] = o.loss, o.pred, o.p_true
        snap_hist["weight_norm"][slot] = float(np.linalg.norm(W_))
        snap_hist["coef_range"][slot] = float(W_.max() - W_.min())

    slot = 0
    diverged, stop_reason, done = False, lbfgs_reason or f"Finished all {T:,} iterations.", T
    loss0 = None
    last_report = time.perf_counter()
    loop_started = last_report
    train_pass = passes["train"]
    for t in range(T + 1):
        at_snapshot = slot < S and snaps[slot] == t
        if iterates is not None:
            W, b = iterates[t]
        out = train_pass.run(W, b, want_grad=t < T and iterates is None,
                             want_records=at_snapshot)
        loss = float(out.loss.mean(dtype=np.float64))
        obj = loss + penalty(W) if (cfg.l2 or cfg.l1) else loss
        if loss0 is None:
            loss0 = obj
        if not (math.isfinite(obj) and obj <= DIVERGENCE_FACTOR * loss0 and np.isfinite(W).all()):
            diverged, done = True, t - 1
            stop_reason = _divergence_reason(t, obj, loss0, lr, L)
            W, b = W_prev, b_prev
            break
        correct = out.pred == y
        train_loss[t], train_acc[t], objective[t] = loss, float(correct.mean()), obj
        if t > 0 and record:
            # Iteration 0 predicts nothing (all logits equal): counting starts at 1.
            forgets += correct_prev & ~correct
            last_wrong[~correct] = t
            correct_prev = correct
        if at_snapshot:
            store(slot, W, b, out)
            slot += 1
        if t == T:
            break
        if iterates is not None:
            continue
        grad_W, grad_b = out.grad_W, out.grad_b
        grad_W *= inv_n
        grad_b *= inv_n
        if cfg.l2:
            grad_W += dtype.type(cfg.l2) * W
        W_prev, b_prev = W, b
        W = W - a * grad_W
        b = b - a * grad_b
        if cfg.l1:
            W = np.sign(W) * np.maximum(np.abs(W) - a * dtype.type(cfg.l1), 0)
        if progress is not None and time.perf_counter() - last_report >= progress_interval:
            progress(t + 1, T)
            last_report = time.perf_counter()
    loop_seconds = time.perf_counter() - loop_started

    if diverged:
        # The bad step is dropped; the last good iterate becomes the final snapshot.
        slot = int((snaps[:slot] < done).sum())
        store(slot, W, b, train_pass.run(W, b, want_grad=False, want_records=True))
        snaps = np.append(snaps[:slot], done)
        slot += 1
        S = slot
    if progress is not None:
        progress(T if not diverged else done, T if iterates is None else int(cfg.iterations))

    # The test split is only reported: at the end and at the early-stopping snapshot,
    # never used to choose anything (and not evaluated at every snapshot, to save time).
    best = int(np.nanargmin(snap_hist["val_loss"][:S])) if np.isfinite(
        snap_hist["val_loss"][:S]).any() else S - 1
    for s_ in {best, S - 1}:
        if len(passes["test"].y):
            evaluate("test", s_, weights[s_], biases[s_])
    learned_at = np.where(last_wrong < done, last_wrong + 1, -1)
    learned_at[~correct_prev] = -1
    return Run(
        config=cfg,
        fingerprint=ds.fingerprint,
        image_shape=tuple(ds.image_shape),
        class_names=tuple(ds.class_names),
        train_indices=train_idx,
        val_indices=val_idx,
        learning_rate=lr,
        lipschitz=L,
        iterations_done=done,
        history={"train_loss": train_loss[: done + 1], "train_acc": train_acc[: done + 1],
                 "objective": objective[: done + 1]},
        snapshot_iterations=snaps[:S].copy(),
        snapshot_history={k: v[:S].copy() for k, v in snap_hist.items()},
        learned_at=learned_at,
        forgetting_events=forgets,
        diverged=diverged,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - started,
        loop_seconds=loop_seconds,
        backend=backend,
        _weights=weights[:S].copy(),
        _biases=biases[:S].copy(),
        _grad_norms=grad_norms[:S].copy(),
        _records={k: _Records(r.loss[:S].copy(), r.p_true[:S].copy(), r.pred[:S].copy())
                  for k, r in records.items()},
    )


def _lbfgs_iterates(train_pass, cfg: TrainConfig, K: int, d: int, progress, interval):
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
    last = [time.perf_counter()]

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
        if progress is not None and time.perf_counter() - last[0] >= interval:
            progress(len(iterates) - 1, int(cfg.iterations))
            last[0] = time.perf_counter()

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


def default_backend() -> str:
    """"numba" when the compiled kernel is available, else "numpy"."""
    return "numba" if kernels.AVAILABLE else "numpy"


def _flat(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of uint8 ``images`` as a C-contiguous (m, d) uint8 array."""
    return np.ascontiguousarray(images[idx].reshape(len(idx), -1))


class _PassOut:
    """What one pass over a set of rows yields (see :meth:`_NumpyPass.run`)."""

    __slots__ = ("loss", "pred", "p_true", "resid", "grad_W", "grad_b")

    def __init__(self, loss, pred, p_true=None, resid=None, grad_W=None, grad_b=None):
        self.loss, self.pred, self.p_true, self.resid = loss, pred, p_true, resid
        self.grad_W, self.grad_b = grad_W, grad_b


class _NumpyPass:
    """Rows held as floats in [0, 1]; logits and gradient by two matrix products."""

    def __init__(self, X8, y, n_classes, dtype, model):
        X = X8.astype(dtype)
        X *= dtype.type(1.0 / 255.0)
        self._setup(X, y, model)

    @classmethod
    def from_float(cls, X, y, model) -> "_NumpyPass":
        """A pass over rows that are already floats (any values, any float dtype)."""
        self = cls.__new__(cls)
        self._setup(np.asarray(X), y, model)
        return self

    def _setup(self, X, y, model):
        self.X = X
        self.y = np.ascontiguousarray(y)
        self.rows = np.arange(len(y))
        self.forward = _Forward(model)

    def run(self, W, b, want_grad=True, want_records=False) -> _PassOut:
        """Per-row loss and prediction at (W, b); with ``want_records`` also p(true) and
        ||p - e_y||; with ``want_grad`` the gradient of the *summed* loss."""
        logits = self.X @ W.T
        logits += b
        loss, probs, pred = self.forward(logits, self.y, self.rows)
        out = _PassOut(loss, pred)
        if want_records:
            out.p_true = probs[self.rows, self.y].copy()
        probs[self.rows, self.y] -= 1.0
        if want_records:
            out.resid = np.sqrt(np.einsum("ij,ij->i", probs, probs))
        if want_grad:
            # P - Y stays unscaled: dividing its tiny entries by n would make them subnormal.
            out.grad_W = probs.T @ self.X
            out.grad_b = probs.sum(axis=0)
        return out


class _KernelPass:
    """Rows kept as uint8; one fused compiled pass per call (see :mod:`core.kernels`)."""

    def __init__(self, X8, y, n_classes, dtype, model):
        self._pass = kernels.Pass(X8, y, n_classes, dtype, model)
        self.y = self._pass.y

    def run(self, W, b, want_grad=True, want_records=False) -> _PassOut:
        gW, gb = self._pass.run(W, b, want_grad)
        p = self._pass
        return _PassOut(p.loss, p.pred, p.p_true, p.resid, gW, gb)


def _make_pass(backend, X8, y, n_classes, dtype, model):
    if backend == "numba":
        if not kernels.AVAILABLE:
            raise ValueError("The numba backend needs the numba package.")
        return _KernelPass(X8, y, n_classes, dtype, model)
    if backend == "numpy":
        return _NumpyPass(X8, y, n_classes, dtype, model)
    raise ValueError(f"Unknown backend {backend!r}; expected 'numba' or 'numpy'.")


def smoothness_u8(X8: np.ndarray, model: str, l2: float = 0.0, block: int = 8192) -> float:
    """:func:`smoothness` of ``X8 / 255`` without a float copy of all rows at once."""
    n, d = X8.shape
    if n <= d:
        return smoothness(X8.astype(np.float64) / 255.0, model, l2)
    gram = np.zeros((d + 1, d + 1))
    for start in range(0, n, block):
        xb = X8[start:start + block].astype(np.float32)
        xb *= np.float32(1.0 / 255.0)
        xb = np.hstack([xb, np.ones((len(xb), 1), dtype=np.float32)])
        gram += (xb.T @ xb).astype(np.float64)
    lam = float(np.linalg.eigvalsh(gram)[-1]) / n
    return (0.5 if model == "softmax" else 0.25) * lam + float(l2)


def _new_records(S: int, m: int) -> _Records:
    return _Records(
        loss=np.zeros((S, m), dtype=np.float32),
        p_true=np.zeros((S, m), dtype=np.float32),
        pred=np.zeros((S, m), dtype=np.int16),
    )


def _divergence_reason(t: int, obj: float, loss0: float, lr: float, L: float) -> str:
    what = "is no longer finite" if not math.isfinite(obj) else (
        f"reached {obj:.3g}, over {DIVERGENCE_FACTOR:g}x its starting value {loss0:.3g}"
    )
    return (
        f"Diverged at iteration {t:,}: the training objective {what}. The step {lr:.4g} "
        f"is {lr * L / 2:.3g}x the stability limit 2/L = {2 / L:.4g}; choose a smaller "
        f'learning rate or "auto" (1/L = {1 / L:.4g}). The run keeps the weights of '
        f"iteration {t - 1:,}."
    )
