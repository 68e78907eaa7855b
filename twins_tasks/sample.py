"""A small generated dataset in ImageNet's validation layout, for trying the pipeline without ImageNet.

``DIR/<wnid>/ILSVRC2012_val_<8 digits>.JPEG`` (real ImageNet-1k wnids, so labels are ImageNet indices):
photo-like pictures (gradients, shapes, blur, noise) of varied sizes and aspect ratios, including the odd files
real ImageNet val holds: a grayscale JPEG, a CMYK JPEG and a PNG saved under a ``.JPEG`` name. The pictures
are GENERATED: accuracy measured on them means nothing; they exist to exercise the file formats, sizes and
layout. Same seed => byte-identical files (each picture has its own random stream, so the worker processes that
write them in parallel do not change a byte: 50,000 pictures take a few minutes on 2 cores).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .constants import NUM_CLASSES
from .errors import InputError
from .files import atomic_path, write_json_atomic
from .labels import imagenet_wnids
from .preprocess.workers import default_workers, watched_map, worker_context

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
    """An RGB picture with a smooth gradient, soft shapes and sensor-like noise (not flat: resampling shows).

    Gradient, glow and shapes are drawn and blurred at half size, then enlarged (bilinear: as soft as a lens), and
    the noise is added at full size: a third of the cost of drawing it all at full size.
    """
    rng = np.random.default_rng(seed)
    half_w, half_h = (width + 1) // 2, (height + 1) // 2
    x = np.linspace(0, 1, half_w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, half_h, dtype=np.float32)[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    t = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    start, end, glow = rng.uniform(0, 255, (3, 3, 1, 1)).astype(np.float32)  # per channel: planes (3, h, w)
    cx, cy, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.5)
    light = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    planes = (start * (1 - t) + end * t) * (1 - 0.6 * light) + glow * (0.6 * light)
    image = Image.fromarray(np.ascontiguousarray(np.clip(planes, 0, 255).astype(np.uint8).transpose(1, 2, 0)), "RGB")

    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * half_w)
        y0, y1 = sorted(rng.uniform(-0.2, 1.2, 2) * half_h)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=fill)
        elif shape == 1:
            draw.rectangle((x0, y0, x1 + 1, y1 + 1), fill=fill)
        else:
            points = [(float(px * half_w), float(py * half_h)) for px, py in rng.uniform(0, 1, (3, 2))]
            draw.polygon(points, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.25))))
    image = image.resize((width, height), Image.Resampling.BILINEAR)

    # Sensor-like noise: one uniform draw added and another taken away (triangular, -mask..mask), from raw random
    # bytes, in Pillow's saturating uint8 arithmetic.
    mask = (7, 15)[int(rng.integers(2))]
    raw = np.frombuffer(rng.bytes(2 * height * width * 3), dtype=np.uint8).reshape(2, height, width, 3) & mask
    up, down = (Image.fromarray(plane, "RGB") for plane in raw)
    return ImageChops.subtract(ImageChops.add(image, up), down)


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


def _make_one(task: tuple[Path, str, int, int, tuple[int, int] | None]) -> Path:
    """Write one picture (a pool task: top-level, so that it pickles); its own random stream makes it the same
    whichever process writes it."""
    path, kind, seed, number, image_size = task
    image_rng = np.random.default_rng([seed, number])
    width, height = _size(kind, image_rng, image_size)
    image = synthetic_photo(width, height, seed=[seed, number, 1])
    _save(image, kind, path, image_rng)
    return path


def make_sample(
    out: str | Path,
    classes: int,
    per_class: int,
    seed: int = 0,
    *,
    image_size: tuple[int, int] | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Write ``classes * per_class`` generated pictures in ImageNet val layout under ``out``; return their paths.

    :param image_size: (width, height) for the ordinary pictures (the special kinds keep their own sizes);
        by default sizes and aspect ratios vary between 120 and 600 pixels a side.
    :param workers: processes writing pictures (default: every available core; 1 = in this process).
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

    tasks = []
    for class_index, wnid in enumerate(wnids):
        (out / wnid).mkdir(parents=True, exist_ok=True)
        for item, number in enumerate(numbers[class_index]):
            position = item * classes + class_index  # round-robin order: 1st of each class, then 2nd...
            kind = SPECIAL_KINDS[position] if position < len(SPECIAL_KINDS) else "photo"
            path = out / wnid / f"ILSVRC2012_val_{int(number):08d}.JPEG"
            tasks.append((path, kind, seed, int(number), image_size))
    workers = min(workers or default_workers(), len(tasks))
    if workers > 1:
        # Chunks amortise the round trip to the pool.
        with worker_context(__name__).Pool(workers) as pool:
            chunksize = max(1, min(64, len(tasks) // (workers * 8)))
            paths = list(watched_map(pool, _make_one, tasks, chunksize, "make-sample"))
    else:
        paths = [_make_one(task) for task in tasks]
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
