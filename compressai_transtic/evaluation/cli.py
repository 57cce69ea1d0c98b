"""The ``eval`` command: rate-accuracy evaluation from the command line.

:func:`add_eval_arguments` and :func:`run_eval` are used by :mod:`compressai_transtic.cli`.
What the arguments ask for is turned into tasks and codec specifications by
:mod:`.selection` (checked before any work), run by :class:`~.runner.Evaluation`, and
reported here. The commands on result files are in :mod:`.curve_commands`.
"""

from __future__ import annotations

import argparse
import logging
import math
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import zoo
from ..console import CommandError, print_error, printer, setup_logging
from ..data.files import check_images
from ..devices import check_device
from ..download import WeightsToFetchError
from ..fileio import OutputError, check_writable_folder
from ..filekinds import ImageCheck
from ..tasks.base import DatasetKind
from ..tasks.weights import TaskWeightsUnavailableError
from ..zoo import ChecksumMismatchError, WeightsUnavailableError
from .codecs import ROI_MAP_SOURCES, WeightsSource
from .curves import RateAverage
from .records import RecordsLockedError
from .results import unit_words
from .runner import Evaluation
from .selection import build_specs, build_tasks, dataset_kind, load_dataset, task_classes
from .traditional import TRADITIONAL_CODECS, CodecFailedError, CodecUnavailableError

__all__ = ["add_eval_arguments", "run_eval"]

logger = logging.getLogger(__name__)

#: the codecs of :mod:`.traditional`
TRADITIONAL_NAMES = tuple(TRADITIONAL_CODECS)


#: how to reproduce the paper's rate-accuracy curves with the released weights
REPRODUCE_PAPER = """\
reproducing the paper's curves (released weights, downloaded on first use):
  ImageNet val (class folders n01440764/ ... in sorted order, 50,000 images):
    compressai-transtic eval /data/imagenet/val --task cls -a tic transtic -q 1 2 3 4 \\
        --device cuda -o results/imagenet
    compressai-transtic compare results/imagenet/tic-cls.json results/imagenet/transtic-cls.json
  COCO val2017 (5,000 images; box AP with Faster R-CNN, mask AP with Mask R-CNN):
    compressai-transtic eval /data/coco/val2017 \\
        --annotations /data/coco/annotations/instances_val2017.json \\
        --task det seg -a tic transtic -q 1 2 3 4 --backend detectron2 --device cuda -o results/coco
    compressai-transtic compare results/coco/tic-det.json results/coco/transtic-det.json
    compressai-transtic compare results/coco/tic-seg.json results/coco/transtic-seg.json
  the released det/seg prompts were trained with detectron2's networks: only --backend detectron2
  reproduces the paper (torchvision's detectors run without it, with a warning); plots: DIR/<task>-<metric>.png
  or compressai-transtic plot A.json B.json -o plot.png
the paper's Fig. A5: VVC (VTM 16.0, built from its sources; cfg/ is found above the build folder):
  (a) compressai-transtic eval /data/kodak --task fidelity -a tic vtm --vtm-build VTM/bin -o results/kodak
  (b) compressai-transtic eval /data/imagenet/val --task cls -a tic transtic vtm --vtm-build VTM/bin \\
          --device cuda -o results/imagenet
  (c, d) compressai-transtic eval /data/coco/val2017 --annotations FILE --task det seg \\
          -a tic transtic vtm --vtm-build VTM/bin --device cuda -o results/coco
      compressai-transtic compare results/coco/vtm-det.json results/coco/transtic-det.json
  without -q each codec uses its default list; NAME:Q1,Q2 sets one codec's list
traditional codecs and their quality parameter (default list):
  jpeg, webp, avif   Pillow quality 0..100 (jpeg 5 10 20 40 70; webp 5 15 30 50 75; avif 20 35 50 65 80)
  jpeg2000           ffmpeg -compression_level, ratio 2 x level (10 20 40 80 160); needs ffmpeg
  bpg                QP 0..51 (27 32 37 42 47); needs bpgenc and bpgdec
  hm, vtm            QP 0..51 / 0..63 (22 27 32 37 42); need --hm-build / --vtm-build
"""


