"""Process-wide resources shared by every session: data sets and the run store."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.settings import DATASETS, operator_folders
from core.data import Dataset, load_dataset, user_cache_dir
from core.runs import RunStore

#: Where this session's uploaded data set lives in st.session_state (see ui.uploads).
UPLOAD_KEY = "ws_upload"


@st.cache_resource(show_spinner="Loading the data set…")
def _bundled(name: str) -> Dataset:
    """A bundled data set, loaded once per process and shared read-only by all sessions."""
    return load_dataset(name)


@st.cache_resource(show_spinner="Loading the data folder…")
def _folder(name: str, path: str):
    from core import uploads
    return uploads.load_folder(path)


def dataset(name: str) -> Dataset:
    """The data set called ``name``: bundled and operator folders are shared by all
    sessions; "upload" is this session's own upload and nobody else's."""
    if name == "upload":
        upload = st.session_state.get(UPLOAD_KEY)
        if upload is None:
            raise KeyError("This session has no uploaded data.")
        return upload.dataset
    folders = operator_folders()
    if name in folders:
        return _folder(name, folders[name]).dataset
    return _bundled(name)


def available_datasets() -> dict[str, str]:
    """Selectable data sets by name, with the label shown: Fashion-MNIST only where it was
    really found, the operator's folders that load, and this session's upload."""
    fashion = dataset("fashion-mnist")
    out = dict(DATASETS)
    if fashion.is_fallback:
        out.pop("fashion-mnist")
    for name, path in operator_folders().items():
        try:
            _folder(name, path)
        except (OSError, ValueError):
            continue  # a broken folder is reported on the home page, not offered
        out[name] = f"Folder: {name.split(':', 1)[1]}"
    upload = st.session_state.get(UPLOAD_KEY)
    if upload is not None:
        out["upload"] = f"Your upload ({upload.dataset.n_classes} classes, " \
                        f"{len(upload.dataset.y_train):,} images)"
    return out


@st.cache_resource
def run_store() -> RunStore:
    """The process-wide store of finished and running trainings."""
    budget_mb = _env_int("WEIGHTSCOPE_CACHE_MB", 1024)
    disk = os.environ.get("WEIGHTSCOPE_RUN_CACHE")
    disk_dir = None if disk == "off" else Path(disk) if disk else user_cache_dir() / "runs"
    return RunStore(max_bytes=budget_mb << 20, disk_dir=disk_dir,
                    max_jobs=_env_int("WEIGHTSCOPE_MAX_JOBS", 1),
                    max_disk_bytes=_env_int("WEIGHTSCOPE_DISK_MB", 2048) << 20)


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


@st.cache_resource
def task_store():
    """The process-wide store of background analyses (see :mod:`core.tasks`)."""
    from core.tasks import TaskStore
    return TaskStore()
