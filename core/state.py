"""The one place in ``core`` that touches Streamlit.

Every page starts with :func:`setup_page`. Streamlit runs in its old multipage
mode here (the ``pages/`` folder), where widget values do not survive a page
switch and query parameters are cleared on page change, and a deep link runs
the page file without ``app.py``. So the shared settings live in
``st.session_state["ws_settings"]``, the sidebar widgets are re-seeded from it
on each page, and the URL is rewritten from it on every run.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Sequence
from pathlib import Path

import numpy as np
import streamlit as st

from core import render
from core import settings as S
from core.data import Dataset, load_dataset, user_cache_dir
from core.runs import Job, RunStore
from core.trainer import Run, TrainConfig, TrainingCancelled, validation_size
from core.trainer import one_two_five  # noqa: F401 - re-exported for the pages

SETTINGS_KEY = "ws_settings"
NAV_KEY = "ws_nav_params"  # the settings the sidebar's page links carry
#: Narrowest a chart gets beside another (st.grid cell): below it, charts stack, so the
#: plot keeps room next to its right-hand legend on a narrow window.
CHART_MIN_WIDTH = 440
# The sidebar navigation (Streamlit's own is switched off in .streamlit/config.toml: in the
# ``pages/`` folder mode it would label the home page after the file, "app").
PAGES = (
    ("app.py", "Home", ":material/home:"),
    ("pages/1_First_step.py", "First step", ":material/looks_one:"),
    ("pages/2_Trajectory.py", "Trajectory", ":material/timeline:"),
    ("pages/3_Overfitting.py", "Overfitting and regularization", ":material/blur_on:"),
    ("pages/4_Hardest_examples.py", "Hardest examples", ":material/psychology_alt:"),
)
WRITTEN_KEY = "ws_params_written"


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
    folders = S.operator_folders()
    if name in folders:
        return _folder(name, folders[name]).dataset
    return _bundled(name)


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


def available_datasets() -> dict[str, str]:
    """Selectable data sets: Fashion-MNIST only where it was really found, the operator's
    folders that load, and this session's upload."""
    fashion = dataset("fashion-mnist")
    out = dict(S.DATASETS)
    if fashion.is_fallback:
        out.pop("fashion-mnist")
    for name, path in S.operator_folders().items():
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


def upload_ui() -> None:
    """The file uploader for the user's own data; a good upload becomes the data set.

    A bad file leaves the previous data set (and its runs) as they were.
    """
    from core import uploads
    st.markdown(
        f"{uploads.describe_limits()} An `.npz` may also hold `class_names`; in a `.zip` the "
        "folder names are the class names. Your data and the runs trained on it stay in this "
        "browser session: links to them work only where the same files are uploaded.")
    # The files are taken at the start of the next run, by setup_page, so the new data
    # set reaches the sidebar and the address bar in that same run.
    st.file_uploader("Your data", accept_multiple_files=True, key="ws_uploader",
                     type=["npz", "zip", "gz", "idx", "ubyte", "idx1-ubyte", "idx3-ubyte"])


def _take_upload() -> None:
    """Turn newly uploaded files into this session's data set (before the sidebar is drawn).

    A refused upload leaves the data set, the settings and the runs as they were.
    """
    from core import uploads
    files = st.session_state.get("ws_uploader")
    if not files:
        return
    # Every rerun of the home page sees the same files in the widget: they are read
    # and checked only when the widget holds a new set (Streamlit gives each a file_id).
    seen = tuple(f.file_id for f in files)
    if st.session_state.get("ws_upload_seen") == seen:
        return
    st.session_state["ws_upload_seen"] = seen
    try:
        upload = uploads.load_upload([(f.name, f.getvalue()) for f in files])
    except uploads.UploadError as exc:
        st.session_state["ws_upload_error"] = str(exc)
        return
    st.session_state.pop("ws_upload_error", None)
    st.session_state[UPLOAD_KEY] = upload
    st.session_state["ws_upload_notices"] = list(upload.notices)
    settings = st.session_state.get(SETTINGS_KEY, S.DEFAULT)
    # Start from a run the upload can hold: at most what is left after validation.
    available = len(upload.dataset.y_train) - validation_size(upload.dataset, 10_000)
    st.session_state[SETTINGS_KEY] = settings.replace(
        dataset="upload", n_train=max(upload.dataset.n_classes * 2, min(settings.n_train,
                                                                         available)))
    st.session_state["ws_page"] = None  # re-seed the sidebar from the new settings


