"""The ``compressai-transtic`` command.

Subcommands:

- ``eval``: rate-accuracy evaluation of codecs on ImageNet-style or COCO-format data
  (also ``python -m compressai_transtic.evaluation``);
- ``compare``: BD-rate / BD-metric of result files against an anchor;
- ``plot``: rate vs metric plot (PNG) of result files;
- ``demo``: TIC and TransTIC on bundled sample photos, judged by ResNet50;
- ``encode`` / ``decode``: images to ``.ttic`` files and back (:mod:`compressai_transtic.filecodec`);
- ``bitmap``: per-position bit maps of codecs side by side (:mod:`compressai_transtic.bitmap`);
- ``train``: prompt training, provided by :mod:`compressai_transtic.training.cli`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from importlib import metadata
from typing import List, Optional, Sequence

from . import __version__

__all__ = ["build_parser", "main"]

PROG = "compressai-transtic"
#: subcommands that run the codecs, and so depend on the CPU attention choice (``train``
#: checks it itself, see :func:`compressai_transtic.training.cli.run`)
CODING_COMMANDS = ("demo", "encode", "decode", "bitmap", "eval")


def _quiet_dependency_warnings() -> None:
    # CompressAI 1.2.8 scripts functions with torch.jit.script at import, which recent
    # torch versions deprecate with a FutureWarning on every run.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)


def _version_line() -> str:
    """``compressai-transtic X (compressai Y, torch Z)``, read from the installed metadata."""

    def installed(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"{PROG} {__version__} (compressai {installed('compressai')}, torch {installed('torch')})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand except ``train`` (see :func:`main`)."""
    # the subcommands' modules import CompressAI: here, after main() has silenced its warning
    # (interpreters without the start-up hook would print it), not at the top
    from .bitmap import add_bitmap_arguments
    from .evaluation.cli import add_eval_arguments
    from .evaluation.curve_commands import add_compare_arguments, add_plot_arguments, add_table_arguments
    from .evaluation.demo import add_demo_arguments
    from .filecodec import add_decode_arguments, add_encode_arguments
    from .listing import add_models_arguments

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="TIC and TransTIC tools: demo, encode, decode, bitmap, eval, compare, plot, models, train.",
    )
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_demo_arguments(sub.add_parser("demo", help="TIC/TransTIC on sample photos, judged by ResNet50"))
    add_encode_arguments(sub.add_parser("encode", help="code images into .ttic files"))
    add_decode_arguments(sub.add_parser("decode", help="decode .ttic files into PNG images"))
    add_bitmap_arguments(
        sub.add_parser("bitmap", help="where the bits go: per-position bit maps of codecs side by side")
    )
    add_eval_arguments(sub.add_parser("eval", help="rate-accuracy evaluation (bpp, PSNR, top-1, COCO AP)"))
    add_compare_arguments(sub.add_parser("compare", help="BD-rate and BD-metric between result files"))
    add_plot_arguments(sub.add_parser("plot", help="plot rate vs metric of result files (PNG, PDF, SVG)"))
    add_table_arguments(sub.add_parser("table", help="cross-model table of result files (Markdown, LaTeX)"))
    add_models_arguments(sub.add_parser("models", help="released weights (present or missing) and traditional codecs"))
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
    if args_list and args_list[0] == "train":
        return _run_train(args_list[1:])
    args = build_parser().parse_args(args_list)  # the modules imported below are loaded by now
    if _refused(args.command):
        return 2
    if args.command == "eval":
        from .evaluation.cli import run_eval

        return run_eval(args)
    if args.command == "bitmap":
        from .bitmap import run_bitmap

        return run_bitmap(args)
    if args.command in ("encode", "decode"):
        from .filecodec import run_decode, run_encode

        return (run_encode if args.command == "encode" else run_decode)(args)
    if args.command == "compare":
        from .evaluation.curve_commands import run_compare

        return run_compare(args)
    if args.command == "models":
        from .listing import run_models

        return run_models(args)
    if args.command == "plot":
        from .evaluation.curve_commands import run_plot

        return run_plot(args)
    if args.command == "table":
        from .evaluation.curve_commands import run_table

        return run_table(args)
    from .evaluation.demo import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
