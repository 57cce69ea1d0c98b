"""Labelled image sets for classification: ImageFolder-style trees or image lists."""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from ..filekinds import mode_kind
from ..imageio import IMAGE_SUFFIXES
from .files import ImageItem, find_image_files, is_alias_of
from .subset import ImageList

__all__ = ["IMAGENET_CLASSES", "ClassificationImages", "LabelledImage"]

logger = logging.getLogger(__name__)

#: the classes labels may name, ``0 .. IMAGENET_CLASSES - 1``: the ImageNet categories of the
#: classifier, torchvision's ResNet50 (``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``)
IMAGENET_CLASSES = 1000


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
    def from_folder(cls, root: Union[str, Path], num_classes: int = IMAGENET_CLASSES) -> "ClassificationImages":
        """An ImageFolder-style tree ``root/<class>/<image>``.

        Class indices: if every class folder name is a number in ASCII digits (``0/``,
        ``281/``), that number; otherwise the position of the folder name in sorted order,
        which is ImageNet's class index for the standard ``n01440764/ ...`` tree of all 1000
        classes (a tree with fewer class folders does not map to ImageNet indices: use
        an image list instead).

        Args:
            root: the tree's root.
            num_classes: the classifier's classes; a class index outside ``0 .. num_classes - 1``
                is refused.

        Raises:
            FileNotFoundError: ``root`` does not exist.
            ValueError: ``root`` is not a folder, has no class folders or images, two folders
                name one class (``0281/`` and ``281/``), or a class is out of range.
        """
        root = _dataset_folder(root)
        class_dirs = _class_folders(root)
        names = [p.name for p in class_dirs]
        numeric = all(_is_class_number(n) for n in names)
        if numeric:
            indices = _numbered_classes(class_dirs, num_classes)
        else:
            indices = _positional_classes(root, names, num_classes)
        items = _folder_items(root, zip(indices, class_dirs))
        return cls(root, items, classes=None if numeric else names)

    @classmethod
    def from_list(
        cls, root: Union[str, Path], list_file: Union[str, Path], num_classes: int = IMAGENET_CLASSES
    ) -> "ClassificationImages":
        """Images listed in a text file, one ``relative/path.jpg LABEL`` per line.

        ``LABEL`` is an integer class index, or several separated by commas (accepted
        alternatives, e.g. ``281,282,285``). Blank lines and lines starting with ``#``
        are ignored. Paths are relative to ``root``; each image may be listed once.

        Args:
            root: directory the paths are relative to.
            list_file: the list.
            num_classes: the classifier's classes; a label outside ``0 .. num_classes - 1``
                is refused.

        Raises:
            FileNotFoundError: ``root``, ``list_file`` or a listed image does not exist.
            ValueError: a line that is not ``path LABEL``, a label out of range, a listed
                path that is not a regular file, or one image listed twice (by any spelling).
        """
        root, list_file = _dataset_folder(root), Path(list_file)
        items: List[LabelledImage] = []
        first: Dict[Tuple[int, int], Tuple[int, str]] = {}  # (device, inode) -> (line, path as written)
        for lineno, rel, label_text in _list_entries(list_file):
            where = f"{list_file}:{lineno}"
            labels = tuple(_class_index(v, num_classes, where) for v in label_text.split(","))
            path = root / rel
            key = _regular_file_identity(path, f"{where}: image")
            if key in first:
                seen_at, seen_as = first[key]
                raise ValueError(
                    f"{where}: {rel} is the image of line {seen_at} ({seen_as}) again; list each image "
                    f"once, with all its accepted labels on that line (e.g. 281,282)"
                )
            first[key] = lineno, rel
            items.append(LabelledImage(Path(rel).as_posix(), path, labels[0] if len(labels) == 1 else labels))
        return cls(root, items)

    def describe(self) -> str:
        """One line naming the set (for result descriptions)."""
        return f"{len(self)} images from {self.root}"


