"""Getting a finished run for a page: at once from the store, or by waiting for its
training with a progress bar and a Cancel button."""

from __future__ import annotations

import uuid

import numpy as np
from typing import NoReturn

import streamlit as st
from streamlit.runtime.scriptrunner import StopException

from core.config import TrainConfig
from core.data import Dataset
from core.run import Run
from core.runs import Job
from core.trainer import TrainingCancelled
from ui.draw import md
from ui.resources import run_memory_bound, run_store


class PageStopped(Exception):
    """The page cannot go on (no run to show): app.py catches it and closes the frame as
    after a full run. ``st.stop()`` would not do: after it, Streamlit refuses every further
    message of the run, so the address bar and the links could not be written."""


def stop() -> NoReturn:
    """End the page here, keeping what it drew (see :class:`PageStopped`)."""
    raise PageStopped


def progress_text(label: str, cfg: TrainConfig, done: int, total: int, elapsed: float,
                  eta: float | None) -> str:
    """What the progress bar says: L-BFGS counts iterations, as its sidebar control does;
    gradient descent counts steps."""
    unit = "iterations" if cfg.optimizer == "lbfgs" else "steps"
    left = f", about {eta:,.0f} s left" if eta is not None else ""
    return f"Training {label}: {done:,} of {total:,} {unit}, {elapsed:,.0f} s{left}"


def get_run(ds: Dataset, cfg: TrainConfig, *, label: str = "", persist: bool = True) -> Run:
    """The run for ``cfg``: from the store at once, or trained with progress, the latest
    weight images while it trains (:func:`live_view`) and a cancel button.

    ``persist=False`` keeps it off the disk cache (runs on uploaded data stay in memory).
    """
    return get_runs(ds, [cfg], labels=[label], persist=persist)[0]


def get_runs(ds: Dataset, cfgs, *, labels, persist: bool = True) -> list[Run]:
    """The runs for ``cfgs`` (with ``labels`` for the progress text), as :func:`get_run`;
    those that can are trained together (:meth:`core.runs.RunStore.request_many`), with
    one progress bar and one time left for all of them."""
    for cfg in cfgs:
        problems = cfg.problems(ds, max_bytes=run_memory_bound())  # every page's runs
        if problems:
            st.error("These settings cannot be trained: " + " ".join(problems.values()))
            stop()
    store = run_store()
    ss = st.session_state
    me = ss.setdefault("ws_session", uuid.uuid4().hex)
    got = store.request_many(ds, cfgs, persist=persist, watcher=me)
    jobs = [g for g in got if isinstance(g, Job)]
    keys = [j.key for j in jobs]
    for previous in ss.get("ws_watching") or []:
        if previous not in keys:
            # This session moved on (another setting, another page): a training nobody
            # waits for any more is cancelled instead of holding the training slot.
            store.leave(previous, me, why="its viewer moved on")
    ss.pop("ws_watching", None)
    if not jobs:
        return got
    ss["ws_watching"] = keys
    label = labels[0] if len(cfgs) == 1 else f"{len(jobs)} runs together"
    box = st.empty()
    with box.container():
        bar = st.progress(0.0, text=f"Training {label}…")
        # A click reruns the script; the rerun finds the button pressed and cancels.
        cancel = st.button("Cancel training", key=f"ws_cancel_{keys[0]}")
        live = st.empty()
    if cancel:
        others = max(store.leave(k, me) for k in keys)
        ss.pop("ws_watching", None)
        # Emptied from outside its own block: writing on inside the box after emptying it
        # blanked the whole page ("'setIn' cannot be called on an ElementNode", Chromium).
        box.empty()
        if others:
            st.info(f"You stopped waiting; the training goes on for {others} other "
                    "viewer(s) and will be ready here when it ends.")
        else:
            st.info("Training was cancelled. Change a setting, or press Retry to train it "
                    "again.")
        st.button("Retry")
        stop()
    shown = None
    try:
        while not all(j.wait(0.25 / len(jobs)) for j in jobs):
            if any(j.awaiting_kernel for j in jobs):
                bar.progress(0.0, text=f"Preparing the compiled training kernel (once per "
                                       f"server), then training {label}: it makes this long "
                                       "run two to three times faster.")
                continue
            if all(j.queued for j in jobs):
                # The server trains a limited number of runs at once (WEIGHTSCOPE_MAX_JOBS).
                bar.progress(0.0, text=f"Waiting for a free training slot: {store.running - 1} "
                                       f"other training(s) ahead or running; {label} starts when "
                                       "one ends.")
                continue
            done = min(j.done_steps for j in jobs)
            total = max(max(j.total_steps for j in jobs), 1)
            etas = [j.eta for j in jobs if not j.finished.is_set()]
            eta = max(etas) if etas and None not in etas else None
            bar.progress(min(done / total, 1.0),
                         text=progress_text(label, cfgs[0], done, total,
                                            max(j.elapsed for j in jobs), eta))
            shown = live_view(live, ds, jobs, labels, shown)
    except StopException:
        # The server stops a session's script when its tab closes or its connection drops;
        # the stop surfaces here, at the next progress update. A rerun (another click)
        # raises RerunException instead and keeps the claim: the next run decides.
        for k in keys:
            store.leave_later(k, me)
        raise
    box.empty()
    ss.pop("ws_watching", None)
    if any(isinstance(j.error, TrainingCancelled) for j in jobs):
        st.info("Training was cancelled. Change a setting, or press Retry to train it again.")
        st.button("Retry")
        stop()
    for j in jobs:
        if j.error is not None:
            st.error(f"Training failed: {md(j.error)}")
            stop()
    return [g if isinstance(g, Run) else g.run for g in got]


