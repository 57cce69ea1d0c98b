"""What a training run is built from: resolved settings, images, the adapted model and its loss.

Each function does one step of the trainer's set-up and raises a clear error before
any training; the trainer runs them on every process of a job through
:meth:`~.distributed.DistributedContext.collective`, so a failure on one process
stops all of them.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn as nn

from ..adapter_files import AdapterMismatchError, read_adapter
from ..checkpoint import load_state_dict, model_from_state_dict
from ..tasks import PluginError, Task, get_task, get_task_class
from ..zoo import fetch_all, get_weights, load_pretrained
from .adapters import AdapterKind, get_adapter_kind
from .config import ConfigError, TrainConfig, check_type, given, option_ref
from .data import GlobalBatchSampler, TrainingImages, ValidationImages
from .distributed import DistributedContext
from .state import dataset_digest

__all__ = [
    "RunImages",
    "build_criterion",
    "build_images",
    "build_model",
    "check_parameter_groups",
    "check_task_options",
    "load_adapter_state",
    "prepare_task",
    "resolve_settings",
    "seed_everything",
]

logger = logging.getLogger(__name__)

#: the task constructor's arguments that are no task options: ``self`` and those that
#: :func:`prepare_task` sets from other settings
_RUN_TASK_ARGUMENTS = ("self", "weights", "device", "seed")


def resolve_settings(config: TrainConfig) -> Tuple[TrainConfig, AdapterKind]:
    """The settings with the task's defaults filled in, and the adapted architecture.

    Raises:
        ConfigError: an unknown or evaluation-only task, an unknown architecture,
            variant or option, or an invalid value.
    """
    try:
        task_cls = get_task_class(config.task) if config.task else None
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    except PluginError as exc:  # a refused or broken plugin: the message names it
        raise ConfigError(str(exc)) from None
    if task_cls is not None and not task_cls.trainable:
        raise ConfigError(
            f"task {config.task!r} only evaluates ({task_cls.title}); it has no loss to train "
            "prompts for (train the base codec with CompressAI's examples/train.py)"
        )
    task = task_cls if task_cls is not None else Task  # no task: resolve says so
    cfg = config.resolve(task.training_defaults or {}, task.default_lambda)
    check_task_options(task, cfg.task, cfg.task_options)
    try:
        kind = get_adapter_kind(cfg.arch)
        kind.model_config(cfg.variant, cfg.prompt_options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return cfg, kind


def check_task_options(task_cls: Type[Task], name: str, options: Mapping[str, Any]) -> None:
    """Refuse options that the task's constructor does not take, or takes from other
    settings, and values not of the type of its parameter.

    Raises:
        ConfigError: naming the option and listing the accepted ones.
    """
    parameters = inspect.signature(task_cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return  # the task takes any option
    accepted = {
        n: p.annotation
        for n, p in parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in _RUN_TASK_ARGUMENTS
    }
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"task {name!r} has no options {unknown} ({option_ref('task_options')}); its options: "
            f"{', '.join(sorted(accepted)) or 'none'} (its weights, device and seed are set by "
            f"{option_ref('task_weights')}, {option_ref('device')} and {option_ref('seed')})"
        )
    for option, value in options.items():
        check_type(f"task option {option}", value, accepted[option])


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python's, NumPy's and torch's generators; optionally deterministic kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class RunImages:
    """The run's images: training set and sampler, validation set, and their digest."""

    train_paths: List[Path]
    val_paths: List[Path]
    digest: str
    train_set: TrainingImages
    sampler: GlobalBatchSampler
    val_set: Optional[ValidationImages]


def build_images(
    cfg: TrainConfig, ctx: DistributedContext, train_paths: List[Path], val_paths: List[Path]
) -> RunImages:
    """Datasets and this process's share of every global batch."""
    train_set = TrainingImages(train_paths, given(cfg.patch_size), given(cfg.crop), cfg.seed, cfg.max_pixels)
    sampler = GlobalBatchSampler(
        len(train_paths), given(cfg.batch_size), ctx.rank, ctx.world_size, cfg.seed, cfg.samples_per_epoch
    )
    val_set = ValidationImages(val_paths, given(cfg.patch_size), cfg.val_crop, cfg.max_pixels) if val_paths else None
    logger.info(
        "%d training images (%d per epoch, %d steps of %d), %d validation images",
        len(train_paths),
        sampler.samples,
        sampler.steps_per_epoch,
        cfg.batch_size,
        len(val_paths),
    )
    digest = dataset_digest(train_paths, cfg.dataset)
    return RunImages(train_paths, val_paths, digest, train_set, sampler, val_set)


