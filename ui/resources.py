"""Process-wide resources shared by every session: data sets and the run store."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core import env
from core.settings import DATASETS, operator_folders
from core.data import Dataset, digits_instead, load_dataset, user_cache_dir
from core.runs import RunStore

#: Where this session's uploaded data set lives in st.session_state (see ui.uploads).
UPLOAD_KEY = "ws_upload"


@st.cache_resource(show_spinner="Loading the data set…")
def _bundled(name: str) -> Dataset:
    """A bundled data set, loaded once per process and shared read-only by all sessions.

    A Fashion-MNIST folder named by WEIGHTSCOPE_DATA_DIR that does not load is the
    operator's to fix: the reason, with the path, goes to the server log, and every page
    goes on with the bundled digits, saying why without the path.
    """
    try:
        return load_dataset(name)
    except ValueError as err:
        if name != "fashion-mnist":
            raise
        env.log.warning("%s", err)
        return digits_instead("Fashion-MNIST could not be loaded from the folder that "
                              "WEIGHTSCOPE_DATA_DIR names (the server log says why)")


@st.cache_resource(show_spinner="Loading the data folder…")
def _folder(name: str, path: str):
    """Operator folder ``name`` ("folder:<name>") read from ``path`` once per process, as
    an :class:`core.uploads.Upload`; None when it does not load, with the reason and the
    path in the server log (viewers see its name only)."""
    from core import uploads
    short = name.split(":", 1)[1]
    try:
        return uploads.load_folder(path, name=short)
    except (OSError, ValueError) as err:
        env.log.warning("WEIGHTSCOPE_FOLDERS: the folder %r at %s could not be loaded: %s",
                        short, path, err)
        return None


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
        folder = _folder(name, folders[name])
        if folder is None:
            raise KeyError(f"{why_unavailable(name)}.")
        return folder.dataset
    return _bundled(name)


def available_datasets() -> dict[str, str]:
    """Selectable data sets by name, with the label shown: Fashion-MNIST only where it was
    really found, the operator's folders that load, and this session's upload."""
    fashion = dataset("fashion-mnist")
    out = dict(DATASETS)
    if fashion.is_fallback:
        out.pop("fashion-mnist")
    for name, path in operator_folders().items():
        if _folder(name, path) is not None:  # a broken one is reported on the home page
            out[name] = f"Folder: {name.split(':', 1)[1]}"
    upload = st.session_state.get(UPLOAD_KEY)
    if upload is not None:
        out["upload"] = f"Your upload ({upload.dataset.n_classes} classes, " \
                        f"{len(upload.dataset.y_train):,} images)"
    return out


def broken_folders() -> list[str]:
    """Names of the operator's folders that did not load, for every viewer to read (the
    reasons, with paths, are in the server log)."""
    return [name.split(":", 1)[1] for name, path in operator_folders().items()
            if _folder(name, path) is None]


def why_unavailable(name: str) -> str:
    """Why data set ``name`` is not offered here, as a clause any viewer may read (no
    server paths): an operator folder that does not load or does not exist, or
    Fashion-MNIST not installed."""
    if name.startswith("folder:"):
        short = name.split(":", 1)[1]
        if name in operator_folders():
            return f"the folder {short!r} could not be loaded; the server log says why"
        return f"this server has no data folder called {short!r}"
    return (f"{DATASETS.get(name, name)} could not be found or loaded on this server (the "
            "README says how to install it)")


@st.cache_resource
def run_store() -> RunStore:
    """The process-wide store of finished and running trainings."""
    disk = os.environ.get("WEIGHTSCOPE_RUN_CACHE")
    disk_dir = None if disk == "off" else Path(disk) if disk else user_cache_dir() / "runs"
    return RunStore(max_bytes=env.CACHE_MB.value() << 20, disk_dir=disk_dir,
                    max_jobs=env.MAX_JOBS.value(),
                    max_disk_bytes=env.DISK_MB.value() << 20)


#: The most runs one page holds at once: the Overfitting page's four penalties.
RUNS_PER_PAGE = 4


def run_memory_bound() -> int:
    """Bytes one run may hold (:meth:`core.config.TrainConfig.memory_problem`): the run
    store's memory budget (WEIGHTSCOPE_CACHE_MB) shared by the runs of the largest page,
    so that a page's runs fit in memory together and none evicts another while it draws."""
    return run_store().max_bytes // RUNS_PER_PAGE


@st.cache_resource
def task_store():
    """The process-wide store of background analyses (see :mod:`core.tasks`)."""
    from core.tasks import TaskStore
    return TaskStore()
