"""The shared sidebar: one widget per row of :data:`core.config.SETTINGS`, drawn by the
frame (app.py) once for every page.

Each widget keeps its value in ``st.session_state["ws_w_<name>"]``. The frame seeds those
keys from a link before the widgets are drawn (:func:`seed`); otherwise they hold what the
viewer last chose. What the viewer typed is checked against the table and the data set;
a value that cannot be used is reported next to its control and the last good value kept.
"""

from __future__ import annotations

import math

import streamlit as st

from core.settings import Settings, max_work, work_problem
from core.config import SETTINGS, Setting, n_train_range
from core.data import Dataset
from ui.resources import dataset, run_memory_bound


def widget_key(name: str, prefix: str = "") -> str:
    """The session-state key of setting ``name``'s widget (``prefix``: a second set of
    settings, as a side-by-side view would draw beside the sidebar's)."""
    return f"ws_w_{prefix}{name}"


def _widget_value(setting: Setting, value):
    """``value`` as its widget holds it: text for a text box, float or int for a number."""
    if setting.widget == "text":
        return setting.format(value)
    if setting.widget == "number":
        return int(value) if setting.kind == "int" else float(value)
    return value


def seed(settings: Settings, force: bool, prefix: str = "") -> None:
    """Put ``settings`` into the widgets' state: every one (``force``, a link was opened)
    or those that have none (first run, or a run that stopped before the sidebar)."""
    for s in SETTINGS:
        key = widget_key(s.name, prefix)
        if force or key not in st.session_state:
            st.session_state[key] = _widget_value(s, getattr(settings, s.name))


def draw(settings: Settings, choices: dict[str, str], *, container=None,
         prefix: str = "", refuse_over_cap: bool = False) -> tuple[Settings, Dataset]:
    """Draw the settings in ``container`` (default: the sidebar); return the valid ones and
    their data set (invalid input keeps ``settings``' value, with a message beside the
    control). ``choices`` are the data sets on offer, name -> label; ``prefix`` keeps a
    second set of widgets apart (see :func:`widget_key`). With ``refuse_over_cap``, steps
    x images over the work cap are returned as asked, with the message beside the control:
    the caller refuses that run (a page comparing two runs shows the other one)."""
    sb = container if container is not None else st.sidebar
    sb.header("Training settings")
    ss = st.session_state
    values: dict = {}
    ds: Dataset | None = None
    for s in SETTINGS:
        key = widget_key(s.name, prefix)
        lbfgs = values.get("optimizer") == "lbfgs"
        if s.name == "dataset":
            if ss.get(key) not in choices:
                ss[key] = settings.dataset if settings.dataset in choices else next(iter(choices))
            values[s.name] = sb.selectbox(s.label, list(choices), format_func=choices.get, key=key,
                                          help=s.help or None)
            ds = dataset(values[s.name])
        elif s.widget == "radio":
            values[s.name] = sb.radio(s.label, list(s.choices), key=key, horizontal=True,
                                      format_func=s.choices.get, help=s.help or None)
        elif s.widget == "text":
            text = sb.text_input(s.label, key=key, disabled=lbfgs and s.name == "learning_rate",
                                 help="Does not apply to L-BFGS, which chooses its own steps."
                                 if lbfgs else s.help or None)
            try:
                values[s.name] = s.parse(text)
            except ValueError as exc:
                sb.error(f"{s.label} {text!r} is {exc}{': ' + s.hint if s.hint else ''}; "
                         f"keeping {s.format(getattr(settings, s.name))}.")
                values[s.name] = getattr(settings, s.name)
        else:
            values[s.name] = _number(sb, s, key, settings, values, ds, refuse_over_cap)
        if s.name == "l1" and lbfgs and values["l1"] > 0:
            sb.error("L1 needs gradient descent's proximal step; L-BFGS handles L2 only. "
                     "Training without L1 (set it to 0, or choose gradient descent).")
            values["l1"] = 0.0
    return Settings(**values), ds


def _number(sb, s: Setting, key: str, settings: Settings, values: dict, ds: Dataset,
            refuse_over_cap: bool = False):
    """A number input for ``s`` in container ``sb``, with the limits that depend on the
    data set (training-set size) or on the server (the work cap on steps x images)."""
    ss = st.session_state
    label, help_ = s.label, s.help or None
    if s.name == "n_train":
        low, high = n_train_range(ds)
        asked = ss.get(key, settings.n_train)
        if not low <= asked <= high:
            # Out of range for this data set (typed, linked, or left from other data): the
            # widget is set to the nearest valid size before it is drawn, and says so.
            clamped = int(min(max(asked, low), high))
            ss[key] = clamped
            sb.error(f"Training images must be between {low} (one per class) and "
                     f"{high:,} for this data set; {asked:,} was changed to {clamped:,}.")
        help_ = (f"Stratified sample of the {high:,} training images outside the validation "
                 "hold-out.")
    if s.name == "iterations" and values.get("optimizer") == "lbfgs":
        label = "Iterations (at most)"
    integer = s.kind == "int"
    kwargs = dict(min_value=int(s.low) if integer else float(s.low), step=s.step, key=key,
                  help=help_)
    if integer and s.high < 2**31 and s.name != "n_train":
        kwargs["max_value"] = int(s.high)
    if not integer:
        kwargs.update(format="%g", step=float(s.step))
        if math.isfinite(s.high):
            kwargs["max_value"] = float(s.high)
    value = sb.number_input(label, **kwargs)
    value = int(value) if integer else float(value)
    if s.name == "iterations":
        cap = max_work()
        n = values["n_train"]
        if refuse_over_cap and value * n > cap:
            sb.error(f"{work_problem(value, n, cap)} Not trained.")
            return value
        if value * n > cap:
            over = (f"{value:,} step{'s' * (value != 1)} x {n:,} images is over this server's "
                    f"cap of {cap:,} image-step{'s' * (cap != 1)} per run (set "
                    "WEIGHTSCOPE_MAX_WORK to change it)")
            if n > cap:
                # Not even one step fits. Every page needs a run, and one step is one pass
                # over the images, so the smallest run is trained and the message says so.
                also = f", and so is 1 step on {n:,} images" if value != 1 else ""
                fewer = (f" At most {cap:,} training images would keep within it."
                         if cap >= n_train_range(ds)[0] else "")
                sb.error(f"{over}{also}; training 1 step, the smallest run there is.{fewer}")
                value = 1
            else:
                kept = settings.iterations if settings.iterations * n <= cap else cap // n
                sb.error(f"{over}; keeping {kept:,} step{'s' * (kept != 1)}.")
                value = kept
        value = _within_memory(sb, settings, values, value, ds)
    return value


def _within_memory(sb, settings: Settings, values: dict, steps: int, ds: Dataset) -> int:
    """``steps``, checked against the memory one run may hold on this server
    (:func:`ui.resources.run_memory_bound`), with the settings chosen above it in ``values``.

    Over it, the control says what to lower and keeps the last good steps when those fit;
    otherwise (a link, more images, L-BFGS chosen) the steps stay, and the page refuses the
    run with the same message rather than train another one than asked.
    """
    bound = run_memory_bound()
    problem = settings.replace(**values, iterations=steps).config().memory_problem(ds, bound)
    if problem is None:
        return steps
    kept = settings.iterations
    if kept != steps and settings.replace(**values).config().memory_problem(ds, bound) is None:
        unit = "iterations" if values.get("optimizer") == "lbfgs" else "steps"
        sb.error(f"{problem} Keeping {kept:,} {unit}.")
        return kept
    sb.error(problem)
    return steps
