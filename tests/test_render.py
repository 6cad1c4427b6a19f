"""Pictures: the colour scale keeps late weight images readable, and says what it clips."""

from __future__ import annotations

import re

import numpy as np
import pytest

from core import render


def _late_image(rng) -> np.ndarray:
    """A bulk within +/-0.5 and two extreme pixels, like L-BFGS's iteration 300 (+/-3.15)."""
    w = rng.uniform(-0.5, 0.5, size=(10, 28, 28))
    w[0, 0, 0], w[3, 5, 5] = 3.15, -3.1
    return w


def test_the_scale_ignores_a_few_extreme_pixels():
    rng = np.random.default_rng(0)
    w = _late_image(rng)
    vmax = render.symmetric_limit(w)
    assert vmax == np.percentile(np.abs(w[w != 0]), render.SCALE_PERCENTILE)
    assert 0.45 < vmax < 0.5, "the bulk's scale, not the outliers'"
    share = render.clipped_share(w, vmax)
    assert 0 < share <= 1 - render.SCALE_PERCENTILE / 100 + 1e-3
    # A bulk pixel at 0.4 is drawn far from the white centre (index 127.5); scaled to the
    # largest pixel it would sit near it.
    idx = lambda v, lim: int(np.argmin(np.abs(render._LUT.astype(int) - render.diverging_rgb(
        np.array([v]), lim)[0].astype(int)).sum(axis=1)))
    assert abs(idx(0.4, vmax) - 127.5) > 0.75 * 127.5
    assert abs(idx(0.4, np.abs(w).max()) - 127.5) < 0.15 * 127.5
    # clipped pixels take the end colours
    rgb = render.diverging_rgb(w, vmax)
    assert tuple(rgb[0, 0, 0]) == tuple(render._LUT[255])
    assert tuple(rgb[3, 5, 5]) == tuple(render._LUT[0])


def test_sparse_and_empty_images_keep_a_usable_scale():
    w = np.zeros((2, 8, 8))
    assert render.symmetric_limit(w) == 1.0
    w[1, 2, 3] = -0.7  # mostly zeros: the scale comes from the non-zero weights
    assert render.symmetric_limit(w) == 0.7
    assert render.clipped_share(w, 0.7) == 0.0
    assert render.symmetric_limit(np.array([np.nan, np.inf])) == 1.0


def test_the_colour_bar_shows_clipping_with_pointed_end_caps():
    plain = np.asarray(render.colorbar(0.5))
    capped = np.asarray(render.colorbar(0.5, clipped=True))
    purple, orange = tuple(render._LUT[0]), tuple(render._LUT[255])
    mid = 7  # half of the ramp's 14-pixel height
    row = [tuple(px) for px in capped[mid]]
    first, last = row.index(purple), len(row) - 1 - row[::-1].index(orange)
    # the caps stick out beyond the ramp's ends: more end-colour pixels in the middle row
    # than in the top row, where a cap is one pixel wide
    top = [tuple(px) for px in capped[0]]
    assert row.count(purple) > top.count(purple) and row.count(orange) > top.count(orange)
    assert first < top.index(purple) and last > len(top) - 1 - top[::-1].index(orange)
    plain_row = [tuple(px) for px in plain[mid]]
    assert plain_row.count(purple) == [tuple(px) for px in plain[0]].count(purple)


def _axis_labels(chart) -> list[str]:
    """The x-axis tick labels of an Altair chart as rendered (SVG by vl-convert)."""
    import re

    from core import charts

    svg = charts.to_svg(chart)
    block = svg[svg.index('class="mark-text role-axis-label"'):]
    block = block[:block.index("</g>")]
    return re.findall(r">([^<>]*)</text>", block)


def test_log_axes_tick_at_one_two_five_and_label_decades():
    import pandas as pd

    from core import charts

    assert charts.log_ticks(1, 30_000) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
                                           10_000, 20_000]
    assert charts.log_ticks(3, 60) == [5, 10, 20, 50]
    its = np.unique(np.round(np.logspace(0, np.log10(30_000), 60)))
    data = charts.frame({"loss": (its, 1 / its)})
    labels = [t for t in _axis_labels(charts.curves(data, y_title="loss")) if t]
    assert labels == ["1", "10", "100", "1k", "10k"], labels
    short = charts.frame({"loss": (np.arange(1, 61), np.ones(60))})
    assert [t for t in _axis_labels(charts.curves(short, y_title="loss")) if t] == \
        ["1", "2", "5", "10", "20", "50"]
    wide = charts.lines(pd.DataFrame({"x": [1.0, 784.0], "value": [1.0, 2.0], "series": "a"}),
                        x_title="direction", y_title="v", log_x=True)
    assert [t for t in _axis_labels(wide) if t] == ["1", "10", "100"]


