"""Reading images for the codec, and writing decoded ones.

:func:`read_image` turns any image Pillow reads into a float RGB tensor in [0, 1]
(:func:`read_rgb8`: into 8-bit PIL RGB for the evaluation datasets):

* EXIF orientation is applied (a photo is coded the way it is shown);
* 16-bit and 32-bit integer images are scaled from their full range (not clipped to
  8 bits), grayscale is repeated over the three channels;
* palette, CMYK, YCbCr, Lab, HSV and bilevel images are converted to RGB;
* an alpha channel is dropped, and the returned notes say so;
* images above ``max_pixels`` are refused from their header, before any pixel is
  decoded (decompression bombs).

Every failure is an :class:`ImageReadError` that names the file.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .fileio import atomic_write
from .filekinds import regular_file_problem

__all__ = [
    "ImageReadError",
    "frames_problem",
    "open_image",
    "read_image",
    "read_rgb8",
    "write_png",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
]

#: the default largest input (twice 3840 x 2160)
DEFAULT_MAX_PIXELS = 2**24
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm")
_WIDE_INTEGER_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


class ImageReadError(ValueError):
    """A file that cannot be used as an input image; the message names it."""


def _to_array(img: Image.Image, notes: List[str]) -> np.ndarray:
    """``(H, W, 3)`` float64 in [0, 1]."""
    if img.mode in _WIDE_INTEGER_MODES:
        gray = np.asarray(img, dtype=np.float64)
        if gray.min(initial=0) < 0:
            raise ImageReadError("signed integer pixels below 0: no defined value range")
        # Pillow reads 16-bit PNGs as mode "I" too: values within 16 bits are read as
        # 16-bit samples, larger ones as 32-bit signed samples (top 2^31 - 1)
        top = _WIDE_INTEGER_MODES[img.mode] if gray.max(initial=0) <= 65535 else 2**31 - 1
        return np.repeat((gray / top)[..., None], 3, axis=2)
    if img.mode == "F":
        raise ImageReadError("floating-point images are not supported (no defined value range)")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        notes.append("its alpha channel was dropped")
        img = img.convert("RGBA")
    rgb = img.convert("RGB")
    return np.asarray(rgb, dtype=np.float64) / 255.0


def frames_problem(img: Image.Image) -> Optional[str]:
    """Why an opened image is not one still image (an animation, a multi-page TIFF), or
    ``None``. A camera JPEG that carries a preview or a gain map (Pillow's ``MPO``) is
    one: its first frame is the photo."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":
        return (
            f"holds {frames} frames (an animation or a multi-page file), and only still images are coded; "
            "save the frame you mean as an image of its own"
        )
    return None


@contextlib.contextmanager
def open_image(path: Union[str, os.PathLike]) -> Iterator[Image.Image]:
    """``Image.open(path)`` without Pillow's decompression-bomb warning: callers apply
    their own pixel limit (``max_pixels``) from the header, before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        yield img


def read_image(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[Tensor, List[str]]:
    """The image at ``path`` as a ``(1, 3, H, W)`` float32 tensor in [0, 1], and notes
    on what was changed (e.g. a dropped alpha channel).

    Raises:
        ImageReadError: the file is missing, not an image, damaged, or larger than
            ``max_pixels``.
    """
    array, notes = _decode(Path(path), max_pixels, exif=True)
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()[None]
    return tensor, notes


def read_rgb8(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image at ``path`` as 8-bit PIL RGB, for the evaluation protocols.

    As :func:`read_image` (wide integer images scaled, not clipped; the pixel limit), but
    without EXIF orientation: datasets (ImageNet, COCO, Kodak) are evaluated in their
    stored orientation, as torchvision's and CompressAI's loaders read them. 8-bit images
    come out exactly as ``Image.convert("RGB")`` gives them.

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    array, _ = _decode(Path(path), max_pixels, exif=False)
    return Image.fromarray(np.round(array * 255.0).astype(np.uint8), "RGB")


def _decode(path: Path, max_pixels: int, exif: bool) -> Tuple[np.ndarray, List[str]]:
    """``(H, W, 3)`` float64 in [0, 1] and notes, after every check."""
    notes: List[str] = []
    problem = regular_file_problem(path)
    if problem is not None:
        raise ImageReadError(f"{path}: {problem}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    try:
        with open_image(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageReadError(
                    f"{path}: {width}x{height} is {width * height} pixels, above the limit of {max_pixels}; "
                    "raise it with --max-pixels if you mean it"
                )
            problem = frames_problem(img)
            if problem is not None:
                raise ImageReadError(f"{path}: {problem}")
            if exif:
                img = ImageOps.exif_transpose(img)
            array = _to_array(img, notes)
    except ImageReadError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ImageReadError(f"{path}: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: refused as a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for non-images and damaged files
        raise ImageReadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if min(array.shape[:2]) < 1:
        raise ImageReadError(f"{path}: the image has no pixels")
    return array, notes


def write_png(path: Union[str, os.PathLike], image: Tensor) -> Path:
    """Write a ``(1, 3, H, W)`` or ``(3, H, W)`` tensor in [0, 1] as an 8-bit RGB PNG,
    atomically (a failed write leaves no file)."""
    image = image.detach().to("cpu", torch.float64)
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"write_png takes one image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image of shape (3, H, W), got {tuple(image.shape)}")
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return atomic_write(path, lambda f: Image.fromarray(pixels, "RGB").save(f, format="PNG"))
