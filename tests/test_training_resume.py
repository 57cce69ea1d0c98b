"""Resuming a training run: what ``--resume`` accepts, and what it refuses before anything changes.

Promises checked here:

- a run resumes from its own checkpoint whatever the checkpoint is called (``last``,
  ``auto``, the file, the folder, a copy of the file);
- a checkpoint is never resumed into a folder that holds another run: that run's files
  stay as they were;
- a run cannot be resumed with fewer epochs than its checkpoint has trained;
- a new run refused for the checkpoint in its folder is told to resume it only when its
  settings are the checkpoint's; else it is told which settings differ (never as Python's
  ``None``) and a folder that holds no run;
- the line that logs resuming says where the checkpoint stands in the words of the line
  that logged its saving;
- every field of a checkpoint is checked when it is read (types, ranges, shapes, NaN,
  sizes that would allocate without bound); a damaged checkpoint is refused with an
  error naming the file and the field, before any file is written or any step runs.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import torch
from test_training_run import forbid_training, make_files, tiny_config

from compressai_transtic.training import cli as training_cli
from compressai_transtic.training.state import ResumeError
from compressai_transtic.training.trainer import Trainer, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("resume"))


@pytest.fixture
def no_training(monkeypatch):
    forbid_training(monkeypatch)


@pytest.fixture(scope="module")
def finished(files):
    """A finished run of 2 epochs (2 steps each), seed 7."""
    return train(tiny_config(files, files["root"] / "finished", epochs=2)).output


def copy_run(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


def contents(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def save_damaged(run: Path, tmp_path: Path, damage: Callable[[Dict[str, Any]], Any]) -> Path:
    """A copy of ``run``'s checkpoint changed by ``damage``."""
    payload = torch.load(run / "checkpoint.pth", weights_only=True)
    damage(payload)
    path = tmp_path / "damaged.pth"
    torch.save(payload, path)
    return path


# ------------------------------------------------------------------ which checkpoint into which folder


def test_a_run_resumes_from_its_own_checkpoint_by_any_name(files, finished, tmp_path, no_training):
    out = copy_run(finished, tmp_path / "run")
    copy = tmp_path / "copy.pth"
    shutil.copyfile(out / "checkpoint.pth", copy)
    for resume in ("last", "auto", str(out / "checkpoint.pth"), str(out), str(copy)):
        trainer = Trainer(tiny_config(files, out, resume=resume, epochs=3))
        assert trainer.resume_source is not None and trainer.progress.epoch == 2, resume


def test_a_checkpoint_is_not_resumed_into_a_folder_holding_another_run(files, finished, tmp_path, monkeypatch):
    other = train(tiny_config(files, tmp_path / "other", epochs=2, seed=5)).output
    before = contents(other)
    forbid_training(monkeypatch)
    with pytest.raises(ResumeError, match="already holds another run") as refused:
        train(tiny_config(files, other, resume=str(finished / "checkpoint.pth"), epochs=3))
    message = str(refused.value)
    assert f"choose another output directory, or continue that run from its own checkpoint (resume='{other}" in message
    assert contents(other) == before

    (other / "checkpoint.pth").unlink()  # its outputs alone still make it a run
    with pytest.raises(ResumeError, match=r"already holds another run \(.*metrics.csv"):
        train(tiny_config(files, other, resume=str(finished / "checkpoint.pth"), epochs=3))
    assert contents(other) == {k: v for k, v in before.items() if k != "checkpoint.pth"}


@pytest.mark.parametrize("resume", [None, "auto"])
def test_a_new_run_does_not_append_to_the_files_of_a_run_without_a_checkpoint(files, tmp_path, resume, no_training):
    out = tmp_path / "stopped-early"  # what a run stopped before its first checkpoint leaves
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.csv").write_text("split,epoch,step\ntrain_step,1,1\n")
    before = contents(out)
    with pytest.raises(ResumeError, match=r"holds files of an earlier run that has no checkpoint \(config.json"):
        Trainer(tiny_config(files, out, resume=resume))
    assert contents(out) == before


def test_a_checkpoint_that_is_not_a_file_is_called_what_it_is(tmp_path):
    from compressai_transtic.training.state import read_checkpoint

    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(ResumeError, match="folder.pth: a folder, not a regular file"):
        read_checkpoint(tmp_path / "folder.pth")
    with pytest.raises(ResumeError, match="missing.pth: no such file"):
        read_checkpoint(tmp_path / "missing.pth")


def test_an_adapter_of_other_shapes_in_a_checkpoint_is_refused_naming_the_file(files, finished, tmp_path, no_training):
    path = save_damaged(finished, tmp_path, lambda c: first_adapter_tensor(c).resize_(1))
    with pytest.raises(ValueError, match=rf"cannot resume from {path}: .*adapter tensor .*shape \(1,\)"):
        Trainer(tiny_config(files, tmp_path / "out", resume=str(path), epochs=3))


