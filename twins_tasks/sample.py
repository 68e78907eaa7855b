"""A small generated dataset in ImageNet's validation layout, for trying the pipeline without ImageNet.

``DIR/<wnid>/ILSVRC2012_val_<8 digits>.JPEG`` (real ImageNet-1k wnids, so labels are ImageNet indices):
photo-like pictures (gradients, shapes, blur, noise) of varied sizes and aspect ratios, including the odd files
real ImageNet val holds: a grayscale JPEG, a CMYK JPEG and a PNG saved under a ``.JPEG`` name. The pictures
are GENERATED: accuracy measured on them means nothing; they exist to exercise the file formats, sizes and
layout. Same seed => byte-identical files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .constants import NUM_CLASSES
from .errors import InputError
from .files import atomic_path, write_json_atomic
from .labels import imagenet_wnids

log = logging.getLogger(__name__)

GENERATED_NOTE = "generated pictures, NOT ImageNet: accuracy on them is meaningless"
# Written beside the class folders: preprocess and the run records read it, so every report and results row
# of a run on these pictures says they are generated. A dot file: ImageFolder listings skip it.
SAMPLE_MARKER = ".twins-sample.json"
# Given to the first images in round-robin order (1st of each class, then 2nd, ...) so that even a
# 3-class sample, or `preprocess --limit 3` of it, holds the formats real ImageNet val surprises people with.
SPECIAL_KINDS = ("gray", "cmyk", "png", "small", "portrait")
MIN_SIDE, MAX_SIDE = 120, 600
_ASPECTS = (4 / 3, 3 / 2, 1.0, 5 / 4, 16 / 9, 1.2)


def synthetic_photo(width: int, height: int, seed: int | list[int] = 0) -> Image.Image:
    """An RGB picture with a smooth gradient, soft shapes and sensor-like noise (not flat: resampling shows)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= max(width - 1, 1)
    y /= max(height - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    start, end, glow = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    cx, cy, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.5)
    light = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
    base = start * (1 - t[..., None]) + end * t[..., None]
    base = base * (1 - 0.6 * light) + glow * 0.6 * light
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * width)
        y0, y1 = sorted(rng.uniform(-0.2, 1.2, 2) * height)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=fill)
        elif shape == 1:
            draw.rectangle((x0, y0, x1 + 1, y1 + 1), fill=fill)
        else:
            points = [(float(px * width), float(py * height)) for px, py in rng.uniform(0, 1, (3, 2))]
            draw.polygon(points, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.6, 2.5))))

    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(3, 10), (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _size(kind: str, rng: np.random.Generator, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) for one picture of ``kind``."""
    if kind == "small":  # both sides under 256: Resize(256) must upscale
        return int(rng.integers(MIN_SIDE, 250)), int(rng.integers(MIN_SIDE, 250))
    if kind == "portrait":
        width = int(rng.integers(200, 400))
        return width, min(MAX_SIDE, int(width * rng.uniform(1.2, 1.6)))
    if image_size is not None:
        return image_size
    short = int(rng.integers(180, 480))
    long = min(MAX_SIDE, int(short * _ASPECTS[int(rng.integers(len(_ASPECTS)))]))
    return (short, long) if rng.uniform() < 0.25 else (long, short)


def _save(image: Image.Image, kind: str, path: Path, rng: np.random.Generator) -> None:
    quality = int(rng.integers(75, 96))
    with atomic_path(path) as tmp:
        # The temp name ends in .tmp, so the format is always named explicitly.
        if kind == "gray":
            image.convert("L").save(tmp, "JPEG", quality=quality)
        elif kind == "cmyk":
            image.convert("CMYK").save(tmp, "JPEG", quality=quality)
        elif kind == "png":  # a PNG under a .JPEG name, as ImageNet has
            image.save(tmp, "PNG")
        else:
            image.save(tmp, "JPEG", quality=quality, progressive=bool(rng.uniform() < 0.2))


def make_sample(
    out: str | Path, classes: int, per_class: int, seed: int = 0, *, image_size: tuple[int, int] | None = None
) -> list[Path]:
    """Write ``classes * per_class`` generated pictures in ImageNet val layout under ``out``; return their paths.

    :param image_size: (width, height) for the ordinary pictures (the special kinds keep their own sizes);
        by default sizes and aspect ratios vary between 120 and 600 pixels a side.
    """
    if not 1 <= classes <= NUM_CLASSES or per_class < 1:
        raise InputError(
            f"make-sample needs 1 <= --classes <= {NUM_CLASSES} and --per-class >= 1 (got {classes}, {per_class})"
        )
    out = Path(out)
    rng = np.random.default_rng(seed)
    # Real ImageNet-1k wnids, sorted like ImageNet's class folders: labels are then their ImageNet class
    # indices, exactly as for a subset of the real val set (twins_tasks.labels).
    wnids = sorted(imagenet_wnids()[int(i)] for i in rng.choice(NUM_CLASSES, size=classes, replace=False))
    # Real val files are numbered across all classes in no class order: do the same.
    numbers = (rng.permutation(classes * per_class) + 1).reshape(classes, per_class)
    numbers.sort(axis=1)

    paths: list[Path] = []
    for class_index, wnid in enumerate(wnids):
        for item, number in enumerate(numbers[class_index]):
            position = item * classes + class_index  # round-robin order: 1st of each class, then 2nd...
            kind = SPECIAL_KINDS[position] if position < len(SPECIAL_KINDS) else "photo"
            image_rng = np.random.default_rng([seed, int(number)])
            width, height = _size(kind, image_rng, image_size)
            image = synthetic_photo(width, height, seed=[seed, int(number), 1])
            path = out / wnid / f"ILSVRC2012_val_{int(number):08d}.JPEG"
            _save(image, kind, path, image_rng)
            paths.append(path)
    write_json_atomic(
        out / SAMPLE_MARKER,
        {
            "generated_by": "twins make-sample",
            "classes": classes,
            "per_class": per_class,
            "seed": seed,
            "note": GENERATED_NOTE,
        },
    )
    log.info("Generated %d pictures in %d classes under %s (%s)", len(paths), classes, out, GENERATED_NOTE)
    return sorted(paths)


def is_generated(root: str | Path) -> bool:
    """True when ``root`` was written by ``twins make-sample`` (its marker file is there)."""
    return (Path(root) / SAMPLE_MARKER).is_file()
