"""The recipe's transform of one image, re-done with PIL + numpy: bit-identical to torchvision's.

``Resize(256, BICUBIC) -> CenterCrop(224) -> ToTensor() -> Normalize(mean, std)`` on
``PIL.Image.open(f).convert("RGB")``; torchvision is not needed at run time (tests compare against it).

An image so elongated that Resize(256) would make it huge (a 1×6000 PNG of 108 bytes becomes 256×1,536,000:
1.6 GB) is not resized whole: only the 224×224 pixels the center crop keeps are computed, with Pillow's own
bicubic arithmetic (:func:`_center_crop_of_huge`), bit-identical to the whole resize. Where that cannot be
guaranteed, the image is refused as bad input, naming its size and the bound.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
from PIL import Image

from ..constants import IMAGE_SIZE, MEAN, RESIZE_SIZE, STD
from ..errors import InputError

# Part of the preprocessed-inputs cache key: bump when the bytes a given image produces change.
TRANSFORM_VERSION = "1"
# Resize outputs above this many pixels are not made whole (Pillow keeps RGB in 4 bytes a pixel: 256 MiB); only
# images with an aspect ratio beyond ~1:1000 get there, far from any photo.
MAX_RESIZED_PIXELS = 1 << 26


def _normalize_lut() -> np.ndarray:
    """(3, 256) float32: ToTensor + Normalize for each uint8 value, computed with the same float32 ops.

    torchvision does ``x.to(float32).div(255)`` then ``sub_(mean).div_(std)`` with float32 mean/std;
    each output depends on one uint8 input only, so a lookup of those exact operations gives identical
    bits at a third of the cost of doing the arithmetic on every pixel.
    """
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    mean = np.asarray(MEAN, dtype=np.float32)[:, None]
    std = np.asarray(STD, dtype=np.float32)[:, None]
    return np.ascontiguousarray((values[None, :] - mean) / std, dtype=np.float32)


_LUT = _normalize_lut()


def resized_size(width: int, height: int, size: int = RESIZE_SIZE) -> tuple[int, int]:
    """torchvision's Resize(size) output (width, height): short side = size, long side truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (left, top, right, bottom); Python's round() (half to even), as it uses."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB, as torchvision's ``pil_loader`` does.

    ``convert`` forces the decode: a truncated file fails here, not later (PIL opens lazily).
    """
    with open(path, "rb") as fh:
        return Image.open(fh).convert("RGB")


def transform_rgb(image: Image.Image) -> np.ndarray:
    """Resize(256, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize on an RGB image: (3,224,224) float32.

    :raises InputError: an image whose resize exceeds MAX_RESIZED_PIXELS and whose crop cannot be computed
        exactly without it (see :func:`_center_crop_of_huge`).
    """
    size = resized_size(*image.size)
    if size[0] * size[1] > MAX_RESIZED_PIXELS:
        pixels = _center_crop_of_huge(image, size)
    else:
        if size != image.size:  # torchvision returns the image untouched when it already has the size
            image = image.resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(image.crop(center_crop_box(*size)))  # (224, 224, 3) uint8
    out = np.empty((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for channel in range(3):
        np.take(_LUT[channel], pixels[:, :, channel], out=out[channel])
    return out


def transform_image(path: str | os.PathLike) -> np.ndarray:
    """The recipe's transform of one image file: (3, 224, 224) float32, CHW, normalised."""
    try:
        return transform_rgb(load_rgb(path))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


# ------------------------------------------------------------------------------ the crop of a huge resize
#
# Pillow resizes in two passes, one per axis, each to uint8 (src/libImaging/Resample.c): fixed-point weights
# (PRECISION_BITS) from double arithmetic. Below is the same arithmetic, for a range of output indices only, so the
# crop of a huge resize costs 224 rows instead of millions. Which axis Pillow resamples first depends on its
# version (13 goes vertical first when the height shrinks much more than the width), and the two orders round
# differently; the crop is used only when both orders give the same pixels (always so for a 1-pixel-wide or -high
# image, whose short-axis pass is an exact copy), and only after a check that these passes equal Pillow's on this
# host (_passes_match_pillow).

_PRECISION_BITS = 32 - 8 - 2
_BICUBIC_SUPPORT = 2.0


def _bicubic(x: float) -> float:
    """Pillow's bicubic_filter (a = -0.5), the same operations in the same order."""
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _taps(in_size: int, out_size: int, first: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First source index, number of taps and fixed-point weights (count, ksize) of output indices
    ``first .. first+count-1`` of a bicubic ``in_size -> out_size`` pass: Pillow's precompute_coeffs and
    normalize_coeffs_8bpc with the box of a whole resize (in0 = 0, in1 = in_size)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _BICUBIC_SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    starts = np.zeros(count, dtype=np.int64)
    lengths = np.zeros(count, dtype=np.int64)
    weights = np.zeros((count, ksize), dtype=np.int64)
    for j in range(count):
        center = 0.0 + (first + j + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ks = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for k in ks:
            ww += k
        if ww != 0.0:
            ks = [k / ww for k in ks]
        starts[j], lengths[j] = xmin, xmax
        weights[j, :xmax] = [
            int(-0.5 + k * (1 << _PRECISION_BITS)) if k < 0 else int(0.5 + k * (1 << _PRECISION_BITS)) for k in ks
        ]
    return starts, lengths, weights


def _resample_rows(
    pixels: np.ndarray, in_size: int, out_size: int, first: int, count: int, offset: int = 0
) -> np.ndarray:
    """Output rows ``first .. first+count-1`` of Pillow's bicubic pass over the rows (axis 0) of a uint8 array
    whose row 0 is source row ``offset`` of ``in_size``: ``(count, *pixels.shape[1:])`` uint8."""
    if in_size == out_size:  # Pillow skips the pass
        return pixels[first - offset : first - offset + count]
    starts, _lengths, weights = _taps(in_size, out_size, first, count)
    rows = np.minimum(starts[:, None] - offset + np.arange(weights.shape[1]), len(pixels) - 1)  # padding: weight 0
    total = np.full((count, *pixels.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    shape = (count,) + (1,) * (pixels.ndim - 1)
    for k in range(weights.shape[1]):
        total += pixels[rows[:, k]].astype(np.int64) * weights[:, k].reshape(shape)
    return np.clip(total >> _PRECISION_BITS, 0, 255).astype(np.uint8)  # clip8: Pillow's table does the same


def _resample_columns(
    pixels: np.ndarray, in_size: int, out_size: int, first: int, count: int, offset: int = 0
) -> np.ndarray:
    """As :func:`_resample_rows`, over the columns (axis 1)."""
    return _resample_rows(pixels.swapaxes(0, 1), in_size, out_size, first, count, offset).swapaxes(0, 1)


def _source_span(in_size: int, out_size: int, first: int, count: int) -> tuple[int, int]:
    """The source indices (start, stop) a pass reads for output indices ``first .. first+count-1``."""
    if in_size == out_size:
        return first, first + count
    starts, lengths, _weights = _taps(in_size, out_size, first, count)
    return int(starts.min()), int((starts + lengths).max())


def _crop_both_orders(pixels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The center crop of the resize of ``pixels`` (rows, columns, 3) to ``size`` (width, height), computed with
    the vertical pass first and with the horizontal pass first; each pass makes only what the crop needs."""
    (height, width), (out_w, out_h) = pixels.shape[:2], size
    left, top, _, _ = center_crop_box(out_w, out_h)
    first_row, last_row = _source_span(height, out_h, top, IMAGE_SIZE)
    first_col, last_col = _source_span(width, out_w, left, IMAGE_SIZE)
    # vertical first: the crop's rows from the source columns its columns need, then its columns
    vertical = _resample_rows(pixels[:, first_col:last_col], height, out_h, top, IMAGE_SIZE)
    vertical = _resample_columns(vertical, width, out_w, left, IMAGE_SIZE, offset=first_col)
    # horizontal first: the crop's columns from the source rows its rows need, then its rows
    horizontal = _resample_columns(pixels[first_row:last_row], width, out_w, left, IMAGE_SIZE)
    horizontal = _resample_rows(horizontal, height, out_h, top, IMAGE_SIZE, offset=first_row)
    return vertical, horizontal


def _center_crop_of_huge(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """CenterCrop(224) of ``image`` resized to ``size``, without making the resize: (224, 224, 3) uint8."""
    width, height = image.size
    refusal = (
        f"a {width}×{height} image: Resize({RESIZE_SIZE}) would make it {size[0]}×{size[1]} "
        f"({size[0] * size[1]:,} pixels, over the bound of {MAX_RESIZED_PIXELS:,})"
    )
    if not _passes_match_pillow():
        raise InputError(
            f"{refusal}, and its center crop cannot be computed exactly without that here (this Pillow resamples "
            "differently); remove it, or pass --skip-bad to skip it"
        )
    vertical, horizontal = _crop_both_orders(np.asarray(image), size)
    if not np.array_equal(vertical, horizontal):
        raise InputError(
            f"{refusal}, and its center crop depends on the order of Pillow's resampling passes, so it cannot be "
            "computed exactly without that; remove it, or pass --skip-bad to skip it"
        )
    return vertical


@functools.cache
def _passes_match_pillow() -> bool:
    """True when the passes above give Pillow's own pixels on this host (checked once a process, ~10 ms):
    one-axis resizes up and down both ways, and whole crops of two thin images."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (61, 47, 3), dtype=np.uint8)
    pixels[::7] = 255  # hard edges: weights below 0 and above 1 clip
    image = Image.fromarray(pixels, "RGB")
    for out_w, out_h in ((47, 150), (47, 23), (130, 61), (19, 61)):
        theirs = np.asarray(image.resize((out_w, out_h), Image.Resampling.BICUBIC))
        if out_w == 47:
            ours = _resample_rows(pixels, 61, out_h, 0, out_h)
        else:
            ours = _resample_columns(pixels, 47, out_w, 0, out_w)
        if not np.array_equal(ours, theirs):
            return False
    for shape in ((40, 1, 3), (1, 40, 3)):
        thin = np.ascontiguousarray(pixels[: shape[0], : shape[1]])
        size = resized_size(shape[1], shape[0])
        whole = Image.fromarray(thin, "RGB").resize(size, Image.Resampling.BICUBIC)
        crops = _crop_both_orders(thin, size)
        expected = np.asarray(whole.crop(center_crop_box(*size)))
        if not all(np.array_equal(crop, expected) for crop in crops):
            return False
    return True
