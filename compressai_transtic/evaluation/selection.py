"""What an ``eval`` command line asks for, as tasks and codec specifications.

The choices are checked before any image is coded: the tasks against the dataset
options, the codecs (``-a NAME[:Q,...]``), their qualities, and the model files
(``--checkpoint``, ``--adapter``, ``--base-checkpoint``) against one another (adapter
headers and, with ``--roi-map``, checkpoints are read to do so). A bad combination is
a :class:`~compressai_transtic.console.CommandError` that says what to give instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

from ..adapter_files import read_adapter
from ..checkpoint import detect_architecture, load_state_dict
from ..console import CommandError
from ..data import ClassificationImages, CocoImages, ImageFiles
from ..filekinds import regular_file_problem
from ..tasks import PluginError, Task, available_tasks, get_task_class
from ..tasks.base import DatasetKind
from ..tasks.weights import DEFAULT_WEIGHTS
from .codecs import CodecSpec, WeightsSource
from .traditional import TRADITIONAL_CODECS, check_available

__all__ = ["LEARNED", "build_specs", "build_tasks", "dataset_kind", "load_dataset", "task_classes", "zoo_qualities"]

#: the learned codecs of ``-a`` (the zoo's); the others are :mod:`.traditional`'s
LEARNED = ("tic", "transtic")


def task_classes(args: argparse.Namespace) -> List[Type[Task]]:
    """The requested task classes, checked against the dataset options."""
    names = args.task or (["det"] if args.annotations else ["cls"])
    classes = []
    for name in names:
        try:
            classes.append(get_task_class(name))
        except KeyError:
            raise CommandError(f"unknown task {name!r}; available: {', '.join(available_tasks())}") from None
        except PluginError as err:  # a refused or broken plugin: the message names it
            raise CommandError(str(err)) from None
    kinds = {dataset_kind(cls) for cls in classes}
    if len(kinds) > 1:
        raise CommandError(f"tasks {', '.join(names)} need different datasets; evaluate them separately")
    kind = kinds.pop()
    need = {
        DatasetKind.COCO: "--annotations FILE (COCO format)",
        DatasetKind.CLASSIFICATION: "an ImageFolder tree or --labels",
        DatasetKind.IMAGES: "a plain image folder (no --annotations, no --labels)",
    }[kind]
    if args.annotations:
        given = DatasetKind.COCO
    elif args.labels:
        given = DatasetKind.CLASSIFICATION
    else:  # a folder: an ImageFolder tree or a plain image folder, as the task wants
        given = DatasetKind.CLASSIFICATION if kind is DatasetKind.COCO else kind
    if kind is not given:
        raise CommandError(f"task {names[0]!r} needs {need}")
    return classes


def dataset_kind(task: Type[Task]) -> DatasetKind:
    """The :class:`~compressai_transtic.tasks.base.DatasetKind` a task class declares,
    or the error naming the task (a plugin may declare anything)."""
    try:
        return DatasetKind(task.dataset_kind)
    except ValueError:
        raise CommandError(
            f"task {task.name!r} ({task.__module__}.{task.__qualname__}) declares dataset_kind "
            f"{task.dataset_kind!r}; expected one of {', '.join(DatasetKind.values())}"
        ) from None


def load_dataset(args: argparse.Namespace, kind: DatasetKind) -> Any:
    """The dataset of the command line, read as the tasks' ``kind`` wants it."""
    if args.annotations and args.labels:
        raise CommandError("--annotations (COCO) and --labels (classification) exclude each other")
    if kind == DatasetKind.IMAGES:  # a member or its value
        return ImageFiles(args.dataset)
    if args.annotations:
        return CocoImages(args.dataset, args.annotations)
    if args.labels:
        return ClassificationImages.from_list(args.dataset, args.labels)
    return ClassificationImages.from_folder(args.dataset)


def build_tasks(
    args: argparse.Namespace, dataset: Any, classes: Sequence[Type[Task]], random_weights: bool
) -> List[Any]:
    """The task objects, with the protocol options of their dataset kind (their networks
    load when first used)."""
    tasks = []
    for cls in classes:
        name = cls.name
        kind = dataset_kind(cls)
        if name == "seg" and not dataset.has_masks:
            raise CommandError(f"task 'seg' needs segmentation annotations; {args.annotations} has objects without")
        if name == "seg" and dataset.mask_problems:
            shown = "\n  ".join(dataset.mask_problems[:10])
            raise CommandError(
                f"task 'seg' cannot score the masks of {args.annotations}:\n  {shown}\n"
                "fix or remove these annotations, or evaluate --task det (box AP does not read them)"
            )
        weights = args.task_weights or ("random" if random_weights else DEFAULT_WEIGHTS)
        options: Dict[str, Any] = {
            "weights": weights,
            "backend": args.backend,
            "device": args.device,
            "progress": not args.no_progress,
            "seed": args.seed,
        }
        if kind is DatasetKind.COCO:
            options.update(short_edge=args.short_edge, max_size=args.max_size, code_multiple=args.code_multiple)
        elif kind is DatasetKind.CLASSIFICATION:
            options.update(crop=args.crop)
        elif kind is DatasetKind.IMAGES:
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
            specs.append(CodecSpec(name, name, q, None, WeightsSource.TRADITIONAL, options=options))
    return specs


def build_specs(args: argparse.Namespace, task_names: Sequence[str]) -> List[Any]:
    """Every rate point to evaluate (:class:`~.codecs.CodecSpec`): learned codecs from the
    zoo or from files, then traditional codecs."""
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
        for path in paths or []:
            problem = regular_file_problem(path)
            if problem is not None:
                raise CommandError(f"{option} {path}: {problem}")


def _checkpoint_specs(args: argparse.Namespace, architectures: Sequence[str]) -> List[Any]:
    arch = architectures[0] if len(architectures) == 1 else None
    if args.roi_map:
        _check_roi_checkpoints(args.checkpoint)
    qualities = _paired_qualities(args, args.checkpoint, "--checkpoint")
    label = args.name or (_file_label(args.checkpoint[0]) if len(args.checkpoint) == 1 else "checkpoint")
    return [
        CodecSpec(label, arch, q, None, WeightsSource.CHECKPOINT, str(p), seed=args.seed, roi_map=args.roi_map)
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
    qualities = zoo_qualities(list(args.quality))
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
                WeightsSource.ADAPTER,
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
    source = WeightsSource.zoo(args.random_weights)
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
        for q in zoo_qualities(own.get(arch) or args.quality or [1, 2, 3, 4]):
            if arch == "tic":
                specs.append(CodecSpec("tic", "tic", q, None, source, seed=args.seed))
            else:
                specs.extend(CodecSpec("transtic", "transtic", q, t, source, seed=args.seed) for t in task_names)
    return specs


def zoo_qualities(qualities: List[int]) -> List[int]:
    """Qualities of zoo models and of adapters' base codecs: 1..4, checked before any work."""
    bad = [q for q in qualities if q not in (1, 2, 3, 4)]
    if bad:
        raise CommandError(f"invalid quality {bad[0]}: the zoo has qualities 1, 2, 3 and 4")
    return list(qualities)
