"""Prompt training end to end on a tiny generated dataset and a tiny random base codec.

Promises checked here:

- the loss decreases, only the prompt parameters change (the base codec's tensors are
  bit-identical after training), and the outputs load with the library's loaders;
- an interrupted run resumed from its checkpoint ends with exactly the adapter of the
  uninterrupted run;
- a 2-process torchrun (gloo) run gives the adapter of a 1-process run with the same
  global batch, within the floating-point tolerance explained in
  ``test_two_process_torchrun_matches_one_process_with_the_same_global_batch``;
- bad input (empty folder, unreadable image, base checkpoint of another architecture,
  adapter of another variant) is a clear error before any training step.

The recognition network is a randomly initialised ResNet50 (``task_weights="random"``:
no download); the losses are meaningless as numbers but exercise the real task loss.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from codec_models import save_tiny_base
from PIL import Image

from compressai_transtic.checkpoint import (
    ArchitectureMismatchError,
    CheckpointError,
    detect_architecture,
    load_model,
    load_state_dict,
    model_from_adapter,
)
from compressai_transtic.models import ADAPTED_CODECS, TransTIC
from compressai_transtic.prompts import AdapterMismatchError, PromptConfig, load_adapter, save_adapter
from compressai_transtic.training import cli as training_cli
from compressai_transtic.training.config import ConfigError, TrainConfig
from compressai_transtic.training.data import DatasetError, UnreadableImageError
from compressai_transtic.training.metrics_log import read_metrics_csv
from compressai_transtic.training.outputs import RunOutputs
from compressai_transtic.training.state import ResumeError
from compressai_transtic.training.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("training"))


def make_files(root: Path) -> dict:
    """8 small photos (crops of scikit-image's samples) and a random N=16, M=16 TIC."""
    from skimage import data

    images = root / "images"
    k = 0
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        picture = Image.fromarray(getattr(data, name)()).resize((96, 80))
        for j in range(2):
            folder = images / ("a" if k % 2 else "b")
            folder.mkdir(parents=True, exist_ok=True)
            picture.crop((8 * j, 4 * j, 8 * j + 80, 4 * j + 72)).save(folder / f"{name}{j}.png")
            k += 1
    return {"root": root, "images": images, "base": save_tiny_base(root / "base.pth.tar")}


def tiny_config(files, output: Path, **changes) -> TrainConfig:
    settings = dict(
        task="cls",
        task_weights="random",
        base=str(files["base"]),
        dataset=str(files["images"]),
        output=str(output),
        patch_size=64,
        batch_size=4,
        crop="random",
        epochs=3,
        lr=1e-2,
        prompt_options={"generator_width": 4},
        workers=0,
        log_every=1,
        progress=False,
        tensorboard=False,
        seed=7,
    )
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def full_run(files):
    """Uninterrupted run: 3 epochs of 2 steps, validation on 4 of the images."""
    config = tiny_config(files, files["root"] / "full", val_dataset=str(files["images"] / "a"), save_every=1)
    return config, train(config)


def adapter_tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ------------------------------------------------------------------ a normal run


def test_training_lowers_the_loss(full_run):
    _, result = full_run
    rows = read_metrics_csv(result.output / "metrics.csv")
    val = [r["loss"] for r in rows if r["split"] == "val"]
    train_epochs = [r["loss"] for r in rows if r["split"] == "train"]
    assert len(val) == 4 and len(train_epochs) == 3
    # validation runs in eval mode (no noise): a deterministic measure of progress
    assert all(b < a for a, b in zip(val, val[1:])), val
    assert val[-1] < val[0] * 0.99
    assert train_epochs[-1] < train_epochs[0], train_epochs
    assert [r["step"] for r in rows if r["split"] == "train_step"] == [1, 2, 3, 4, 5, 6]
    assert result.best_epoch == 3 and math.isclose(result.best_value, val[-1], rel_tol=1e-6)


def test_only_prompt_parameters_change_and_the_base_codec_is_bit_identical(files, full_run):
    config, result = full_run
    base_before = torch.load(files["base"], weights_only=True)["state_dict"]
    final = torch.load(result.final_model, weights_only=True)["state_dict"]
    base_after = {k: v for k, v in final.items() if not TransTIC.is_prompt_key(k)}
    assert base_after.keys() == base_before.keys()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)

    initial = Trainer(dataclasses.replace(config, output=str(files["root"] / "initial"), val_dataset=None))
    start = {k: v.clone() for k, v in initial.model.prompt_state_dict().items()}
    trained = adapter_tensors(result.final_adapter)
    assert trained.keys() == start.keys()
    for name, _ in initial.named_trainable:
        assert not torch.equal(trained[name], start[name]), f"{name} did not train"


