"""Play/Pause over a page's stored steps, and the page part that follows the step.

While paused, the part that shows the step is ordinary page code: moving the slider or
clicking a chart reruns the page, and the frame writes the address bar once. While
playing, the same part runs as a fragment that Streamlit reruns every
:data:`TICK_SECONDS`: each tick shows the next stored step, and nothing else on the page
(sidebar, explanation, the parts that do not depend on the step) is rerun or resent.
A fragment run does not reach the frame's close (app.py), so the address bar is left
alone while playing: no browser history entry per frame. Pause, the last step or a click
on a chart end playing with one full run, which writes the step shown to the URL (one
history entry, as any other change of step). The slider follows the play, disabled: a
timer request carries the browser's widget state, a tick behind, which would read as a
move of the slider.

Streamlit sends a fragment's timer with the full run that draws it and drops every timer
at the start of a full run that does not; so Play and Pause each take one full run.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import streamlit as st

from core.env import log

#: Seconds between two steps while playing. Two a second: time to see the ten pictures
#: change and read the step number; a run keeps 60-80 snapshots, so playing it through
#: takes 30-40 s. Measured on the project's 2 shared cores (2026-12-02): a presentation
#: tick takes the server about 50 ms, so it keeps that rate; a tick of the whole page (five
#: charts, two pictures, the examples) about 550 ms, so it plays at about 1.2 steps a
#: second. Ticks never pile up: Streamlit holds at most one waiting rerun of a fragment.
TICK_SECONDS = 0.5


def _key(page, name: str) -> str:
    return f"ws_play/{page.spec.name}/{name}"


def playing(page, name: str) -> bool:
    """Whether view value ``name`` of ``page`` is playing."""
    return bool(st.session_state.get(_key(page, name)))


def pause(page, name: str) -> None:
    """Stop playing ``name`` (before a click elsewhere chooses the step)."""
    st.session_state[_key(page, name)] = False


def _toggle(page, name: str, steps: Sequence[int]) -> None:
    ss = st.session_state
    key = _key(page, name)
    if playing(page, name):
        pause(page, name)
        if key + "/at" in ss:
            # The step the last tick showed: the slider's state that came with this click
            # may be a tick older (a tick's output can cross the click on its way).
            page.select(name, ss[key + "/at"], rerun=False)
    else:
        ss[key] = True
        if steps and ss.get(page.widget_key(name)) == steps[-1]:
            page.select(name, steps[0], rerun=False)  # Play at the end starts over
    ss[key + "/changed"] = True


def needs_full_run(page, name: str) -> None:
    """For the callback of another control in the part (Presentation, say): the next run
    is a full one, even while playing, since the control changes the whole page."""
    st.session_state[_key(page, name) + "/changed"] = True


def button(page, name: str, steps: Sequence[int], container=None) -> None:
    """The large Play / Pause button for view value ``name`` over ``steps``. While playing,
    the page draws the step's own control disabled (see :func:`playing`): it follows the
    play, and Pause hands it back."""
    on = playing(page, name)
    (container or st).button(
        "Pause" if on else "Play", key=_key(page, name) + "/button",
        icon=":material/pause:" if on else ":material/play_arrow:", type="primary",
        on_click=_toggle, args=(page, name, list(steps)),
        help=f"Step through the stored snapshots, {1 / TICK_SECONDS:g} a second; the "
             "pictures, numbers and charts follow. Pause keeps the step (and puts it in the "
             "link).")


def part(page, name: str, steps: Sequence[int], body: Callable[[], None]) -> None:
    """Draw ``body`` (the part of the page that shows step ``name``): inline while paused,
    as a fragment rerun every :data:`TICK_SECONDS` while playing, each tick moving
    ``name`` to the next of ``steps`` first. At the last step playing stops.

    A run the browser started (a link, Back, another page) pauses: a link shows its step.
    """
    ss = st.session_state
    key = _key(page, name)
    if page.from_browser:
        pause(page, name)
    ss.pop(key + "/changed", None)  # this full run carries the change
    ss.pop(key + "/at", None)  # the next tick starts from the step this run shows
    if not playing(page, name):
        if ticks := ss.pop(key + "/ticks", None):
            # One line per play, not per tick: the server's work per tick, for operators.
            log.info("played %s on %s: %d ticks, median %.0f ms, slowest %.0f ms a tick",
                     name, page.spec.name, len(ticks), 1000 * statistics.median(ticks),
                     1000 * max(ticks))
        body()
        return
    steps = list(steps)
    ss[key + "/full"] = True

    @st.fragment(run_every=TICK_SECONDS)
    def _playing():
        if ss.pop(key + "/full", False):
            body()  # the full run that started (or kept) playing draws the step as chosen
            return
        started = time.perf_counter()
        # A tick, or a click inside the part: never a link, whatever the last full run was.
        page.from_browser = False
        if ss.pop(key + "/changed", False) or not playing(page, name):
            st.rerun()  # Pause, Presentation: the whole page and the URL follow
        # From the step the last tick showed, not from the slider's state: timer requests
        # carry the browser's widget state, which lags a tick while one is on its way.
        shown = ss.get(key + "/at", ss.get(page.widget_key(name)))
        later = [s for s in steps if shown is None or s > shown]
        if len(later) <= 1:  # the last step: show it, paused, with the URL written
            pause(page, name)
            page.select(name, steps[-1])
        page.select(name, later[0], rerun=False)
        ss[key + "/at"] = later[0]
        body()
        ss.setdefault(key + "/ticks", []).append(time.perf_counter() - started)

    _playing()
