"""A COCO annotation file is checked when the dataset is loaded.

pycocotools checks nothing: a malformed file gave a traceback, an error naming no file, a
failure when the detections were scored (after every image was coded) or silently wrong
scores. Now every entry that scoring uses is checked up front, and a bad one is refused
with an error ``FILE: ENTRY: what is wrong`` before any model is built or image coded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence, Union

import numpy as np
import pytest
from PIL import Image

from compressai_transtic.data import CocoImages

DELETE = object()  # an edit that removes the field


def valid_document() -> Dict[str, Any]:
    """Two 10 x 8 images with one car each: a polygon mask and an RLE mask."""
    return {
        "images": [
            {"id": 2, "file_name": "b.png", "height": 8, "width": 10},
            {"id": 1, "file_name": "a.png", "height": 8, "width": 10},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [1, 1, 4, 3],
                "area": 12.0,
                "iscrowd": 0,
                "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]],
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 3,
                "bbox": [0, 0, 2, 2],
                "area": 4,
                "iscrowd": 1,
                "segmentation": {"size": [8, 10], "counts": [0, 2, 6, 2, 70]},
            },
        ],
        "categories": [{"id": 3, "name": "car", "supercategory": "vehicle"}],
    }


def edited(keys: Sequence[Union[str, int]], value: Any) -> Dict[str, Any]:
    """The valid document with ``document[keys...]`` set to ``value`` (or removed)."""
    document = valid_document()
    parent = document
    for key in keys[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    return document


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for seed, name in enumerate(("a.png", "b.png")):
        noise = np.random.default_rng(seed).integers(0, 256, (8, 10, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / name)
    return folder


def annotation_file(tmp_path: Path, content: Union[bytes, Dict[str, Any]]) -> Path:
    path = tmp_path / "instances.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def refusal(image_dir: Path, content: Union[bytes, Dict[str, Any]]) -> str:
    """The error loading a file with ``content`` gives, less the file name it starts with."""
    path = annotation_file(image_dir.parent, content)
    with pytest.raises(ValueError) as info:  # the eval command reports ValueErrors as 'error: ...', exit 2
        CocoImages(image_dir, path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message[len(f"{path}: ") :]


def test_a_valid_file_loads_with_its_images_in_id_order(image_dir):
    dataset = CocoImages(image_dir, annotation_file(image_dir.parent, valid_document()))
    assert [(item.image_id, item.path.name, item.height, item.width) for item in dataset] == [
        (1, "a.png", 8, 10),
        (2, "b.png", 8, 10),
    ]
    assert dataset.has_masks and dataset.boxes(1) == [[1.0, 1.0, 4.0, 3.0]]


def test_pycocotools_scores_a_checked_file_as_before(image_dir):
    from compressai_transtic.metrics import coco_evaluate

    dataset = CocoImages(image_dir, annotation_file(image_dir.parent, valid_document()))
    truth = [dict(ann, score=1.0, segmentation=dataset.coco.annToRLE(ann)) for ann in valid_document()["annotations"]]
    assert coco_evaluate(dataset.coco, truth, "bbox")["AP50"] == pytest.approx(1.0)
    assert coco_evaluate(dataset.coco, truth, "segm")["AP50"] == pytest.approx(1.0)


def test_the_error_is_an_annotation_error_naming_the_file(image_dir):
    from compressai_transtic.data.coco import AnnotationError

    with pytest.raises(AnnotationError, match=r"instances\.json: images\[0\]: 'id' is missing"):
        CocoImages(image_dir, annotation_file(image_dir.parent, edited(["images", 0, "id"], DELETE)))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"images": [{"id": 1, "file_name": "a.p', "not valid JSON: Unterminated string"),
        ('{"images": [], "x": "Café"}'.encode("latin-1"), "not UTF-8 text (byte 0xe9"),
        (b'{"images": [{"id": 1' + b"9" * 5000 + b"}]}", "not valid JSON"),
        (b"[]", "the top level is [], not an object"),
    ],
    ids=["nested 100000 deep", "truncated", "latin-1", "5000-digit number", "top level a list"],
)
def test_a_file_that_is_not_a_coco_json_object_is_refused(image_dir, content, message):
    assert message in refusal(image_dir, content)


#: images need an integer id, a file name and a positive integer size
IMAGES = [
    (["images"], None, "'images' is not a list: None"),
    (["images"], {"id": 1}, "'images' is not a list"),
    (["images"], [], "lists no images"),
    (["images", 0], "b.png", "images[0] is not an object"),
    (["images", 0, "id"], DELETE, "images[0]: 'id' is missing"),
    (["images", 0, "id"], "x", "images[0]: 'id' is not an integer: 'x'"),
    (["images", 1, "id"], "1", "images[1]: 'id' is not an integer: '1'"),
    (["images", 0, "id"], 1.5, "images[0]: 'id' is not an integer: 1.5"),
    (["images", 0, "id"], True, "images[0]: 'id' is not an integer: True"),
    (["images", 0, "file_name"], 5, "images[0]: 'file_name' is not a file name: 5"),
    (["images", 0, "height"], DELETE, "images[0]: 'height' is missing"),
    (["images", 0, "height"], "abc", "images[0]: 'height' is not a positive integer: 'abc'"),
    (["images", 0, "height"], 8.9, "images[0]: 'height' is not a positive integer: 8.9"),
    (["images", 1, "width"], 0, "images[1]: 'width' is not a positive integer: 0"),
]

#: categories need an integer id and a name (pycocotools deep-copies them: little nesting)
CATEGORIES = [
    (["categories"], DELETE, "'categories' is missing"),
    (["categories"], [], "lists no categories"),
    (["categories", 0, "id"], "3", "categories[0]: 'id' is not an integer: '3'"),
    (["categories", 0, "name"], DELETE, "categories[0]: 'name' is missing"),
    (["categories", 0, "keypoints"], json.loads("[" * 500 + "]" * 500), "categories[0]: lists or objects nest more"),
]

#: annotations need an image, a category, a finite box, an area and iscrowd
ANNOTATIONS = [
    (["annotations"], DELETE, "'annotations' is missing"),
    (["annotations"], [], "lists no annotations"),
    (["annotations", 0, "id"], DELETE, "annotations[0]: 'id' is missing"),
    (["annotations", 0, "image_id"], 7, "annotations[0]: image_id 7 is not the id of any image"),
    (["annotations", 0, "image_id"], 1.5, "annotations[0]: 'image_id' is not an integer: 1.5"),
    (["annotations", 1, "category_id"], DELETE, "annotations[1]: 'category_id' is missing"),
    (["annotations", 0, "category_id"], 4, "annotations[0]: category_id 4 is not the id of any category"),
    (["annotations", 0, "bbox"], "8,10,30,20", "annotations[0]: 'bbox' is not [x, y, width, height]"),
    (["annotations", 0, "bbox"], [1, 1, 4], "annotations[0]: 'bbox' is not [x, y, width, height]"),
    (["annotations", 0, "bbox"], [1, 1, float("nan"), 3], "annotations[0]: 'bbox' is not"),
    (["annotations", 0, "bbox"], [1, float("inf"), 4, 3], "annotations[0]: 'bbox' is not"),
    (["annotations", 0, "bbox"], [1, 1, -4, 3], "annotations[0]: 'bbox' is not"),
    (["annotations", 0, "area"], DELETE, "annotations[0]: 'area' is missing"),
    (["annotations", 0, "area"], -1, "annotations[0]: 'area' is not a finite number >= 0: -1"),
    (["annotations", 0, "iscrowd"], DELETE, "annotations[0]: 'iscrowd' is missing"),
    (["annotations", 0, "iscrowd"], 2, "annotations[0]: 'iscrowd' is not 0 or 1: 2"),
]


@pytest.mark.parametrize("keys, value, message", IMAGES + CATEGORIES + ANNOTATIONS)
def test_an_entry_missing_a_field_or_with_one_of_the_wrong_type_is_refused(image_dir, keys, value, message):
    assert refusal(image_dir, edited(keys, value)).startswith(message)


@pytest.mark.parametrize(
    "keys, value, message",
    [
        (["annotations", 0, "segmentation"], "abc", "is neither a list of polygons nor an RLE object"),
        (["annotations", 0, "segmentation"], [[1, 1, 5, 1]], "polygon 0 has 4 numbers: it needs the x, y of 3 points"),
        (["annotations", 0, "segmentation"], [[1, 1, 5, 1, 5, 4, 1]], "polygon 0 has 7 numbers"),
        (["annotations", 0, "segmentation"], [[1, 1, 5, "x", 5, 4]], "polygon 0 is not a list of finite numbers"),
        (["annotations", 0, "segmentation"], [[1, 1, 1e12, 1, 5, 4]], "polygon 0 has points farther than"),
        (["annotations", 1, "segmentation", "size"], DELETE, "is an RLE object without 'size'"),
        (["annotations", 1, "segmentation", "size"], [10, 8], "is an RLE of size [10, 8], but its image has"),
        (["annotations", 1, "segmentation", "size"], [8.0, 10.0], "is an RLE whose 'size' is not two integers"),
        (["annotations", 1, "segmentation", "counts"], [0, 2, -2, 10, 70], "'counts' is neither an RLE string nor"),
        (["annotations", 1, "segmentation", "counts"], [0, 2, 6, 2, 60], "'counts' add up to 70 pixels"),
    ],
)
def test_segmentations_are_polygons_or_an_rle_of_the_image_size(image_dir, keys, value, message):
    """Only mask AP reads them: the file loads (box AP is scored as before), and ``seg`` is refused."""
    dataset = CocoImages(image_dir, annotation_file(image_dir.parent, edited(keys, value)))
    (problem,) = dataset.mask_problems
    assert problem.startswith(f"annotations[{keys[1]}]: 'segmentation' {message}")


def test_eval_refuses_mask_ap_on_unusable_masks_and_scores_box_ap(image_dir, tmp_path, capsys):
    from compressai_transtic.cli import main

    path = annotation_file(tmp_path, edited(["annotations", 0, "segmentation"], [[1, 1, 5, 1]]))
    common = ["eval", str(image_dir), "--annotations", str(path), "-a", "jpeg:50", "--random-weights", "--no-progress"]
    common += ["--short-edge", "32", "--max-size", "48", "--code-multiple", "0"]
    assert main([*common, "--task", "seg", "-o", str(tmp_path / "seg")]) == 2
    err = capsys.readouterr().err
    assert "task 'seg' cannot score the masks of" in err and "annotations[0]: 'segmentation' polygon 0 has 4" in err
    assert main([*common, "--task", "det", "-o", str(tmp_path / "det")]) == 0


@pytest.mark.parametrize("part", ["images", "annotations", "categories"])
def test_an_id_given_twice_is_refused_naming_both_entries(image_dir, part):
    document = valid_document()
    document[part].append(dict(document[part][0], file_name="a.png"))
    last = len(document[part]) - 1
    expected = f"{part}[0] and {part}[{last}] have the same id {document[part][0]['id']}: ids must be unique"
    assert refusal(image_dir, document) == expected


def test_an_image_whose_name_is_too_long_for_the_file_system_is_reported_missing(image_dir):
    path = annotation_file(image_dir.parent, edited(["images", 0, "file_name"], "x" * 300 + ".png"))
    with pytest.raises(FileNotFoundError, match="1 image"):
        CocoImages(image_dir, path)


def test_eval_refuses_a_malformed_file_before_building_any_model(image_dir, tmp_path, monkeypatch, capsys):
    from compressai_transtic.cli import main
    from compressai_transtic.evaluation import cli

    monkeypatch.setattr(cli, "build_specs", lambda *a: pytest.fail("a codec was built"))
    monkeypatch.setattr(cli, "build_tasks", lambda *a: pytest.fail("a task network was built"))
    path = annotation_file(tmp_path, edited(["annotations", 0, "bbox"], "8,10,30,20"))
    args = ["eval", str(image_dir), "--annotations", str(path), "--task", "det", "-a", "tic:1"]
    assert main([*args, "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: annotations[0]: 'bbox' is not [x, y, width, height]")


def test_paths_of_the_wrong_kind_are_called_what_they_are(coco_set, tmp_path):
    with pytest.raises(FileNotFoundError, match="COCO image directory .*: not a folder"):
        CocoImages(coco_set.annotation_file, coco_set.annotation_file)  # a file given as the image folder
    with pytest.raises(FileNotFoundError, match="COCO image directory .*: no such folder"):
        CocoImages(tmp_path / "missing", coco_set.annotation_file)
    with pytest.raises(FileNotFoundError, match="COCO annotation file .*: a folder, not a regular file"):
        CocoImages(coco_set.image_dir, tmp_path)