def _stat(path: Path, what: str) -> os.stat_result:
    """``path``'s status; an error naming ``what`` if it cannot be had."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:  # a link loop, a name too long, a NUL byte
        raise ValueError(f"{what} {path} cannot be opened: {exc}") from None


def _dataset_folder(root: Union[str, Path]) -> Path:
    root = Path(root)
    mode = _stat(root, "classification dataset directory").st_mode
    if not stat.S_ISDIR(mode):
        raise ValueError(
            f"classification dataset {root} is {mode_kind(mode)}, not a folder; pass the folder that holds "
            f"the class folders (or, with --labels, the listed images)"
        )
    return root


def _regular_file_identity(path: Path, what: str) -> Tuple[int, int]:
    """``(device, inode)`` of ``path``, which must be a regular file (links followed)."""
    st = _stat(path, what)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path}: {mode_kind(st.st_mode)}, not a regular file")
    return st.st_dev, st.st_ino


def _list_entries(list_file: Path) -> Iterator[Tuple[int, str, str]]:
    """``(line number, relative path, label text)`` of each entry of an image list."""
    _regular_file_identity(list_file, "image list")
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"image list {list_file} cannot be read as UTF-8 text: {exc}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{list_file}:{lineno}: expected 'relative/path LABEL', got {line!r}")
        yield lineno, parts[0], parts[1]


def _is_class_number(name: str) -> bool:
    return name.isascii() and name.isdecimal()


def _class_index(text: str, num_classes: int, where: str) -> int:
    """The class index ``text`` writes in ASCII digits; a ValueError naming ``where`` unless
    it is one of ``0 .. num_classes - 1``."""
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"{where}: label {text!r} is not an integer class index")
    # more significant digits than num_classes: out of range (and too long for int() maybe)
    if text.startswith("-") or len(text.lstrip("0")) > len(str(num_classes)) or int(text) >= num_classes:
        raise ValueError(
            f"{where}: class {text} is outside the classifier's classes 0..{num_classes - 1}; "
            f"use ImageNet class indices in torchvision's order"
        )
    return int(text)


def _class_folders(root: Path) -> List[Path]:
    """The class folders of ``root``, sorted, without links that alias the tree."""
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
    return class_dirs


def _numbered_classes(class_dirs: Sequence[Path], num_classes: int) -> List[int]:
    """The class number each folder is named by, one folder per class."""
    folder_of: Dict[int, Path] = {}
    for folder in class_dirs:
        index = _class_index(folder.name, num_classes, f"class folder {folder}")
        if index in folder_of:
            raise ValueError(
                f"class folders {folder_of[index]} and {folder} are both class {index}; merge them into one folder"
            )
        folder_of[index] = folder
    return list(folder_of)  # in the order of class_dirs


def _positional_classes(root: Path, names: Sequence[str], num_classes: int) -> List[int]:
    """Class indices by position in sorted order (the class folders are not all numbers)."""
    if len(names) > num_classes:
        raise ValueError(
            f"{root} has {len(names)} class folders, more than the classifier's {num_classes} classes "
            f"(folder {names[num_classes]} would be class {num_classes}); name the folders by class "
            f"index (281/) or use an image list (--labels FILE)"
        )
    if len(names) != num_classes or any(_is_class_number(n) for n in names):
        logger.warning(
            "%s: class folder %r is not a class number (ASCII digits), so the labels of its %d class "
            "folders are their positions in sorted order, which are ImageNet class indices only for "
            "the full 1000-class tree (n01440764/ ...)",
            root,
            next(n for n in names if not _is_class_number(n)),
            len(names),
        )
    return list(range(len(names)))


def _folder_items(root: Path, classes: Iterable[Tuple[int, Path]]) -> List[LabelledImage]:
    """The images of each ``(class index, folder)``, each file once (under its first class)."""
    items, seen, repeated = [], set(), []  # type: ignore[var-annotated]
    for index, class_dir in classes:
        for path in find_image_files(class_dir, IMAGE_SUFFIXES):
            if _first_time(path, seen):
                items.append(LabelledImage(path.relative_to(root).as_posix(), path, index))
            else:
                repeated.append(path)
    if repeated:
        logger.warning(
            "%s: %d image(s) appear in more than one class folder; each is kept under its first class only, e.g. %s",
            root,
            len(repeated),
            repeated[0],
        )
    return items


def _first_time(path: Path, seen: Set[Tuple[int, int]]) -> bool:
    st = path.stat()
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True
