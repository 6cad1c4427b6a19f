"""The frame every page runs in: app.py opens it, runs the page, and closes it.

Opening works out the settings (from a link when the browser brought one, else from the
session), the data set, and draws the shared sidebar; the page then asks the frame for
its run (:meth:`Frame.run`) and draws its view controls through :meth:`Frame.choice`;
closing writes the address bar once and refreshes the page links. A page never reads
the URL or the sidebar itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from core.settings import Settings, from_params, has_settings, to_params
from core.config import TrainConfig, format_number
from core.data import Dataset
from core.run import Run, nearest_iteration
from ui import draw, sidebar, url
from ui.draw import md
from ui.resources import available_datasets, dataset, why_unavailable
# PageStopped and stop are the frame's to offer: app.py catches one, pages call the other.
from ui.training import PageStopped, get_run, show_run_status, stop  # noqa: F401
from ui.uploads import take_upload, upload_messages, upload_ui

SETTINGS_KEY = "ws_settings"  # the last good settings of this session
NAV_KEY = "ws_nav"  # the parameters the drawn page links carry, by page path
FRAME_KEY = "ws_frame"  # the open frame, for the page script of this run


@dataclass(frozen=True)
class PageSpec:
    file: str
    title: str
    path: str  # URL path: "" is home; the others keep the first version's links
    icon: str
    views: tuple[str, ...] = ()  # URL parameters of the page's own view (step, class, ...)
    #: Key prefixes of further full sets of settings the page draws itself (two runs side
    #: by side: "b." keeps the second set's URL keys apart, b.n, b.T, ...).
    more_settings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The page's name in widget keys and file names."""
        return self.path or "Home"

    @property
    def heading(self) -> str:
        """The page's title as its st.title shows it (home: the app's name)."""
        return self.title if self.path else "Weightscope"


PAGES = (
    PageSpec("views/home.py", "Home", "", ":material/home:"),
    PageSpec("views/first_step.py", "First step", "First_step", ":material/looks_one:",
             ("cls",)),
    PageSpec("views/trajectory.py", "Trajectory", "Trajectory", ":material/timeline:",
             ("t", "present")),
    PageSpec("views/overfitting.py", "Overfitting and regularization", "Overfitting",
             ":material/blur_on:", ("show", "from")),
    PageSpec("views/hardest_examples.py", "Hardest examples", "Hardest_examples",
             ":material/psychology_alt:", ("t", "split", "cls", "order", "ex")),
    PageSpec("views/spectrum.py", "Why the noise", "Spectrum", ":material/equalizer:",
             ("t", "k")),
    PageSpec("views/limit.py", "Where it heads", "Limit", ":material/trending_flat:", ("t",)),
    PageSpec("views/compare.py", "Compare two settings", "Compare", ":material/compare:",
             ("t",), more_settings=("b.",)),
)
BY_PATH = {p.path: p for p in PAGES}
PAGE_PATHS = {p.path for p in PAGES if p.path}


def navigation():
    """``st.navigation`` over :data:`PAGES`, its own menu hidden: the frame draws the page
    links itself so that each carries the current settings (a middle-click opens the same
    run in a new tab). The pages get no icon here: Streamlit would make a Material icon
    the tab's favicon, fetched from fonts.gstatic.com (the page links draw the icons from
    the bundled font instead, and the favicon is set_page_config's)."""
    pages = {p.path: st.Page(p.file, title=p.title, default=not p.path,
                             **({"url_path": p.path} if p.path else {})) for p in PAGES}
    st.session_state["ws_pages"] = pages
    return st.navigation(list(pages.values()), position="hidden")


def page_object(path: str):
    """The ``st.Page`` of URL path ``path``, for st.page_link."""
    return st.session_state["ws_pages"][path]


def _nearest(value, options: list, default):
    """The option closest to ``value`` (on a log scale for step numbers), else ``default``."""
    if isinstance(value, (int, np.integer)) and options and all(
            isinstance(c, (int, np.integer)) for c in options):
        return type(options[0])(nearest_iteration(value, options))
    return default


