"""Altair charts built from runs: curves against iteration on a log axis.

Every chart has axis titles with units, tooltips on its points, and an optional
vertical rule at the iteration selected on the page. Iteration 0 (zero
weights) cannot sit on a log axis and is left out of every chart.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.run import Run

#: Okabe-Ito colours: distinguishable with the common colour-vision deficiencies. Its black
#: is a mid grey here: a black line vanishes on the dark theme's page (grey: 3.5:1 on white,
#: 5:1 on the dark background).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#888888"]


def log_grid(iterations: int, points: int = 300) -> np.ndarray:
    """About ``points`` log-spaced integer iterations in [1, T], always with T."""
    if iterations < 1:
        return np.zeros(0, dtype=np.int64)
    grid = np.unique(np.round(np.logspace(0, np.log10(iterations), points)).astype(np.int64))
    return np.union1d(grid, [iterations])


def log_ticks(lo: float, hi: float) -> list[float]:
    """The 1-2-5 sequence (..., 0.1, 0.2, 0.5, 1, 2, 5, 10, ...) within [lo, hi]: regular
    ticks for a log axis (Vega-Lite's own pick gave 1, 3, 20, 100, 300, 2k). Whole
    numbers from 1 up are ints."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= 0:
        return []
    lo = max(lo, hi * 1e-12)
    out, exp = [], int(np.floor(np.log10(lo)))
    while 10.0 ** exp <= hi:
        for m in (1, 2, 5):
            v = m * 10 ** exp if exp >= 0 else float(f"{m}e{exp}")
            if lo <= v <= hi:
                out.append(v)
        exp += 1
    return out


#: On a log axis spanning more than two decades only the powers of ten are labelled
#: (2 and 5 keep their ticks): fourteen labels do not fit a chart half a window wide.
_DECADE_LABELS = ("datum.value == pow(10, round(log(datum.value) / LN10)) "
                  "? datum.label : ''")


def log_axis(lo: float, hi: float, title: str, fmt: str = "~s") -> alt.Axis:
    """A log axis from ``lo`` to ``hi`` with 1-2-5 ticks, labelled as "2k", "10k" (``fmt``
    "~g" for values: 0.002, not 2m)."""
    ticks = log_ticks(lo, hi)
    wide = hi / max(lo, 1e-300) > 100
    return alt.Axis(values=ticks, format=fmt, title=title,
                    labelExpr=_DECADE_LABELS if wide else "datum.label")


def _value_axis(values, title: str, log_y: bool) -> alt.Y:
    """The value axis: a log scale with 1-2-5 ticks, or a linear one that need not
    include zero."""
    if not log_y:
        return alt.Y("value:Q", title=title, scale=alt.Scale(zero=False))
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    axis = log_axis(float(v.min()), float(v.max()), title, fmt="~g") if len(v) else alt.Axis()
    return alt.Y("value:Q", title=title, scale=alt.Scale(type="log"), axis=axis)


#: Name of the click selection of a pickable chart (see :func:`curves`).
PICK = "pick"

#: The legend's corners, in the order tried when two are equally empty.
CORNERS = ("top-right", "bottom-right", "top-left", "bottom-left")


def legend_corner(x: np.ndarray, y: np.ndarray, *, log_x: bool = False, log_y: bool = False,
                  size: tuple[float, float] = (0.42, 0.3)) -> str:
    """The corner of the plot where a legend covers the fewest data points.

    ``x`` and ``y`` are the points drawn; ``size`` is the legend's share of the plot's
    width and height. Inside the plot a legend costs no width, where one on the right
    took a third of a chart half a window wide (and one below, in Streamlit 1.67,
    shrank the plot to a sliver).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if log_x:
        ok &= x > 0
    if log_y:
        ok &= y > 0
    if not ok.any():
        return CORNERS[0]
    x, y = x[ok], y[ok]
    if log_x:
        x = np.log(x)
    if log_y:
        y = np.log(y)

    def unit(v):
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.full_like(v, 0.5)

    u, v = unit(x), unit(y)
    w, h = size
    covered = {
        "top-right": (u >= 1 - w) & (v >= 1 - h), "bottom-right": (u >= 1 - w) & (v <= h),
        "top-left": (u <= w) & (v >= 1 - h), "bottom-left": (u <= w) & (v <= h),
    }
    return min(CORNERS, key=lambda c: int(covered[c].sum()))


def _legend(order: Sequence[str], corner: str):
    """A legend inside the plot at ``corner``; none for a single series (the axis title
    names it)."""
    if len(order) <= 1:
        return None
    return alt.Legend(orient=corner, labelLimit=160, padding=4, cornerRadius=3,
                      fillColor="rgba(255, 255, 255, 0.75)", labelColor="#31333F",
                      offset=6)


def frame(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Long-form frame (iteration, value, series) from ``{name: (iterations, values)}``.

    Non-finite values and iteration 0 are dropped.
    """
    parts = []
    for name, (its, vals) in series.items():
        its, vals = np.asarray(its), np.asarray(vals, dtype=np.float64)
        keep = (its >= 1) & np.isfinite(vals)
        parts.append(pd.DataFrame({"iteration": its[keep], "value": vals[keep], "series": name}))
    if not parts:
        return pd.DataFrame({"iteration": [], "value": [], "series": []})
    return pd.concat(parts, ignore_index=True)


def curves(
    data: pd.DataFrame,
    *,
    y_title: str,
    selected: int | None = None,
    log_y: bool = False,
    title: str | None = None,
    order: Sequence[str] | None = None,
    y_format: str = ".3g",
    start: int = 1,
    fit_from: int | None = None,
    pickable: bool = False,
) -> alt.LayerChart:
    """Lines of ``data`` (from :func:`frame`) against iteration on a log axis.

    ``start`` > 1 zooms in: only iterations from ``start`` on are drawn, and the value
    axis fits what is left. ``fit_from`` fits the value axis to iterations from there
    on but keeps the whole x range (the early part runs off the plot, clipped): late
    changes of a few points of accuracy then fill the chart instead of a sliver.
    ``pickable`` adds a click selection named "pick" on the iteration nearest the
    pointer (a page reads it with ``st.altair_chart(on_select=...)`` to select that step).

    The legend sits inside the plot, in the corner the lines leave emptiest
    (:func:`legend_corner`). The chart keeps Vega-Lite's default plot height:
    Streamlit 1.67 takes a bottom or top legend's height out of it.
    """
    order = list(order) if order is not None else list(dict.fromkeys(data["series"]))
    last = float(data["iteration"].max()) if len(data) else 10.0
    start = max(1, min(int(start), int(last) - 1))
    if start > 1:
        data = data[data["iteration"] >= start]
    shown = data if fit_from is None else data[data["iteration"] >= fit_from]
    corner = legend_corner(shown["iteration"], shown["value"], log_x=True, log_y=log_y)
    color = alt.Color("series:N", title=None, sort=order,
                      scale=alt.Scale(domain=order, range=PALETTE[: len(order)]),
                      legend=_legend(order, corner))
    hi = max(last, start + 1.0)
    x = alt.X("iteration:Q", title="iteration (log scale)",
              scale=alt.Scale(type="log", domain=[start, hi], nice=False),
              axis=log_axis(start, hi, "iteration (log scale)"))
    fit = data if fit_from is None else data[data["iteration"] >= fit_from]
    y = _value_axis(fit["value"] if len(fit) else data["value"], y_title, log_y)
    if fit_from is not None and len(fit) and not log_y:
        lo, hi = float(fit["value"].min()), float(fit["value"].max())
        pad = max((hi - lo) * 0.05, 1e-3)
        y = y.scale(domain=[lo - pad, hi + pad], zero=False)
    tooltip = [alt.Tooltip("series:N", title="series"),
               alt.Tooltip("iteration:Q", title="step", format=","),
               alt.Tooltip("value:Q", title=y_title, format=y_format)]
    base = alt.Chart(data)
    clip = fit_from is not None
    lines = base.mark_line(strokeWidth=2, clip=clip).encode(x=x, y=y, color=color)
    hover = alt.selection_point(fields=["iteration"], nearest=True, on="pointerover",
                                empty=False, clear="pointerout")
    points = base.mark_point(size=40, filled=True, clip=clip).encode(
        x=x, y=y, color=color, tooltip=tooltip,
        opacity=alt.condition(hover, alt.value(1.0), alt.value(0.0)),
    ).add_params(hover)
    if pickable:
        points = points.add_params(alt.selection_point(
            name=PICK, fields=["iteration"], nearest=True, on="click", empty=False))
    layers = [lines, points]
    if selected is not None and selected >= start:
        rule = alt.Chart(pd.DataFrame({"iteration": [selected]})).mark_rule(
            color="#777777", strokeDash=[4, 3]).encode(
            x="iteration:Q", tooltip=[alt.Tooltip("iteration:Q", title="selected step", format=",")])
        layers.append(rule)
    chart = alt.layer(*layers)
    if title:
        chart = chart.properties(title=alt.TitleParams(title, anchor="start"))
    return chart


def train_val_series(run: Run, what: str = "loss", label: str = "") -> dict[str, tuple]:
    """Train ``what`` ("loss" or "acc") on a log grid of every iteration, and its
    validation counterpart at the snapshots, as ``{name: (iterations, values)}``."""
    grid = log_grid(run.iterations_done)
    pre = f"{label} " if label else ""
    return {
        f"{pre}train": (grid, run.history[f"train_{what}"][grid]),
        f"{pre}validation": (run.snapshot_iterations, run.snapshot_history[f"val_{what}"]),
    }


def _exportable(chart, width: int) -> str:
    """Vega-Lite JSON of ``chart`` at a fixed width (a file has no container to fill)."""
    return chart.properties(width=width).to_json()


def to_svg(chart, width: int = 640) -> str:
    """The chart as a standalone SVG document, rendered offline by vl-convert."""
    import vl_convert as vlc

    return vlc.vegalite_to_svg(_exportable(chart, width))


def to_png(chart, width: int = 640, scale: float = 2.0) -> bytes:
    """The chart as PNG (``scale`` times its CSS pixel size), rendered offline by vl-convert."""
    import vl_convert as vlc

    return vlc.vegalite_to_png(_exportable(chart, width), scale=scale)


def export_formats() -> tuple[str, ...]:
    """Chart download formats this installation can produce: PNG and SVG with vl-convert."""
    try:
        import vl_convert  # noqa: F401
    except ImportError:
        return ()
    return ("PNG", "SVG")


def lines(
    data: pd.DataFrame,
    *,
    x_title: str,
    y_title: str,
    log_x: bool = False,
    log_y: bool = False,
    rule: float | None = None,
    rule_label: str = "",
    title: str | None = None,
    y_format: str = ".3g",
    points: bool = False,
    x_ticks: Sequence[float] | None = None,
) -> alt.LayerChart:
    """Lines of ``data`` (columns ``x``, ``value``, ``series``) against any quantity.

    ``rule`` draws a dashed vertical line at that ``x`` (tooltip ``rule_label``);
    ``x_ticks`` puts the x-axis ticks at those values, written plainly (0.25, not 250m).
    """
    order = list(dict.fromkeys(data["series"]))
    color = alt.Color("series:N", title=None, sort=order,
                      scale=alt.Scale(domain=order, range=PALETTE[: len(order)])
                      if len(order) <= len(PALETTE) else alt.Scale(domain=order,
                                                                   scheme="tableau10"),
                      legend=_legend(order, legend_corner(data["x"], data["value"],
                                                          log_x=log_x, log_y=log_y)))
    x = alt.X("x:Q", title=x_title,
              scale=alt.Scale(type="log", nice=False) if log_x else alt.Scale(zero=False),
              axis=alt.Axis(values=list(x_ticks), format="~g") if x_ticks is not None
              else log_axis(float(data["x"].min()), float(data["x"].max()), x_title)
              if log_x and len(data) else alt.Axis())
    y = _value_axis(data["value"], y_title, log_y)
    tooltip = [alt.Tooltip("series:N", title="series"),
               alt.Tooltip("x:Q", title=x_title, format=",.4~g"),
               alt.Tooltip("value:Q", title=y_title, format=y_format)]
    mark = alt.Chart(data).mark_line(strokeWidth=2, point=points)
    layers = [mark.encode(x=x, y=y, color=color, tooltip=tooltip)]
    if rule is not None:
        layers.append(alt.Chart(pd.DataFrame({"x": [rule], "label": [rule_label]})).mark_rule(
            color="#777777", strokeDash=[4, 3]).encode(
            x="x:Q", tooltip=[alt.Tooltip("label:N", title="line")]))
    chart = alt.layer(*layers)
    if title:
        chart = chart.properties(title=alt.TitleParams(title, anchor="start"))
    return chart


def long_frame(x: np.ndarray, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Long-form frame (x, value, series) of several value columns over the same ``x``;
    non-finite values are dropped."""
    parts = [pd.DataFrame({"x": np.asarray(x, dtype=np.float64),
                           "value": np.asarray(v, dtype=np.float64), "series": name})
             for name, v in columns.items()]
    out = pd.concat(parts, ignore_index=True)
    return out[np.isfinite(out["value"]) & np.isfinite(out["x"])]
