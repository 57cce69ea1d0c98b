"""Test protocols of the paper: how a dataset image becomes the codec's input.

Classification (ImageNet): ``Resize(256)`` (shorter side to 256, torchvision semantics)
then ``CenterCrop(256)``; the 256 x 256 crop is coded as is and ResNet50 classifies the
decoded crop.

Detection / instance segmentation (COCO): the image is resized so that its shortest
edge is 800 pixels without its longest edge exceeding 1333 (detectron2's
``ResizeShortestEdge`` rule, PIL bilinear); that image is resized (bilinear) to the next
multiple of 256 in each dimension, coded, decoded, resized back (bilinear) and clamped
to [0, 1], then given to the detector, whose outputs are mapped to the original image
size for COCO evaluation. Rates and PSNR are measured against the shortest-edge-800
image (the authors normalise the rate by its pixel count).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from .models.tic import coded_pixels
from .strenum import StrEnum, parse_choice

__all__ = [
    "CodingProtocol",
    "ResizeRule",
    "classification_protocol",
    "detection_protocol",
    "shortest_edge_size",
]


def shortest_edge_size(height: int, width: int, short_edge: int, max_size: Optional[int]) -> Tuple[int, int]:
    """Output size of detectron2's ``ResizeShortestEdge(short_edge, max_size)`` rule.

    The shorter side becomes ``short_edge``; if the longer side would then exceed
    ``max_size`` the image is scaled so that the longer side equals ``max_size``; sizes are
    rounded to the nearest integer.

    Args:
        height: input height.
        width: input width.
        short_edge: target length of the shorter side.
        max_size: bound of the longer side (``None``: unbounded).

    Returns:
        ``(new_height, new_width)``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"invalid image size {height}x{width}")
    scale = short_edge / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max_size is not None and max(new_h, new_w) > max_size:
        rescale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * rescale, new_w * rescale
    return int(new_h + 0.5), int(new_w + 0.5)


class ResizeRule(StrEnum):
    """How a protocol resizes an image before any crop."""

    #: kept at its size
    NONE = "none"
    #: torchvision's ``Resize(short_edge)``: the shorter side to ``short_edge``, the
    #: longer side scaled and truncated
    SHORTER_SIDE = "shorter-side"
    #: detectron2's ``ResizeShortestEdge(short_edge, max_size)`` (:func:`shortest_edge_size`)
    SHORTEST_EDGE = "shortest-edge"


