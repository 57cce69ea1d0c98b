"""Prompt training on a frozen base codec: single process or distributed (torchrun).

What a run does (the paper's recipe, every setting overridable):

1. load the base codec (a TIC checkpoint, or the released ``base_codec_<quality>``)
   and wrap it in the adapted architecture (TransTIC prompts by default); only the
   adapter's parameters train, the base codec is frozen (its tensors are checked to be
   bit-identical at the end);
2. the task plugin gives the loss (e.g. ``1000 * lambda * d + bpp`` for
   classification, ``d + lambda * bpp`` for detection/segmentation, ``d`` the
   perceptual feature distortion of the frozen recognition network);
3. Adam (lr 1e-4), ``MultiStepLR`` stepped per epoch, gradient-norm clipping,
   mixed precision on GPU;
4. every epoch: validation (when a validation set is given) and selection of the
   best adapter by the validation loss, a training checkpoint (``--resume``
   continues bit-exactly on the CPU), optional per-epoch adapters;
5. at the end: ``adapter_final.pth`` (adapter file, loadable with
   :func:`compressai_transtic.prompts.load_adapter`) and ``model_final.pth.tar``
   (the full model as ``{"state_dict": ...}``, the layout of the released weights).

Everything random is keyed by ``(seed, epoch, sample index)`` (see
:mod:`.randomness` and :mod:`.data`), so a run gives the same adapter whether it runs
in one process or several with the same global batch (up to floating-point
summation order) and whether or not it was interrupted and resumed.

Training the base codec itself for human perception is CompressAI's job: see
:mod:`compressai_transtic.training` for the command.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..adapter_files import AdapterError
from ..checkpoint import ArchitectureMismatchError, CheckpointError
from ..download import WeightsToFetchError
from ..fileio import OutputError, check_writable_folder
from ..tasks.weights import TaskWeightsUnavailableError
from ..zoo import ChecksumMismatchError, WeightsUnavailableError
from .build import (
    build_criterion,
    build_images,
    build_model,
    check_parameter_groups,
    load_adapter_state,
    prepare_task,
    resolve_settings,
    seed_everything,
)
from .config import ConfigError, TrainConfig, ValidationCrop, given, option_ref
from .data import check_images_everywhere, collate_training, shard, training_and_validation_images
from .distributed import DistributedContext, PeerSetupError, init_distributed, resolve_device
from .epoch_metrics import MetricSums
from .metrics_log import MetricsLog
from .outputs import RunOutputs
from .precision import resolve_precision
from .state import (
    Progress,
    check_resume,
    check_training_state,
    describe_next,
    describe_position,
    epochs_setting,
    find_resume_checkpoint,
    read_checkpoint,
)
from .steps import Optimisation

__all__ = ["USER_ERRORS", "TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)

#: what :func:`train` raises for input to fix rather than for a bug: invalid settings,
#: images, checkpoints or adapters, missing weights, an unwritable output folder (all
#: before any training step), and a run whose loss diverged. A program reports them in
#: one line, as ``compressai-transtic train`` does (``error: ...``, exit status 2); their
#: messages name settings as :class:`TrainConfig` fields (``batch_size``), or as the
#: command line's flags (``--batch-size``) inside :func:`.config.command_line_messages`.
USER_ERRORS: Tuple[Type[Exception], ...] = (
    ConfigError,
    PeerSetupError,
    ArchitectureMismatchError,
    CheckpointError,
    AdapterError,
    TaskWeightsUnavailableError,
    WeightsUnavailableError,
    WeightsToFetchError,
    ChecksumMismatchError,
    OutputError,
    FileNotFoundError,
    FloatingPointError,
    ValueError,  # DatasetError, ResumeError and the others of invalid input
)


@dataclass
class TrainResult:
    """What a finished run produced.

    Args:
        output: the output directory.
        final_adapter: adapter file of the last epoch.
        final_model: full model checkpoint of the last epoch (``{"state_dict": ...}``).
        best_adapter: adapter with the best validation value (None without validation).
        best_value: that value (``select_by`` metric).
        best_epoch: its epoch (0: the initial prompts).
        epochs: epochs completed.
        global_step: optimisation steps completed.
        history: the epoch-level metric rows (``train`` and ``val``) of this process's run.
    """

    output: Path
    final_adapter: Path
    final_model: Path
    best_adapter: Optional[Path]
    best_value: Optional[float]
    best_epoch: Optional[int]
    epochs: int
    global_step: int
    history: List[Dict[str, Any]] = field(default_factory=list)


def train(config: TrainConfig) -> TrainResult:
    """Train an adapter as ``config`` says (joins a ``torchrun`` job when launched by one).

    Every check (settings, images, base checkpoint, adapters, resume checkpoint, task
    weights) happens before the first training step.

    Raises:
        ConfigError, DatasetError, CheckpointError, ArchitectureMismatchError,
        AdapterMismatchError, ResumeError: invalid input, before any training.
        WeightsToFetchError: released weights neither cached nor downloadable (every
            missing file named), before any image is decoded.
    """
    ctx = init_distributed(config.device)
    try:
        return Trainer(config, ctx).fit()
    finally:
        ctx.shutdown()


class Trainer:
    """One training run; the constructor does every check and builds everything.

    Args:
        config: the run's settings (unresolved: task defaults are filled in here).
        ctx: this process's place in a distributed job (default: a single process on
            ``config.device``).
    """

    def __init__(self, config: TrainConfig, ctx: Optional[DistributedContext] = None) -> None:
        ctx = ctx if ctx is not None else DistributedContext(device=resolve_device(config.device))
        self.ctx, self.device = ctx, ctx.device
        cfg, self.kind = resolve_settings(config)
        self.config = cfg
        self.output = Path(given(cfg.output)).expanduser()
        self.precision = resolve_precision(cfg.amp, self.device)
        ctx.on_main(lambda: check_writable_folder(self.output, "training output"))
        resume = ctx.on_main(self._read_resume)  # rank 0 reads, everyone gets it
        self.resume_source = None if resume is None else resume["path"]
        ckpt = None if resume is None else resume["payload"]

        paths = ctx.collective(
            lambda: training_and_validation_images(
                cfg.dataset, cfg.val_dataset, cfg.val_fraction, cfg.val_limit, cfg.seed
            )
        )
        self.images = ctx.collective(lambda: build_images(cfg, ctx, *paths))
        if ckpt is not None:
            ctx.collective(lambda: self._check_resume(ckpt))
        # the downloads, before the images are read: every missing file named at once
        task = ctx.collective(lambda: prepare_task(cfg, self.device), main_first=True)
        check_images_everywhere(paths[0] + paths[1], cfg.verify_images, ctx, cfg.progress, cfg.max_pixels)

        seed_everything(cfg.seed, cfg.deterministic)
        self.model = ctx.collective(lambda: build_model(cfg, self.kind), main_first=True)
        ctx.collective(lambda: load_adapter_state(self.kind, self.model, cfg, ckpt, str(self.resume_source)))
        self.model.to(self.device)
        self.named_trainable = self.kind.trainable_parameters(self.model)
        check_parameter_groups(self.model, self.named_trainable, cfg.arch)
        self.base_hash = self.kind.base_hash(self.model)
        criterion = ctx.collective(lambda: build_criterion(cfg, task))

        parameters = [p for _, p in self.named_trainable]
        self.optimisation = Optimisation.for_run(cfg, self.model, parameters, criterion, self.precision, ctx.wrap)
        self.progress = Progress() if ckpt is None else self._restore(ckpt)
        steps = self.images.sampler.steps_per_epoch
        self.outputs = RunOutputs(
            self.output, self.kind, self.model, cfg, self.base_hash, ctx.is_main, self.progress, steps
        )
        if ckpt is not None:
            self._log_resume(ckpt)

    def _log_resume(self, ckpt: Dict[str, Any]) -> None:
        """Where the run resumes, in the words of the line that logged the checkpoint's saving."""
        p, steps, epochs = self.progress, self.images.sampler.steps_per_epoch, given(self.config.epochs)
        saved = describe_position(p.epoch, p.step_in_epoch, steps, epochs_setting(ckpt["config"]))
        following = describe_next(p.epoch, p.step_in_epoch, epochs)
        logger.info(
            "resuming from %s, saved %s (global step %d); %s", self.resume_source, saved, p.global_step, following
        )

    def _read_resume(self) -> Optional[Dict[str, Any]]:
        path = find_resume_checkpoint(self.config.resume, self.output, self.config.to_dict())
        return None if path is None else {"path": str(path), "payload": read_checkpoint(path)}

    def _check_resume(self, ckpt: Dict[str, Any]) -> None:
        images, source = self.images, str(self.resume_source)
        steps = images.sampler.steps_per_epoch
        check_resume(ckpt, self.config.to_dict(), images.digest, len(images.train_paths), steps, source)

    def _restore(self, ckpt: Dict[str, Any]) -> Progress:
        """The checkpoint's optimiser, scheduler, scaler and generator states, once they fit this run's."""
        o = self.optimisation
        self.ctx.collective(
            lambda: check_training_state(ckpt, o.optimizer, o.scheduler, o.scaler, str(self.resume_source))
        )
        return o.restore(ckpt)

    # ==================================================================== training
    def fit(self) -> TrainResult:
        """Train until ``epochs`` are complete; returns what was written.

        The output folder's files (``config.json``, the metrics log) are created here,
        not by the constructor, so that a dry run writes nothing.
        """
        resumed = self.resume_source is not None
        self.log = MetricsLog(
            self.output,
            enabled=self.ctx.is_main,
            tensorboard=self.config.tensorboard,
            resume_step=self.progress.global_step if resumed else None,
        )
        try:
            self.outputs.write_settings(self._facts())
            with logging_redirect_tqdm():  # log lines above the progress bar, not through it
                return self._epochs()
        finally:
            self.log.close()

    def _facts(self) -> Dict[str, Any]:
        return {
            "world_size": self.ctx.world_size,
            "device": str(self.device),
            "precision": self.precision.mode.value,
            "num_train_images": len(self.images.train_paths),
            "num_val_images": len(self.images.val_paths),
            "steps_per_epoch": self.images.sampler.steps_per_epoch,
            "resumed_from": self.resume_source,
        }

    def _epochs(self) -> TrainResult:
        history: List[Dict[str, Any]] = []
        if self.images.val_set is not None and self.resume_source is None:
            self._validate_and_select(0, history)
        start_epoch, start_step = self.progress.epoch, self.progress.step_in_epoch
        for epoch in range(start_epoch, given(self.config.epochs)):
            started = time.perf_counter()
            metrics = self._train_epoch(epoch, start_step if epoch == start_epoch else 0)
            self._record("train", epoch + 1, metrics, time.perf_counter() - started, history)
            self.optimisation.scheduler.step()
            if self.images.val_set is not None:
                self._validate_and_select(epoch + 1, history)
            self._save_checkpoint(epoch + 1, 0, None)
            every = self.config.save_every
            if every and (epoch + 1) % every == 0:
                self.outputs.save_adapter(f"adapter_epoch{epoch + 1:04d}.pth", epoch + 1, self.progress.global_step)
        return self._finish(history)

    def _record(
        self, split: str, epoch: int, metrics: Dict[str, float], seconds: float, history: List[Dict[str, Any]]
    ) -> None:
        history.append({"split": split, "epoch": epoch, "step": self.progress.global_step, **metrics})
        self._log(split, epoch, metrics, seconds)

    def _log(self, split: str, epoch: int, metrics: Dict[str, float], seconds: float) -> None:
        values = {k: v for k, v in metrics.items() if k != "images"}
        step, lr = self.progress.global_step, self.optimisation.lr
        self.log.write(split, epoch, step, values, lr, int(metrics["images"]), seconds)

    def _validate_and_select(self, epoch: int, history: List[Dict[str, Any]]) -> None:
        started = time.perf_counter()
        metrics = self.validate()
        self._record("val", epoch, metrics, time.perf_counter() - started, history)
        self.outputs.consider_best(metrics, epoch, self.progress.global_step)

    def _train_epoch(self, epoch: int, start_step: int) -> Dict[str, float]:
        """One epoch from ``start_step`` on; the means of its metrics over all processes."""
        cfg, ctx, progress = self.config, self.ctx, self.progress
        self.model.train()
        self.images.sampler.set_epoch(epoch, start_step)
        resumed = progress.epoch_sums if start_step > 0 and ctx.is_main else None
        epoch_sums, window = MetricSums(self.device, resumed), MetricSums(self.device)
        progress.epoch_sums = None
        started = time.perf_counter()
        bar = tqdm(
            total=self.images.sampler.steps_per_epoch,
            initial=start_step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not (cfg.progress and ctx.is_main),
            dynamic_ncols=True,
        )
        with bar:
            for step, (x, keys) in enumerate(self._training_batches(), start=start_step + 1):
                row = self.optimisation.step(x.to(self.device, non_blocking=True), keys.tolist())
                progress.global_step += 1
                epoch_sums.add(row)
                window.add(row)
                bar.update(1)
                if progress.global_step % cfg.log_every == 0:
                    metrics = self._reduce(window, f"steps up to {progress.global_step}")
                    window.zero_()
                    bar.set_postfix(loss=f"{metrics['loss']:.4g}", bpp=f"{metrics['bpp_loss']:.4g}")
                    self._log("train_step", epoch + 1, metrics, time.perf_counter() - started)
                if (
                    cfg.checkpoint_every
                    and step % cfg.checkpoint_every == 0
                    and step < self.images.sampler.steps_per_epoch
                ):
                    total = self._total(epoch_sums, f"epoch {epoch + 1}")
                    self._save_checkpoint(epoch, step, total.values)
        return self._reduce(epoch_sums, f"epoch {epoch + 1}")

    def _training_batches(self) -> DataLoader:
        return DataLoader(
            self.images.train_set,
            batch_sampler=self.images.sampler,
            num_workers=given(self.config.workers),
            collate_fn=collate_training,
            pin_memory=self.device.type == "cuda",
        )

    def _total(self, sums: MetricSums, what: str) -> MetricSums:
        """Sums over all processes, refused when not finite."""
        total = sums.total(self.ctx)
        if not total.finite():
            raise FloatingPointError(
                f"the training loss became non-finite ({what}); the last checkpoint in {self.output} is "
                f"intact. Lower {option_ref('lr')}, use {option_ref('amp', 'off')}, or check the data."
            )
        return total

    def _reduce(self, sums: MetricSums, what: str) -> Dict[str, float]:
        """Means over all processes; ``images`` is the number of images they cover."""
        return self._total(sums, what).means()

    def validate(self) -> Dict[str, float]:
        """Mean loss terms over the validation set (eval mode: rounding, no noise)."""
        val_set = self.images.val_set
        if val_set is None:
            raise RuntimeError("no validation images: pass val_dataset or val_fraction")
        indices = shard(list(range(len(val_set))), self.ctx.rank, self.ctx.world_size)
        loader = DataLoader(
            Subset(val_set, indices),
            batch_size=self.images.sampler.local_batch if self.config.val_crop is ValidationCrop.CENTER else 1,
            num_workers=given(self.config.workers),
            pin_memory=self.device.type == "cuda",
        )
        return self._reduce(self.optimisation.evaluate(loader, self.device), "validation")

    # ==================================================================== outputs
    def _save_checkpoint(self, epoch: int, step_in_epoch: int, epoch_sums: Optional[torch.Tensor]) -> None:
        progress = Progress(epoch, step_in_epoch, self.progress.global_step, epoch_sums=epoch_sums)
        dataset = {"dataset_digest": self.images.digest, "num_train_images": len(self.images.train_paths)}
        self.outputs.save_checkpoint(progress, self.optimisation.state_dict(), dataset)
        self.log.flush()

    def _finish(self, history: List[Dict[str, Any]]) -> TrainResult:
        if self.kind.base_hash(self.model) != self.base_hash:
            raise RuntimeError("the base codec's weights changed during training; this is a bug, please report it")
        epochs, step = given(self.config.epochs), self.progress.global_step
        final_adapter, final_model = self.outputs.save_final(epochs, step)
        self.ctx.barrier()
        outputs = self.outputs
        return TrainResult(
            output=self.output,
            final_adapter=final_adapter,
            final_model=final_model,
            best_adapter=outputs.best_adapter,
            best_value=outputs.best_value,
            best_epoch=outputs.best_epoch,
            epochs=epochs,
            global_step=step,
            history=history,
        )