def test_log_value_axes_tick_at_one_two_five_below_one_too():
    from core import charts

    assert charts.log_ticks(0.0012, 0.47) == [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    assert charts.log_ticks(0.05, 3) == [0.05, 0.1, 0.2, 0.5, 1, 2]
    spec = charts.curves(charts.frame({"range": (np.arange(1, 101), np.geomspace(0.002, 0.4,
                                                                                 100))}),
                         y_title="range", log_y=True).to_dict()
    y = spec["layer"][0]["encoding"]["y"]
    assert y["axis"]["values"] == [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    assert y["axis"]["format"] == "~g", "0.002 must not read 2m"


def test_the_legend_sits_inside_the_plot_in_its_emptiest_corner():
    from core import charts

    its = np.arange(1, 1001)
    falling = charts.frame({"train": (its, 1 / its), "validation": (its, 1.2 / its)})
    rising = charts.frame({"train": (its, 1 - 1 / its), "validation": (its, 0.9 - 1 / its)})
    corner = lambda chart: chart.to_dict()["layer"][0]["encoding"]["color"]["legend"]["orient"]
    # a falling curve fills the top left and the bottom right; a rising one the reverse
    assert corner(charts.curves(falling, y_title="loss")) in ("top-right", "bottom-left")
    assert corner(charts.curves(rising, y_title="accuracy")) in ("bottom-right", "top-left")
    assert charts.legend_corner(np.r_[0.1, 0.9, 0.1], np.r_[0.9, 0.9, 0.1]) == "bottom-right"
    single = charts.curves(charts.frame({"only": (its, 1 / its)}), y_title="v").to_dict()
    assert single["layer"][0]["encoding"]["color"].get("legend", "none") is None


def test_accuracy_axis_can_fit_the_late_steps():
    from core import charts

    its = np.arange(1, 3001)
    acc = charts.frame({"validation": (its, np.minimum(0.8, 0.1 + its / 100))})
    spec = charts.curves(acc, y_title="accuracy", fit_from=100).to_dict()
    lo, hi = spec["layer"][0]["encoding"]["y"]["scale"]["domain"]
    assert 0.78 < lo < 0.8 <= hi < 0.82, (lo, hi)  # 0.1 at step 1 is off the plot
    assert spec["layer"][0]["mark"]["clip"] is True
    full = charts.curves(acc, y_title="accuracy").to_dict()
    assert "domain" not in full["layer"][0]["encoding"]["y"]["scale"]


def _contrast(a, b) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (0-255)."""
    def lum(c):
        v = [x / 255 for x in c[:3]]
        v = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in v]
        return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_pictures_are_drawn_on_the_page_of_their_theme(theme):
    """Labels of grids, thumbnails and colour bars sit on the theme's page background in a
    colour that reaches 4.5:1 on it; the weights' colours do not change (white is zero)."""
    from core import render
    paper, _ = render.ink(theme)
    w = np.linspace(-1, 1, 2 * 8 * 8).reshape(2, 8, 8)
    pictures = [render.weight_grid(w, col_labels=["a", "b"], row_labels=["row"], theme=theme),
                render.thumbnail_grid(np.zeros((3, 8, 8), np.uint8), ncols=2, labels="xyz",
                                      theme=theme),
                render.colorbar(1.0, clipped=True, theme=theme)]
    for img in pictures:
        assert img.getpixel((0, 0)) == paper
        best = max(_contrast(c, paper) for _, c in img.getcolors(1 << 16))
        assert best >= 4.5, (theme, best)
    bar = render.colorbar(1.0, theme=theme)
    assert bar.getpixel((bar.width // 2, 2)) == tuple(render.diverging_rgb(np.zeros(1), 1.0)[0])


def test_pictures_for_an_unknown_theme_are_light():
    assert render.ink(None) == render.ink("light") == render.ink("sepia")
    assert render.ink("dark")[0] != render.ink("light")[0]


def test_chart_legends_read_on_both_themes():
    """The legend box's labels reach 4.5:1 on its translucent fill over either page."""
    from core import charts
    legend = charts._legend(["a", "b"], "top-right").to_dict()
    fill = [float(v) for v in re.findall(r"[\d.]+", legend["fillColor"])]
    label = tuple(int(legend["labelColor"][i:i + 2], 16) for i in (1, 3, 5))
    for theme in ("light", "dark"):
        under = render.ink(theme)[0]
        box = [fill[3] * f + (1 - fill[3]) * u for f, u in zip(fill[:3], under)]
        assert _contrast(label, box) >= 4.5, theme
