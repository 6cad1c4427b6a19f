"""The viewer's own data: the uploader, taking its files, and what became of them.

An upload and the runs trained on it stay in this browser session (st.session_state),
never on disk and never in another session. Data too small for a validation hold-out
come only from here (and from operator folders, read the same way): the pages say so
with :func:`no_validation` and show such numbers with :func:`validation_value`.
"""

from __future__ import annotations

import math

import streamlit as st

from core.settings import Settings
from core import uploads
from core.config import n_train_range
from ui.draw import md
from ui.resources import UPLOAD_KEY

WIDGET_KEY = "ws_uploader"


def upload_ui() -> None:
    """The file uploader for the user's own data; a good upload becomes the data set.

    A bad file leaves the previous data set (and its runs) as they were.
    """
    st.markdown(
        f"{uploads.describe_limits()} An `.npz` may also hold `class_names`; in a `.zip` the "
        "folder names are the class names. Your data and the runs trained on it stay in this "
        "browser session: links to them work only where the same files are uploaded.")
    # The files are taken at the start of the next run, by the frame (take_upload), so the
    # new data set reaches the sidebar and the address bar in that same run.
    # Any file may be chosen: the loader tells formats by content and says what it takes
    # when a file is none of them. A list of extensions here refused IDX files, whose
    # usual names (train-images-idx3-ubyte) have none.
    st.file_uploader("Your data", accept_multiple_files=True, key=WIDGET_KEY)


def take_upload(settings: Settings) -> Settings | None:
    """Turn newly uploaded files into this session's data set; return the settings that
    show it (None when there is nothing new, or the upload was refused).

    A refused upload leaves the data set, the settings and the runs as they were.
    """
    files = st.session_state.get(WIDGET_KEY)
    if not files:
        return None
    # Every rerun of the home page sees the same files in the widget: they are read
    # and checked only when the widget holds a new set (Streamlit gives each a file_id).
    seen = tuple(f.file_id for f in files)
    if st.session_state.get("ws_upload_seen") == seen:
        return None
    st.session_state["ws_upload_seen"] = seen
    try:
        upload = uploads.load_upload([(f.name, f.getvalue()) for f in files])
    except uploads.UploadError as exc:
        st.session_state["ws_upload_error"] = str(exc)
        return None
    st.session_state.pop("ws_upload_error", None)
    st.session_state[UPLOAD_KEY] = upload
    st.session_state["ws_upload_notices"] = list(upload.notices)
    # Start from a run the upload can hold: at most what is left after validation, and
    # two images per class where there are that many.
    low, high = n_train_range(upload.dataset)
    return settings.replace(dataset="upload",
                            n_train=max(min(2 * low, high), min(settings.n_train, high)))


def upload_messages() -> None:
    """Notices of the last upload, or why it was refused."""
    error = st.session_state.get("ws_upload_error")
    if error:
        st.error(f"{md(error)} The data set in use is unchanged.", icon=":material/block:")
    for notice in st.session_state.get("ws_upload_notices", []):
        # Notices name files, archive members and classes: text the viewer did not write.
        st.info(md(notice), icon=":material/info:")


def no_validation(run, ds) -> bool:
    """Say on the page, when ``run`` has no validation hold-out, why it has none.

    Parameters
    ----------
    run : core.run.Run
    ds : core.data.Dataset
        The data set ``run`` was trained on.

    Returns
    -------
    bool
        True when the run has no validation images (and the note was drawn).
    """
    if len(run.val_indices):
        return False
    n, k = len(ds.y_train), ds.n_classes
    # The rule is core.config.validation_size's: a hold-out of a fifth of the training
    # split, drawn only when it can hold an image of every class.
    st.info(f"No validation numbers: the {n:,} training images are too few for a validation "
            f"hold-out (a fifth of them must hold an image of each of the {k:,} classes, so "
            f"it takes {5 * k:,} images). Runs train on all of them; upload more images per "
            "class to see validation curves and where overfitting begins.",
            icon=":material/info:")
    return True


def validation_value(value: float, spec: str = ".3f") -> str:
    """A validation number for a metric: formatted by ``spec``, or "none" when the run
    has no validation images (the value is NaN)."""
    return format(value, spec) if math.isfinite(value) else "none"
