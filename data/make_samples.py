#!/usr/bin/env python3
"""Regenerate the sample data in data/: procedural images, a short video, and a few photos from scikit-image.

    python data/make_samples.py            # rewrite everything (photos need scikit-image, a dev-only dependency)
    python data/make_samples.py --skip_udnie   # keep data/udnie.jpg (e.g. the real painting put there)

Everything here is deterministic (fixed seeds); the generated pictures use only numpy and Pillow, the video
also PyAV (a runtime dependency already). Photos are copied from the public-domain / CC0 images bundled in
scikit-image's wheel and skipped with a note when scikit-image is not installed. See data/README.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DATA = Path(__file__).resolve().parent
TRAIN = DATA / "train2014" / "default_class"
SUPERSAMPLE = 2  # draw at 2x and downsample with Lanczos: smooth edges without an antialiasing rasteriser
JPEG_OPTIONS = {"quality": 90, "optimize": True, "subsampling": "4:2:0"}


# ------------------------------------------------------------------------------------------------ helpers
def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return a + (b - a) * t


def rgb(*values: float) -> np.ndarray:
    """An 8-bit colour as a float RGB vector in [0, 1]."""
    return np.asarray(values, dtype=np.float32) / 255.0


def gradient_rows(height: int, width: int, stops: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """(H, W, 3) image whose rows go through colour `stops` [(position 0..1, rgb), ...]."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)
    positions = [p for p, _ in stops]
    column = np.stack([np.interp(ys, positions, [c[i] for _, c in stops]) for i in range(3)], axis=-1)
    return np.repeat(column[:, None, :], width, axis=1).astype(np.float32)


