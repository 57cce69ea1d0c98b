"""``compressai-transtic encode`` / ``decode``, the ``.ttic`` container and image input.

Seeded random weights (``--random-weights``) stand in for the released ones: the
commands and the file format are the same.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from codec_models import num_threads, randomize_adapter
from PIL import Image
from skimage import data

from compressai_transtic.bitstream import BitstreamError
from compressai_transtic.cli import main
from compressai_transtic.container import MAGIC, VERSION, CodedFile, ContainerError, pack, unpack, weights_fingerprint
from compressai_transtic.data.files import check_image
from compressai_transtic.evaluation.codecs import CodecSpec
from compressai_transtic.imageio import ImageReadError, read_image
from compressai_transtic.prompts import save_adapter


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(data.chelsea()[:120, :160]).save(folder / "chelsea.png")
    Image.fromarray(data.coffee()[:90, :70]).save(folder / "coffee.jpg", quality=95)
    (folder / "sub").mkdir()
    Image.fromarray(data.camera()[:64, :96]).save(folder / "sub" / "camera.webp", lossless=True)
    return folder


def _encode(images, out, *extra) -> int:
    return main(["encode", str(images), "-o", str(out), "--random-weights", "--no-progress", *extra])


def _decode(files, out, *extra) -> int:
    return main(["decode", str(files), "-o", str(out), "--no-progress", *extra])


@pytest.mark.parametrize(
    "model",
    [["--model", "tic"]] + [["--model", "transtic", "--task", task] for task in ("cls", "det", "seg")],
    ids=["tic", "transtic-cls", "transtic-det", "transtic-seg"],
)
def test_files_round_trip_to_the_in_memory_decode(images, tmp_path, model, capsys):
    assert _encode(images, tmp_path / "a", *model, "-q", "2") == 0
    assert _encode(images, tmp_path / "b", *model, "-q", "2") == 0
    coded = sorted((tmp_path / "a").rglob("*.ttic"))
    assert [p.relative_to(tmp_path / "a").as_posix() for p in coded] == [
        "chelsea.ttic",
        "coffee.ttic",
        "sub/camera.ttic",
    ]
    for path in coded:  # the same input gives the same bytes
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    assert _decode(tmp_path / "a", tmp_path / "dec") == 0
    out = capsys.readouterr().out
    assert all(line.startswith("[RANDOM WEIGHTS] ") for line in out.strip().splitlines())
    config = unpack(coded[0].read_bytes()).codec["config"]
    assert (config is None) == (model[1] == "tic")
    if config is not None:
        assert config["num_prompts"] == 16 and config["encoder_mask"] == "legacy"  # the released variant

    arch = model[1]
    spec = CodecSpec(arch, arch, 2, model[3] if arch == "transtic" else None, "random")
    codec = spec.load()
    x, _ = read_image(images / "chelsea.png")
    with torch.no_grad():
        expected = codec.decompress(*_compress_args(codec, x))["x_hat"]
    decoded = torch.from_numpy(np.array(Image.open(tmp_path / "dec" / "chelsea.png"))).permute(2, 0, 1)[None]
    assert decoded.shape == expected.shape
    assert (decoded.double() - (expected * 255).round().double()).abs().max() <= 1


def _compress_args(codec, x):
    enc = codec.compress(x)
    return enc["strings"], enc["shape"]


def test_decoding_is_the_same_with_one_and_two_threads(images, tmp_path):
    assert _encode(images / "chelsea.png", tmp_path / "c", "--model", "tic") == 0
    with num_threads(1):
        assert _decode(tmp_path / "c", tmp_path / "one") == 0
    with num_threads(2):
        assert _decode(tmp_path / "c", tmp_path / "two") == 0
    assert (tmp_path / "one" / "chelsea.png").read_bytes() == (tmp_path / "two" / "chelsea.png").read_bytes()


def test_outputs_are_not_overwritten_without_force_and_follow_the_umask(images, tmp_path, capsys):
    assert _encode(images / "coffee.jpg", tmp_path, "--model", "tic") == 0
    target = tmp_path / "coffee.ttic"
    before = target.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    assert _encode(images / "coffee.jpg", tmp_path, "--model", "tic", "-q", "3") == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert target.read_bytes() == before
    assert _encode(images / "coffee.jpg", tmp_path, "--model", "tic", "-q", "3", "--force") == 0
    assert target.read_bytes() != before


def test_an_input_is_never_overwritten_by_its_own_output_even_with_force(images, tmp_path, capsys):
    photo = tmp_path / "photo.ttic"  # an image whose name is the output's
    photo.write_bytes((images / "chelsea.png").read_bytes())
    os.link(photo, tmp_path / "again.ttic")
    for name in ("photo.ttic", "again.ttic"):  # by its own name, and by another name of the same file
        assert _encode(tmp_path / name, tmp_path, "--model", "tic", "--force") == 2
        assert "is one of the inputs and would be overwritten" in capsys.readouterr().err
        assert photo.read_bytes() == (images / "chelsea.png").read_bytes()

    assert _encode(images / "coffee.jpg", tmp_path / "codes", "--model", "tic") == 0
    stream = tmp_path / "codes" / "coffee.png"  # a bitstream whose name is the decoded image's
    (tmp_path / "codes" / "coffee.ttic").rename(stream)
    before = stream.read_bytes()
    assert _decode(stream, tmp_path / "codes", "--force") == 2
    assert "is one of the inputs" in capsys.readouterr().err and stream.read_bytes() == before


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_decoding_with_other_weights_is_refused(images, tmp_path, capsys):
    assert _encode(images / "coffee.jpg", tmp_path / "enc", "--model", "tic", "--seed", "3") == 0
    coded = unpack((tmp_path / "enc" / "coffee.ttic").read_bytes())
    assert coded.codec["seed"] == 3 and coded.weights_name == "random weights (seed 3)"
    assert coded.codec["config"] is None  # TIC has no prompt configuration
    forged = CodedFile(
        {**coded.codec, "seed": 4}, coded.weights_name, coded.weights_sha256, coded.height, coded.width, coded.strings
    )
    (tmp_path / "forged").mkdir()
    (tmp_path / "forged" / "coffee.ttic").write_bytes(pack(forged))
    assert _decode(tmp_path / "forged", tmp_path / "dec") == 2
    assert "the weights loaded here differ" in capsys.readouterr().err
    assert not (tmp_path / "dec" / "coffee.png").exists()
    other_variant = CodedFile(
        {**coded.codec, "config": {"depth": "shallow"}},
        coded.weights_name,
        coded.weights_sha256,
        coded.height,
        coded.width,
        coded.strings,
    )
    (tmp_path / "forged" / "coffee.ttic").write_bytes(pack(other_variant))
    assert _decode(tmp_path / "forged", tmp_path / "dec") == 2
    assert "coded with the prompt configuration {'depth': 'shallow'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, name, problem",
    [
        ("x" * 100_000, "long.adapter", "codec description length"),
        ("cls", "bell\x07.adapter", "holds control characters"),
    ],
    ids=["task-too-long", "control-character-in-name"],
)
def test_encode_refuses_an_adapter_whose_files_decode_could_not_read(images, tmp_path, capsys, task, name, problem):
    from compressai_transtic.models import TransTIC

    adapter = save_adapter(
        TransTIC.from_base(CodecSpec("tic", "tic", 1, None, "random").load()), tmp_path / name, task=task
    )
    argv = [str(images / "coffee.jpg"), "--model", "transtic", "--adapter", str(adapter)]
    assert _encode(*argv[:1], tmp_path / "e", *argv[1:]) == 2
    err = capsys.readouterr().err
    assert "decode could not read back what this codec would write" in err and problem in err
    assert "nothing was written" in err and not (tmp_path / "e" / "coffee.ttic").exists()


def test_an_adapter_path_that_is_a_folder_or_missing_is_called_that(images, tmp_path, capsys):
    (tmp_path / "folder.adapter").mkdir()
    for name, what in (("folder.adapter", "a folder, not a regular file"), ("missing.adapter", "no such file")):
        argv = ["--model", "transtic", "--adapter", str(tmp_path / name)]
        assert _encode(images / "coffee.jpg", tmp_path / "out", *argv) == 2
        assert f"adapter file {tmp_path / name}: {what}" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["transtic", "tic-sft"])
def test_adapters_travel_by_name_and_are_checked_by_hash(images, tmp_path, capsys, arch):
    base = CodecSpec("tic", "tic", 1, None, "random").load()
    from compressai_transtic.models import ADAPTED_CODECS

    torch.manual_seed(5)
    model = randomize_adapter(ADAPTED_CODECS[arch].from_base(base), std=0.01)  # a fresh SFT is the identity
    adapter = save_adapter(model, tmp_path / "mine.adapter", task="det")
    common = ["--adapter", str(adapter)]
    assert (
        main(
            [
                "encode",
                str(images / "coffee.jpg"),
                "-o",
                str(tmp_path / "e"),
                "--random-weights",
                "--no-progress",
                *common,
            ]
        )
        == 0
    )
    assert _decode(tmp_path / "e", tmp_path / "d") == 2
    assert "pass it with --adapter" in capsys.readouterr().err
    assert _decode(tmp_path / "e", tmp_path / "d", *common) == 0
    assert (tmp_path / "d" / "coffee.png").is_file()
    assert unpack((tmp_path / "e" / "coffee.ttic").read_bytes()).codec["architecture"] == arch


@pytest.mark.parametrize("field, value", [("task", [1]), ("quality", "x"), ("architecture", "jpeg"), ("extra", 1)])
def test_forged_codec_descriptions_are_refused(images, tmp_path, capsys, field, value):
    assert _encode(images / "coffee.jpg", tmp_path / "enc", "--model", "tic") == 0
    coded = unpack((tmp_path / "enc" / "coffee.ttic").read_bytes())
    forged = CodedFile(
        {**coded.codec, field: value},
        coded.weights_name,
        coded.weights_sha256,
        coded.height,
        coded.width,
        coded.strings,
    )
    (tmp_path / "enc" / "coffee.ttic").write_bytes(pack(forged))
    assert _decode(tmp_path / "enc", tmp_path / "dec") == 2
    assert "unknown codec description" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_a_clean_error(images, tmp_path, capsys):
    (tmp_path / "out" / "coffee.ttic").mkdir(parents=True)  # a folder where the file should go
    assert _encode(images / "coffee.jpg", tmp_path / "out", "--model", "tic", "--force") == 2
    assert "coffee.ttic was not written" in capsys.readouterr().err
    assert (tmp_path / "out" / "coffee.ttic").is_dir() and len(list((tmp_path / "out").iterdir())) == 1


def test_damaged_files_are_named_and_nothing_is_written(images, tmp_path, capsys):
    assert _encode(images, tmp_path / "enc", "--model", "tic") == 0
    good = (tmp_path / "enc" / "chelsea.ttic").read_bytes()
    (tmp_path / "enc" / "chelsea.ttic").write_bytes(good[:-10])
    assert _decode(tmp_path / "enc", tmp_path / "dec") == 2
    err = capsys.readouterr().err
    assert "chelsea.ttic: checksum mismatch" in err and "nothing was written" in err
    assert not (tmp_path / "dec").exists() or not any((tmp_path / "dec").rglob("*"))


def _bad_images(folder: Path) -> dict:
    png = folder / "ok.png"
    Image.fromarray(data.chelsea()[:40, :40]).save(png)
    files = {
        "empty.png": b"",
        "truncated.png": png.read_bytes()[:200],
        "text.jpg": b"this is not an image",
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    png.unlink()
    return files


def test_unreadable_images_get_one_message_each_before_anything_loads(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    _bad_images(folder)
    assert _encode(folder, tmp_path / "out", "--model", "tic") == 2
    err = capsys.readouterr().err
    assert "empty.png: the file is empty" in err
    assert "truncated.png: not a readable image" in err
    assert "text.jpg: not a readable image" in err
    assert "3 of 3 images cannot be coded" in err
    assert not (tmp_path / "out").exists()


def test_a_folder_without_images_and_a_decompression_bomb_are_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _encode(tmp_path / "empty", tmp_path / "out") == 2
    assert "holds no images" in capsys.readouterr().err
    Image.new("L", (5000, 4000)).save(tmp_path / "bomb.png")  # 20 Mpx of zeros: a few KB on disk
    assert _encode(tmp_path / "bomb.png", tmp_path / "out", "--max-pixels", "1000000") == 2
    assert "bomb.png: 5000x4000 is 20000000 pixels, above the limit of 1000000" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mode, make, expected",
    [
        ("I;16", lambda: Image.fromarray(np.full((4, 6), 65535 // 3, dtype=np.uint16)), 1 / 3),
        ("P", lambda: Image.new("RGB", (6, 4), (255, 0, 0)).convert("P"), None),
        ("CMYK", lambda: Image.new("CMYK", (6, 4), (0, 255, 255, 0)), None),
        ("L", lambda: Image.new("L", (6, 4), 51), 0.2),
        ("LA", lambda: Image.new("LA", (6, 4), (102, 7)), 0.4),
        ("I", lambda: Image.fromarray(np.full((4, 6), 2**31 - 1, dtype=np.int32)), 1.0),  # 32-bit: full scale
    ],
)
def test_image_modes_are_converted_by_scaling_not_clipping(tmp_path, mode, make, expected):
    path = tmp_path / f"{mode.replace(';', '')}.png" if mode not in ("CMYK", "I") else tmp_path / f"{mode}.tiff"
    make().save(path)
    x, notes = read_image(path)
    assert x.shape == (1, 3, 4, 6) and x.dtype == torch.float32
    if expected is not None:
        torch.testing.assert_close(x, torch.full_like(x, expected), rtol=0, atol=1e-4)
    else:  # red stays red
        torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]), rtol=0, atol=1e-3)
    assert bool(notes) == (mode == "LA")


def test_images_without_one_meaning_are_refused_not_guessed(tmp_path):
    frames = [Image.new("RGB", (6, 4), color) for color in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tiff", save_all=True, append_images=frames[1:])
    Image.fromarray(np.full((4, 6), -5, dtype=np.int32)).save(tmp_path / "signed.tiff")
    for name, problem in [
        ("anim.gif", "holds 2 frames (an animation or a multi-page file)"),
        ("pages.tiff", "holds 2 frames"),
        ("signed.tiff", "signed integer pixels below 0"),
    ]:
        with pytest.raises(ImageReadError, match=re.escape(problem)) as info:
            read_image(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name))
        if name != "signed.tiff":  # the up-front check finds them from the header already
            assert check_image(tmp_path / name, "header") == read_image_problem(tmp_path / name)


def read_image_problem(path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    return str(info.value).removeprefix(f"{path}: ")


def test_a_camera_jpeg_with_a_preview_is_one_still_image(tmp_path):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    photo.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[photo.resize((15, 10))])
    with Image.open(tmp_path / "camera.jpg") as stored:
        assert (stored.format, stored.n_frames) == ("MPO", 2)  # Pillow's reading of such files
    assert read_image(tmp_path / "camera.jpg")[0].shape == (1, 3, 20, 30)
    assert check_image(tmp_path / "camera.jpg", "header") is None


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 4), (0, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    x, _ = read_image(tmp_path / "rotated.jpg")
    assert x.shape == (1, 3, 6, 4)
    assert x[0, :, 0, -1].mean() > 0.8  # the white corner moved to the top right


def test_reading_a_missing_file_names_it(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageReadError, match="folder.png: a folder, not a regular file"):
        read_image(tmp_path / "folder.png")


def _sample_file() -> bytes:
    coded = CodedFile(
        {"architecture": "tic", "quality": 1, "task": None, "source": "random"},
        "w",
        "ab" * 32,
        17,
        23,
        (b"y" * 5, b"z" * 3, b"h"),
    )
    return pack(coded)


def test_container_fields_round_trip():
    coded = unpack(_sample_file())
    assert (coded.height, coded.width, coded.latent_shape) == (17, 23, (1, 1))
    assert coded.strings == (b"yyyyy", b"zzz", b"h") and coded.weights_sha256 == "ab" * 32


def _with_crc(body: bytes) -> bytes:
    return body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _container(codec_text: str, weights_name: str = "w") -> bytes:
    """A .ttic file written field by field (with a valid checksum) around the given
    codec description (JSON text) and weights name."""
    field = lambda data: _leb128(len(data)) + data  # noqa: E731
    body = MAGIC + bytes([VERSION]) + field(codec_text.encode()) + field(weights_name.encode())
    body += bytes.fromhex("ab" * 32) + _leb128(17) + _leb128(23) + _leb128(1) + field(b"h")
    return _with_crc(body)


@pytest.mark.parametrize(
    "data, message",
    [
        (lambda: _container("[" * 60000), "not valid JSON"),
        (lambda: _container('{"architecture": "tic", "quality": ' + "9" * 5000 + "}"), "not valid JSON"),
        (lambda: _container('{"architecture": "tic"}', "w\x1b[2J\x1b[31mFAKE OK"), "holds control characters"),
    ],
    ids=["nested-too-deep", "too-many-digits", "control-characters"],
)
def test_hostile_container_fields_raise_a_container_error(data, message):
    with pytest.raises(ContainerError, match=message):
        unpack(data())


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: b"PNG!" + d[4:], "no TTIC signature"),
        (lambda d: d[:-1], "checksum mismatch"),
        (lambda d: _with_crc(d[:4] + bytes([9]) + d[5:-4]), "container version 9"),
        (lambda d: _with_crc(d[:-4] + b"extra"), "unexpected bytes"),
        (lambda d: _with_crc(d[:-12]), "truncated"),
        (lambda d: _with_crc(d[:5] + b"\xff" * 12 + d[17:-4]), "malformed|exceeds its limit|truncated"),
    ],
    ids=["magic", "crc", "version", "trailing", "cut-with-crc", "huge-varint"],
)
def test_damaged_containers_raise_a_container_error(mangle, message):
    with pytest.raises(ContainerError, match=message):
        unpack(mangle(_sample_file()))


def test_decode_refuses_a_file_larger_than_its_pixel_limit_allows_without_reading_it(images, tmp_path, capsys):
    huge = tmp_path / "in" / "huge.ttic"
    huge.parent.mkdir()
    with open(huge, "wb") as f:
        f.truncate(4 << 30)  # sparse: 4 GiB that reading would have to allocate
    assert _decode(huge.parent, tmp_path / "out", "--max-pixels", "4096") == 2
    err = capsys.readouterr().err
    assert "huge.ttic: more than 1081344 bytes" in err and "nothing was written" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_decode_refuses_a_pipe_among_the_files_instead_of_waiting_on_it(images, tmp_path, capsys):
    assert _encode(images / "chelsea.png", tmp_path / "coded", "--model", "tic") == 0
    os.mkfifo(tmp_path / "coded" / "pipe.ttic")
    assert _decode(tmp_path / "coded", tmp_path / "out") == 2  # it used to wait for a writer forever
    assert "pipe.ttic: a FIFO (named pipe), not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_given_by_name_is_called_what_it_is(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.ttic")
    assert _decode(tmp_path / "pipe.ttic", tmp_path / "out") == 2
    assert "pipe.ttic: a FIFO (named pipe), not a regular file" in capsys.readouterr().err


def test_encode_refuses_a_seed_that_decode_could_not_use(images, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _encode(images / "chelsea.png", tmp_path / "out", "--seed", str(2**53 + 1))
    assert "is beyond 2^53 either way" in capsys.readouterr().err


def test_a_weights_name_with_unicode_spaces_is_no_control_character():
    name = "my\u00a0adapter\u3000v2.pt"  # spaces that str.isprintable() would not accept
    assert unpack(_container('{"architecture": "tic"}', name)).weights_name == name


def test_decode_refuses_a_file_whose_size_differs_from_its_bitstream(images, tmp_path, capsys):
    assert _encode(images / "chelsea.png", tmp_path / "coded", "--model", "tic") == 0
    path = tmp_path / "coded" / "chelsea.ttic"
    coded = unpack(path.read_bytes())
    path.write_bytes(pack(dataclasses.replace(coded, height=coded.height - 4, width=coded.width - 6)))
    assert _decode(path, tmp_path / "out") == 2
    assert "the file says 154x116 pixels, its bitstream codes 160x120" in capsys.readouterr().err
    assert not (tmp_path / "out" / "chelsea.png").exists()


def test_one_decode_call_is_bounded_however_often_a_small_stream_is_repeated():
    model = CodecSpec("tic", "tic", 1, None, "random").load()
    with torch.no_grad():
        enc = model.compress(torch.rand(1, 3, 64, 64))
        model.max_decode_pixels = 10 * 64 * 64
        ten = [s * 10 for s in enc["strings"]]
        assert model.decompress(ten, enc["shape"])["x_hat"].shape[0] == 10
        with pytest.raises(BitstreamError, match=r"11 images of 64x64 pixels \(each coded as 4096\) are more than"):
            model.decompress([s * 11 for s in enc["strings"]], enc["shape"])


def test_the_evaluator_splits_its_decoding_by_the_pixels_the_decoder_synthesises():
    from compressai_transtic.evaluation.codecs import code_batch
    from compressai_transtic.protocol import CodingProtocol

    model = CodecSpec("tic", "tic", 1, None, "random").load()
    model.max_decode_pixels = 2 * 64 * 64
    decoded = []
    model.g_s0.register_forward_pre_hook(lambda module, args: decoded.append(args[0].shape[0]))
    code_batch(model, torch.rand(3, 3, 1, 64), CodingProtocol(), likelihood=True)  # synthesised as 64 x 64
    assert decoded == [3, 2, 1]  # forward on the batch, then two decoding calls within the limit


def test_encode_and_decode_count_max_pixels_as_the_codec_does(images, tmp_path, capsys):
    coffee = images / "coffee.jpg"  # 70 x 90: coded as 128 x 128 = 16384 pixels
    assert _encode(coffee, tmp_path / "refused", "--model", "tic", "--max-pixels", "16383") == 2
    err = capsys.readouterr().err
    assert "coffee.jpg: 70x90 pixels are coded as 16384 (padded to multiples of 64)" in err
    assert "more than --max-pixels 16383" in err
    assert not (tmp_path / "refused").exists()
    assert _encode(coffee, tmp_path / "coded", "--model", "tic", "--max-pixels", "16384") == 0
    capsys.readouterr()
    assert _decode(tmp_path / "coded", tmp_path / "out", "--max-pixels", "16383") == 2
    err = capsys.readouterr().err
    assert "coffee.ttic: 70x90 pixels are coded as 16384" in err and "nothing was written" in err
    assert not (tmp_path / "out").exists()
    assert _decode(tmp_path / "coded", tmp_path / "out", "--max-pixels", "16384") == 0


def test_a_batch_that_the_evaluator_coded_itself_decodes_past_the_limit_of_one_call():
    from compressai_transtic.evaluation.codecs import code_batch, code_image
    from compressai_transtic.protocol import CodingProtocol

    model = CodecSpec("tic", "tic", 1, None, "random").load()
    model.max_decode_pixels = 2 * 64 * 64
    grad_modes, decoded = [], []
    model.g_a0.register_forward_pre_hook(lambda module, args: grad_modes.append(torch.is_grad_enabled()))
    model.g_s0.register_forward_pre_hook(lambda module, args: decoded.append(args[0].shape[0]))
    x = torch.rand(3, 3, 64, 64)
    results = code_batch(model, x, CodingProtocol(), likelihood=True)
    assert decoded == [3, 2, 1]  # forward on the batch, then two decoding calls within the limit
    assert model.max_decode_pixels == 2 * 64 * 64
    assert grad_modes == [False, False]  # forward and compress, without autograd
    alone = [code_image(model, x[i : i + 1], CodingProtocol(), likelihood=False) for i in range(3)]
    assert [r.num_bytes for r in results] == [r.num_bytes for r in alone]
    for r, a in zip(results, alone):  # the same streams; batched products round a little differently
        torch.testing.assert_close(r.x_hat, a.x_hat, rtol=0, atol=1e-4)


@pytest.mark.parametrize("field, value", [("seed", 2**64), ("seed", -(2**53) - 1), ("quality", True)])
def test_decode_refuses_a_codec_field_out_of_its_range_by_file(images, tmp_path, capsys, field, value):
    assert _encode(images / "chelsea.png", tmp_path / "coded", "--model", "tic") == 0
    path = tmp_path / "coded" / "chelsea.ttic"
    coded = unpack(path.read_bytes())
    path.write_bytes(pack(dataclasses.replace(coded, codec={**coded.codec, field: value})))
    assert _decode(path, tmp_path / "out") == 2
    assert f"{path}: unknown codec description" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_weights_fingerprint_sees_every_weight_and_table():
    model = CodecSpec("tic", "tic", 1, None, "random").load()
    before = weights_fingerprint(model)
    with torch.no_grad():
        model.entropy_bottleneck._quantized_cdf[0, 1] += 1
    assert weights_fingerprint(model) != before


def test_roi_adapters_code_files_under_a_given_quality_map(images, tmp_path, capsys):
    from compressai_transtic.models import TICROI, ROIConfig

    base = CodecSpec("tic", "tic", 1, None, "random").load()
    model = randomize_adapter(TICROI.from_base(base, ROIConfig(width=8)))
    adapter = save_adapter(model, tmp_path / "roi.adapter", task="det")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "background.png")
    maps = tmp_path / "maps"
    maps.mkdir()
    Image.fromarray(np.full((9, 7), 255, np.uint8)).save(maps / "coffee.png")
    coffee = images / "coffee.jpg"
    assert _encode(coffee, tmp_path / "full", "--adapter", str(adapter)) == 0
    background = str(tmp_path / "background.png")
    assert _encode(coffee, tmp_path / "bg", "--adapter", str(adapter), "--roi-map", background) == 0
    assert _encode(coffee, tmp_path / "dir", "--adapter", str(adapter), "--roi-map", str(maps)) == 0
    full, background, by_name = ((tmp_path / d / "coffee.ttic").read_bytes() for d in ("full", "bg", "dir"))
    assert full != background and full[-64:] == by_name[-64:]  # a white map is full quality
    assert _decode(tmp_path / "bg", tmp_path / "decoded", "--adapter", str(adapter)) == 0
    assert (tmp_path / "decoded" / "coffee.png").is_file()
    capsys.readouterr()
    assert _encode(images / "chelsea.png", tmp_path / "none", "--adapter", str(adapter), "--roi-map", str(maps)) == 2
    assert "holds no map named like ['chelsea.png']" in capsys.readouterr().err
    assert _encode(coffee, tmp_path / "tic", "--model", "tic", "--roi-map", str(maps)) == 2
    assert "--roi-map is for a tic-roi --adapter, not for tic" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() and not (tmp_path / "tic").exists()


@pytest.mark.parametrize("command", ["encode", "decode", "eval", "demo", "bitmap"])
def test_a_bad_cpu_attention_in_the_environment_stops_a_coding_command_before_it_starts(
    images, tmp_path, monkeypatch, capsys, command
):
    monkeypatch.setenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION", "fastest")
    argv = ["demo", "--random-weights"] if command == "demo" else [command, str(images), "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"compressai-transtic {command}: error: environment variable COMPRESSAI_TRANSTIC_CPU_ATTENTION" in err
    assert "'fastest' is not one of auto, packed, sdpa" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_cpu_attention_in_the_environment_stops_training_before_it_starts(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION", "fastest")
    argv = ["train", "-d", str(images), "-o", str(tmp_path / "run"), "--task-weights", "random", "--dry-run"]
    assert main(argv) == 2
    assert "error: environment variable COMPRESSAI_TRANSTIC_CPU_ATTENTION='fastest'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as stopped:  # help is still given
        main(["train", "--help"])
    assert stopped.value.code == 0


@pytest.mark.parametrize("command", [["models"], ["compare", "--help"], ["plot", "--help"], ["table", "--help"]])
def test_the_cpu_attention_in_the_environment_does_not_concern_commands_that_code_nothing(monkeypatch, capsys, command):
    monkeypatch.setenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION", "fastest")
    try:
        status = main(command)
    except SystemExit as stopped:  # --help
        status = stopped.code
    assert status == 0
    assert "COMPRESSAI_TRANSTIC_CPU_ATTENTION" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# adapters trained on a base codec of one's own (`train --base`): --base-checkpoint
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_base(tmp_path_factory):
    """A base codec checkpoint (a seeded random TIC, as `train --base` takes one), an
    adapter trained on it, and another base codec checkpoint."""
    folder = tmp_path_factory.mktemp("own-base")
    base = CodecSpec("tic", "tic", 1, None, "random", seed=7).load()
    torch.save(base.state_dict(), folder / "my_tic.pth.tar")
    torch.save(CodecSpec("tic", "tic", 1, None, "random", seed=8).load().state_dict(), folder / "other_tic.pth.tar")
    from compressai_transtic.models import TransTIC

    torch.manual_seed(3)
    adapter = save_adapter(randomize_adapter(TransTIC.from_base(base), std=0.01), folder / "mine.adapter", task="cls")
    return folder / "my_tic.pth.tar", adapter, folder / "other_tic.pth.tar"


def test_an_adapter_trained_on_ones_own_base_codec_is_coded_and_decoded_with_base_checkpoint(
    images, tmp_path, capsys, own_base
):
    from compressai_transtic.adapter_files import read_adapter

    base, adapter, _ = own_base
    coffee = images / "coffee.jpg"
    assert _encode(coffee, tmp_path / "refused", "--adapter", str(adapter)) == 2  # on the random base codec
    err = capsys.readouterr().err
    assert f"adapter {adapter} was trained on another base codec than the random base codec" in err
    assert "with --base-checkpoint" in err and not (tmp_path / "refused").exists()

    argv = ["--adapter", str(adapter), "--base-checkpoint", str(base)]
    assert main(["encode", str(coffee), "-o", str(tmp_path / "e"), "--no-progress", *argv]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{coffee} -> ") and "RANDOM" not in line  # nothing random is left
    coded = unpack((tmp_path / "e" / "coffee.ttic").read_bytes())
    assert coded.codec["base"] == "my_tic.pth.tar" and coded.codec["random_base"] is False
    assert coded.codec["base_sha256"] == read_adapter(adapter)["base_sha256"]
    assert coded.weights_name == "adapter mine.adapter on my_tic.pth.tar"

    assert _decode(tmp_path / "e", tmp_path / "d", "--adapter", str(adapter)) == 2
    err = capsys.readouterr().err
    assert "coffee.ttic was coded with the adapter mine.adapter on the base codec my_tic.pth.tar" in err
    assert "pass that checkpoint with --base-checkpoint" in err
    assert _decode(tmp_path / "e", tmp_path / "d") == 2
    assert "pass them with --adapter and --base-checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert _decode(tmp_path / "e", tmp_path / "d", *argv) == 0
    assert (tmp_path / "d" / "coffee.png").is_file()


def test_an_adapter_trained_at_another_quality_is_told_to_use_that_quality(images, tmp_path, capsys):
    """The usual cause of an adapter refusing its base codec is another ``-q``."""
    from compressai_transtic.models import TransTIC

    base = CodecSpec("tic", "tic", 2, None, "random", seed=0).load()  # what --random-weights -q 2 builds
    torch.manual_seed(4)
    adapter = save_adapter(
        randomize_adapter(TransTIC.from_base(base), std=0.01), tmp_path / "q2.adapter", metadata={"quality": 2}
    )
    assert _encode(images / "coffee.jpg", tmp_path / "refused", "--adapter", str(adapter), "-q", "1") == 2
    err = capsys.readouterr().err
    assert "it was trained at quality 2: pass -q 2" in err and "--base-checkpoint" not in err
    assert _encode(images / "coffee.jpg", tmp_path / "coded", "--adapter", str(adapter), "-q", "2") == 0


def test_the_stored_prompt_settings_are_left_out_of_the_weights_fingerprint():
    """They follow from the configuration, which the file records and decode checks, so
    files coded before they were stored still decode."""
    from compressai_transtic.models import TransTIC
    from compressai_transtic.prompts import PromptConfig

    model = TransTIC(PromptConfig(encoder_mask="aligned"))
    assert "prompt_settings" in model.state_dict()
    before = weights_fingerprint(model)
    del model._buffers["prompt_settings"]
    assert weights_fingerprint(model) == before


def test_decode_names_the_base_codec_a_file_records_and_the_one_given(images, tmp_path, capsys, own_base):
    base, adapter, other = own_base
    argv = ["--adapter", str(adapter), "--base-checkpoint", str(base)]
    assert main(["encode", str(images / "coffee.jpg"), "-o", str(tmp_path / "e"), "--no-progress", *argv]) == 0
    recorded = unpack((tmp_path / "e" / "coffee.ttic").read_bytes()).codec["base_sha256"]
    capsys.readouterr()
    assert _decode(tmp_path / "e", tmp_path / "d", "--adapter", str(adapter), "--base-checkpoint", str(other)) == 2
    err = capsys.readouterr().err
    assert f"coffee.ttic was coded on the base codec my_tic.pth.tar (base sha256 {recorded[:12]}...)" in err
    assert f"but --base-checkpoint {other} is another one (base sha256 " in err
    assert not (tmp_path / "d").exists()


def test_decode_refuses_a_base_checkpoint_for_a_file_coded_on_the_released_or_random_base(images, tmp_path, capsys):
    from compressai_transtic.models import TICSFT

    base = CodecSpec("tic", "tic", 1, None, "random").load()
    adapter = save_adapter(randomize_adapter(TICSFT.from_base(base)), tmp_path / "sft.adapter", task="det")
    assert _encode(images / "coffee.jpg", tmp_path / "e", "--adapter", str(adapter)) == 0
    assert "base" not in unpack((tmp_path / "e" / "coffee.ttic").read_bytes()).codec  # the fields of old files
    torch.save(base.state_dict(), tmp_path / "same_tic.pth.tar")
    argv = ["--adapter", str(adapter), "--base-checkpoint", str(tmp_path / "same_tic.pth.tar")]
    assert _decode(tmp_path / "e", tmp_path / "d", *argv) == 2
    err = capsys.readouterr().err
    assert "coffee.ttic was coded with the adapter sft.adapter on the random base codec of --random-weights" in err
    assert "decode it without --base-checkpoint" in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "command, extra, problem",
    [
        ("encode", [], "--base-checkpoint goes with --adapter"),
        ("decode", [], "--base-checkpoint goes with --adapter"),
        ("encode", ["--adapter", "ADAPTER", "--random-weights"], "--random-weights would put the adapter on a random"),
    ],
    ids=["encode-without-adapter", "decode-without-adapter", "encode-with-random-weights"],
)
def test_base_checkpoint_goes_with_an_adapter(images, tmp_path, capsys, own_base, command, extra, problem):
    base, adapter, _ = own_base
    extra = [str(adapter) if item == "ADAPTER" else item for item in extra]
    argv = [command, str(images / "coffee.jpg"), "-o", str(tmp_path / "out"), "--base-checkpoint", str(base), *extra]
    assert main([*argv, "--no-progress"]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_base_checkpoint_that_is_missing_or_a_folder_is_called_that(images, tmp_path, capsys, own_base, command):
    _, adapter, _ = own_base
    (tmp_path / "folder.pth.tar").mkdir()
    for name, what in (("folder.pth.tar", "a folder, not a regular file"), ("missing.pth.tar", "no such file")):
        argv = [command, str(images / "coffee.jpg"), "-o", str(tmp_path / "out"), "--adapter", str(adapter)]
        assert main([*argv, "--base-checkpoint", str(tmp_path / name)]) == 2
        assert f"--base-checkpoint {tmp_path / name}: {what}" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"base": "my_tic.pth.tar"},
        {"base_sha256": "ab" * 32},
        {"base": "my_tic.pth.tar", "base_sha256": "not a hash"},
        {"base": "my_tic.pth.tar", "base_sha256": "ab" * 32, "random_base": True},
    ],
    ids=["base-without-hash", "hash-without-base", "hash-not-hex", "base-and-random-base"],
)
def test_a_forged_base_codec_description_is_refused(images, tmp_path, capsys, fields):
    from compressai_transtic.models import TICSFT

    adapter = save_adapter(TICSFT.from_base(CodecSpec("tic", "tic", 1, None, "random").load()), tmp_path / "a.adapter")
    assert _encode(images / "coffee.jpg", tmp_path / "enc", "--adapter", str(adapter)) == 0
    path = tmp_path / "enc" / "coffee.ttic"
    coded = unpack(path.read_bytes())
    path.write_bytes(pack(dataclasses.replace(coded, codec={**coded.codec, **fields})))
    assert _decode(path, tmp_path / "dec", "--adapter", str(adapter)) == 2
    assert f"{path}: unknown codec description" in capsys.readouterr().err
    assert not (tmp_path / "dec").exists()


# ----------------------------------------------------------------------------------------
# --model and the adapter's architecture
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tic-sft", "tic-chsel", "tic-roi"])
def test_a_baseline_adapter_is_coded_with_model_tic_or_without_model(images, tmp_path, capsys, arch):
    from compressai_transtic.models import ADAPTED_CODECS

    base = CodecSpec("tic", "tic", 1, None, "random").load()
    adapter = save_adapter(randomize_adapter(ADAPTED_CODECS[arch].from_base(base)), tmp_path / "b.adapter", task="det")
    coffee, common = images / "coffee.jpg", ["--adapter", str(adapter)]
    assert _encode(coffee, tmp_path / "tic", "--model", "tic", *common) == 0
    assert _encode(coffee, tmp_path / "default", *common) == 0  # the adapter says its codec
    named, default = ((tmp_path / d / "coffee.ttic").read_bytes() for d in ("tic", "default"))
    assert named == default and unpack(named).codec["architecture"] == arch
    capsys.readouterr()
    assert _encode(coffee, tmp_path / "transtic", "--model", "transtic", *common) == 2
    err = capsys.readouterr().err
    assert f"--adapter {adapter} is a {arch} adapter, coded with --model tic, not --model transtic" in err
    assert "pass --model tic or leave --model out" in err and not (tmp_path / "transtic").exists()


def test_a_transtic_adapter_with_model_tic_and_a_task_other_than_the_adapters_are_refused(images, tmp_path, capsys):
    from compressai_transtic.models import TransTIC

    adapter = save_adapter(
        TransTIC.from_base(CodecSpec("tic", "tic", 1, None, "random").load()), tmp_path / "p.adapter", task="det"
    )
    coffee, common = images / "coffee.jpg", ["--adapter", str(adapter)]
    assert _encode(coffee, tmp_path / "out", "--model", "tic", *common) == 2
    assert "is a transtic adapter, coded with --model transtic, not --model tic" in capsys.readouterr().err
    assert _encode(coffee, tmp_path / "out", "--task", "seg", *common) == 2
    assert f"--adapter {adapter} is for the task 'det', not --task seg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert _encode(coffee, tmp_path / "out", "--model", "transtic", "--task", "det", *common) == 0  # agreeing


def test_task_is_refused_with_model_tic(images, tmp_path, capsys):
    assert _encode(images / "coffee.jpg", tmp_path / "out", "--model", "tic", "--task", "det") == 2
    assert "--task chooses transtic's released prompts; it is not for --model tic" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------
# messages and help
# ----------------------------------------------------------------------------------------


def test_outputs_that_exist_are_named_every_one(images, tmp_path, capsys):
    assert _encode(images, tmp_path / "coded", "--model", "tic") == 0
    assert _decode(tmp_path / "coded", tmp_path / "decoded") == 0
    capsys.readouterr()
    assert _decode(tmp_path / "coded", tmp_path / "decoded") == 2
    err = capsys.readouterr().err
    names = [tmp_path / "decoded" / n for n in ("chelsea.png", "coffee.png", "sub/camera.png")]
    assert "3 outputs exist: " in err and "pass --force to overwrite them" in err
    assert all(str(name) in err for name in names)


def test_a_long_list_of_existing_outputs_is_cut_with_a_count():
    from compressai_transtic.codec_choice import SHOWN_OUTPUTS, existing_outputs_message

    paths = [Path(f"out/{i:02d}.png") for i in range(SHOWN_OUTPUTS + 3)]
    message = existing_outputs_message(paths)
    assert message.startswith(f"{SHOWN_OUTPUTS + 3} outputs exist: out/00.png, out/01.png")
    assert f"out/{SHOWN_OUTPUTS - 1:02d}.png and 3 more; pass --force" in message
    assert f"out/{SHOWN_OUTPUTS:02d}.png" not in message
    assert existing_outputs_message(paths[:1]) == "out/00.png exists; pass --force to overwrite it"
