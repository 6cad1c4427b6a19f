"""Drawing helpers shared by the pages: weight images, thumbnails, charts, downloads.

Functions here draw; they compute nothing a page needs beyond the colour scale they chose
(the numbers come from :mod:`core` and :mod:`ui.cached`).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import streamlit as st

from core import render

#: Narrowest a chart gets beside another (st.grid cell): below it, charts stack, so a
#: plot keeps room for its axes and its legend (drawn inside it) on a narrow window.
CHART_MIN_WIDTH = 440

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_AUTOLINK = re.compile(r"(?i)://|www\.|@.")


def md(text) -> str:
    """``text`` as literal text inside st.markdown, st.error and friends: the one escaping
    rule for everything a viewer did not write themselves (URL values, file, member, class
    and data-set names). Every Markdown and HTML character is escaped, and line breaks and
    other control characters become one space: a value must not start a line of its own,
    where "===" under it would make a heading. Web and mail addresses are broken with an
    invisible word joiner so that they are not made links. Never put the result inside
    backticks (a code span shows the backslashes, and a backtick in the value closes it)."""
    text = _LINE_BREAKS.sub(" ", str(text))
    # GFM turns "https://x", "www.x" and "a@b.c" into links even when their characters
    # are escaped; an invisible word joiner in each breaks the pattern, not the reading.
    text = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + "\u2060" + m.group(0)[-1], text)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def theme() -> str:
    """The page's theme, "dark" or "light", for pictures drawn to match it (labels in the
    page's text colour on its background, :data:`core.render.INK`).

    Read from ``st.context.theme``, which the browser sends with every run: a theme
    chosen in the menu (System / Light / Dark) reaches the pictures at the page's next
    run. Until then they keep their own background, so their text still reads. Light
    when the browser did not say (AppTest, a first run without it)."""
    return "dark" if st.context.theme.type == "dark" else "light"


def probability(p: float) -> str:
    """``p`` with three decimals, or in scientific notation when it would read 0.000."""
    return f"{p:.3f}" if p >= 0.0005 or p == 0 else f"{p:.1e}"


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
    img = render.weight_grid(images, vmax=vmax, scale=scale, col_labels=col_labels,
                             row_labels=row_labels, theme=theme())
    show_png(img, caption=caption, file_name=file_name, fill=True)
    if legend:
        clipped = render.clipped_share(images, vmax)
        # The image's own caption stays short: a long one stretches the bar to its width.
        show_png(render.colorbar(vmax, clipped=clipped > 0, theme=theme()),
                 caption="weight: purple negative, white zero, orange positive")
        if clipped:
            st.caption(f"The colour scale ends at the {render.SCALE_PERCENTILE:g}th percentile "
                       f"of |weight|; the {clipped:.1%} of weights beyond it are drawn in the "
                       "end colours.")
    return vmax


#: Weight grids at least this many pixels wide fill the column: on a projector a grid
#: of ten classes should span the screen, not stay 900 px wide in a 1,920 px window.
FILL_MIN_WIDTH = 500

#: Every picture is scaled by the browser with nearest-neighbour sampling: the pixels of
#: a 28 x 28 weight image stay sharp squares at any column width (st.html with only a
#: style tag takes no room on the page). Captions are faded less than Streamlit's 60 %
#: opacity, which leaves them at 3.9:1 on the light theme's white; at 72 % they reach
#: 5:1 there and 8:1 on the dark theme (WCAG asks 4.5:1 of text this size). A slider's
#: value is written in the text colour, not the accent red (3.9:1 on the dark theme).
PIXELATED_CSS = ("<style>[data-testid='stImage'] img, [data-testid='stFullScreenFrame'] img "
                 "{ image-rendering: pixelated; } "
                 "[data-testid='stCaptionContainer'] { opacity: 0.72; } "
                 "[data-testid='stSliderThumbValue'] { color: inherit; }</style>")


def pixelated() -> None:
    """Switch the page's pictures to nearest-neighbour scaling (once per script run)."""
    st.html(PIXELATED_CSS)


