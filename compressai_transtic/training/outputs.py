"""What a training run writes into its output folder, and the best adapter so far.

Only the main process writes (the others hold a :class:`RunOutputs` with ``writes``
off); every file is written atomically, so an interrupted run leaves either the
previous file or none:

- ``config.json``: the resolved settings and the facts of the run (world size, device,
  precision, base-codec hash, image counts);
- ``checkpoint.pth``: the resume checkpoint (:mod:`.state`);
- ``adapter_best.pth``: the adapter with the best validation value;
- ``adapter_epochNNNN.pth``: per-epoch adapters when asked for;
- ``adapter_final.pth`` and ``model_final.pth.tar``: the last epoch's adapter and the
  full model in the released weights' layout (``{"state_dict": ...}``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch.nn as nn

from ..fileio import atomic_write_text
from ..integrity import non_finite_tensors
from .adapters import AdapterKind
from .config import TrainConfig, option_ref
from .state import CHECKPOINT_NAME, Progress, atomic_save, describe_position, run_state

__all__ = ["BEST_ADAPTER", "FINAL_ADAPTER", "FINAL_MODEL", "RunOutputs"]

logger = logging.getLogger(__name__)

FINAL_ADAPTER = "adapter_final.pth"
FINAL_MODEL = "model_final.pth.tar"
BEST_ADAPTER = "adapter_best.pth"


class RunOutputs:
    """The files of one run and the best validation value behind ``adapter_best.pth``.

    Args:
        folder: the output folder.
        kind: the adapted architecture (saves and describes the adapter).
        model: the adapted model whose adapter is saved.
        config: the run's resolved settings (recorded in every file).
        base_hash: SHA-256 of the frozen base codec.
        writes: whether this process writes (the main process of a job).
        progress: the resumed run's best value and epoch (default: none yet).
        steps_per_epoch: the run's steps per epoch (named where a checkpoint inside an
            epoch is logged).
    """

    def __init__(
        self,
        folder: Path,
        kind: AdapterKind,
        model: nn.Module,
        config: TrainConfig,
        base_hash: str,
        writes: bool,
        progress: Optional[Progress] = None,
        steps_per_epoch: Optional[int] = None,
    ) -> None:
        self.folder, self.kind, self.model, self.config = folder, kind, model, config
        self.steps_per_epoch = steps_per_epoch
        self.base_hash, self.writes = base_hash, writes
        self.best_value = None if progress is None else progress.best_value
        self.best_epoch = None if progress is None else progress.best_epoch

    def write_settings(self, facts: Mapping[str, Any]) -> None:
        """``config.json``: the settings and ``facts`` about the run."""
        if not self.writes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        doc = {"config": self.config.to_dict(), "base_sha256": self.base_hash, **facts}
        atomic_write_text(self.folder / "config.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")

    def save_adapter(self, name: str, epoch: int, global_step: int, extra: Optional[Dict[str, Any]] = None) -> Path:
        """An adapter file ``name`` in the folder, with the run's metadata."""
        cfg = self.config
        meta = {
            "trained_with": "compressai-transtic train",
            "quality": cfg.quality,
            "lmbda": cfg.lmbda,
            "epoch": epoch,
            "global_step": global_step,
            "config": cfg.to_dict(),
            **(extra or {}),
        }
        path = self.folder / name
        self._refuse_non_finite(name)
        if self.writes:
            self.kind.save(self.model, path, cfg.task, meta)
        return path

    def _refuse_non_finite(self, name: str) -> None:
        """Stop before ``name`` is written from weights that hold NaN or Inf (a diverged
        step). Every process checks: their weights are the same, so all stop together."""
        bad = non_finite_tensors(self.kind.state_dict(self.model))
        if bad:
            raise FloatingPointError(
                f"the adapter's weights became non-finite ({bad[:5]}); {name} was not written and the last "
                f"checkpoint in {self.folder} is intact. Lower {option_ref('lr')}, use {option_ref('amp', 'off')}, "
                "or check the data."
            )

    def consider_best(self, metrics: Mapping[str, float], epoch: int, global_step: int) -> bool:
        """Save ``adapter_best.pth`` when ``metrics`` beat the best validation so far."""
        select_by = self.config.select_by.value  # a plain string: it is saved in the adapter file
        value = metrics[select_by]
        if self.best_value is not None and not value < self.best_value:  # NaN never wins
            return False
        self.best_value, self.best_epoch = value, epoch
        self.save_adapter(BEST_ADAPTER, epoch, global_step, {"val": dict(metrics), "selected_by": select_by})
        if self.writes:
            logger.info("new best adapter (validation %s %.6g) at epoch %d", select_by, value, epoch)
        return True

    def save_checkpoint(self, progress: Progress, training: Mapping[str, Any], dataset: Mapping[str, Any]) -> None:
        """The resume checkpoint: ``progress`` (its best value is this object's), the
        optimiser states ``training`` and the ``dataset`` digest."""
        self._refuse_non_finite(CHECKPOINT_NAME)
        if not self.writes:
            return
        progress.best_value, progress.best_epoch = self.best_value, self.best_epoch
        adapter = {
            "signature": self.kind.signature(self.model),
            "base_sha256": self.base_hash,
            "state_dict": self.kind.state_dict(self.model),
        }
        payload = run_state(progress, self.config.to_dict(), adapter, training, dataset)
        path = atomic_save(payload, self.folder / CHECKPOINT_NAME)
        where = describe_position(progress.epoch, progress.step_in_epoch, self.steps_per_epoch, self.config.epochs)
        logger.info("checkpoint %s (global step %d) -> %s", where, progress.global_step, path)

    def save_final(self, epochs: int, global_step: int) -> Tuple[Path, Path]:
        """The last adapter and the full model; returns their paths."""
        final_adapter = self.save_adapter(FINAL_ADAPTER, epochs, global_step)
        final_model = self.folder / FINAL_MODEL
        if self.writes:
            # the released weights' layout; the extra entry is ignored by checkpoint readers
            state_dict = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            atomic_save({"state_dict": state_dict, "adapter_signature": self.kind.signature(self.model)}, final_model)
            logger.info("final adapter: %s; full model: %s", final_adapter, final_model)
        return final_adapter, final_model

    @property
    def best_adapter(self) -> Optional[Path]:
        return self.folder / BEST_ADAPTER if self.best_value is not None else None
