"""One optimisation step and one validation pass: the numerical core of a training run.

:class:`Optimisation` owns what changes the adapter (Adam, the per-epoch
``MultiStepLR``, the loss scaler of mixed precision, gradient-norm clipping) and
turns a batch into one row of :class:`~.epoch_metrics.MetricSums`; the trainer
around it decides when to log, validate and save.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .config import MixedPrecision, TrainConfig, given
from .epoch_metrics import MetricSums
from .precision import Precision, entropy_models_in_float32
from .randomness import SampleKeyedRandomness
from .state import Progress, restore_run_state

__all__ = ["Optimisation"]


class Optimisation:
    """Adam on the adapter's parameters, with its schedule, scaler and clipping.

    Args:
        model: the adapted model (validation runs it in eval mode).
        train_model: what the training step calls (``model`` or its DDP wrapper).
        criterion: the task's loss (``forward(output, x)`` gives ``loss``, ...).
        parameters: the trainable parameters.
        lr, milestones, gamma: Adam's learning rate and its ``MultiStepLR`` schedule.
        clip_max_norm: gradient-norm limit (None or 0: no clipping).
        precision: autocast and loss scaling.
        randomness: per-sample quantisation noise keyed by the sample indices.
    """

    def __init__(
        self,
        model: nn.Module,
        train_model: nn.Module,
        criterion: nn.Module,
        parameters: List[nn.Parameter],
        lr: float,
        milestones: Iterable[int],
        gamma: float,
        clip_max_norm: Optional[float],
        precision: Precision,
        randomness: SampleKeyedRandomness,
    ) -> None:
        self.model, self.train_model, self.criterion = model, train_model, criterion
        self.parameters = parameters
        self.optimizer = torch.optim.Adam(parameters, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(milestones), gamma=gamma)
        self.scaler = precision.grad_scaler()
        self.clip_max_norm = clip_max_norm or math.inf
        self.precision, self.randomness = precision, randomness

    @classmethod
    def for_run(
        cls,
        cfg: TrainConfig,
        model: nn.Module,
        parameters: List[nn.Parameter],
        criterion: nn.Module,
        precision: Precision,
        wrap: Callable[[nn.Module], nn.Module],
    ) -> "Optimisation":
        """A run's optimisation as its settings say; ``wrap`` makes the module that trains
        (DDP in a job), after the model's random and entropy modules are patched."""
        randomness = SampleKeyedRandomness(model)
        if precision.mode is not MixedPrecision.OFF:
            entropy_models_in_float32(model, precision.device_type)
        lr, gamma, milestones = given(cfg.lr), given(cfg.lr_gamma), cfg.lr_milestones or ()
        return cls(
            model, wrap(model), criterion, parameters, lr, milestones, gamma, cfg.clip_max_norm, precision, randomness
        )

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x: Tensor, keys: List[int]) -> Tensor:
        """One optimisation step on batch ``x`` (samples ``keys``); its metrics row."""
        with self.randomness.batch(keys), self.precision.autocast():
            out = self.train_model(x)
            losses = self.criterion(out, x)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            mse = F.mse_loss(out["x_hat"].detach().float().clamp(0, 1), x.float())
        return MetricSums.step(losses, mse, x.shape[0], grad_norm)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Tensor], device: torch.device) -> MetricSums:
        """Sums of the loss terms over ``batches`` in eval mode (rounding, no noise)."""
        self.model.eval()
        sums = MetricSums(device)
        try:
            for x in batches:
                x = x.to(device, non_blocking=True)
                with self.precision.autocast():
                    out = self.model(x)
                    losses = self.criterion(out, x)
                mse = F.mse_loss(out["x_hat"].float().clamp(0, 1), x.float())
                sums.add(MetricSums.step(losses, mse, x.shape[0]))
        finally:
            self.model.train()
        return sums

    def state_dict(self) -> Dict[str, Any]:
        """The optimiser, scheduler and scaler states (what a checkpoint keeps)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def restore(self, checkpoint: Mapping[str, Any]) -> Progress:
        """Load a checkpoint's states (and random generators); where the run stood."""
        return restore_run_state(checkpoint, self.optimizer, self.scheduler, self.scaler)