def _optional_int(text: str) -> Optional[int]:
    value = int(text)
    return None if value <= 0 else value


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic eval``."""
    parser.description = textwrap.fill(
        "Rate-accuracy evaluation: code every image with each codec and quality (real "
        "bitstreams), decode, and measure bpp, PSNR and the task metric (top-1/top-5 or COCO "
        "AP) plus the uncompressed reference. Results: DIR/<curve>-<task>.json "
        "(CompressAI format), DIR/results.csv, DIR/per-image.csv (bytes, bpp, PSNR, MS-SSIM, "
        "encoding and decoding time of every image, as eval_model names them), "
        "DIR/<task>-mpeg.csv (dataset, codec, quality, bpp, accuracy), DIR/<task>-<metric>.png "
        "and DIR/<task>-psnr-rgb.png. Every image is checked before any model is built. "
        "Resumable: per-image results are kept in DIR/records.jsonl.",
        width=88,
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = REPRODUCE_PAPER
    parser.add_argument(
        "dataset",
        type=Path,
        help="image directory: an ImageFolder tree (classification), "
        "the root of the paths of --labels, or the images of --annotations (COCO)",
    )
    for add_group in (_dataset_arguments, _codec_arguments, _traditional_arguments, _task_arguments, _run_arguments):
        add_group(parser)


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Which images, and how they are checked."""
    data = parser.add_argument_group("dataset")
    data.add_argument("--annotations", type=Path, help="COCO-format annotation file (detection/segmentation)")
    data.add_argument("--labels", type=Path, help="image list 'relative/path LABEL' per line (classification)")
    data.add_argument("--limit", type=int, help="evaluate N images spread evenly over the dataset (quick runs)")
    data.add_argument(
        "--check-images",
        choices=ImageCheck.values(),
        default=ImageCheck.HEADER.value,
        help="check every image before any model is built: header (open, size, structure; default), "
        "full (decode every image) or off",
    )
    data.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out images that fail the check (each one is "
        "reported, listed in DIR/skipped-images.txt and counted in the results' description) instead "
        "of stopping",
    )
    data.add_argument(
        "--max-pixels",
        type=int,
        default=2**24,
        help=(
            "largest image accepted, in pixels: width x height as read and as resized by the protocol, and "
            "padded to multiples of 64 as coded, as encode counts (default 2^24 = 16.8 MP)"
        ),
    )


def _codec_arguments(parser: argparse.ArgumentParser) -> None:
    """The codecs and qualities: the zoo's, model files, adapters."""
    codecs = parser.add_argument_group("codecs")
    codecs.add_argument(
        "-a",
        "--architecture",
        nargs="+",
        metavar="CODEC[:Q,Q...]",
        help="codecs: tic, transtic (the zoo; default: tic transtic) and traditional codecs "
        f"({', '.join(TRADITIONAL_NAMES)}); NAME:Q1,Q2 gives a codec its own quality list",
    )
    codecs.add_argument(
        "-q",
        "--quality",
        nargs="+",
        type=int,
        help="quality levels of the codecs without their own list (zoo: 1 2 3 4 by default; "
        "traditional codecs: their own parameter, see below); paired in order with "
        "--checkpoint/--adapter files",
    )
    codecs.add_argument(
        "--checkpoint", nargs="+", type=Path, help="evaluate these model files (TIC or TransTIC) instead of the zoo"
    )
    codecs.add_argument(
        "--adapter",
        nargs="+",
        type=Path,
        help="adapters written by `train` (TransTIC prompts or a baseline's layers), one per -q quality, "
        "applied to the released base codec of that quality (or --base-checkpoint)",
    )
    codecs.add_argument(
        "--base-checkpoint", nargs="+", type=Path, help="base codec files for --adapter, one per quality"
    )
    codecs.add_argument(
        "--roi-map",
        choices=ROI_MAP_SOURCES,
        help="for tic-roi adapters and checkpoints: the quality map each image is coded with: the task network's "
        "saliency, or the annotated object boxes (COCO); default: full quality everywhere",
    )
    codecs.add_argument("--name", help="curve name for --checkpoint/--adapter (default: derived from the files)")
    codecs.add_argument(
        "--random-weights",
        action="store_true",
        help="randomly initialised codecs and task networks (no download; for testing the "
        "pipeline: every output is labelled RANDOM WEIGHTS)",
    )
    codecs.add_argument("--seed", type=int, default=0, help="seed of random initialisation (default 0)")


