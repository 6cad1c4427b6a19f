"""The shared training settings, presets, and their round trip through a URL.

Plain Python (no Streamlit): :mod:`core.state` puts these in the sidebar and
the address bar. A link carries a format version ``v``, the data set's
fingerprint ``data`` and every setting, so it reproduces a view exactly.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, fields, replace
from urllib.parse import urlencode

from core.trainer import TrainConfig

LINK_VERSION = "1"
FOLDER_NAME = r"folder:[A-Za-z0-9_.-]{1,40}"
DATASETS = {"fashion-mnist": "Fashion-MNIST", "digits": "Digits (8 x 8, bundled)"}
#: Default cap on iterations x training images per run: about two to three
#: minutes of full-data training on the reference machine. WEIGHTSCOPE_MAX_WORK overrides.
DEFAULT_MAX_WORK = 200_000_000
MAX_ITERATIONS = 100_000


def max_work() -> int:
    """The configured cap on iterations x training images (env WEIGHTSCOPE_MAX_WORK)."""
    raw = os.environ.get("WEIGHTSCOPE_MAX_WORK", "")
    try:
        value = int(float(raw))
    except ValueError:
        return DEFAULT_MAX_WORK
    return value if value > 0 else DEFAULT_MAX_WORK


@dataclass(frozen=True)
class Settings:
    """What the sidebar controls: a data set name plus the trainer's settings (their
    defaults are :class:`TrainConfig`'s; dtype and the validation size are not controls)."""

    dataset: str = "fashion-mnist"
    model: str = TrainConfig.model
    n_train: int = TrainConfig.n_train
    iterations: int = TrainConfig.iterations
    learning_rate: float | str = TrainConfig.learning_rate
    l2: float = TrainConfig.l2
    l1: float = TrainConfig.l1
    seed: int = TrainConfig.seed
    optimizer: str = TrainConfig.optimizer

    def config(self, **changes) -> TrainConfig:
        """The :class:`TrainConfig` for these settings (``changes`` override fields).

        L-BFGS runs in float64 and has no learning rate: those are set here, so
        the run's key does not depend on a control that does not apply.
        """
        values = asdict(self)
        values.pop("dataset")
        if values["optimizer"] == "lbfgs":
            values.update(dtype="float64", learning_rate="auto")
        values.update(changes)
        return TrainConfig(**values)

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)


DEFAULT = Settings()

#: URL parameter of each setting, and the parser that reads it.
_PARAMS = {
    "dataset": "ds", "model": "model", "n_train": "n", "iterations": "T",
    "learning_rate": "lr", "l2": "l2", "l1": "l1", "seed": "seed", "optimizer": "opt",
}


@dataclass(frozen=True)
class Preset:
    title: str
    blurb: str
    settings: Settings
    page: str  # the page the preset's link opens


PRESETS = (
    Preset("Reproduce the answer",
           "Softmax on 1,000 images, 30,000 steps at the auto step: templates first, noise "
           "later, validation loss turning up near 10,000 steps.",
           Settings(n_train=1000, iterations=30_000), "Trajectory"),
    Preset("Regularization fixes it",
           "The same run with L2 = 0.01: the weight images stay smooth and the validation "
           "loss keeps falling.",
           Settings(n_train=1000, iterations=30_000, l2=0.01), "Overfitting"),
    Preset("Full data",
           "Softmax on all 50,000 training images, 2,000 steps: little overfitting, "
           "about a minute of training the first time.",
           Settings(n_train=50_000, iterations=2000), "Trajectory"),
    Preset("Reproduce the question (L-BFGS)",
           "scikit-learn's optimizer on the same objective, every iterate recorded: the "
           "question's coefficient images, coefficient range and accuracies from one run "
           "instead of one refit per max_iter.",
           Settings(n_train=50_000, iterations=300, optimizer="lbfgs"), "Trajectory"),
    Preset("One-vs-rest as in the derivation",
           "One sigmoid per class, exactly the answer's model: the first step is "
           "0.5 a (sum of the class - sum of the others) / n.",
           Settings(model="ovr", n_train=1000, iterations=10_000), "First_step"),
)