def show_png(img, caption: str | None = None, file_name: str | None = None,
             fill: bool = False) -> None:
    """A PIL image as PNG. By default at its own pixel width, shrunk only if the column is
    narrower; with ``fill`` (wide weight grids) across the column, enlarged by the
    browser without blur (:data:`PIXELATED_CSS`). With ``file_name``, a button downloads
    the same PNG.

    ``width="content"`` is what caps the width: an integer width lets a wide grid run off
    the right edge of the main column (seen in Chromium with Streamlit 1.67)."""
    png = render.to_png(img)
    st.image(png, caption=caption, output_format="PNG",
             width="stretch" if fill and img.width >= FILL_MIN_WIDTH else "content")
    if file_name:
        download("PNG", png, file_name, "image/png")


def download(label: str, data, file_name: str, mime: str) -> None:
    """A download button; ``data`` may be bytes or a function making them on click.

    Clicking does not rerun the page (``on_click="ignore"``).
    """
    st.download_button(label, data=data, file_name=file_name, mime=mime, on_click="ignore",
                       key=f"dl/{file_name}/{label}", icon=":material/download:")


def chart_grid(items: Sequence[tuple[object, str]], *, pickable: bool = False) -> int | None:
    """Charts (chart, file stem) two to a row where each gets ``CHART_MIN_WIDTH`` pixels,
    one to a row on a narrower window, each with its downloads. With ``pickable``, the
    iteration a viewer just clicked on any of them (see :func:`chart`), else None."""
    grid = st.grid(2, min_column_width=CHART_MIN_WIDTH)
    picked = None
    for ch, file_stem in items:
        with grid.cell():
            got = chart(ch, file_stem, pickable=pickable)
            picked = got if got is not None else picked
    return picked


def chart(ch, file_stem: str, *, pickable: bool = False) -> int | None:
    """An Altair chart across its column, with PNG and SVG downloads made on click.

    With ``pickable`` (a chart made with ``charts.curves(pickable=True)``), a click on
    the chart reruns the page and this returns the iteration clicked, once: the chart
    keeps its selection, and a later run must not take it for a new click.
    """
    from core import charts
    picked = None
    if pickable:
        key = f"ws_pick/{file_stem}"
        event = st.altair_chart(ch, width="stretch", on_select="rerun",
                                selection_mode=charts.PICK, key=key)
        points = (event.selection.get(charts.PICK) or []) if event else []
        value = points[0].get("iteration") if points else None
        if value is not None and st.session_state.get(key + "/seen") != value:
            picked = int(value)
        st.session_state[key + "/seen"] = value
    else:
        st.altair_chart(ch, width="stretch")
    formats = charts.export_formats()
    if not formats:
        st.caption("Chart downloads need vl-convert-python (pip install vl-convert-python).")
        return picked
    makers = {"PNG": (lambda: charts.to_png(ch), "image/png"),
              "SVG": (lambda: charts.to_svg(ch), "image/svg+xml")}
    # A row of buttons at their natural width (equal columns cut "PNG" to "P…" when narrow).
    with st.container(horizontal=True, gap="small"):
        for fmt in formats:
            make, mime = makers[fmt]
            download(fmt, make, f"{file_stem}.{fmt.lower()}", mime)
    return picked


def thumbnails(images: np.ndarray, labels: Sequence[str] | None = None, *,
               ncols: int = 10, scale: int = 3, caption: str | None = None,
               file_name: str | None = None) -> None:
    """Show uint8 grayscale images (m, H, W) as a captioned PNG grid."""
    if len(images) == 0:
        st.caption("No examples.")
        return
    img = render.thumbnail_grid(images, ncols=ncols, scale=scale, labels=labels, theme=theme())
    show_png(img, caption=caption, file_name=file_name)


def pick_scale(image_shape: tuple[int, int], target: int = 112) -> int:
    """Enlargement that makes a tile about ``target`` pixels wide (28 x 28 -> 4, 8 x 8 -> 14)."""
    return max(1, int(round(target / max(image_shape))))


