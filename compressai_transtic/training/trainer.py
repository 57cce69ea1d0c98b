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
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, TypeVar

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from ..fileio import atomic_write_text, check_writable_folder
from .adapters import AdapterKind, get_adapter_kind
from .config import ConfigError, TrainConfig
from .data import (
    GlobalBatchSampler,
    TrainingImages,
    ValidationImages,
    check_images_everywhere,
    collate_training,
    shard,
    training_and_validation_images,
)
from .distributed import DistributedContext, init_distributed, resolve_device
from .epoch_metrics import MetricSums
from .metrics_log import MetricsLog
from .precision import entropy_models_in_float32, resolve_precision
from .randomness import SampleKeyedRandomness
from .state import (
    CHECKPOINT_NAME,
    Progress,
    ResumeError,
    atomic_save,
    check_resume_settings,
    dataset_digest,
    read_checkpoint,
    restore_run_state,
    run_state,
)

__all__ = ["TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

FINAL_ADAPTER = "adapter_final.pth"
FINAL_MODEL = "model_final.pth.tar"
BEST_ADAPTER = "adapter_best.pth"


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
    """
    ctx = init_distributed(config.device)
    try:
        return Trainer(config, ctx).fit()
    finally:
        ctx.shutdown()


def _given(value: Optional[T]) -> T:
    """A setting that :meth:`TrainConfig.resolve` has filled (never ``None`` after it)."""
    assert value is not None, "the training settings were not resolved"
    return value


class Trainer:
    """One training run; the constructor does every check and builds everything.

    Args:
        config: the run's settings (unresolved: task defaults are filled in here).
        ctx: this process's place in a distributed job (default: a single process on
            ``config.device``).
    """

    def __init__(self, config: TrainConfig, ctx: Optional[DistributedContext] = None) -> None:
        self.ctx = ctx if ctx is not None else DistributedContext(device=resolve_device(config.device))
        self.device = self.ctx.device
        self._setup(config)

    # ==================================================================== setup
    def _setup(self, config: TrainConfig) -> None:
        from ..tasks import get_task_class

        ctx = self.ctx
        try:
            task_cls = get_task_class(config.task) if config.task else None
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from None
        if task_cls is not None and not task_cls.trainable:
            raise ConfigError(
                f"task {config.task!r} only evaluates ({task_cls.title}); it has no loss to train "
                "prompts for (train the base codec with CompressAI's examples/train.py)"
            )
        cfg = config.resolve(
            getattr(task_cls, "training_defaults", {}) or {}, getattr(task_cls, "default_lambdas", {}) or {}
        )
        self.config = cfg
        try:
            self.kind: AdapterKind = get_adapter_kind(cfg.arch)
            self.kind.model_config(cfg.variant, cfg.prompt_options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        self.output = Path(_given(cfg.output)).expanduser()
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        self.precision = resolve_precision(cfg.amp, self.device)

        self.ctx.on_main(lambda: check_writable_folder(self.output, "training output"))

        # -- resume checkpoint / output folder (rank 0 reads, everyone gets it)
        def read_resume() -> Optional[Dict[str, Any]]:
            path = self._resume_path(cfg)
            return None if path is None else {"path": str(path), "payload": read_checkpoint(path)}

        resume = self.ctx.on_main(read_resume)
        self.resume_source = None if resume is None else resume["path"]
        ckpt = None if resume is None else resume["payload"]

        # -- images
        self.ctx.collective(lambda: self._find_data(cfg))
        check_images_everywhere(
            self.train_paths + self.val_paths, cfg.verify_images, self.ctx, cfg.progress, cfg.max_pixels
        )
        self.ctx.collective(lambda: self._build_datasets(cfg))
        if ckpt is not None:
            self.ctx.collective(lambda: self._check_resume(ckpt))

        # -- base codec and adapted model
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        torch.manual_seed(cfg.seed)
        self.model = self.ctx.collective(lambda: self._build_model(cfg), main_first=True)
        self.ctx.collective(lambda: self._load_adapter_state(cfg, ckpt))
        self.model.to(self.device)
        self.base_hash = self.kind.base_hash(self.model)
        self.named_trainable = self.kind.trainable_parameters(self.model)
        self._check_frozen_base()

        # -- task and loss (rank 0 first: it may download the recognition network)
        def build_criterion() -> nn.Module:
            from ..tasks import get_task

            task = get_task(cfg.task, weights=cfg.task_weights, device=self.device, seed=cfg.seed, **cfg.task_options)
            return task.criterion(lmbda=cfg.lmbda, quality=cfg.quality).to(self.device)

        self.criterion = self.ctx.collective(build_criterion, main_first=True)

        # -- optimisation
        params = [p for _, p in self.named_trainable]
        self.optimizer = torch.optim.Adam(params, lr=_given(cfg.lr))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.lr_milestones or ()), gamma=_given(cfg.lr_gamma)
        )
        self.scaler = self.precision.grad_scaler()
        progress = Progress()
        if ckpt is not None:
            progress = restore_run_state(ckpt, self.optimizer, self.scheduler, self.scaler)
        self.start_epoch, self.start_step, self.global_step = (
            progress.epoch,
            progress.step_in_epoch,
            progress.global_step,
        )
        self.best_value, self.best_epoch = progress.best_value, progress.best_epoch
        self.resumed_sums = progress.epoch_sums
        if ckpt is not None:
            logger.info(
                "resuming from %s: epoch %d, step %d of the epoch (global step %d)",
                self.resume_source,
                self.start_epoch + 1,
                self.start_step,
                self.global_step,
            )

        # -- process-count independence, precision
        self.randomness = SampleKeyedRandomness(self.model)
        if self.precision.mode != "off":
            entropy_models_in_float32(self.model, self.precision.device_type)
        self.train_model = ctx.wrap(self.model)

        self._resumed = ckpt is not None

    def _resume_path(self, cfg: TrainConfig) -> Optional[Path]:
        own = self.output / CHECKPOINT_NAME
        if cfg.resume is None:
            if own.exists():
                raise ResumeError(
                    f"{self.output} already holds a training checkpoint ({own}); pass --resume to "
                    "continue that run, or choose another --output directory"
                )
            return None
        if cfg.resume == "auto":
            return own if own.exists() else None
        if cfg.resume == "last":
            if not own.exists():
                raise ResumeError(f"cannot resume: {own} does not exist (nothing to resume in {self.output})")
            return own
        path = Path(cfg.resume).expanduser()
        return path / CHECKPOINT_NAME if path.is_dir() else path

    def _find_data(self, cfg: TrainConfig) -> None:
        self.train_paths, self.val_paths = training_and_validation_images(
            cfg.dataset, cfg.val_dataset, cfg.val_fraction, cfg.val_limit, cfg.seed
        )

    def _build_datasets(self, cfg: TrainConfig) -> None:
        ctx = self.ctx
        self.dataset_digest = dataset_digest(self.train_paths, cfg.dataset)
        self.train_set = TrainingImages(
            self.train_paths, _given(cfg.patch_size), _given(cfg.crop), cfg.seed, cfg.max_pixels
        )
        self.sampler = GlobalBatchSampler(
            len(self.train_paths),
            _given(cfg.batch_size),
            ctx.rank,
            ctx.world_size,
            cfg.seed,
            cfg.samples_per_epoch,
        )
        self.val_set = (
            ValidationImages(self.val_paths, _given(cfg.patch_size), cfg.val_crop, cfg.max_pixels)
            if self.val_paths
            else None
        )
        logger.info(
            "%d training images (%d per epoch, %d steps of %d), %d validation images",
            len(self.train_paths),
            self.sampler.samples,
            self.sampler.steps_per_epoch,
            cfg.batch_size,
            len(self.val_paths),
        )

    def _check_resume(self, ckpt: Dict[str, Any]) -> None:
        check_resume_settings(ckpt["config"], self.config.to_dict(), str(self.resume_source))
        if ckpt.get("dataset_digest") != self.dataset_digest:
            raise ResumeError(
                f"cannot resume from {self.resume_source}: the training images differ from the "
                f"checkpoint's ({ckpt.get('num_train_images')} images then, {len(self.train_paths)} now)"
            )

    def _build_model(self, cfg: TrainConfig) -> nn.Module:
        from ..checkpoint import load_state_dict, model_from_state_dict

        if cfg.base is None:
            from ..zoo import load_pretrained

            base = load_pretrained("tic", cfg.quality)
            source = f"released base_codec_{cfg.quality}"
        else:
            state_dict = load_state_dict(cfg.base)
            base = model_from_state_dict(state_dict, "tic", source=str(cfg.base))
            source = str(cfg.base)
        model = self.kind.build(base, cfg.variant, cfg.prompt_options)
        n_train = sum(p.numel() for _, p in self.kind.trainable_parameters(model))
        n_all = sum(p.numel() for p in model.parameters())
        logger.info("base codec from %s; %s: %d trainable of %d parameters", source, cfg.arch, n_train, n_all)
        return model

    def _load_adapter_state(self, cfg: TrainConfig, ckpt: Optional[Dict[str, Any]]) -> None:
        """Prompts from the resume checkpoint, else from ``init_adapter``, else fresh."""
        if ckpt is not None:
            if cfg.init_adapter:
                logger.info("resuming: the prompts come from the checkpoint, not from %s", cfg.init_adapter)
            adapter = ckpt["adapter"]
            self.kind.check_compatible(
                self.model, adapter["signature"], adapter["base_sha256"], str(self.resume_source)
            )
            self.kind.load_state_dict(self.model, adapter["state_dict"])
        elif cfg.init_adapter:
            header = self.kind.load(self.model, cfg.init_adapter)
            logger.info("adapter initialised from %s (trained for task %s)", cfg.init_adapter, header.get("task"))

    def _check_frozen_base(self) -> None:
        trainable = {name for name, _ in self.named_trainable}
        if not trainable:
            raise ConfigError(f"the {self.config.arch} model has no trainable parameters")
        wrong = [n for n, p in self.model.named_parameters() if p.requires_grad and n not in trainable]
        frozen = [n for n, p in self.named_trainable if not p.requires_grad]
        if wrong or frozen:
            raise RuntimeError(
                f"parameter groups are inconsistent: base parameters requiring gradients {wrong[:5]}, "
                f"adapter parameters not requiring them {frozen[:5]}"
            )

    def _write_config(self) -> None:
        import json

        self.output.mkdir(parents=True, exist_ok=True)
        doc = {
            "config": self.config.to_dict(),
            "world_size": self.ctx.world_size,
            "device": str(self.device),
            "precision": self.precision.mode,
            "base_sha256": self.base_hash,
            "num_train_images": len(self.train_paths),
            "num_val_images": len(self.val_paths),
            "steps_per_epoch": self.sampler.steps_per_epoch,
            "resumed_from": self.resume_source,
        }
        atomic_write_text(self.output / "config.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")

    # ==================================================================== training
    def fit(self) -> TrainResult:
        """Train until ``epochs`` are complete; returns what was written.

        The output folder's files (``config.json``, the metrics log) are created here,
        not by the constructor, so that a dry run writes nothing.
        """
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.log = MetricsLog(
            self.output,
            enabled=self.ctx.is_main,
            tensorboard=self.config.tensorboard,
            resume_step=self.global_step if self._resumed else None,
        )
        try:
            if self.ctx.is_main:
                self._write_config()
            with logging_redirect_tqdm():  # log lines above the progress bar, not through it
                return self._epochs()
        finally:
            self.log.close()

    def _epochs(self) -> TrainResult:
        cfg = self.config
        history: List[Dict[str, Any]] = []
        if self.val_set is not None and self.resume_source is None:
            started = time.perf_counter()
            metrics = self.validate()
            history.append(self._row("val", 0, metrics))
            self._log("val", 0, metrics, time.perf_counter() - started)
            self._consider_best(metrics, 0)
        for epoch in range(self.start_epoch, _given(cfg.epochs)):
            start_step = self.start_step if epoch == self.start_epoch else 0
            metrics, seconds = self._train_epoch(epoch, start_step)
            history.append(self._row("train", epoch + 1, metrics))
            self._log("train", epoch + 1, metrics, seconds)
            self.scheduler.step()
            if self.val_set is not None:
                started = time.perf_counter()
                vmetrics = self.validate()
                history.append(self._row("val", epoch + 1, vmetrics))
                self._log("val", epoch + 1, vmetrics, time.perf_counter() - started)
                self._consider_best(vmetrics, epoch + 1)
            self._save_checkpoint(epoch + 1, 0, None)
            if cfg.save_every and (epoch + 1) % cfg.save_every == 0 and self.ctx.is_main:
                self._save_adapter(self.output / f"adapter_epoch{epoch + 1:04d}.pth", epoch + 1)
        return self._finish(history)

    def _log(self, split: str, epoch: int, metrics: Dict[str, float], seconds: float) -> None:
        values = {k: v for k, v in metrics.items() if k != "images"}
        self.log.write(split, epoch, self.global_step, values, self._lr(), int(metrics["images"]), seconds)

    def _row(self, split: str, epoch: int, metrics: Dict[str, float]) -> Dict[str, Any]:
        return {"split": split, "epoch": epoch, "step": self.global_step, **metrics}

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _train_epoch(self, epoch: int, start_step: int) -> Tuple[Dict[str, float], float]:
        from tqdm.auto import tqdm

        cfg, ctx = self.config, self.ctx
        self.model.train()
        self.sampler.set_epoch(epoch, start_step)
        loader = DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            num_workers=_given(cfg.workers),
            collate_fn=collate_training,
            pin_memory=self.device.type == "cuda",
        )
        steps = self.sampler.steps_per_epoch
        resumed = self.resumed_sums if start_step > 0 and ctx.is_main else None
        epoch_sums, window = MetricSums(self.device, resumed), MetricSums(self.device)
        self.resumed_sums = None
        params = [p for _, p in self.named_trainable]
        started = time.perf_counter()
        bar = tqdm(
            total=steps,
            initial=start_step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not (cfg.progress and ctx.is_main),
            dynamic_ncols=True,
        )
        try:
            for i, (x, keys) in enumerate(loader):
                step = start_step + i + 1  # steps completed in this epoch after this one
                x = x.to(self.device, non_blocking=True)
                with self.randomness.batch(keys.tolist()), self.precision.autocast():
                    out = self.train_model(x)
                    losses = self.criterion(out, x)
                loss = losses["loss"]
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_max_norm or math.inf)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.global_step += 1

                with torch.no_grad():
                    mse = torch.nn.functional.mse_loss(out["x_hat"].detach().float().clamp(0, 1), x.float())
                row = MetricSums.step(losses, mse, x.shape[0], grad_norm)
                epoch_sums.add(row)
                window.add(row)
                bar.update(1)
                if self.global_step % cfg.log_every == 0:
                    metrics = self._reduce(window, f"steps up to {self.global_step}")
                    window.zero_()
                    bar.set_postfix(loss=f"{metrics['loss']:.4g}", bpp=f"{metrics['bpp_loss']:.4g}")
                    self._log("train_step", epoch + 1, metrics, time.perf_counter() - started)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < steps:
                    total = epoch_sums.total(ctx)
                    self._check_finite(total, f"epoch {epoch + 1}")
                    self._save_checkpoint(epoch, step, total.values)
        finally:
            bar.close()
        metrics = self._reduce(epoch_sums, f"epoch {epoch + 1}")
        return metrics, time.perf_counter() - started

    def _reduce(self, sums: MetricSums, what: str) -> Dict[str, float]:
        """Means over all processes; ``images`` is the number of images they cover."""
        total = sums.total(self.ctx)
        self._check_finite(total, what)
        return total.means()

    def _check_finite(self, sums: MetricSums, what: str) -> None:
        if not sums.finite():
            raise FloatingPointError(
                f"the training loss became non-finite ({what}); the last checkpoint in {self.output} is "
                "intact. Lower --lr, use --amp off, or check the data."
            )

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Mean loss terms over the validation set (eval mode: rounding, no noise)."""
        if self.val_set is None:
            raise RuntimeError("no validation images: pass val_dataset or val_fraction")
        cfg, ctx = self.config, self.ctx
        self.model.eval()
        indices = shard(list(range(len(self.val_set))), ctx.rank, ctx.world_size)
        batch = self.sampler.local_batch if cfg.val_crop == "center" else 1
        loader = DataLoader(
            Subset(self.val_set, indices),
            batch_size=batch,
            num_workers=_given(cfg.workers),
            pin_memory=self.device.type == "cuda",
        )
        sums = MetricSums(self.device)
        try:
            for x in loader:
                x = x.to(self.device, non_blocking=True)
                with self.precision.autocast():
                    out = self.model(x)
                    losses = self.criterion(out, x)
                mse = torch.nn.functional.mse_loss(out["x_hat"].float().clamp(0, 1), x.float())
                sums.add(MetricSums.step(losses, mse, x.shape[0]))
        finally:
            self.model.train()
        return self._reduce(sums, "validation")

    def _consider_best(self, metrics: Dict[str, float], epoch: int) -> None:
        value = metrics[self.config.select_by]
        if self.best_value is None or value < self.best_value:
            self.best_value, self.best_epoch = value, epoch
            if self.ctx.is_main:
                self._save_adapter(
                    self.output / BEST_ADAPTER, epoch, {"val": metrics, "selected_by": self.config.select_by}
                )
                logger.info("new best adapter (validation %s %.6g) at epoch %d", self.config.select_by, value, epoch)

    # ==================================================================== outputs
    def _metadata(self, epoch: int, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        cfg = self.config
        meta = {
            "trained_with": "compressai-transtic train",
            "quality": cfg.quality,
            "lmbda": cfg.lmbda,
            "epoch": epoch,
            "global_step": self.global_step,
            "config": cfg.to_dict(),
        }
        meta.update(extra or {})
        return meta

    def _save_adapter(self, path: Path, epoch: int, extra: Optional[Dict[str, Any]] = None) -> Path:
        return self.kind.save(self.model, path, self.config.task, self._metadata(epoch, extra))

    def _save_checkpoint(self, epoch: int, step_in_epoch: int, epoch_sums: Optional[torch.Tensor]) -> None:
        if not self.ctx.is_main:
            return
        progress = Progress(epoch, step_in_epoch, self.global_step, self.best_value, self.best_epoch, epoch_sums)
        adapter = {
            "signature": self.kind.signature(self.model),
            "base_sha256": self.base_hash,
            "state_dict": self.kind.state_dict(self.model),
        }
        training = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        dataset = {"dataset_digest": self.dataset_digest, "num_train_images": len(self.train_paths)}
        payload = run_state(progress, self.config.to_dict(), adapter, training, dataset)
        path = atomic_save(payload, self.output / CHECKPOINT_NAME)
        self.log.flush()
        logger.info("checkpoint: epoch %d, step %d of the epoch -> %s", epoch, step_in_epoch, path)

    def _finish(self, history: List[Dict[str, Any]]) -> TrainResult:
        cfg = self.config
        if self.kind.base_hash(self.model) != self.base_hash:
            raise RuntimeError("the base codec's weights changed during training; this is a bug, please report it")
        final_adapter = self.output / FINAL_ADAPTER
        final_model = self.output / FINAL_MODEL
        if self.ctx.is_main:
            self._save_adapter(final_adapter, _given(cfg.epochs))
            # the released weights' layout; the extra entry is ignored by checkpoint readers
            atomic_save(
                {
                    "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                    "adapter_signature": self.kind.signature(self.model),
                },
                final_model,
            )
            logger.info("final adapter: %s; full model: %s", final_adapter, final_model)
        self.ctx.barrier()
        best = self.output / BEST_ADAPTER if self.best_value is not None else None
        return TrainResult(
            output=self.output,
            final_adapter=final_adapter,
            final_model=final_model,
            best_adapter=best,
            best_value=self.best_value,
            best_epoch=self.best_epoch,
            epochs=_given(cfg.epochs),
            global_step=self.global_step,
            history=history,
        )
