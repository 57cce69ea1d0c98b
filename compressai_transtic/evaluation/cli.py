"""Command-line front ends of the evaluator: ``eval``, ``compare`` and ``plot``.

Each subcommand has an ``add_*_arguments(parser)`` and a ``run_*(args) -> int`` pair,
used by :mod:`compressai_transtic.cli`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch

from ..checkpoint import detect_architecture, load_state_dict
from ..data import ClassificationImages, CocoImages, ImageFiles
from ..data.files import check_images
from ..devices import check_device
from ..fileio import OutputError, check_writable_folder
from ..prompts import read_adapter
from ..tasks import Task, available_tasks, get_task_class
from ..tasks.weights import TaskWeightsUnavailableError
from ..zoo import ChecksumMismatchError, WeightsUnavailableError
from .bd import LOW_OVERLAP, bd_metric, bd_rate, overlap_share
from .codecs import ROI_MAP_SOURCES, CodecSpec
from .plot import plot_curves, plot_format
from .records import RecordsLockedError
from .results import atomic_write_text, curve_values, load_curve, write_json
from .runner import Evaluation
from .table import TableFormat, cross_model_table, render
from .traditional import TRADITIONAL_CODECS, CodecFailedError, CodecUnavailableError, check_available

__all__ = [
    "add_compare_arguments",
    "add_eval_arguments",
    "add_plot_arguments",
    "add_table_arguments",
    "run_compare",
    "run_eval",
    "run_plot",
    "run_table",
    "setup_logging",
]

logger = logging.getLogger(__name__)

RANDOM_TAG = "[RANDOM WEIGHTS] "

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


class CommandError(Exception):
    """A user error: the message is printed and the command exits with status 2."""


def setup_logging(verbose: int = 0, random_weights: bool = False) -> None:
    """Log to stderr; every line carries ``[RANDOM WEIGHTS]`` when results are random."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    fmt = ("[RANDOM WEIGHTS] " if random_weights else "") + "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)


def _printer(random_weights: bool) -> Callable[[str], None]:
    def out(line: str = "") -> None:
        for part in str(line).split("\n"):
            print((RANDOM_TAG if random_weights else "") + part, flush=True)

    return out


def _optional_int(text: str) -> Optional[int]:
    value = int(text)
    return None if value <= 0 else value


# ---------------------------------------------------------------------------- eval
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
    data = parser.add_argument_group("dataset")
    data.add_argument("--annotations", type=Path, help="COCO-format annotation file (detection/segmentation)")
    data.add_argument("--labels", type=Path, help="image list 'relative/path LABEL' per line (classification)")
    data.add_argument("--limit", type=int, help="evaluate N images spread evenly over the dataset (quick runs)")
    data.add_argument(
        "--check-images",
        choices=("header", "full", "off"),
        default="header",
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
        "--max-pixels", type=int, default=2**24, help="largest image accepted, width x height (default 2^24 = 16.8 MP)"
    )
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
    proto.add_argument("--crop", type=int, default=256, help="classification: Resize + CenterCrop size (256)")
    proto.add_argument("--short-edge", type=int, default=800, help="COCO: shortest edge of the prepared image (800)")
    proto.add_argument("--max-size", type=_optional_int, default=1333, help="COCO: longest edge bound (1333; 0: none)")
    proto.add_argument(
        "--code-multiple",
        type=_optional_int,
        default=256,
        help="COCO: code at the next multiple of this, then resize back (256; 0: code as is)",
    )
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output-dir", type=Path, default=Path("transtic-eval"), help="output directory")
    run.add_argument("--no-reference", action="store_true", help="skip the uncompressed reference accuracy")
    run.add_argument(
        "--rate-average",
        choices=("image", "total"),
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
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v, -vv)")