def _traditional_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the traditional codecs' programs are."""
    anchors = parser.add_argument_group("traditional codecs (CompressAI's bench classes; rate = coded file size)")
    anchors.add_argument("--vtm-build", type=Path, help="VTM build folder (EncoderAppStatic, DecoderAppStatic)")
    anchors.add_argument(
        "--vtm-config",
        type=Path,
        help="VTM configuration (default: cfg/encoder_intra_vtm.cfg found above the build folder)",
    )
    anchors.add_argument("--hm-build", type=Path, help="HM build folder (TAppEncoderStatic, TAppDecoderStatic)")
    anchors.add_argument(
        "--hm-config",
        type=Path,
        help="HM configuration (default: cfg/encoder_intra_main_rext.cfg found above the build folder)",
    )
    anchors.add_argument("--bpg-encoder", default="bpgenc", help="bpgenc program (default: on PATH)")
    anchors.add_argument("--bpg-decoder", default="bpgdec", help="bpgdec program (default: on PATH)")


def _task_arguments(parser: argparse.ArgumentParser) -> None:
    """The tasks, their networks and the paper's protocols."""
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument(
        "--task",
        nargs="+",
        help="tasks to evaluate (default: det with --annotations, else cls); "
        "det and seg can be combined; fidelity: PSNR / MS-SSIM on a plain image folder (Kodak)",
    )
    tasks.add_argument(
        "--task-weights",
        help="recognition network weights: 'default' (torchvision's file from the "
        "torch hub cache or downloaded), 'random', or a state-dict file",
    )
    tasks.add_argument(
        "--backend",
        choices=("torchvision", "detectron2"),
        default="torchvision",
        help="recognition networks (default torchvision; detectron2 = the authors' setup, the one that "
        "reproduces the paper's det/seg curves with the released prompts)",
    )
    proto = parser.add_argument_group("protocol (defaults: the paper's)")
    proto.add_argument("--crop", type=int, default=256, help="classification: Resize + CenterCrop size (default 256)")
    proto.add_argument(
        "--short-edge", type=int, default=800, help="COCO: shortest edge of the prepared image (default 800)"
    )
    proto.add_argument(
        "--max-size", type=_optional_int, default=1333, help="COCO: longest edge bound (default 1333; 0: none)"
    )
    proto.add_argument(
        "--code-multiple",
        type=_optional_int,
        default=256,
        help="COCO: code at the next multiple of this, then resize back (default 256; 0: code as is)",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    """Output, resuming, device and logging."""
    run = parser.add_argument_group("run")
    run.add_argument(
        "-o", "--output-dir", type=Path, default=Path("transtic-eval"), help="output directory (default transtic-eval)"
    )
    run.add_argument("--no-reference", action="store_true", help="skip the uncompressed reference accuracy")
    run.add_argument(
        "--rate-average",
        choices=RateAverage.values(),
        default="image",
        help="bpp of a point: mean of per-image bpp (image: CompressAI's eval_model and the paper; "
        "default) or total bits / total pixels (total: MPEG's common test conditions)",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start afresh: move earlier records of DIR to "
        "DIR/previous-<time>/ (by default curves merge the points of earlier runs into DIR)",
    )
    run.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="code and recognise up to N images of one size "
        "together (the classification crops; default 1). Every image keeps its own bitstream: "
        "the records are those of batch size 1",
    )
    run.add_argument(
        "--device", default="cpu", help="where codecs and task networks run: cpu, cuda, cuda:1 ... (default cpu)"
    )
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v, -vv)")


