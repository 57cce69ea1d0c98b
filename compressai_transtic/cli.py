"""The ``compressai-transtic`` command.

Subcommands (:data:`SUBCOMMANDS`):

- ``demo``: TIC and TransTIC on bundled sample photos, judged by ResNet50;
- ``encode`` / ``decode``: images to ``.ttic`` files and back (:mod:`compressai_transtic.filecodec`);
- ``bitmap``: per-position bit maps of codecs side by side (:mod:`compressai_transtic.bitmap`);
- ``eval``: rate-accuracy evaluation of codecs on ImageNet-style or COCO-format data
  (also ``python -m compressai_transtic.evaluation``);
- ``compare``, ``plot``, ``table``: BD-rate / BD-metric, rate-metric plots and
  cross-model tables of result files (:mod:`compressai_transtic.evaluation.curve_commands`);
- ``models``: released weights present or missing, traditional codecs available;
- ``train``: prompt training, provided by :mod:`compressai_transtic.training.cli`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import _JIT_SCRIPT_WARNING, __version__

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

PROG = "compressai-transtic"
#: subcommands that run the codecs, and so depend on the CPU attention choice (``train``
#: checks it itself, see :func:`compressai_transtic.training.cli.run`)
CODING_COMMANDS = ("demo", "encode", "decode", "bitmap", "eval")


def _quiet_dependency_warnings() -> None:
    # CompressAI 1.2.8 scripts functions with torch.jit.script at import, which recent
    # torch versions deprecate with a FutureWarning on every run.
    warnings.filterwarnings("ignore", message=_JIT_SCRIPT_WARNING, category=FutureWarning)


def _version_line() -> str:
    """``compressai-transtic X (compressai Y, torch Z)``, read from the installed metadata."""

    def installed(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"{PROG} {__version__} (compressai {installed('compressai')}, torch {installed('torch')})"


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: its one-line help, and the module (relative to this package) whose
    ``adder(parser)`` declares its arguments and ``runner(args)`` runs it."""

    help: str
    module: str
    adder: str
    runner: str

    def load(self) -> Tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
        module = importlib.import_module(f"{__package__}.{self.module}")
        return getattr(module, self.adder), getattr(module, self.runner)


#: every subcommand but ``train`` (see :func:`main`), in the order of ``--help``. Only the
#: module of the command given is imported: the report commands (compare, plot, table)
#: and ``--help`` start without importing PyTorch and CompressAI.
SUBCOMMANDS: Dict[str, Subcommand] = {
    "demo": Subcommand(
        "TIC/TransTIC on sample photos, judged by ResNet50", "evaluation.demo", "add_demo_arguments", "run_demo"
    ),
    "encode": Subcommand("code images into .ttic files", "filecodec", "add_encode_arguments", "run_encode"),
    "decode": Subcommand("decode .ttic files into PNG images", "filecodec", "add_decode_arguments", "run_decode"),
    "bitmap": Subcommand(
        "where the bits go: per-position bit maps of codecs side by side",
        "bitmap",
        "add_bitmap_arguments",
        "run_bitmap",
    ),
    "eval": Subcommand(
        "rate-accuracy evaluation (bpp, PSNR, top-1, COCO AP)", "evaluation.cli", "add_eval_arguments", "run_eval"
    ),
    "compare": Subcommand(
        "BD-rate and BD-metric between result files",
        "evaluation.curve_commands",
        "add_compare_arguments",
        "run_compare",
    ),
    "plot": Subcommand(
        "plot rate vs metric of result files (PNG, PDF, SVG)",
        "evaluation.curve_commands",
        "add_plot_arguments",
        "run_plot",
    ),
    "table": Subcommand(
        "cross-model table of result files (Markdown, LaTeX)",
        "evaluation.curve_commands",
        "add_table_arguments",
        "run_table",
    ),
    "models": Subcommand(
        "released weights (present or missing) and traditional codecs", "listing", "add_models_arguments", "run_models"
    ),
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand except ``train`` (see :func:`main`), with
    the arguments of ``command`` alone (the others are listed by name and help): parse
    ``argv`` with ``build_parser(argv[0])``, and run ``args.handler(args)``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="TIC and TransTIC tools: demo, encode, decode, bitmap, eval, compare, plot, table, models, train.",
    )
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, subcommand in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=subcommand.help)
        if name == command:
            # imported here, after main() has silenced CompressAI's warning (interpreters
            # without the start-up hook would print it)
            adder, runner = subcommand.load()
            adder(sub_parser)
            sub_parser.set_defaults(handler=runner)
    sub.add_parser("train", help="train prompts (compressai-transtic train --help)", add_help=False)
    return parser


def _run_train(argv: Sequence[str]) -> int:
    from .training import cli as training_cli  # light: the trainer is imported when a run starts

    parser = argparse.ArgumentParser(prog=f"{PROG} train")
    training_cli.add_arguments(parser)
    return int(training_cli.run(parser.parse_args(list(argv))) or 0)


def _environment_error() -> Optional[str]:
    """What is wrong with this package's environment variables, found before a coding
    command starts rather than at its first image."""
    from .layers import cpu_attention

    try:
        cpu_attention()
    except ValueError as err:
        return str(err)
    return None


def _refused(command: str) -> bool:
    problem = _environment_error() if command in CODING_COMMANDS else None
    if problem:
        print(f"{PROG} {command}: error: {problem}", file=sys.stderr)
    return problem is not None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``compressai-transtic``; returns the exit status."""
    _quiet_dependency_warnings()
    args_list: List[str] = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _run(args_list)
        sys.stdout.flush()  # here, not at exit: a pipe buffers what was written
        return status
    except BrokenPipeError:
        if not _stdout_reader_gone():  # another pipe or socket broke: not ours to hide
            raise
        return _reader_gone()


def _run(args_list: List[str]) -> int:
    if args_list and args_list[0] == "train":
        return _run_train(args_list[1:])
    # the only options before a command (--help, --version) exit, so a command is first
    command = args_list[0] if args_list and args_list[0] in SUBCOMMANDS else None
    args = build_parser(command).parse_args(args_list)
    if _refused(args.command):
        return 2
    return int(args.handler(args))


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (``poll`` reports an error on
    its write end); ``False`` where that cannot be told (no ``poll``, no file descriptor)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False


def _reader_gone() -> int:
    """Stop quietly when the program reading our output has closed it
    (``compressai-transtic models | head -1``), as Unix filters do, instead of a
    traceback; stdout is pointed at ``/dev/null`` so that the interpreter's last flush
    does not fail again. Exit status 1, as Python's documentation advises."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 1


if __name__ == "__main__":
    sys.exit(main())
