"""Images with a COCO-format annotation file (``instances_val2017.json`` or your own)."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Union

from pycocotools.coco import COCO

from ..imageio import DEFAULT_MAX_PIXELS
from .files import ImageItem
from .subset import ImageList

if TYPE_CHECKING:  # pragma: no cover
    import PIL.Image

__all__ = ["CocoImage", "CocoImages"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CocoImage(ImageItem):
    """One image of a COCO-format set.

    Args:
        image_id: the ``id`` of the image in the annotation file.
        path: the image file.
        height: its height as annotated (detections are reported at this size).
        width: its width as annotated.
    """

    image_id: int
    path: Path
    height: int
    width: int

    def load(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> "PIL.Image.Image":
        """The image as 8-bit PIL RGB, checked against the annotated size."""
        image = super().load(max_pixels)
        mismatch = self.size_problem(image.width, image.height)
        if mismatch:
            raise ValueError(f"{self.path}: {mismatch}")
        return image

    def size_problem(self, width: int, height: int) -> Optional[str]:
        """The image must have the size the annotation file gives (boxes are reported there)."""
        if (height, width) == (self.height, self.width):
            return None
        return (
            f"the image is {height}x{width} but the annotation file says {self.height}x{self.width}: "
            "wrong image directory or annotation file?"
        )


class CocoImages(ImageList[CocoImage]):
    """The images of a COCO-format annotation file, sorted by image id.

    Args:
        image_root: directory holding the images (``file_name`` is relative to it).
        annotation_file: the COCO-format JSON file (``images``, ``annotations``,
            ``categories``; masks as polygons or RLE for mask AP).
    """

    def __init__(self, image_root: Union[str, Path], annotation_file: Union[str, Path]) -> None:
        self.root = Path(image_root)
        self.annotation_file = Path(annotation_file)
        if not self.annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {self.annotation_file} does not exist")
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO image directory {self.root} does not exist")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco: Any = COCO(str(self.annotation_file))
        images = sorted(self.coco.dataset.get("images", []), key=lambda im: im["id"])
        if not images:
            raise ValueError(f"{self.annotation_file} lists no images")
        self.items: List[CocoImage] = [
            CocoImage(int(im["id"]), self.root / im["file_name"], int(im["height"]), int(im["width"])) for im in images
        ]
        missing = [str(item.path) for item in self.items[:1000] if not item.path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) of {self.annotation_file} are missing under {self.root}, e.g. {missing[0]}"
            )

    def boxes(self, image_id: int) -> List[List[float]]:
        """The annotated object boxes of an image, ``(x, y, width, height)`` in its pixels."""
        return [list(map(float, ann["bbox"])) for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))]

    @property
    def has_masks(self) -> bool:
        """Whether the annotations carry segmentations (needed for mask AP)."""
        anns = self.coco.dataset.get("annotations", [])
        return bool(anns) and all(ann.get("segmentation") for ann in anns)

    def describe(self) -> str:
        """One line naming the set (for result descriptions)."""
        return f"{len(self)} images of {self.annotation_file.name} from {self.root}"