@dataclass(frozen=True)
class CodingProtocol:
    """How an evaluation image is prepared, coded and given back to a task network.

    Args:
        resize: a :class:`ResizeRule` (or its value).
        short_edge: target length of the shorter side.
        max_size: bound of the longer side (:attr:`ResizeRule.SHORTEST_EDGE` only).
        center_crop: side of a centre crop applied after resizing (``None``: no crop).
        code_multiple: the image is resized to the next multiple of this before coding
            and resized back after decoding (``None``: coded at its size; the codecs pad
            internally).
    """

    resize: ResizeRule = ResizeRule.NONE
    short_edge: Optional[int] = None
    max_size: Optional[int] = None
    center_crop: Optional[int] = None
    code_multiple: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", parse_choice(ResizeRule, self.resize, "resize rule"))
        if self.resize is not ResizeRule.NONE and (self.short_edge is None or self.short_edge < 1):
            raise ValueError(f"resize rule {self.resize.value!r} needs a positive short_edge")
        for name in ("max_size", "center_crop", "code_multiple"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")

    def as_dict(self) -> Dict[str, Any]:
        """The protocol's settings (part of the fingerprint of evaluation results)."""
        return asdict(self)

    def prepared_size(self, height: int, width: int) -> Tuple[int, int]:
        """Size of the image the codec pipeline receives for an input of this size."""
        height, width = self.resized_size(height, width)
        if self.center_crop is not None:
            height, width = min(height, self.center_crop), min(width, self.center_crop)
        return int(height), int(width)

    def resized_size(self, height: int, width: int) -> Tuple[int, int]:
        """Size of an input of this size after the resize rule (before any crop)."""
        if self.resize is ResizeRule.SHORTER_SIDE:
            edge = int(self.short_edge)  # type: ignore[arg-type]  # set whenever resize is
            short, long_ = (height, width) if height <= width else (width, height)
            new_long = int(edge * long_ / short)
            height, width = (edge, new_long) if height <= width else (new_long, edge)
        elif self.resize is ResizeRule.SHORTEST_EDGE:
            height, width = shortest_edge_size(height, width, self.short_edge, self.max_size)  # type: ignore[arg-type]
        return int(height), int(width)

    def size_problem(self, height: int, width: int, max_pixels: int) -> Optional[str]:
        """What is wrong with preparing and coding an input of this size under a limit
        of ``max_pixels`` pixels for every image made on the way, or ``None``. The coded
        image counts as a learned codec processes it, padded to multiples of 64
        (:func:`~compressai_transtic.models.tic.coded_pixels`), as ``encode`` counts it."""
        resized = self.resized_size(height, width)
        coded = self.codec_size(*self.prepared_size(height, width))
        sizes = (("resized", resized, resized[0] * resized[1]), ("coded", coded, coded_pixels(*coded)))
        for what, (h, w), pixels in sizes:
            if pixels > max_pixels:
                return (
                    f"{width}x{height} would be {what} at {w}x{h}, {pixels} pixels"
                    f"{' as the codec processes it' if pixels != h * w else ''}, above the limit of "
                    f"{max_pixels} (--max-pixels); choose a smaller size in the protocol options"
                )
        return None

    def prepare(self, image: Image.Image, max_pixels: Optional[int] = None) -> torch.Tensor:
        """Resize/crop a PIL RGB image; returns a (3, H, W) float tensor in [0, 1].

        Raises:
            ValueError: ``max_pixels`` is given and the resized or coded image would be
                larger (:meth:`size_problem`), checked before any resizing.
        """
        problem = None if max_pixels is None else self.size_problem(image.height, image.width, max_pixels)
        if problem is not None:
            raise ValueError(problem)
        image = image.convert("RGB")
        if self.resize is ResizeRule.SHORTER_SIDE:
            image = TF.resize(image, self.short_edge, interpolation=TF.InterpolationMode.BILINEAR)
        elif self.resize is ResizeRule.SHORTEST_EDGE:
            new_h, new_w = shortest_edge_size(image.height, image.width, self.short_edge, self.max_size)  # type: ignore[arg-type]
            if (new_h, new_w) != (image.height, image.width):
                image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if self.center_crop is not None:
            image = TF.center_crop(image, [self.center_crop, self.center_crop])
        return TF.to_tensor(image)

    def codec_size(self, height: int, width: int) -> Tuple[int, int]:
        """Size at which an image of this (prepared) size is coded."""
        if self.code_multiple is None:
            return height, width
        m = self.code_multiple
        return max(m, math.ceil(height / m) * m), max(m, math.ceil(width / m) * m)

    def to_codec(self, x: torch.Tensor) -> torch.Tensor:
        """Resize a (B, 3, H, W) batch to :meth:`codec_size` (bilinear; identity if equal)."""
        size = self.codec_size(*x.shape[-2:])
        if tuple(size) == tuple(x.shape[-2:]):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def from_codec(self, x_hat: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Resize a decoded batch back to ``size`` (bilinear) and clamp it to [0, 1]."""
        if tuple(x_hat.shape[-2:]) != tuple(size):
            x_hat = F.interpolate(x_hat, size=tuple(size), mode="bilinear", align_corners=False)
        return x_hat.clamp(0.0, 1.0)


def classification_protocol(crop: int = 256) -> CodingProtocol:
    """The paper's classification protocol: ``Resize(crop)`` + ``CenterCrop(crop)``.

    Args:
        crop: side of the coded square crop (256 in the paper).
    """
    return CodingProtocol(resize=ResizeRule.SHORTER_SIDE, short_edge=crop, center_crop=crop)


def detection_protocol(
    short_edge: int = 800, max_size: Optional[int] = 1333, code_multiple: Optional[int] = 256
) -> CodingProtocol:
    """The paper's COCO protocol: shortest edge 800 (max 1333), code at a multiple of 256.

    Args:
        short_edge: shortest edge of the prepared image (800 in the paper).
        max_size: bound of its longest edge (1333).
        code_multiple: coding size multiple (256: the authors' code needs it).
    """
    return CodingProtocol(
        resize=ResizeRule.SHORTEST_EDGE, short_edge=short_edge, max_size=max_size, code_multiple=code_multiple
    )
