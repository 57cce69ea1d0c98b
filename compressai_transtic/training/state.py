"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint (``<output>/checkpoint.pth``) holds the adapter weights (prompt
parameters and BatchNorm statistics), the adapter's signature (architecture, prompt
configuration) and base-codec hash, the optimizer, scheduler and loss-scaler states,
the position in training (completed epochs, steps into the current epoch, global
step), the partial sums of the current epoch's metrics, the best validation value so
far, the random-number generator states, the digest of the training image list and
the run's settings. It is a torch file readable with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..fileio import atomic_torch_save
from ..torchfile import load_torch_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "Progress",
    "RESUME_KEYS",
    "ResumeError",
    "atomic_save",
    "check_resume",
    "check_resume_settings",
    "dataset_digest",
    "find_resume_checkpoint",
    "read_checkpoint",
    "restore_rng_state",
    "restore_run_state",
    "rng_state",
    "run_state",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "compressai-transtic-training"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pth"

#: settings a resumed run must share with its checkpoint (anything else may change,
#: e.g. ``epochs`` to train longer, ``workers``, validation and logging options)
RESUME_KEYS = (
    "task",
    "arch",
    "quality",
    "lambda",
    "variant",
    "prompt_options",
    "task_weights",
    "task_options",
    "batch_size",
    "patch_size",
    "crop",
    "lr",
    "lr_milestones",
    "lr_gamma",
    "clip_max_norm",
    "samples_per_epoch",
    "seed",
)


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run (the message says why)."""


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    return atomic_torch_save(obj, path)


def dataset_digest(paths: Sequence[Path], root: Union[str, os.PathLike]) -> str:
    """SHA-256 of the training image list (paths relative to ``root``, in order)."""
    digest = hashlib.sha256()
    root = Path(root)
    for p in paths:
        try:
            rel = Path(p).relative_to(root).as_posix()
        except ValueError:
            rel = Path(p).as_posix()
        digest.update(rel.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def rng_state() -> Dict[str, Any]:
    """States of Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    np_state: Any = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def read_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a training checkpoint written by the trainer.

    Raises:
        ResumeError: missing file, unreadable file, an adapter or model file instead of
            a training checkpoint, or an unsupported format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"cannot resume: checkpoint {path} does not exist")
    try:
        payload = load_torch_file(path, ResumeError)
    except ResumeError as exc:
        raise ResumeError(f"cannot resume: {exc}") from exc.__cause__
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(payload, dict) and "adapter_format" in payload:
            hint = " It is an adapter file: start a new run from it with --init-adapter."
        elif isinstance(payload, dict) and ("state_dict" in payload or "network" in payload):
            hint = " It holds model weights only (no optimizer state): pass it as --base or --init-adapter."
        raise ResumeError(f"cannot resume: {path} is not a training checkpoint of compressai-transtic.{hint}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ResumeError(
            f"cannot resume: {path} has checkpoint version {payload.get('version')}, expected {CHECKPOINT_VERSION}"
        )
    return payload


def check_resume_settings(saved: Mapping[str, Any], current: Mapping[str, Any], source: str) -> None:
    """Refuse to continue a run whose result-defining settings changed.

    Raises:
        ResumeError: listing every differing setting with both values.
    """
    saved = _command_line_names(saved)
    current = _command_line_names(current)
    diffs = []
    for key in RESUME_KEYS:
        a, b = _canon(saved.get(key)), _canon(current.get(key))
        if a != b:
            diffs.append(f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}")
    if diffs:
        raise ResumeError(
            f"cannot resume from {source}: settings differ from the checkpoint's ({'; '.join(diffs)}). "
            "Use the checkpoint's settings, or start a new run in another --output directory."
        )


