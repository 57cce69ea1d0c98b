"""A plain folder of images without labels (Kodak-style), for PSNR / MS-SSIM curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from ..imageio import IMAGE_SUFFIXES
from .files import ImageItem, find_image_files
from .subset import ImageList

__all__ = ["ImageFile", "ImageFiles"]


@dataclass(frozen=True)
class ImageFile(ImageItem):
    """One image of a folder.

    Args:
        image_id: the path relative to the folder (POSIX separators): a stable key.
        path: the file.
    """

    image_id: str
    path: Path


class ImageFiles(ImageList[ImageFile]):
    """The images of a folder and its sub-folders, in sorted path order.

    As CompressAI's ``eval_model`` collects them: every file with an image extension
    (``.png``, ``.jpg``...) under the folder, hidden names skipped, each file once
    (:func:`~.files.find_image_files`).

    Args:
        root: the folder.
        items: its images (default: found in ``root``).
    """

    def __init__(self, root: Union[str, Path], items: Sequence[ImageFile] = ()) -> None:
        self.root = Path(root)
        if not items:
            if not self.root.is_dir():
                raise FileNotFoundError(f"image folder {self.root} does not exist")
            items = [
                ImageFile(p.relative_to(self.root).as_posix(), p) for p in find_image_files(self.root, IMAGE_SUFFIXES)
            ]
        if not items:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        self.items = list(items)

    def describe(self) -> str:
        """One line naming the set (for result descriptions)."""
        return f"{len(self)} images from {self.root}"
