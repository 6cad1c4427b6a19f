"""What a training run is: the :class:`Run` record and its flat-array serialisation.

Shapes: ``S`` stored snapshots, ``K`` classes, ``d = H * W`` pixels, ``n``
training and ``m`` examples of a split ("train" or "val"), ``T`` the last
iteration reached.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from core.config import TrainConfig, validation_size
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
        arrays = [self.snapshot_iterations, self.snapshot_weights, self.snapshot_biases,
                  self.snapshot_grad_norms, self.residual_iterations, self.residual_sums,
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
#: Keys of :attr:`Run.history` and :attr:`Run.snapshot_history`, as the trainer records them.
HISTORY_KEYS = ("train_loss", "train_acc", "objective")
SNAPSHOT_KEYS = ("val_loss", "val_acc", "test_loss", "test_acc", "weight_norm", "coef_range")
#: Every array of a stored run by name (see :func:`run_to_arrays`).
MEMBERS = frozenset(("meta", *_ARRAYS, *_SCALARS, *(f"history/{k}" for k in HISTORY_KEYS),
                     *(f"snap/{k}" for k in SNAPSHOT_KEYS),
                     *(f"rec/{split}/{name}" for split in ("train", "val")
                       for name in _RECORD_FIELDS)))
#: Longest ``meta`` a run may carry, in characters: a config, a fingerprint and a stop
#: reason take well under a thousand.
MAX_META_CHARS = 1 << 14


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
    """Inverse of :func:`run_to_arrays`, for arrays that fit ``cfg`` on ``ds``.

    Checked before the run is built, so that a damaged or hand-made file fails here
    and never later in a page: the layout (:func:`check_layout`), the header (data,
    settings, format), the stored iterations, indices into the data and predicted
    classes in range, and finite weights.

    Raises
    ------
    ValueError
        If the arrays belong to other data, another config or another format version,
        or do not fit them.
    """
    T = check_layout({k: (v.dtype, v.shape) for k, v in arrays.items()}, ds, cfg)
    meta = json.loads(str(arrays["meta"]))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION \
            or meta.get("fingerprint") != ds.fingerprint \
            or meta.get("config") != dataclasses.asdict(cfg):
        raise ValueError("cached run belongs to other data, settings or format")
    if not (isinstance(meta.get("stop_reason"), str) and isinstance(meta.get("backend"), str)):
        raise ValueError("the run's stop reason and backend must be text")
    _check_values(arrays, ds, cfg, T)

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


def stored_snapshots(cfg: TrainConfig, iterations_done: int) -> np.ndarray:
    """Iterations (S,) at which the trainer stores a snapshot of ``cfg`` that reached
    iteration ``T = iterations_done``: the schedule up to T; gradient descent that
    stopped early (diverged) keeps the scheduled ones before T, then T itself."""
    # The schedules live with the trainer, which imports this module.
    from core.trainer import snapshot_schedule

    T = int(iterations_done)
    if cfg.optimizer == "lbfgs" or T == int(cfg.iterations):
        return snapshot_schedule(T)
    planned = snapshot_schedule(int(cfg.iterations))
    return np.append(planned[planned < T], T)


def stored_edges(cfg: TrainConfig, iterations_done: int) -> np.ndarray:
    """Iterations (E,) at which gradient descent on ``cfg`` stores its residual sums when
    it reached iteration ``iterations_done`` (none for L-BFGS)."""
    from core.trainer import residual_edges

    if cfg.optimizer == "lbfgs":
        return np.zeros(0, dtype=np.int64)
    edges = residual_edges(int(cfg.iterations))
    return edges[edges <= int(iterations_done)]


def run_layout(ds: Dataset, cfg: TrainConfig,
               iterations_done: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """The dtype and shape of every array of a run of ``cfg`` on ``ds`` that reached
    iteration ``T = iterations_done``, by its name in :func:`run_to_arrays`.

    ``S`` is ``len(stored_snapshots(cfg, T))``, ``E`` ``len(stored_edges(cfg, T))``,
    ``K`` and ``d`` the data set's classes and pixels, ``n = cfg.n_train`` and ``m`` the
    validation hold-out (:func:`core.config.validation_size`). ``meta`` is not listed:
    it is text of at most :data:`MAX_META_CHARS` characters.
    """
    T = int(iterations_done)
    S, E = len(stored_snapshots(cfg, T)), len(stored_edges(cfg, T))
    K, d = ds.n_classes, math.prod(ds.image_shape)
    n, m = int(cfg.n_train), validation_size(ds, cfg.n_val)
    w = np.dtype(cfg.dtype)
    f4, f8, i2, i4, i8 = map(np.dtype, (np.float32, np.float64, np.int16, np.int32, np.int64))
    out = {
        "train_indices": (i8, (n,)), "val_indices": (i8, (m,)),
        "snapshot_iterations": (i8, (S,)), "learned_at": (i8, (n,)),
        "forgetting_events": (i4, (n,)), "snapshot_weights": (w, (S, K, d)),
        "snapshot_biases": (w, (S, K)), "snapshot_grad_norms": (f4, (S, n)),
        "residual_iterations": (i8, (E,)), "residual_sums": (f4, (E, n, K)),
        "learning_rate": (f8, ()), "smoothness": (f8, ()), "iterations_done": (i8, ()),
        "diverged": (np.dtype(bool), ()), "seconds": (f8, ()), "loop_seconds": (f8, ()),
    }
    out.update({f"history/{k}": (f8, (T + 1,)) for k in HISTORY_KEYS})
    out.update({f"snap/{k}": (f8, (S,)) for k in SNAPSHOT_KEYS})
    for split, rows in (("train", n), ("val", m)):
        out.update({f"rec/{split}/loss": (f4, (S, rows)), f"rec/{split}/p_true": (f4, (S, rows)),
                    f"rec/{split}/pred": (i2, (S, rows))})
    return out


def check_layout(found: Mapping[str, tuple[np.dtype, tuple[int, ...]]], ds: Dataset,
                 cfg: TrainConfig) -> int:
    """Check the dtypes and shapes of a stored run against ``cfg`` and ``ds``.

    Needs no data, only ``{name: (dtype, shape)}`` (from npy headers, say), so a file
    can be refused before any of its arrays is read.

    Returns
    -------
    int
        The last iteration ``T`` the run reached (from its history's length).

    Raises
    ------
    ValueError
        Naming the first member that is missing, unknown, or of another dtype or
        shape than :func:`run_layout` says.
    """
    names = set(found)
    if names != MEMBERS:
        unknown, missing = sorted(names - MEMBERS), sorted(MEMBERS - names)
        raise ValueError(f"a run holds exactly its own arrays; unknown: {unknown[:5]}, "
                         f"missing: {missing[:5]}")
    dtype, shape = found["meta"]
    if np.dtype(dtype).kind != "U" or tuple(shape) != () \
            or np.dtype(dtype).itemsize > 4 * MAX_META_CHARS:
        raise ValueError(f"meta must be text of at most {MAX_META_CHARS:,} characters, "
                         f"not {dtype} {tuple(shape)}")
    # The history has an entry per iteration reached: it says where the run stopped.
    _, shape = found["history/train_loss"]
    if len(shape) != 1 or not 1 <= shape[0] <= int(cfg.iterations) + 1:
        raise ValueError(f"history/train_loss has shape {tuple(shape)}: not one entry per "
                         f"iteration of a run of at most {int(cfg.iterations):,}")
    T = int(shape[0]) - 1
    for name, (want_dtype, want_shape) in run_layout(ds, cfg, T).items():
        dtype, shape = found[name]
        if np.dtype(dtype) != want_dtype or tuple(shape) != want_shape:
            raise ValueError(f"{name} is {np.dtype(dtype)} {tuple(shape)}; this run's is "
                             f"{want_dtype} {want_shape}")
    return T


def _check_values(arrays: Mapping[str, np.ndarray], ds: Dataset, cfg: TrainConfig,
                  T: int) -> None:
    """The values a page relies on, in arrays whose layout is already checked."""
    gradient_descent_stopped = cfg.optimizer != "lbfgs" and T < int(cfg.iterations)
    if int(arrays["iterations_done"]) != T or bool(arrays["diverged"]) != gradient_descent_stopped:
        raise ValueError(f"iterations_done {int(arrays['iterations_done'])} and diverged "
                         f"{bool(arrays['diverged'])} disagree with a history of {T + 1}")
    for name, want in (("snapshot_iterations", stored_snapshots(cfg, T)),
                       ("residual_iterations", stored_edges(cfg, T))):
        if not np.array_equal(arrays[name], want):
            raise ValueError(f"{name} are not the iterations the trainer stores")
    for name, low, high in (("train_indices", 0, len(ds.y_train)),
                            ("val_indices", 0, len(ds.y_train)),
                            ("rec/train/pred", 0, ds.n_classes),
                            ("rec/val/pred", 0, ds.n_classes),
                            ("learned_at", -1, T + 1)):
        a = arrays[name]
        if a.size and (a.min() < low or a.max() >= high):
            raise ValueError(f"{name} holds values outside {low} to {high - 1}")
    for name in ("snapshot_weights", "snapshot_biases"):
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{name} are not all finite")


def read_run(path, ds: Dataset, cfg: TrainConfig) -> Run:
    """The run of ``cfg`` on ``ds`` stored at ``path`` (an ``.npz`` of
    :func:`run_to_arrays`), reading no more than such a run holds.

    Every member's npy header (dtype and shape) is checked by :func:`check_layout`
    before any array is read, so an unknown member or one larger than the run allows
    is refused unread; then :func:`run_from_arrays` checks the values. No pickles.

    Raises
    ------
    ValueError
        If the file is not such a run.
    OSError, zipfile.BadZipFile
        If it cannot be read or is no zip archive.
    """
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        keys = [name.removesuffix(".npy") for name in names]
        if len(names) != len(MEMBERS) or set(keys) != MEMBERS or len(set(names)) != len(names):
            raise ValueError(f"a run file holds exactly its {len(MEMBERS)} arrays; this one "
                             f"holds {len(names)}, unknown: {sorted(set(keys) - MEMBERS)[:5]}")
        headers = {}
        for key, name in zip(keys, names):
            with z.open(name) as fh:
                headers[key] = _npy_header(fh, name)
        check_layout(headers, ds, cfg)
        arrays = {}
        for key, name in zip(keys, names):
            with z.open(name) as fh:
                arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
    return run_from_arrays(arrays, ds, cfg)


def _npy_header(fh, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an npy stream declares, read from its header alone."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"{name} is npy version {version}, which run files do not use")
    return dtype, shape


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
        Bytes of the finished run's arrays, :attr:`Run.nbytes`, exact for a run that
        reaches its last iteration; with ``early``, an upper bound for one that stops
        before (L-BFGS at its tolerance, a diverged run).
    iterates : int
        Bytes L-BFGS holds besides while it trains: every iterate ``(W, b)`` in float64,
        kept until they are replayed through the recorder (0 for gradient descent).
    snapshots : int
        Stored snapshots ``S``: every array of the weights and of the per-example
        records grows with it.
    early : int
        Bytes beyond ``run`` that an L-BFGS run of more than 100 iterations holds when
        it stops at or before iteration 100: it then keeps every iterate (101 snapshots,
        where the log-spaced schedule of T keeps about 60-80). 0 for gradient descent.
    """

    run: int
    iterates: int
    snapshots: int
    early: int = 0

    @property
    def total(self) -> int:
        """Bytes the run holds at most while it trains and once it is finished."""
        return self.run + self.early + self.iterates


def footprint(cfg: TrainConfig, ds: Dataset) -> Footprint:
    """The memory a run of ``cfg`` on ``ds`` holds, computed before training from the
    shapes its arrays will have (:func:`run_layout` of a run that reaches
    ``cfg.iterations``).

    Dominant terms, with ``S`` snapshots, ``K`` classes, ``d`` pixels, ``n`` training
    and ``m`` validation images and ``b`` bytes per weight: ``S (K d + K) b`` for the
    weights, ``S (14 n + 10 m)`` for the per-example records, ``E n K 4`` for gradient
    descent's residual sums at ``E`` edges; L-BFGS adds ``(T + 1) (K d + K) 8`` for its
    iterates while it trains.
    """
    T = int(cfg.iterations)
    layout = run_layout(ds, cfg, T)

    def size(lay) -> int:
        # The 0-d entries are the scalars of the file; a Run holds them as Python numbers.
        return sum(dtype.itemsize * math.prod(shape) for dtype, shape in lay.values() if shape)

    run = size(layout)
    K, d = ds.n_classes, math.prod(ds.image_shape)
    iterates = (T + 1) * (K * d + K) * 8 if cfg.optimizer == "lbfgs" else 0
    # L-BFGS stores the schedule of the iteration it stopped at: every iterate up to 100.
    early = max(0, size(run_layout(ds, cfg, 100)) - run) \
        if cfg.optimizer == "lbfgs" and T > 100 else 0
    return Footprint(run=int(run), iterates=int(iterates),
                     snapshots=layout["snapshot_iterations"][1][0], early=int(early))
