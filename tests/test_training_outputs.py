"""What a training run writes: never an adapter or checkpoint from weights that diverged;
and the line that logs each checkpoint says where in training it was taken."""

from __future__ import annotations

import logging

import pytest
import torch
from codec_models import tiny_tic

from compressai_transtic.models import TransTIC
from compressai_transtic.tasks.classification import ClassificationTask
from compressai_transtic.training.adapters import get_adapter_kind
from compressai_transtic.training.config import TrainConfig
from compressai_transtic.training.outputs import FINAL_ADAPTER, RunOutputs
from compressai_transtic.training.state import CHECKPOINT_NAME, Progress


def _outputs(tmp_path, writes: bool = True, epochs: int = 1, steps_per_epoch=None) -> RunOutputs:
    config = TrainConfig(task="cls", dataset="imgs", quality=1, output=str(tmp_path)).resolve(
        {"batch_size": 2, "epochs": epochs}, ClassificationTask.default_lambda
    )
    model = TransTIC.from_base(tiny_tic())
    kind = get_adapter_kind("transtic")
    return RunOutputs(tmp_path, kind, model, config, "0" * 64, writes=writes, steps_per_epoch=steps_per_epoch)


@pytest.mark.parametrize("writes", [True, False], ids=["main-process", "other-process"])
def test_weights_that_became_non_finite_are_never_written(tmp_path, writes):
    outputs = _outputs(tmp_path, writes)
    outputs.save_adapter(FINAL_ADAPTER, 1, 10)  # finite: written by the main process
    assert (tmp_path / FINAL_ADAPTER).exists() == writes
    before = (tmp_path / FINAL_ADAPTER).read_bytes() if writes else b""
    name, parameter = next(iter(outputs.model.named_adapter_parameters()))
    with torch.no_grad():
        parameter.view(-1)[0] = float("nan")

    with pytest.raises(FloatingPointError, match=rf"non-finite \(\['{name}'\]\); {FINAL_ADAPTER} was not written"):
        outputs.save_adapter(FINAL_ADAPTER, 2, 20)
    with pytest.raises(FloatingPointError, match=f"{CHECKPOINT_NAME} was not written"):
        outputs.save_checkpoint(Progress(), {}, {})
    if writes:
        assert (tmp_path / FINAL_ADAPTER).read_bytes() == before
    else:
        assert not (tmp_path / FINAL_ADAPTER).exists()
    assert not (tmp_path / CHECKPOINT_NAME).exists()


DATASET = {"dataset_digest": "0" * 64, "num_train_images": 20}


@pytest.mark.parametrize(
    "progress, logged",
    [
        (Progress(epoch=1, step_in_epoch=0, global_step=10), "checkpoint after epoch 1 of 2 (global step 10)"),
        (
            Progress(epoch=1, step_in_epoch=3, global_step=13),
            "checkpoint after step 3 of 10 in epoch 2 of 2 (global step 13)",
        ),
    ],
    ids=["end-of-epoch", "inside-an-epoch"],
)
def test_a_checkpoint_is_logged_with_the_epochs_it_completed_and_the_run_s_epochs(tmp_path, caplog, progress, logged):
    outputs = _outputs(tmp_path, epochs=2, steps_per_epoch=10)
    with caplog.at_level(logging.INFO, logger="compressai_transtic.training.outputs"):
        outputs.save_checkpoint(progress, {"optimizer": {}, "scheduler": {}, "scaler": {}}, DATASET)
    assert [r.getMessage() for r in caplog.records] == [f"{logged} -> {tmp_path / CHECKPOINT_NAME}"]
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert (saved["epoch"], saved["step_in_epoch"]) == (progress.epoch, progress.step_in_epoch)  # what is stored
