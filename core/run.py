"""What a training run is: the :class:`Run` record and its flat-array serialisation.

Shapes: ``S`` stored snapshots, ``K`` classes, ``d = H * W`` pixels, ``n``
training and ``m`` examples of a split ("train" or "val"), ``T`` the last
iteration reached.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np

from core.config import TrainConfig
from core.data import Dataset

#: Bumped whenever the trainer's numbers or the stored layout change, so that
#: runs cached by an older version are never served.
FORMAT_VERSION = 3


@dataclass
class Records:
    """Per-snapshot arrays of one split, filled as training goes."""

    loss: np.ndarray      # (S, m) per-example loss, float32
    p_true: np.ndarray    # (S, m) probability of the true class, float32
    pred: np.ndarray      # (S, m) predicted class, int16

    @classmethod
    def empty(cls, S: int, m: int) -> "Records":
        """Zeroed records for ``S`` snapshots of ``m`` examples."""
        return cls(loss=np.zeros((S, m), dtype=np.float32),
                   p_true=np.zeros((S, m), dtype=np.float32),
                   pred=np.zeros((S, m), dtype=np.int16))

    def store(self, slot: int, out) -> None:
        """Copy ``loss``, ``pred`` and ``p_true`` of a pass output into snapshot ``slot``."""
        self.loss[slot], self.pred[slot], self.p_true[slot] = out.loss, out.pred, out.p_true

    def first(self, S: int) -> "Records":
        """Copies of the first ``S`` snapshots."""
        return Records(self.loss[:S].copy(), self.p_true[:S].copy(), self.pred[:S].copy())


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
    learning_rate, smoothness : float
        Step used (NaN for L-BFGS) and the smoothness constant L (stability limit ``2 / L``).
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
        "numba" or "numpy" (see :func:`core.trainer.train`).
    snapshot_weights : ndarray (S, K, d)
    snapshot_biases : ndarray (S, K)
    snapshot_grad_norms : ndarray (S, n)
        Per-example gradient norms ``||p_i - e_{y_i}|| ||x_i||``, float32.
    records : dict of str to Records
        Per-example loss, p(true) and prediction (S, m) of the "train" and "val" splits.
    residual_iterations : ndarray (E,)
        Gradient descent's window edges 0, 10, 100, ..., T (empty for L-BFGS).
    residual_sums : ndarray (E, n, K) float32
        ``A_t``: each training example's ``p_i - e_{y_i}`` summed over the iterates
        before edge ``t``. Unpenalised, ``W_t = -(a / n) A_t^T X``; the difference
        between two edges is how much each example pulled in between.
    """

    config: TrainConfig
    fingerprint: str
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    train_indices: np.ndarray
    val_indices: np.ndarray
    learning_rate: float
    smoothness: float
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
    snapshot_weights: np.ndarray = field(repr=False)
    snapshot_biases: np.ndarray = field(repr=False)
    snapshot_grad_norms: np.ndarray = field(repr=False)
    records: dict[str, Records] = field(repr=False)
    residual_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64),
                                            repr=False)
    residual_sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32),
                                      repr=False)

    @property
    def stability_limit(self) -> float:
        """``2 / L``: steps below it are sure to decrease the objective."""
        return 2.0 / self.smoothness

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def slot(self, t: int) -> int:
        """Index into the snapshot arrays of snapshot iteration ``t``.

        Raises
        ------
        KeyError
            If iteration ``t`` is not a stored snapshot.
        """
        slot = int(np.searchsorted(self.snapshot_iterations, t))
        if slot >= len(self.snapshot_iterations) or self.snapshot_iterations[slot] != t:
            raise KeyError(
                f"Iteration {t} is not a stored snapshot; stored ones are "
                f"{self.snapshot_iterations[:5].tolist()}...{self.snapshot_iterations[-1]}."
            )
        return slot

    def nearest_snapshot(self, t: int) -> int:
        """The stored snapshot iteration closest to ``t`` on a log scale (``log(1 + t)``)."""
        return nearest_iteration(t, self.snapshot_iterations)

    def weights(self, t: int) -> np.ndarray:
        """Weight images (K, H, W) at snapshot iteration ``t``."""
        return self.snapshot_weights[self.slot(t)].reshape(-1, *self.image_shape)

    def bias(self, t: int) -> np.ndarray:
        """Bias (K,) at snapshot iteration ``t``."""
        return self.snapshot_biases[self.slot(t)]

    def example_losses(self, t: int, split: str = "train") -> np.ndarray:
        """Per-example loss (m,) at snapshot ``t``: the example's term of the objective."""
        return self.records[split].loss[self.slot(t)]

    def p_true(self, t: int, split: str = "train") -> np.ndarray:
        """Predicted probability of the true class (m,) at snapshot ``t``."""
        return self.records[split].p_true[self.slot(t)]

    def predictions(self, t: int, split: str = "train") -> np.ndarray:
        """Predicted class (m,) at snapshot ``t`` (argmax of the logits)."""
        return self.records[split].pred[self.slot(t)].astype(np.int64)

    def grad_norms(self, t: int) -> np.ndarray:
        """Per-example gradient norm ``||p_i - e_{y_i}|| ||x_i||`` (n,) at snapshot ``t``."""
        return self.snapshot_grad_norms[self.slot(t)]

    def neg_log_p_true(self, t: int, split: str = "train") -> np.ndarray:
        """-log p(true class) per example (m,) at snapshot ``t``, float64.

        The softmax loss itself; for one-vs-rest, the true class's own sigmoid term
        (its loss also charges the other classes' sigmoids).
        """
        return _neg_log(self.p_true(t, split))

    def neg_log_p_true_curve(self, i: int, split: str = "train") -> np.ndarray:
        """-log p(true class) of example ``i`` at every snapshot (S,), float64."""
        return _neg_log(self.records[split].p_true[:, i])

    def best_iteration(self) -> int:
        """Snapshot iteration with the lowest validation loss (early stopping)."""
        val = self.snapshot_history["val_loss"]
        if not np.isfinite(val).any():
            return int(self.snapshot_iterations[-1])
        return int(self.snapshot_iterations[int(np.nanargmin(val))])

    @property
    def nbytes(self) -> int:
        """Bytes held by the run's arrays."""
        arrays = [self.snapshot_weights, self.snapshot_biases, self.snapshot_grad_norms,
                  self.residual_iterations, self.residual_sums,
                  self.learned_at, self.forgetting_events, self.train_indices, self.val_indices]
        arrays += list(self.history.values()) + list(self.snapshot_history.values())
        for rec in self.records.values():
            arrays += [rec.loss, rec.p_true, rec.pred]
        return int(sum(a.nbytes for a in arrays))