def _task_classes(args: argparse.Namespace) -> List[Type[Task]]:
    """The requested task classes, checked against the dataset options."""
    names = args.task or (["det"] if args.annotations else ["cls"])
    classes = []
    for name in names:
        if name not in available_tasks():
            raise CommandError(f"unknown task {name!r}; available: {', '.join(available_tasks())}")
        classes.append(get_task_class(name))
    kinds = {cls.dataset_kind for cls in classes}
    if len(kinds) > 1:
        raise CommandError(f"tasks {', '.join(names)} need different datasets; evaluate them separately")
    kind = kinds.pop()
    need = {
        "coco": "--annotations FILE (COCO format)",
        "classification": "an ImageFolder tree or --labels",
        "images": "a plain image folder (no --annotations, no --labels)",
    }.get(kind, kind)
    if args.annotations:
        given = "coco"
    elif args.labels:
        given = "classification"
    else:  # a folder: an ImageFolder tree or a plain image folder, as the task wants
        given = kind if kind in ("classification", "images") else "classification"
    if kind != given:
        raise CommandError(f"task {names[0]!r} needs {need}")
    return classes


def _load_dataset(args: argparse.Namespace, kind: str) -> Any:
    if args.annotations and args.labels:
        raise CommandError("--annotations (COCO) and --labels (classification) exclude each other")
    if kind == "images":
        return ImageFiles(args.dataset)
    if args.annotations:
        return CocoImages(args.dataset, args.annotations)
    if args.labels:
        return ClassificationImages.from_list(args.dataset, args.labels)
    return ClassificationImages.from_folder(args.dataset)


def _build_tasks(
    args: argparse.Namespace, dataset: Any, classes: Sequence[Type[Task]], random_weights: bool
) -> List[Any]:
    tasks = []
    for cls in classes:
        name = cls.name
        kind = cls.dataset_kind
        if name == "seg" and not dataset.has_masks:
            raise CommandError(f"task 'seg' needs segmentation annotations; {args.annotations} has objects without")
        weights = args.task_weights or ("random" if random_weights else "default")
        options: Dict[str, Any] = {
            "weights": weights,
            "backend": args.backend,
            "device": args.device,
            "progress": not args.no_progress,
            "seed": args.seed,
        }
        if kind == "coco":
            options.update(short_edge=args.short_edge, max_size=args.max_size, code_multiple=args.code_multiple)
        elif kind == "classification":
            options.update(crop=args.crop)
        elif kind == "images":
            options.update(max_pixels=args.max_pixels)
        tasks.append(cls(**options))
    return tasks


def _paired_qualities(args: argparse.Namespace, files: Sequence[Path], what: str) -> List[Optional[int]]:
    if args.quality is None:
        return [None] * len(files)
    if len(args.quality) != len(files):
        raise CommandError(
            f"{len(files)} {what} file(s) but {len(args.quality)} qualit(ies): give one -q per file, in order"
        )
    return list(args.quality)


def _file_label(path: Path) -> str:
    """A curve name from a checkpoint file name (``my_tic.pth.tar`` -> ``my_tic``)."""
    name = path.name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".ckpt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem or name


LEARNED = ("tic", "transtic")


def _parse_codecs(entries: Optional[Sequence[str]]) -> List[Tuple[str, Optional[List[int]]]]:
    """``-a`` entries ``NAME`` or ``NAME:Q1,Q2`` -> ``(name, qualities or None)``."""
    parsed: List[Tuple[str, Optional[List[int]]]] = []
    for entry in entries or []:
        name, sep, rest = entry.partition(":")
        name = name.strip().lower()
        if name not in LEARNED and name not in TRADITIONAL_CODECS:
            raise CommandError(
                f"unknown codec {name!r} in -a; choose from {', '.join(LEARNED + tuple(TRADITIONAL_CODECS))}"
            )
        qualities = None
        if sep:
            try:
                qualities = [int(q) for q in rest.split(",") if q.strip()]
            except ValueError:
                raise CommandError(f"-a {entry}: qualities must be integers separated by commas") from None
            if not qualities:
                raise CommandError(f"-a {entry}: no quality after ':'")
        if any(name == other for other, _ in parsed):
            raise CommandError(f"codec {name!r} given twice in -a")
        parsed.append((name, qualities))
    return parsed


def _traditional_specs(args: argparse.Namespace, entries: Sequence[Tuple[str, Optional[List[int]]]]) -> List[Any]:
    """Rate points of traditional codecs, their programs checked before any coding."""
    raw = {
        "vtm": {"build": args.vtm_build, "config": args.vtm_config},
        "hm": {"build": args.hm_build, "config": args.hm_config},
        "bpg": {"encoder": args.bpg_encoder, "decoder": args.bpg_decoder},
    }
    specs = []
    for name, qualities in entries:
        info = TRADITIONAL_CODECS[name]
        options = tuple(sorted(check_available(name, raw.get(name)).items()))
        for q in qualities or args.quality or list(info.default_qualities):
            info.check_quality(q)
            specs.append(CodecSpec(name, name, q, None, "traditional", options=options))
    return specs


