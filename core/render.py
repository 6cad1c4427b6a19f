"""Weight images and example thumbnails as PIL images.

Weight images use a diverging orange-white-purple map (ColorBrewer's PuOr
anchors, safe for the common colour-vision deficiencies) centred on zero with
one symmetric scale per grid; each tile sits on a mid-grey frame so the light
centre of the map reads on light and dark themes alike. Pixels are enlarged by
nearest-neighbour repetition, never smoothed.

Labels, ticks and captions are drawn for a page theme (``theme="light"`` or ``"dark"``,
see :data:`INK`): on the page's own background colour, in its text colour. The colours of
the weights do not change with the theme: white stays zero, so a picture means the same on
either page and in a download.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# ColorBrewer PuOr, 11 classes, from most negative (purple) to most positive (orange).
_ANCHORS = np.array([
    (0x2d, 0x00, 0x4b), (0x54, 0x27, 0x88), (0x80, 0x73, 0xac), (0xb2, 0xab, 0xd2),
    (0xd8, 0xda, 0xeb), (0xf7, 0xf7, 0xf7), (0xfe, 0xe0, 0xb6), (0xfd, 0xb8, 0x63),
    (0xe0, 0x82, 0x14), (0xb3, 0x58, 0x06), (0x7f, 0x3b, 0x08),
], dtype=np.float64)
_LUT = np.stack([
    np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c])
    for c in range(3)
], axis=1).round().astype(np.uint8)

FRAME = (128, 128, 128)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)

#: Canvas and text colour of the pictures for each page theme: the page's own background
#: (Streamlit 1.67's light and dark themes), so a picture's margins disappear into the page
#: and its labels read like the page's text (contrast 18:1 and 15:1).
INK = {"light": (BACKGROUND, TEXT), "dark": ((23, 22, 20), (237, 235, 232))}


def ink(theme: str | None) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Canvas and text colour (RGB) of pictures for ``theme``; light for any other value."""
    return INK.get(theme or "light", INK["light"])


#: Percentile of |w| that sets a colour scale. Late weight images have a few extreme
#: pixels (L-BFGS iteration 300: +/-3.15 against a bulk within +/-0.5); scaled to the
#: largest, the rest fades to white. Above the limit a pixel keeps the end colour, and
#: the colour bar says that it is clipped.
SCALE_PERCENTILE = 99.5


def symmetric_limit(values: np.ndarray, percentile: float = SCALE_PERCENTILE) -> float:
    """The scale ``vmax`` for a grid: the ``percentile`` of its absolute finite non-zero
    values (zeros left out, so a sparse L1 image is scaled by its weights, not its zeros;
    1 if all are 0)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.abs(v[np.isfinite(v)])
    v = v[v > 0]
    return float(np.percentile(v, percentile)) if v.size else 1.0


def clipped_share(values: np.ndarray, vmax: float) -> float:
    """Share of the finite values beyond ``+/-vmax`` (drawn at the end colours)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float((np.abs(v) > vmax * (1 + 1e-12)).mean()) if v.size else 0.0