@dataclass
class Frame:
    """What a page works with: the data, the settings, and its view in the URL."""

    spec: PageSpec
    ds: Dataset
    settings: Settings
    from_browser: bool  # this run's URL came from the browser (link, Back, edited address)
    url_params: dict[str, str]
    nav_box: Any
    link_box: Any
    #: This page's view as URL text: the values its controls chose that differ from their
    #: defaults, and a link's values for controls not drawn yet. Remembered across runs,
    #: so a control that a stopped run did not draw comes back where it was.
    view: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)  # of the controls drawn this run

    @property
    def config(self) -> TrainConfig:
        return self.settings.config()

    def run(self, config: TrainConfig | None = None, *, label: str = "",
            ds: Dataset | None = None, upload: bool | None = None) -> Run:
        """The finished run for ``config`` (default: the sidebar's), training it if needed,
        on ``ds`` (default: the sidebar's data; ``upload``: whether ``ds`` is the session's
        upload, whose runs stay off the disk).

        Stops the page with a message when the run cannot be had.
        """
        if ds is None:
            ds, upload = self.ds, self.settings.dataset == "upload"
        run = get_run(ds, config or self.config, label=label, persist=not upload)
        show_run_status(run)
        return run

    def choice(self, widget: Callable, label: str, name: str, default, options: Sequence, *,
               cast: Callable = int, **kwargs):
        """Draw choice ``widget`` (``st.select_slider``, ``st.radio`` or ``st.selectbox``,
        on any container) for view value ``name`` (its URL parameter); return the choice.
        With ``widget`` None nothing is drawn: the page draws its own control for the
        value (a button, say) that sets ``st.session_state[self.widget_key(name)]``; such a
        value (a mode, like presentation) is in a copied link only when it is not its
        default, since a link without it opens the default in every version.

        The value is put into the widget's state before it is drawn, so the control always
        shows what the page uses: the link's value when the browser brought a URL (a
        malformed one is ignored with a notice), else the viewer's last choice (the nearest
        option when the options changed, another run say), else ``default``.
        """
        options = list(options)
        key = self.widget_key(name)
        ss = st.session_state
        picked = ss.pop(f"ws_pick/{self.spec.name}/{name}", None)  # see select()
        if picked is not None:
            value = picked
        elif self.from_browser:
            value = self._from_link(name, default, options, cast)
        else:
            value = ss.get(key, None)
            if value is None:
                value = self._from_text(self.view.get(name), default, options, cast)
        if value not in options:
            value = _nearest(value, options, default)
        ss[key] = value
        chosen = value if widget is None else widget(label, options, key=key, **kwargs)
        text, default_text = _text(chosen), _text(default)
        if widget is not None:
            self.defaults[name] = default_text
        if text == default_text:
            self.view.pop(name, None)
        else:
            self.view[name] = text
        return chosen

    def widget_key(self, name: str) -> str:
        """The session-state key holding view value ``name`` as its control shows it."""
        return f"ws_v/{self.spec.name}/{name}"

    def select(self, name: str, value, *, rerun: bool = True) -> None:
        """Make ``value`` the choice of view control ``name`` (a click on a chart, say) and
        rerun: the control was drawn already this run, and a widget's state cannot change
        after it is drawn, so the next run's :meth:`choice` takes it (the nearest option).
        Without ``rerun``, the next :meth:`choice` of ``name`` takes it (a Play tick sets
        the step before the fragment draws its slider)."""
        st.session_state[f"ws_pick/{self.spec.name}/{name}"] = value
        if rerun:
            st.rerun()

    def _from_link(self, name: str, default, options: list, cast):
        raw = self.url_params.get(name)
        if raw is None:
            return default
        value = self._from_text(raw, None, options, cast)
        if value is None:
            st.warning(f"Ignored {name}={md(repr(raw[:40]))} in the link; using "
                       f"{md(_text(default))}.", icon=":material/warning:")
            return default
        return value

    @staticmethod
    def _from_text(raw: str | None, default, options: list, cast):
        if raw is None:
            return default
        try:
            value = cast(raw)
        except (ValueError, TypeError, OverflowError):
            return default
        return value if value in options else default

    def more_settings(self, prefix: str, default: Settings, container) -> tuple[Settings, Dataset]:
        """Draw a further full set of settings in ``container`` (a page showing two runs
        side by side); return the valid settings and their data set.

        The set lives in the URL under ``prefix`` (one of the page's
        :attr:`PageSpec.more_settings`) with this page's view: taken from a link when the
        browser brought one that carries it (a malformed value is ignored with the same
        notice as the sidebar's), else the session's last, else ``default``. Steps x
        images over the work cap are returned as asked, with a message beside the control,
        for the page to refuse that run.
        """
        if prefix not in self.spec.more_settings:
            raise ValueError(f"{self.spec.path or 'Home'} declares no settings {prefix!r}")
        ss = st.session_state
        home = f"{SETTINGS_KEY}/{self.spec.name}/{prefix}"
        settings = ss.get(home, default)
        if self.from_browser:
            notices: list[str] = []
            if has_settings(self.url_params, prefix):
                # The version notice, if any, was given for the sidebar's settings already.
                params = {k: v for k, v in self.url_params.items() if k != "v"}
                settings, notices = from_params(params, default, prefix=prefix)
            for notice in notices:
                st.warning(md(notice), icon=":material/warning:")
            sidebar.seed(settings, force=True, prefix=prefix)
        else:
            sidebar.seed(settings, force=False, prefix=prefix)
        settings, ds = sidebar.draw(settings, available_datasets(), container=container,
                                    prefix=prefix, refuse_over_cap=True)
        ss[home] = settings
        self.view.update({k: v for k, v in to_params(settings, ds.fingerprint, prefix).items()
                          if k.startswith(prefix)})
        return settings, ds

    def params(self, *, complete: bool = False) -> dict[str, str]:
        """URL parameters of this view: the settings and the view values that differ from
        their defaults (``complete``: every view value drawn, defaults included)."""
        out = to_params(self.settings, self.ds.fingerprint)
        if complete:
            out.update(self.defaults)
        out.update(self.view)
        return out

    def link_params(self, path: str) -> dict[str, str]:
        """URL parameters of a link to page ``path``: these settings, and that page's last
        view in this session when it was chosen with these settings (so the link opens the
        page as the viewer left it, and never with a step another run does not have)."""
        if path == self.spec.path:
            return self.params()
        here = to_params(self.settings, self.ds.fingerprint)
        chosen_with, view = _remembered(BY_PATH[path])
        return {**here, **view} if chosen_with == here else here

    def link(self) -> str:
        """The absolute URL of this view as drawn so far (view defaults included)."""
        return url.view_url(self.spec.path, self.params(complete=True), PAGE_PATHS)


