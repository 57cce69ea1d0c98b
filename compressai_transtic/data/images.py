"""A plain folder of images without labels (Kodak-style), for PSNR / MS-SSIM curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

from .classification import IMAGE_EXTENSIONS
from .subset import ImageList

if TYPE_CHECKING:  # pragma: no cover
    import PIL.Image

__all__ = ["ImageFile", "ImageFiles"]


@dataclass(frozen=True)
class ImageFile:
    """One image of a folder.

    Args:
        image_id: the path relative to the folder (POSIX separators): a stable key.
        path: the file.
    """

    image_id: str
    path: Path

    def load(self) -> "PIL.Image.Image":
        """The image as 8-bit PIL RGB (:func:`~compressai_transtic.imageio.read_rgb8`)."""
        from ..imageio import read_rgb8

        return read_rgb8(self.path)


class ImageFiles(ImageList[ImageFile]):
    """The images of a folder and its sub-folders, in sorted path order.

    As CompressAI's ``eval_model`` collects them: every file with an image extension
    (``.png``, ``.jpg``...) under the folder.

    Args:
        root: the folder.
        items: its images (default: found in ``root``).
    """

    def __init__(self, root: Union[str, Path], items: Sequence[ImageFile] = ()) -> None:
        self.root = Path(root)
        if not items:
            if not self.root.is_dir():
                raise FileNotFoundError(f"image folder {self.root} does not exist")
            items = [ImageFile(p.relative_to(self.root).as_posix(), p) for p in sorted(self.root.rglob("*"))
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not items:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}")
        self.items = list(items)

    def describe(self) -> str:
        """One line naming the set (for result descriptions)."""
        return f"{len(self)} images from {self.root}"
