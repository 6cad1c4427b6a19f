"""A viewer's settings, the presets, and their round trip through a URL.

Plain Python (no Streamlit): :mod:`ui.sidebar` draws these and :mod:`ui.url` keeps
them in the address bar. Both follow the table :data:`core.config.SETTINGS`. A link
carries a format version ``v``, the data set's fingerprint ``data`` and every setting,
so it reproduces a view exactly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from core import env
from core.config import BY_NAME, DEFAULTS, FOLDER_NAME, SETTINGS, TrainConfig

LINK_VERSION = "1"
#: Bundled data sets by name, as the sidebar lists them (the table's fixed choices but the
#: session's own upload).
DATASETS = {k: v for k, v in BY_NAME["dataset"].choices.items() if k != "upload"}


class Settings:
    """One value per row of :data:`core.config.SETTINGS` (immutable): the data set's
    name plus the trainer's settings. Missing values take the table's defaults."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any):
        unknown = set(values) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "_values", {**DEFAULTS, **values})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Settings are immutable; use replace()")

    def __eq__(self, other) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values[s.name] for s in SETTINGS))

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def replace(self, **changes: Any) -> "Settings":
        return Settings(**{**self._values, **changes})

    def config(self, **changes: Any) -> TrainConfig:
        """The :class:`TrainConfig` for these settings (``changes`` override fields).

        L-BFGS runs in float64 and has no learning rate: those are set here, so
        the run's key does not depend on a control that does not apply.
        """
        values = {k: v for k, v in self._values.items() if k != "dataset"}
        if values["optimizer"] == "lbfgs":
            values.update(dtype="float64", learning_rate="auto")
        values.update(changes)
        return TrainConfig(**values)


DEFAULT = Settings()


@dataclass(frozen=True)
class Preset:
    title: str
    blurb: str
    settings: Settings
    page: str  # the URL path of the page the preset's link opens


PRESETS = (
    Preset("Reproduce the answer",
           "Softmax on 1,000 images, 30,000 steps at the auto step: templates first, noise "
           "later. Validation loss turns up near step 6,000, after most of the noise has "
           "come: the noise is not the overfitting.",
           Settings(n_train=1000, iterations=30_000), "Trajectory"),
    Preset("Regularization fixes it",
           "The same run with L2 = 0.01: the weight images stay smoother (roughness 1.50 "
           "against 1.76 without a penalty at step 30,000) and the validation loss keeps "
           "falling.",
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
           "0.5 a (sum of the class - sum of the others) / n, mostly minus the mean image.",
           Settings(model="ovr", n_train=1000, iterations=10_000), "First_step"),
)


def to_params(settings: Settings, fingerprint: str, prefix: str = "") -> dict[str, str]:
    """URL parameters for ``settings`` on data ``fingerprint`` (version first).

    ``prefix`` goes before each setting's key: a view that shows two sets of settings
    side by side keeps them apart as, say, ``a.n`` and ``b.n``.
    """
    out = {"v": LINK_VERSION, "data": fingerprint[:8]}
    for s in SETTINGS:
        out[prefix + s.key] = s.format(getattr(settings, s.name))
    return out


def has_settings(params: dict[str, str], prefix: str = "") -> bool:
    """Whether a URL's parameters carry any setting (a deep link) or none."""
    return any(prefix + s.key in params for s in SETTINGS)


def from_params(params: dict[str, str], base: Settings = DEFAULT,
                prefix: str = "") -> tuple[Settings, list[str]]:
    """Settings read from URL parameters (keys after ``prefix``), and a notice for each
    value that was ignored.

    Missing parameters keep ``base``'s value; a malformed one is ignored with a
    notice naming it, what is wrong, and the value used instead.
    """
    values, notices = {}, []
    version = params.get("v")
    if version is not None and version != LINK_VERSION:
        notices.append(
            f"This link was made by another version of Weightscope (v={version[:40]}); "
            "its settings were read as far as they still apply.")
    for s in SETTINGS:
        key = prefix + s.key
        if key not in params:
            continue
        raw = str(params[key])
        try:
            values[s.name] = s.parse(raw)
        except (ValueError, TypeError, OverflowError) as exc:
            fallback = s.format(getattr(base, s.name))
            notices.append(f"Ignored {key}={raw[:40]!r} in the link ({exc}); using {fallback}.")
    return base.replace(**values), notices


def max_work() -> int:
    """The cap on iterations x training images per run (``WEIGHTSCOPE_MAX_WORK``).

    Its default, 200,000,000, is about two to three minutes of full-data training on the
    reference machine; see :data:`core.env.MAX_WORK` for the syntax and range.
    """
    return env.MAX_WORK.value()


def work_problem(iterations: int, n_train: int, cap: int | None = None) -> str | None:
    """What to lower, and to what, when ``iterations`` x ``n_train`` is over the work cap
    ``cap`` (default :func:`max_work`); None when the run is within it."""
    cap = max_work() if cap is None else cap
    if iterations * n_train <= cap:
        return None
    lower = [f"Gradient steps to {cap // n_train:,}" if cap >= n_train else "",
             f"Training images to {cap // iterations:,}" if cap >= iterations else ""]
    lower = [x for x in lower if x]
    advice = f" Lower {' or '.join(lower)}." if lower else ""
    return (f"{iterations:,} step{'s' * (iterations != 1)} x {n_train:,} images is over this "
            f"server's cap of {cap:,} image-steps per run (set WEIGHTSCOPE_MAX_WORK to change "
            f"it).{advice}")


def operator_folders() -> dict[str, str]:
    """Data folders the server's operator names in WEIGHTSCOPE_FOLDERS ("name=/path;...").

    Viewers pick them by name ("folder:<name>" here) and never see or type a path. An
    entry that cannot be used (no "=", no name or no path, a name with other characters
    than letters, digits, ".", "_" and "-", a name given twice) is left out and reported
    once in the server log with the reason; empty entries (";;") are allowed.

    Returns
    -------
    dict of str to str
        "folder:<name>" -> the path as written, in the order given.
    """
    out: dict[str, str] = {}
    for item in os.environ.get("WEIGHTSCOPE_FOLDERS", "").split(";"):
        if not item.strip():
            continue
        name, sep, path = (part.strip() for part in item.partition("="))
        problem = None
        if not sep:
            problem = "has no '='; write name=/path"
        elif not name:
            problem = "has no name before '='; write name=/path"
        elif not re.fullmatch(FOLDER_NAME, f"folder:{name}"):
            problem = ("has a name that is not 1 to 40 letters, digits, '.', '_' or '-' (viewers "
                       "see it in links)")
        elif not path:
            problem = "names no folder after '='"
        elif f"folder:{name}" in out:
            problem = f"repeats the name {name!r}; the first, {out[f'folder:{name}']!r}, is used"
        if problem:
            env.warn_once(f"WEIGHTSCOPE_FOLDERS entry {item.strip()!r} {problem}; it is left out.")
            continue
        out[f"folder:{name}"] = path
    return out
