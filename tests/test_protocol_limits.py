"""``eval`` bounds the images its protocol makes by ``--max-pixels``, as it bounds the
images it reads: protocol options and image shapes that would make larger ones are
refused before any network is built or image coded."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from compressai_transtic.cli import main
from compressai_transtic.protocol import classification_protocol, detection_protocol


def _eval(dataset, out, *extra: str) -> int:
    return main(["eval", str(dataset), "-a", "jpeg:50", "--random-weights", "--no-progress", "-o", str(out), *extra])


@pytest.mark.parametrize(
    "options, message",
    [
        (["--crop", "40000"], "--crop 40000 makes images of 1600000000 pixels or more, above --max-pixels 16777216"),
        (["--crop", "0"], "--crop must be positive, got 0"),
        (["--crop", "64", "--max-pixels", "4000"], "--crop 64 makes images of 4096 pixels or more"),
    ],
)
def test_protocol_sizes_beyond_the_pixel_limit_are_refused_before_anything_runs(
    classification_set, tmp_path, capsys, options, message
):
    assert _eval(classification_set, tmp_path / "out", *options) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_an_image_the_protocol_would_resize_beyond_the_limit_is_named_up_front(tmp_path, capsys):
    (tmp_path / "281").mkdir()
    Image.new("RGB", (2000, 20), (90, 60, 30)).save(tmp_path / "281" / "strip.png")  # 40000 pixels
    assert _eval(tmp_path, tmp_path / "out", "--crop", "64", "--max-pixels", "100000") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / '281' / 'strip.png'}: 2000x20 would be resized at 6400x64, 409600 pixels, above" in err


def test_the_protocol_checks_sizes_before_resizing():
    image = Image.new("RGB", (4000, 10))
    with pytest.raises(ValueError, match="4000x10 would be resized at 102400x256"):
        classification_protocol(256).prepare(image, max_pixels=2**24)
    coded = detection_protocol(800, None, 4096)  # an 800x800 image is coded at 4096x4096
    assert coded.size_problem(800, 800, 4096 * 4096) is None
    assert "800x800 would be coded at 4096x4096, 16777216 pixels" in coded.size_problem(800, 800, 4096 * 4096 - 1)
    assert classification_protocol(256).size_problem(300, 400, 2**24) is None
    assert classification_protocol(256).prepare(Image.new("RGB", (300, 400)), max_pixels=2**24).shape == (3, 256, 256)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_among_the_dataset_images_is_called_a_pipe(tmp_path, capsys):
    (tmp_path / "281").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "281" / "a.png")
    os.mkfifo(tmp_path / "281" / "b.png")
    assert _eval(tmp_path, tmp_path / "out", "--crop", "32") == 2
    assert "b.png: a FIFO (named pipe), not a regular file" in capsys.readouterr().err
