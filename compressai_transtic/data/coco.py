"""Images with a COCO-format annotation file (``instances_val2017.json`` or your own)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from pycocotools.coco import COCO

from ..filekinds import regular_file_problem
from ..imageio import DEFAULT_MAX_PIXELS
from ..jsonvalues import is_finite_number, is_integer, nests_deeper
from .files import ImageItem
from .subset import ImageList

if TYPE_CHECKING:  # pragma: no cover
    import PIL.Image

__all__ = ["AnnotationError", "CocoImage", "CocoImages", "load_annotations", "mask_problems"]

logger = logging.getLogger(__name__)

#: how deeply a category may nest lists and objects (pycocotools deep-copies the categories)
MAX_CATEGORY_NESTING = 16


class AnnotationError(ValueError):
    """A COCO annotation file that cannot be used: unreadable, not JSON, or entries that are
    missing, of the wrong type, inconsistent or given twice. The message names the file and the entry."""


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

    Raises:
        FileNotFoundError: the file, the folder or some of the images are missing.
        AnnotationError: the file is malformed (see :func:`load_annotations`): found
            here, not when the detections are scored.
    """

    def __init__(self, image_root: Union[str, Path], annotation_file: Union[str, Path]) -> None:
        self.root = Path(image_root)
        self.annotation_file = Path(annotation_file)
        problem = regular_file_problem(self.annotation_file)
        if problem is not None:
            raise FileNotFoundError(f"COCO annotation file {self.annotation_file}: {problem}")
        if not os.path.isdir(self.root):
            what = "not a folder" if os.path.exists(self.root) else "no such folder"
            raise FileNotFoundError(f"COCO image directory {self.root}: {what}")
        document = load_annotations(self.annotation_file)
        #: why mask AP cannot be scored on these annotations (empty: it can); box AP can anyway
        self.mask_problems = mask_problems(document)
        if self.mask_problems:
            logger.warning(
                "%s: %d annotation(s) have segmentations that mask AP cannot use (box AP is unaffected), e.g. %s",
                self.annotation_file,
                len(self.mask_problems),
                self.mask_problems[0],
            )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco: Any = COCO()
            self.coco.dataset = document
            self.coco.createIndex()
        images = sorted(document["images"], key=lambda im: im["id"])
        self.items: List[CocoImage] = [
            CocoImage(im["id"], self.root / im["file_name"], im["height"], im["width"]) for im in images
        ]
        missing = [str(item.path) for item in self.items[:1000] if not os.path.isfile(item.path)]
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


# ---------------------------------------------------------------------------- checks
# pycocotools checks nothing: a bad entry fails (or silently changes the scores) only when
# the detections are scored, after every image was coded. Everything it will use is checked here.
def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(map(is_finite_number, value)) and min(value[2:]) >= 0


#: (key, what it must be, test) of a field every entry of a part needs
_Field = Tuple[str, str, Callable[[Any], bool]]
_ID: _Field = ("id", "an integer", is_integer)
_IMAGE_FIELDS: Tuple[_Field, ...] = (
    _ID,
    ("file_name", "a file name", lambda v: isinstance(v, str) and v != ""),
    ("height", "a positive integer", lambda v: is_integer(v) and v > 0),
    ("width", "a positive integer", lambda v: is_integer(v) and v > 0),
)
_CATEGORY_FIELDS: Tuple[_Field, ...] = (_ID, ("name", "a text", lambda v: isinstance(v, str)))
_ANNOTATION_FIELDS: Tuple[_Field, ...] = (
    _ID,
    ("image_id", "an integer", is_integer),
    ("category_id", "an integer", is_integer),
    ("bbox", "[x, y, width, height]: 4 finite numbers, width and height >= 0", _is_box),
    ("area", "a finite number >= 0", lambda v: is_finite_number(v) and v >= 0),
    ("iscrowd", "0 or 1", lambda v: is_integer(v) and v in (0, 1)),
)