def _text(value) -> str:
    return value if isinstance(value, str) else format_number(value)


def _remembered(spec: PageSpec) -> tuple[dict[str, str], dict[str, str]]:
    """The settings' URL parameters and the view this session last showed on ``spec``."""
    return st.session_state.get(f"ws_view/{spec.name}", ({}, {}))


def current() -> Frame:
    """The frame of this run (opened by app.py before the page script runs)."""
    return st.session_state[FRAME_KEY]


def open_frame(nav) -> Frame:
    """Work out settings and data, draw the sidebar; stop with a message when a link asks
    for data this session cannot show."""
    ss = st.session_state
    spec = BY_PATH.get(nav.url_path, PAGES[0])
    st.set_page_config(page_title=f"{spec.heading} · Weightscope", page_icon="🧥",
                       layout="wide")
    draw.pixelated()
    # Drawn at once with the links of the last run, redrawn on close only if they changed:
    # a rerun then never shows an empty navigation while the settings are worked out.
    nav_box = st.sidebar.empty()
    _draw_nav(nav_box, ss.get(NAV_KEY, {}))
    params = url.current()
    browser = url.from_browser(spec.path, params)
    settings = ss.get(SETTINGS_KEY, Settings())
    uploaded = take_upload(settings)
    notices: list[str] = []
    if uploaded is not None and not (browser and params.get("ds") == "upload"):
        settings, browser = uploaded, False
        sidebar.seed(settings, force=True)
    elif browser and has_settings(params):
        # A deep link, Back or Forward, or an edited address: the URL wins over the session
        # (also when files were just uploaded to answer a link to uploaded data).
        settings, notices = from_params(params, Settings())
        sidebar.seed(settings, force=True)
    else:
        sidebar.seed(settings, force=False)
    # A link's view values stay as they are until the page draws their controls (it may
    # stop before, on a diverged run say); the session's are its last choices.
    view = {k: v for k, v in params.items() if k in spec.views
            or k.startswith(spec.more_settings)} if browser else dict(_remembered(spec)[1])
    for notice in notices:
        st.warning(md(notice), icon=":material/warning:")

    choices = available_datasets()
    if settings.dataset not in choices:
        if settings.dataset == "upload":
            st.title(spec.heading)
            st.warning(
                "This link shows data that was uploaded in another browser session; uploads "
                "stay private to the session that made them. Upload the same files here to "
                "see this view.", icon=":material/lock:")
            upload_ui()
            upload_messages()
            st.stop()
        # The data in use stays (this session's last, else the first on offer).
        last = ss.get(SETTINGS_KEY, Settings()).dataset
        kept = last if last in choices else next(iter(choices))
        if browser and "ds" in params:
            st.warning(f"This link asks for data that cannot be shown here: "
                       f"{md(why_unavailable(settings.dataset))}. Showing {md(choices[kept])} "
                       "instead.", icon=":material/warning:")
        settings = settings.replace(dataset=kept)
        ss[sidebar.widget_key("dataset")] = settings.dataset
    ds = dataset(settings.dataset)
    mismatch = (params.get("data"), ds.fingerprint[:8])
    if browser and "data" in params and mismatch[0] != mismatch[1] \
            and ss.get("ws_accept_data") != mismatch:
        st.title(spec.heading)
        st.error(
            f"This link was made on data with fingerprint {md(params['data'][:40])}, but "
            f"{md(choices[settings.dataset])} here has fingerprint `{ds.fingerprint[:8]}`: "
            "its numbers would not match what the link shows. Get the same data, or "
            "continue with the data available here.")
        if st.button("Continue with the data here"):
            ss["ws_accept_data"] = mismatch  # this link's data and this data, no other
            st.rerun()
        st.stop()
    settings, ds = sidebar.draw(settings, choices)
    ss[SETTINGS_KEY] = settings
    link_box = st.sidebar.expander("Copy link to this view", icon=":material/link:").empty()
    frame = Frame(spec=spec, ds=ds, settings=settings, from_browser=browser, url_params=params,
                  nav_box=nav_box, link_box=link_box, view=view)
    ss[FRAME_KEY] = frame
    if ds.is_fallback or ds.name == "digits":
        # Where Fashion-MNIST is missing, its stand-in's source says why and how to get it.
        fashion = dataset("fashion-mnist")
        why = fashion.source if fashion.is_fallback else ds.source
        st.info(f"Showing the bundled 8 x 8 digits, not Fashion-MNIST. {md(why)}",
                icon=":material/info:")
    return frame


def close_frame(frame: Frame) -> None:
    """After the page (also when it stopped early): write the URL once, fill the copy-link
    box, and refresh the page links when the settings or a view changed."""
    ss = st.session_state
    spec = frame.spec
    ss[f"ws_view/{spec.name}"] = (to_params(frame.settings, frame.ds.fingerprint),
                                  dict(frame.view))
    url.write(spec.path, frame.params())
    with frame.link_box.container():
        st.caption("Link to this view (settings, step, class, example); the copy icon "
                   "puts it on the clipboard.")
        st.code(frame.link(), language=None, wrap_lines=True)
    links = {p.path: frame.link_params(p.path) for p in PAGES}
    if links != ss.get(NAV_KEY):
        ss[NAV_KEY] = links
        _draw_nav(frame.nav_box, links)


def _draw_nav(box, links: dict[str, dict[str, str]]) -> None:
    """Links to every page, each carrying the current settings and that page's last view
    (``links``, by page path; pages missing there link without parameters)."""
    with box.container():
        for p in PAGES:
            st.page_link(page_object(p.path), label=p.title, icon=p.icon,
                         query_params=links.get(p.path))
        st.divider()
