"""What determines a training run: the table of settings and :class:`TrainConfig`.

Every setting a viewer can change is declared once, as a row of :data:`SETTINGS`:
its URL parameter, its kind and range (or choices), its default, and the label and
help the sidebar shows. The URL parser and link writer (:mod:`core.settings`), the
sidebar (:mod:`ui.sidebar`) and :meth:`TrainConfig.problems` are all generated from
that table. Adding a setting is a row here, a field of :class:`TrainConfig` with the
row's default, and its use in the trainer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

from core.data import Dataset

DTYPES = ("float32", "float64")
#: Seed of the validation hold-out: fixed, so every run of a data set is
#: judged on the same validation images whatever its own seed.
VALIDATION_SEED = 12345
#: An operator's data folder as a data-set name (see core.settings.operator_folders).
FOLDER_NAME = r"folder:[A-Za-z0-9_.-]{1,40}"


@dataclass(frozen=True)
class Setting:
    """One setting a viewer controls.

    ``kind`` is "choice" (one of ``choices``, a mapping value -> label shown),
    "int" or "float" (from ``low`` to ``high``), or "rate" (a positive number or
    "auto"). ``widget`` is how the sidebar shows it: "select", "radio", "number"
    or "text". ``pattern`` admits choices beyond the fixed ones (data folders).
    """

    name: str
    key: str
    kind: str
    default: Any
    label: str
    help: str = ""
    widget: str = "number"
    choices: Mapping[str, str] = field(default_factory=dict)
    pattern: str | None = None
    low: float = 0
    high: float = math.inf
    step: float = 1
    hint: str = ""  # what to type, for a message about a value that is not one

    def parse(self, text: str) -> Any:
        """The value written as ``text`` (a URL value, a typed entry); ValueError with
        the reason, in a few words, when it is not one."""
        text = str(text).strip()
        if self.kind == "choice":
            if text in self.choices or (self.pattern and re.fullmatch(self.pattern, text)):
                return text
            raise ValueError(f"not one of {', '.join(self.choices)}"
                             + (" or folder:<name>" if self.pattern else ""))
        if self.kind == "rate" and text.lower() == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            raise ValueError('not "auto" or a number' if self.kind == "rate"
                             else "not a number") from None
        if self.kind == "int":
            if not math.isfinite(value) or value != int(value):
                raise ValueError("not a whole number")
            value = int(value)
        problem = self._range_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` for this setting, as a sentence; None if valid."""
        if self.kind == "choice":
            if isinstance(value, str) and (value in self.choices or (
                    self.pattern and re.fullmatch(self.pattern, value))):
                return None
            return f"{self.label} must be one of {', '.join(self.choices)}, not {value!r}."
        if self.kind == "rate":
            if value == "auto" or (_is_number(value) and 0 < value < math.inf):
                return None
            return f'{self.label} must be a positive number or "auto".'
        if self.kind == "int" and not _is_int(value):
            return f"{self.label} must be a whole number."
        if not _is_number(value):
            return f"{self.label} must be a number."
        reason = self._range_problem(value)
        return f"{self.label} is {reason}." if reason else None

    def _range_problem(self, value: float) -> str | None:
        if self.kind == "rate":
            return None if math.isfinite(value) and value > 0 else "not a positive number"
        if not math.isfinite(value) or value < self.low or value > self.high:
            if self.kind == "int":
                return f"outside {int(self.low):,} to {int(self.high):,}"
            if math.isfinite(self.high):
                return f"outside {self.low:g} to {self.high:g}"
            return f"not a number of at least {self.low:g}"
        return None

    def format(self, value) -> str:
        """``value`` as URL text: the shortest that reads back the same, ints without '.0'."""
        return format_number(value)


def format_number(value: float | str) -> str:
    """Shortest text that reads back as the same float (``repr``), ints without '.0'."""
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