def find_resume_checkpoint(resume: Optional[str], output: Path) -> Optional[Path]:
    """The checkpoint a run continues from, by its ``resume`` setting.

    ``None``: a new run (refused if ``output`` already holds a checkpoint); ``"auto"``:
    ``output``'s checkpoint if there is one; ``"last"``: ``output``'s checkpoint, which
    must exist; anything else: a checkpoint file or a run folder holding one.

    Raises:
        ResumeError: a new run in a folder with a checkpoint, or ``"last"`` without one.
    """
    own = output / CHECKPOINT_NAME
    if resume is None:
        if own.exists():
            raise ResumeError(
                f"{output} already holds a training checkpoint ({own}); pass --resume to "
                "continue that run, or choose another --output directory"
            )
        return None
    if resume == "auto":
        return own if own.exists() else None
    if resume == "last":
        if not own.exists():
            raise ResumeError(f"cannot resume: {own} does not exist (nothing to resume in {output})")
        return own
    path = Path(resume).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


def check_resume(
    checkpoint: Mapping[str, Any], config: Mapping[str, Any], digest: str, images: int, source: str
) -> None:
    """Refuse a checkpoint of other settings (:func:`check_resume_settings`) or other
    training images (``digest`` of the ``images`` files now).

    Raises:
        ResumeError: naming what differs.
    """
    check_resume_settings(checkpoint["config"], config, source)
    if checkpoint.get("dataset_digest") != digest:
        raise ResumeError(
            f"cannot resume from {source}: the training images differ from the "
            f"checkpoint's ({checkpoint.get('num_train_images')} images then, {images} now)"
        )


def _command_line_names(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Checkpoints written before the settings used ``lambda`` name it ``lmbda``."""
    return {("lambda" if k == "lmbda" else k): v for k, v in config.items()}


def _canon(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_canon(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _canon(v)) for k, v in value.items()))
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass
class Progress:
    """Where a run stands: what a checkpoint restores besides the weights and optimiser.

    Args:
        epoch: epochs completed.
        step_in_epoch: steps completed in the current epoch (0: at an epoch boundary).
        global_step: optimisation steps completed.
        best_value: the best validation value so far (None: no validation yet).
        best_epoch: its epoch.
        epoch_sums: the metric sums of the current epoch up to ``step_in_epoch`` (for a
            checkpoint taken inside an epoch; all processes' together).
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    epoch_sums: Optional[Tensor] = None


def run_state(
    progress: Progress,
    config: Mapping[str, Any],
    adapter: Mapping[str, Any],
    training: Mapping[str, Any],
    dataset: Mapping[str, Any],
) -> Dict[str, Any]:
    """The payload of a training checkpoint (``torch.load(weights_only=True)`` reads it).

    Args:
        progress: where the run stands.
        config: the run's settings (``TrainConfig.to_dict()``).
        adapter: ``signature``, ``base_sha256`` and ``state_dict`` of the trained parts.
        training: ``optimizer``, ``scheduler`` and ``scaler`` state dicts.
        dataset: ``dataset_digest`` and ``num_train_images``.
    """
    sums = progress.epoch_sums
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": dict(config),
        "adapter": dict(adapter),
        **{key: training[key] for key in ("optimizer", "scheduler", "scaler")},
        "epoch": progress.epoch,
        "step_in_epoch": progress.step_in_epoch,
        "global_step": progress.global_step,
        "epoch_sums": None if sums is None else sums.detach().cpu(),
        "best": {"value": progress.best_value, "epoch": progress.best_epoch},
        "rng": rng_state(),
        **{key: dataset[key] for key in ("dataset_digest", "num_train_images")},
    }


def restore_run_state(checkpoint: Mapping[str, Any], optimizer: Any, scheduler: Any, scaler: Any) -> Progress:
    """Load a checkpoint's optimiser, scheduler, scaler and random generator states;
    returns where the run stood."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    restore_rng_state(checkpoint["rng"])
    sums = checkpoint.get("epoch_sums")
    return Progress(
        epoch=int(checkpoint["epoch"]),
        step_in_epoch=int(checkpoint["step_in_epoch"]),
        global_step=int(checkpoint["global_step"]),
        best_value=checkpoint["best"]["value"],
        best_epoch=checkpoint["best"]["epoch"],
        epoch_sums=None if sums is None else sums.to(torch.float64),
    )
