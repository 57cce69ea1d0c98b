"""Training settings: task defaults, config files and the command line, in that order."""

from __future__ import annotations

import argparse
import json

import pytest

from compressai_transtic.tasks.classification import ClassificationTask
from compressai_transtic.tasks.detection import DetectionTask
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
    with pytest.raises(ConfigError, match="--task"):
        TrainConfig(dataset="x").resolve({}, CLS_LAMBDA)
    with pytest.raises(ConfigError, match="--dataset"):
        TrainConfig(task="cls").resolve(CLS_DEFAULTS, CLS_LAMBDA)


def test_resume_without_a_value_means_the_output_directorys_checkpoint():
    assert parse("--task", "cls", "-d", "x", "--resume").resume == "last"
    assert parse("--task", "cls", "-d", "x", "--resume", "auto").resume == "auto"
    assert parse("--task", "cls", "-d", "x").resume is None