def _build_specs(args: argparse.Namespace, task_names: Sequence[str]) -> List[Any]:
    entries = _parse_codecs(args.architecture)
    traditional = [(n, q) for n, q in entries if n not in LEARNED]
    learned = [(n, q) for n, q in entries if n in LEARNED]
    quality_for_learned = any(q is None for _, q in learned) or bool(args.checkpoint or args.adapter)
    quality_for_traditional = any(q is None for _, q in traditional)
    if args.quality and quality_for_learned and quality_for_traditional:
        raise CommandError(
            "-q would apply to learned and traditional codecs at once; give the traditional ones "
            "their own parameters, e.g. -a tic jpeg:10,30,50,70"
        )
    if traditional and not learned and not (args.checkpoint or args.adapter or args.base_checkpoint):
        return _traditional_specs(args, traditional)
    return _learned_specs(args, learned, task_names) + _traditional_specs(args, traditional)


def _check_model_files(args: argparse.Namespace) -> None:
    """``--checkpoint``, ``--adapter`` and ``--base-checkpoint``: exclusive where they must be, and there."""
    if args.checkpoint and args.adapter:
        raise CommandError("--checkpoint and --adapter exclude each other")
    for option, paths in (
        ("--checkpoint", args.checkpoint),
        ("--adapter", args.adapter),
        ("--base-checkpoint", args.base_checkpoint),
    ):
        missing = [p for p in paths or [] if not p.is_file()]
        if missing:
            raise CommandError(f"{option} {missing[0]}: no such file")


def _checkpoint_specs(args: argparse.Namespace, architectures: Sequence[str]) -> List[Any]:
    arch = architectures[0] if len(architectures) == 1 else None
    if args.roi_map:
        _check_roi_checkpoints(args.checkpoint)
    qualities = _paired_qualities(args, args.checkpoint, "--checkpoint")
    label = args.name or (_file_label(args.checkpoint[0]) if len(args.checkpoint) == 1 else "checkpoint")
    return [
        CodecSpec(label, arch, q, None, "checkpoint", str(p), seed=args.seed, roi_map=args.roi_map)
        for p, q in zip(args.checkpoint, qualities)
    ]


def _check_roi_checkpoints(paths: Sequence[Path]) -> None:
    """``--roi-map`` with checkpoints: every one must hold a tic-roi model (read up front)."""
    for path in paths:
        found = detect_architecture(load_state_dict(path))
        if found != "tic-roi":
            raise CommandError(f"--roi-map is for tic-roi adapters and checkpoints; {path} holds {found}")


def _adapter_specs(args: argparse.Namespace, task_names: Sequence[str]) -> List[Any]:
    if args.quality is None:
        raise CommandError("--adapter needs -q: the quality of the base codec of each adapter, in order")
    _paired_qualities(args, args.adapter, "--adapter")  # one quality per adapter
    qualities = _zoo_qualities(list(args.quality))
    bases = args.base_checkpoint or []
    if bases and len(bases) != len(args.adapter):
        raise CommandError("give one --base-checkpoint per --adapter, in order")
    specs = []
    for i, (path, q) in enumerate(zip(args.adapter, qualities)):
        header = read_adapter(path)
        task = header.get("task")
        if task is None:
            if len(task_names) != 1:
                raise CommandError(f"adapter {path} does not say its task; evaluate one --task at a time")
            task = task_names[0]
        if task not in task_names:
            raise CommandError(f"adapter {path} is for task {task!r}, which is not evaluated (--task)")
        base = str(bases[i]) if bases else None
        specs.append(
            CodecSpec(
                args.name or f"{header['arch']}-adapter",
                header["arch"],
                q,
                task,
                "adapter",
                str(path),
                base_path=base,
                random_base=args.random_weights and not bases,
                seed=args.seed,
                roi_map=args.roi_map if header["arch"] == "tic-roi" else None,
            )
        )
    if args.roi_map and not any(spec.roi_map for spec in specs):
        raise CommandError("--roi-map is for tic-roi adapters and checkpoints; none is evaluated")
    return specs


