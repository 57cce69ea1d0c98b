"""Sample photographs for demos: files shipped inside the scikit-image wheel.

Only images stored in the installed ``skimage/data`` directory are used (read
directly from there, never through scikit-image's downloader), all free of copyright
restrictions according to scikit-image's documentation.

ImageNet labels (class indices of torchvision's ResNet50) were chosen by looking at
the pictures; where several ImageNet classes describe the picture equally well, all
are accepted (a prediction is correct if it is any of them):

- ``chelsea``: a tabby cat (CC0, Stefan van der Walt) -> 281 tabby, 282 tiger cat,
  285 Egyptian cat (ImageNet's fine-grained cat classes are notoriously ambiguous).
- ``coffee``: a cup of coffee with latte art on a saucer (CC0, Rachel Michetti) ->
  967 espresso, 968 cup.
- ``rocket``: a SpaceX Falcon 9 on its launch pad (public domain, SpaceX) -> 657
  missile, 744 projectile (ImageNet has no "rocket" class; these are the classes its
  rockets are filed under).
- ``astronaut``: portrait of astronaut Eileen Collins (public domain, NASA): no ImageNet
  class describes it, so it is unlabelled (used for rate/PSNR only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import skimage
from PIL import Image

__all__ = ["SAMPLES", "SampleImage", "labelled_samples", "load_sample", "sample_images"]


@dataclass(frozen=True)
class SampleImage:
    """A sample photograph.

    Args:
        name: short name (the scikit-image data function of the same name loads it).
        filename: file inside the installed ``skimage/data`` directory.
        labels: accepted ImageNet class indices (empty: unlabelled).
        description: what the picture shows.
        license: its licence as documented by scikit-image.
    """

    name: str
    filename: str
    labels: Tuple[int, ...]
    description: str
    license: str

    @property
    def path(self) -> Path:
        """Location of the file in the installed scikit-image package."""
        path = Path(skimage.__file__).parent / "data" / self.filename
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is not part of this scikit-image installation "
                f"(version {getattr(skimage, '__version__', 'unknown')}); "
                f"reinstall scikit-image"
            )
        return path


SAMPLES: Tuple[SampleImage, ...] = (
    SampleImage("chelsea", "chelsea.png", (281, 282, 285), "tabby cat", "CC0 (Stefan van der Walt)"),
    SampleImage("coffee", "coffee.png", (967, 968), "cup of coffee", "CC0 (Rachel Michetti)"),
    SampleImage("rocket", "rocket.jpg", (657, 744), "Falcon 9 rocket on its launch pad", "public domain (SpaceX)"),
    SampleImage("astronaut", "astronaut.png", (), "astronaut Eileen Collins", "public domain (NASA)"),
)


def sample_images() -> List[SampleImage]:
    """All sample photographs."""
    return list(SAMPLES)


def labelled_samples() -> List[SampleImage]:
    """The sample photographs that have ImageNet labels."""
    return [s for s in SAMPLES if s.labels]


def load_sample(sample: SampleImage) -> Image.Image:
    """The sample as a PIL RGB image."""
    with Image.open(sample.path) as img:
        return img.convert("RGB")
