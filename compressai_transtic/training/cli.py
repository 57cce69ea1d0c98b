"""``compressai-transtic train`` (also ``python -m compressai_transtic.training``).

The trainer and the modules whose errors :func:`run` reports are imported when a run
starts, not with this module: ``compressai-transtic train --help`` builds its parser
from :func:`add_arguments` and should not import torch.

The examples and the last paragraph below are the end of ``--help``.

Examples::

    # the paper's classification prompts for quality 1 (released base codec, ResNet50)
    compressai-transtic train --task cls -q 1 -d /data/imagenet/train \\
        --val-dataset /data/imagenet/val --val-limit 2000 -o runs/cls-q1

    # the TIC+SFT baseline for the same task (default output folder: runs/tic-sft-cls-q1)
    compressai-transtic train --arch tic-sft --task cls -q 1 -d /data/imagenet/train \\
        --val-dataset /data/imagenet/val --val-limit 2000

    # detection prompts on 4 GPUs (global batch 8 = 2 per GPU)
    torchrun --nproc_per_node 4 -m compressai_transtic.training \\
        --task det -q 2 -d /data/coco/train2017 --val-fraction 0.002 -o runs/det-q2

    # continue after an interruption
    compressai-transtic train --config runs/det-q2.toml --resume

Options given on the command line override those of --config FILE (JSON or TOML
with the same names), which override the task's defaults (the paper's settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from ..console import report_error
from ..filekinds import ImageCheck
from .config import (
    CROP_MODES,
    ConfigError,
    MixedPrecision,
    SelectBy,
    TrainConfig,
    ValidationCrop,
    command_line_messages,
    load_config_file,
    parse_nested,
)

__all__ = ["DESCRIPTION", "add_arguments", "config_from_args", "main", "run"]

logger = logging.getLogger(__name__)

_S = argparse.SUPPRESS

#: the first lines of ``compressai-transtic train --help``
DESCRIPTION = """\
Train an adapter of a frozen base codec (TIC) for a machine task: TransTIC's prompts
(--arch transtic, the default) or a baseline (--arch tic-sft, tic-chsel, tic-roi).
Outputs go to --output (default runs/<task>-q<quality>, runs/<arch>-<task>-q<quality>
for a baseline): adapter_best.pth (with validation images), adapter_final.pth,
model_final.pth.tar, checkpoint.pth (for --resume), config.json and metrics.csv."""


def _key_value(text: str) -> List[Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = parse_nested(json.loads, value, f"the value of {key.strip()}")
    except ConfigError as exc:  # before ValueError: it is one
        raise argparse.ArgumentTypeError(str(exc)) from None
    except ValueError:  # not JSON: the text itself
        parsed = value
    return [key.strip().replace("-", "_"), parsed]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``, and its description (:data:`DESCRIPTION`)
    and examples when it has none.

    Options not given stay absent from the parsed namespace, so that a ``--config``
    file and the task's defaults can fill them (see :func:`config_from_args`).
    """
    if parser.description is None:
        parser.description = DESCRIPTION
    if parser.epilog is None and __doc__ and "Examples::" in __doc__:
        parser.epilog = "examples:" + __doc__.split("Examples::", 1)[1]
    if parser.formatter_class is argparse.HelpFormatter:  # keep the lines of the description and examples
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for add_group in (
        _model_arguments,
        _data_arguments,
        _optimisation_arguments,
        _output_arguments,
        _run_arguments,
    ):
        add_group(parser)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """The codec, its adaptation and the task."""
    g = parser.add_argument_group("what to train")
    _codec_arguments(g)
    _adaptation_arguments(g)
    _task_network_arguments(g)


def _codec_arguments(g: Any) -> None:
    """The task, the frozen base codec and the rate-accuracy trade-off."""
    g.add_argument("--task", default=_S, help="task plugin name: cls, det, seg or a registered plugin's")
    g.add_argument(
        "-q",
        "--quality",
        type=int,
        default=_S,
        help="quality 1..4: released base codec and the paper's lambda (default 1)",
    )
    g.add_argument(
        "--lambda",
        dest="lmbda",
        type=float,
        default=_S,
        help="rate-accuracy trade-off (default: the task's lambda for the quality)",
    )
    g.add_argument(
        "--base",
        default=_S,
        metavar="CKPT",
        help="base codec (TIC) checkpoint file or URL (default: released base_codec_<quality>)",
    )