def build_model(cfg: TrainConfig, kind: AdapterKind) -> nn.Module:
    """The adapted model around the base codec (``cfg.base``, else the released one)."""
    if cfg.base is None:
        base = load_pretrained("tic", cfg.quality)
        source = f"released base_codec_{cfg.quality}"
    else:
        base = model_from_state_dict(load_state_dict(cfg.base), "tic", source=str(cfg.base))
        source = str(cfg.base)
    model = kind.build(base, cfg.variant, cfg.prompt_options)
    n_train = sum(p.numel() for _, p in kind.trainable_parameters(model))
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("base codec from %s; %s: %d trainable of %d parameters", source, cfg.arch, n_train, n_all)
    return model


def load_adapter_state(
    kind: AdapterKind, model: nn.Module, cfg: TrainConfig, checkpoint: Optional[Mapping[str, Any]], source: str
) -> None:
    """The adapter from the resume ``checkpoint``, else from ``cfg.init_adapter``, else fresh.

    Raises:
        AdapterMismatchError: an adapter of another architecture, variant or base codec.
    """
    if checkpoint is not None:
        if cfg.init_adapter:
            logger.info("resuming: the adapter comes from the checkpoint, not from %s", cfg.init_adapter)
        adapter = checkpoint["adapter"]
        kind.check_compatible(model, adapter["signature"], adapter["base_sha256"], source)
        try:
            kind.load_state_dict(model, adapter["state_dict"])
        except ValueError as exc:  # keys or shapes, checked before any tensor changed
            raise AdapterMismatchError(f"cannot resume from {source}: {exc}") from None
    elif cfg.init_adapter:
        arch = read_adapter(cfg.init_adapter)["arch"]
        if arch != kind.name:
            raise AdapterMismatchError(
                f"{option_ref('init_adapter', cfg.init_adapter)} holds {arch} weights, not {kind.name} ones: "
                f"train with {option_ref('arch', arch)} to start from it, or pass a {kind.name} adapter"
            )
        header = kind.load(model, cfg.init_adapter)
        logger.info("adapter initialised from %s (trained for task %s)", cfg.init_adapter, header.get("task"))


def check_parameter_groups(model: nn.Module, trainable: List[Tuple[str, nn.Parameter]], arch: str) -> None:
    """Exactly the adapter's parameters train; the base codec's are frozen.

    Raises:
        ConfigError: the architecture has nothing to train.
        RuntimeError: a base parameter requires gradients or an adapter one does not.
    """
    names = {name for name, _ in trainable}
    if not names:
        raise ConfigError(f"the {arch} model has no trainable parameters")
    wrong = [n for n, p in model.named_parameters() if p.requires_grad and n not in names]
    frozen = [n for n, p in trainable if not p.requires_grad]
    if wrong or frozen:
        raise RuntimeError(
            f"parameter groups are inconsistent: base parameters requiring gradients {wrong[:5]}, "
            f"adapter parameters not requiring them {frozen[:5]}"
        )


def prepare_task(cfg: TrainConfig, device: torch.device) -> Task:
    """The run's task with its recognition network loaded, and the released base codec
    fetched (without ``cfg.base``): the files a run downloads, fetched once the images
    are counted and before any is decoded, and every missing one named in one error.

    Raises:
        WeightsToFetchError: files neither cached nor downloadable.
    """
    rows = [] if cfg.base is not None else [get_weights("tic", given(cfg.quality))]
    task = get_task(given(cfg.task), weights=cfg.task_weights, device=device, seed=cfg.seed, **cfg.task_options)
    fetch_all(rows, [task], progress=cfg.progress)
    return task


def build_criterion(cfg: TrainConfig, task: Task) -> nn.Module:
    """The task's loss with its frozen recognition network (:func:`prepare_task`)."""
    return task.criterion(lmbda=cfg.lmbda, quality=cfg.quality).to(task.device)