def format_number(value: float | str) -> str:
    """Shortest text that reads back as the same float (``repr``), ints without '.0'."""
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def to_params(settings: Settings, fingerprint: str) -> dict[str, str]:
    """URL parameters for ``settings`` on data ``fingerprint`` (version first)."""
    out = {"v": LINK_VERSION, "data": fingerprint[:8]}
    for name, key in _PARAMS.items():
        out[key] = format_number(getattr(settings, name))
    return out


def link(page: str, settings: Settings, fingerprint: str, **view) -> str:
    """A relative link to ``page`` (e.g. "Trajectory") showing ``settings`` and ``view``."""
    params = to_params(settings, fingerprint)
    params.update({k: format_number(v) for k, v in view.items()})
    return f"./{page}?{urlencode(params)}"


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


def _parse_int(text: str, low: int, high: int) -> int:
    value = _number(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError("not a whole number")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"outside {low:,} to {high:,}")
    return value


def _parse_nonneg(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("not a number of at least 0")
    return value


def parse_learning_rate(text: str) -> float | str:
    """'auto' or a positive finite number; ValueError with the reason otherwise."""
    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError('not "auto" or a number') from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("not a positive number")
    return value


def _parser(name: str):
    return {
        "dataset": lambda s: s if is_dataset_name(s) else _fail(
            f"not one of {', '.join(DATASETS)}, upload or folder:<name>"),
        "model": lambda s: s if s in ("softmax", "ovr") else _fail("not softmax or ovr"),
        # The data set's own range (one image per class up to all) is applied by the sidebar,
        # which clamps with a message naming it; here only what no data set could use.
        "n_train": lambda s: _parse_int(s, 1, 10_000_000),
        "iterations": lambda s: _parse_int(s, 1, MAX_ITERATIONS),
        "learning_rate": parse_learning_rate,
        "l2": _parse_nonneg,
        "l1": _parse_nonneg,
        "seed": lambda s: _parse_int(s, 0, 2**31 - 1),
        "optimizer": lambda s: s if s in ("gd", "lbfgs") else _fail("not gd or lbfgs"),
    }[name]


def is_dataset_name(name: str) -> bool:
    """A bundled data set, "upload" (this session's own files), or "folder:<name>" (a
    folder the server's operator configured)."""
    return name in DATASETS or name == "upload" or bool(re.fullmatch(FOLDER_NAME, name))


def _fail(reason: str):
    raise ValueError(reason)


def has_settings(params: dict[str, str]) -> bool:
    """Whether a URL's parameters carry any setting (a deep link) or are empty."""
    return any(key in params for key in _PARAMS.values())


def from_params(params: dict[str, str], base: Settings = DEFAULT) -> tuple[Settings, list[str]]:
    """Settings read from URL parameters, and a notice for each value that was ignored.

    Missing parameters keep ``base``'s value; a malformed one is ignored with a
    notice naming it, what is wrong, and the value used instead.
    """
    values, notices = {}, []
    version = params.get("v")
    if version is not None and version != LINK_VERSION:
        notices.append(
            f"This link was made by another version of Weightscope (v={version}); "
            "its settings were read as far as they still apply."
        )
    for name, key in _PARAMS.items():
        if key not in params:
            continue
        raw = str(params[key])
        try:
            values[name] = _parser(name)(raw)
        except (ValueError, TypeError, OverflowError) as exc:
            fallback = format_number(getattr(base, name))
            notices.append(f"Ignored {key}={raw[:40]!r} in the link ({exc}); using {fallback}.")
    return replace(base, **values), notices


def settings_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Settings))


def operator_folders() -> dict[str, str]:
    """Data folders the server's operator names in WEIGHTSCOPE_FOLDERS ("name=/path;...").

    Viewers pick them by name; they never type a server path.
    """
    out = {}
    for item in os.environ.get("WEIGHTSCOPE_FOLDERS", "").split(";"):
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if sep and path and re.fullmatch(FOLDER_NAME, f"folder:{name}"):
            out[f"folder:{name}"] = path
    return out
