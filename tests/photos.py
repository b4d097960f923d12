"""Photos for tests that need real image files but not the Im2GPS3k splits.

The repository's own sample photo (samples/kauai.jpg, not an Im2GPS photo) comes first; the rest
are drawn here with Pillow: scenes of several kinds (a landscape under a sky, a street of lit
buildings, a textured field, overlapping discs, a tiled floor), each with its own colours, shapes
and size, and none symmetric, so that a photo and its rotation embed apart. With EfficientNet-Lite2
the first six are far apart (cosine at most 0.7 between any two; Im2GPS3k val photos: about 0.5).
Every draw is seeded: the same photos on every run.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from geoloc.common.paths import CHECKOUT

SAMPLES = CHECKOUT / "samples"
KAUAI = SAMPLES / "kauai.jpg"  # GeoCLIP's Kauaʻi photo, no EXIF GPS
KAUAI_GPS = SAMPLES / "kauai_gps.jpg"  # the same photo, EXIF GPS 22.07 N, 159.66 W written in

SIZES = [(640, 480), (480, 640), (800, 533), (384, 384), (1024, 300), (512, 384), (300, 700), (720, 405)]


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, 3))


def _landscape(draw: ImageDraw.ImageDraw, rng, w: int, h: int) -> None:
    top, bottom = _colour(rng, 60, 230), _colour(rng, 150, 256)
    for y in range(h):
        t = y / h
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for layer in range(3):
        base = h * (0.45 + 0.15 * layer)
        heights = np.cumsum(rng.normal(0, h / 40, w // 8 + 2)) + base
        ridge = [(8 * i, float(np.clip(y, h * 0.2, h))) for i, y in enumerate(heights)]
        draw.polygon([(0, h), *ridge, (w, h)], fill=_colour(rng, 0, 160))
    sun = rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.3) * h
    radius = rng.uniform(0.03, 0.08) * w
    draw.ellipse([sun[0] - radius, sun[1] - radius, sun[0] + radius, sun[1] + radius], fill=_colour(rng, 200, 256))


def _street(draw: ImageDraw.ImageDraw, rng, w: int, h: int) -> None:
    draw.rectangle([0, 0, w, h], fill=_colour(rng, 0, 90))
    x = 0
    while x < w:
        width, height = int(rng.integers(w // 12, w // 4)), int(rng.integers(h // 4, h - h // 8))
        draw.rectangle([x, h - height, x + width, h], fill=_colour(rng, 40, 200))
        for wy in range(h - height + 8, h - 12, 18):
            for wx in range(x + 6, x + width - 10, 14):
                if rng.random() < 0.6:
                    draw.rectangle([wx, wy, wx + 7, wy + 9], fill=_colour(rng, 180, 256))
        x += width + int(rng.integers(0, w // 20))
    draw.rectangle([0, int(h * 0.92), w, h], fill=_colour(rng, 30, 110))


def _field(draw: ImageDraw.ImageDraw, rng, w: int, h: int) -> None:
    draw.rectangle([0, 0, w, h], fill=_colour(rng, 40, 200))
    for _ in range(900):
        x, y = rng.uniform(0, w), rng.uniform(h * 0.3, h)
        length = rng.uniform(5, 25) * (y / h)
        draw.line([(x, y), (x + rng.normal(0, 3), y - length)], fill=_colour(rng, 0, 220), width=2)
    draw.rectangle([0, 0, w, int(h * 0.3)], fill=_colour(rng, 100, 256))


def _discs(draw: ImageDraw.ImageDraw, rng, w: int, h: int) -> None:
    draw.rectangle([0, 0, w, h], fill=_colour(rng, 0, 120))
    for _ in range(int(rng.integers(12, 40))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.02, 0.15) * min(w, h)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_colour(rng), outline=_colour(rng), width=3)


def _tiles(draw: ImageDraw.ImageDraw, rng, w: int, h: int) -> None:
    side = int(rng.integers(20, 60))
    a, b = _colour(rng), _colour(rng)
    for row, y in enumerate(range(0, h, side)):
        shift = int(rng.integers(0, side))
        for column, x in enumerate(range(-shift, w, side)):
            draw.rectangle([x, y, x + side - 2, y + side - 2], fill=a if (row + column) % 2 else b)
    for _ in range(5):  # scuffs that break the tiling's symmetry
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        draw.line([(x, y), (x + rng.normal(0, w / 4), y + rng.normal(0, h / 4))], fill=_colour(rng), width=6)


KINDS = (_landscape, _street, _field, _discs, _tiles)


def synthetic_photo(seed: int) -> Image.Image:
    """A seeded scene of one of the KINDS, of one of the SIZES, lightly textured and blurred."""
    rng = np.random.default_rng(seed)
    w, h = SIZES[seed % len(SIZES)]
    image = Image.new("RGB", (w, h))
    KINDS[seed % len(KINDS)](ImageDraw.Draw(image), rng, w, h)
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    noise = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def encode(image: Image.Image, format: str, **options) -> bytes:
    """The image's bytes in `format` (a Pillow format name), saved with Pillow's `options`."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def write_split(root: Path, rows: list[tuple[str, float, float, str]], photos: dict[str, Path] | None = None) -> Path:
    """A split folder as `geoloc eval` reads it: labels.csv with `rows` (image, lat, lon, author) and
    images/, holding a copy of each of `photos` (name -> file) when given. Returns `root`."""
    (root / "images").mkdir(parents=True)
    lines = ["image,lat,lon,author", *(f"{name},{lat},{lon},{author}" for name, lat, lon, author in rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    for name, path in (photos or {}).items():
        (root / "images" / name).write_bytes(path.read_bytes())
    return root


def write_photos(folder: Path, count: int) -> list[Path]:
    """samples/kauai.jpg, then `count - 1` synthetic JPEGs written to `folder`, in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [KAUAI]
    for seed in range(count - 1):
        path = folder / f"synthetic-{seed:02d}.jpg"
        path.write_bytes(encode(synthetic_photo(seed), "JPEG", quality=90))
        paths.append(path)
    return paths


DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian's fonts-dejavu-core
NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")  # Debian's fonts-noto-cjk


def sign_photo(text: str, font: Path, size: tuple[int, int] = (640, 400), seed: int = 0) -> Image.Image:
    """A street sign: `text` in dark letters on a pale board, over a seeded scene (sky, buildings)."""
    from PIL import ImageFont

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, _colour(rng, 90, 200))
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(6):  # buildings along the bottom
        left = int(rng.integers(0, width - 60))
        top = int(rng.integers(height // 3, height - 40))
        draw.rectangle((left, top, left + int(rng.integers(60, 200)), height), fill=_colour(rng, 40, 160))
    lettering = ImageFont.truetype(str(font), 40)
    box = draw.textbbox((0, 0), text, font=lettering)
    left, top = (width - (box[2] - box[0])) // 2, height // 3
    draw.rectangle((left - 24, top - 20, left + box[2] - box[0] + 24, top + box[3] - box[1] + 28), fill=(240, 240, 232))
    draw.text((left - box[0], top - box[1] + 4), text, font=lettering, fill=(25, 30, 35))
    return image