def upload_messages() -> None:
    """Notices of the last upload, or why it was refused."""
    error = st.session_state.get("ws_upload_error")
    if error:
        st.error(f"{md(error)} The data set in use is unchanged.", icon=":material/block:")
    for notice in st.session_state.get("ws_upload_notices", []):
        st.info(notice, icon=":material/info:")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text) -> str:
    """``text`` with every Markdown and HTML character escaped, for user-supplied strings
    (file names, class names) inside st.markdown, st.error and friends."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def _nearest(value, choices, default):
    """The choice closest to ``value`` (on a log scale for step numbers), else ``default``."""
    options = list(choices)
    if isinstance(value, (int, np.integer)) and options and all(
            isinstance(c, (int, np.integer)) for c in options):
        return min(options, key=lambda c: abs(np.log1p(max(c, 0)) - np.log1p(max(value, 0))))
    return default


@dataclass
class Page:
    """What :func:`setup_page` hands a page: data, settings, and its view state in the URL."""

    name: str
    ds: Dataset
    settings: S.Settings
    view: dict[str, str] = field(default_factory=dict)
    adopted: bool = False  # this run took its state from the URL (a deep link)
    link_box: object = None  # sidebar placeholder that shows the link to this view

    @property
    def config(self) -> TrainConfig:
        return self.settings.config()

    def view_widget(self, widget, label: str, name: str, default, options, *, cast=int,
                    write: bool = True, **kwargs):
        """Draw choice ``widget`` (``st.select_slider``, ``st.radio`` or ``st.selectbox``,
        on any container) for view value ``name``, record the choice, and return it.

        ``write=False`` leaves the URL to a later :meth:`set_view`: each URL change is a
        browser history entry, and one click should take one Back to undo.

        The value is handed to the widget as its default rather than through session
        state: a widget that a stopped run did not draw (a diverged run, say) comes back
        in the browser showing its first option while the page uses the session's value
        (seen with Streamlit 1.67: slider at 1, page at step 4).
        """
        options = list(options)
        key = f"ws_v/{self.name}/{name}"
        value = self._view_choice(st.session_state.pop(key, None), name, default, options, cast)
        if getattr(widget, "__name__", "") == "select_slider":
            kwargs["value"] = value
        else:
            kwargs["index"] = options.index(value)
        chosen = widget(label, options, key=key, **kwargs)
        self.set_view(write=write, **{name: chosen})
        return chosen

    def _view_choice(self, current, name: str, default, options: list, cast):
        """The option to show: the widget's ``current`` value (the nearest option if the
        options changed under it, another run say), unless a link was just opened or the
        widget is new; then the URL's or session's value, or ``default`` with a notice
        when that does not parse with ``cast`` or is not an option here."""
        if current is not None and not self.adopted:
            return current if current in options else _nearest(current, options, default)
        raw = self.view.get(name)
        if raw is None:
            return default
        try:
            value = cast(raw)
            if value in options:
                return value
        except (ValueError, TypeError):
            pass
        st.warning(f"Ignored {name}={raw[:40]!r} in the link; using "
                   f"{S.format_number(default)}.", icon=":material/warning:")
        return default

    def set_view(self, write: bool = True, **values) -> None:
        """Record view values (e.g. ``t=500``) in the session and (``write``) the URL."""
        for k, v in values.items():
            if v is None:
                self.view.pop(k, None)
            else:
                self.view[k] = S.format_number(v) if not isinstance(v, str) else v
        st.session_state[f"ws_view/{self.name}"] = dict(self.view)
        if write:
            _write_url(self)

    def link(self, page: str | None = None, **view) -> str:
        return S.link(page or self.name, self.settings, self.ds.fingerprint, **view)

    def run(self, config: TrainConfig | None = None, *, label: str = "") -> Run:
        """The finished run for ``config`` (default: the sidebar's), training it if needed.

        Stops the page with a message when the run cannot be had.
        """
        run = get_run(self.ds, config or self.config, label=label,
                      persist=self.settings.dataset != "upload")
        show_run_status(run)
        return run


def setup_page(name: str, title: str, view_keys: tuple[str, ...] = ()) -> Page:
    """Page config, shared settings (URL or session), sidebar, data; returns the :class:`Page`.

    ``view_keys`` are the URL parameters that hold this page's own view state.
    """
    st.set_page_config(page_title=f"{title} · Weightscope", page_icon="🧥", layout="wide")
    # Drawn at once with the links of the last run, redrawn below only if they changed: a
    # rerun then never shows an empty navigation while the settings are worked out.
    nav = st.sidebar.empty()
    _nav(nav, st.session_state.get(NAV_KEY))
    params = {k: st.query_params.get(k) for k in st.query_params.keys()}
    ss = st.session_state
    _take_upload()
    base = ss.get(SETTINGS_KEY, S.DEFAULT)
    adopt = S.has_settings(params) and params != ss.get(WRITTEN_KEY)
    notices: list[str] = []
    if adopt:
        # A deep link, or the user edited the address: the URL wins over the session.
        settings, notices = S.from_params(params, S.DEFAULT)
        view = {k: params[k] for k in view_keys if k in params}
        _seed_widgets(settings, force=True)
    else:
        settings = base
        view = dict(ss.get(f"ws_view/{name}", {}))
        # Widget state does not follow a page switch: re-seed the sidebar on arrival.
        _seed_widgets(settings, force=ss.get("ws_page") != name)
    ss["ws_page"] = name
    for notice in notices:
        st.warning(notice, icon=":material/warning:")

    choices = available_datasets()
    if settings.dataset not in choices:
        if settings.dataset == "upload":
            st.title(title)
            st.warning(
                "This link shows data that was uploaded in another browser session; uploads "
                "stay private to the session that made them. Upload the same files here to "
                "see this view.", icon=":material/lock:")
            upload_ui()
            upload_messages()
            st.stop()
        if adopt and "ds" in params:
            st.warning(
                f"This link asks for {S.DATASETS.get(settings.dataset, settings.dataset)}, which "
                "is not available on this server; showing the bundled digits instead. "
                "Install it with `apt-get install dataset-fashion-mnist` (see the README).",
                icon=":material/warning:")
        settings = settings.replace(dataset=next(iter(choices)))
        st.session_state["ws_w_dataset"] = settings.dataset
    ds = dataset(settings.dataset)
    if adopt and "data" in params and params["data"] != ds.fingerprint[:8]:
        if not ss.get("ws_accept_data"):
            st.title(title)
            st.error(
                f"This link was made on data with fingerprint `{params['data']}`, but "
                f"{choices[settings.dataset]} here has fingerprint `{ds.fingerprint[:8]}`: "
                "its numbers would not match what the link shows. Get the same data, or "
                "continue with the data available here.")
            if st.button("Continue with the data here"):
                ss["ws_accept_data"] = True
                st.rerun()
            st.stop()
    settings, ds = _sidebar(settings, ds)
    ss[SETTINGS_KEY] = settings
    link_box = st.sidebar.expander("Copy link to this view", icon=":material/link:").empty()
    page = Page(name=name, ds=ds, settings=settings, view=view, adopted=adopt, link_box=link_box)
    ss[f"ws_view/{name}"] = dict(view)
    _write_url(page)
    links = S.to_params(settings, ds.fingerprint)
    if links != ss.get(NAV_KEY):
        ss[NAV_KEY] = links
        _nav(nav, links)
    if ds.is_fallback or ds.name == "digits":
        st.info(f"Showing the bundled 8 x 8 digits, not Fashion-MNIST. {md(ds.source)}",
                icon=":material/info:")
    return page


def _nav(box, params: dict[str, str] | None) -> None:
    """Links to every page, each carrying the current settings (``params``) so that a
    middle-click opens the same run in a new tab; None links to the pages' defaults.
    ``box`` is an ``st.empty``: drawing again replaces the links."""
    with box.container():
        for target, label, icon in PAGES:
            st.page_link(target, label=label, icon=icon, query_params=params)
        st.divider()


def _write_url(page: Page) -> None:
    params = S.to_params(page.settings, page.ds.fingerprint)
    params.update(page.view)
    current = {k: st.query_params.get(k) for k in st.query_params.keys()}
    if current != params:
        st.query_params.from_dict(params)
    st.session_state[WRITTEN_KEY] = params
    if page.link_box is not None:
        with page.link_box.container():
            st.caption("Link to this view (settings, step, class, example); the copy icon "
                       "puts it on the clipboard.")
            st.code(view_url(page, params), language=None, wrap_lines=True)


def view_url(page: Page, params: dict[str, str]) -> str:
    """Absolute URL of this page with ``params`` (relative if the browser's is unknown)."""
    from urllib.parse import urlencode, urlsplit

    path = "" if page.name == "Home" else page.name
    try:
        here = urlsplit(st.context.url or "")
    except Exception:  # noqa: BLE001 - no browser context (tests, scripts)
        here = urlsplit("")
    query = urlencode(params)
    if here.scheme and here.netloc:
        # Keep a server.baseUrlPath prefix: the browser's path is <prefix>/<page>.
        prefix = here.path.rstrip("/")
        if path and prefix.endswith("/" + path):
            prefix = prefix[: -len(path) - 1]
        elif path:
            prefix = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return f"{here.scheme}://{here.netloc}{prefix}/{path}?{query}"
    return f"./{path}?{query}"


_WIDGETS = ("dataset", "model", "optimizer", "n_train", "iterations", "learning_rate", "l2", "l1",
            "seed")


def _seed_widgets(settings: S.Settings, force: bool) -> None:
    """Put ``settings`` into the sidebar widgets' state (missing ones, or all if ``force``)."""
    ss = st.session_state
    for name in _WIDGETS:
        key = f"ws_w_{name}"
        if force or key not in ss:
            value = getattr(settings, name)
            if name == "learning_rate":
                value = S.format_number(value)
            elif name in ("l2", "l1"):
                value = float(value)
            ss[key] = value


def _sidebar(settings: S.Settings, ds: Dataset) -> tuple[S.Settings, Dataset]:
    """Draw the shared settings; return the valid ones (invalid input keeps the last good value)."""
    sb = st.sidebar
    sb.header("Training settings")
    choices = available_datasets()
    dataset_name = sb.selectbox("Data set", list(choices), format_func=choices.get,
                                key="ws_w_dataset")
    if dataset_name != settings.dataset and dataset_name in choices:
        ds = dataset(dataset_name)
    model = sb.radio("Model", ["softmax", "ovr"], key="ws_w_model", horizontal=True,
                     format_func={"softmax": "softmax", "ovr": "one-vs-rest"}.get,
                     help="Softmax: multinomial logistic regression. One-vs-rest: one sigmoid "
                          "per class, the model of the answer's derivation.")
    optimizer = sb.radio("Optimizer", ["gd", "lbfgs"], key="ws_w_optimizer", horizontal=True,
                         format_func={"gd": "gradient descent", "lbfgs": "L-BFGS"}.get,
                         help="Gradient descent: the answer's model, with a learning rate. "
                              "L-BFGS: scikit-learn's optimizer on the same objective (L2 only, "
                              "float64), as in the question; every iterate is recorded.")
    lbfgs = optimizer == "lbfgs"
    available = len(ds.y_train) - validation_size(ds, 10_000)
    values = dict(dataset=dataset_name, model=model, optimizer=optimizer)

    asked = st.session_state.get("ws_w_n_train", settings.n_train)
    if not ds.n_classes <= asked <= available:
        # Out of range for this data set (typed, linked, or left from other data): the
        # widget is set to the nearest valid size before it is drawn, and says so.
        clamped = int(min(max(asked, ds.n_classes), available))
        st.session_state["ws_w_n_train"] = clamped
        sb.error(f"Training images must be between {ds.n_classes} (one per class) and "
                 f"{available:,} for this data set; {asked:,} was changed to {clamped:,}.")
    n_train = sb.number_input(
        "Training images", min_value=1, step=100, key="ws_w_n_train",
        help=f"Stratified sample of the {available:,} training images outside the validation "
             "hold-out.")
    values["n_train"] = int(n_train)

    iterations = sb.number_input("Iterations (at most)" if lbfgs else "Gradient steps",
                                 min_value=1, max_value=S.MAX_ITERATIONS,
                                 step=1000, key="ws_w_iterations")
    cap = S.max_work()
    if iterations * values["n_train"] > cap:
        sb.error(
            f"{iterations:,} steps x {values['n_train']:,} images is over this server's cap of "
            f"{cap:,} image-steps per run (set WEIGHTSCOPE_MAX_WORK to change it); keeping "
            f"{settings.iterations:,} steps.")
        iterations = settings.iterations if settings.iterations * values["n_train"] <= cap \
            else max(1, cap // values["n_train"])
    values["iterations"] = int(iterations)

    lr_text = sb.text_input("Learning rate", key="ws_w_learning_rate", disabled=lbfgs,
                            help="Does not apply to L-BFGS, which chooses its own steps." if lbfgs
                            else '"auto" = 1/L, the largest step that never increases the loss.')
    try:
        values["learning_rate"] = S.parse_learning_rate(lr_text)
    except ValueError as exc:
        sb.error(f'Learning rate {lr_text!r} is {exc}: type "auto" or a number such as 0.01; '
                 f"keeping {S.format_number(settings.learning_rate)}.")
        values["learning_rate"] = settings.learning_rate
    values["l2"] = float(sb.number_input("L2 penalty", min_value=0.0, step=0.001, format="%g",
                                         key="ws_w_l2"))
    values["l1"] = float(sb.number_input("L1 penalty", min_value=0.0, step=0.0001, format="%g",
                                         key="ws_w_l1"))
    if lbfgs and values["l1"] > 0:
        sb.error("L1 needs gradient descent's proximal step; L-BFGS handles L2 only. "
                 "Training without L1 (set it to 0, or choose gradient descent).")
        values["l1"] = 0.0
    values["seed"] = int(sb.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1,
                                         key="ws_w_seed"))
    return S.Settings(**values), ds


def get_run(ds: Dataset, cfg: TrainConfig, *, label: str = "", persist: bool = True) -> Run:
    """The run for ``cfg``: from the store at once, or trained with progress and a cancel button.

    ``persist=False`` keeps it off the disk cache (runs on uploaded data stay in memory).
    """
    problems = cfg.problems(ds)
    if problems:
        st.error("These settings cannot be trained: " + " ".join(problems.values()))
        st.stop()
    store = run_store()
    me = st.session_state.setdefault("ws_session", uuid.uuid4().hex)
    got = store.request(ds, cfg, persist=persist, watcher=me)
    previous = st.session_state.get("ws_watching")
    if previous and (isinstance(got, Run) or previous != got.key):
        # This session moved on (another setting, another page): a training nobody
        # waits for any more is cancelled instead of holding the training slot.
        store.leave(previous, me)
        st.session_state.pop("ws_watching", None)
    if isinstance(got, Run):
        return got
    job: Job = got
    st.session_state["ws_watching"] = job.key
    box = st.empty()
    with box.container():
        bar = st.progress(0.0, text=f"Training {label}…")
        # A click reruns the script; the rerun finds the button pressed and cancels.
        if st.button("Cancel training", key=f"ws_cancel_{job.key}"):
            others = store.leave(job.key, me)
            st.session_state.pop("ws_watching", None)
            box.empty()
            if others:
                st.info(f"You stopped waiting; the training goes on for {others} other "
                        "viewer(s) and will be ready here when it ends.")
            else:
                st.info("Training was cancelled. Change a setting, or press Retry to train it "
                        "again.")
            st.button("Retry")
            st.stop()
    while not job.wait(0.25):
        if job.queued:
            # The server trains a limited number of runs at once (WEIGHTSCOPE_MAX_JOBS).
            bar.progress(0.0, text=f"Waiting for a free training slot: {store.running - 1} other "
                                   f"training(s) ahead or running; {label} starts when one ends.")
            continue
        done, total = job.done_steps, max(job.total_steps, 1)
        eta = job.eta
        left = f", about {eta:,.0f} s left" if eta is not None else ""
        bar.progress(min(done / total, 1.0),
                     text=f"Training {label}: {done:,} of {total:,} steps, "
                          f"{job.elapsed:,.0f} s{left}")
    box.empty()
    st.session_state.pop("ws_watching", None)
    if isinstance(job.error, TrainingCancelled):
        st.info("Training was cancelled. Change a setting, or press Retry to train it again.")
        st.button("Retry")
        st.stop()
    if job.error is not None:
        st.error(f"Training failed: {md(job.error)}")
        st.stop()
    return job.run


def probability(p: float) -> str:
    """``p`` with three decimals, or in scientific notation when it would read 0.000."""
    return f"{p:.3f}" if p >= 0.0005 or p == 0 else f"{p:.1e}"


def show_run_status(run: Run) -> None:
    """An error when the run stopped early (divergence), with the reason; stops the page
    when not even one step survived, since there is nothing to show."""
    if run.diverged:
        st.error(run.stop_reason, icon=":material/error:")
        if run.iterations_done < 1:
            st.stop()
    elif run.learning_rate > run.stability_limit:  # NaN for L-BFGS: never true
        times = run.learning_rate / run.stability_limit
        st.warning(
            f"The learning rate {run.learning_rate:.4g} is {times:.3g}x the stability limit "
            f"2/L = {run.stability_limit:.4g}: gradient descent is no longer "
            "sure to go downhill, and the curves may jump or oscillate. \"auto\" uses 1/L = "
            f"{run.stability_limit / 2:.4g}.", icon=":material/warning:")


# -- drawing helpers shared by the pages ------------------------------------------


def weight_images(
    images: np.ndarray,
    *,
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    vmax: float | None = None,
    scale: int = 4,
    caption: str | None = None,
    legend: bool = True,
    file_name: str | None = None,
) -> float:
    """Show weight images (K, H, W) or (R, K, H, W) as one PNG on one symmetric scale.

    Returns the scale used, so a caller can put two grids on the same one. With
    ``file_name``, a button downloads the picture as PNG.
    """
    vmax = render.symmetric_limit(images) if vmax is None else vmax
    img = render.weight_grid(images, vmax=vmax, scale=scale,
                             col_labels=col_labels, row_labels=row_labels)
    show_png(img, caption=caption, file_name=file_name)
    if legend:
        show_png(render.colorbar(vmax),
                 caption="weight: purple negative, white zero, orange positive")
    return vmax


def show_png(img, caption: str | None = None, file_name: str | None = None) -> None:
    """A PIL image as PNG at its own pixel width: never upscaled (blurry), shrunk only
    if the column is narrower. With ``file_name``, a button downloads the same PNG.

    ``width="content"`` is what caps the width: an integer width lets a wide grid run off
    the right edge of the main column (seen in Chromium with Streamlit 1.67)."""
    png = render.to_png(img)
    st.image(png, caption=caption, output_format="PNG", width="content")
    if file_name:
        download("PNG", png, file_name, "image/png")


def download(label: str, data, file_name: str, mime: str) -> None:
    """A download button; ``data`` may be bytes or a function making them on click.

    Clicking does not rerun the page (``on_click="ignore"``).
    """
    st.download_button(label, data=data, file_name=file_name, mime=mime, on_click="ignore",
                       key=f"dl/{file_name}/{label}", icon=":material/download:")


def chart_grid(items: Sequence[tuple[object, str]]) -> None:
    """Charts (chart, file stem) two to a row where each gets ``CHART_MIN_WIDTH`` pixels,
    one to a row on a narrower window, each with its downloads."""
    grid = st.grid(2, min_column_width=CHART_MIN_WIDTH)
    for ch, file_stem in items:
        with grid.cell():
            chart(ch, file_stem)


def chart(ch, file_stem: str) -> None:
    """An Altair chart across its column, with PNG and SVG downloads made on click."""
    from core import charts
    st.altair_chart(ch, width="stretch")
    formats = charts.export_formats()
    if not formats:
        st.caption("Chart downloads need vl-convert-python (pip install vl-convert-python).")
        return
    makers = {"PNG": (lambda: charts.to_png(ch), "image/png"),
              "SVG": (lambda: charts.to_svg(ch), "image/svg+xml")}
    # A row of buttons at their natural width (equal columns cut "PNG" to "P…" when narrow).
    with st.container(horizontal=True, gap="small"):
        for fmt in formats:
            make, mime = makers[fmt]
            download(fmt, make, f"{file_stem}.{fmt.lower()}", mime)


def thumbnails(images: np.ndarray, labels: Sequence[str] | None = None, *,
               ncols: int = 10, scale: int = 3, caption: str | None = None,
               file_name: str | None = None) -> None:
    """Show uint8 grayscale images (m, H, W) as a captioned PNG grid."""
    if len(images) == 0:
        st.caption("No examples.")
        return
    img = render.thumbnail_grid(images, ncols=ncols, scale=scale, labels=labels)
    show_png(img, caption=caption, file_name=file_name)


def pick_scale(image_shape: tuple[int, int], target: int = 84) -> int:
    """Enlargement that makes a tile about ``target`` pixels wide (28 x 28 -> 3, 8 x 8 -> 10)."""
    return max(1, int(round(target / max(image_shape))))


def _run_key(run: Run) -> str:
    from core.runs import run_key
    return run_key(run.fingerprint, run.config)


@st.cache_data(max_entries=64, show_spinner=False)
def _trajectory(key: str, _run: Run, _ds: Dataset) -> dict[str, np.ndarray]:
    from core import metrics
    y = _ds.y_train[_run.train_indices]
    out = metrics.trajectory_metrics(_run, labels=y)
    x = _ds.x_train[_run.train_indices].reshape(len(_run.train_indices), -1) / 255.0
    templates = metrics.class_contrasts(x, y, _ds.n_classes)
    out["example_typicality"] = metrics.template_correlation(x, y, templates)
    out["typicality"] = metrics.gradient_typicality(_run, out["example_typicality"])
    return out


def trajectory(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """Per-snapshot metrics of ``run`` (see :func:`core.metrics.trajectory_metrics`) plus
    ``example_typicality`` (n,) and ``typicality`` (S,); computed once per run."""
    return _trajectory(_run_key(run), run, ds)


@st.cache_data(max_entries=16, show_spinner="Drawing the animation…")
def _evolution_gif(key: str, _run: Run, scale: int) -> bytes:
    frames = []
    names = list(_run.class_names)
    for t in _run.snapshot_iterations:
        if t < 1:
            continue
        frames.append(render.weight_grid(_run.weights(int(t)), scale=scale, col_labels=names,
                                         row_labels=[f"step {int(t):>6,}"]))
    return render.animated_gif(frames, duration_ms=120)


def evolution_gif(run: Run) -> bytes:
    """Animated GIF of all class images over every stored snapshot (cached per run)."""
    return _evolution_gif(_run_key(run), run, pick_scale(run.image_shape, 56))


def weight_rows(rows: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str], *,
                scale: int = 3, caption: str | None = None,
                extra: Sequence[tuple[str, np.ndarray]] = (),
                file_name: str | None = None) -> None:
    """Rows of class weight images (label, (K, H, W)), each row on its own symmetric scale.

    Weights grow over training, so one scale for all rows would leave the early
    rows blank; the row label states each row's scale (its largest |weight|).
    ``extra`` rows of uint8 grayscale images (label, (K, H, W)) are drawn in gray
    below, aligned with the weight images (class means, for example).
    """
    tiles, labels = [], []
    for label, w in rows:
        lim = render.symmetric_limit(w)
        tiles.append(render.diverging_rgb(np.asarray(w, dtype=np.float64), lim))
        labels.append(f"{label} (±{lim:.2g})")
    for label, images in extra:
        tiles.append(render.gray_rgb(images))
        labels.append(label)
    img = render.tile_grid(np.stack(tiles), scale=scale, col_labels=class_names,
                           row_labels=labels)
    show_png(img, caption=caption or "Each weight row on its own scale, ± its largest |weight| "
                                     "(in the row label): weights grow during training, so a "
                                     "shared scale would leave the early rows blank.",
             file_name=file_name)
    show_png(render.colorbar(1.0, tick_labels=("- row max", "0", "+ row max")))


@st.cache_data(max_entries=16, show_spinner=False)
def _first_step(key: str, _run: Run, _ds: Dataset) -> dict[str, np.ndarray]:
    from core import metrics
    x = _ds.x_train[_run.train_indices].reshape(len(_run.train_indices), -1) / 255.0
    y = _ds.y_train[_run.train_indices]
    K = _ds.n_classes
    unit_W, unit_b = metrics.first_step_closed_form(x, y, K, 1.0, _run.config.model)
    return {"unit_W": unit_W, "unit_b": unit_b, "counts": np.bincount(y, minlength=K),
            "means": metrics.class_means(x, y, K), "contrasts": metrics.class_contrasts(x, y, K)}


def first_step(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """Closed-form step-1 weights for a unit step (scale by the step size), class counts,
    class means and contrasts of the run's training images; computed once per run."""
    return _first_step(_run_key(run), run, ds)


def summary_maker(run: Run, ds: Dataset, page: Page):
    """A function making the one-page HTML summary of ``run`` on demand.

    Everything that needs the script's context (cached metrics, the view's link)
    is gathered now: the download button calls the function on another thread.
    """
    from core import report
    traj = trajectory(run, ds)
    link = view_url(page, dict(st.session_state.get(WRITTEN_KEY, {})))
    return lambda: report.summary_html(run, ds, traj, link=link)
