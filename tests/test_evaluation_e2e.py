"""End-to-end evaluations of TIC and TransTIC (random weights) on generated datasets.

These run the real pipeline (coding with real bitstreams, task networks, COCO/top-k
metrics, JSON/CSV/PNG outputs) on tiny images; the numbers are meaningless and every
output says RANDOM WEIGHTS.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from codec_models import randomize_adapter

from compressai_transtic.cli import main

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def record_keys(path: Path):
    return [(r["codec"], r["task"], str(r["image"])) for r in map(json.loads, path.read_text().splitlines())]


def test_coco_evaluation_of_tic_and_transtic_writes_json_csv_and_png(coco_set, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "eval",
        str(coco_set.image_dir),
        "--annotations",
        str(coco_set.annotation_file),
        "--task",
        "det",
        "-a",
        "tic",
        "transtic",
        "-q",
        "1",
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
    lines = stdout.strip().splitlines()
    assert lines and all(line.startswith("[RANDOM WEIGHTS]") for line in lines)
    assert {p.name for p in out.iterdir()} == {
        "records.jsonl",
        "records.jsonl.lock",
        "codecs.json",
        "results.csv",
        "per-image.csv",
        "det-mpeg.csv",
        "tic-det.json",
        "transtic-det.json",
        "det-bbox-AP.png",
        "det-psnr-rgb.png",
    }

    for name in ("tic", "transtic"):
        curve = json.loads((out / f"{name}-det.json").read_text())
        assert curve["name"] == name and curve["task"] == "det" and curve["random_weights"] is True
        assert "RANDOM WEIGHTS" in curve["description"]
        results = curve["results"]
        assert results["quality"] == [1]
        assert {"bpp", "bpp-likelihood", "psnr-rgb", "bbox-AP", "bbox-AP50", "bbox-APl"} <= set(results)
        assert all(isinstance(v, list) and len(v) == 1 for v in results.values())
        assert results["bpp"][0] > 0 and results["psnr-rgb"][0] > 0
        assert 0 <= results["bbox-AP"][0] <= 100
        assert set(curve["reference"]) == set(curve["metric_names"])
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith(
        "curve,task,quality,weights,random_weights,random_codec,random_task_network,num_images,"
        "bpp,bpp-likelihood,psnr-rgb,ms-ssim-rgb,bbox-AP"
    )
    assert [r.split(",")[0] for r in rows[1:]] == ["uncompressed", "tic", "transtic"]
    table = list(csv.DictReader((out / "results.csv").open()))  # what is random: the detector, and the codecs
    assert [(r["random_codec"], r["random_task_network"]) for r in table] == [("False", "True")] + [
        ("True", "True")
    ] * 2
    assert (out / "det-bbox-AP.png").read_bytes()[:8] == PNG
    assert (out / "det-psnr-rgb.png").read_bytes()[:8] == PNG

    # per image, in eval_model's vocabulary: what the records say, for each rate point and image
    per_image = list(csv.DictReader((out / "per-image.csv").open()))
    assert list(per_image[0]) == [
        "curve",
        "quality",
        "weights",
        "image",
        "bytes",
        "pixels",
        "bpp",
        "bpp-likelihood",
        "psnr-rgb",
        "ms-ssim-rgb",
        "encoding_time",
        "decoding_time",
    ]
    records = {
        (r["label"], str(r["image"])): r
        for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())
        if r["codec"] != "reference"
    }
    assert sorted((r["curve"], r["image"]) for r in per_image) == sorted(records)
    for row in per_image:
        record = records[(row["curve"], row["image"])]
        assert int(row["bytes"]) == record["bytes"] > 0 and float(row["bpp"]) == 8 * record["bytes"] / record["pixels"]
        assert float(row["encoding_time"]) > 0 and float(row["decoding_time"]) > 0
        assert row["ms-ssim-rgb"] == ""  # 32-pixel images are too small for five scales, as in eval_model
    # MPEG-style table: dataset, codec, quality, average bpp, accuracy
    mpeg = list(csv.DictReader((out / "det-mpeg.csv").open()))
    assert list(mpeg[0]) == ["dataset", "codec", "quality", "bpp", "bbox-AP"]
    tic_rows = [r for r in per_image if r["curve"] == "tic"]
    assert [r["codec"] for r in mpeg] == ["tic", "transtic"] and "2 images" in mpeg[0]["dataset"]
    assert float(mpeg[0]["bpp"]) == pytest.approx(sum(float(r["bpp"]) for r in tic_rows) / len(tic_rows), rel=1e-12)

    # one record per (rate point or reference, image); running again recomputes nothing
    keys = record_keys(out / "records.jsonl")
    assert len(keys) == 3 * 2 and len(set(keys)) == len(keys)
    before = (out / "records.jsonl").read_bytes()
    assert main(argv) == 0
    assert (out / "records.jsonl").read_bytes() == before
    assert capsys.readouterr().out == stdout


def test_rate_average_total_weights_images_by_their_pixels(coco_set, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "eval",
        str(coco_set.image_dir),
        "--annotations",
        str(coco_set.annotation_file),
        "--task",
        "det",
        "-a",
        "tic",
        "-q",
        "1",
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
    per_image = list(csv.DictReader((out / "per-image.csv").open()))
    assert len({r["pixels"] for r in per_image}) == 2  # images of different sizes: the two averages differ
    mean_of_images = sum(float(r["bpp"]) for r in per_image) / len(per_image)
    total = 8 * sum(int(r["bytes"]) for r in per_image) / sum(int(r["pixels"]) for r in per_image)
    curve = json.loads((out / "tic-det.json").read_text())
    assert curve["rate_average"] == "image" and curve["results"]["bpp"][0] == pytest.approx(mean_of_images, rel=1e-12)
    assert main(argv + ["--rate-average", "total"]) == 0  # from the same records: nothing is coded again
    curve = json.loads((out / "tic-det.json").read_text())
    assert curve["rate_average"] == "total" and curve["results"]["bpp"][0] == pytest.approx(total, rel=1e-12)
    assert "total bits / total pixels" in curve["description"] and total != pytest.approx(mean_of_images)


def test_segmentation_evaluation_reports_mask_and_box_ap(coco_set, tmp_path):
    from compressai_transtic.data import CocoImages
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.evaluation.runner import Evaluation
    from compressai_transtic.tasks import get_task

    task = get_task("seg", weights="random", short_edge=32, max_size=48, code_multiple=64)
    # a random Mask R-CNN keeps 1000 proposals and 100 masks per image: trim them to stay fast
    task.network.rpn._post_nms_top_n["testing"] = 50
    task.network.roi_heads.detections_per_img = 5
    dataset = CocoImages(coco_set.image_dir, coco_set.annotation_file)
    evaluation = Evaluation(dataset, [task], [CodecSpec("tic", "tic", 1, None, "random")], tmp_path, progress=False)
    (curve,) = evaluation.run()
    data = curve.to_json()
    assert data["primary_metric"] == "segm-AP"
    assert {"segm-AP", "segm-AP50", "bbox-AP"} <= set(data["results"]) and "segm-AP" in data["reference"]
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    detections = [d for r in records for d in r["prediction"]]
    assert detections and all(set(d["segmentation"]) == {"size", "counts"} for d in detections)
    # masks are reported at the annotated image size
    sizes = {r["image"]: r["prediction"][0]["segmentation"]["size"] for r in records if r["prediction"]}
    assert sizes.get(11, [64, 80]) == [64, 80] and sizes.get(42, [72, 64]) == [72, 64]
    assert (tmp_path / "seg-segm-AP.png").read_bytes()[:8] == PNG


def test_a_killed_classification_run_resumes_without_recomputing(classification_set, tmp_path):
    out = tmp_path / "out"
    argv = [
        "eval",
        str(classification_set),
        "-a",
        "tic",
        "transtic",
        "-q",
        "1",
        "--random-weights",
        "--crop",
        "64",
        "-o",
        str(out),
        "--no-progress",
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "compressai_transtic", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    records = out / "records.jsonl"
    deadline = time.monotonic() + 240
    try:
        # 3 reference records, then wait for the first coded image
        while not (records.exists() and len(records.read_text().splitlines()) >= 4):
            if proc.poll() is not None:
                pytest.fail(f"the evaluation ended before it could be killed:\n{proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("no coded image after 240 s")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed = records.read_bytes()
    assert not (out / "tic-cls.json").exists()  # it really stopped midway
    done_before = len(killed.splitlines())

    assert main(argv) == 0
    final = records.read_bytes()
    assert final.startswith(killed)  # finished images were kept, not recomputed
    keys = record_keys(records)
    assert len(keys) == 3 * 3 and len(set(keys)) == len(keys)  # reference + 2 codecs, 3 images each
    assert done_before < len(keys)
    for name in ("tic", "transtic"):
        curve = json.loads((out / f"{name}-cls.json").read_text())
        assert curve["num_images"] == 3 and curve["results"]["quality"] == [1]
        assert {"top1", "top5"} <= set(curve["results"]) and "RANDOM WEIGHTS" in curve["description"]
    assert (out / "cls-top1.png").read_bytes()[:8] == PNG
    assert (out / "results.csv").read_text().count("\n") == 1 + 3


def test_demo_offline_lists_the_missing_files_and_labels_every_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["demo", "--qualities", "1", "--crop", "64"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines and all(line.startswith("[RANDOM WEIGHTS] ") for line in lines)
    for bar in ("loading codecs", "tic q1", "transtic q1"):  # progress goes to stderr
        assert bar in captured.err, bar
    text = "\n".join(lines)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    for filename in ("resnet50-0676ba61.pth", "base_codec_1.pth.tar", "cls_1.pth.tar"):
        assert filename in text and str(cache / filename) in text
    for row in ("uncompressed", "tic q1", "transtic q1"):
        assert any(line.split("] ", 1)[1].startswith(row) and "top-1" in line for line in lines), row


def test_demo_refuses_a_cached_file_that_changed_since_first_use_rather_than_run_on_random(
    tmp_path, monkeypatch, capsys
):
    from compressai_transtic import zoo
    from compressai_transtic.models import TIC

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    path = tmp_path / "torch" / "hub" / "checkpoints" / "base_codec_1.pth.tar"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"state_dict": TIC().state_dict()}, path)
    zoo.tic(1, pretrained=True)  # first use pins its sha256
    torch.manual_seed(1)
    torch.save({"state_dict": TIC().state_dict()}, path)

    assert main(["demo", "--qualities", "1", "--crop", "64"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err.count("error: ") == 1
        and "base_codec_1.pth.tar" in captured.err
        and "when first used" in captured.err
    )


def test_demo_reports_a_damaged_cached_file_at_its_first_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = tmp_path / "torch" / "hub" / "checkpoints" / "base_codec_1.pth.tar"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x02garbage" * 100)
    assert main(["demo", "--qualities", "1", "--crop", "64"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert f"error: {path}: " in captured.err


def test_checkpoint_and_adapter_files_are_evaluated(classification_set, tmp_path, capsys):
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.models import TransTIC
    from compressai_transtic.prompts import save_adapter

    base = CodecSpec("tic", "tic", 1, None, "random", seed=7).load()
    checkpoint = tmp_path / "my_tic.pth.tar"
    torch.save({"state_dict": base.state_dict()}, checkpoint)
    adapter = save_adapter(TransTIC.from_base(base), tmp_path / "cls_adapter.pt", task="cls")
    common = [
        str(classification_set),
        "-q",
        "1",
        "--limit",
        "1",
        "--no-reference",
        "--crop",
        "64",
        "--no-progress",
        "--seed",
        "7",
    ]

    assert (
        main(
            ["eval", *common, "--checkpoint", str(checkpoint), "--task-weights", "random", "-o", str(tmp_path / "ckpt")]
        )
        == 0
    )
    curve = json.loads((tmp_path / "ckpt" / "my_tic-cls.json").read_text())
    assert curve["results"]["quality"] == [1] and str(checkpoint) in curve["description"]

    # the adapter sits on the seeded random base codec it was made for
    assert (
        main(
            [
                "eval",
                *common,
                "--adapter",
                str(adapter),
                "--random-weights",
                "--name",
                "mine",
                "-o",
                str(tmp_path / "adapter"),
            ]
        )
        == 0
    )
    curve = json.loads((tmp_path / "adapter" / "mine-cls.json").read_text())
    assert str(adapter) in curve["description"] and curve["random_weights"] is True
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("[RANDOM WEIGHTS]") for line in lines)


def test_sft_adapters_and_checkpoints_are_evaluated_as_tic_sft(classification_set, tmp_path, capsys):
    from compressai_transtic.adapter_files import save_adapter
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.models import TICSFT, SFTConfig

    base = CodecSpec("tic", "tic", 1, None, "random", seed=7).load()
    model = TICSFT.from_base(base, SFTConfig(width=8))
    adapter = save_adapter(model, tmp_path / "sft.pt", task="cls")
    checkpoint = tmp_path / "sft.pth.tar"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    common = [str(classification_set), "-q", "1", "--limit", "1", "--no-reference", "--crop", "64", "--no-progress"]
    common += ["--seed", "7", "--task-weights", "random"]
    assert main(["eval", *common, "--adapter", str(adapter), "--random-weights", "-o", str(tmp_path / "a")]) == 0
    curve = json.loads((tmp_path / "a" / "tic-sft-adapter-cls.json").read_text())
    assert f"tic-sft q1, adapter {adapter} on RANDOM base codec" in curve["description"]
    assert main(["eval", *common, "--checkpoint", str(checkpoint), "-o", str(tmp_path / "c")]) == 0
    curve = json.loads((tmp_path / "c" / "sft-cls.json").read_text())
    assert str(checkpoint) in curve["description"]
    # a fresh SFT codec codes as its base: the two curves agree
    by_adapter = json.loads((tmp_path / "a" / "tic-sft-adapter-cls.json").read_text())["results"]
    assert by_adapter["bpp"] == curve["results"]["bpp"]


def _roi_adapter(path):
    """A TIC+ROI adapter with random (non-identity) layers on the seeded random base codec."""
    from compressai_transtic.adapter_files import save_adapter
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.models import TICROI, ROIConfig

    model = TICROI.from_base(CodecSpec("tic", "tic", 1, None, "random", seed=7).load(), ROIConfig(width=8))
    return save_adapter(randomize_adapter(model), path, task="det")


def test_roi_adapters_are_evaluated_under_box_and_saliency_maps(coco_set, tmp_path, capsys):
    adapter = _roi_adapter(tmp_path / "roi.pt")
    common = ["eval", str(coco_set.image_dir), "--annotations", str(coco_set.annotation_file), "--task", "det"]
    common += ["-q", "1", "--random-weights", "--seed", "7", "--short-edge", "32", "--max-size", "48"]
    common += ["--code-multiple", "64", "--no-progress", "--no-reference", "--adapter", str(adapter)]
    bpp = {}
    for source in (None, "boxes", "saliency"):
        out = tmp_path / str(source)
        assert main(common + ["-o", str(out)] + (["--roi-map", source] if source else [])) == 0
        curve = json.loads((out / "tic-roi-adapter-det.json").read_text())
        assert (f"quality maps from {source}" in curve["description"]) == (source is not None)
        bpp[source] = curve["results"]["bpp"][0]
    assert len(set(bpp.values())) == 3, bpp  # each map codes the images differently
    capsys.readouterr()


def test_roi_maps_are_refused_for_other_codecs(classification_set, tmp_path, capsys):
    from compressai_transtic.adapter_files import save_adapter
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.models import TransTIC

    base = CodecSpec("tic", "tic", 1, None, "random", seed=7).load()
    adapter = save_adapter(TransTIC.from_base(base), tmp_path / "prompts.pt", task="cls")
    argv = ["eval", str(classification_set), "-q", "1", "--adapter", str(adapter), "--random-weights"]
    assert main(argv + ["--roi-map", "saliency", "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "--roi-map is for tic-roi adapters" in capsys.readouterr().err
    checkpoint = tmp_path / "tic.pth.tar"
    torch.save({"state_dict": base.state_dict()}, checkpoint)
    argv = ["eval", str(classification_set), "-q", "1", "--checkpoint", str(checkpoint), "--task-weights", "random"]
    assert main(argv + ["--roi-map", "saliency", "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"{checkpoint} holds tic" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _chsel_adapter(path, task):
    from compressai_transtic.adapter_files import save_adapter
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.models import ChannelSelectionConfig, TICChannelSelection

    base = CodecSpec("tic", "tic", 1, None, "random", seed=7).load()
    model = TICChannelSelection.from_base(base, ChannelSelectionConfig(width=8))
    with torch.no_grad():
        model.g_a_chsel_gate[::2] = -1.0  # half the channels coded
    return save_adapter(model, path, task=task)


def test_channel_selection_adapters_are_evaluated_from_their_features(classification_set, coco_set, tmp_path):
    cls = ["eval", str(classification_set), "--task", "cls", "--crop", "64", "--limit", "2"]
    det = ["eval", str(coco_set.image_dir), "--annotations", str(coco_set.annotation_file), "--task", "det"]
    det += ["--short-edge", "32", "--max-size", "48", "--code-multiple", "64"]
    for name, argv in (("cls", cls), ("det", det)):
        adapter = _chsel_adapter(tmp_path / f"{name}.pt", name)
        common = ["-q", "1", "--random-weights", "--seed", "7", "--no-progress", "--no-reference"]
        assert main(argv + common + ["--adapter", str(adapter), "-o", str(tmp_path / name)]) == 0
        curve = json.loads((tmp_path / name / f"tic-chsel-adapter-{name}.json").read_text())
        assert curve["results"]["bpp"][0] > 0
        records = [json.loads(line) for line in (tmp_path / name / "records.jsonl").read_text().splitlines()]
        assert records and all("prediction" in r for r in records if r.get("codec") != "uncompressed")


def test_demo_refuses_an_unknown_quality_before_loading_anything(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--qualities", "1", "7"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "invalid choice: 7" in captured.err and captured.out == ""


UNAVAILABLE = ["nodevice"] + ([] if torch.cuda.is_available() else ["cuda"])


@pytest.mark.parametrize("device", UNAVAILABLE)
@pytest.mark.parametrize("command", [["demo"], ["eval", "--task", "cls", "--random-weights"]])
def test_an_unavailable_device_is_a_one_line_error(command, device, classification_set, tmp_path, capsys):
    argv = [command[0]] + (
        [str(classification_set)] + command[1:] + ["-o", str(tmp_path / "out")] if command[0] == "eval" else []
    )
    assert main(argv + ["--device", device]) == 2
    err = capsys.readouterr().err
    assert f"device {device!r} is not available here" in err and "Traceback" not in err


@pytest.mark.parametrize("quality", ["7", "0"])
def test_an_invalid_quality_is_refused_before_any_coding(quality, classification_set, tmp_path, capsys, monkeypatch):
    from compressai_transtic.evaluation import runner

    monkeypatch.setattr(runner.Evaluation, "run", lambda self: pytest.fail("the evaluation started"))
    argv = [
        "eval",
        str(classification_set),
        "--task",
        "cls",
        "--random-weights",
        "-q",
        "1",
        quality,
        "-o",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 2
    assert f"invalid quality {quality}" in capsys.readouterr().err


def test_batched_evaluation_writes_the_records_of_batch_size_one(classification_set, tmp_path, capsys):
    argv = [
        "eval",
        str(classification_set),
        "-a",
        "tic",
        "transtic",
        "-q",
        "1",
        "--random-weights",
        "--crop",
        "64",
        "--no-progress",
    ]
    assert main(argv + ["-o", str(tmp_path / "one")]) == 0
    assert main(argv + ["-o", str(tmp_path / "three"), "--batch-size", "3"]) == 0

    def records(folder):
        rows = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
        return {(r["codec"], r["task"], r["image"]): r for r in rows}

    one, three = records(tmp_path / "one"), records(tmp_path / "three")
    assert one.keys() == three.keys() and len(one) == 3 * 3  # reference, tic, transtic on 3 images
    for key, a in one.items():
        b = three[key]
        assert a["prediction"] == b["prediction"], key
        if a["codec"] != "reference":
            assert (a["bytes"], a["pixels"], a["bpp"]) == (b["bytes"], b["pixels"], b["bpp"]), key
            assert b["psnr"] == pytest.approx(a["psnr"], abs=1e-4)
            assert b["bpp_likelihood"] == pytest.approx(a["bpp_likelihood"], rel=1e-5)
    assert main(argv + ["-o", str(tmp_path / "bad"), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err
