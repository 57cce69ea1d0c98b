"""Datasets built from links count every image once, and bad images are found before any work.

The oracle for "every image once" is the set of distinct files (device, inode) that
the test itself created; the walks under test never see it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compressai_transtic.cli import main
from compressai_transtic.data import ClassificationImages, ImageFiles
from compressai_transtic.data.files import check_image, find_image_files
from compressai_transtic.training.data import find_images


def _png(path: Path, size=(40, 32), value=90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _identity(path: Path):
    st = path.stat()
    return st.st_dev, st.st_ino


@pytest.fixture
def linked_tree(tmp_path):
    """``root/281/a.png``, ``root/967/b.png`` and ``c.png``, plus links that alias them.

    ``root/zz_root -> root`` (a class folder that is the dataset), ``root/967/again -> root/967``
    (a loop), ``root/281/b_link.png -> root/967/b.png`` (one file under two classes),
    ``root/external -> outside/`` (a class folder kept elsewhere, with a loop back to itself),
    and a broken link.
    """
    root = tmp_path / "root"
    made = [
        _png(root / "281" / "a.png"),
        _png(root / "967" / "b.png", value=20),
        _png(root / "967" / "c.png", value=200),
    ]
    outside = tmp_path / "outside"
    made.append(_png(outside / "d.png", value=140))
    os.symlink(outside, outside / "loop")
    os.symlink(root, root / "zz_root")
    os.symlink(root / "967", root / "967" / "again")
    os.symlink(root / "967" / "b.png", root / "281" / "b_link.png")
    os.symlink(outside, root / "external")
    os.symlink(tmp_path / "missing.png", root / "281" / "broken.png")
    return root, {_identity(p) for p in made}


def test_an_image_folder_counts_each_file_once_through_links_and_loops(linked_tree, caplog):
    root, files = linked_tree
    found = find_image_files(root)
    assert len(found) == len(files) and {_identity(p) for p in found} == files
    assert root / "967" / "b.png" in found  # the plain path wins over the link
    assert "alias" in caplog.text and "broken link" in caplog.text
    assert sorted(item.path for item in ImageFiles(root)) == found
    assert find_images(root) == found  # training discovers the same files


def test_a_class_folder_linked_to_the_dataset_root_is_not_a_class(linked_tree, caplog):
    root, files = linked_tree
    dataset = ClassificationImages.from_folder(root)
    assert dataset.classes == ["281", "967", "external"]  # a linked folder kept elsewhere is a class
    ids = [item.image_id for item in dataset]
    assert len(ids) == len(set(_identity(item.path) for item in dataset)) == len(files)
    assert "zz_root" not in " ".join(ids)
    assert "link to the dataset" in caplog.text


def test_an_imagefolder_tree_without_links_is_unchanged(classification_set):
    ids = [item.image_id for item in ClassificationImages.from_folder(classification_set)]
    assert ids == ["281/chelsea.png", "967/coffee.png", "967/coffee_crop.png"]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty (0 bytes)"),
        (b"this is not an image", "not a readable image"),
        (None, "not a readable image"),  # a PNG cut in half
    ],
)
def test_check_image_names_what_is_wrong(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is None:
        data = _png(tmp_path / "good.png", size=(64, 64)).read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    assert reason in check_image(path, "header")
    assert check_image(path, "off") is None


def test_check_image_applies_the_pixel_limit_from_the_header(tmp_path):
    path = _png(tmp_path / "big.png", size=(50, 40))
    assert check_image(path, "header", max_pixels=2000) is None
    assert "above the pixel limit of 1999" in check_image(path, "header", max_pixels=1999)
    assert "above the limit of 1999" in check_image(path, "full", max_pixels=1999)


@pytest.fixture
def set_with_bad_files(classification_set, tmp_path):
    root = tmp_path / "set"
    for src in classification_set.rglob("*.png"):
        target = root / src.relative_to(classification_set)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
    (root / "281" / "empty.png").write_bytes(b"")
    (root / "967" / "text.jpg").write_bytes(b"not a jpeg")
    return root


def test_eval_names_every_bad_image_before_building_any_model(set_with_bad_files, tmp_path, capsys, monkeypatch):
    import compressai_transtic.evaluation.codecs as codecs
    from compressai_transtic.tasks.base import Task

    def no_models(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(Task, "network", property(no_models))
    monkeypatch.setattr(codecs.CodecSpec, "load", no_models)
    argv = [
        "eval",
        str(set_with_bad_files),
        "-a",
        "tic",
        "-q",
        "1",
        "--random-weights",
        "--crop",
        "64",
        "-o",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[RANDOM WEIGHTS] error: 2 of 5 images cannot be evaluated:"
    assert err[1].endswith("281/empty.png: the file is empty (0 bytes)")
    assert "967/text.jpg: not a readable image" in err[2]
    assert "--skip-bad" in err[3]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_skip_bad_evaluates_the_others_and_lists_what_it_left_out(set_with_bad_files, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    argv = [
        "eval",
        str(set_with_bad_files),
        "-a",
        "tic",
        "-q",
        "1",
        "--random-weights",
        "--crop",
        "64",
        "-o",
        str(out),
        "--no-progress",
        "--skip-bad",
        "--no-reference",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("left out (--skip-bad)") == 2
    curve = json.loads((out / "tic-cls.json").read_text())
    assert curve["num_images"] == 3 and "2 unreadable image(s) left out" in curve["description"]
    listed = (out / "skipped-images.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == [
        str(set_with_bad_files / "281" / "empty.png"),
        str(set_with_bad_files / "967" / "text.jpg"),
    ]
    assert "skipped-images.txt" in captured.out


def test_a_large_image_is_refused_by_our_limit_without_pillows_bomb_warning(tmp_path, recwarn):
    from compressai_transtic.imageio import ImageReadError, read_rgb8

    path = tmp_path / "large.png"
    Image.new("L", (10000, 9000)).save(path)  # 90 MP: above Pillow's warning threshold
    assert "above the pixel limit of 16777216" in check_image(path, "header")
    with pytest.raises(ImageReadError, match="90000000 pixels, above the limit of 16777216"):
        read_rgb8(path)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


@pytest.mark.parametrize("mode", ["header", "full"])
def test_a_coco_image_of_another_size_than_annotated_is_found_by_the_check(tmp_path, mode):
    from compressai_transtic.data import CocoImage

    path = _png(tmp_path / "000001.png", size=(40, 32))
    assert CocoImage(1, path, height=32, width=40).problem(mode) is None
    reason = CocoImage(1, path, height=40, width=32).problem(mode)
    assert reason.startswith("the image is 32x40 but the annotation file says 40x32")
    assert CocoImage(1, path, height=40, width=32).problem("off") is None


def _folder_beyond_path_max(root: Path) -> str:
    """Folders nested past PATH_MAX under ``root`` (made relative to open folders, as no
    absolute path can name them), an image at the bottom; returns the first folder's name."""
    name = "d" * 250
    fd = os.open(root, os.O_RDONLY)
    for _ in range(20):  # 20 x 251 characters > 4096
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    with open("deep.png", "wb", opener=lambda p, flags: os.open(p, flags, dir_fd=fd)) as f:
        Image.new("RGB", (8, 8)).save(f, format="PNG")
    os.close(fd)
    return name


def test_folders_that_cannot_be_listed_stop_the_search_instead_of_dropping_their_images(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "281").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "281" / "a.png")
    _folder_beyond_path_max(root / "281")
    with pytest.raises(ValueError, match="folders that cannot be read .*File name too long"):
        find_image_files(root)
    with pytest.raises(ValueError, match="training dataset: .*folders that cannot be read"):
        find_images(root)
    out = tmp_path / "out"
    assert main(["eval", str(root), "--task", "fidelity", "-a", "jpeg:10", "-o", str(out), "--no-progress"]) == 2
    assert "folders that cannot be read" in capsys.readouterr().err


def test_file_names_that_are_not_utf8_are_written_escaped_in_the_reports(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (48, 40), (90, 60, 30)).save(os.fsdecode(os.fsencode(folder) + b"/\xff\xfe.png"))
    Image.new("RGB", (48, 40), (30, 60, 90)).save(folder / "plain.png")
    out = tmp_path / "out"
    assert main(["eval", str(folder), "--task", "fidelity", "-a", "jpeg:10", "-o", str(out), "--no-progress"]) == 0
    per_image = (out / "per-image.csv").read_text(encoding="utf-8")
    assert "\\udcff\\udcfe.png" in per_image and "plain.png" in per_image