def test_a_run_is_not_resumed_with_fewer_epochs_than_it_has_trained(files, finished, tmp_path, no_training):
    out = copy_run(finished, tmp_path / "run")
    before = contents(out)
    with pytest.raises(ResumeError, match=r"has trained 2 epochs, more than epochs=1; pass epochs=2 or more"):
        train(tiny_config(files, out, resume="last", epochs=1))
    assert contents(out) == before


def test_a_run_stopped_inside_an_epoch_needs_that_epoch_to_finish(files, finished, tmp_path, no_training):
    def stopped_in_epoch_2(c: Dict[str, Any]) -> None:
        c.update(epoch=1, step_in_epoch=1, global_step=3, epoch_sums=torch.zeros(7).double())
        c["scheduler"]["last_epoch"] = 1

    path = save_damaged(finished, tmp_path, stopped_in_epoch_2)
    with pytest.raises(ResumeError, match=r"has trained 1 epochs and 1 steps of epoch 2.*pass epochs=2 or more"):
        Trainer(tiny_config(files, tmp_path / "out", resume=str(path), epochs=1))


# ------------------------------------------------------------------ a new run where a run is


def test_a_new_run_of_other_settings_is_not_told_to_resume_the_run_in_its_folder(
    files, finished, tmp_path, no_training
):
    out = copy_run(finished, tmp_path / "run")
    before = contents(out)
    sft = tiny_config(files, out, arch="tic-sft", prompt_options={"width": 8}, epochs=3)
    with pytest.raises(ResumeError) as refused:
        Trainer(sft)
    message = str(refused.value)
    assert message.startswith(f"{out} already holds a training checkpoint ({out / 'checkpoint.pth'}) of a run with")
    assert (
        "other settings (arch: checkpoint 'transtic', now 'tic-sft'; "
        "variant: checkpoint 'deep', now not set (the default configuration); "
        "prompt_options: checkpoint {'generator_width': 4}, now {'width': 8})" in message
    )
    assert message.endswith("choose another output directory for this run (e.g. output='runs/tic-sft-cls-q1')")
    assert "resume=" not in message and "None" not in message
    assert contents(out) == before


def test_a_new_run_of_the_same_settings_is_told_to_resume_and_with_how_many_epochs(
    files, finished, tmp_path, capsys, no_training
):
    out = copy_run(finished, tmp_path / "run")
    elsewhere = f"or choose another output directory (e.g. output='{out}-2')"
    with pytest.raises(ResumeError) as refused:
        Trainer(tiny_config(files, out, epochs=3))
    assert str(refused.value) == (
        f"{out} already holds a training checkpoint ({out / 'checkpoint.pth'}, after epoch 2 of 2) of a run with "
        f"these settings; pass resume='last' to continue that run, {elsewhere}"
    )
    with pytest.raises(ResumeError, match=r"pass resume='last' with epochs=3 or more to train that run further, or"):
        Trainer(tiny_config(files, out, epochs=2))  # the finished run's own command again

    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "metrics.csv").write_text("")  # holds a run: not suggested
    argv = ["--task", "cls", "--task-weights", "random", "--base", str(files["base"]), "-d", str(files["images"])]
    argv += ["--patch-size", "64", "--batch-size", "4", "--crop", "random", "--lr", "1e-2", "--seed", "7"]
    argv += ["--adapter-option", "generator_width=4", "-e", "3", "-o", str(out), "--dry-run"]
    assert training_cli.main(argv) == 2
    assert capsys.readouterr().err.endswith(
        "of a run with these settings; pass --resume to continue that run, "
        f"or choose another --output directory (e.g. --output {out}-3)\n"
    )


def test_resuming_is_logged_in_the_words_of_the_checkpoints_own_line(files, tmp_path, caplog, monkeypatch):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="compressai_transtic.training"):
        train(tiny_config(files, out, epochs=1))
        saved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checkpoint ")]
        assert saved == [f"checkpoint after epoch 1 of 1 (global step 2) -> {out / 'checkpoint.pth'}"]
        forbid_training(monkeypatch)
        caplog.clear()
        Trainer(tiny_config(files, out, resume="auto", epochs=2))
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming ")]
    assert resumed == [
        f"resuming from {out / 'checkpoint.pth'}, saved after epoch 1 of 1 (global step 2); next: epoch 2 of 2"
    ]