#: The settings, in the sidebar's order. ``dataset`` picks the data; the others are
#: fields of :class:`TrainConfig`.
SETTINGS: tuple[Setting, ...] = (
    Setting("dataset", "ds", "choice", "fashion-mnist", "Data set", widget="select",
            choices={"fashion-mnist": "Fashion-MNIST", "digits": "Digits (8 x 8, bundled)",
                     "upload": "Your upload"},
            pattern=FOLDER_NAME),
    Setting("model", "model", "choice", "softmax", "Model", widget="radio",
            choices={"softmax": "softmax", "ovr": "one-vs-rest"},
            help="Softmax: multinomial logistic regression. One-vs-rest: one sigmoid per "
                 "class, the model of the answer's derivation."),
    Setting("optimizer", "opt", "choice", "gd", "Optimizer", widget="radio",
            choices={"gd": "gradient descent", "lbfgs": "L-BFGS"},
            help="Gradient descent: the answer's model, with a learning rate. L-BFGS: "
                 "scikit-learn's optimizer on the same objective (L2 only, float64), as in "
                 "the question; every iterate is recorded."),
    # No data set has more images than this; the data set's own range (one image per
    # class up to all it holds) is applied on top (see n_train_range).
    Setting("n_train", "n", "int", 1000, "Training images", low=1, high=10_000_000, step=100,
            help="Stratified sample of the training images outside the validation hold-out."),
    Setting("iterations", "T", "int", 3000, "Gradient steps", low=1, high=100_000, step=1000),
    Setting("learning_rate", "lr", "rate", "auto", "Learning rate", widget="text",
            help='"auto" = 1/L, a safe, conservative step. Any step below 2/L decreases '
                 'the loss; on real data the curvature is often several times below the '
                 'bound L, so larger steps work too.',
            hint='type "auto" or a number such as 0.01'),
    Setting("l2", "l2", "float", 0.0, "L2 penalty", step=0.001),
    Setting("l1", "l1", "float", 0.0, "L1 penalty", step=0.0001),
    Setting("seed", "seed", "int", 0, "Seed", low=0, high=2**31 - 1),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run (together with the data's fingerprint).

    The fields from ``model`` to ``optimizer`` are the rows of :data:`SETTINGS` (their
    defaults, ranges and meaning are stated there); ``dtype`` and ``n_val`` are set
    by the app, not by viewers.

    Parameters
    ----------
    model : {"softmax", "ovr"}
        Multinomial logistic regression, or one sigmoid per class as in the
        answer's derivation.
    n_train : int
        Training images, a stratified sample of the training split that remains
        after the validation hold-out.
    iterations : int
        Gradient steps T (L-BFGS: at most T iterations).
    learning_rate : float or "auto"
        Step size; "auto" is 1/L (see :mod:`core.trainer`).
    l2, l1 : float
        Penalty strengths (intercept unpenalised).
    seed : int
        Seed of the training subset.
    optimizer : {"gd", "lbfgs"}
        Plain gradient descent (the answer's model), or L-BFGS on the same
        objective as scikit-learn's ``LogisticRegression(C=1 / (l2 n))`` (L2 only,
        float64, no learning rate), recording every iterate.
    dtype : {"float32", "float64"}
        Arithmetic precision.
    n_val : int
        Validation hold-out size, at most a fifth of the training split.
    """

    model: str = DEFAULTS["model"]
    n_train: int = DEFAULTS["n_train"]
    iterations: int = DEFAULTS["iterations"]
    learning_rate: float | str = DEFAULTS["learning_rate"]
    l2: float = DEFAULTS["l2"]
    l1: float = DEFAULTS["l1"]
    seed: int = DEFAULTS["seed"]
    optimizer: str = DEFAULTS["optimizer"]
    dtype: str = "float32"
    n_val: int = 10_000

    def problems(self, ds: Dataset | None = None,
                 max_bytes: int | None = None) -> dict[str, str]:
        """Return ``{field: message}`` for every invalid setting (empty if valid): the
        table's checks, what L-BFGS cannot do, with ``ds`` the data set's range, and with
        ``ds`` and ``max_bytes`` the memory one run may hold (:meth:`memory_problem`)."""
        out: dict[str, str] = {}
        for f in fields(self):
            setting = BY_NAME.get(f.name)
            problem = setting.problem(getattr(self, f.name)) if setting else None
            if problem:
                out[f.name] = problem
        if self.optimizer == "lbfgs":
            if _is_number(self.l1) and self.l1 > 0:
                out["l1"] = ("L1 needs gradient descent's proximal step; L-BFGS handles the "
                             "L2 penalty only. Set L1 to 0 or choose gradient descent.")
            if self.dtype != "float64":
                out["dtype"] = "L-BFGS runs in float64 (its line search needs the precision)."
        if self.dtype not in DTYPES:
            out["dtype"] = f"Precision must be one of {', '.join(DTYPES)}, not {self.dtype!r}."
        if not _is_int(self.n_val) or self.n_val < 0:
            out["n_val"] = "Validation size must be a whole number of at least 0."
        elif ds is not None and "n_train" not in out:
            low, high = n_train_range(ds, self.n_val)
            if self.n_train > high:
                out["n_train"] = (
                    f"Training-set size {self.n_train:,} is larger than the {high:,} "
                    "training images left after the validation hold-out.")
            elif self.n_train < low:
                out["n_train"] = (
                    f"Training-set size must be at least the number of classes ({low}).")
        elif "n_train" not in out and self.n_train < 2:
            out["n_train"] = "Training-set size must be at least 2."
        if ds is not None and max_bytes is not None and not out:
            problem = self.memory_problem(ds, max_bytes)
            if problem:
                out["iterations"] = problem
        return out

    def memory_problem(self, ds: Dataset, max_bytes: int) -> str | None:
        """What to lower, and to what, when this config's run on ``ds`` would hold more
        than ``max_bytes`` (:func:`core.run.footprint`, L-BFGS's iterates included); None
        if it fits. The config must be otherwise valid."""
        from core.run import footprint  # core.run imports this module

        need = footprint(self, ds)
        if need.total <= max_bytes:
            return None
        lbfgs = self.optimizer == "lbfgs"
        steps = "Iterations (at most)" if lbfgs else BY_NAME["iterations"].label
        T, n = int(self.iterations), int(self.n_train)
        best = self.largest_fitting(ds, max_bytes)
        best_T, best_n = best["iterations"], best["n_train"]
        shape = " x ".join(str(v) for v in ds.image_shape)
        m = validation_size(ds, self.n_val)
        what = (f"{need.snapshots:,} snapshots of the weights ({ds.n_classes} classes of "
                f"{shape} pixels, {self.dtype}) and of the records of {n:,} training and "
                f"{m:,} validation images")
        if lbfgs:
            what += f", and the {T + 1:,} iterates L-BFGS holds while it trains"
        lower = [f"{label} to {value:,}" for label, value in
                 ((steps, best_T), (BY_NAME["n_train"].label, best_n)) if value is not None]
        advice = (f"Lower {' or '.join(lower)}." if lower else
                  "Even one step on the fewest images would not fit: this data set has too "
                  "many classes or pixels for this server (its operator can raise "
                  "WEIGHTSCOPE_CACHE_MB).")
        return (f"This run would hold about {_mb(need.total)} in memory, over this server's "
                f"limit of {_mb(max_bytes)} per run: {what}. {advice}")

    def largest_fitting(self, ds: Dataset, max_bytes: int) -> dict[str, int | None]:
        """The most iterations (with these images) and the most training images (with
        these iterations), each at most this config's, whose run on ``ds`` holds at most
        ``max_bytes``; None where not even one iteration, or one image per class, does."""
        from core.run import footprint  # core.run imports this module

        def fits(**change) -> bool:
            return footprint(self.replace(**change), ds).total <= max_bytes

        T, n = int(self.iterations), int(self.n_train)
        # Up to 100 iterations every one is a snapshot, so 100 holds more than a few
        # hundred do: look above 100 first, then below.
        best_T = _largest(lambda t: fits(iterations=t), 101, T) if T > 100 else None
        if best_T is None:
            best_T = _largest(lambda t: fits(iterations=t), 1, min(T, 100))
        best_n = _largest(lambda k: fits(n_train=k), n_train_range(ds, self.n_val)[0], n)
        return {"iterations": best_T, "n_train": best_n}

    def replace(self, **changes) -> "TrainConfig":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return TrainConfig(**values)


def _largest(fits, low: int, high: int) -> int | None:
    """The largest ``k`` in ``low..high`` with ``fits(k)``, for ``fits`` true up to some
    ``k`` and false above it; None when ``fits(low)`` is false or the range is empty."""
    if high < low or not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def _mb(nbytes: int) -> str:
    """Bytes as MB (2**20 bytes, as WEIGHTSCOPE_CACHE_MB counts them), two digits at least."""
    mb = nbytes / 2**20
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.2g} MB"


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


def n_train_range(ds: Dataset, n_val: int = TrainConfig.n_val) -> tuple[int, int]:
    """Training-set sizes ``ds`` admits: one image per class up to all the images left
    after the validation hold-out."""
    return ds.n_classes, len(ds.y_train) - validation_size(ds, n_val)