def _neg_log(p: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(p.astype(np.float64), 1e-300))


_SCALARS = ("learning_rate", "smoothness", "iterations_done", "diverged", "seconds",
            "loop_seconds")
_ARRAYS = ("train_indices", "val_indices", "snapshot_iterations", "learned_at",
           "forgetting_events", "snapshot_weights", "snapshot_biases", "snapshot_grad_norms",
           "residual_iterations", "residual_sums")
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Records))


def run_to_arrays(run: Run) -> dict[str, np.ndarray]:
    """Every array and scalar of a run as a flat dict of numpy arrays (no objects).

    Keys: the array fields by name, the scalar fields as 0-d arrays, ``meta``
    (JSON of config, fingerprint, stop reason, backend and :data:`FORMAT_VERSION`),
    ``history/<name>``, ``snap/<name>`` and ``rec/<split>/<loss|p_true|pred>``.
    """
    out = {
        "meta": np.array(json.dumps({
            "config": dataclasses.asdict(run.config),
            "fingerprint": run.fingerprint,
            "stop_reason": run.stop_reason,
            "backend": run.backend,
            "format": FORMAT_VERSION,
        })),
    }
    for name in _ARRAYS:
        out[name] = getattr(run, name)
    for name in _SCALARS:
        out[name] = np.array(getattr(run, name))
    for k, v in run.history.items():
        out[f"history/{k}"] = v
    for k, v in run.snapshot_history.items():
        out[f"snap/{k}"] = v
    for split, rec in run.records.items():
        for name in _RECORD_FIELDS:
            out[f"rec/{split}/{name}"] = getattr(rec, name)
    return out