def test_resuming_inside_an_epoch_is_logged_with_the_step_and_the_next_one(
    files, finished, tmp_path, caplog, no_training
):
    def stopped_in_epoch_2(c: Dict[str, Any]) -> None:
        c.update(epoch=1, step_in_epoch=1, global_step=3, epoch_sums=torch.zeros(7).double())
        c["scheduler"]["last_epoch"] = 1

    path = save_damaged(finished, tmp_path, stopped_in_epoch_2)
    with caplog.at_level(logging.INFO, logger="compressai_transtic.training.trainer"):
        Trainer(tiny_config(files, tmp_path / "out", resume=str(path), epochs=3))
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming ")] == [
        f"resuming from {path}, saved after step 1 of 2 in epoch 2 of 2 (global step 3); next: step 2 of epoch 2 of 3"
    ]


# ------------------------------------------------------------------ damaged checkpoints


def first_adapter_tensor(c: Dict[str, Any]) -> torch.Tensor:
    return next(v for v in c["adapter"]["state_dict"].values() if v.is_floating_point())


def set_nested(*keys: Any, value: Any) -> Callable[[Dict[str, Any]], None]:
    def damage(c: Dict[str, Any]) -> None:
        for key in keys[:-1]:
            c = c[key]
        c[keys[-1]] = value

    return damage


def inside_an_epoch(step: int, sums: int = 7) -> Callable[[Dict[str, Any]], None]:
    """Stopped at ``step`` of the third epoch (the finished run trained two), with ``sums`` metric sums."""
    return lambda c: c.update(step_in_epoch=step, global_step=4 + step, epoch_sums=torch.zeros(sums).double())


#: the field the error names (the first word), and how the checkpoint is damaged; the expanded
#: views are a few bytes in the file (restoring them allocated 137 GB and 16 GiB before they were
#: refused; the keys are expanded further here so that a regression fails at once)
DAMAGES = {
    "optimizer.state.0.exp_avg NaN": lambda c: c["optimizer"]["state"][0]["exp_avg"].view(-1)[0].fill_(float("nan")),
    "adapter.state_dict NaN": lambda c: first_adapter_tensor(c).view(-1)[0].fill_(float("nan")),
    "epoch_sums expanded": set_nested("epoch_sums", value=torch.zeros(1).expand(2**34)),
    "rng.numpy.keys expanded": set_nested("rng", "numpy", "keys", value=torch.zeros(1).long().expand(2**40)),
    "optimizer missing": lambda c: c.pop("optimizer"),
    "rng missing": lambda c: c.pop("rng"),
    "config missing": lambda c: c.pop("config"),
    "adapter missing": lambda c: c.pop("adapter"),
    "adapter.signature": set_nested("adapter", "signature", value="x"),
    "config": set_nested("config", value=None),
    "rng.torch": set_nested("rng", "torch", value=torch.zeros(3, dtype=torch.uint8)),
    "rng.torch state": set_nested("rng", "torch", value=torch.full((5056,), 255, dtype=torch.uint8)),
    "rng.numpy.pos": set_nested("rng", "numpy", "pos", value=1000),
    "rng.python": set_nested("rng", "python", value=(3, (1, 2, 3), None)),
    "optimizer.state.0.exp_avg shape": set_nested("optimizer", "state", 0, "exp_avg", value=torch.zeros(1)),
    "optimizer.param_groups.0.lr": set_nested("optimizer", "param_groups", 0, "lr", value=float("nan")),
    "optimizer.param_groups.0.betas": set_nested("optimizer", "param_groups", 0, "betas", value=(0.9, 1.0)),
    "scheduler.last_epoch": set_nested("scheduler", "last_epoch", value="x"),
    "epoch": set_nested("epoch", value=-5),
    "step_in_epoch": inside_an_epoch(1000),
    "global_step": set_nested("global_step", value=7),
    "best.value": set_nested("best", value={"value": float("nan"), "epoch": 1}),
    "epoch_sums shape": inside_an_epoch(1, sums=3),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_field(files, finished, tmp_path, case, no_training):
    path = save_damaged(finished, tmp_path, DAMAGES[case])
    with pytest.raises(ResumeError) as refused:
        Trainer(tiny_config(files, tmp_path / "out", resume=str(path), epochs=3))
    message, field = str(refused.value), case.split()[0]
    assert str(path) in message and field in message, message
    assert not (tmp_path / "out").exists()


def test_the_command_line_reports_a_damaged_checkpoint_as_an_error(files, finished, tmp_path, capsys, no_training):
    path = save_damaged(finished, tmp_path, set_nested("config", value=None))
    argv = ["--task", "cls", "--task-weights", "random", "--base", str(files["base"]), "-d", str(files["images"])]
    argv += ["--batch-size", "4", "--patch-size", "64", "-o", str(tmp_path / "out"), "--resume", str(path), "--dry-run"]
    assert training_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume from {path}") and "Traceback" not in err