def _learned_specs(
    args: argparse.Namespace, entries: Sequence[Tuple[str, Optional[List[int]]]], task_names: Sequence[str]
) -> List[Any]:
    source = "random" if args.random_weights else "pretrained"
    architectures = [n for n, _ in entries]
    own = {n: q for n, q in entries if q is not None}
    _check_model_files(args)
    if (args.checkpoint or args.adapter) and own:
        raise CommandError("with --checkpoint/--adapter, give the qualities with -q (one per file), not NAME:Q")
    if args.checkpoint:
        return _checkpoint_specs(args, architectures)
    if args.adapter:
        return _adapter_specs(args, task_names)
    if args.base_checkpoint:
        raise CommandError("--base-checkpoint goes with --adapter")
    specs = []
    for arch in architectures or (["tic"] if "fidelity" in task_names else ["tic", "transtic"]):
        if arch == "transtic" and "fidelity" in task_names:
            raise CommandError(
                "transtic's prompts are trained for a recognition task, not for fidelity: "
                "evaluate PSNR with -a tic (and traditional codecs)"
            )
        for q in _zoo_qualities(own.get(arch) or args.quality or [1, 2, 3, 4]):
            if arch == "tic":
                specs.append(CodecSpec("tic", "tic", q, None, source, seed=args.seed))
            else:
                specs.extend(CodecSpec("transtic", "transtic", q, t, source, seed=args.seed) for t in task_names)
    return specs


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


def _zoo_qualities(qualities: List[int]) -> List[int]:
    """Qualities of zoo models and of adapters' base codecs: 1..4, checked before any work."""
    bad = [q for q in qualities if q not in (1, 2, 3, 4)]
    if bad:
        raise CommandError(f"invalid quality {bad[0]}: the zoo has qualities 1, 2, 3 and 4")
    return list(qualities)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic eval``."""
    random_weights = bool(args.random_weights or args.task_weights == "random")
    setup_logging(args.verbose, random_weights)
    out = _printer(random_weights)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        check_device(args.device)
        check_writable_folder(args.output_dir, "evaluation output")
        if args.max_pixels < 1:
            raise CommandError(f"--max-pixels must be positive, got {args.max_pixels}")
        if args.batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
        classes = _task_classes(args)
        dataset = _load_dataset(args, classes[0].dataset_kind)
        specs = _build_specs(args, [c.name for c in classes])
        items, skipped = _checked_images(dataset.subset(args.limit), args)
        tasks = _build_tasks(args, dataset, classes, random_weights)
        for task in tasks:
            if task.has_network:
                _ = task.network  # load the weights now: missing ones stop the run before any output
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
        if evaluation.random_weights and not random_weights:
            random_weights = True
            setup_logging(args.verbose, True)
            out = _printer(True)
        if random_weights:
            out("RANDOM WEIGHTS: randomly initialised networks; the numbers below test the pipeline and mean nothing")
        curves = evaluation.run()
    except Exception as err:  # noqa: BLE001 - known user errors get a one-line message
        if args.verbose or not _is_user_error(err):
            raise
        _error(err, random_weights)
        return 2
    for task in tasks:
        task_curves = [c for c in curves if c.task is task]
        units = ", ".join(sorted({task.metric_units.get(m, "%") for m in task.metric_names}))
        out(f"{task.name}: {task.title}; {len(items)} images; metrics in {units}")
        if task_curves and task_curves[0].reference:
            out(
                "  uncompressed: "
                + "  ".join(f"{m} {v:.2f}" for m, v in task_curves[0].reference.items() if not math.isnan(v))
            )
        shown = [m for m in task.metric_names if m != "psnr-rgb"][: 3 if task.name != "cls" else None]
        for curve in task_curves:
            out(f" {curve.name}")
            for point in curve.points:
                out(_format_point(point, shown))
            out(f"  -> {evaluation.curve_path(curve)}")
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
    return 0


def _checked_images(items: Any, args: argparse.Namespace) -> Tuple[Any, List[Tuple[Any, str]]]:
    """The images that pass ``--check-images``, and the others with their reasons.

    Raises:
        CommandError: some images fail and ``--skip-bad`` is not given (one line per
            file), or every image fails.
    """
    failures = check_images(
        list(items),
        lambda item: item.problem(args.check_images, args.max_pixels),
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
            if s.source == "pretrained" and s.architecture == "transtic" and s.task in ("det", "seg")
        }
    )
    if tuned and backend != "detectron2":
        logger.warning(
            "the released %s prompts were trained with detectron2's Faster/Mask R-CNN; evaluated with "
            "%s's detectors, the results do not reproduce the paper (use --backend detectron2)",
            "/".join(tuned),
            backend,
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
            ChecksumMismatchError,
            CodecUnavailableError,
            CodecFailedError,
            RecordsLockedError,
        ),
    )


def _error(err: BaseException, random_weights: bool) -> None:
    """Print a one-line error (labelled when results would be random) to stderr."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, (TaskWeightsUnavailableError, WeightsUnavailableError)):
        message += "\n(or run with --random-weights to test the pipeline without any weights)"
    for line in f"error: {message}".split("\n"):
        print((RANDOM_TAG if random_weights else "") + line, file=sys.stderr)