def test_outputs_load_with_the_library_loaders(files, full_run):
    _, result = full_run
    state_dict = load_state_dict(result.final_model)  # the reader of released checkpoints
    assert detect_architecture(state_dict) == "transtic"
    model = TransTIC.from_state_dict(state_dict, config=PromptConfig(generator_width=4))
    fresh = TransTIC.from_base(torch.load(files["base"], weights_only=True)["state_dict"], config=model.config)
    header = load_adapter(fresh, result.final_adapter)
    assert header["task"] == "cls" and header["metadata"]["epoch"] == 3
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    best = load_adapter(fresh, result.output / "adapter_best.pth")  # every file reads with weights_only
    assert best["metadata"]["selected_by"] == "loss" and type(best["metadata"]["selected_by"]) is str
    assert sorted(p.name for p in result.output.glob("adapter_epoch*.pth")) == [
        "adapter_epoch0001.pth",
        "adapter_epoch0002.pth",
        "adapter_epoch0003.pth",
    ]
    assert {p.name for p in result.output.iterdir()} >= {"config.json", "metrics.csv", "checkpoint.pth"}


# ------------------------------------------------------------------ interruption


class Interrupted(Exception):
    pass


def test_resuming_an_interrupted_run_reproduces_the_uninterrupted_adapter_exactly(files, full_run, monkeypatch):
    config, reference = full_run
    output = files["root"] / "interrupted"
    run = dataclasses.replace(config, output=str(output), checkpoint_every=1)
    save = RunOutputs.save_checkpoint

    def save_then_stop(self, progress, training, dataset):  # the process dies right after a checkpoint
        save(self, progress, training, dataset)
        if progress.global_step == 3:  # in the middle of the second epoch
            raise Interrupted

    monkeypatch.setattr(RunOutputs, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        train(run)
    monkeypatch.setattr(RunOutputs, "save_checkpoint", save)
    assert not (output / "adapter_final.pth").exists()

    resumed = train(dataclasses.replace(run, resume="last"))
    expected, got = adapter_tensors(reference.final_adapter), adapter_tensors(resumed.final_adapter)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    drop = ("seconds",)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(read_metrics_csv(output / "metrics.csv")) == strip(read_metrics_csv(reference.output / "metrics.csv"))
    assert resumed.best_epoch == reference.best_epoch


def test_a_finished_output_directory_is_not_overwritten_without_resume(files, full_run):
    config, _ = full_run
    with pytest.raises(ResumeError, match="already holds a training checkpoint"):
        Trainer(config)


# ------------------------------------------------------------------ distributed


@pytest.mark.parametrize("variant", ["dec-only", "deep"])
def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(files, variant):
    """Global batch 4: one process with 4 images per step, or two with 2 each.

    Both see the same images, crops and per-sample quantization noise, the gradients
    are averaged over processes, and BatchNorm statistics cover the global batch, so
    every step's loss agrees to float rounding (1e-5 relative).

    ``dec-only`` (decoder prompts only, no BatchNorm): gradient norms agree within
    1e-3 relative and the adapters within 2e-6 absolute after two Adam steps.

    ``deep`` (the default, with the BatchNorm stack of the prompt generator): the
    generator's gradients are ill-conditioned at random initialisation, so that
    float32 gradients of one process already differ from float64 ones by about 0.5 %
    (and up to 25 % for the first BatchNorm's weight); the two-process gradients agree
    with float64 as well as the one-process ones do. Adam turns any such difference in
    a near-zero gradient component into a step of up to ``lr`` either way, so the
    adapters agree elementwise within ``2.5 * lr * steps``, the bound of Adam's
    normalised steps.
    """
    lr, steps = 1e-4, 2
    single = train(tiny_config(files, files["root"] / f"one-process-{variant}", epochs=1, lr=lr, variant=variant))

    out = files["root"] / f"two-processes-{variant}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "compressai_transtic.training",
        "--task",
        "cls",
        "--task-weights",
        "random",
        "--base",
        str(files["base"]),
        "-d",
        str(files["images"]),
        "-o",
        str(out),
        "--patch-size",
        "64",
        "--batch-size",
        "4",
        "--crop",
        "random",
        "--epochs",
        "1",
        "--lr",
        str(lr),
        "--variant",
        variant,
        "--prompt-option",
        "generator_width=4",
        "-n",
        "0",
        "--log-every",
        "1",
        "--no-progress",
        "--no-tensorboard",
        "--seed",
        "7",
    ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    rows1 = [r for r in read_metrics_csv(single.output / "metrics.csv") if r["split"] == "train_step"]
    rows2 = [r for r in read_metrics_csv(out / "metrics.csv") if r["split"] == "train_step"]
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2] == list(range(1, steps + 1))
    for a, b in zip(rows1, rows2):
        for key in ("loss", "bpp_loss", "task_loss"):
            assert math.isclose(a[key], b[key], rel_tol=1e-5), (key, a[key], b[key])
        if variant == "dec-only":
            assert math.isclose(a["grad_norm"], b["grad_norm"], rel_tol=1e-3), (a["grad_norm"], b["grad_norm"])
    one, two = adapter_tensors(single.final_adapter), adapter_tensors(out / "adapter_final.pth")
    assert one.keys() == two.keys()
    bound = 2e-6 if variant == "dec-only" else 2.5 * lr * steps
    for key in one:
        if one[key].is_floating_point():
            assert torch.allclose(one[key], two[key], rtol=0, atol=bound), key
        else:  # BatchNorm step counters
            assert torch.equal(one[key], two[key]), key


