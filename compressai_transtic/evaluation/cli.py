"""Command-line front ends of the evaluator: ``eval``, ``compare`` and ``plot``.

Each subcommand has an ``add_*_arguments(parser)`` and a ``run_*(args) -> int`` pair,
used by :mod:`compressai_transtic.cli`. Heavy imports (torch, pycocotools) happen in
the ``run_*`` functions only, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = [
    "add_compare_arguments",
    "add_eval_arguments",
    "add_plot_arguments",
    "run_compare",
    "run_eval",
    "run_plot",
    "setup_logging",
]

logger = logging.getLogger(__name__)

RANDOM_TAG = "[RANDOM WEIGHTS] "


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
        --task det seg -a tic transtic -q 1 2 3 4 --device cuda -o results/coco
    compressai-transtic compare results/coco/tic-det.json results/coco/transtic-det.json
    compressai-transtic compare results/coco/tic-seg.json results/coco/transtic-seg.json
  add --backend detectron2 for the authors' detectron2 networks; plots: DIR/<task>-<metric>.png
  or compressai-transtic plot A.json B.json -o plot.png
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
        "(CompressAI format), DIR/results.csv, DIR/<task>-<metric>.png. Resumable: "
        "per-image results are kept in DIR/records.jsonl.",
        width=88,
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = REPRODUCE_PAPER
    parser.add_argument("dataset", type=Path, help="image directory: an ImageFolder tree (classification), "
                        "the root of the paths of --labels, or the images of --annotations (COCO)")
    data = parser.add_argument_group("dataset")
    data.add_argument("--annotations", type=Path, help="COCO-format annotation file (detection/segmentation)")
    data.add_argument("--labels", type=Path, help="image list 'relative/path LABEL' per line (classification)")
    data.add_argument("--limit", type=int, help="evaluate N images spread evenly over the dataset (quick runs)")
    codecs = parser.add_argument_group("codecs")
    codecs.add_argument("-a", "--architecture", nargs="+", choices=("tic", "transtic"),
                        help="zoo architectures (default: tic transtic)")
    codecs.add_argument("-q", "--quality", nargs="+", type=int,
                        help="quality levels (default 1 2 3 4); paired in order with --checkpoint/--adapter files")
    codecs.add_argument("--checkpoint", nargs="+", type=Path, help="evaluate these model files (TIC or TransTIC) "
                        "instead of the zoo")
    codecs.add_argument("--adapter", nargs="+", type=Path, help="TransTIC prompt adapters, one per -q quality, "
                        "applied to the released base codec of that quality (or --base-checkpoint)")
    codecs.add_argument("--base-checkpoint", nargs="+", type=Path, help="base codec files for --adapter, one per quality")
    codecs.add_argument("--name", help="curve name for --checkpoint/--adapter (default: derived from the files)")
    codecs.add_argument("--random-weights", action="store_true",
                        help="randomly initialised codecs and task networks (no download; for testing the "
                        "pipeline: every output is labelled RANDOM WEIGHTS)")
    codecs.add_argument("--seed", type=int, default=0, help="seed of random initialisation (default 0)")
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument("--task", nargs="+", help="tasks to evaluate (default: det with --annotations, else cls); "
                       "det and seg can be combined")
    tasks.add_argument("--task-weights", help="recognition network weights: 'default' (torchvision's file from the "
                       "torch hub cache or downloaded), 'random', or a state-dict file")
    tasks.add_argument("--backend", choices=("torchvision", "detectron2"), default="torchvision",
                       help="recognition networks (default torchvision; detectron2 = the authors' setup)")
    proto = parser.add_argument_group("protocol (defaults: the paper's)")
    proto.add_argument("--crop", type=int, default=256, help="classification: Resize + CenterCrop size (256)")
    proto.add_argument("--short-edge", type=int, default=800, help="COCO: shortest edge of the prepared image (800)")
    proto.add_argument("--max-size", type=_optional_int, default=1333, help="COCO: longest edge bound (1333; 0: none)")
    proto.add_argument("--code-multiple", type=_optional_int, default=256,
                       help="COCO: code at the next multiple of this, then resize back (256; 0: code as is)")
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output-dir", type=Path, default=Path("transtic-eval"), help="output directory")
    run.add_argument("--no-reference", action="store_true", help="skip the uncompressed reference accuracy")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v, -vv)")


def _load_dataset(args: argparse.Namespace) -> Any:
    from ..data import ClassificationImages, CocoImages

    if args.annotations and args.labels:
        raise CommandError("--annotations (COCO) and --labels (classification) exclude each other")
    if args.annotations:
        return CocoImages(args.dataset, args.annotations)
    if args.labels:
        return ClassificationImages.from_list(args.dataset, args.labels)
    return ClassificationImages.from_folder(args.dataset)


def _build_tasks(args: argparse.Namespace, dataset: Any, random_weights: bool) -> List[Any]:
    from ..tasks import available_tasks, get_task, get_task_class

    names = args.task or (["det"] if args.annotations else ["cls"])
    kind = "coco" if args.annotations else "classification"
    tasks = []
    for name in names:
        if name not in available_tasks():
            raise CommandError(f"unknown task {name!r}; available: {', '.join(available_tasks())}")
        cls = get_task_class(name)
        if cls.dataset_kind != kind:
            need = "--annotations FILE (COCO format)" if cls.dataset_kind == "coco" else "an ImageFolder tree or --labels"
            raise CommandError(f"task {name!r} needs {need}")
        if name == "seg" and not dataset.has_masks:
            raise CommandError(f"task 'seg' needs segmentation annotations; {args.annotations} has objects without")
        weights = args.task_weights or ("random" if random_weights else "default")
        options: Dict[str, Any] = {"weights": weights, "backend": args.backend, "device": args.device,
                                   "progress": not args.no_progress, "seed": args.seed}
        if kind == "coco":
            options.update(short_edge=args.short_edge, max_size=args.max_size, code_multiple=args.code_multiple)
        else:
            options.update(crop=args.crop)
        tasks.append(get_task(name, **options))
    return tasks


def _paired_qualities(args: argparse.Namespace, files: Sequence[Path], what: str) -> List[Optional[int]]:
    if args.quality is None:
        return [None] * len(files)
    if len(args.quality) != len(files):
        raise CommandError(f"{len(files)} {what} file(s) but {len(args.quality)} qualit(ies): give one -q per file, in order")
    return list(args.quality)


def _file_label(path: Path) -> str:
    """A curve name from a checkpoint file name (``my_tic.pth.tar`` -> ``my_tic``)."""
    name = path.name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".ckpt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem or name


def _build_specs(args: argparse.Namespace, task_names: Sequence[str]) -> List[Any]:
    from .codecs import CodecSpec

    source = "random" if args.random_weights else "pretrained"
    if args.checkpoint and args.adapter:
        raise CommandError("--checkpoint and --adapter exclude each other")
    if args.checkpoint:
        arch = args.architecture[0] if args.architecture and len(args.architecture) == 1 else None
        qualities = _paired_qualities(args, args.checkpoint, "--checkpoint")
        label = args.name or (_file_label(args.checkpoint[0]) if len(args.checkpoint) == 1 else "checkpoint")
        return [CodecSpec(label, arch, q, None, "checkpoint", str(p), seed=args.seed)
                for p, q in zip(args.checkpoint, qualities)]
    if args.adapter:
        from ..prompts import read_adapter

        if args.quality is None:
            raise CommandError("--adapter needs -q: the quality of the base codec of each adapter, in order")
        qualities = _zoo_qualities(_paired_qualities(args, args.adapter, "--adapter"))
        bases = args.base_checkpoint or []
        if bases and len(bases) != len(args.adapter):
            raise CommandError("give one --base-checkpoint per --adapter, in order")
        specs = []
        for i, (path, q) in enumerate(zip(args.adapter, qualities)):
            task = read_adapter(path).get("task")
            if task is None:
                if len(task_names) != 1:
                    raise CommandError(f"adapter {path} does not say its task; evaluate one --task at a time")
                task = task_names[0]
            if task not in task_names:
                raise CommandError(f"adapter {path} is for task {task!r}, which is not evaluated (--task)")
            specs.append(CodecSpec(args.name or "transtic-adapter", "transtic", q, task, "adapter", str(path),
                                   base_path=str(bases[i]) if bases else None,
                                   random_base=args.random_weights and not bases, seed=args.seed))
        return specs
    if args.base_checkpoint:
        raise CommandError("--base-checkpoint goes with --adapter")
    qualities = _zoo_qualities(args.quality or [1, 2, 3, 4])
    specs = []
    for arch in args.architecture or ["tic", "transtic"]:
        for q in qualities:
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
    return (f"{head:<5} bpp {num(point.get('bpp'), '.4f')}  bpp(lik) {num(point.get('bpp-likelihood'), '.4f')}  "
            f"PSNR {num(point.get('psnr-rgb'), '.2f')} dB  " + "  ".join(f"{m} {num(point.get(m), '.2f')}" for m in metrics))


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
        import torch

        from ..devices import check_device
        from .runner import Evaluation

        if args.threads:
            torch.set_num_threads(args.threads)
        check_device(args.device)
        dataset = _load_dataset(args)
        tasks = _build_tasks(args, dataset, random_weights)
        specs = _build_specs(args, [t.name for t in tasks])
        items = dataset.subset(args.limit)
        description = dataset.describe() + (f", {len(items)} evaluated (--limit)" if len(items) < len(dataset) else "")
        evaluation = Evaluation(items, tasks, specs, args.output_dir, reference=not args.no_reference,
                                device=args.device, progress=not args.no_progress, dataset_description=description)
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
        out(f"{task.name}: {task.title}; {len(items)} images; metrics in %")
        if not args.no_reference and task_curves:
            out("  uncompressed: " + "  ".join(f"{m} {v:.2f}" for m, v in task_curves[0].reference.items() if not math.isnan(v)))
        for curve in task_curves:
            out(f" {curve.name}")
            for point in curve.points:
                out(_format_point(point, task.metric_names[:3] if task.name != "cls" else task.metric_names))
            out(f"  -> {evaluation.curve_path(curve)}")
    out(f"table: {args.output_dir / 'results.csv'}; plots: "
        + ", ".join(str(args.output_dir / f"{t.name}-{t.primary_metric}.png") for t in tasks))
    return 0


def _is_user_error(err: BaseException) -> bool:
    """Errors whose message says what to do (missing files, weights, bad arguments)."""
    from ..tasks.weights import TaskWeightsUnavailableError
    from ..zoo import ChecksumMismatchError, WeightsUnavailableError

    return isinstance(err, (CommandError, FileNotFoundError, ValueError, KeyError, ImportError,
                            TaskWeightsUnavailableError, WeightsUnavailableError, ChecksumMismatchError))


def _error(err: BaseException, random_weights: bool) -> None:
    """Print a one-line error (labelled when results would be random) to stderr."""
    from ..tasks.weights import TaskWeightsUnavailableError
    from ..zoo import WeightsUnavailableError

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
    parser.add_argument("--method", choices=("pchip", "cubic"), default="pchip",
                        help="interpolation: pchip (piecewise cubic, default) or cubic (polynomial fit, VCEG-M33)")
    parser.add_argument("--json", type=Path, help="also write the deltas to this JSON file")


def run_compare(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic compare``."""
    from .bd import bd_metric, bd_rate
    from .results import curve_values, load_curve, write_json

    try:
        anchor = load_curve(args.anchor)
        tests = [load_curve(p) for p in args.tests]
    except (OSError, ValueError) as err:
        _error(err, False)
        return 2
    random_weights = bool(anchor.get("random_weights")) or any(t.get("random_weights") for t in tests)
    setup_logging(0, random_weights)
    out = _printer(random_weights)
    metric = args.metric or anchor.get("primary_metric") or "psnr-rgb"
    rows = []
    try:
        ra, ma = curve_values(anchor, "bpp", args.anchor), curve_values(anchor, metric, args.anchor)
        for path, test in zip(args.tests, tests):
            rt, mt = curve_values(test, "bpp", path), curve_values(test, metric, path)
            rate = bd_rate(ra, ma, rt, mt, method=args.method)
            delta = bd_metric(ra, ma, rt, mt, method=args.method)
            rows.append({"anchor": str(args.anchor), "test": str(path), "metric": metric, "method": args.method,
                         "bd_rate": rate, "bd_metric": delta})
            out(f"{test.get('name', path)} vs {anchor.get('name', args.anchor)} ({metric}, {args.method}): "
                f"BD-rate {rate:+.2f} %, BD-{metric} {delta:+.3f}")
    except ValueError as err:
        _error(err, random_weights)
        return 2
    if args.json:
        write_json(args.json, {"random_weights": random_weights, "comparisons": rows})
        out(f"wrote {args.json}")
    return 0


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


def run_plot(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic plot``."""
    from .plot import plot_curves, plot_format
    from .results import load_curve

    random_weights = False
    try:
        plot_format(args.output)  # before reading anything
        curves = [load_curve(p) for p in args.files]
        random_weights = any(c.get("random_weights") for c in curves)
        setup_logging(0, random_weights)
        path = plot_curves(curves, args.output, metric=args.metric, title=args.title,
                           show_reference=not args.no_reference, dpi=args.dpi)
    except (OSError, ValueError) as err:
        _error(err, random_weights)
        return 2
    _printer(random_weights)(f"wrote {path}")
    return 0
