"""Loss curves as PNG, drawn with Pillow's ImageDraw (no matplotlib dependency)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from .images import save_image

_COLOURS = {"total": (20, 20, 20), "content": (31, 119, 180), "style": (214, 39, 40), "tv": (44, 160, 44),
            "stability": (148, 103, 189)}
_FALLBACK = ((255, 127, 14), (140, 86, 75), (227, 119, 194), (127, 127, 127))


def _bucket(steps: Sequence[int], values: Sequence[float], buckets: int) -> list[tuple[float, float]]:
    """Average runs of consecutive points so a long run draws as at most `buckets` points."""
    points = [(float(s), float(v)) for s, v in zip(steps, values) if math.isfinite(v) and v > 0]
    if len(points) <= buckets:
        return points
    size = len(points) / buckets
    out = []
    for b in range(buckets):
        chunk = points[int(b * size):int((b + 1) * size)] or points[int(b * size):int(b * size) + 1]
        out.append((sum(p[0] for p in chunk) / len(chunk), sum(p[1] for p in chunk) / len(chunk)))
    return out


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k) covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.0e}" if value and (abs(value) >= 1e4 or abs(value) < 1e-2) else f"{value:g}"


def draw_loss_curve(steps: Sequence[int], series: Mapping[str, Sequence[float]], path: str | os.PathLike,
                    title: str = "training loss", size: tuple[int, int] = (900, 500)) -> Path:
    """Plot loss series against the step on a log y-axis and save the PNG atomically; zero series are left out."""
    width, height = size
    left, right, top, bottom = 70, 20, 36, 44
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((left, 10), title, fill="black", font=font)
    plot_w, plot_h = width - left - right, height - top - bottom
    lines = {name: _bucket(steps, values, plot_w) for name, values in series.items()}
    lines = {name: pts for name, pts in lines.items() if pts}
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=(120, 120, 120))
    if not lines:
        draw.text((left + 10, top + 10), "no data yet", fill="black", font=font)
        return save_image(img, path)

    xs = [x for pts in lines.values() for x, _ in pts]
    ys = [math.log10(y) for pts in lines.values() for _, y in pts]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = max((y_hi - y_lo) * 0.05, 0.05)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def to_px(x: float, log_y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * plot_w, top + (y_hi - log_y) / (y_hi - y_lo) * plot_h)

    # y grid: powers of ten, plus 2x and 5x when the range spans little more than a decade.
    decades = range(math.floor(y_lo), math.ceil(y_hi) + 1)
    mantissas = (1, 2, 5) if y_hi - y_lo < 2.5 else (1,)
    for d in decades:
        for m in mantissas:
            log_y = d + math.log10(m)
            if y_lo <= log_y <= y_hi:
                _, py = to_px(x_lo, log_y)
                draw.line((left, py, left + plot_w, py), fill=(225, 225, 225))
                draw.text((4, py - 6), _fmt(m * 10.0 ** d), fill="black", font=font)
    for x in _nice_ticks(x_lo, x_hi):
        px, _ = to_px(x, y_lo)
        draw.line((px, top + plot_h, px, top + plot_h + 4), fill="black")
        draw.text((px - 12, top + plot_h + 8), f"{x:g}", fill="black", font=font)
    draw.text((left + plot_w // 2 - 12, height - 18), "step", fill="black", font=font)

    fallback = iter(_FALLBACK * 4)
    for i, (name, pts) in enumerate(lines.items()):
        colour = _COLOURS.get(name) or next(fallback)
        coords = [to_px(x, math.log10(y)) for x, y in pts]
        if len(coords) == 1:
            x, y = coords[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        else:
            draw.line(coords, fill=colour, width=2)
        lx, ly = left + plot_w - 110, top + 8 + 14 * i
        draw.line((lx, ly + 6, lx + 18, ly + 6), fill=colour, width=3)
        draw.text((lx + 24, ly), name, fill="black", font=font)
    return save_image(img, path)
