"""Draw fastconv's built-in sample images with NumPy and write them as PNG.

Run from the repository root::

    python tools/make_sample_images.py

It (re)writes ``fastconv/data/car.png`` (a side view of a car on a road, in
the spirit of the lesson's grayscale car photograph) and
``fastconv/data/shapes.png`` (a geometric test scene: disc, square, triangle,
ring and stripes).  Both are 8-bit grayscale, a few KB each, fully
deterministic, and made by this project -- no photograph or third-party image
is involved.  Needs Pillow (the ``viz`` extra) only to encode the PNG.
"""
import argparse
from pathlib import Path

import numpy as np

SUPERSAMPLE = 4
OUT_DIR = Path(__file__).resolve().parent.parent / "fastconv" / "data"


class Canvas:
    """A float image in [0, 1] drawn at SUPERSAMPLE x resolution, then box-filtered down."""

    def __init__(self, height, width, value=0.0):
        self.h, self.w = height * SUPERSAMPLE, width * SUPERSAMPLE
        self.img = np.full((self.h, self.w), value, dtype=np.float64)
        # pixel-centre coordinates in *output* pixels
        ys = (np.arange(self.h) + 0.5) / SUPERSAMPLE
        xs = (np.arange(self.w) + 0.5) / SUPERSAMPLE
        self.y, self.x = np.meshgrid(ys, xs, indexing="ij")

    def fill(self, mask, value):
        """Paint ``value`` (a number or an array like the canvas) where ``mask`` holds."""
        if np.ndim(value):
            self.img[mask] = value[mask]
        else:
            self.img[mask] = value

    def rect(self, y0, x0, y1, x1, value):
        self.fill((self.y >= y0) & (self.y < y1) & (self.x >= x0) & (self.x < x1), value)

    def ellipse(self, cy, cx, ry, rx, value):
        self.fill(((self.y - cy) / ry) ** 2 + ((self.x - cx) / rx) ** 2 <= 1.0, value)

    def disc(self, cy, cx, r, value):
        self.ellipse(cy, cx, r, r, value)

    def polygon(self, points, value):
        """Fill a convex polygon given as (y, x) vertices in counter-clockwise screen order."""
        pts = np.asarray(points, dtype=np.float64)
        inside = np.ones_like(self.img, dtype=bool)
        sign = None
        for (y0, x0), (y1, x1) in zip(pts, np.roll(pts, -1, axis=0)):
            cross = (x1 - x0) * (self.y - y0) - (y1 - y0) * (self.x - x0)
            if sign is None:
                # orientation from the polygon's own winding
                area = np.sum(pts[:, 1] * np.roll(pts[:, 0], -1) - np.roll(pts[:, 1], -1) * pts[:, 0])
                sign = 1.0 if area > 0 else -1.0
            inside &= sign * cross >= 0
        self.fill(inside, value)

    def result(self):
        s = SUPERSAMPLE
        small = self.img.reshape(self.h // s, s, self.w // s, s).mean(axis=(1, 3))
        return np.clip(small, 0.0, 1.0)


def draw_car(height=160, width=240):
    """A grey car, side view, on a road under a sky gradient."""
    c = Canvas(height, width)
    sky = 0.85 - 0.35 * (c.y / height)
    c.fill(np.ones_like(c.img, dtype=bool), sky)
    road_top = 0.72 * height
    c.rect(road_top, 0, height, width, 0.30)
    # lane markings
    for x0 in range(6, width, 48):
        c.rect(0.88 * height, x0, 0.91 * height, x0 + 24, 0.80)
    # a building block and a tree in the background
    c.rect(0.22 * height, 0.70 * width, road_top, 0.95 * width, 0.55)
    for row in range(3):
        for col in range(3):
            y0 = 0.28 * height + row * 0.13 * height
            x0 = 0.73 * width + col * 0.07 * width
            c.rect(y0, x0, y0 + 0.07 * height, x0 + 0.04 * width, 0.35)
    c.rect(0.45 * height, 0.12 * width, road_top, 0.15 * width, 0.25)
    c.disc(0.38 * height, 0.135 * width, 0.12 * height, 0.45)
    # car body: lower box with rounded ends, cabin as a trapezoid
    base = 0.80 * height
    body_top = 0.58 * height
    x_left, x_right = 0.20 * width, 0.80 * width
    body = 0.62
    c.rect(body_top, x_left + 8, base, x_right - 8, body)
    c.ellipse((body_top + base) / 2, x_left + 8, (base - body_top) / 2, 10, body)
    c.ellipse((body_top + base) / 2, x_right - 8, (base - body_top) / 2, 10, body)
    roof = 0.40 * height
    c.polygon([(body_top + 1, 0.30 * width), (roof, 0.40 * width), (roof, 0.62 * width),
               (body_top + 1, 0.72 * width)], body)
    # windows, darker, split by a pillar
    glass = 0.18
    inset = 0.025 * height
    c.polygon([(body_top - 1, 0.33 * width), (roof + inset, 0.415 * width),
               (roof + inset, 0.505 * width), (body_top - 1, 0.505 * width)], glass)
    c.polygon([(body_top - 1, 0.52 * width), (roof + inset, 0.52 * width),
               (roof + inset, 0.605 * width), (body_top - 1, 0.69 * width)], glass)
    # door line, handle, lights
    c.rect(body_top + 2, 0.51 * width, base - 6, 0.515 * width, 0.40)
    c.rect(body_top + 8, 0.45 * width, body_top + 10, 0.48 * width, 0.35)
    c.ellipse(body_top + 9, x_right - 3, 3, 5, 0.95)
    c.ellipse(body_top + 9, x_left + 3, 3, 5, 0.40)
    # wheels: tyre, rim, hub
    for cx in (0.33 * width, 0.67 * width):
        c.disc(base, cx, 0.095 * height, 0.08)
        c.disc(base, cx, 0.055 * height, 0.70)
        c.disc(base, cx, 0.018 * height, 0.25)
    return c.result()


def draw_shapes(height=128, width=128):
    """A geometric test scene: disc, square, triangle, ring and stripes on dark grey."""
    c = Canvas(height, width, 0.15)
    c.disc(0.28 * height, 0.28 * width, 0.18 * height, 0.90)
    c.rect(0.12 * height, 0.58 * width, 0.45 * height, 0.90 * width, 0.60)
    c.polygon([(0.90 * height, 0.10 * width), (0.90 * height, 0.45 * width),
               (0.55 * height, 0.275 * width)], 0.75)
    ring = np.hypot(c.y - 0.74 * height, c.x - 0.74 * width)
    c.fill((ring <= 0.17 * height) & (ring >= 0.10 * height), 1.0)
    for k in range(4):
        x0 = 0.56 * width + k * 0.09 * width
        c.rect(0.50 * height, x0, 0.55 * height, x0 + 0.045 * width, 0.45)
    return c.result()


SCENES = {"car": draw_car, "shapes": draw_shapes}


def write_png(arr, path):
    from PIL import Image

    Image.fromarray(np.round(arr * 255).astype(np.uint8), mode="L").save(path, optimize=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, draw in SCENES.items():
        path = args.out_dir / f"{name}.png"
        write_png(draw(), path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
