"""Getting a finished run for a page: at once from the store, or by waiting for its
training with a progress bar and a Cancel button."""

from __future__ import annotations

import uuid
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
    """The run for ``cfg``: from the store at once, or trained with progress and a cancel button.

    ``persist=False`` keeps it off the disk cache (runs on uploaded data stay in memory).
    """
    problems = cfg.problems(ds, max_bytes=run_memory_bound())  # every page's runs
    if problems:
        st.error("These settings cannot be trained: " + " ".join(problems.values()))
        stop()
    store = run_store()
    me = st.session_state.setdefault("ws_session", uuid.uuid4().hex)
    got = store.request(ds, cfg, persist=persist, watcher=me)
    previous = st.session_state.get("ws_watching")
    if previous and (isinstance(got, Run) or previous != got.key):
        # This session moved on (another setting, another page): a training nobody
        # waits for any more is cancelled instead of holding the training slot.
        store.leave(previous, me, why="its viewer moved on")
        st.session_state.pop("ws_watching", None)
    if isinstance(got, Run):
        return got
    job: Job = got
    st.session_state["ws_watching"] = job.key
    box = st.empty()
    with box.container():
        bar = st.progress(0.0, text=f"Training {label}…")
        # A click reruns the script; the rerun finds the button pressed and cancels.
        cancel = st.button("Cancel training", key=f"ws_cancel_{job.key}")
    if cancel:
        others = store.leave(job.key, me)
        st.session_state.pop("ws_watching", None)
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
    try:
        while not job.wait(0.25):
            if job.queued:
                # The server trains a limited number of runs at once (WEIGHTSCOPE_MAX_JOBS).
                bar.progress(0.0, text=f"Waiting for a free training slot: {store.running - 1} "
                                       f"other training(s) ahead or running; {label} starts when "
                                       "one ends.")
                continue
            done, total = job.done_steps, max(job.total_steps, 1)
            bar.progress(min(done / total, 1.0),
                         text=progress_text(label, cfg, done, total, job.elapsed, job.eta))
    except StopException:
        # The server stops a session's script when its tab closes or its connection drops;
        # the stop surfaces here, at the next progress update. A rerun (another click)
        # raises RerunException instead and keeps the claim: the next run decides.
        store.leave_later(job.key, me)
        raise
    box.empty()
    st.session_state.pop("ws_watching", None)
    if isinstance(job.error, TrainingCancelled):
        st.info("Training was cancelled. Change a setting, or press Retry to train it again.")
        st.button("Retry")
        stop()
    if job.error is not None:
        st.error(f"Training failed: {md(job.error)}")
        stop()
    return job.run


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