def weight_rows(rows: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str], *,
                scale: int = 3, caption: str | None = None,
                extra: Sequence[tuple[str, np.ndarray]] = (),
                file_name: str | None = None) -> None:
    """Rows of class weight images (label, (K, H, W)), each row on its own symmetric scale.

    Weights grow over training, so one scale for all rows would leave the early
    rows blank; the row label states each row's scale (the
    :data:`~core.render.SCALE_PERCENTILE` percentile of its |weight|; beyond it, the end
    colours).
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
                           row_labels=labels, theme=theme())
    show_png(img, caption=caption or "Each weight row on its own scale, ± the value in its "
                                     "label: weights grow during training, so a shared scale "
                                     "would leave the early rows blank.",
             file_name=file_name, fill=True)
    clipped = any(render.clipped_share(w, render.symmetric_limit(w)) > 0 for _, w in rows)
    show_png(render.colorbar(1.0, tick_labels=("- row scale", "0", "+ row scale"),
                             clipped=clipped, theme=theme()))
    if clipped:
        st.caption(f"Each row's scale is the {render.SCALE_PERCENTILE:g}th percentile of its "
                   "|weight|; the few weights beyond it are drawn in the end colours.")


def background(task, what: str, expect: str = "", part=None):
    """The result of a background ``task`` (:mod:`core.tasks`) when it is ready, else None.

    While it runs, a line says what is being computed and how far it is, refreshed every
    second by a fragment (the rest of the page stays as it is); when the task finishes,
    the whole page reruns once to draw the result. A failed task is shown as an error.
    With ``part``, the page needs only ``task.partial[part]``: it is returned (and the
    page rerun) as soon as the task has published it.
    """
    if part is not None and part in task.partial:
        return task.partial[part]
    if task.finished and not task.dropped:  # a dropped task is asked for again below
        if task.error:
            st.error(f"Could not compute {what}: {md(task.error)}", icon=":material/error:")
            return None
        return task.result if part is None else task.result.get(part)

    @st.fragment(run_every=1.0)
    def _poll():
        task.touch()  # this tab still waits; a closed tab stops asking, and the task drops
        if task.finished or (part is not None and part in task.partial):
            st.rerun()
        done = f"{task.done} of {task.total}, " if task.total else ""
        st.info(f"Computing {what} in the background ({done}{task.elapsed:.0f} s so far"
                f"{'; ' + expect if expect else ''}). The rest of the page is ready; this part "
                "appears when it is done.", icon=":material/hourglass_top:")

    _poll()
    return None


#: The presentation view: no sidebar or top bar, the main column across the window, and
#: the picture as large as fits below the controls (its width follows from its height
#: on a screen wider than the grid's shape). Pixels stay sharp (:data:`PIXELATED_CSS`).
PRESENTATION_CSS = """<style>
[data-testid='stSidebar'], [data-testid='stExpandSidebarButton'],
[data-testid='stHeader'] { display: none !important; }
[data-testid='stMainBlockContainer'] { padding: 0.75rem 1.5rem 0 !important;
  max-width: none !important; }
[data-testid='stMain'] h1 { font-size: 3.25rem; padding: 0; white-space: nowrap; }
</style>"""

#: Room the presentation view keeps above and below the picture (controls, colour key).
PRESENTATION_CHROME_PX = 170


def presentation_grid(images: np.ndarray, class_names: Sequence[str],
                      image_shape: tuple[int, int]) -> None:
    """The presentation view's picture: the class weight images (K, H, W) as large as the
    window allows (:data:`PRESENTATION_CSS`), in the rows of
    :func:`~core.render.presentation_columns`, on one symmetric scale, with the colour
    key in one line below."""
    st.html(PRESENTATION_CSS)
    vmax = render.symmetric_limit(images)
    img = render.wrapped_weight_grid(
        images, ncols=render.presentation_columns(len(images)), vmax=vmax,
        scale=pick_scale(image_shape, 224), labels=class_names, theme=theme())
    # As wide as the column, or as wide as the window's height below the controls allows
    # at the picture's aspect ratio, whichever is less: the whole grid stays in view.
    # (The picture's boxes take the column's width; they would shrink to the picture.)
    st.html("<style>[data-testid='stMain'] [data-testid='stFullScreenFrame'] "
            "div:has(> [data-testid='stImage']), [data-testid='stMain'] "
            ":is([data-testid='stImage'], [data-testid='stImageContainer']) { width: 100%; } "
            "[data-testid='stMain'] [data-testid='stImage'] img { width: min(100%, "
            f"calc((100vh - {PRESENTATION_CHROME_PX}px) * {img.width / img.height:.4f})) "
            "!important; height: auto; margin: 0 auto; }</style>")
    st.image(render.to_png(img), output_format="PNG", width="stretch")
    clipped = render.clipped_share(images, vmax)
    st.caption(f"Purple negative, white zero, orange positive; the scale ends at ±{vmax:.2g}"
               + (f" ({clipped:.1%} of the weights beyond it)." if clipped else "."))
