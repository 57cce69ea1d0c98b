"""The evaluator's parts: protocols, coding, records, result files, plots and CLI plumbing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressai_transtic.data import ClassificationImages, CocoImages, evenly_spaced, labelled_samples, load_sample
from compressai_transtic.evaluation.records import RecordStore
from compressai_transtic.evaluation.results import load_curve, write_csv, write_json
from compressai_transtic.protocol import (
    CodingProtocol,
    classification_protocol,
    detection_protocol,
    shortest_edge_size,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- protocols
def test_shortest_edge_rule_of_the_coco_protocol():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(640, 480, 800, 1333) == (1067, 800)
    assert shortest_edge_size(500, 2000, 800, 1333) == (333, 1333)  # longest edge bound
    assert shortest_edge_size(800, 1000, 800, 1333) == (800, 1000)


def test_coco_protocol_codes_at_the_next_multiple_of_256_and_resizes_back():
    p = detection_protocol()
    assert p.prepared_size(480, 640) == (800, 1067)
    assert p.codec_size(800, 1067) == (1024, 1280)
    assert p.codec_size(768, 1024) == (768, 1024)
    x = torch.rand(1, 3, 50, 70)
    small = CodingProtocol(resize="shortest-edge", short_edge=50, max_size=None, code_multiple=32)
    coded = small.to_codec(x)
    assert coded.shape[-2:] == (64, 96)
    back = small.from_codec(coded * 3 - 1, (50, 70))
    assert back.shape[-2:] == (50, 70) and back.min() >= 0 and back.max() <= 1


def test_classification_protocol_is_resize_then_center_crop():
    p = classification_protocol(256)
    chelsea = load_sample(labelled_samples()[0])  # 451 x 300
    assert p.prepared_size(chelsea.height, chelsea.width) == (256, 256)
    x = p.prepare(chelsea)
    assert x.shape == (3, 256, 256) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert p.codec_size(256, 256) == (256, 256)


def test_prepare_follows_the_shortest_edge_rule_on_images():
    p = detection_protocol(short_edge=40, max_size=60, code_multiple=None)
    image = Image.new("RGB", (80, 32), (10, 200, 30))  # width 80, height 32 -> 40 x 100 -> bound 24 x 60
    assert tuple(p.prepare(image).shape) == (3, *p.prepared_size(32, 80)) == (3, 24, 60)


def test_limit_spreads_images_evenly():
    assert evenly_spaced(list(range(10)), 3) == [0, 3, 6]
    assert evenly_spaced(list(range(4)), None) == [0, 1, 2, 3]
    assert evenly_spaced(list(range(4)), 9) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------- datasets
def test_imagefolder_with_numeric_class_folders_uses_the_numbers_as_labels(classification_set):
    ds = ClassificationImages.from_folder(classification_set)
    assert [(i.image_id, i.label) for i in ds] == [
        ("281/chelsea.png", 281),
        ("967/coffee.png", 967),
        ("967/coffee_crop.png", 967),
    ]


def test_image_list_with_accepted_label_sets(classification_set, tmp_path):
    listing = tmp_path / "labels.txt"
    listing.write_text("# path label\n281/chelsea.png 281,282,285\n967/coffee.png 967\n")
    ds = ClassificationImages.from_list(classification_set, listing)
    assert [i.label for i in ds] == [(281, 282, 285), 967]
    listing.write_text("281/chelsea.png tabby\n")
    with pytest.raises(ValueError, match="not an integer class index"):
        ClassificationImages.from_list(classification_set, listing)


def test_coco_images_are_read_in_id_order_with_their_annotated_size(coco_set):
    ds = CocoImages(coco_set.image_dir, coco_set.annotation_file)
    assert [(i.image_id, i.height, i.width) for i in ds] == [(11, 64, 80), (42, 72, 64)]
    assert ds.has_masks and ds[0].load().size == (80, 64)


def test_sample_photos_ship_with_scikit_image_and_have_imagenet_labels():
    samples = labelled_samples()
    assert [s.name for s in samples] == ["chelsea", "coffee", "rocket"]
    assert all(s.path.is_file() and s.labels for s in samples)
    assert 281 in samples[0].labels and 967 in samples[1].labels


# ---------------------------------------------------------------------------- coding
@pytest.fixture(scope="module")
def random_tic():
    from compressai_transtic.evaluation.codecs import CodecSpec

    return CodecSpec("tic", "tic", 1, None, "random").load()


def test_code_image_counts_real_bitstream_bits_per_original_pixel(random_tic):
    from compressai_transtic.evaluation.codecs import code_image, count_bytes

    torch.manual_seed(0)
    x = torch.rand(1, 3, 40, 56)
    protocol = CodingProtocol()
    result = code_image(random_tic, x, protocol)
    with torch.no_grad():
        enc = random_tic.compress(x)
        fwd = random_tic(x)
    assert result.bpp == pytest.approx(8 * count_bytes(enc["strings"]) / (40 * 56))
    lik_bits = sum(float(-torch.log2(v).sum()) for v in fwd["likelihoods"].values())
    assert result.bpp_likelihood == pytest.approx(lik_bits / (40 * 56), rel=1e-5)
    assert result.x_hat.shape == x.shape
    # the decoded image is the eval-mode forward reconstruction, clamped
    assert torch.allclose(result.x_hat, fwd["x_hat"].clamp(0, 1), atol=1e-3)


def test_a_curve_file_saying_random_weights_is_labelled_whatever_its_parts_say():
    from compressai_transtic.evaluation.results import random_parts

    curve = {"random_weights": True, "random_codec": False, "random_task_network": False}
    assert random_parts(curve, ["top1"]) == ["weights"]
    assert random_parts({**curve, "random_weights": False}, ["top1"]) == []


def test_random_codecs_are_reproducible_and_labelled():
    from compressai_transtic.evaluation.codecs import CodecSpec

    spec = CodecSpec("tic", "tic", 2, None, "random", seed=5)
    assert spec.random_weights and "RANDOM WEIGHTS" in spec.describe()
    a, b = spec.load(), spec.load()
    assert torch.equal(a.g_a0.weight, b.g_a0.weight)
    assert spec.key() != CodecSpec("tic", "tic", 2, None, "random", seed=6).key()


# ---------------------------------------------------------------------------- records and results
def record(image, bpp=0.5, **changes):
    return {
        "codec": "c",
        "task": "t",
        "image": image,
        "label": "tic",
        "quality": 1,
        "bytes": 1000,
        "pixels": 16000,
        "bpp": bpp,
        "bpp_likelihood": 0.4,
        "psnr": 30.0,
        "prediction": {"top5": [1, 2, 3, 4, 5]},
        **changes,
    }


def test_records_survive_an_interrupted_write(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordStore(path) as store:
        store.append(record(1))
        store.append(record("a/b.png", 0.7, bytes=1400))
    with open(path, "a") as f:
        f.write('{"codec": "c", "task": "t", "ima')  # killed mid-line
    store = RecordStore(path)
    assert len(store) == 2 and RecordStore.key("c", "t", 1) in store
    store.append(record(3, 0.9, bytes=1800))
    store.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert (tmp_path / "records.jsonl.damaged").read_text() == '{"codec": "c", "task": "t", "ima\n'


@pytest.mark.parametrize(
    "damage, problem",
    [
        (b'{"codec": "c", "task": "t", "ima\n', "not JSON"),  # half-written, then a newline from the next write
        (b"\0" * 40 + b"\n", "not JSON"),  # NUL bytes left by a file system after a crash
        (json.dumps(record(9, "0.5")).encode() + b"\n", "'bpp' is '0.5'"),  # a string rate
        (json.dumps(record(9, 1e9)).encode() + b"\n", "'bpp' is 1000000000.0, not 8 * bytes / pixels = 0.5"),
        (json.dumps(record(9, -1.0, bytes=-2000)).encode() + b"\n", "'bytes' is -2000"),
        (json.dumps(record(9, 0.5, pixels=0)).encode() + b"\n", "'pixels' is 0"),
        (json.dumps(record(9, 0.5, bytes=10**400)).encode() + b"\n", "'bytes' is 100000000000000000000"),  # no float
        (json.dumps(record(9, bpp_likelihood=float("inf"))).encode() + b"\n", "'bpp_likelihood' is inf"),
        (json.dumps(record(9, psnr=None)).encode() + b"\n", "'psnr' is None"),
        (json.dumps(record(9, quality="1")).encode() + b"\n", "'quality' is '1'"),
        (json.dumps({**record(9), "prediction": None} | {"codec": 5}).encode() + b"\n", "'codec' is not a string"),
        (b"[1, 2]\n", "a JSON list"),
    ],
)
def test_a_damaged_record_line_is_set_aside_and_every_good_record_kept(tmp_path, caplog, damage, problem):
    path = tmp_path / "records.jsonl"
    with RecordStore(path) as store:
        store.append(record(1))
    good = path.read_bytes()
    path.write_bytes(good + damage + json.dumps(record(2, 0.25, bytes=500)).encode() + b"\n")

    with caplog.at_level("WARNING"), RecordStore(path) as store:
        assert len(store) == 2
        assert store.get(RecordStore.key("c", "t", 2))["bpp"] == 0.25
    assert f"records.jsonl:2: {problem}" in caplog.text and "set aside in" in caplog.text
    assert (tmp_path / "records.jsonl.damaged").read_bytes() == damage
    assert path.read_bytes() == good + json.dumps(record(2, 0.25, bytes=500)).encode() + b"\n"

    path.write_bytes(path.read_bytes() + damage)  # damaged again: appended to the side file, not overwritten
    RecordStore(path).close()
    assert (tmp_path / "records.jsonl.damaged").read_bytes() == damage + damage


def test_a_second_writer_of_the_same_records_is_refused_with_the_first_ones_process(tmp_path):
    import os

    from compressai_transtic.evaluation.records import RecordsLockedError

    path = tmp_path / "records.jsonl"
    with RecordStore(path):
        with pytest.raises(RecordsLockedError, match=f"another evaluation \\(process {os.getpid()}\\)"):
            RecordStore(path)
    RecordStore(path).close()  # released when the first one closes


def test_result_files_are_written_atomically_as_strict_json(tmp_path):
    path = write_json(tmp_path / "r.json", {"name": "x", "results": {"bpp": [0.1], "AP": [float("nan")]}})
    assert json.loads(path.read_text())["results"]["AP"] == [None]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left
    csv_path = write_csv(tmp_path / "t.csv", [{"a": 1, "b": float("nan")}], ["a", "b"])
    assert csv_path.read_text() == "a,b\n1,\n"
    with pytest.raises(ValueError, match="not a results file"):
        (tmp_path / "bad.json").write_text("{}")
        load_curve(tmp_path / "bad.json")


def _curve_files(tmp_path):
    curves = [
        {
            "name": "tic",
            "task": "cls",
            "primary_metric": "top1",
            "reference": {"top1": 76.1},
            "results": {"bpp": [0.1, 0.2, 0.4], "top1": [55.0, 65.0, 71.0]},
        },
        {
            "name": "transtic",
            "task": "cls",
            "primary_metric": "top1",
            "reference": {"top1": 76.1},
            "results": {"bpp": [0.08, 0.17, 0.35], "top1": [62.0, 69.0, 73.0]},
        },
    ]
    files = []
    for c in curves:
        files.append(tmp_path / f"{c['name']}.json")
        files[-1].write_text(json.dumps(c))
    return files


def test_plot_writes_a_png_with_reference_lines(tmp_path):
    from compressai_transtic.evaluation.plot import plot_curves

    files = _curve_files(tmp_path)
    out = plot_curves(files, tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no metric 'bbox-AP'"):
        plot_curves(files, tmp_path / "other.png", metric="bbox-AP")


def test_plot_format_follows_the_extension_and_dpi_sets_the_png_size(tmp_path, capsys):
    from PIL import Image

    from compressai_transtic.cli import main

    files = _curve_files(tmp_path)
    assert main(["plot", *map(str, files), "-o", str(tmp_path / "p.pdf")]) == 0
    assert (tmp_path / "p.pdf").read_bytes()[:5] == b"%PDF-"
    assert main(["plot", *map(str, files), "-o", str(tmp_path / "p.svg")]) == 0
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:1000]
    for dpi in (100, 200):
        assert main(["plot", *map(str, files), "-o", str(tmp_path / f"p{dpi}.png"), "--dpi", str(dpi)]) == 0
    with Image.open(tmp_path / "p100.png") as small, Image.open(tmp_path / "p200.png") as large:
        assert large.width == 2 * small.width == 2 * 640
    capsys.readouterr()
    assert main(["plot", *map(str, files), "-o", str(tmp_path / "p.jpg")]) == 2
    assert "choose one of these extensions" in capsys.readouterr().err
    assert not (tmp_path / "p.jpg").exists()


def _random_curve(name, codec, network, task="cls"):
    return {
        "name": name,
        "task": task,
        "primary_metric": "top1",
        "random_weights": codec or network,
        "random_codec": codec,
        "random_task_network": network,
        "reference": {"top1": 0.1},
        "results": {"bpp": [0.1, 0.2, 0.4], "psnr-rgb": [25.0, 28.0, 31.0], "top1": [0.1, 0.1, 0.2]},
    }


def _svg_texts(path):
    import re

    return set(re.findall(r"<!-- (.*?) -->", path.read_text(), flags=re.S))


def test_plots_and_tables_say_what_is_random_behind_the_values_they_show(tmp_path, capsys):
    from compressai_transtic.cli import main
    from compressai_transtic.evaluation.plot import plot_curves

    curves = [
        _random_curve("tic", codec=True, network=True),
        _random_curve("jpeg", codec=False, network=True),  # a real codec, a random classifier
        _random_curve("webp", codec=False, network=False),
    ]
    files = []
    for curve in curves:
        files.append(tmp_path / f"{curve['name']}-cls.json")
        files[-1].write_text(json.dumps(curve))
    texts = _svg_texts(plot_curves(files, tmp_path / "top1.svg"))
    assert {"tic [RANDOM WEIGHTS: codec, task network]", "jpeg [RANDOM WEIGHTS: task network]", "webp"} <= texts
    assert "uncompressed (cls) [RANDOM WEIGHTS: task network]" in texts
    texts = _svg_texts(plot_curves(files, tmp_path / "psnr.svg", metric="psnr-rgb", show_reference=False))
    assert {"tic [RANDOM WEIGHTS: codec]", "jpeg", "webp"} <= texts  # PSNR does not depend on the classifier
    texts = _svg_texts(plot_curves(files[1:], tmp_path / "real.svg", metric="psnr-rgb"))
    assert {"jpeg", "webp"} <= texts and not any("RANDOM" in t for t in texts)

    assert main(["table", *map(str, files[1:]), "--metric", "psnr-rgb", "--no-bd-rate"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM" not in out and "| jpeg | - |" in out  # the rates and PSNR of real codecs
    assert main(["table", *map(str, files), "--metric", "top1", "psnr-rgb", "--no-bd-rate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("RANDOM WEIGHTS: not meaningful.")
    assert "| tic [RANDOM WEIGHTS: codec, task network] |" in out and "| jpeg [RANDOM WEIGHTS: task network] |" in out
    assert "| webp |" in out

    assert main(["compare", str(files[2]), str(files[1]), "--metric", "psnr-rgb"]) == 0
    assert "RANDOM" not in capsys.readouterr().out  # rates and PSNR of two real codecs
    assert main(["compare", str(files[2]), str(files[1])]) == 0
    assert capsys.readouterr().out.startswith("[RANDOM WEIGHTS] jpeg vs webp (top1")

    earlier = dict(curves[1])  # a file of an earlier version: random, but not saying what
    del earlier["random_codec"], earlier["random_task_network"]
    (tmp_path / "old.json").write_text(json.dumps(earlier))
    texts = _svg_texts(plot_curves([tmp_path / "old.json"], tmp_path / "old.svg", metric="psnr-rgb"))
    assert "jpeg [RANDOM WEIGHTS]" in texts  # randomness is never hidden


# ---------------------------------------------------------------------------- CLI plumbing
def test_python_m_compressai_transtic_evaluation_is_the_eval_command():
    out = subprocess.run(
        [sys.executable, "-m", "compressai_transtic.evaluation", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("usage: compressai-transtic eval")
    out = subprocess.run(
        [sys.executable, "-m", "compressai_transtic", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for command in ("demo", "eval", "compare", "plot", "train"):
        assert command in out


@pytest.mark.parametrize(
    "command", ["demo", "encode", "decode", "bitmap", "eval", "compare", "plot", "table", "models"]
)
def test_every_subcommand_gives_its_own_help(command, capsys):
    from compressai_transtic.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: compressai-transtic {command} ")


@pytest.mark.parametrize(
    "command", ["demo", "encode", "decode", "bitmap", "eval", "compare", "plot", "table", "models"]
)
def test_every_option_of_every_subcommand_has_help_and_says_its_default(command):
    import argparse

    from compressai_transtic.cli import SUBCOMMANDS

    parser = argparse.ArgumentParser()
    add_arguments, _ = SUBCOMMANDS[command].load()
    add_arguments(parser)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{action.option_strings or action.dest} has no help"
        if action.option_strings and not action.required and action.default not in (None, False):
            assert "default" in action.help, f"{action.option_strings} does not say its default"


def test_help_and_the_report_commands_start_without_pytorch(tmp_path):
    """Only the module of the command given is imported: listing the commands, or a
    BD-rate of two curve files, does not wait for PyTorch and CompressAI to load."""
    for name, top1 in (("a", [60.0, 70.0, 75.0]), ("b", [62.0, 71.0, 76.0])):
        curve = {"name": name, "results": {"bpp": [0.1, 0.2, 0.4], "top1": top1}}
        (tmp_path / f"{name}.json").write_text(json.dumps(curve))
    script = (
        "import sys\n"
        "from compressai_transtic.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules, 'compressai' in sys.modules)\n"
    )
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    for argv in (["--help"], ["compare", a, b, "--metric", "top1"], ["table", a, b]):
        out = subprocess.run(
            [sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert out.splitlines()[-1] == "False False", (argv, out)


def test_output_read_by_a_program_that_stops_early_ends_without_a_traceback(tmp_path):
    """``compressai-transtic table a.json b.json | head -1``: the reader closes the pipe
    before the table is written."""
    files = []
    for index in range(40):
        curve = {"name": f"codec-{index}", "results": {"bpp": [0.1, 0.2, 0.4], "top1": [60.0, 70.0, 75.0 + index]}}
        files.append(tmp_path / f"c{index}.json")
        files[-1].write_text(json.dumps(curve))
    reader_gone = subprocess.Popen(
        [sys.executable, "-m", "compressai_transtic", "table", *map(str, files), "--metric", "top1"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # stdout buffered, as in a pipe
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader_gone.stdout is not None and reader_gone.stderr is not None
    reader_gone.stdout.close()
    err = reader_gone.stderr.read().decode()
    assert reader_gone.wait() == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_broken_pipe_other_than_stdout_is_not_hidden(monkeypatch):
    from compressai_transtic import cli

    def download_cut_short(args_list):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_run", download_cut_short)
    with pytest.raises(BrokenPipeError):
        cli.main(["models"])


def test_train_subcommand_is_the_training_command_line(capsys):
    from compressai_transtic.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "compressai-transtic train" in capsys.readouterr().out


def test_eval_reports_missing_weights_in_one_message(classification_set, tmp_path, offline_cache, capsys):
    from compressai_transtic.cli import main

    status = main(
        ["eval", str(classification_set), "-a", "tic", "-q", "1", "-o", str(tmp_path / "out"), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert status == 2
    for filename in ("base_codec_1.pth.tar", "resnet50-0676ba61.pth"):  # every one, in one message
        assert f"-> {offline_cache / filename}" in err, filename
    assert "--random-weights" in err
    assert not (tmp_path / "out").exists()  # the weights are looked for before anything is written

    # a missing codec file is named as such, before the task network's weights are looked for
    status = main(
        [
            "eval",
            str(classification_set),
            "--checkpoint",
            str(tmp_path / "mine.pth.tar"),
            "-q",
            "1",
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert status == 2
    assert capsys.readouterr().err == f"error: --checkpoint {tmp_path / 'mine.pth.tar'}: no such file\n"


def test_a_finished_evaluation_reports_again_without_its_codecs_weights(
    classification_set, tmp_path, offline_cache, capsys
):
    """Only the rate points with images left to code need their weights: a finished
    evaluation reports again offline; ``--fresh`` starts over and needs them all."""
    from compressai_transtic.cli import main
    from compressai_transtic.models import TIC

    cached = offline_cache / "base_codec_1.pth.tar"
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"state_dict": TIC().state_dict()}, cached)
    out = tmp_path / "out"
    argv = ["eval", str(classification_set), "-a", "tic", "-q", "1", "--task-weights", "random", "-o", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    first = (out / "tic-cls.json").read_text()
    cached.unlink()
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 0
    assert "neither cached nor downloadable" not in capsys.readouterr().err
    assert (out / "tic-cls.json").read_text() == first
    assert main([*argv, "--no-progress", "--fresh"]) == 2
    err = capsys.readouterr().err
    assert "1 weights file(s) are neither cached nor downloadable" in err and f"-> {cached}" in err


def test_eval_rejects_tasks_that_do_not_fit_the_dataset(classification_set, tmp_path, capsys):
    from compressai_transtic.cli import main

    assert main(["eval", str(classification_set), "--task", "det", "--random-weights", "-o", str(tmp_path)]) == 2
    assert "task 'det' needs --annotations" in capsys.readouterr().err


def test_eval_into_a_folder_another_evaluation_is_writing_says_so(tmp_path, capsys):
    from PIL import Image

    from compressai_transtic.cli import main

    (tmp_path / "images").mkdir()
    Image.new("RGB", (24, 16), (200, 120, 40)).save(tmp_path / "images" / "a.png")
    out = tmp_path / "out"
    argv = ["eval", str(tmp_path / "images"), "--task", "fidelity", "-a", "jpeg:30", "-o", str(out), "--no-progress"]
    with RecordStore(out / "records.jsonl"):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is being written by another evaluation (process" in err
    assert not (out / "jpeg-fidelity.json").exists()
    assert main(argv) == 0 and (out / "jpeg-fidelity.json").is_file()


# ---------------------------------------------------------------------------- runs into one folder
@pytest.fixture
def two_images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(folder / name)
    return folder


def fidelity_run(folder, out, *codecs, extra=()):
    from compressai_transtic.cli import main

    return main(["eval", str(folder), "--task", "fidelity", "-a", *codecs, "-o", str(out), "--no-progress", *extra])


def qualities(out, name):
    return json.loads((out / f"{name}-fidelity.json").read_text())["results"]["quality"]


def test_a_later_run_into_the_same_folder_merges_its_points_into_the_curves(two_images, tmp_path):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10") == 0
    assert fidelity_run(two_images, out, "jpeg:50") == 0
    assert qualities(out, "jpeg") == [10, 50]  # it used to hold [50] only
    assert fidelity_run(two_images, out, "webp:30") == 0
    assert qualities(out, "jpeg") == [10, 50] and qualities(out, "webp") == [30]
    rows = [line.split(",")[:3] for line in (out / "results.csv").read_text().splitlines()[1:]]
    assert rows == [["webp", "fidelity", "30"], ["jpeg", "fidelity", "10"], ["jpeg", "fidelity", "50"]]


def test_points_evaluated_on_part_of_the_dataset_are_not_merged(two_images, tmp_path):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10", extra=["--limit", "1"]) == 0
    assert fidelity_run(two_images, out, "jpeg:50") == 0
    assert qualities(out, "jpeg") == [50]


def test_points_of_another_codec_under_the_same_curve_name_are_not_merged(two_images, tmp_path, capsys):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "tic:1", extra=["--random-weights", "--seed", "1"]) == 0
    capsys.readouterr()
    assert fidelity_run(two_images, out, "tic:2", extra=["--random-weights", "--seed", "2"]) == 0
    assert qualities(out, "tic") == [2]
    assert "earlier records of tic q1, RANDOM WEIGHTS (seed 1) are not merged" in capsys.readouterr().err


def test_fresh_sets_earlier_runs_aside_and_starts_again(two_images, tmp_path):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10", "webp:30") == 0
    earlier = (out / "records.jsonl").read_bytes()
    assert fidelity_run(two_images, out, "jpeg:50", extra=["--fresh"]) == 0
    assert qualities(out, "jpeg") == [50]
    (previous,) = out.glob("previous-*")
    assert (previous / "records.jsonl").read_bytes() == earlier and (previous / "codecs.json").is_file()
    assert len((out / "records.jsonl").read_text().splitlines()) == 2  # jpeg q50 on two images, nothing else


def test_fresh_moves_every_file_of_the_earlier_runs_results_and_leaves_the_users_own(two_images, tmp_path):
    out = tmp_path / "out"
    (two_images / "broken.png").write_bytes(b"not an image")  # listed in skipped-images.txt
    assert fidelity_run(two_images, out, "jpeg:10", "webp:30", extra=["--skip-bad"]) == 0
    written = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "records.jsonl.lock"}
    assert set(written) == {
        "records.jsonl",
        "codecs.json",
        "jpeg-fidelity.json",
        "webp-fidelity.json",
        "results.csv",
        "per-image.csv",
        "fidelity-mpeg.csv",
        "fidelity-psnr-rgb.png",
        "skipped-images.txt",
    }
    own = {  # the user's: named like outputs, but not written by the evaluator
        "notes.txt": b"q10 looks blocky",
        "mine-fidelity.json": b'{"name": "mine", "task": "fidelity", "results": {"bpp": [1]}}',
        "fidelity-by-hand.png": b"a sketch",
        "cls-mpeg.csv": b"from another tool",
    }
    for name, data in own.items():
        (out / name).write_bytes(data)
    (two_images / "broken.png").unlink()

    assert fidelity_run(two_images, out, "jpeg:50", extra=["--fresh"]) == 0
    (previous,) = out.glob("previous-*")
    # every file of the earlier run went, unchanged: no earlier curve is left beside the new ones
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == written
    assert {p.name for p in out.iterdir()} == {
        previous.name,
        *own,
        "records.jsonl",
        "records.jsonl.lock",
        "codecs.json",
        "jpeg-fidelity.json",
        "results.csv",
        "per-image.csv",
        "fidelity-mpeg.csv",
        "fidelity-psnr-rgb.png",
    }
    assert all((out / name).read_bytes() == data for name, data in own.items())
    assert qualities(out, "jpeg") == [50]


def test_fresh_finds_the_files_of_every_curve_its_records_hold(two_images, tmp_path):
    from compressai_transtic.evaluation.outputs import earlier_outputs

    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10") == 0
    (out / "cls-top1.png").write_bytes(b"plot")  # the plots of a task this run does not evaluate
    (out / "cls-psnr-rgb.png").write_bytes(b"plot")
    (out / "tic-cls.json").write_text(json.dumps({"primary_metric": "top1", "results": {"bpp": []}}))
    (out / "tic-fidelity.json").write_text("{}")  # a curve the records do not hold
    curves = [("jpeg", "fidelity"), ("tic", "cls"), ("odd/name", "../up")]
    found = {p.name for p in earlier_outputs(out, curves, {"fidelity": "psnr-rgb"})}
    assert found == {
        "jpeg-fidelity.json",
        "fidelity-mpeg.csv",
        "fidelity-psnr-rgb.png",
        "results.csv",
        "per-image.csv",
        "tic-cls.json",
        "cls-top1.png",
        "cls-psnr-rgb.png",
    }


@pytest.mark.parametrize(
    "prediction, problem",
    [
        (None, "no 'psnr-rgb' of 0 dB or more"),
        ({}, "no 'psnr-rgb' of 0 dB or more"),
        ({"psnr-rgb": "31.2", "ms-ssim-rgb": None}, "no 'psnr-rgb' of 0 dB or more"),
        ({"psnr-rgb": 31.2, "ms-ssim-rgb": 7}, "'ms-ssim-rgb' is not a number in [-1, 1] or null"),
    ],
    ids=["null", "empty", "text", "out-of-range"],
)
def test_a_stored_prediction_its_task_cannot_use_is_set_aside_and_predicted_again(
    two_images, tmp_path, capsys, prediction, problem
):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10") == 0
    lines = (out / "records.jsonl").read_text().splitlines()
    codec_line = next(i for i, line in enumerate(lines) if json.loads(line)["codec"] != "reference")
    tampered = {**json.loads(lines[codec_line]), "prediction": prediction}
    lines[codec_line] = json.dumps(tampered)
    (out / "records.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert fidelity_run(two_images, out, "jpeg:10") == 0  # every resume used to stop with a TypeError
    err = capsys.readouterr().err
    assert f"'prediction' of task 'fidelity': {problem}" in err and "set aside in" in err
    assert json.loads((out / "records.jsonl.damaged").read_text())["prediction"] == prediction
    restored = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(restored) == len(lines) and all(r["prediction"]["psnr-rgb"] > 0 for r in restored)


def test_each_built_in_task_checks_the_predictions_it_stores():
    from compressai_transtic.tasks import get_task

    cls, det, seg = (get_task(name, weights="random") for name in ("cls", "det", "seg"))
    box = {"category_id": 3, "bbox": [1.0, 2.0, 30.5, 40.0], "score": 0.9}
    mask = {"size": [48, 64], "counts": "abc"}
    assert cls.prediction_problem({"top5": [1, 2, 3, 4, 5]}) is None
    assert det.prediction_problem([box]) is None and det.prediction_problem([]) is None
    assert seg.prediction_problem([{**box, "segmentation": mask}]) is None
    assert cls.prediction_problem({"top5": [1, True]}) == "'top5' is [1, True], not class indices"
    assert cls.prediction_problem([1, 2]) == "not {'top5': [up to 5 class indices]}"
    assert det.prediction_problem({"bbox": []}) == "not a list of detections"
    assert det.prediction_problem([box, {**box, "bbox": [1, 2, 3]}]) == "detection 1: 'bbox' is not 4 finite numbers"
    assert det.prediction_problem([{**box, "score": float("nan")}]) == "detection 0: 'score' is not a finite number"
    assert det.prediction_problem([{**box, "category_id": "3"}]) == "detection 0: 'category_id' is not an integer"
    assert seg.prediction_problem([box]).startswith("detection 0: 'segmentation' is not a run-length mask")
    huge = [{**box, "bbox": [10**400, 0, 1, 1]}]  # beyond the float range: refused, not an OverflowError
    assert det.prediction_problem(huge) == "detection 0: 'bbox' is not 4 finite numbers"
    fidelity = get_task("fidelity")
    assert fidelity.prediction_problem({"psnr-rgb": float("inf"), "ms-ssim-rgb": None}) is None  # an exact copy
    assert fidelity.prediction_problem({"psnr-rgb": 48.1, "ms-ssim-rgb": 1.0000004768}) is None  # float32 rounding


def test_records_take_float32_rounding_of_ms_ssim_and_refuse_numbers_beyond_floats():
    from compressai_transtic.evaluation.records import record_problem

    assert record_problem(record(1, ms_ssim=1.0000004768)) is None
    assert record_problem(record(1, psnr=10**400)).startswith("'psnr' is 1000")


def test_fresh_never_overwrites_an_earlier_set_aside_folder(two_images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10") == 0
    first = (out / "records.jsonl").read_bytes()
    monkeypatch.setattr(time, "gmtime", lambda *args: time.struct_time((2026, 12, 4, 12, 0, 0, 4, 338, 0)))
    assert fidelity_run(two_images, out, "jpeg:30", extra=["--fresh"]) == 0
    second = (out / "records.jsonl").read_bytes()
    assert fidelity_run(two_images, out, "jpeg:50", extra=["--fresh"]) == 0  # in the same second
    assert (out / "previous-20261204-120000" / "records.jsonl").read_bytes() == first
    assert (out / "previous-20261204-120000-2" / "records.jsonl").read_bytes() == second


def test_fresh_sets_aside_the_rate_points_of_a_run_stopped_before_any_record(two_images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "codecs.json").write_text('{"codecs": []}\n')  # a first run stopped before its first record
    assert fidelity_run(two_images, out, "jpeg:50", extra=["--fresh"]) == 0
    (previous,) = out.glob("previous-*")
    assert (previous / "codecs.json").read_text() == '{"codecs": []}\n'
    assert qualities(out, "jpeg") == [50]


def test_an_entry_of_the_rate_point_history_that_this_version_cannot_read_is_kept(two_images, tmp_path, capsys):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10") == 0
    history = json.loads((out / "codecs.json").read_text())
    newer = {**history["codecs"][0], "future_field": 1}  # as a newer version might write
    (out / "codecs.json").write_text(json.dumps({"codecs": [*history["codecs"], newer]}))
    assert fidelity_run(two_images, out, "webp:30") == 0
    assert "codecs.json: entry 1 is not a rate point of this version" in capsys.readouterr().err
    assert fidelity_run(two_images, out, "jpeg:70") == 0
    assert qualities(out, "jpeg") == [10, 70]  # the earlier point is still merged
    assert newer in json.loads((out / "codecs.json").read_text())["codecs"]  # and the newer entry kept


def test_the_other_fields_of_the_rate_point_history_are_kept_and_deep_nesting_set_aside(two_images, tmp_path):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10") == 0
    history = json.loads((out / "codecs.json").read_text())
    (out / "codecs.json").write_text(json.dumps({"written_by": "a newer version", **history}))
    assert fidelity_run(two_images, out, "webp:30") == 0
    assert json.loads((out / "codecs.json").read_text())["written_by"] == "a newer version"
    (out / "codecs.json").write_text("[" * 100000)  # it used to stop every run with a RecursionError
    assert fidelity_run(two_images, out, "jpeg:50") == 0
    assert (out / "codecs.json.damaged").read_text() == "[" * 100000 + "\n"


def test_an_unreadable_rate_point_history_is_kept_aside_before_it_is_rewritten(two_images, tmp_path, capsys):
    out = tmp_path / "out"
    assert fidelity_run(two_images, out, "jpeg:10") == 0
    (out / "codecs.json").write_text('{"codecs": [')  # cut short
    assert fidelity_run(two_images, out, "webp:30") == 0
    assert "codecs.json is unreadable" in capsys.readouterr().err
    assert (out / "codecs.json.damaged").read_text() == '{"codecs": [\n'
    assert [e["architecture"] for e in json.loads((out / "codecs.json").read_text())["codecs"]] == ["webp"]


@pytest.mark.parametrize("backend, warned", [("torchvision", True), ("detectron2", False)])
def test_released_detection_prompts_under_torchvision_detectors_are_flagged(
    coco_set, tmp_path, monkeypatch, capsys, backend, warned
):
    import urllib.error

    from compressai_transtic.cli import main
    from compressai_transtic.evaluation import cli

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(
        torch.hub,
        "download_url_to_file",
        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("network is unreachable")),
    )
    monkeypatch.setattr(
        cli,
        "build_tasks",
        lambda args, dataset, classes, random: [  # no detectron2 needed
            cls(weights="random", short_edge=32, max_size=48, code_multiple=64) for cls in classes
        ],
    )
    main(
        [
            "eval",
            str(coco_set.image_dir),
            "--annotations",
            str(coco_set.annotation_file),
            "--task",
            "det",
            "-a",
            "transtic:1",
            "--backend",
            backend,
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert ("released det prompts were trained with detectron2" in err) is warned
    assert "--backend detectron2" in cli.REPRODUCE_PAPER


# ---------------------------------------------------------------------------- dataset images
def test_dataset_images_scale_16_bit_pixels_instead_of_clipping_them(tmp_path):
    from PIL import Image

    from compressai_transtic.data import ImageFiles

    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    (item,) = ImageFiles(tmp_path)
    pixels = np.asarray(item.load())
    expected = np.round(ramp / 65535.0 * 255.0).astype(np.uint8)
    assert pixels.shape == (48, 64, 3) and all(np.array_equal(pixels[..., c], expected) for c in range(3))
    clipped = np.asarray(Image.open(tmp_path / "deep.png").convert("RGB"))[..., 0]
    assert (clipped == 255).mean() > 0.9  # what a plain Pillow conversion did


@pytest.mark.parametrize(
    "mode, suffix", [("RGB", ".png"), ("P", ".png"), ("CMYK", ".jpg"), ("L", ".png"), ("RGBA", ".png")]
)
def test_dataset_images_of_8_bits_are_what_pillow_converts(tmp_path, mode, suffix):
    from PIL import Image

    from compressai_transtic.imageio import read_rgb8

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).convert(mode)
    image.save(tmp_path / f"x{suffix}")
    with Image.open(tmp_path / f"x{suffix}") as stored:
        expected = np.asarray(stored.convert("RGB"))
    assert np.array_equal(np.asarray(read_rgb8(tmp_path / f"x{suffix}")), expected)


def test_dataset_images_keep_their_stored_orientation_and_a_pixel_limit(tmp_path):
    from PIL import Image

    from compressai_transtic.data import ImageFiles
    from compressai_transtic.imageio import ImageReadError, read_rgb8

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to show": the datasets are read as stored
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_rgb8(tmp_path / "rotated.jpg").size == (40, 30)
    with pytest.raises(ImageReadError, match=r"rotated.jpg: 40x30 is 1200 pixels, above the limit of 1000"):
        read_rgb8(tmp_path / "rotated.jpg", max_pixels=1000)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    items = {item.image_id: item for item in ImageFiles(tmp_path)}
    with pytest.raises(ImageReadError, match="broken.png: not a readable image"):
        items["broken.png"].load()