# ---------------------------------------------------------------------------- compare
def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic compare``."""
    parser.description = (
        "Bjontegaard deltas of curves against an anchor: BD-rate (%% rate change at equal "
        "metric; negative = savings) and BD-metric (metric change at equal rate)."
    )
    parser.add_argument("anchor", type=Path, help="anchor curve (JSON results file)")
    parser.add_argument("tests", type=Path, nargs="+", help="curves to compare with the anchor")
    parser.add_argument("--metric", help="metric (default: the anchor's primary metric, else psnr-rgb)")
    parser.add_argument(
        "--method",
        choices=("pchip", "cubic"),
        default="pchip",
        help="interpolation: pchip (piecewise cubic, default) or cubic (polynomial fit, VCEG-M33)",
    )
    parser.add_argument("--json", type=Path, help="also write the deltas to this JSON file")


def run_compare(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic compare``."""
    try:
        if args.json:
            check_writable_folder(args.json.parent, "--json")
        anchor = load_curve(args.anchor)
        tests = [load_curve(p) for p in args.tests]
    except (OSError, ValueError) as err:
        _error(err, False)
        return 2
    random_weights = bool(anchor.get("random_weights")) or any(t.get("random_weights") for t in tests)
    setup_logging(0, random_weights)
    out = _printer(random_weights)
    metric = args.metric or anchor.get("primary_metric") or "psnr-rgb"
    unit = (anchor.get("units") or {}).get(metric, "")
    unit = "percentage points" if unit == "%" else unit
    rows: List[Dict[str, Any]] = []
    failed: List[str] = []
    try:
        ra, ma = curve_values(anchor, "bpp", args.anchor), curve_values(anchor, metric, args.anchor)
        for path, test in zip(args.tests, tests):
            rt, mt = curve_values(test, "bpp", path), curve_values(test, metric, path)
            row: Dict[str, Any] = {
                "anchor": str(args.anchor),
                "test": str(path),
                "metric": metric,
                "method": args.method,
            }
            # BD-rate needs the curves to share metric values, BD-metric rates: report each one that exists
            for key, delta_of, axis in (("bd_rate", bd_rate, "metric"), ("bd_metric", bd_metric, "rate")):
                try:
                    row[key] = delta_of(ra, ma, rt, mt, method=args.method)
                    row[f"{key}_overlap"] = overlap_share(ra, ma, rt, mt, axis)
                except ValueError as err:
                    row[key], row[f"{key}_error"] = None, str(err)
            row["bd_metric_unit"] = unit
            rows.append(row)
            if row["bd_rate"] is None and row["bd_metric"] is None:
                failed.append(f"{path} vs {args.anchor}: {row['bd_rate_error']}")
                continue
            out(
                f"{test.get('name', path)} vs {anchor.get('name', args.anchor)} ({metric}, {args.method}): "
                + _delta_text(row, "bd_rate", "BD-rate", "+.2f", " %")
                + ", "
                + _delta_text(row, "bd_metric", f"BD-{metric}", "+.3f", f" {unit}" if unit else "")
            )
            low = [
                f"{row[key + '_overlap']:.0%} of their {axis} range"
                for key, axis in (("bd_rate", "metric"), ("bd_metric", "log-rate"))
                if row.get(key + "_overlap", 1.0) < LOW_OVERLAP
            ]
            if low:
                logger.warning(
                    "%s and %s share only %s: the delta extrapolates the rest", path, args.anchor, " and ".join(low)
                )
    except ValueError as err:
        _error(err, random_weights)
        return 2
    if args.json:
        try:
            write_json(args.json, {"random_weights": random_weights, "comparisons": rows})
        except OSError as err:  # OutputError: names the file
            _error(err, random_weights)
            return 2
        out(f"wrote {args.json}")
    for message in failed:  # the other curves were compared; these could not be
        _error(ValueError(message), random_weights)
    return 2 if failed else 0