#: Seconds between two redraws of the live view (weight images and loss so far).
LIVE_SECONDS = 1.0


def live_view(box, ds: Dataset, jobs, labels, shown):
    """While runs train: the latest stored snapshot of each (its weight images) and the
    training loss so far, redrawn into ``box`` at most every :data:`LIVE_SECONDS` and only
    when a run stored a new snapshot. ``shown`` is what the last call drew (its return
    value); returns what this one shows."""
    import time

    from core import charts
    from ui import draw

    now = time.monotonic()
    latest = tuple(j.latest[0] if j.latest else None for j in jobs)
    if shown is not None and (latest == shown[0] or now - shown[1] < LIVE_SECONDS):
        return shown
    if all(t is None for t in latest):
        return shown
    names = [labels[i] if len(labels) == len(jobs) else "" for i in range(len(jobs))]
    with box.container():
        snaps = [(j, name) for j, name in zip(jobs, names) if j.latest]
        images = [j.latest[1] for j, _ in snaps]
        shapes = {w.shape for w in images}
        if len(shapes) == 1:
            K = images[0].shape[0]
            grid = np.stack([w.reshape(K, *ds.image_shape) for w in images])
            draw.weight_images(grid if len(grid) > 1 else grid[0], col_labels=ds.class_names,
                               row_labels=[f"{n} @ {j.latest[0]:,}" for j, n in snaps]
                               if len(grid) > 1 else None,
                               scale=max(1, draw.pick_scale(ds.image_shape) - 1),
                               caption=("While it trains: the weight images at step "
                                        f"{snaps[0][0].latest[0]:,}, the latest snapshot"
                                        if len(grid) == 1 else
                                        "While they train: each run's latest snapshot"))
        losses = {(n or "train"): (np.array(j.losses[0]), np.array(j.losses[1]))
                  for j, n in snaps if len(j.losses[0])}
        if losses:
            draw.chart(charts.curves(charts.frame(losses), y_title="mean training loss (nats)",
                                     title="Training loss so far"), "live-loss", downloads=False)
    return latest, now


def show_run_status(run: Run) -> None:
    """An error when the run stopped early (divergence), with the reason; stops the page
    when not even one step survived, since there is nothing to show."""
    if run.diverged:
        st.error(run.stop_reason, icon=":material/error:")
        if run.iterations_done < 1:
            stop()
    elif run.learning_rate > run.stability_limit:  # NaN for L-BFGS: never true
        times = run.learning_rate / run.stability_limit
        st.warning(
            f"The learning rate {run.learning_rate:.4g} is {times:.3g}x the stability limit "
            f"2/L = {run.stability_limit:.4g}: gradient descent is no longer "
            "sure to go downhill, and the curves may jump or oscillate. \"auto\" uses 1/L = "
            f"{run.stability_limit / 2:.4g}.", icon=":material/warning:")