def load_annotations(path: Path) -> Dict[str, Any]:
    """The document of a COCO annotation file, checked entry by entry.

    Raises:
        AnnotationError: the file is unreadable, not UTF-8 JSON, or an entry is missing,
            of the wrong type, refers to an image or category that is not there, or
            repeats an id; the message names the file and the entry.
    """
    try:
        document = _read_json(path)
        _check_document(document)
    except AnnotationError as err:
        raise AnnotationError(f"{path}: {err}") from None
    return document


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise AnnotationError(f"cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise AnnotationError(f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"not valid JSON: {err}; a truncated or damaged file?") from None
    except RecursionError:
        raise AnnotationError("lists or objects are nested too deeply to be read (COCO files nest 5 levels)") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise AnnotationError(f"not valid JSON ({err})") from None


def _check_document(document: Any) -> None:
    if not isinstance(document, dict):
        raise AnnotationError(
            f"the top level is {_show(document)}, not an object with 'images', 'annotations' and 'categories'"
        )
    images = _checked(document, "images", _IMAGE_FIELDS)
    categories = _checked(document, "categories", _CATEGORY_FIELDS)
    for i, category in enumerate(categories.values()):
        if nests_deeper(category, MAX_CATEGORY_NESTING):
            raise AnnotationError(
                f"categories[{i}]: lists or objects nest more than {MAX_CATEGORY_NESTING} levels deep"
            )
    _check_annotations(_checked(document, "annotations", _ANNOTATION_FIELDS), images, categories)


def _checked(document: Dict[str, Any], part: str, fields: Sequence[_Field]) -> Dict[int, Dict[str, Any]]:
    """The entries of ``document[part]`` by id, with the ``fields`` every entry needs."""
    entries = _entries(document, part)
    for i, entry in enumerate(entries):
        for key, kind, valid in fields:
            _field(entry, key, f"{part}[{i}]", kind, valid)
    return _by_id(entries, part)


def _check_annotations(
    annotations: Dict[int, Dict[str, Any]], images: Dict[int, Dict[str, Any]], categories: Dict[int, Dict[str, Any]]
) -> None:
    """The image and the category of each annotation are there (its segmentation, which
    only mask AP reads, is checked by :func:`mask_problems`)."""
    for i, ann in enumerate(annotations.values()):
        where = f"annotations[{i}]"
        if ann["image_id"] not in images:
            raise AnnotationError(f"{where}: image_id {ann['image_id']} is not the id of any image")
        if ann["category_id"] not in categories:
            raise AnnotationError(f"{where}: category_id {ann['category_id']} is not the id of any category")


def mask_problems(document: Dict[str, Any]) -> List[str]:
    """What makes the segmentations of a checked document (:func:`load_annotations`)
    unusable for mask AP, one line per annotation (pycocotools fails on them, or scores
    them wrongly); box AP does not read them.
    """
    images = {image["id"]: image for image in document["images"]}
    problems = []
    for i, ann in enumerate(document["annotations"]):
        if "segmentation" in ann:
            problem = _segmentation_problem(ann["segmentation"], images[ann["image_id"]])
            if problem:
                problems.append(f"annotations[{i}]: 'segmentation' {problem}")
    return problems


def _segmentation_problem(segmentation: Any, image: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a segmentation: polygons ``[[x1, y1, x2, y2, ...], ...]`` or an RLE."""
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, image["height"], image["width"])
    if not isinstance(segmentation, list):
        return f"is neither a list of polygons nor an RLE object: {_show(segmentation)}"
    for k, polygon in enumerate(segmentation):
        problem = _polygon_problem(polygon, image["height"], image["width"])
        if problem:
            return f"polygon {k} {problem}"
    return None


def _polygon_problem(polygon: Any, height: int, width: int) -> Optional[str]:
    if not isinstance(polygon, list) or not all(map(is_finite_number, polygon)):
        return f"is not a list of finite numbers [x1, y1, x2, y2, ...]: {_show(polygon)}"
    if len(polygon) < 6 or len(polygon) % 2:
        return f"has {len(polygon)} numbers: it needs the x, y of 3 points or more (an even number, at least 6)"
    xs, ys = polygon[0::2], polygon[1::2]
    if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
        return f"has points farther than its image's size (height {height}, width {width}) outside the image"
    return None


def _rle_problem(rle: Dict[str, Any], height: int, width: int) -> Optional[str]:
    if "size" not in rle or "counts" not in rle:
        return "is an RLE object without 'size' ([height, width] of its image) or 'counts'"
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(map(is_integer, size))):
        return f"is an RLE whose 'size' is not two integers [height, width]: {_show(size)}"
    if size != [height, width]:
        return f"is an RLE of size {_show(size)}, but its image has [height, width] = [{height}, {width}]"
    counts = rle["counts"]
    if isinstance(counts, str):
        return None
    if not isinstance(counts, list) or not all(is_integer(c) and c >= 0 for c in counts):
        return f"'counts' is neither an RLE string nor a list of non-negative integers: {_show(counts)}"
    if sum(counts) != height * width:
        return f"'counts' add up to {sum(counts)} pixels, but its image has {height} x {width} = {height * width}"
    return None


def _entries(document: Dict[str, Any], key: str) -> List[Dict[str, Any]]:
    """The list ``document[key]`` of objects."""
    if key not in document:
        raise AnnotationError(f"{key!r} is missing (COCO files list 'images', 'annotations' and 'categories')")
    entries = document[key]
    if not isinstance(entries, list):
        raise AnnotationError(f"{key!r} is not a list: {_show(entries)}")
    if not entries:
        raise AnnotationError(f"lists no {key}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise AnnotationError(f"{key}[{i}] is not an object: {_show(entry)}")
    return entries


def _field(entry: Dict[str, Any], key: str, where: str, kind: str, valid: Callable[[Any], bool]) -> None:
    """``entry[key]`` must be there and pass ``valid``."""
    if key not in entry:
        raise AnnotationError(f"{where}: {key!r} is missing")
    if not valid(entry[key]):
        raise AnnotationError(f"{where}: {key!r} is not {kind}: {_show(entry[key])}")


def _by_id(entries: List[Dict[str, Any]], key: str) -> Dict[int, Dict[str, Any]]:
    """The entries by their ``id``, which must differ."""
    first: Dict[int, int] = {}
    for i, entry in enumerate(entries):
        j = first.setdefault(entry["id"], i)
        if j != i:
            raise AnnotationError(f"{key}[{j}] and {key}[{i}] have the same id {entry['id']}: ids must be unique")
    return {entry["id"]: entry for entry in entries}


def _show(value: Any) -> str:
    """A JSON value for a message, shortened."""
    return reprlib.repr(value)