def _delta_text(row: Dict[str, Any], key: str, name: str, fmt: str, unit: str) -> str:
    if row[key] is None:
        return f"{name} n/a ({row[key + '_error']})"
    return f"{name} {format(row[key], fmt)}{unit} (overlap {row[key + '_overlap']:.0%})"


# ---------------------------------------------------------------------------- plot
def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic plot``."""
    parser.description = "Plot rate (bpp) against a metric for several result files (PNG, PDF or SVG)."
    parser.add_argument("files", type=Path, nargs="+", help="curve files (JSON results)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write: .png, .pdf or .svg")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of PNG output (default 150)")
    parser.add_argument("--metric", help="metric (default: the first file's primary metric, else psnr-rgb)")
    parser.add_argument("--title", help="plot title")
    parser.add_argument("--no-reference", action="store_true", help="do not draw the uncompressed reference")
    parser.add_argument(
        "--bd-rate",
        action="store_true",
        help="annotate each curve after the first with its BD-rate against the first one",
    )


def run_plot(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic plot``."""
    random_weights = False
    try:
        plot_format(args.output)  # before reading anything
        check_writable_folder(args.output.parent, "plot")
        curves = [load_curve(p) for p in args.files]
        random_weights = any(c.get("random_weights") for c in curves)
        setup_logging(0, random_weights)
        path = plot_curves(
            curves,
            args.output,
            metric=args.metric,
            title=args.title,
            show_reference=not args.no_reference,
            dpi=args.dpi,
            bd_rate_against_first=args.bd_rate,
        )
    except (OSError, ValueError) as err:
        _error(err, random_weights)
        return 2
    _printer(random_weights)(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------- table
def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic table``."""
    parser.description = (
        "A cross-model table of result files: one row per rate point (rate and metrics with "
        "their units) and each model's BD-rate against the first file."
    )
    parser.add_argument("files", type=Path, nargs="+", help="curve files (JSON results); the first is the anchor")
    parser.add_argument(
        "--metric", nargs="+", help="metric columns (default: the first file's primary metric, then psnr-rgb)"
    )
    parser.add_argument(
        "--format",
        choices=("markdown", "latex"),
        help="syntax (default: from the -o extension .md / .tex, else markdown)",
    )
    parser.add_argument("-o", "--output", type=Path, help="write the table to this file (default: print it)")
    parser.add_argument("--caption", default="", help="table caption")
    parser.add_argument("--no-bd-rate", action="store_true", help="leave out the BD-rate column")


def run_table(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic table``."""
    random_weights = False
    try:
        fmt = TableFormat(args.format) if args.format else None
        if args.output is not None:
            fmt = fmt or TableFormat.from_suffix(args.output.suffix)
            check_writable_folder(args.output.parent, "table")
        curves = [load_curve(p) for p in args.files]
        random_weights = any(c.get("random_weights") for c in curves)
        first = curves[0].get("primary_metric")
        metrics = args.metric or list(dict.fromkeys(m for m in (first, "psnr-rgb") if m))
        text = render(
            cross_model_table(curves, metrics, bd=not args.no_bd_rate),
            fmt or TableFormat.MARKDOWN,
            caption=(("RANDOM WEIGHTS: not meaningful. " if random_weights else "") + args.caption).strip(),
        )
        if args.output is not None:
            atomic_write_text(args.output, text)
    except (OSError, ValueError) as err:
        _error(err, random_weights)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        _printer(random_weights)(f"wrote {args.output}")
    return 0
