"""Classification labels name one image once and one ImageNet class of the classifier.

Bad trees and image lists (``--labels``) are refused when the dataset is loaded, with a
message that names the folder or the line, never a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from compressai_transtic.cli import main
from compressai_transtic.data import ClassificationImages
from compressai_transtic.data.classification import IMAGENET_CLASSES


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (90, 10, 200)).save(path)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """``tree/281/a.png`` and ``tree/967/b.png``."""
    _png(tmp_path / "tree" / "281" / "a.png")
    _png(tmp_path / "tree" / "967" / "b.png")
    return tmp_path / "tree"


def _listing(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _eval(dataset: Path, tmp_path: Path, *options: str) -> int:
    """``compressai-transtic eval`` of ``dataset``; its exit status."""
    return main(["eval", str(dataset), *options, "-a", "jpeg:50", "--random-weights", "-o", str(tmp_path / "out")])


# ---------------------------------------------------------------------------- one image once
@pytest.mark.parametrize("again", ["281/a.png", "./281/a.png", "281//a.png", "967/../281/a.png", "link.png"])
def test_an_image_listed_twice_by_any_spelling_is_refused_naming_both_lines(tree, tmp_path, again):
    os.symlink(tree / "281" / "a.png", tree / "link.png")
    listing = _listing(tmp_path, "281/a.png 281", "967/b.png 967", f"{again} 5")
    message = f"{listing}:3: {again} is the image of line 1 (281/a.png) again; list each image once"
    with pytest.raises(ValueError, match=re.escape(message)):
        ClassificationImages.from_list(tree, listing)


def test_eval_refuses_a_list_with_a_repeated_image_before_any_model(tree, tmp_path, capsys, monkeypatch):
    import compressai_transtic.evaluation.cli as eval_cli

    monkeypatch.setattr(eval_cli, "build_tasks", None)  # a call would raise TypeError and fail the test
    listing = _listing(tmp_path, "281/a.png 281", "./281/a.png 5")
    assert _eval(tree, tmp_path, "--labels", str(listing)) == 2
    err = capsys.readouterr().err
    assert f"error: {listing}:2: ./281/a.png is the image of line 1" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- the class range
def test_the_class_range_is_that_of_resnet50s_imagenet_weights():
    from torchvision.models import ResNet50_Weights

    assert IMAGENET_CLASSES == len(ResNet50_Weights.IMAGENET1K_V1.meta["categories"]) == 1000


@pytest.mark.parametrize("label", ["-1", "1000", "5000", "99999999999999999999999999", "9" * 5000, "281,1000"])
def test_a_label_outside_the_classifiers_classes_is_refused_naming_the_line(tree, tmp_path, label):
    listing = _listing(tmp_path, "# path label", f"281/a.png {label}")
    bad = label.split(",")[-1]
    message = f"{listing}:2: class {bad} is outside the classifier's classes 0..999"
    with pytest.raises(ValueError, match=re.escape(message)):
        ClassificationImages.from_list(tree, listing)


def test_the_first_and_last_classes_and_padded_labels_are_accepted(tree, tmp_path):
    listing = _listing(tmp_path, "281/a.png 0", "967/b.png 0999,999")
    assert [item.label for item in ClassificationImages.from_list(tree, listing)] == [0, (999, 999)]


def test_a_label_in_other_than_ascii_digits_is_not_a_class_index(tree, tmp_path):
    listing = _listing(tmp_path, "281/a.png \u0663")  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
    with pytest.raises(ValueError, match=re.escape(f"{listing}:1: label '\u0663' is not an integer class index")):
        ClassificationImages.from_list(tree, listing)


def test_the_class_count_can_be_given(tree, tmp_path):
    listing = _listing(tmp_path, "281/a.png 281")
    with pytest.raises(ValueError, match=re.escape("class 281 is outside the classifier's classes 0..9")):
        ClassificationImages.from_list(tree, listing, num_classes=10)
    with pytest.raises(ValueError, match=re.escape("class 281 is outside the classifier's classes 0..9")):
        ClassificationImages.from_folder(tree, num_classes=10)


@pytest.mark.parametrize("name", ["1000", "5000", "99999999999999999999999999"])
def test_a_class_folder_outside_the_classifiers_classes_is_refused_naming_it(tree, name):
    _png(tree / name / "c.png")
    message = f"class folder {tree / name}: class {name} is outside the classifier's classes 0..999"
    with pytest.raises(ValueError, match=re.escape(message)):
        ClassificationImages.from_folder(tree)


def test_more_named_class_folders_than_classes_are_refused(tmp_path):
    for i in range(11):
        (tmp_path / f"n{i:08d}").mkdir()
    with pytest.raises(ValueError, match=re.escape("has 11 class folders, more than the classifier's 10 classes")):
        ClassificationImages.from_folder(tmp_path, num_classes=10)


# ---------------------------------------------------------------------------- class folder names
def test_two_folders_naming_one_class_are_refused_naming_both(tree):
    _png(tree / "0281" / "c.png")
    message = f"class folders {tree / '0281'} and {tree / '281'} are both class 281"
    with pytest.raises(ValueError, match=re.escape(message)):
        ClassificationImages.from_folder(tree)


@pytest.mark.parametrize("name", ["\u00b2", "\u0663"])  # SUPERSCRIPT TWO, ARABIC-INDIC DIGIT THREE
def test_a_folder_named_by_a_non_ascii_digit_is_a_name_not_a_class_number(tree, name, caplog):
    _png(tree / name / "c.png")
    dataset = ClassificationImages.from_folder(tree)
    assert dataset.classes == ["281", "967", name]  # labels by position, as for synset folders
    assert [item.label for item in dataset] == [0, 1, 2]
    assert f"class folder {name!r} is not a class number" in caplog.text


def test_eval_reads_a_tree_with_a_superscript_folder_without_a_traceback(tree, tmp_path, capsys, monkeypatch):
    import compressai_transtic.evaluation.cli as eval_cli

    def stop(*args, **kwargs):
        raise ValueError("stopped after the dataset was loaded")

    monkeypatch.setattr(eval_cli, "build_specs", stop)
    _png(tree / "\u00b2" / "c.png")
    assert _eval(tree, tmp_path) == 2
    err = capsys.readouterr().err
    assert "error: stopped after the dataset was loaded" in err and "invalid literal" not in err


# ---------------------------------------------------------------------------- what a path is
def test_a_fifo_in_the_list_is_not_a_regular_file(tree, tmp_path):
    os.mkfifo(tree / "281" / "pipe.png")
    listing = _listing(tmp_path, "281/pipe.png 281")
    message = f"{listing}:1: image {tree / '281' / 'pipe.png'}: a FIFO (named pipe), not a regular file"
    with pytest.raises(ValueError, match=re.escape(message)):
        ClassificationImages.from_list(tree, listing)


def test_a_folder_in_the_list_is_not_a_regular_file(tree, tmp_path):
    listing = _listing(tmp_path, "281 281")
    with pytest.raises(ValueError, match=re.escape(f"image {tree / '281'}: a folder, not a regular file")):
        ClassificationImages.from_list(tree, listing)


def test_a_missing_image_still_does_not_exist(tree, tmp_path):
    listing = _listing(tmp_path, "281/gone.png 281")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{listing}:1: image {tree / '281' / 'gone.png'} does")):
        ClassificationImages.from_list(tree, listing)


def test_a_list_that_is_not_text_is_named(tree, tmp_path):
    listing = tmp_path / "labels.txt"
    listing.write_bytes(b"281/a.png 281\n\xff\xfe\n")
    with pytest.raises(ValueError, match=re.escape(f"image list {listing} cannot be read as UTF-8 text")):
        ClassificationImages.from_list(tree, listing)


@pytest.mark.parametrize("with_list", [False, True])
def test_a_dataset_path_that_is_a_file_is_not_a_folder(tmp_path, capsys, with_list):
    dataset = _png(tmp_path / "photo.png")
    options = ["--labels", str(_listing(tmp_path, "photo.png 281"))] if with_list else []
    assert _eval(dataset, tmp_path, *options) == 2
    err = capsys.readouterr().err
    assert f"error: classification dataset {dataset} is a file, not a folder; pass the folder" in err