def noise(rng: np.random.Generator, height: int, width: int, cell: float, octaves: int = 4,
          stretch: float = 1.0) -> np.ndarray:
    """Fractal value noise in [0, 1]: random grids upsampled bicubically; `stretch` > 1 elongates it in x."""
    out = np.zeros((height, width), np.float32)
    amplitude, total = 1.0, 0.0
    for _ in range(octaves):
        gh = max(2, int(height / cell) + 2)
        gw = max(2, int(width / (cell * stretch)) + 2)
        grid = Image.fromarray(rng.random((gh, gw), dtype=np.float32), mode="F")
        out += amplitude * np.asarray(grid.resize((width, height), Image.BICUBIC))
        total += amplitude
        amplitude *= 0.5
        cell = max(1.0, cell / 2)
    out /= total
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def box_blur(image: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Average over 2*radius+1 samples along `axis` (edges repeated), via cumulative sums."""
    if radius < 1:
        return image
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius + 1, radius)
    cumulative = np.cumsum(np.pad(image, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = image.shape[axis]
    upper = np.take(cumulative, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lower = np.take(cumulative, np.arange(0, n), axis=axis)
    return ((upper - lower) / (2 * radius + 1)).astype(np.float32)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Approximate Gaussian blur of an (H, W[, C]) float image: three box blurs along each axis."""
    radius = max(1, int(round(sigma * 0.8)))
    for _ in range(3):
        image = box_blur(box_blur(image, radius, 0), radius, 1)
    return image


def paint_rect(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: np.ndarray,
               alpha: float = 1.0) -> None:
    """Fill a clipped rectangle of a float canvas in place."""
    h, w = canvas.shape[:2]
    x0, x1 = max(0, int(round(x0))), min(w, int(round(x1)))
    y0, y1 = max(0, int(round(y0))), min(h, int(round(y1)))
    if x1 > x0 and y1 > y0:
        region = canvas[y0:y1, x0:x1]
        region[...] = lerp(region, np.broadcast_to(color, region.shape), alpha)


def to_image(canvas: np.ndarray, size: tuple[int, int], grain: float, rng: np.random.Generator) -> Image.Image:
    """Float canvas -> 8-bit RGB Pillow image of `size` (w, h), Lanczos-downsampled, with film grain."""
    image = Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")
    small = np.asarray(image.resize(size, Image.LANCZOS), dtype=np.float32)
    if grain:
        small = small + rng.normal(0.0, grain, small.shape[:2])[..., None]  # luminance grain, like film
    return Image.fromarray(np.clip(small + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(DATA.parent))
    except ValueError:
        return str(path)


def save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", **JPEG_OPTIONS)
    print(f"wrote {_shown(path)} ({image.width}x{image.height}, {path.stat().st_size // 1024} KiB)")


def make_region_masks(width: int, height: int, feather: int = 32) -> None:
    """data/mask_left.png and mask_right.png: halves of the frame with a soft vertical edge, for --style_masks."""
    x = (np.arange(width, dtype=np.float32) - (width / 2 - feather / 2)) / feather
    ramp = np.clip(x, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: 0 on the left .. 1 on the right, over `feather` px
    right = np.repeat(ramp[None, :], height, axis=0)
    for name, values in (("mask_left.png", 1 - right), ("mask_right.png", right)):
        path = DATA / name
        Image.fromarray(np.round(values * 255).astype(np.uint8), mode="L").save(path, optimize=True)
        print(f"wrote {_shown(path)} ({width}x{height}, {path.stat().st_size} bytes)")


# --------------------------------------------------------------------------------------------------- city
CITY_LIGHTING = {
    # sky colour stops (top .. horizon), facade tint, share of lit windows, window glow, water tint
    "dusk": dict(sky=[(0.0, rgb(16, 22, 56)), (0.35, rgb(58, 52, 112)), (0.62, rgb(196, 110, 112)),
                      (0.8, rgb(246, 168, 98)), (1.0, rgb(252, 204, 130))],
                 facade=rgb(52, 56, 78), lit=0.42, glow=0.55, water=rgb(40, 46, 86), stars=True, moon=True),
    "night": dict(sky=[(0.0, rgb(4, 6, 20)), (0.5, rgb(14, 20, 48)), (0.85, rgb(40, 40, 78)),
                       (1.0, rgb(84, 66, 90))],
                  facade=rgb(24, 27, 40), lit=0.55, glow=0.8, water=rgb(12, 16, 38), stars=True, moon=True),
    "day": dict(sky=[(0.0, rgb(56, 112, 190)), (0.5, rgb(110, 160, 220)), (0.85, rgb(186, 212, 236)),
                     (1.0, rgb(214, 226, 236))],
                facade=rgb(150, 150, 150), lit=0.0, glow=0.0, water=rgb(66, 104, 140), stars=False, moon=False),
}
WINDOW_COLORS = [rgb(255, 214, 130), rgb(255, 190, 96), rgb(255, 236, 190), rgb(200, 222, 255), rgb(255, 170, 90)]


def _building(canvas: np.ndarray, glow: np.ndarray, rng: np.random.Generator, x: float, width: float,
              top: float, base: float, facade: np.ndarray, window: tuple[float, float], lit: float,
              light: dict, sky_at: np.ndarray, day: bool, rooftop: bool) -> None:
    """One building: shaded facade, a window grid, and sometimes a rooftop feature."""
    w = canvas.shape[1]
    x0, x1, y0, y1 = int(x), int(x + width), int(top), int(base)
    x0c, x1c = max(0, x0), min(w, x1)
    if x1c <= x0c or y1 <= y0:
        return
    # Facade: lit from the left (low sun / sky glow), darker towards the street, with a faint texture.
    across = np.linspace(1.12, 0.82, x1 - x0, dtype=np.float32)[x0c - x0:x1c - x0]
    down = np.linspace(1.05, 0.8, y1 - y0, dtype=np.float32)
    texture = 0.94 + 0.12 * rng.random((y1 - y0, x1c - x0c), dtype=np.float32)
    canvas[y0:y1, x0c:x1c] = facade * (down[:, None] * across[None, :] * texture)[..., None]
    # Windows: a grid with margins; each is lit (warm/cool light) or dark glass reflecting the sky.
    win_w, win_h = window
    gap_x, gap_y = win_w * rng.uniform(0.6, 1.1), win_h * rng.uniform(0.5, 0.9)
    columns = max(1, int((width - gap_x) // (win_w + gap_x)))
    margin = (width - columns * (win_w + gap_x) + gap_x) / 2
    floor_color = rng.random() < 0.25  # some buildings have one kind of light throughout
    base_color = WINDOW_COLORS[rng.integers(len(WINDOW_COLORS))]
    y = top + gap_y * 1.5
    while y + win_h < base - win_h:
        row_lit = lit * rng.uniform(0.4, 1.6)
        for c in range(columns):
            wx = x + margin + c * (win_w + gap_x)
            if rng.random() < row_lit:
                color = base_color if floor_color else WINDOW_COLORS[rng.integers(len(WINDOW_COLORS))]
                color = color * rng.uniform(0.7, 1.05)
                paint_rect(canvas, wx, y, wx + win_w, y + win_h, color)
                paint_rect(glow, wx, y, wx + win_w, y + win_h, color * light["glow"])
            else:
                reflect = lerp(facade * 0.55, sky_at, 0.45 if day else 0.18) * rng.uniform(0.75, 1.15)
                paint_rect(canvas, wx, y, wx + win_w, y + win_h, reflect)
        y += win_h + gap_y
    if not rooftop:
        return
    kind = rng.integers(4)
    dark = facade * 0.7
    if kind == 0:  # water tank on legs
        tx = x + rng.uniform(0.15, 0.6) * width
        tw = max(6.0, width * 0.18)
        paint_rect(canvas, tx + 1, top - tw * 0.5, tx + 3, top, dark)
        paint_rect(canvas, tx + tw - 3, top - tw * 0.5, tx + tw - 1, top, dark)
        paint_rect(canvas, tx, top - tw * 1.4, tx + tw, top - tw * 0.5, dark * 1.1)
        paint_rect(canvas, tx + tw * 0.1, top - tw * 1.65, tx + tw * 0.9, top - tw * 1.4, dark)
    elif kind == 1:  # antenna with a red aircraft-warning light
        ax = x + width * rng.uniform(0.3, 0.7)
        height = rng.uniform(0.08, 0.2) * (base - top + 60)
        paint_rect(canvas, ax, top - height, ax + 2, top, dark)
        if not day:
            paint_rect(canvas, ax - 2, top - height - 3, ax + 4, top - height + 3, rgb(255, 60, 50))
            paint_rect(glow, ax - 2, top - height - 3, ax + 4, top - height + 3, rgb(255, 40, 30))
    elif kind == 2:  # setback: a narrower block on top
        inset = width * rng.uniform(0.15, 0.3)
        paint_rect(canvas, x + inset, top - (base - top) * rng.uniform(0.06, 0.15), x + width - inset, top,
                   facade * 0.9)
    # kind 3: flat roof with a parapet line
    paint_rect(canvas, x, top, x + width, top + 3, facade * 1.2)


def render_city(width: int, height: int, seed: int, lighting: str = "dusk") -> Image.Image:
    """A procedural city skyline over a river: sky, three layers of buildings with lit windows, reflections."""
    rng = np.random.default_rng(seed)
    light = CITY_LIGHTING[lighting]
    day = lighting == "day"
    W, H = width * SUPERSAMPLE, height * SUPERSAMPLE
    s = SUPERSAMPLE
    horizon = int(H * 0.78)
    sky = gradient_rows(horizon, W, light["sky"])
    # Clouds: horizontally stretched noise, lit from below near the horizon.
    clouds = noise(rng, horizon, W, cell=60 * s, octaves=5, stretch=4.0)
    cover = np.clip((clouds - 0.55) * 3.0, 0, 1)[..., None] * np.linspace(0.2, 0.8, horizon)[:, None, None]
    cloud_color = rgb(235, 238, 245) if day else lerp(rgb(60, 46, 90), rgb(240, 140, 120),
                                                     np.linspace(0, 1, horizon)[:, None, None] ** 2)
    sky = lerp(sky, cloud_color, cover * 0.7)
    if light["stars"]:
        for _ in range(int(W * H / (1800 * s * s))):
            sx, sy = rng.integers(W), int(rng.beta(1, 3) * horizon * 0.6)
            b = rng.uniform(0.4, 1.0)
            paint_rect(sky, sx, sy, sx + s, sy + s, lerp(sky[sy, sx], rgb(255, 255, 245), b))
    if light["moon"]:
        mx, my, mr = W * 0.8, horizon * 0.22, 15 * s * width / 512
        yy, xx = np.mgrid[0:horizon, 0:W]
        d = np.hypot(xx - mx, yy - my)
        sky = lerp(sky, rgb(250, 246, 228), np.clip(mr + 1 - d, 0, 1)[..., None])
        sky = sky + (0.25 * np.exp(-((d / (mr * 4)) ** 2)))[..., None] * rgb(255, 240, 210)
    canvas = np.zeros((H, W, 3), np.float32)
    canvas[:horizon] = sky
    glow = np.zeros_like(canvas)

    def sky_at(y: float) -> np.ndarray:
        return sky[int(np.clip(y, 0, horizon - 1)), W // 2]

    # Three layers, far to near: hazier and smaller far away (aerial perspective).
    layers = [  # (count per 512 px, width range, height range (share of horizon), window size, haze, tint)
        (16, (24, 60), (0.12, 0.42), (3, 4), 0.6, 0.9),
        (10, (40, 100), (0.16, 0.62), (5, 7), 0.12, 0.9),
        (7, (70, 150), (0.08, 0.34), (7, 10), 0.0, 0.75),
    ]
    for index, (count, (wmin, wmax), (hmin, hmax), window, haze, tint) in enumerate(layers):
        x = -rng.uniform(0, wmin) * s
        while x < W:
            bw = rng.uniform(wmin, wmax) * s * width / 512
            bh = rng.uniform(hmin, hmax) * horizon
            if index == 1 and rng.random() < 0.08:
                bh = horizon * rng.uniform(0.66, 0.72)  # the odd landmark tower
            facade = light["facade"] * rng.uniform(0.75, 1.25, 3).astype(np.float32) * tint
            facade = lerp(facade, sky_at(horizon - 1), haze)
            gap = rng.uniform(-0.3, 0.4) * bw if index else rng.uniform(-0.5, 0.1) * bw
            _building(canvas, glow, rng, x, bw, horizon - bh, horizon, facade,
                      (window[0] * s * width / 512, window[1] * s * width / 512),
                      light["lit"] * (0.5 if haze > 0.5 else 1.0), light, sky_at(horizon - bh * 0.5), day,
                      rooftop=rng.random() < 0.6)
            x += bw + gap
    # Embankment and street lights.
    bank = horizon + 4 * s
    paint_rect(canvas, 0, horizon, W, bank, light["facade"] * 0.5)
    for lx in np.arange(rng.uniform(0, 30 * s), W, 38 * s * width / 512):
        if not day:
            paint_rect(canvas, lx, horizon - 2 * s, lx + 2 * s, horizon, rgb(255, 220, 150))
            paint_rect(glow, lx - s, horizon - 3 * s, lx + 3 * s, horizon + s, rgb(255, 200, 120))
    # Light glow (bloom) around windows and lamps; stronger at night.
    if light["glow"]:
        canvas = canvas + blur(glow, 6 * s) * 1.4 + blur(glow, 2 * s) * 0.5
    # River: the scene mirrored, rippled row by row, darkened, tinted and streaked vertically.
    water_rows = H - bank
    source = canvas[np.clip(2 * bank - np.arange(bank, H) - 1, 0, bank - 1)]
    depth = np.linspace(0, 1, water_rows, dtype=np.float32)
    shift = (np.sin(np.arange(water_rows) * 0.9) * 3 + rng.normal(0, 2.5, water_rows)) * s * (0.5 + depth)
    cols = (np.arange(W)[None, :] + shift[:, None].astype(int)) % W
    reflection = source[np.arange(water_rows)[:, None], cols]
    reflection = box_blur(reflection, 3 * s, axis=0)
    ripples = noise(rng, water_rows, W, cell=6 * s, octaves=2, stretch=8.0)[..., None]
    water = lerp(light["water"], reflection, 0.55 - 0.2 * depth[:, None, None]) * (0.85 + 0.3 * ripples)
    canvas[bank:] = water
    # Gentle vignette.
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot((xx - W / 2) / W, (yy - H / 2) / H)
    canvas = canvas * (1.0 - 0.35 * r ** 2)[..., None]
    return to_image(canvas, (width, height), grain=2.5, rng=rng)


# ----------------------------------------------------------------------------------- Udnie-like stand-in
UDNIE_PALETTE = [  # greys, blues, ochre, rust, creams and near-black, as in Picabia's "Udnie" (1913)
    rgb(92, 104, 122), rgb(140, 150, 160), rgb(188, 190, 186), rgb(232, 222, 198), rgb(244, 238, 222),
    rgb(62, 86, 126), rgb(104, 136, 170), rgb(196, 152, 82), rgb(214, 180, 120), rgb(164, 78, 52),
    rgb(204, 132, 110), rgb(38, 40, 48),
]


def _streak_textures(rng: np.random.Generator, size: int, angles: list[float]) -> list[np.ndarray]:
    """Brush-stroke textures: noise stretched along a direction, one per angle, values around 0."""
    base = rng.random((size // 2, size // 16), dtype=np.float32)  # strokes ~4 px wide, ~32 px long
    streaks = Image.fromarray(base, mode="F").resize((size * 2, size * 2), Image.BILINEAR)
    out = []
    for angle in angles:
        rotated = np.asarray(streaks.rotate(angle, resample=Image.BILINEAR))
        crop = rotated[size // 2:size // 2 + size, size // 2:size // 2 + size]
        out.append((crop - crop.mean()) / max(float(crop.std()), 1e-6))
    return out


def _bezier(points: np.ndarray, n: int = 48) -> np.ndarray:
    """Points along a cubic Bezier curve with control points (4, 2)."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = points
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def _shape_mask(size: int, polygon: np.ndarray) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in polygon], fill=255)
    return np.asarray(mask, dtype=np.float32) / 255.0


def _fill(canvas: np.ndarray, mask: np.ndarray, light: np.ndarray, dark: np.ndarray, direction: float,
          texture: np.ndarray, profile: str) -> None:
    """Paint `mask` with a hard-edged, shaded gradient (linear or cylindrical) plus brush texture."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u = xx * math.cos(direction) + yy * math.sin(direction)
    t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    if profile == "tube":  # metallic cylinder: bright band off-centre, dark edges
        t = 1.0 - np.clip(np.abs(t - 0.35) * 1.7, 0, 1) ** 0.8
        shade = lerp(dark, light, t[..., None])
    else:
        shade = lerp(light, dark, (t ** 1.3)[..., None])
    shade = shade * (1.0 + 0.045 * texture[y0:y1, x0:x1, None])
    m = mask[y0:y1, x0:x1, None]
    canvas[y0:y1, x0:x1] = lerp(canvas[y0:y1, x0:x1], shade, m)


def render_udnie_standin(size: int, seed: int) -> Image.Image:
    """Bold overlapping curved and angular planes in Udnie's palette, hard-edged, with brush texture."""
    rng = np.random.default_rng(seed)
    S = size * SUPERSAMPLE
    angles = [0.0, 35.0, 70.0, 110.0, 145.0]
    textures = _streak_textures(rng, S, angles)
    palette = UDNIE_PALETTE

    def pick() -> tuple[np.ndarray, np.ndarray]:
        base = palette[rng.integers(len(palette))]
        return np.clip(base * 1.25 + 0.05, 0, 1), base * rng.uniform(0.35, 0.6)

    # Background: a Voronoi partition into angular planes, each with its own shaded gradient.
    seeds = rng.uniform(0, S, (16, 2))
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    owner = np.argmin((xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2, axis=-1)
    canvas = np.zeros((S, S, 3), np.float32)
    for i in range(len(seeds)):
        light, dark = pick()
        k = rng.integers(len(angles))
        _fill(canvas, (owner == i).astype(np.float32), light, dark, math.radians(angles[k] + 90), textures[k],
              "linear")
    # Foreground: blades (crescents between two curves), tubes (shaded bands) and facets, swirling about
    # a centre a little above the middle, bigger near it, like the painting's dancing central mass.
    cx, cy = S * 0.52, S * 0.45
    for _ in range(46):
        radius = S * 0.42 * math.sqrt(rng.random())
        theta = rng.uniform(0, 2 * math.pi)
        px, py = cx + radius * math.cos(theta), cy + radius * math.sin(theta)
        scale = S * rng.uniform(0.12, 0.3) * (1.15 - radius / S)
        swirl = theta + math.pi / 2 + rng.normal(0, 0.5)  # orientation follows the swirl
        ux, uy = math.cos(swirl), math.sin(swirl)
        vx, vy = -uy, ux
        kind = rng.choice(["blade", "tube", "facet"], p=[0.4, 0.3, 0.3])
        if kind == "facet":
            k = rng.integers(3, 6)
            ang = np.sort(rng.uniform(0, 2 * math.pi, k))
            rad = scale * rng.uniform(0.4, 1.0, k)
            polygon = np.stack([px + rad * np.cos(ang + swirl), py + rad * np.sin(ang + swirl) * 0.6], -1)
        else:
            length, bend = scale * 1.6, scale * rng.uniform(0.3, 0.8) * rng.choice([-1, 1])
            start = np.array([px - ux * length / 2, py - uy * length / 2])
            end = np.array([px + ux * length / 2, py + uy * length / 2])
            normal = np.array([vx, vy])
            outer = _bezier(np.array([start, start + (end - start) / 3 + normal * bend,
                                      start + 2 * (end - start) / 3 + normal * bend, end]))
            if kind == "blade":
                inner = _bezier(np.array([start, start + (end - start) / 3 + normal * bend * 0.25,
                                          start + 2 * (end - start) / 3 + normal * bend * 0.35, end]))
            else:
                width = scale * rng.uniform(0.18, 0.35)
                inner = outer + normal * width * np.sign(bend)
            polygon = np.concatenate([outer, inner[::-1]])
        light, dark = pick()
        k = rng.integers(len(angles))
        direction = swirl + (math.pi / 2 if kind == "tube" else rng.uniform(-0.6, 0.6))
        _fill(canvas, _shape_mask(S, polygon), light, dark, direction, textures[k],
              "tube" if kind == "tube" else "linear")
        if rng.random() < 0.25:  # some shapes are edged in near-black, as in the painting
            line_layer = Image.new("L", (S, S), 0)
            ImageDraw.Draw(line_layer).line([tuple(p) for p in np.concatenate([polygon, polygon[:1]])],
                                            fill=255, width=int(rng.integers(2, 4)) * SUPERSAMPLE)
            lines = np.asarray(line_layer, np.float32)[..., None] / 255.0 * 0.8
            canvas = lerp(canvas, rgb(30, 30, 36), lines)
    # Canvas weave and fine grain.
    weave = (np.sin(xx * 1.7) * np.sin(yy * 1.7))[..., None] * 0.012
    canvas = canvas + weave
    return to_image(canvas, (size, size), grain=3.0, rng=rng)


# ----------------------------------------------------------------------------------------- other scenes
def render_mountains(width: int, height: int, seed: int) -> Image.Image:
    """Layered mountain ridges with aerial perspective over a lake that mirrors them."""
    rng = np.random.default_rng(seed)
    W, H = width * SUPERSAMPLE, height * SUPERSAMPLE
    shore = int(H * 0.72)
    canvas = gradient_rows(H, W, [(0.0, rgb(70, 120, 190)), (0.5, rgb(160, 196, 230)), (0.72, rgb(228, 222, 210)),
                                  (1.0, rgb(228, 222, 210))])
    clouds = noise(rng, shore, W, cell=50 * SUPERSAMPLE, octaves=5, stretch=3.0)
    canvas[:shore] = lerp(canvas[:shore], rgb(250, 250, 252), np.clip((clouds - 0.5) * 2.5, 0, 0.9)[..., None])
    ridge_colors = [rgb(150, 168, 196), rgb(108, 128, 160), rgb(70, 92, 104), rgb(44, 70, 52), rgb(28, 48, 32)]
    yy = np.arange(H)[:, None]
    for i, color in enumerate(ridge_colors):
        profile = noise(rng, 2, W, cell=160 / (i + 1) * SUPERSAMPLE, octaves=6)[0]
        top = shore - (0.45 - 0.08 * i) * H * (0.35 + 0.65 * profile)
        mask = (yy >= top[None, :]) & (yy < shore)
        texture = 0.85 + 0.3 * noise(rng, H, W, cell=(3 + i * 2) * SUPERSAMPLE, octaves=3)
        shade = np.clip((yy - top[None, :]) / (H * 0.25), 0, 1)  # darker towards the foot (shadowed slopes)
        fill = color[None, None, :] * (texture * (1.1 - 0.35 * shade))[..., None]
        if i == 0:  # snow caps on the farthest range
            fill = lerp(fill, rgb(245, 246, 250), (shade < 0.12)[..., None] * 0.8)
        canvas[mask] = fill[mask]
    mirrored = canvas[np.clip(2 * shore - np.arange(shore, H) - 1, 0, shore - 1)]
    ripple = noise(rng, H - shore, W, cell=4 * SUPERSAMPLE, octaves=2, stretch=10.0)[..., None]
    canvas[shore:] = lerp(rgb(40, 70, 100), mirrored, 0.7) * (0.85 + 0.25 * ripple)
    return to_image(canvas, (width, height), grain=2.0, rng=rng)


def render_still_life(width: int, height: int, seed: int) -> Image.Image:
    """Shaded spheres (fruit) casting shadows on a wooden table in front of a plain wall."""
    rng = np.random.default_rng(seed)
    W, H = width * SUPERSAMPLE, height * SUPERSAMPLE
    table = int(H * 0.55)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    wall = rgb(200, 190, 170) * (0.75 + 0.3 * noise(rng, H, W, cell=80, octaves=4))[..., None]
    grain = noise(rng, H, W, cell=10, octaves=3, stretch=30.0)
    wood = lerp(rgb(120, 72, 40), rgb(170, 110, 62), grain[..., None])
    canvas = np.where((yy < table)[..., None], wall, wood)
    canvas = canvas * (1.0 - 0.4 * np.clip((xx / W - 0.2), 0, 1))[..., None]  # light from the left
    fruits = [rgb(200, 40, 30), rgb(240, 170, 40), rgb(110, 160, 50), rgb(230, 120, 30), rgb(120, 40, 90)]
    for i in range(6):
        r = rng.uniform(0.07, 0.13) * H
        cx = W * (0.15 + 0.7 * (i + rng.uniform(0, 0.6)) / 6.3)
        cy = table + rng.uniform(0.1, 0.35) * (H - table)
        shadow = np.exp(-(((xx - cx - r * 0.9) / (r * 1.4)) ** 2 + ((yy - cy - r * 0.85) / (r * 0.35)) ** 2))
        canvas = canvas * (1.0 - 0.55 * shadow)[..., None]
        dx, dy = (xx - cx) / r, (yy - (cy - r * 0.6)) / r
        inside = dx ** 2 + dy ** 2 <= 1.0
        dz = np.sqrt(np.clip(1.0 - dx ** 2 - dy ** 2, 0, 1))
        lambert = np.clip(-0.55 * dx - 0.45 * dy + 0.7 * dz, 0, 1)  # light from upper left, front
        highlight = np.clip(-0.4 * dx - 0.5 * dy + 0.77 * dz, 0, 1) ** 40
        color = fruits[rng.integers(len(fruits))] * (0.25 + 0.85 * lambert)[..., None] + highlight[..., None] * 0.8
        canvas = np.where(inside[..., None], color, canvas)
    return to_image(canvas, (width, height), grain=2.0, rng=rng)


# -------------------------------------------------------------------------------------------------- video
def _rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> PyAV's packed yuv420p array (H * 3 / 2, W), BT.601 limited range.

    Done here rather than by FFmpeg's swscale so that no SIMD code path can make the video's bytes differ
    between runs.
    """
    r, g, b = (image[..., c].astype(np.float64) for c in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape
    u, v = (c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v))  # 2x2 chroma subsampling
    planes = [y, u.reshape(-1, w), v.reshape(-1, w)]
    return np.concatenate([np.clip(np.round(p), 0, 255).astype(np.uint8) for p in planes])


def make_video(path: Path, source: Image.Image, size: tuple[int, int] = (320, 240), seconds: float = 3.0,
               fps: int = 24) -> None:
    """Slow pan and zoom over `source`, H.264 + an AAC melody, via PyAV."""
    import av  # runtime dependency of the project; imported here so the image part works without it

    frames = int(seconds * fps)
    sample_rate = 44100
    # bitexact: no creation time or encoder version in the file, so reruns give the same bytes.
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        # Same bytes every run: one thread, and no x264 assembly (its output varied with memory alignment).
        video.options = {"crf": "26", "preset": "medium", "tune": "film", "flags": "+bitexact",
                         "x264-params": "asm=0"}
        video.codec_context.thread_count = 1
        audio = container.add_stream("aac", rate=sample_rate)
        audio.codec_context.layout = "mono"
        audio.codec_context.bit_rate = 48000
        audio.options = {"flags": "+bitexact"}
        sw, sh = source.size
        for i in range(frames):
            t = i / (frames - 1)
            ease = 0.5 - 0.5 * math.cos(math.pi * t)
            box_w = sw * lerp(0.92, 0.62, ease)  # zoom in while panning right and up a little
            box_h = box_w * size[1] / size[0]
            x0 = lerp(0.02 * sw, sw - box_w - 0.04 * sw, ease)
            y0 = lerp(sh - box_h - 0.02 * sh, 0.12 * sh, ease)
            frame_image = source.resize(size, Image.LANCZOS, box=(x0, y0, x0 + box_w, y0 + box_h))
            frame = av.VideoFrame.from_ndarray(_rgb_to_yuv420p(np.asarray(frame_image)), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        # Audio: a little pentatonic tune with soft attacks, sine plus a quieter octave.
        notes = [392.0, 440.0, 523.25, 587.33, 659.25, 587.33, 523.25, 440.0, 392.0, 329.63, 392.0, 523.25]
        total = int(seconds * sample_rate)
        signal = np.zeros(total, np.float32)
        step = total // len(notes)
        for k, freq in enumerate(notes):
            n = np.arange(step)
            envelope = np.minimum(1.0, n / 400.0) * np.exp(-n / (0.35 * sample_rate))
            tone = np.sin(2 * np.pi * freq * n / sample_rate) + 0.3 * np.sin(4 * np.pi * freq * n / sample_rate)
            signal[k * step:(k + 1) * step] = 0.25 * envelope * tone
        frame_size = audio.codec_context.frame_size or 1024
        for start in range(0, total, frame_size):
            chunk = signal[start:start + frame_size]
            chunk = np.pad(chunk, (0, frame_size - len(chunk)))[None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    print(f"wrote {_shown(path)} ({size[0]}x{size[1]}, {seconds:g} s at {fps} fps, "
          f"{path.stat().st_size // 1024} KiB)")


# ------------------------------------------------------------------------------------------------- photos
PHOTOS = {  # skimage.data name -> (file name in train2014/default_class, longest side, greyscale)
    "astronaut": ("astronaut.jpg", 256, False),
    "coffee": ("coffee.jpg", 256, False),
    "chelsea": ("chelsea.jpg", 256, False),
    "rocket": ("rocket.jpg", 256, False),
    "camera": ("camera_grey.jpg", 256, True),  # greyscale on purpose: COCO has some, loaders must cope
}


def _photo(name: str) -> Image.Image:
    import skimage.data  # dev-only dependency, only for these photos

    return Image.fromarray(getattr(skimage.data, name)())


def _fit(image: Image.Image, longest: int) -> Image.Image:
    scale = longest / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def make_photos() -> bool:
    """Copy the CC0 / public-domain scikit-image photos; False (and a note) when scikit-image is missing."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        print("scikit-image is not installed: kept the existing photos (pip install scikit-image to redo them)")
        return False
    save_jpeg(_photo("astronaut"), DATA / "astronaut.jpg")
    for name, (file_name, longest, grey) in PHOTOS.items():
        image = _fit(_photo(name), longest)
        save_jpeg(image.convert("L") if grey else image.convert("RGB"), TRAIN / file_name)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip_photos", action="store_true", help="do not rewrite the scikit-image photos")
    parser.add_argument("--skip_video", action="store_true", help="do not rewrite data/maigua.mp4")
    parser.add_argument("--skip_udnie", action="store_true",
                        help="do not rewrite data/udnie.jpg (e.g. after putting the real painting there)")
    args = parser.parse_args(argv)
    city = render_city(512, 384, seed=1913)
    save_jpeg(city, DATA / "city.jpg")
    make_region_masks(city.width, city.height)
    if not args.skip_udnie:
        save_jpeg(render_udnie_standin(512, seed=1913), DATA / "udnie.jpg")
    save_jpeg(render_city(256, 192, seed=7, lighting="night"), TRAIN / "city_night.jpg")
    save_jpeg(render_city(256, 192, seed=11, lighting="day"), TRAIN / "city_day.jpg")
    save_jpeg(render_city(192, 256, seed=23, lighting="dusk"), TRAIN / "city_dusk_tall.jpg")
    save_jpeg(render_mountains(256, 192, seed=3), TRAIN / "mountains.jpg")
    save_jpeg(render_still_life(256, 192, seed=5), TRAIN / "still_life.jpg")
    if not args.skip_photos:
        make_photos()
    if not args.skip_video:
        make_video(DATA / "maigua.mp4", render_city(960, 720, seed=1913))
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    print(f"data/ holds {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
