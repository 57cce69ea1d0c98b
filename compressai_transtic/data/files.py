"""Finding image files under a folder, and checking them before any work starts.

Datasets on shared storage are often assembled from symbolic links. The walk here
follows links (a class folder linked from elsewhere is part of the set) but counts
every file once:

* a linked folder whose target lies inside the walked root (or is the root itself or
  one of its parents) is an alias of folders that are walked anyway: it is skipped;
* a folder reached twice (a link loop outside the root) is walked once;
* one file reached by several paths (links, hard links) is kept once, under its
  plain path if it has one, else under the first path in sorted order;
* broken links are skipped.

Every skip is logged once with a count and an example, so a user sees what the set
holds. The checks (:func:`check_images`) report one reason per unreadable file.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar

from tqdm.auto import tqdm

from ..console import and_more
from ..filekinds import ImageCheck, mode_kind
from ..imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageReadError, frames_problem, open_image, read_rgb8
from ..strenum import parse_choice

if TYPE_CHECKING:  # pragma: no cover
    import PIL.Image

__all__ = [
    "CHECK_MODES",
    "ImageItem",
    "UnreadableFolderError",
    "check_image",
    "check_images",
    "find_image_files",
    "is_alias_of",
]

logger = logging.getLogger(__name__)

#: how thoroughly inputs are checked up front: ``header`` opens each file and verifies
#: its structure and size, ``full`` decodes every pixel, ``off`` checks nothing
CHECK_MODES = ImageCheck.values()

T = TypeVar("T")
_Identity = Tuple[int, int]


def _identity(path: str) -> Optional[_Identity]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _links_into(path: str, real_root: str) -> bool:
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    return _inside(target, real_root) or _inside(real_root, target)


def is_alias_of(folder: Path, root: Path) -> bool:
    """Whether ``folder`` is a link whose target is ``root``, lies inside it or above it."""
    return _links_into(str(folder), os.path.realpath(root))


class UnreadableFolderError(ValueError):
    """Folders of a dataset or an input tree that cannot be listed (the message names them)."""


def find_image_files(root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> List[Path]:
    """Every image file under ``root`` (hidden names skipped), each file once, sorted.

    Args:
        root: an existing folder.
        suffixes: file name endings that mark images (compared in lower case).

    Raises:
        UnreadableFolderError: a folder under ``root`` cannot be listed (permissions, a
            path too long).
    """
    root = Path(root)
    real_root = os.path.realpath(root)
    ends = tuple(s.lower() for s in suffixes)
    visited: Set[_Identity] = set()
    found: List[Tuple[str, _Identity, bool]] = []
    skipped: Dict[str, List[str]] = {"alias": [], "loop": [], "broken": []}
    unreadable: List[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append, followlinks=True):
        ident = _identity(dirpath)
        if ident is None or ident in visited:
            skipped["loop"].append(dirpath)
            dirnames[:] = []
            continue
        visited.add(ident)
        kept = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                continue
            if _links_into(full, real_root):
                skipped["alias"].append(full)
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(ends):
                continue
            full = os.path.join(dirpath, name)
            file_ident = _identity(full)
            if file_ident is None:
                skipped["broken"].append(full)
                continue
            found.append((full, file_ident, os.path.islink(full)))
    if unreadable:  # leaving their images out would change what is evaluated or coded
        shown = "; ".join(f"{e.filename}: {e.strerror or e}" for e in unreadable[:5])
        more = and_more(unreadable, 5)
        raise UnreadableFolderError(f"{root}: folders that cannot be read ({shown}{more}); fix them or move them out")
    unique = _one_path_per_file(found)
    _log_skips(root, skipped, len(found) - len(unique))
    return sorted(Path(p) for p in unique)


def _one_path_per_file(found: Iterable[Tuple[str, _Identity, bool]]) -> List[str]:
    """The preferred path of each file: plain over linked, then the first in sorted order."""
    best: Dict[_Identity, Tuple[bool, str]] = {}
    for path, ident, linked in found:
        choice = (linked, path)
        if ident not in best or choice < best[ident]:
            best[ident] = choice
    return [path for _, path in best.values()]


def _log_skips(root: Path, skipped: Dict[str, List[str]], duplicates: int) -> None:
    why = {
        "alias": "linked folder(s) that alias folders of the set (or the set itself) were not walked again",
        "loop": "folder(s) reached a second time through links were walked once",
        "broken": "broken link(s) were skipped",
    }
    for kind, paths in skipped.items():
        if paths:
            logger.warning("%s: %d %s, e.g. %s", root, len(paths), why[kind], paths[0])
    if duplicates:
        logger.warning(
            "%s: %d image path(s) lead to files already found through another path; each file is counted once",
            root,
            duplicates,
        )


# ---------------------------------------------------------------------------- checks
def check_image(
    path: Path,
    mode: ImageCheck = ImageCheck.HEADER,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size_problem: Optional[Callable[[int, int], Optional[str]]] = None,
) -> Optional[str]:
    """Why ``path`` cannot be used as an input image, or ``None`` if it can.

    Args:
        path: the file.
        mode: an :class:`~compressai_transtic.filekinds.ImageCheck` (or its value):
            ``header`` (open, size against ``max_pixels``, Pillow's ``verify()``: finds
            empty files, non-images, damaged headers and truncated PNGs), ``full``
            (decode the whole image as the evaluator and trainer do) or ``off``.
        max_pixels: the largest accepted width x height.
        size_problem: what is wrong with an image of this ``(width, height)`` (e.g. not
            the annotated size), asked with the size the check read anyway.
    """
    mode = parse_choice(ImageCheck, mode, "image check")
    if mode is ImageCheck.OFF:
        return None
    try:
        if mode is ImageCheck.FULL:
            width, height = read_rgb8(path, max_pixels).size
        else:
            status = os.stat(path)
            if not stat.S_ISREG(status.st_mode):
                return f"{mode_kind(status.st_mode)}, not a regular file"
            if status.st_size == 0:
                return "the file is empty (0 bytes)"
            with open_image(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    return f"{width}x{height} is above the pixel limit of {max_pixels} (see --max-pixels)"
                frames = frames_problem(img)
                if frames is not None:
                    return frames
                img.verify()
    except ImageReadError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return size_problem(width, height) if size_problem is not None else None


def check_images(
    items: Sequence[T],
    check: Callable[[T], Optional[str]],
    threads: int = 8,
    progress: bool = False,
    desc: str = "checking images",
) -> List[Tuple[T, str]]:
    """``(item, reason)`` of every item whose ``check`` reports a problem, in order.

    Args:
        items: paths or dataset items.
        check: returns the reason an item is unusable, or ``None``.
        threads: parallel readers (the checks wait on the disk).
        progress: show a tqdm bar.
        desc: the bar's label.
    """
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = pool.map(check, items, chunksize=64)
        reasons = list(tqdm(results, total=len(items), desc=desc, disable=not progress, leave=False))
    return [(item, reason) for item, reason in zip(items, reasons) if reason is not None]


class ImageItem:
    """What the dataset items share: an image file that loads as 8-bit RGB and can be checked.

    Subclasses are dataclasses with a ``path`` field; they may add checks (e.g. the
    annotated size of a COCO image).
    """

    path: Path

    def load(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> "PIL.Image.Image":
        """The image as 8-bit PIL RGB (:func:`~compressai_transtic.imageio.read_rgb8`)."""
        return read_rgb8(self.path, max_pixels)

    def problem(
        self,
        mode: ImageCheck = ImageCheck.HEADER,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        size_problem: Optional[Callable[[int, int], Optional[str]]] = None,
    ) -> Optional[str]:
        """Why this item cannot be evaluated, or ``None`` (:func:`check_image`); besides
        this item's own :meth:`size_problem`, ``size_problem`` is asked about its size
        (e.g. what the evaluation protocol would make of it)."""

        def problem_of_size(width: int, height: int) -> Optional[str]:
            own = self.size_problem(width, height)
            return own if own is not None or size_problem is None else size_problem(width, height)

        return check_image(self.path, mode, max_pixels, problem_of_size)

    def size_problem(self, width: int, height: int) -> Optional[str]:
        """What is wrong with this item's image having this size (nothing, by default)."""
        return None