def run_from_arrays(arrays: dict[str, np.ndarray], ds: Dataset, cfg: TrainConfig) -> Run:
    """Inverse of :func:`run_to_arrays`.

    Raises
    ------
    ValueError
        If the arrays belong to other data, another config or another format version.
    """
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") != FORMAT_VERSION or meta.get("fingerprint") != ds.fingerprint \
            or meta.get("config") != dataclasses.asdict(cfg):
        raise ValueError("cached run belongs to other data, settings or format")

    def under(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    return Run(
        config=cfg, fingerprint=ds.fingerprint, image_shape=tuple(ds.image_shape),
        class_names=tuple(ds.class_names),
        learning_rate=float(arrays["learning_rate"]), smoothness=float(arrays["smoothness"]),
        iterations_done=int(arrays["iterations_done"]), diverged=bool(arrays["diverged"]),
        seconds=float(arrays["seconds"]), loop_seconds=float(arrays["loop_seconds"]),
        stop_reason=meta["stop_reason"], backend=meta["backend"],
        history=under("history/"), snapshot_history=under("snap/"),
        records={split: Records(**{name: arrays[f"rec/{split}/{name}"]
                                   for name in _RECORD_FIELDS})
                 for split in ("train", "val")},
        **{name: arrays[name] for name in _ARRAYS},
    )


def nearest_iteration(t: int, iterations) -> int:
    """The iteration of ``iterations`` (non-empty) closest to ``t`` on a log scale
    (``log(1 + t)``): 90 is nearer 100 than 50, as on the log axes of the charts."""
    its = np.asarray(iterations)
    key = np.abs(np.log1p(np.maximum(its, 0)) - math.log1p(max(t, 0)))
    return int(its[int(np.argmin(key))])


@dataclass(frozen=True)
class Footprint:
    """Memory of one run, known before it is trained (see :func:`footprint`).

    Attributes
    ----------
    run : int
        Bytes of the finished run's arrays, :attr:`Run.nbytes`: exact for a run that
        reaches its last iteration, an upper bound for one that stops early (L-BFGS at
        its tolerance, a diverged run).
    iterates : int
        Bytes L-BFGS holds besides while it trains: every iterate ``(W, b)`` in float64,
        kept until they are replayed through the recorder (0 for gradient descent).
    snapshots : int
        Stored snapshots ``S``: every array of the weights and of the per-example
        records grows with it.
    """

    run: int
    iterates: int
    snapshots: int

    @property
    def total(self) -> int:
        """Bytes the run holds at most while it trains and once it is finished."""
        return self.run + self.iterates


def footprint(cfg: TrainConfig, n_classes: int, n_pixels: int, n_val: int) -> Footprint:
    """The memory a run of ``cfg`` holds, computed from shapes before training.

    Parameters
    ----------
    cfg : TrainConfig
        A valid config; ``cfg.n_train`` images are trained for ``cfg.iterations``.
    n_classes, n_pixels : int
        ``K`` and ``d = H * W`` of the data set.
    n_val : int
        Validation images actually held out (:func:`core.config.validation_size`).

    Returns
    -------
    Footprint
        With ``S`` snapshots, ``E`` residual edges, ``n`` training and ``m`` validation
        images and ``b`` bytes per weight: ``S (K d + K) b`` for the weights,
        ``S n (4 + 4 + 2 + 4)`` and ``S m (4 + 4 + 2)`` for the per-example records
        (loss, p(true), prediction; gradient norms of the training images),
        ``E n K 4`` for gradient descent's residual sums, ``3 (T + 1) 8`` for the
        history, and the indices and counts per image.
    """
    # The schedules live with the trainer, which imports this module.
    from core.trainer import residual_edges, snapshot_schedule

    T, n, m, K = int(cfg.iterations), int(cfg.n_train), int(n_val), int(n_classes)
    S = len(snapshot_schedule(T))
    weight = np.dtype(cfg.dtype).itemsize
    f32, i16, i64 = 4, 2, 8
    lbfgs = cfg.optimizer == "lbfgs"
    E = 0 if lbfgs else len(residual_edges(T))
    per_snapshot = (K * n_pixels + K) * weight                   # weights and biases
    per_snapshot += n * (f32 + f32 + i16 + f32) + m * (f32 + f32 + i16)  # records
    per_snapshot += 6 * 8                                        # snapshot_history
    run = (S * per_snapshot
           + E * (i64 + n * K * f32)                             # residual sums and edges
           + 3 * (T + 1) * 8                                     # history
           + n * (i64 + 4 + i64) + m * i64)                      # learned_at, forgets, indices
    iterates = (T + 1) * (K * n_pixels + K) * 8 if lbfgs else 0
    return Footprint(run=int(run), iterates=int(iterates), snapshots=S)