def _adaptation_arguments(g: Any) -> None:
    """What is trained on the frozen codec."""
    g.add_argument(
        "--arch",
        default=_S,
        help="adapted architecture: transtic (default, prompts), or a baseline: tic-sft, tic-chsel, tic-roi",
    )
    g.add_argument(
        "--variant",
        default=_S,
        help="preset of the architecture; transtic: deep (default), shallow, prompts-4, prompts-64, stb-12, stb-34, "
        "enc-only, dec-only, enc-ip-dec-ip",
    )
    g.add_argument(
        "--adapter-option",
        "--prompt-option",
        dest="prompt_options",
        action="append",
        type=_key_value,
        default=_S,
        metavar="KEY=VALUE",
        help="override a field of the architecture's configuration (PromptConfig, SFTConfig, "
        "ChannelSelectionConfig, ROIConfig), e.g. "
        "encoder_mask=aligned or width=32 (repeatable)",
    )
    g.add_argument("--init-adapter", default=_S, metavar="FILE", help="start from these prompts instead of fresh ones")


def _task_network_arguments(g: Any) -> None:
    """The frozen recognition network of the task."""
    g.add_argument(
        "--task-weights",
        default=_S,
        metavar="W",
        help="recognition network weights: default, a file, or random (tests only)",
    )
    g.add_argument(
        "--task-option",
        dest="task_options",
        action="append",
        type=_key_value,
        default=_S,
        metavar="KEY=VALUE",
        help="task constructor option, e.g. backend=detectron2 (repeatable)",
    )


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    """Training and validation images."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "-d", "--dataset", default=_S, metavar="DIR", help="training images (any folder, searched recursively)"
    )
    g.add_argument("--val-dataset", default=_S, metavar="DIR", help="validation images: enables best-adapter selection")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=_S,
        help="hold out this fraction of the training images for validation instead",
    )
    g.add_argument("--val-limit", type=int, default=_S, help="validate on at most N images")
    g.add_argument(
        "--val-crop",
        choices=ValidationCrop.values(),
        default=_S,
        help="validation on central patches (default) or full images",
    )
    g.add_argument("--patch-size", type=int, default=_S, help="training crop side (default 256)")
    g.add_argument(
        "--crop",
        choices=CROP_MODES,
        default=_S,
        help="center: Resize+CenterCrop (cls default); random: RandomCrop+flip (det/seg default)",
    )
    g.add_argument(
        "--samples-per-epoch", type=int, default=_S, help="images per epoch (cls default 40000, others: all)"
    )
    g.add_argument(
        "-n", "--workers", type=int, default=_S, help="data-loading workers per process (default min(4, CPUs))"
    )
    g.add_argument(
        "--verify-images",
        choices=ImageCheck.values(),
        default=_S,
        help="check every image before training (default header)",
    )
    g.add_argument("--max-pixels", type=int, default=_S, help="largest image accepted, width x height (default 2^24)")


def _optimisation_arguments(parser: argparse.ArgumentParser) -> None:
    """Epochs, batches, learning rate, precision, device."""
    g = parser.add_argument_group("optimisation")
    g.add_argument("-e", "--epochs", type=int, default=_S, help="epochs (cls 400, det/seg 40)")
    g.add_argument(
        "--batch-size", type=int, default=_S, help="GLOBAL batch size, split over processes (cls 16, det/seg 8)"
    )
    g.add_argument("--lr", type=float, default=_S, help="Adam learning rate (default 1e-4)")
    g.add_argument(
        "--lr-milestones",
        type=int,
        nargs="*",
        default=_S,
        metavar="EPOCH",
        help="epochs after which the rate is multiplied by --lr-gamma",
    )
    g.add_argument("--lr-gamma", type=float, default=_S, help="learning-rate step factor")
    g.add_argument("--clip-max-norm", type=float, default=_S, help="gradient-norm clipping (default 1.0; 0: off)")
    g.add_argument("--seed", type=int, default=_S, help="seed of everything random (default 0)")
    g.add_argument("--device", default=_S, help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--amp", choices=MixedPrecision.values(), default=_S, help="mixed precision on GPU (default auto)")
    g.add_argument("--deterministic", action="store_true", default=_S, help="deterministic GPU kernels (slower)")


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the run writes, how often, and resuming."""
    g = parser.add_argument_group("checkpoints and logs")
    g.add_argument(
        "-o",
        "--output",
        default=_S,
        metavar="DIR",
        help="output directory (default runs/<task>-q<quality>; runs/<arch>-<task>-q<quality> for a baseline, "
        "runs/transtic-<variant>-<task>-q<quality> for another TransTIC variant)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=_S,
        metavar="CKPT",
        help="continue a run: no value = the output directory's checkpoint; 'auto' = if there is one; "
        "or a checkpoint path",
    )
    g.add_argument(
        "--select-by",
        choices=SelectBy.values(),
        default=_S,
        help="validation metric of the best adapter (default loss)",
    )
    g.add_argument("--save-every", type=int, default=_S, metavar="N", help="also keep the adapter of every N-th epoch")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=_S,
        metavar="STEPS",
        help="also checkpoint every STEPS steps inside an epoch",
    )
    g.add_argument("--log-every", type=int, default=_S, metavar="STEPS", help="steps between log rows (default 50)")
    g.add_argument(
        "--no-tensorboard", dest="tensorboard", action="store_false", default=_S, help="do not write TensorBoard events"
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", default=_S, help="no progress bars")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings files and dry runs."""
    g = parser.add_argument_group("run")
    g.add_argument(
        "-c",
        "--config",
        dest="config_file",
        default=None,
        metavar="FILE",
        help="JSON/TOML file of options (command line wins)",
    )
    g.add_argument(
        "--dry-run", action="store_true", help="do every check and build everything, then stop before training"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed arguments (config file, then command line).

    Raises:
        ConfigError: unreadable config file or invalid option.
    """
    names = set(TrainConfig.field_names())
    given: Dict[str, Any] = {k: v for k, v in vars(args).items() if k in names}
    file_values: Dict[str, Any] = {}
    config_file = getattr(args, "config_file", None)
    if config_file:
        file_values = load_config_file(config_file)
    config = TrainConfig.from_dict(file_values, source=str(config_file or "settings"))
    for key in ("prompt_options", "task_options"):
        if key in given:
            merged = dict(getattr(config, key))
            merged.update(dict(given[key]))
            given[key] = merged
    return config.merged(given)


def _configure_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
        if "RANK" in os.environ
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``train`` with parsed arguments; returns the exit status.

    Prints a JSON summary of the outputs to stdout (rank 0). Invalid input (settings,
    images, checkpoints, adapters, missing weights; :data:`~.trainer.USER_ERRORS`) prints
    ``error: ...`` to stderr, naming settings by their flags, and returns 2, before any
    training step.
    """
    _configure_logging()
    with command_line_messages():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..layers import cpu_attention
    from .distributed import init_distributed
    from .trainer import USER_ERRORS, Trainer

    errors = USER_ERRORS
    try:
        cpu_attention()  # a bad COMPRESSAI_TRANSTIC_CPU_ATTENTION stops the run here, not at its first step
        config = config_from_args(args)
        ctx = init_distributed(config.device)
        try:
            trainer = Trainer(config, ctx)
            if getattr(args, "dry_run", False):
                summary: Dict[str, Any] = {
                    "dry_run": True,
                    "output": str(trainer.output),
                    "config": trainer.config.to_dict(),
                    "train_images": len(trainer.images.train_paths),
                    "val_images": len(trainer.images.val_paths),
                    "steps_per_epoch": trainer.images.sampler.steps_per_epoch,
                    "trainable_parameters": sum(p.numel() for _, p in trainer.named_trainable),
                    "resume_from": trainer.resume_source,
                }
            else:
                result = trainer.fit()
                summary = {
                    "output": str(result.output),
                    "final_adapter": str(result.final_adapter),
                    "final_model": str(result.final_model),
                    "best_adapter": None if result.best_adapter is None else str(result.best_adapter),
                    "best_value": result.best_value,
                    "best_epoch": result.best_epoch,
                    "epochs": result.epochs,
                    "global_step": result.global_step,
                }
            is_main = ctx.is_main
        finally:
            ctx.shutdown()
    except errors as exc:
        logger.debug("training stopped", exc_info=True)
        return report_error(exc)
    if is_main:
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="compressai-transtic train")
    add_arguments(parser)  # with the description and the examples
    return run(parser.parse_args(argv))
