"""Labelled image sets for classification: ImageFolder-style trees or image lists."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple, Union

from ..imageio import IMAGE_SUFFIXES
from .files import ImageItem, find_image_files, is_alias_of
from .subset import ImageList

__all__ = ["IMAGE_EXTENSIONS", "ClassificationImages", "LabelledImage"]

logger = logging.getLogger(__name__)

#: file name endings of images (the formats :mod:`compressai_transtic.imageio` reads)
IMAGE_EXTENSIONS = IMAGE_SUFFIXES


@dataclass(frozen=True)
class LabelledImage(ImageItem):
    """One image of a classification set.

    Args:
        image_id: the path relative to the set's root (POSIX separators): a stable key.
        path: the file.
        label: the class index, or a tuple of accepted class indices.
    """

    image_id: str
    path: Path
    label: Union[int, Tuple[int, ...]]


class ClassificationImages(ImageList[LabelledImage]):
    """A classification set; build it with :meth:`from_folder` or :meth:`from_list`.

    Args:
        root: the set's root directory.
        items: its images, in evaluation order.
        classes: class names by index (folder trees), or ``None``.
    """

    def __init__(self, root: Path, items: Sequence[LabelledImage], classes: Optional[List[str]] = None) -> None:
        if not items:
            raise ValueError(f"no labelled images found under {root}")
        self.root = Path(root)
        self.items = list(items)
        self.classes = classes

    @classmethod
    def from_folder(cls, root: Union[str, Path]) -> "ClassificationImages":
        """An ImageFolder-style tree ``root/<class>/<image>``.

        Class indices: if every class folder name is an integer (``0/``, ``281/``), that
        integer; otherwise the position of the folder name in sorted order, which is
        ImageNet's class index for the standard ``n01440764/ ...`` tree of all 1000
        classes (a tree with fewer class folders does not map to ImageNet indices: use
        an image list instead).

        Args:
            root: the tree's root.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"classification dataset directory {root} does not exist")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        aliases = [p for p in class_dirs if is_alias_of(p, root)]
        if aliases:
            logger.warning(
                "%s: %d class folder(s) link to the dataset or to its folders and are not classes: %s",
                root,
                len(aliases),
                ", ".join(p.name for p in aliases),
            )
            class_dirs = [p for p in class_dirs if p not in aliases]
        if not class_dirs:
            raise ValueError(
                f"{root} has no class sub-directories; expected an ImageFolder tree root/<class>/<image> "
                f"or an image list (--labels FILE)"
            )
        names = [p.name for p in class_dirs]
        numeric = all(n.isdigit() for n in names)
        indices = [int(n) for n in names] if numeric else list(range(len(names)))
        if not numeric and len(names) != 1000:
            logger.warning(
                "%s has %d class folders: labels are their positions in sorted order, which are "
                "ImageNet class indices only for the full 1000-class tree",
                root,
                len(names),
            )
        items, seen, repeated = [], set(), []  # type: ignore[var-annotated]
        for index, class_dir in zip(indices, class_dirs):
            for path in find_image_files(class_dir, IMAGE_EXTENSIONS):
                if _first_time(path, seen):
                    items.append(LabelledImage(path.relative_to(root).as_posix(), path, index))
                else:
                    repeated.append(path)
        if repeated:
            logger.warning(
                "%s: %d image(s) appear in more than one class folder; each is kept under its first "
                "class only, e.g. %s",
                root,
                len(repeated),
                repeated[0],
            )
        return cls(root, items, classes=None if numeric else names)

    @classmethod
    def from_list(cls, root: Union[str, Path], list_file: Union[str, Path]) -> "ClassificationImages":
        """Images listed in a text file, one ``relative/path.jpg LABEL`` per line.

        ``LABEL`` is an integer class index, or several separated by commas (accepted
        alternatives, e.g. ``281,282,285``). Blank lines and lines starting with ``#``
        are ignored. Paths are relative to ``root``.

        Args:
            root: directory the paths are relative to.
            list_file: the list.
        """
        root, list_file = Path(root), Path(list_file)
        if not list_file.is_file():
            raise FileNotFoundError(f"image list {list_file} does not exist")
        items = []
        for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{list_file}:{lineno}: expected 'relative/path LABEL', got {line!r}")
            rel, label_text = parts
            try:
                labels = tuple(int(v) for v in label_text.split(","))
            except ValueError:
                raise ValueError(f"{list_file}:{lineno}: label {label_text!r} is not an integer class index") from None
            path = root / rel
            if not path.is_file():
                raise FileNotFoundError(f"{list_file}:{lineno}: image {path} does not exist")
            items.append(LabelledImage(Path(rel).as_posix(), path, labels[0] if len(labels) == 1 else labels))
        return cls(root, items)

    def describe(self) -> str:
        """One line naming the set (for result descriptions)."""
        return f"{len(self)} images from {self.root}"


def _first_time(path: Path, seen: Set[Tuple[int, int]]) -> bool:
    st = path.stat()
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True
