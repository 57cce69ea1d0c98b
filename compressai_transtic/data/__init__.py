"""Datasets for rate-accuracy evaluation and the bundled sample images.

- :mod:`.classification`: ImageFolder-style trees and image lists with labels.
- :mod:`.coco`: images with a COCO-format annotation file.
- :mod:`.images`: a plain folder of images (Kodak-style PSNR / MS-SSIM curves).
- :mod:`.samples`: a few CC0 / public-domain photographs shipped inside scikit-image,
  with ImageNet labels, for the demo.
"""

from __future__ import annotations

from .classification import ClassificationImages, LabelledImage
from .coco import CocoImage, CocoImages
from .images import ImageFile, ImageFiles
from .samples import SampleImage, labelled_samples, load_sample, sample_images
from .subset import evenly_spaced

__all__ = [
    "ClassificationImages",
    "CocoImage",
    "CocoImages",
    "ImageFile",
    "ImageFiles",
    "LabelledImage",
    "SampleImage",
    "evenly_spaced",
    "labelled_samples",
    "load_sample",
    "sample_images",
]