def diverging_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """Map values in [-vmax, vmax] to RGB uint8 (..., 3); zero is the light centre.

    Non-finite values are drawn as the centre colour, so no NaN reaches a picture.
    """
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=vmax, neginf=-vmax)
    idx = np.clip(np.round((v / vmax + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return _LUT[idx]


def gray_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 grayscale images (..., H, W) as RGB (..., H, W, 3): dark ink on white paper."""
    g = 255 - np.asarray(images, dtype=np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def tile_grid(
    tiles: np.ndarray,
    *,
    scale: int = 4,
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    gap: int = 4,
    font_size: int = 12,
    theme: str = "light",
) -> Image.Image:
    """Lay out RGB tiles (R, C, h, w, 3) as one picture with optional labels.

    Each tile is enlarged ``scale`` times by pixel repetition and framed in grey; the
    canvas and labels take the colours of ``theme`` (:data:`INK`).
    """
    paper, text_colour = ink(theme)
    tiles = np.asarray(tiles, dtype=np.uint8)
    R, C, h, w, _ = tiles.shape
    big = tiles.repeat(scale, axis=2).repeat(scale, axis=3)
    th, tw = h * scale + 2, w * scale + 2  # one-pixel frame
    font = _font(font_size)
    # Column labels wrap at spaces onto a second line rather than lose their end.
    headers = [_wrap(str(text), font, tw) for text in (col_labels or ())]
    line_h = font_size + 3
    label_h = max(map(len, headers)) * line_h + 3 if headers else 0
    label_w = 0
    if row_labels:
        label_w = max(int(font.getlength(str(s))) for s in row_labels) + 8
    width = label_w + C * (tw + gap) + gap
    height = label_h + R * (th + gap) + gap
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = paper
    for r in range(R):
        for c in range(C):
            y0 = label_h + gap + r * (th + gap)
            x0 = label_w + gap + c * (tw + gap)
            canvas[y0:y0 + th, x0:x0 + tw] = FRAME
            canvas[y0 + 1:y0 + th - 1, x0 + 1:x0 + tw - 1] = big[r, c]
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for c, lines in enumerate(headers):
        x0 = label_w + gap + c * (tw + gap)
        for line_no, text in enumerate(lines):
            draw.text((x0 + (tw - font.getlength(text)) / 2, 2 + line_no * line_h), text,
                      fill=text_colour, font=font)
    for r, text in enumerate(row_labels or ()):
        y0 = label_h + gap + r * (th + gap)
        draw.text((2, y0 + th / 2 - font_size / 2), str(text), fill=text_colour, font=font)
    return img


def _wrap(text: str, font, width: int, max_lines: int = 2) -> list[str]:
    """``text`` broken at spaces into at most ``max_lines`` lines of ``width`` pixels; the
    last line is shortened with an ellipsis if the words still do not fit."""
    lines: list[str] = []
    words = text.split(" ")
    while words and len(lines) < max_lines - 1:
        line = words.pop(0)
        while words and font.getlength(line + " " + words[0]) <= width:
            line += " " + words.pop(0)
        if font.getlength(line) > width:
            words.insert(0, line)  # one long word: leave it to the last line's ellipsis
            break
        lines.append(line)
    if words:
        lines.append(_fit(" ".join(words), font, width))
    return lines or [""]


def _fit(text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits in ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while len(text) > 1 and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def weight_grid(
    images: np.ndarray,
    *,
    vmax: float | None = None,
    scale: int = 4,
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    theme: str = "light",
) -> Image.Image:
    """Weight images (K, H, W) as one row, or (R, K, H, W) as rows, on one symmetric scale
    (labels drawn for page ``theme``)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[None]
    vmax = symmetric_limit(images) if vmax is None else vmax
    return tile_grid(diverging_rgb(images, vmax), scale=scale,
                     col_labels=col_labels, row_labels=row_labels, theme=theme)


def thumbnail_grid(
    images: np.ndarray,
    *,
    ncols: int = 10,
    scale: int = 3,
    labels: Sequence[str] | None = None,
    theme: str = "light",
) -> Image.Image:
    """uint8 grayscale images (m, H, W) in rows of ``ncols``, optional caption per image
    (drawn for page ``theme``)."""
    images = np.asarray(images, dtype=np.uint8)
    m, h, w = images.shape
    rows = max(1, -(-m // ncols))
    padded = np.zeros((rows * ncols, h, w), dtype=np.uint8)
    padded[:m] = images
    rgb = gray_rgb(padded).reshape(rows, ncols, h, w, 3)
    if m < rows * ncols:
        rgb.reshape(-1, h, w, 3)[m:] = ink(theme)[0]
    return tile_grid(rgb, scale=scale, theme=theme) if labels is None else \
        _captioned(rgb, labels, scale, theme)


def _captioned(rgb: np.ndarray, labels: Sequence[str], scale: int,
               theme: str = "light") -> Image.Image:
    """Thumbnails (R, C, h, w, 3) with a caption under each; "\n" starts a new line."""
    R, C = rgb.shape[:2]
    font_size = 11
    grid = tile_grid(rgb, scale=scale, theme=theme)
    paper, text_colour = ink(theme)
    th = rgb.shape[2] * scale + 2
    tw = rgb.shape[3] * scale + 2
    gap = 4
    lines = max(len(str(text).split("\n")) for text in labels) if len(labels) else 1
    row_h = th + gap + lines * (font_size + 3) + 2
    out = Image.new("RGB", (grid.width, R * row_h + gap), paper)
    font = _font(font_size)
    draw = ImageDraw.Draw(out)
    for r in range(R):
        strip = grid.crop((0, gap + r * (th + gap), grid.width, gap + r * (th + gap) + th))
        out.paste(strip, (0, gap + r * row_h))
        for c in range(C):
            i = r * C + c
            if i >= len(labels):
                break
            x0 = gap + c * (tw + gap)
            for line_no, line in enumerate(str(labels[i]).split("\n")):
                text = _fit(line, font, tw + gap)
                y0 = gap + r * row_h + th + 2 + line_no * (font_size + 3)
                draw.text((x0 + (tw - font.getlength(text)) / 2, y0), text, fill=text_colour,
                          font=font)
    return out


def colorbar(vmax: float, *, width: int = 240, height: int = 14, font_size: int = 11,
             tick_labels: Sequence[str] | None = None, clipped: bool = False,
             theme: str = "light") -> Image.Image:
    """Legend for :func:`weight_grid`: the colour ramp from -vmax to +vmax with tick labels
    (drawn for page ``theme``: on its background, in its text colour).

    ``tick_labels`` replaces the three numbers (for grids scaled row by row). ``clipped``
    adds a pointed cap at each end and writes the end labels as "< -v" and "> +v"
    (values beyond the scale are drawn in the end colours; the default font has no
    "≤" glyph).
    """
    font = _font(font_size)
    texts = list(tick_labels or (f"{-vmax:+.3g}", "0", f"{vmax:+.3g}"))
    if clipped:
        texts[0], texts[-1] = f"< {texts[0]}", f"> {texts[-1]}"
    ticks = list(zip((-vmax, 0.0, vmax), texts))
    cap = height if clipped else 0
    pad = max(int(max(font.getlength(text) for _, text in ticks) / 2) + 6, cap + 4)
    ramp = diverging_rgb(np.linspace(-vmax, vmax, width)[None, :].repeat(height, axis=0), vmax)
    paper, text_colour = ink(theme)
    img = Image.new("RGB", (width + 2 * pad, height + font_size + 8), paper)
    img.paste(Image.fromarray(ramp), (pad, 0))
    draw = ImageDraw.Draw(img)
    if clipped:
        lo, hi = (tuple(int(c) for c in _LUT[i]) for i in (0, 255))
        mid = (height - 1) / 2
        draw.polygon([(pad - 1, 0), (pad - 1, height - 1), (pad - cap, mid)], fill=lo)
        draw.polygon([(pad + width, 0), (pad + width, height - 1), (pad + width + cap - 1, mid)],
                     fill=hi)
    for value, text in ticks:
        x = pad + (value / vmax + 1) / 2 * (width - 1)
        draw.text((x - font.getlength(text) / 2, height + 3), text, fill=text_colour, font=font)
    return img


def to_png(img: Image.Image) -> bytes:
    """PNG bytes of a PIL image (lossless, unlike Streamlit's JPEG default)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def animated_gif(frames: Sequence[Image.Image], *, duration_ms: int = 300) -> bytes:
    """An endlessly looping GIF of equally sized frames; the last frame is held longer."""
    frames = [f.convert("RGB") for f in frames]
    if not frames:
        raise ValueError("An animation needs at least one frame.")
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 4]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=durations, loop=0, optimize=False, disposal=1)
    return buf.getvalue()


def presentation_columns(n_classes: int, aspect: float = 2.0) -> int:
    """Classes a row for a grid of ``n_classes`` square tiles that fills a screen area
    ``aspect`` times as wide as high (a 16:9 projector less the controls above): the
    count that makes the tiles largest (ten classes: 5 a row, two rows)."""
    def tile(cols: int) -> float:
        return min(aspect / cols, 1.0 / -(-n_classes // cols))
    return max(range(1, max(1, n_classes) + 1), key=lambda c: (tile(c), c))


def wrapped_weight_grid(
    images: np.ndarray,
    *,
    ncols: int,
    vmax: float | None = None,
    scale: int = 8,
    labels: Sequence[str] | None = None,
    font_size: int = 20,
    theme: str = "light",
) -> Image.Image:
    """Weight images (K, H, W) in rows of ``ncols``, each under its label, on one
    symmetric scale (the presentation view's grid: ten classes as two rows of five),
    on the page colours of ``theme`` (:data:`INK`)."""
    paper = ink(theme)[0]
    images = np.asarray(images, dtype=np.float64)
    K = len(images)
    vmax = symmetric_limit(images) if vmax is None else vmax
    labels = list(labels) if labels is not None else [str(k) for k in range(K)]
    strips = []
    for start in range(0, K, ncols):
        part = images[start:start + ncols]
        tiles = diverging_rgb(part, vmax)
        names = labels[start:start + ncols]
        if len(part) < ncols:  # the last row: blank tiles keep the columns aligned
            blank = np.full((ncols - len(part), *tiles.shape[1:]), paper, np.uint8)
            tiles = np.concatenate([tiles, blank])
            names = names + [""] * (ncols - len(part))
        strips.append(tile_grid(tiles[None], scale=scale, col_labels=names,
                                font_size=font_size, theme=theme))
    out = Image.new("RGB", (strips[0].width, sum(s.height for s in strips)), paper)
    y = 0
    for strip in strips:
        out.paste(strip, (0, y))
        y += strip.height
    return out
