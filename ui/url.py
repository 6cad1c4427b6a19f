"""The address bar: read once at the start of a run, written once at its end.

Streamlit 1.67's frontend adds a browser history entry each time a run changes the
query string (and replaces the entry instead while it replays a Back or Forward). So the
frame writes the URL exactly once per run, after the page has chosen its view: one
action, one history entry, and one Back undoes it. A run whose URL differs from the one
this session last wrote was started by the browser (a link, Back, Forward, an edited
address): its URL wins over the widgets' state.

Streamlit 1.67's ``bind="query-params"`` was tried for this and not taken: a bound widget
drops a malformed URL value without a word (the app says which value of a link it
ignored and why), leaves values at their default out of the URL (a link would then depend
on the defaults of the version that opens it), and cannot be set through
``st.query_params``, so the settings of a preset or a page link could not be handed over.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import streamlit as st

WRITTEN_KEY = "ws_written"  # (page, params) of the last URL this session wrote


def current() -> dict[str, str]:
    """The query parameters of this run, one value each (the last of repeated ones)."""
    return {k: st.query_params.get(k) for k in st.query_params.keys()}


def from_browser(page: str, params: dict[str, str]) -> bool:
    """Whether this run's URL came from the browser rather than from this session's
    last write: a deep link, Back or Forward, a page link, or an edited address."""
    return st.session_state.get(WRITTEN_KEY) != (page, params)


def write(page: str, params: dict[str, str]) -> None:
    """Show ``params`` in the address bar (a no-op when it shows them already)."""
    if current() != params:
        st.query_params.from_dict(params)
    st.session_state[WRITTEN_KEY] = (page, dict(params))


def view_url(page: str, params: dict[str, str], page_paths) -> str:
    """Absolute URL of ``page`` (its URL path; "" is home) with ``params``, relative when
    the browser's address is unknown (tests, scripts). ``page_paths``: every page's path."""
    try:
        here = st.context.url or ""
    except Exception:  # noqa: BLE001 - no browser context
        here = ""
    return absolute_url(here, page, params, page_paths)


def absolute_url(here: str, page: str, params: dict[str, str], page_paths) -> str:
    """The URL of ``page`` with ``params`` on the server the browser address ``here`` is
    on, keeping a ``server.baseUrlPath`` prefix; "./page?..." when ``here`` is not an
    absolute URL. ``page_paths`` are the app's page paths (to tell a page from a prefix)."""
    parts = urlsplit(here)
    query = urlencode(params)
    if not (parts.scheme and parts.netloc):
        return f"./{page}?{query}"
    # The browser's path is <prefix>/<page>, or <prefix>/ on the home page.
    prefix = parts.path.rstrip("/")
    current_page = prefix.rsplit("/", 1)[-1]
    if current_page and current_page in page_paths:
        prefix = prefix[: -len(current_page) - 1]
    return f"{parts.scheme}://{parts.netloc}{prefix}/{page}?{query}"
