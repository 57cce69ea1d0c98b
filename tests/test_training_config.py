"""Training settings: task defaults, config files and the command line, in that order."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from compressai_transtic import cli as main_cli
from compressai_transtic.tasks.classification import ClassificationTask
from compressai_transtic.tasks.detection import DetectionTask
from compressai_transtic.training import cli as training_cli
from compressai_transtic.training.build import resolve_settings
from compressai_transtic.training.cli import add_arguments, config_from_args
from compressai_transtic.training.config import ConfigError, TrainConfig, load_config_file

CLS_DEFAULTS = {
    "patch_size": 256,
    "batch_size": 16,
    "epochs": 400,
    "lr": 1e-4,
    "crop": "center",
    "lr_milestones": (30, 60),
    "lr_gamma": 0.5,
    "clip_max_norm": 1.0,
    "samples_per_epoch": 40000,
}
CLS_LAMBDA = ClassificationTask.default_lambda  # the paper's lambda per quality
REPO = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_unset_options_take_the_tasks_paper_defaults_and_lambda():
    cfg = TrainConfig(task="cls", dataset="imgs", quality=2).resolve(CLS_DEFAULTS, CLS_LAMBDA)
    assert (cfg.batch_size, cfg.patch_size, cfg.crop, cfg.epochs, cfg.lr) == (16, 256, "center", 400, 1e-4)
    assert cfg.lr_milestones == (30, 60) and cfg.clip_max_norm == 1.0
    assert cfg.lmbda == 0.0035
    assert cfg.output.endswith("cls-q2")


def test_a_task_without_some_defaults_gets_the_documented_fallbacks():
    cfg = TrainConfig(task="det", dataset="imgs").resolve({"batch_size": 8, "epochs": 40}, DetectionTask.default_lambda)
    assert cfg.crop == "random" and cfg.lr == 1e-4 and cfg.lr_milestones == () and cfg.clip_max_norm == 1.0
    assert cfg.lmbda == 2.0


def test_command_line_overrides_config_file_which_overrides_task_defaults(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(
        'task = "cls"\ndataset = "from-file"\nbatch-size = 4\nlr = 0.001\n'
        '[prompt_options]\ngenerator_width = 8\nencoder_mask = "aligned"\n'
    )
    cfg = parse("--config", str(cfg_file), "--lr", "0.01", "--prompt-option", "generator_width=4")
    assert cfg.dataset == "from-file" and cfg.batch_size == 4  # file
    assert cfg.lr == 0.01  # command line wins
    assert cfg.prompt_options == {"generator_width": 4, "encoder_mask": "aligned"}  # merged, CLI wins
    resolved = cfg.resolve(CLS_DEFAULTS, CLS_LAMBDA)
    assert resolved.epochs == 400 and resolved.batch_size == 4  # task default fills the rest


def test_json_config_files_and_lambda_alias_are_accepted(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"task": "det", "dataset": "d", "lambda": 0.5, "lr_milestones": [20, 10]}))
    cfg = TrainConfig.from_dict(load_config_file(path))
    assert cfg.lmbda == 0.5 and cfg.lr_milestones == (10, 20)


def test_unknown_keys_in_a_config_file_are_refused_with_the_known_ones_listed(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"task": "cls", "learning_rate": 1e-3}))
    with pytest.raises(ConfigError, match="learning_rate.*known options"):
        load_config_file(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"crop": "middle"}, "crop must be"),
        ({"batch_size": 0}, "batch_size must be > 0"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"amp": "fp8"}, "amp must be"),
        ({"quality": 7}, "default lambdas for qualities"),
    ],
)
def test_invalid_values_are_named_in_the_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(task="cls", dataset="imgs", **changes).resolve(CLS_DEFAULTS, CLS_LAMBDA)


def test_a_task_and_a_dataset_are_required():
    with pytest.raises(ConfigError, match="no task given: pass task "):
        TrainConfig(dataset="x").resolve({}, CLS_LAMBDA)
    with pytest.raises(ConfigError, match="no training images given: pass dataset "):
        TrainConfig(task="cls").resolve(CLS_DEFAULTS, CLS_LAMBDA)


def test_the_command_line_names_the_missing_settings_by_their_flags(capsys):
    assert training_cli.main(["-d", "x", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: no task given: pass --task ")
    assert training_cli.main(["--task", "cls", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: no training images given: pass --dataset ")


# ------------------------------------------------------------------ where a run writes


@pytest.mark.parametrize(
    "arch, variant, folder",
    [
        ("transtic", None, "cls-q2"),  # the documented default: TransTIC's prompts (variant deep)
        ("transtic", "deep", "cls-q2"),
        ("transtic", "shallow", "transtic-shallow-cls-q2"),
        ("tic-sft", None, "tic-sft-cls-q2"),
        ("tic-chsel", None, "tic-chsel-cls-q2"),
        ("tic-roi", None, "tic-roi-cls-q2"),
    ],
)
def test_the_default_output_folder_names_the_architecture_and_variant_when_not_transtics_default(arch, variant, folder):
    cfg = TrainConfig(task="cls", dataset="imgs", quality=2, arch=arch, variant=variant)
    assert cfg.resolve(CLS_DEFAULTS, CLS_LAMBDA).output == os.path.join("runs", folder)


def test_an_output_folder_given_is_kept_whatever_the_architecture():
    cfg = TrainConfig(task="cls", dataset="imgs", arch="tic-sft", output="runs/cls-q1")
    assert cfg.resolve(CLS_DEFAULTS, CLS_LAMBDA).output == "runs/cls-q1"


# ------------------------------------------------------------------ help


def test_train_help_says_what_it_trains_and_where_the_outputs_go(capsys):
    for run_help in (lambda: main_cli.main(["train", "--help"]), lambda: training_cli.main(["--help"])):
        with pytest.raises(SystemExit) as exited:
            run_help()
        assert exited.value.code == 0
        usage, description, *_ = capsys.readouterr().out.split("\n\n")
        assert usage.startswith("usage: compressai-transtic train")
        assert description.startswith("Train an adapter of a frozen base codec (TIC) for a machine task")
        assert "--output (default runs/<task>-q<quality>, runs/<arch>-<task>-q<quality>" in description


def test_resume_without_a_value_means_the_output_directorys_checkpoint():
    assert parse("--task", "cls", "-d", "x", "--resume").resume == "last"
    assert parse("--task", "cls", "-d", "x", "--resume", "auto").resume == "auto"
    assert parse("--task", "cls", "-d", "x").resume is None


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("epochs", "ten", "epochs must be a 64-bit integer (got 'ten')"),
        ("patch_size", "64", "patch_size must be a 64-bit integer (got '64')"),
        ("epochs", 1.5, "epochs must be a 64-bit integer (got 1.5)"),
        ("epochs", float("inf"), "epochs must be a 64-bit integer (got inf)"),
        ("batch_size", True, "batch_size must be a 64-bit integer (got True)"),
        ("seed", "x", "seed must be a 64-bit integer (got 'x')"),
        ("seed", 10**20, "seed must be a 64-bit integer (got 100000000000000000000)"),
        ("lr_milestones", [1.7], "lr_milestones must be a list of 64-bit integers (got [1.7])"),
        ("dataset", 5, "dataset must be a string (got 5)"),
        ("base", 5, "base must be a string (got 5)"),
        ("resume", 5, "resume must be a string (got 5)"),
        ("arch", ["transtic"], "arch must be a string (got ['transtic'])"),
        ("tensorboard", "no", "tensorboard must be true or false (got 'no')"),
        ("task_options", [1], "task_options must be a table of options (got [1])"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_option_and_the_value(option, value, message):
    settings = {"task": "cls", "dataset": "imgs", option: value}
    with pytest.raises(ConfigError, match=f"^run.toml: {re.escape(message)}$"):
        TrainConfig.from_dict(settings, source="run.toml").resolve(CLS_DEFAULTS, CLS_LAMBDA)


def test_values_of_the_right_type_are_kept_as_given():
    cfg = TrainConfig.from_dict({"task": "cls", "dataset": "imgs", "lr": 1, "lr_milestones": "60, 30"})
    assert cfg.lr == 1 and cfg.lr_milestones == (30, 60)  # a whole number is a number; milestones sorted
    assert TrainConfig(task="cls", dataset="imgs", seed=2**63 - 1, lr_milestones=[2, 1]).lr_milestones == (1, 2)


@pytest.mark.parametrize("option", ["lr", "lr_gamma", "clip_max_norm", "lambda", "val_fraction"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_are_refused_before_training(option, value):
    with pytest.raises(ConfigError, match=f"{option} must be a finite number \\(got {value}\\)"):
        TrainConfig.from_dict({"task": "cls", "dataset": "imgs", option: value}).resolve(CLS_DEFAULTS, CLS_LAMBDA)


def test_an_infinite_learning_rate_on_the_command_line_is_refused():
    with pytest.raises(ConfigError, match=r"lr must be a finite number \(got inf\)"):
        parse("--task", "cls", "-d", "x", "--lr", "inf")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"patch_size": 100000}, r"patch_size must be at most 4096 \(got 100000\)"),
        ({"workers": 10**6}, r"workers must be at most 256 \(got 1000000\)"),
    ],
)
def test_settings_that_size_memory_or_processes_are_bounded(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(task="cls", dataset="imgs", **changes).resolve(CLS_DEFAULTS, CLS_LAMBDA)


@pytest.mark.parametrize(
    "arch, options, message",
    [
        (
            "transtic",
            {"generator_width": 10**9},
            r"transtic option generator_width must be at most 512 \(got 1000000000\)",
        ),
        (
            "transtic",
            {"generator_width": True},
            r"transtic option generator_width must be a 64-bit integer \(got True\)",
        ),
        (
            "transtic",
            {"generator_width": "four"},
            r"transtic option generator_width must be a 64-bit integer \(got 'four'\)",
        ),
        ("transtic", {"decoder_tp_stbs": [1.7]}, r"transtic option decoder_tp_stbs must be a list of 64-bit integers"),
        ("transtic", {"encoder_prompts": "yes"}, r"transtic option encoder_prompts must be true or false"),
        ("transtic", {"depth": 5}, r"transtic option depth must be one of deep, shallow \(got 5\)"),
        ("transtic", {"encoder_mask": "Aligned"}, r"encoder_mask must be one of legacy, aligned \(got 'Aligned'\)"),
        ("tic-sft", {"width": 10**6}, r"tic-sft option width must be at most 512 \(got 1000000\)"),
        ("tic-roi", {"min_weight": float("nan")}, r"tic-roi option min_weight must be a finite number \(got nan\)"),
    ],
)
def test_adapter_options_are_checked_against_the_configurations_field_types_and_sizes(arch, options, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings(TrainConfig(task="cls", dataset="imgs", arch=arch, prompt_options=options))


def test_an_adapter_option_of_the_command_line_is_named_when_its_value_is_wrong():
    with pytest.raises(ConfigError, match=r"generator_width must be a 64-bit integer \(got 'four'\)"):
        resolve_settings(parse("--task", "cls", "-d", "x", "--adapter-option", 'generator_width="four"'))
    cfg, _ = resolve_settings(parse("--task", "cls", "-d", "x", "--adapter-option", "generator_width=512"))
    assert cfg.prompt_options == {"generator_width": 512}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "name, text",
    [
        ("deep.toml", f"lr_milestones = {nested(5000)}\n"),
        ("deep.json", f'{{"task_options": {{"x": {nested(100000)}}}}}'),
        ("deep-enough-to-break-copies.json", f'{{"task_options": {{"x": {nested(600)}}}}}'),
    ],
)
def test_a_config_file_nested_too_deeply_is_refused_naming_the_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(
        ConfigError, match=f"config file {re.escape(str(path))} nests lists or tables more than 32 deep"
    ):
        parse("--task", "cls", "-d", "x", "--config", str(path))


def test_a_command_line_option_nested_too_deeply_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit) as stop:
        parse("--task", "cls", "-d", "x", "--task-option", f"x={nested(30000)}")
    assert stop.value.code == 2
    assert "--task-option: the value of x nests lists or tables more than 32 deep" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bogus": 1}, r"task 'cls' has no options \['bogus'\] .*its options: backend, crop, progress"),
        ({"seed": 1}, r"task 'cls' has no options \['seed'\] .*seed are set by task_weights, device and seed\)$"),
        ({"crop": "x"}, r"task option crop must be a 64-bit integer \(got 'x'\)"),
    ],
)
def test_task_options_are_those_of_the_tasks_constructor(options, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings(TrainConfig(task="cls", dataset="imgs", task_options=options))
    assert resolve_settings(TrainConfig(task="cls", dataset="imgs", task_options={"crop": 224}))[0].task_options


def test_an_unknown_task_option_stops_the_command_before_anything_is_written(tmp_path, capsys):
    output = tmp_path / "run"
    argv = ["--task", "cls", "-d", str(tmp_path), "--base", str(tmp_path / "missing.pth"), "-o", str(output)]
    assert training_cli.main([*argv, "--task-weights", "random", "--task-option", "bogus=1", "--dry-run"]) == 2
    assert "error: task 'cls' has no options ['bogus']" in capsys.readouterr().err
    assert not output.exists()


# ------------------------------------------------------------------ messages name settings as the caller spells them


def four_images(folder: Path) -> Path:
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (60 * i, 90, 120)).save(folder / f"{i}.png")
    return folder


def test_too_few_images_for_a_batch_name_the_flag_on_the_command_line_and_the_field_in_the_library(tmp_path, capsys):
    from compressai_transtic.training.data import DatasetError
    from compressai_transtic.training.trainer import train

    images, output = four_images(tmp_path / "images"), tmp_path / "run"
    argv = ["--task", "cls", "-d", str(images), "--task-weights", "random", "-o", str(output), "--dry-run"]
    assert training_cli.main(argv) == 2  # the paper's cls batch of 16
    assert capsys.readouterr().err == (
        "error: the training set has 4 images, fewer than one batch of 16; add images or lower --batch-size\n"
    )
    with pytest.raises(DatasetError, match=r"fewer than one batch of 16; add images or lower batch_size$"):
        train(TrainConfig(task="cls", dataset=str(images), task_weights="random", output=str(output)))
    assert not output.exists()


def run_example(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, str(REPO / "examples" / "train_prompts.py"), *args]
    return subprocess.run(command, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)


def test_the_library_example_reports_invalid_input_in_one_line_naming_its_own_options(tmp_path):
    images, output = four_images(tmp_path / "images"), tmp_path / "run"
    argv = ["--task", "cls", "--dataset", str(images), "--task-weights", "random", "--output", str(output)]
    done = run_example(*argv)  # the documented command on 4 images: the paper's cls batch of 16
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "error: the training set has 4 images, fewer than one batch of 16; add images or lower batch_size\n"
    )
    usage = run_example("--help")
    assert usage.returncode == 0
    assert all(option in usage.stdout for option in ("--batch-size", "--epochs", "--task-weights", "--resume"))
    assert not output.exists()