def run_eval(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic eval``."""
    random_weights = bool(args.random_weights or args.task_weights == "random")
    setup_logging(args.verbose, random_weights)
    try:
        evaluation = _prepare(args, random_weights)
        if evaluation.random_weights and not random_weights:  # no released weights at hand
            random_weights = True
            setup_logging(args.verbose, True)
        if random_weights:
            printer(True)(_random_weights_line(evaluation))
        curves = evaluation.run()
    except Exception as err:  # noqa: BLE001 - known user errors get a one-line message
        if args.verbose or not _is_user_error(err):
            raise
        return _error(err, random_weights)
    _report(args, evaluation, curves, printer(random_weights))
    return 0


def _prepare(args: argparse.Namespace, random_weights: bool) -> Evaluation:
    """Everything checked and loaded before the first image is coded: options, dataset,
    codecs, every image (``--check-images``), the task networks' weights."""
    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(args.device)
    check_writable_folder(args.output_dir, "evaluation output")
    if args.max_pixels < 1:
        raise CommandError(f"--max-pixels must be positive, got {args.max_pixels}")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    classes = task_classes(args)
    kind = dataset_kind(classes[0])
    _check_protocol_options(args, kind)
    dataset = load_dataset(args, kind)
    specs = build_specs(args, [c.name for c in classes])
    tasks = build_tasks(args, dataset, classes, random_weights)
    items, skipped = _checked_images(dataset.subset(args.limit), args, tasks[0].protocol())
    _warn_if_not_the_papers_detectors(specs, args.backend)
    evaluated = len(items) + len(skipped)
    description = (
        dataset.describe()
        + (f", {evaluated} evaluated (--limit)" if evaluated < len(dataset) else "")
        + (f", {len(skipped)} unreadable left out (--skip-bad)" if skipped else "")
    )
    evaluation = Evaluation(
        items,
        tasks,
        specs,
        args.output_dir,
        reference=not args.no_reference,
        device=args.device,
        progress=not args.no_progress,
        dataset_description=description,
        fresh=args.fresh,
        max_pixels=args.max_pixels,
        rate_average=args.rate_average,
        skipped=skipped,
        batch_size=args.batch_size,
        object_boxes=getattr(dataset, "boxes", None),
    )
    # the weights of the rate points with work left, and the task networks, before any output
    zoo.fetch_all(
        (w for spec in evaluation.pending_codecs() for w in spec.released_weights()), tasks, evaluation.progress
    )
    return evaluation


def _random_weights_line(evaluation: Evaluation) -> str:
    """What is randomly initialised in this run (printed tagged, before the run)."""
    codecs = list(dict.fromkeys(s.label for s in evaluation.codecs if s.random_weights))
    networks = [t.name for t in evaluation.tasks if t.random_weights]
    parts = ([f"codec{'s' if len(codecs) > 1 else ''} {', '.join(codecs)}"] if codecs else []) + (
        [f"the task network of {', '.join(networks)}"] if networks else []
    )
    return (
        f"randomly initialised: {' and '.join(parts) or 'some networks'}; the numbers that depend on them test "
        "the pipeline and mean nothing (each curve says which of its numbers do)"
    )


def _metric_units(task: Any) -> str:
    """``top1, top5 in %`` or ``psnr-rgb in dB, ms-ssim-rgb unitless``: the task's metrics by unit."""
    groups: Dict[str, List[str]] = {}
    for metric in task.metric_names:
        groups.setdefault(task.metric_units.get(metric, "%"), []).append(metric)
    return ", ".join(f"{', '.join(metrics)} {unit_words(unit)}" for unit, metrics in groups.items())


def _report(
    args: argparse.Namespace, evaluation: Evaluation, curves: Sequence[Any], out: Callable[[str], None]
) -> None:
    """Each task's curves, point by point, and where the files went. The lines of a curve
    are tagged when the numbers on them come from random weights (its codec's, or the task
    network's for the task metrics), and say which; the other lines as ``out`` tags them."""
    tasks, skipped = evaluation.tasks, evaluation.skipped
    if evaluation.set_aside is not None:
        out(f"earlier results moved to {evaluation.set_aside} (--fresh)")
    for task in tasks:
        task_curves = [c for c in curves if c.task is task]
        images = len(evaluation.dataset)
        out(f"{task.name}: {task.title}; {images} image{'s' if images != 1 else ''}; {_metric_units(task)}")
        if task_curves and task_curves[0].reference:
            printer(task.random_weights)(
                "  uncompressed: "
                + "  ".join(f"{m} {v:.2f}" for m, v in task_curves[0].reference.items() if not math.isnan(v))
                + (" (random task network)" if task.random_weights else "")
            )
        if evaluation.without_ms_ssim and "ms-ssim-rgb" in task.metric_names:
            out(f"  {evaluation.ms_ssim_note()}")
        shown = [m for m in task.metric_names if m != "psnr-rgb"][: 3 if task.name != "cls" else None]
        for curve in task_curves:
            random = curve.random_parts(["bpp", "psnr-rgb", *shown])
            say = printer(bool(random))
            say(f" {curve.name}" + (f" (random weights: {', '.join(random)})" if random else ""))
            for point in curve.points:
                say(_format_point(point, shown))
            say(f"  -> {evaluation.curve_path(curve)}")
    out(
        f"tables: {args.output_dir / 'results.csv'}, {args.output_dir / 'per-image.csv'}, "
        + ", ".join(str(args.output_dir / f"{t.name}-mpeg.csv") for t in tasks)
    )
    out(
        "plots: "
        + ", ".join(
            str(evaluation.plot_path(t, m)) for t in tasks for m in dict.fromkeys([t.primary_metric, "psnr-rgb"])
        )
    )
    if skipped:
        out(f"{len(skipped)} unreadable image(s) left out: {args.output_dir / 'skipped-images.txt'}")


def _check_protocol_options(args: argparse.Namespace, kind: DatasetKind) -> None:
    """The sizes of the protocol of ``kind``: positive, and no image of the
    smallest size they make (their square) above ``--max-pixels``; each image is checked
    against the limit too, with what the protocol makes of its size. ``None`` is an
    option turned off (``--code-multiple 0``)."""
    sizes = {
        DatasetKind.CLASSIFICATION: {"--crop": args.crop},
        DatasetKind.COCO: {"--short-edge": args.short_edge, "--code-multiple": args.code_multiple},
    }.get(kind, {})
    for option, value in sizes.items():
        if value is not None and value < 1:
            raise CommandError(f"{option} must be positive, got {value}")
        if value is not None and value * value > args.max_pixels:
            raise CommandError(
                f"{option} {value} makes images of {value * value} pixels or more, above --max-pixels "
                f"{args.max_pixels}; choose a smaller size or raise --max-pixels"
            )


def _checked_images(items: Any, args: argparse.Namespace, protocol: Any) -> Tuple[Any, List[Tuple[Any, str]]]:
    """The images that pass ``--check-images`` and whose prepared and coded sizes (under
    ``protocol``) stay within ``--max-pixels``, and the others with their reasons.

    Raises:
        CommandError: some images fail and ``--skip-bad`` is not given (one line per
            file), or every image fails.
    """
    failures = check_images(
        list(items),
        lambda item: item.problem(
            args.check_images, args.max_pixels, lambda w, h: protocol.size_problem(h, w, args.max_pixels)
        ),
        progress=not args.no_progress and len(items) > 1000,
    )
    if not failures:
        return items, []
    lines = "\n".join(f"  {item.path}: {reason}" for item, reason in failures)
    if len(failures) == len(items):
        raise CommandError(f"none of the {len(items)} images can be evaluated:\n{lines}")
    if not args.skip_bad:
        raise CommandError(
            f"{len(failures)} of {len(items)} images cannot be evaluated:\n{lines}\n"
            "remove or replace them, or pass --skip-bad to evaluate the others"
        )
    for item, reason in failures:
        logger.warning("left out (--skip-bad): %s: %s", item.path, reason)
    return items.without([item for item, _ in failures]), failures


def _warn_if_not_the_papers_detectors(specs: Sequence[Any], backend: str) -> None:
    """Released det/seg prompts were tuned for detectron2's networks: say so under another backend."""
    tuned = sorted(
        {
            s.task
            for s in specs
            if s.source is WeightsSource.PRETRAINED and s.architecture == "transtic" and s.task in ("det", "seg")
        }
    )
    if tuned and backend != "detectron2":
        logger.warning(
            "the released %s prompts were trained with detectron2's Faster/Mask R-CNN; evaluated with "
            "%s's detectors, the results do not reproduce the paper (use --backend detectron2)",
            "/".join(tuned),
            backend,
        )


def _format_point(point: Dict[str, Any], metrics: Sequence[str]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    q = point.get("quality")
    head = f"  q{q}" if q is not None else "  - "
    return (
        f"{head:<5} bpp {num(point.get('bpp'), '.4f')}  bpp(lik) {num(point.get('bpp-likelihood'), '.4f')}  "
        f"PSNR {num(point.get('psnr-rgb'), '.2f')} dB  "
        + "  ".join(f"{m} {num(point.get(m), '.4f' if 'ssim' in m else '.2f')}" for m in metrics)
    )


def _is_user_error(err: BaseException) -> bool:
    """Errors whose message says what to do (missing files, weights, bad arguments)."""
    return isinstance(
        err,
        (
            CommandError,
            FileNotFoundError,
            ValueError,
            KeyError,
            ImportError,
            OutputError,
            TaskWeightsUnavailableError,
            WeightsUnavailableError,
            WeightsToFetchError,
            ChecksumMismatchError,
            CodecUnavailableError,
            CodecFailedError,
            RecordsLockedError,
        ),
    )


def _error(err: BaseException, random_weights: bool) -> int:
    """Print a one-line error (labelled when results would be random) to stderr."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, (TaskWeightsUnavailableError, WeightsUnavailableError, WeightsToFetchError)):
        message += "\n(or run with --random-weights to test the pipeline without any weights)"
    return print_error(message, random_weights)
