"""Traditional codecs as rate points (JPEG, WebP, AVIF, JPEG 2000, BPG, HM, VTM) and the fidelity task.

Oracles: Pillow itself for the files JPEG/WebP/AVIF write, CompressAI's own
``compressai.utils.bench`` command for rates and PSNR, CompressAI's ``eval_model``
metric function for PSNR / MS-SSIM.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressai_transtic.cli import main
from compressai_transtic.evaluation.codecs import CodecSpec, code_image
from compressai_transtic.evaluation.traditional import (
    TRADITIONAL_CODECS,
    CodecUnavailableError,
    ExternalCodec,
    check_available,
)
from compressai_transtic.protocol import CodingProtocol
from compressai_transtic.tasks.fidelity import fidelity_metrics

ROOT = Path(__file__).resolve().parents[1]


def photo(height: int, width: int, name: str = "astronaut") -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, name)()).resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="module")
def kodak_like(tmp_path_factory) -> Path:
    """Two photographs large enough for MS-SSIM (above 160 pixels a side)."""
    root = tmp_path_factory.mktemp("kodak_like")
    Image.fromarray(photo(176, 200, "astronaut")).save(root / "a.png")
    Image.fromarray(photo(192, 168, "chelsea")).save(root / "b.png")
    return root


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].double() / 255.0


# ------------------------------------------------------------------ the codecs


@pytest.mark.parametrize("name, fmt", [("jpeg", "JPEG"), ("webp", "WEBP"), ("avif", "AVIF")])
def test_pillow_codecs_report_the_size_and_pixels_of_the_file_pillow_writes(name, fmt):
    pixels = photo(48, 70)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=40)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    num_bytes, x_hat, _, _ = ExternalCodec(name, 40).code(to_tensor(pixels))

    assert num_bytes == len(buffer.getvalue())
    assert x_hat.dtype == torch.float64 and x_hat.shape == (1, 3, 48, 70)
    assert torch.equal((x_hat[0].permute(1, 2, 0) * 255).round().to(torch.uint8), torch.from_numpy(expected.copy()))


def test_code_image_rates_a_traditional_codec_per_pixel_of_the_prepared_image():
    pixels = photo(50, 60)
    x = to_tensor(pixels).float()
    protocol = CodingProtocol(code_multiple=32)  # coded at 64x64, measured at 50x60
    codec = CodecSpec("jpeg", "jpeg", 30, source="traditional").load()
    result = code_image(codec, x, protocol)

    buffer = io.BytesIO()
    resized = (protocol.to_codec(x)[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(resized).save(buffer, format="JPEG", quality=30)
    assert result.bpp == pytest.approx(8 * len(buffer.getvalue()) / (50 * 60), rel=1e-12)
    assert math.isnan(result.bpp_likelihood)
    assert result.x_hat.shape == x.shape and 15 < result.psnr < 60


def test_quality_parameters_outside_a_codecs_range_are_refused():
    with pytest.raises(ValueError, match="invalid quality 101 for jpeg.*0 to 100"):
        ExternalCodec("jpeg", 101)
    with pytest.raises(ValueError, match="invalid quality 64 for vtm.*0 to 63"):
        CodecSpec("vtm", "vtm", 64, source="traditional")
    with pytest.raises(ValueError, match="unknown codec 'jpegxl'"):
        check_available("jpegxl")


def test_the_command_line_names_every_traditional_codec(capsys):
    from compressai_transtic.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in TRADITIONAL_CODECS)


def test_a_pillow_upgrade_gives_new_records(monkeypatch):
    from compressai_transtic.evaluation import codecs

    spec = CodecSpec("jpeg", "jpeg", 30, source="traditional")
    before = spec.key()
    monkeypatch.setattr(codecs, "codec_version", lambda name: "Pillow 99.0.0, jpg 9.9")
    assert spec.key() != before


# ------------------------------------------------------------------ programs that are missing or fail


@pytest.mark.parametrize(
    "codec, words",
    [
        ("vtm", ["--vtm-build", "EncoderAppStatic", "build it from its sources"]),
        ("hm", ["--hm-build", "TAppEncoderStatic"]),
    ],
)
def test_a_missing_reference_software_build_is_named_before_any_coding(kodak_like, tmp_path, capsys, codec, words):
    out = tmp_path / "out"
    status = main(["eval", str(kodak_like), "--task", "fidelity", "-a", f"{codec}:32", "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words)
    assert not out.exists()


def test_a_build_folder_without_the_programs_is_named(kodak_like, tmp_path, capsys):
    status = main(
        [
            "eval",
            str(kodak_like),
            "--task",
            "fidelity",
            "-a",
            "vtm:32",
            "--vtm-build",
            str(tmp_path),
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert status == 2
    assert f"no executable EncoderAppStatic in {tmp_path}" in capsys.readouterr().err


def test_missing_bpg_and_ffmpeg_programs_are_named(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(CodecUnavailableError, match="'bpgenc' not found.*bellard.org/bpg"):
        check_available("bpg")
    with pytest.raises(CodecUnavailableError, match="'ffmpeg' not found"):
        check_available("jpeg2000")


def fake_vtm_build(root: Path, encoder_script: str) -> Path:
    """A VTM-like build folder whose programs are shell scripts, and cfg/ above it."""
    build = root / "VTM" / "bin"
    build.mkdir(parents=True)
    (root / "VTM" / "cfg").mkdir()
    (root / "VTM" / "cfg" / "encoder_intra_vtm.cfg").write_text("# test configuration\n")
    for name, script in (("EncoderAppStatic", encoder_script), ("DecoderAppStatic", "exit 3")):
        program = build / name
        program.write_text("#!/bin/sh\n" + script + "\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return build


@pytest.mark.skipif(sys.platform != "linux", reason="CompressAI names the Linux VTM programs")
def test_a_failing_program_ends_the_run_with_a_message_and_keeps_finished_records(kodak_like, tmp_path, capfd):
    build = fake_vtm_build(tmp_path, "echo 'VTM: cannot open input'; exit 1")
    out = tmp_path / "out"
    status = main(
        [
            "eval",
            str(kodak_like),
            "--task",
            "fidelity",
            "-a",
            "jpeg:30",
            "vtm:32",
            "--vtm-build",
            str(build),
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    captured = capfd.readouterr()
    assert status == 2
    assert "error: VTM (VVC reference software, intra, YCbCr 4:4:4) q32 failed" in captured.err
    assert "Traceback" not in captured.err
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == ["jpeg", "jpeg"]  # the JPEG point is kept for the next run


def reference_build(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"set {variable} to a build folder of the reference software to run this test")
    return Path(value)


@pytest.mark.slow
@pytest.mark.parametrize("codec, variable", [("vtm", "TRANSTIC_VTM_BUILD"), ("hm", "TRANSTIC_HM_BUILD")])
def test_a_real_reference_software_build_codes_an_image(kodak_like, tmp_path, codec, variable):
    build = reference_build(variable)
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                str(kodak_like),
                "--task",
                "fidelity",
                "-a",
                f"{codec}:27,37",
                f"--{codec}-build",
                str(build),
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / f"{codec}-fidelity.json").read_text())["results"]
    assert results["bpp"][0] > results["bpp"][1] > 0  # sorted by rate: QP 37 first
    assert 25 < results["psnr-rgb"][0] < results["psnr-rgb"][1] < 50


# ------------------------------------------------------------------ fidelity, as CompressAI measures it


def test_fidelity_metrics_are_compressai_eval_models():
    from compressai.utils.eval_model.__main__ import compute_metrics

    torch.manual_seed(0)
    original = to_tensor(photo(170, 180))
    decoded = (original + 0.05 * torch.randn_like(original)).clamp(0, 1)  # a learned codec's float output
    ours = fidelity_metrics(original, decoded)
    theirs = compute_metrics(original.float(), decoded.float())
    assert ours["psnr-rgb"] == pytest.approx(theirs["psnr-rgb"], abs=1e-4)
    assert ours["ms-ssim-rgb"] == pytest.approx(theirs["ms-ssim-rgb"], abs=1e-5)
    assert fidelity_metrics(original[..., :160, :], decoded[..., :160, :])["ms-ssim-rgb"] is None


def bench(codec: str, folder: Path, quality: int) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "compressai.utils.bench", codec, str(folder), "-q", str(quality)],
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
    )
    return json.loads(run.stdout)["results"]


def test_fidelity_curves_of_jpeg_and_webp_equal_compressai_bench(kodak_like, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            ["eval", str(kodak_like), "--task", "fidelity", "-a", "jpeg:30", "webp:50", "-o", str(out), "--no-progress"]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "RANDOM WEIGHTS" not in stdout and "uncompressed" not in stdout
    for codec, quality in (("jpeg", 30), ("webp", 50)):
        ours = json.loads((out / f"{codec}-fidelity.json").read_text())
        theirs = bench(codec, kodak_like, quality)
        assert ours["results"]["quality"] == [quality] and ours["random_weights"] is False
        assert ours["units"]["psnr-rgb"] == "dB" and ours["reference"] == {}
        assert ours["results"]["bpp"][0] == pytest.approx(theirs["bpp"][0], rel=1e-12)
        assert ours["results"]["psnr-rgb"][0] == pytest.approx(theirs["psnr-rgb"][0], abs=1e-4)
        assert ours["results"]["ms-ssim-rgb"][0] == pytest.approx(theirs["ms-ssim-rgb"][0], abs=1e-5)
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header.count("psnr-rgb") == 1 and "ms-ssim-rgb" in header
    assert (out / "fidelity-psnr-rgb.png").is_file()


def test_an_image_too_small_for_ms_ssim_is_named_once_and_the_means_say_why_they_are_missing(tmp_path, capsys):
    folder = tmp_path / "kodak"
    folder.mkdir()
    Image.fromarray(photo(176, 200)).save(folder / "a.png")
    Image.fromarray(photo(128, 192, "chelsea")).save(folder / "small.png")  # 192 wide, 128 high
    out = tmp_path / "out"
    argv = ["eval", str(folder), "--task", "fidelity", "-a", "jpeg:30,50", "webp:50", "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "MS-SSIM" in line]
    assert len(warnings) == 2, warnings  # one for the image (not one per point), one for the means
    assert warnings[0].endswith(
        f"{folder / 'small.png'}: no MS-SSIM: at 192x128 pixels its shorter side is 128; MS-SSIM (5 scales of an "
        "11x11 window) needs 161 pixels or more on each side"
    )
    note = "1 of 2 images has no MS-SSIM (a side of 160 pixels or less as coded), so no point has a mean MS-SSIM"
    assert note in warnings[1] and "a.png" not in captured.err
    assert f"  {note}" in captured.out and "psnr-rgb in dB, ms-ssim-rgb unitless" in captured.out
    assert "1 (fraction)" not in captured.out
    for codec in ("jpeg", "webp"):
        curve = json.loads((out / f"{codec}-fidelity.json").read_text())
        assert set(curve["results"]["ms-ssim-rgb"]) == {None} and note in curve["description"]
        assert "ms-ssim-rgb unitless" in curve["description"]
    rows = {(r["quality"], r["image"]): r["ms-ssim-rgb"] for r in csv_rows(out / "per-image.csv")}
    assert rows[("30", "small.png")] == "" and 0 < float(rows[("30", "a.png")]) <= 1


def csv_rows(path: Path) -> list:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_random_weights_label_what_is_random_and_only_the_numbers_that_depend_on_it(kodak_like, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", str(kodak_like), "--task", "fidelity", "-a", "tic:1", "jpeg:30", "--random-weights"]
    assert main([*argv, "-o", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "[RANDOM WEIGHTS] randomly initialised: codec tic; the numbers that depend on them test the pipeline and "
        "mean nothing (each curve says which of its numbers do)"
    )
    assert not any("[RANDOM WEIGHTS] RANDOM WEIGHTS" in line for line in lines)
    tic = lines.index("[RANDOM WEIGHTS]  tic (random weights: codec)")
    jpeg = lines.index(" jpeg")  # JPEG's rate, PSNR and MS-SSIM: nothing random about them
    assert lines[tic + 1].startswith("[RANDOM WEIGHTS]   q1 ") and lines[jpeg + 1].startswith("  q30 bpp ")
    assert lines[jpeg + 2] == f"  -> {out / 'jpeg-fidelity.json'}"
    tic_curve, jpeg_curve = (json.loads((out / f"{c}-fidelity.json").read_text()) for c in ("tic", "jpeg"))
    assert (tic_curve["random_weights"], tic_curve["random_codec"], tic_curve["random_task_network"]) == (
        True,
        True,
        False,
    )
    assert tic_curve["description"].startswith("RANDOM WEIGHTS (codec): results are not meaningful. ")
    assert not any(jpeg_curve[k] for k in ("random_weights", "random_codec", "random_task_network"))
    assert "RANDOM" not in jpeg_curve["description"]


def test_traditional_codecs_under_a_random_classifier_are_labelled_for_its_metrics_only(
    classification_set, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["eval", str(classification_set), "--task", "cls", "--task-weights", "random", "--crop", "64"]
    assert main([*argv, "-a", "jpeg:10,50", "-o", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[RANDOM WEIGHTS] randomly initialised: the task network of cls; ")
    assert "[RANDOM WEIGHTS]  jpeg (random weights: task network)" in lines  # its lines show top-1
    assert all(line.startswith("[RANDOM WEIGHTS] ") for line in lines)
    curve = json.loads((out / "jpeg-cls.json").read_text())
    assert (curve["random_weights"], curve["random_codec"], curve["random_task_network"]) == (True, False, True)
    assert curve["description"].startswith(
        "RANDOM WEIGHTS (task network): top1, top5 and the uncompressed reference are not meaningful; "
        "bpp, PSNR and MS-SSIM do not depend on the task network. "
    )
    rows = csv_rows(out / "results.csv")
    assert [(r["curve"], r["random_weights"], r["random_codec"], r["random_task_network"]) for r in rows] == [
        ("uncompressed", "True", "False", "True"),
        ("jpeg", "True", "False", "True"),
        ("jpeg", "True", "False", "True"),
    ]
    for metric, label in (("top1", "jpeg [RANDOM WEIGHTS: task network]"), ("psnr-rgb", "jpeg")):
        plot = tmp_path / f"{metric}.svg"
        assert main(["plot", str(out / "jpeg-cls.json"), "--metric", metric, "-o", str(plot)]) == 0
        assert f"<!-- {label} -->" in plot.read_text()
        printed = capsys.readouterr().out
        assert printed.startswith("[RANDOM WEIGHTS] wrote") == (metric == "top1")


def test_mixing_learned_and_traditional_codecs_needs_their_own_quality_lists(kodak_like, tmp_path, capsys):
    argv = ["eval", str(kodak_like), "--task", "fidelity", "-o", str(tmp_path / "out"), "--no-progress"]
    assert main(argv + ["-a", "tic", "jpeg", "-q", "1", "2"]) == 2
    assert "e.g. -a tic jpeg:10,30,50,70" in capsys.readouterr().err
    assert main(argv + ["-a", "jpeg:ten"]) == 2
    assert "qualities must be integers" in capsys.readouterr().err
    assert main(argv + ["-a", "transtic"]) == 2
    assert "not for fidelity" in capsys.readouterr().err
    assert main(argv + ["-a", "jpeg", "--annotations", str(tmp_path / "x.json")]) == 2
    assert "needs a plain image folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ end to end, next to TIC


@pytest.mark.slow
def test_jpeg_webp_and_avif_next_to_tic_on_a_coco_set(coco_set, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "eval",
        str(coco_set.image_dir),
        "--annotations",
        str(coco_set.annotation_file),
        "--task",
        "det",
        "-a",
        "tic:1",
        "jpeg:10,50",
        "webp:10,50",
        "avif:30,60",
        "--random-weights",
        "--short-edge",
        "32",
        "--max-size",
        "48",
        "--code-multiple",
        "64",
        "-o",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert all(line.startswith("[RANDOM WEIGHTS]") for line in stdout.strip().splitlines())
    assert {p.name for p in out.iterdir()} == {
        "records.jsonl",
        "records.jsonl.lock",
        "codecs.json",
        "results.csv",
        "per-image.csv",
        "det-mpeg.csv",
        "det-bbox-AP.png",
        "det-psnr-rgb.png",
        "tic-det.json",
        "jpeg-det.json",
        "webp-det.json",
        "avif-det.json",
    }
    for codec in ("jpeg", "webp", "avif"):
        curve = json.loads((out / f"{codec}-det.json").read_text())
        results = curve["results"]
        assert curve["task"] == "det" and set(curve["reference"]) == set(curve["metric_names"])
        assert results["bpp"][0] < results["bpp"][1] and results["psnr-rgb"][0] < results["psnr-rgb"][1]
        assert results["bpp-likelihood"] == [None, None]
        assert all(0 <= ap <= 100 for ap in results["bbox-AP"])
    rows = [r.split(",")[0] for r in (out / "results.csv").read_text().splitlines()[1:]]
    assert rows == ["uncompressed", "tic", "jpeg", "jpeg", "webp", "webp", "avif", "avif"]
    before = (out / "records.jsonl").read_bytes()
    assert main(argv) == 0  # resumed: nothing is coded again
    assert (out / "records.jsonl").read_bytes() == before


def train_tiny_tic(images: torch.Tensor, steps, folder: Path):
    """Train a TIC with N=M=16 for MSE on ``images``; save a checkpoint after each of ``steps``."""
    from compressai_transtic.models import TIC

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TIC(N=16, M=16)
        optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if not n.endswith("quantiles")], lr=2e-3)
        paths = []
        for step in range(1, max(steps) + 1):
            out = model(images)
            bpp = sum(-lik.log2().sum() for lik in out["likelihoods"].values()) / (images.numel() / 3)
            loss = 0.01 * 255**2 * ((out["x_hat"] - images) ** 2).mean() + bpp
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step in steps:
                model.update(force=True)
                paths.append(folder / f"tic-{step}.pth.tar")
                torch.save({"state_dict": model.state_dict()}, paths[-1])
    return paths


@pytest.mark.slow
def test_traditional_codecs_and_a_locally_trained_tic_compare_and_plot_on_a_classification_set(
    classification_set, tmp_path, capsys
):
    from compressai_transtic.protocol import classification_protocol

    protocol = classification_protocol(64)
    images = torch.stack([protocol.prepare(Image.open(p)) for p in sorted(classification_set.rglob("*.png"))])
    checkpoints = train_tiny_tic(images, (80, 240), tmp_path)

    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                str(classification_set),
                "--task",
                "cls",
                "--task-weights",
                "random",
                "--crop",
                "64",
                "--checkpoint",
                *map(str, checkpoints),
                "-q",
                "1",
                "2",
                "--name",
                "tic",
                "-a",
                "jpeg:3,5,10,20",
                "webp:0,5,20",
                "avif:10,30",
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert {"tic-cls.json", "jpeg-cls.json", "webp-cls.json", "avif-cls.json", "cls-top1.png"} <= {
        p.name for p in out.iterdir()
    }
    capsys.readouterr()

    bd_file = tmp_path / "bd.json"
    assert (
        main(
            [
                "compare",
                str(out / "tic-cls.json"),
                str(out / "jpeg-cls.json"),
                "--metric",
                "psnr-rgb",
                "--json",
                str(bd_file),
            ]
        )
        == 0
    )
    (row,) = json.loads(bd_file.read_text())["comparisons"]
    assert math.isfinite(row["bd_rate"])  # JPEG's headers alone cost more than this TIC's rates: no BD-metric
    assert "jpeg vs tic (psnr-rgb, pchip): BD-rate" in capsys.readouterr().out

    plot = tmp_path / "together.svg"
    assert (
        main(
            [
                "plot",
                *(str(out / f"{c}-cls.json") for c in ("tic", "jpeg", "webp", "avif")),
                "--metric",
                "psnr-rgb",
                "-o",
                str(plot),
            ]
        )
        == 0
    )
    svg = plot.read_text()
    assert all(name in svg for name in ("tic", "jpeg", "webp", "avif"))
