"""What a training run writes: never an adapter or checkpoint from weights that diverged."""

from __future__ import annotations

import pytest
import torch
from codec_models import tiny_tic

from compressai_transtic.models import TransTIC
from compressai_transtic.tasks.classification import ClassificationTask
from compressai_transtic.training.adapters import get_adapter_kind
from compressai_transtic.training.config import TrainConfig
from compressai_transtic.training.outputs import FINAL_ADAPTER, RunOutputs
from compressai_transtic.training.state import CHECKPOINT_NAME, Progress


def _outputs(tmp_path, writes: bool = True) -> RunOutputs:
    config = TrainConfig(task="cls", dataset="imgs", quality=1, output=str(tmp_path)).resolve(
        {"batch_size": 2, "epochs": 1}, ClassificationTask.default_lambda
    )
    model = TransTIC.from_base(tiny_tic())
    return RunOutputs(tmp_path, get_adapter_kind("transtic"), model, config, "0" * 64, writes=writes)


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
