"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint (``<output>/checkpoint.pth``) holds the adapter weights (prompt
parameters and BatchNorm statistics), the adapter's signature (architecture, prompt
configuration) and base-codec hash, the optimizer, scheduler and loss-scaler states,
the position in training (completed epochs, steps into the current epoch, global
step), the partial sums of the current epoch's metrics, the best validation value so
far, the random-number generator states, the digest of the training image list and
the run's settings. It is a torch file readable with ``weights_only=True``.

A checkpoint is checked field by field when it is read (:func:`check_checkpoint`),
against the run that continues it (:func:`check_resume`, :func:`check_training_state`)
and against the output folder it continues in (:func:`find_resume_checkpoint`), so
that a damaged or foreign checkpoint is refused before anything is written or trained.
"""

from __future__ import annotations

import filecmp
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from ..fileio import atomic_torch_save
from ..filekinds import regular_file_problem
from ..torchfile import load_torch_file
from .checkpoint_checks import ResumeError, canonical, check_checkpoint, check_training_state, failed_checks, refuse
from .config import default_output, option_ref
from .randomness import restore_rng_state, rng_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "Progress",
    "RESUME_KEYS",
    "ResumeError",
    "another_output",
    "atomic_save",
    "check_checkpoint",
    "check_resume",
    "check_resume_settings",
    "check_training_state",
    "dataset_digest",
    "describe_next",
    "describe_position",
    "epochs_setting",
    "find_resume_checkpoint",
    "holds_run",
    "read_checkpoint",
    "restore_rng_state",
    "restore_run_state",
    "rng_state",
    "run_state",
    "setting_differences",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "compressai-transtic-training"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pth"

#: files a run writes into its output folder (:mod:`.outputs`): a folder holding one holds a run
RUN_FILES = (
    CHECKPOINT_NAME,
    "config.json",
    "metrics.csv",
    "adapter_final.pth",
    "model_final.pth.tar",
    "adapter_best.pth",
)

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


def read_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a training checkpoint written by the trainer.

    Raises:
        ResumeError: missing file, unreadable file, an adapter or model file instead of
            a training checkpoint, an unsupported format version, or fields that this
            trainer cannot use (:func:`check_checkpoint`).
    """
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None:
        raise ResumeError(f"cannot resume: checkpoint {path}: {problem}")
    try:
        payload = load_torch_file(path, ResumeError)
    except ResumeError as exc:
        raise ResumeError(f"cannot resume: {exc}") from exc.__cause__
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(payload, dict) and "adapter_format" in payload:
            hint = f" It is an adapter file: start a new run from it with {option_ref('init_adapter')}."
        elif isinstance(payload, dict) and ("state_dict" in payload or "network" in payload):
            hint = (
                " It holds model weights only (no optimizer state): "
                f"pass it as {option_ref('base')} or {option_ref('init_adapter')}."
            )
        raise ResumeError(f"cannot resume: {path} is not a training checkpoint of compressai-transtic.{hint}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ResumeError(
            f"cannot resume: {path} has checkpoint version {payload.get('version')}, expected {CHECKPOINT_VERSION}"
        )
    check_checkpoint(payload, str(path))
    return payload


#: how the differences name a setting that is not set, when "not set" alone would not say what it means
_UNSET = {"variant": "not set (the default configuration)", "samples_per_epoch": "not set (all images)"}


def _shown(key: str, value: Any) -> str:
    """A setting's value in a message: never Python's ``None``."""
    if value is None:
        return _UNSET.get(key, "not set")
    if isinstance(value, dict) and not value:
        return "none"
    return repr(value)


def setting_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """The result-defining settings (:data:`RESUME_KEYS`) of a checkpoint (``saved``) that
    differ from ``current`` ones, each as ``"<name>: checkpoint <value>, now <value>"``."""
    saved = _command_line_names(saved)
    current = _command_line_names(current)
    return [
        f"{key}: checkpoint {_shown(key, saved.get(key))}, now {_shown(key, current.get(key))}"
        for key in RESUME_KEYS
        if canonical(saved.get(key)) != canonical(current.get(key))
    ]


