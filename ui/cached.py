"""Analysis of a run, computed once per run and kept (st.cache_data, keyed on the run's key).

The functions of :mod:`core.analysis` know nothing of caching; a run is identified here by
its store key (data fingerprint + config), never by hashing its arrays.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import analysis, render
from core.data import Dataset
from core.run import Run
from core.runs import run_key
from ui.draw import pick_scale, theme as page_theme


def run_id(run: Run) -> str:
    """The key that names ``run`` in the caches below: its data and config."""
    return run_key(run.fingerprint, run.config)


@st.cache_data(max_entries=64, show_spinner=False)
def _trajectory(run_id: str, _run: Run, _ds: Dataset) -> dict[str, np.ndarray]:
    return analysis.trajectory(_run, _ds)


def trajectory(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """:func:`core.analysis.trajectory` of ``run``, computed once per run."""
    return _trajectory(run_id(run), run, ds)


@st.cache_data(max_entries=16, show_spinner=False)
def _first_step(run_id: str, _run: Run, _ds: Dataset) -> dict[str, np.ndarray]:
    return analysis.first_step(_run, _ds)


def first_step(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """:func:`core.analysis.first_step` of ``run``, computed once per run."""
    return _first_step(run_id(run), run, ds)


@st.cache_data(max_entries=16, show_spinner="Drawing the animation…")
def _evolution_gif(run_id: str, _run: Run, scale: int, theme: str) -> bytes:
    frames = []
    names = list(_run.class_names)
    for t in _run.snapshot_iterations:
        if t < 1:
            continue
        frames.append(render.weight_grid(_run.weights(int(t)), scale=scale, col_labels=names,
                                         row_labels=[f"step {int(t):>6,}"], theme=theme))
    return render.animated_gif(frames, duration_ms=120)


def evolution_gif(run: Run) -> bytes:
    """Animated GIF of all class images over every stored snapshot (cached per run and
    page theme: its labels are drawn for the page)."""
    return _evolution_gif(run_id(run), run, pick_scale(run.image_shape, 56), page_theme())


def summary_maker(run: Run, ds: Dataset, link: str):
    """A function making the one-page HTML summary of ``run`` on demand.

    Everything that needs the script's context (cached metrics, the view's link)
    is gathered now: the download button calls the function on another thread.
    """
    from core import report
    from ui.resources import task_store
    traj = trajectory(run, ds)
    store = task_store()
    claims = {"spectrum": spectrum(run, ds),
              "l2": store.peek(f"{run_id(run)}/l2"),
              "max_margin": store.peek(f"{analysis.subset_key(run)}/max-margin")}
    return lambda: report.summary_html(run, ds, traj, link=link, claims=claims)


@st.cache_resource(max_entries=16, show_spinner="Decomposing the training images…")
def _spectrum(subset: str, step: float, _run: Run, _ds: Dataset) -> analysis.Spectrum:
    return analysis.spectrum(_run, _ds)


def spectrum(run: Run, ds: Dataset) -> analysis.Spectrum:
    """:func:`core.analysis.spectrum`, shared by every run on the same training images and
    step size (read-only: not copied)."""
    return _spectrum(analysis.subset_key(run), float(run.learning_rate), run, ds)


@st.cache_data(max_entries=32, show_spinner=False)
def _spectrum_curves(run_id: str, _run: Run, _ds: Dataset) -> dict[str, np.ndarray]:
    sp = spectrum(_run, _ds)
    S, K = _run.snapshot_weights.shape[:2]
    est = sp.roughness_estimate(_run.snapshot_weights.reshape(S * K, -1)).reshape(S, K)
    return {"fitted": np.array([sp.fitted(int(t)) for t in _run.snapshot_iterations]),
            "roughness_estimate": est.mean(axis=1)}


def spectrum_curves(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """Per snapshot (S,): ``fitted`` directions (a t lambda > 1) and ``roughness_estimate``
    (mean over classes of the spectrum's estimate), computed once per run."""
    return _spectrum_curves(run_id(run), run, ds)


def l2_path(run: Run, ds: Dataset):
    """The background :class:`~core.tasks.Task` of :func:`core.analysis.l2_path` for ``run``."""
    from ui.resources import task_store
    return task_store().get(
        f"{run_id(run)}/l2", lambda task: analysis.l2_path(run, ds, progress=task.progress,
                                                     into=task.partial),
        label=f"early stopping vs L2 ({run.config.n_train:,} images, "
              f"{run.iterations_done:,} steps)")


def max_margin(run: Run, ds: Dataset):
    """The background :class:`~core.tasks.Task` of :func:`core.analysis.max_margin`, shared
    by every run on the same training images."""
    from ui.resources import task_store
    return task_store().get(f"{analysis.subset_key(run)}/max-margin",
                            lambda task: analysis.max_margin(run, ds, check=task.check),
                            label=f"max-margin limit ({run.config.n_train:,} images)")