# ------------------------------------------------------------------ bad input


@pytest.fixture
def no_training(monkeypatch):
    forbid_training(monkeypatch)


def forbid_training(monkeypatch) -> None:
    """Any training step or validation pass fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(Trainer, "_train_epoch", fail)
    monkeypatch.setattr(Trainer, "validate", fail)


def test_an_empty_dataset_folder_is_refused_before_training(files, tmp_path, no_training):
    (tmp_path / "empty" / "class").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        train(tiny_config(files, tmp_path / "out", dataset=str(tmp_path / "empty")))
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


def test_unreadable_images_are_named_before_training(files, tmp_path, no_training):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(files["images"].rglob("*.png"))[:4]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(UnreadableImageError, match="corrupt.png"):
        train(tiny_config(files, tmp_path / "out", dataset=str(images)))


def test_missing_released_files_are_all_named_before_any_image_is_decoded(
    files, tmp_path, offline_cache, capsys, no_training
):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(files["images"].rglob("*.png"))[:2]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    argv = ["--task", "cls", "-q", "2", "-d", str(images), "-o", str(tmp_path / "out"), "--batch-size", "2"]
    status = training_cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2 and "corrupt.png" not in err  # the weights are looked for first
    assert "2 weights file(s) are neither cached nor downloadable" in err and "network is unreachable" in err
    for filename in ("base_codec_2.pth.tar", "resnet50-0676ba61.pth"):
        assert f"-> {offline_cache / filename}" in err, filename
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_base_checkpoint_of_another_architecture_is_refused(files, tmp_path, no_training):
    transtic = TransTIC.from_base(
        torch.load(files["base"], weights_only=True)["state_dict"], PromptConfig(generator_width=4)
    )
    path = tmp_path / "transtic.pth.tar"
    torch.save({"state_dict": transtic.state_dict()}, path)
    with pytest.raises(ArchitectureMismatchError, match="this checkpoint is transtic, not tic"):
        train(tiny_config(files, tmp_path / "out", base=str(path)))

    from compressai.zoo import bmshj2018_factorized

    other = tmp_path / "bmshj2018.pth.tar"
    torch.save({"state_dict": bmshj2018_factorized(quality=1).state_dict()}, other)
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        train(tiny_config(files, tmp_path / "out", base=str(other)))


def test_an_adapter_of_another_variant_is_refused(files, tmp_path, no_training):
    base = torch.load(files["base"], weights_only=True)["state_dict"]
    stb12 = TransTIC.from_base(base, PromptConfig.variant("stb-12").replace(generator_width=4))
    adapter = save_adapter(stb12, tmp_path / "stb12.pth", task="cls")
    with pytest.raises(AdapterMismatchError, match="transtic configuration"):
        train(tiny_config(files, tmp_path / "out", init_adapter=str(adapter)))


def test_resuming_with_another_variant_is_refused(files, full_run, tmp_path, no_training):
    config, result = full_run
    run = dataclasses.replace(
        config, output=str(tmp_path / "other"), resume=str(result.output / "checkpoint.pth"), variant="stb-12"
    )
    with pytest.raises(ResumeError, match="variant: checkpoint 'deep', now 'stb-12'"):
        train(run)


def test_the_command_line_reports_bad_input_as_an_error_and_exit_status_2(files, tmp_path, capsys, no_training):
    (tmp_path / "empty").mkdir()
    status = training_cli.main(
        [
            "--task",
            "cls",
            "--task-weights",
            "random",
            "--base",
            str(files["base"]),
            "-d",
            str(tmp_path / "empty"),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    assert status == 2
    assert "error:" in capsys.readouterr().err


def test_dry_run_checks_everything_and_trains_nothing(files, tmp_path, capsys, no_training):
    import json

    status = training_cli.main(
        [
            "--task",
            "cls",
            "--task-weights",
            "random",
            "--base",
            str(files["base"]),
            "-d",
            str(files["images"]),
            "-o",
            str(tmp_path / "out"),
            "--patch-size",
            "64",
            "--batch-size",
            "4",
            "--prompt-option",
            "generator_width=4",
            "--dry-run",
            "--no-progress",
        ]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_images"] == 8 and summary["steps_per_epoch"] == 2 and summary["dry_run"]
    assert summary["config"]["crop"] == "center" and summary["config"]["samples_per_epoch"] == 40000
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_a_runs_own_config_json_starts_the_same_run_elsewhere(files, full_run, tmp_path, capsys, no_training):
    import json

    config, result = full_run
    written = json.loads((result.output / "config.json").read_text())
    assert "lambda" in written["config"] and "lmbda" not in written["config"]  # the command line's name
    status = training_cli.main(
        ["--config", str(result.output / "config.json"), "-o", str(tmp_path / "again"), "--dry-run"]
    )
    assert status == 0, capsys.readouterr().err
    again = json.loads(capsys.readouterr().out)["config"]
    assert again["output"] == str(tmp_path / "again") and again["resume"] is None
    assert {k: v for k, v in again.items() if k not in ("output", "resume")} == {
        k: v for k, v in written["config"].items() if k not in ("output", "resume")
    }


def test_a_config_file_spells_lambda_as_the_command_line_does(files, tmp_path, capsys, no_training):
    import json

    settings = tmp_path / "run.json"
    settings.write_text(
        json.dumps(
            {
                "task": "cls",
                "task_weights": "random",
                "base": str(files["base"]),
                "dataset": str(files["images"]),
                "lambda": 0.25,
                "patch_size": 64,
                "batch_size": 4,
            }
        )
    )
    assert training_cli.main(["--config", str(settings), "-o", str(tmp_path / "out"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["lambda"] == 0.25


def test_log_lines_start_on_their_own_line_under_a_progress_bar(files, tmp_path, capfd):
    import logging

    root = logging.getLogger()
    handler, level = logging.StreamHandler(sys.stderr), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        train(tiny_config(files, tmp_path / "out", epochs=1, progress=True))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    # what a terminal shows: each carriage return starts the line again (tqdm clears the bar with spaces)
    shown = [part.strip() for part in re.split(r"[\r\n]", capfd.readouterr().err)]
    logged = [part for part in shown if " epoch 1 step " in part]
    assert len(logged) == 3  # log_every=1: two steps, then the epoch
    assert all(part.startswith(("train_step epoch 1 step", "train epoch 1 step")) for part in logged), logged


def test_an_unwritable_output_folder_is_refused_before_training(files, tmp_path, capsys, no_training):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status = training_cli.main(
        [
            "--task",
            "cls",
            "--task-weights",
            "random",
            "--base",
            str(files["base"]),
            "-d",
            str(files["images"]),
            "-o",
            str(blocker / "out"),
            "--patch-size",
            "64",
            "--batch-size",
            "4",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training output folder") and "is a file, not a folder" in err
    assert "Traceback" not in err and blocker.read_text() == "not a folder"


def test_an_evaluation_only_task_is_refused_before_anything_is_written(files, tmp_path, no_training):
    with pytest.raises(ConfigError, match="'fidelity' only evaluates"):
        train(tiny_config(files, tmp_path / "out", task="fidelity"))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the learned baselines


def baseline_config(files, output: Path, arch: str = "tic-sft", **changes) -> TrainConfig:
    width = 16 if arch == "tic-chsel" else 8
    return tiny_config(files, output, arch=arch, prompt_options={"width": width}, lr=1e-3, **changes)


@pytest.fixture(scope="module", params=["tic-sft", "tic-chsel", "tic-roi"])
def baseline_run(request, files):
    arch = request.param
    config = baseline_config(files, files["root"] / arch, arch, val_dataset=str(files["images"] / "a"))
    return config, train(config)


def test_baseline_training_lowers_the_task_loss_and_leaves_the_base_bit_identical(files, baseline_run):
    config, result = baseline_run
    rows = read_metrics_csv(result.output / "metrics.csv")
    val = [r["task_loss"] for r in rows if r["split"] == "val"]
    assert len(val) == 4 and val[-1] < val[0] * 0.95, val
    base_before = torch.load(files["base"], weights_only=True)["state_dict"]
    final = torch.load(result.final_model, weights_only=True)["state_dict"]
    codec = ADAPTED_CODECS[config.arch]
    base_after = {k: v for k, v in final.items() if not codec.is_adapter_key(k)}
    assert base_after.keys() == base_before.keys()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)


def test_baseline_outputs_load_as_their_architecture(files, baseline_run):
    config, result = baseline_run
    model = load_model(None, result.final_model)
    assert type(model) is ADAPTED_CODECS[config.arch] and model.config.width == config.prompt_options["width"]
    rebuilt = model_from_adapter(load_model("tic", files["base"]), result.final_adapter)
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_adapters_of_one_architecture_are_refused_by_a_run_of_another(files, baseline_run, tmp_path, no_training):
    config, result = baseline_run
    with pytest.raises(
        AdapterMismatchError, match=f"holds {config.arch} weights, not transtic ones: train with arch='{config.arch}'"
    ):
        train(tiny_config(files, tmp_path / "transtic", init_adapter=str(result.final_adapter)))
    base = torch.load(files["base"], weights_only=True)["state_dict"]
    prompts = save_adapter(TransTIC.from_base(base, PromptConfig(generator_width=4)), tmp_path / "prompts.pth")
    with pytest.raises(AdapterMismatchError, match=f"holds transtic weights, not {config.arch}"):
        train(baseline_config(files, tmp_path / "baseline", config.arch, init_adapter=str(prompts)))
    with pytest.raises(ResumeError, match=f"arch: checkpoint '{config.arch}', now 'transtic'") as refused:
        train(tiny_config(files, tmp_path / "resumed", resume=str(result.output / "checkpoint.pth")))
    assert "variant: checkpoint not set (the default configuration), now 'deep'" in str(refused.value)
    assert "None" not in str(refused.value)


def test_options_of_another_architecture_are_refused_before_training(files, tmp_path, no_training):
    with pytest.raises(ConfigError, match=r"unknown tic-sft options \['generator_width'\]"):
        train(tiny_config(files, tmp_path / "a", arch="tic-sft"))
    with pytest.raises(ConfigError, match="unknown tic-roi variant 'deep'"):
        train(baseline_config(files, tmp_path / "b", "tic-roi", variant="deep"))
    with pytest.raises(ConfigError, match="unknown architecture 'tic-nothing'"):
        train(tiny_config(files, tmp_path / "c", arch="tic-nothing"))
    assert not any(tmp_path.iterdir())