def check_resume_settings(saved: Mapping[str, Any], current: Mapping[str, Any], source: str) -> None:
    """Refuse to continue a run whose result-defining settings changed.

    Raises:
        ResumeError: listing every differing setting with both values, and where a new
            run of the ``current`` settings could go instead.
    """
    diffs = setting_differences(saved, current)
    if diffs:
        output = current.get("output")
        elsewhere = ""
        if isinstance(output, str) and holds_run(Path(output).expanduser()):
            folder = Path(output).expanduser()
            elsewhere = f" in another {option_ref('output')} directory ({_example_output(folder, current)})"
        raise ResumeError(
            f"cannot resume from {source}: settings differ from the checkpoint's ({'; '.join(diffs)}). "
            f"Continue it with the checkpoint's settings, or start a new run instead (without "
            f"{option_ref('resume')}){elsewhere}."
        )


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds files of a training run (:data:`RUN_FILES`)."""
    return any((folder / name).exists() for name in RUN_FILES)


def another_output(output: Path, settings: Optional[Mapping[str, Any]] = None) -> Path:
    """A folder that holds no run, for a run that cannot go to ``output``: the default
    folder of its ``settings`` (:func:`~.config.default_output`, given when they differ
    from those of the run in ``output``) when it is another one, else ``output`` with
    ``-2``, ``-3``... appended."""
    candidates: List[Path] = []
    if settings is not None:
        try:
            arch, variant = settings.get("arch", "transtic"), settings.get("variant")
            candidates.append(Path(default_output(settings["task"], settings["quality"], arch, variant)))
        except (KeyError, TypeError):
            pass
    stem = os.fspath(output).rstrip("/\\") or "run"
    candidates += [Path(f"{stem}-{n}") for n in range(2, 100)]
    here = os.path.abspath(output)
    for folder in candidates:
        if os.path.abspath(folder) != here and not holds_run(folder):
            return folder
    return Path(f"{stem}-new")


def _example_output(output: Path, settings: Optional[Mapping[str, Any]] = None) -> str:
    return f"e.g. {option_ref('output', another_output(output, settings))}"


def epochs_setting(config: Any) -> Optional[int]:
    """The ``epochs`` of a checkpoint's or a run's settings, when it is a count."""
    epochs = config.get("epochs") if isinstance(config, Mapping) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def describe_position(
    epoch: int, step_in_epoch: int, steps_per_epoch: Optional[int] = None, epochs: Optional[int] = None
) -> str:
    """Where a checkpoint stands, in the words of both the line that logs its saving and
    the line that logs resuming from it: ``after epoch 1 of 2`` (``epoch`` epochs
    completed, of ``epochs``), ``after step 3 of 10 in epoch 2 of 2`` (inside an epoch)."""
    of = "" if epochs is None else f" of {epochs}"
    if step_in_epoch == 0:
        return f"after epoch {epoch}{of}"
    steps = f" of {steps_per_epoch}" if steps_per_epoch else ""
    return f"after step {step_in_epoch}{steps} in epoch {epoch + 1}{of}"


def describe_next(epoch: int, step_in_epoch: int, epochs: int) -> str:
    """What a run resumed at ``epoch`` completed epochs and ``step_in_epoch`` steps does next."""
    if step_in_epoch:
        return f"next: step {step_in_epoch + 1} of epoch {epoch + 1} of {epochs}"
    if epoch < epochs:
        return f"next: epoch {epoch + 1} of {epochs}"
    return f"no epoch left of {epochs}: the final outputs are written again"


def _occupied(output: Path, own: Path, settings: Optional[Mapping[str, Any]]) -> str:
    """Why a new run cannot start in ``output``, which holds the checkpoint ``own``, and
    what to do: resume it when the run's ``settings`` are the checkpoint's (with enough
    epochs), else choose another folder."""
    choose = f"choose another {option_ref('output')} directory"
    elsewhere = f"{choose} ({_example_output(output)})"
    head = f"{output} already holds a training checkpoint ({own}"
    if settings is None:
        return f"{head}); pass {option_ref('resume', 'last')} to continue that run, or {elsewhere}"
    try:
        saved = read_checkpoint(own)
    except ResumeError as exc:
        return f"{head}), which cannot be continued ({exc}); move it away, or {elsewhere}"
    diffs = setting_differences(saved["config"], settings)
    if diffs:
        example = _example_output(output, settings)
        return f"{head}) of a run with other settings ({'; '.join(diffs)}); {choose} for this run ({example})"
    epoch, step = saved["epoch"], saved["step_in_epoch"]
    position = describe_position(epoch, step, None, epochs_setting(saved["config"]))
    resume, goal = option_ref("resume", "last"), "continue that run"
    epochs = epochs_setting(settings)
    if epochs is not None and epochs < epoch + 1:
        resume += f" with {option_ref('epochs', epoch + 1)} or more"
        goal = "train that run further" if step == 0 else goal
    return f"{head}, {position}) of a run with these settings; pass {resume} to {goal}, or {elsewhere}"


def find_resume_checkpoint(
    resume: Optional[str], output: Path, settings: Optional[Mapping[str, Any]] = None
) -> Optional[Path]:
    """The checkpoint a run continues from, by its ``resume`` setting.

    ``None``: a new run (refused if ``output`` already holds a checkpoint or other files
    of a run, :data:`RUN_FILES`); ``"auto"``:
    ``output``'s checkpoint if there is one; ``"last"``: ``output``'s checkpoint, which
    must exist; anything else: a checkpoint file or a run folder holding one, refused
    when ``output`` holds another run (:func:`check_output_folder`).

    Args:
        resume: the run's ``resume`` setting.
        output: the run's output folder.
        settings: the run's settings (``TrainConfig.to_dict()``): when given, a new run
            refused for the checkpoint in ``output`` is told to resume it only when the
            checkpoint's settings are these; else it is told which differ, and the default
            folder of its settings when that one holds no run (:func:`another_output`).

    Raises:
        ResumeError: a new run in a folder with a checkpoint, ``"last"`` without one, or
            a checkpoint that would continue in the folder of another run.
    """
    own = output / CHECKPOINT_NAME
    if resume is None:
        if own.exists():
            raise ResumeError(_occupied(output, own, settings))
        held = [name for name in RUN_FILES if (output / name).exists()]
        if held:  # a run stopped before its first checkpoint: its log would be appended to
            raise ResumeError(
                f"{output} holds files of an earlier run that has no checkpoint ({', '.join(held)}); "
                "move them away (or delete them) to start a new run there, or choose another "
                f"{option_ref('output')} directory ({_example_output(output)})"
            )
        return None
    if resume == "auto":
        return own if own.exists() else find_resume_checkpoint(None, output, settings)
    if resume == "last":
        if not own.exists():
            raise ResumeError(f"cannot resume: {own} does not exist (nothing to resume in {output})")
        return own
    path = Path(resume).expanduser()
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    check_output_folder(path, output)
    return path


def check_output_folder(checkpoint: Path, output: Path) -> None:
    """Refuse to continue ``checkpoint`` in an ``output`` folder that holds another run:
    one whose files (:data:`RUN_FILES`) are there while its ``checkpoint.pth`` is not
    ``checkpoint`` (the same file, or a copy of it). The run's files would be replaced.

    Raises:
        ResumeError: naming the folder's run files and what to do instead.
    """
    own = output / CHECKPOINT_NAME
    if not checkpoint.is_file() or (own.is_file() and filecmp.cmp(checkpoint, own, shallow=False)):
        return  # a missing checkpoint is reported when read; the folder's own continues its run
    held = [name for name in RUN_FILES if (output / name).exists()]
    if held:
        instead = ""
        if own.is_file():
            instead = f", or continue that run from its own checkpoint ({option_ref('resume', own)})"
        raise ResumeError(
            f"cannot resume {checkpoint} in {output}: that folder already holds another run "
            f"({', '.join(held)}), whose files resuming would replace; choose another "
            f"{option_ref('output')} directory{instead}"
        )


def check_resume(
    checkpoint: Mapping[str, Any],
    config: Mapping[str, Any],
    digest: str,
    images: int,
    steps_per_epoch: int,
    source: str,
) -> None:
    """Refuse a checkpoint of other settings (:func:`check_resume_settings`), other
    training images (``digest`` of the ``images`` files now), a position in training
    that does not fit ``steps_per_epoch``, or more epochs trained than ``config`` asks for.

    Raises:
        ResumeError: naming what differs.
    """
    check_resume_settings(checkpoint["config"], config, source)
    if checkpoint.get("dataset_digest") != digest:
        raise ResumeError(
            f"cannot resume from {source}: the training images differ from the "
            f"checkpoint's ({checkpoint.get('num_train_images')} images then, {images} now)"
        )
    refuse(source, _position_problems(checkpoint, steps_per_epoch))
    epoch, step, epochs = checkpoint["epoch"], checkpoint["step_in_epoch"], config["epochs"]
    begun = epoch + (1 if step else 0)
    if epochs < begun:
        trained = f"{epoch} epochs" + (f" and {step} steps of epoch {epoch + 1}" if step else "")
        raise ResumeError(
            f"cannot resume from {source}: it has trained {trained}, more than {option_ref('epochs', epochs)}; "
            f"pass {option_ref('epochs', begun)} or more to continue it "
            "(a run is not shortened: start a new one for fewer epochs)"
        )


def _position_problems(checkpoint: Mapping[str, Any], steps_per_epoch: int) -> List[str]:
    """Where the checkpoint stands, against this run's steps per epoch."""
    epoch, step = checkpoint["epoch"], checkpoint["step_in_epoch"]
    expected = epoch * steps_per_epoch + step
    return failed_checks(
        [
            ("step_in_epoch", step, lambda v: v < steps_per_epoch, f"below the {steps_per_epoch} steps of an epoch"),
            (
                "global_step",
                checkpoint["global_step"],
                lambda v: v == expected,
                f"{expected} ({epoch} epochs of {steps_per_epoch} steps, then {step})",
            ),
        ]
    )


def _command_line_names(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` with ``lmbda`` named ``lambda``, as the settings name it (a checkpoint's
    config may hold either name)."""
    return {("lambda" if k == "lmbda" else k): v for k, v in config.items()}


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
    """Load a checkpoint's optimiser, scheduler, scaler and random generator states
    (checked by :func:`check_checkpoint` and :func:`check_training_state`); returns
    where the run stood."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if checkpoint["scaler"]:  # empty: saved without loss scaling (e.g. on the CPU); this run starts its own
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
