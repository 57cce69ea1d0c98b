"""The rate-accuracy evaluator: codecs x qualities x tasks over a dataset.

For every rate point (:class:`~.codecs.CodecSpec`) and every image, the image is
prepared by the task's protocol, coded with real bitstreams, decoded, and given to each
task network; per-image results go to ``records.jsonl`` (so a crashed run continues
where it stopped), then every curve is aggregated into a JSON file per (curve, task),
one CSV table and one PNG plot per task. The uncompressed reference accuracy of each
task is evaluated the same way without coding.

Rates of a curve point are averaged over the images in one of two ways
(:class:`RateAverage`): the mean of per-image bpp (CompressAI's ``eval_model`` and the
authors' evaluation; the default) or total bits over total pixels (MPEG's common test
conditions), which weights large images more. Both come from the same records.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from tqdm import tqdm

from ..imageio import DEFAULT_MAX_PIXELS
from ..models import TICROI
from ..quality_maps import box_map
from ..tasks.base import Task
from .codecs import CodecSpec, code_batch, fingerprint
from .history import curve_identity, remember
from .plot import plot_curves
from .records import REFERENCE_CODEC, RecordStore
from .results import atomic_write_text, write_csv, write_json

__all__ = ["Curve", "Evaluation", "RateAverage", "REFERENCE_KEY", "RANDOM_LABEL"]

logger = logging.getLogger(__name__)

REFERENCE_KEY = REFERENCE_CODEC
RANDOM_LABEL = "RANDOM WEIGHTS"

SKIPPED_FILE = "skipped-images.txt"

#: per-image columns, in CompressAI ``eval_model``'s vocabulary
PER_IMAGE_COLUMNS = (
    "curve",
    "quality",
    "weights",
    "image",
    "bytes",
    "pixels",
    "bpp",
    "bpp-likelihood",
    "psnr-rgb",
    "ms-ssim-rgb",
    "encoding_time",
    "decoding_time",
)


class RateAverage(str, enum.Enum):
    """How the bpp of a curve point averages its images."""

    #: mean of the per-image bpp (CompressAI's eval_model, the authors' evaluation)
    IMAGE = "image"
    #: total bits over total pixels (MPEG common test conditions)
    TOTAL = "total"

    def describe(self) -> str:
        return "bpp = mean of per-image bpp" if self is RateAverage.IMAGE else "bpp = total bits / total pixels"


@dataclass
class Curve:
    """One aggregated curve: a codec label on one task.

    Args:
        name: the codec label.
        task: the task.
        specs: its rate points.
        points: per point, ``quality``, ``bpp``, ``bpp-likelihood``, ``psnr-rgb`` and the
            task metrics (percent).
        reference: task metrics on the uncompressed images (empty if not evaluated).
        num_images: images per point.
        description: human description.
        rate_average: how ``bpp`` averages the images.
    """

    name: str
    task: Task
    specs: List[CodecSpec]
    points: List[Dict[str, Any]] = field(default_factory=list)
    reference: Dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    description: str = ""
    rate_average: RateAverage = RateAverage.IMAGE

    @property
    def random_weights(self) -> bool:
        return self.task.random_weights or any(s.random_weights for s in self.specs)

    def to_json(self) -> Dict[str, Any]:
        """The curve in CompressAI's result format (plus ``task``, ``reference``...)."""
        keys = list(
            dict.fromkeys(
                [
                    "quality",
                    "bpp",
                    "bpp-likelihood",
                    "psnr-rgb",
                    "ms-ssim-rgb",
                    *self.task.metric_names,
                    "encoding_time",
                    "decoding_time",
                ]
            )
        )
        units = {
            "bpp": "bits per pixel",
            "bpp-likelihood": "bits per pixel",
            "psnr-rgb": "dB",
            "ms-ssim-rgb": "1 (fraction)",
            "encoding_time": "s",
            "decoding_time": "s",
        }
        units.update({m: self.task.metric_units.get(m, "%") for m in self.task.metric_names})
        return {
            "name": self.name,
            "description": self.description,
            "task": self.task.name,
            "primary_metric": self.task.primary_metric,
            "metric_names": list(self.task.metric_names),
            "units": units,
            "random_weights": self.random_weights,
            "num_images": self.num_images,
            "rate_average": self.rate_average.value,
            "reference": dict(self.reference),
            "results": {k: [p.get(k) for p in self.points] for k in keys},
        }


def _point_order(spec: CodecSpec, point: Dict[str, Any]) -> Tuple[Any, ...]:
    """Learned codecs by quality level; traditional ones (QPs run backwards) by rate."""
    if spec.traditional:
        return (False, point["bpp"], 0)
    return (point["quality"] is None, point["quality"] or 0, point["bpp"])


def _mean(values: Sequence[Any]) -> float:
    """The mean; NaN when empty or when a value is missing (``None``: e.g. records of earlier versions)."""
    if not values or any(v is None for v in values):
        return math.nan
    return float(sum(values) / len(values))


def _new_folder(parent: Path, name: str) -> Path:
    """Create and return ``parent/name``, or ``name-2``, ``name-3``... when it exists:
    never a folder that holds something already."""
    for n in range(1, 1000):
        folder = parent / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: {name} and 998 folders after it exist; move some of them away")


@dataclass(frozen=True)
class DecodedFeatures:
    """What a channel-selection codec decodes for the network: ``res2`` features of a
    prepared image of ``size``."""

    res2: Tensor
    size: Tuple[int, ...]


class Evaluation:
    """Evaluate codecs on machine tasks over a dataset, resumably.

    Args:
        dataset: the images: a :class:`~compressai_transtic.data.ClassificationImages` or
            :class:`~compressai_transtic.data.CocoImages` (or a ``subset()`` of one).
        tasks: the tasks to evaluate (all must share one coding protocol).
        codecs: the rate points. A point with ``task`` set (TransTIC prompts) is
            evaluated on that task only; others on every task.
        output_dir: where records, JSON, CSV and PNG files go.
        reference: also evaluate the uncompressed images.
        device: where codecs and task networks run.
        progress: show tqdm progress bars (stderr).
        dataset_description: one line naming the dataset (for the JSON description).
        fresh: start afresh: earlier records and rate points of ``output_dir`` are moved
            to ``previous-<time>/`` there (kept, not merged). Without it, curves merge the
            points of earlier runs into the same folder that are complete for this dataset,
            tasks and protocol.
        max_pixels: the largest image read (larger ones are refused when read).
        rate_average: how a point's ``bpp`` averages its images.
        skipped: ``(item, reason)`` of images left out of ``dataset`` by the caller's
            checks; listed in ``skipped-images.txt`` and in the curves' descriptions.
        batch_size: images coded and recognised together when they have one size
            (the classification protocol's crops); each image keeps its own bitstream,
            so the records are those of ``batch_size=1`` (decoded pixels and network
            outputs may differ in float32's last bits: other kernels sum in other orders).
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        tasks: Sequence[Task],
        codecs: Sequence[CodecSpec],
        output_dir: Union[str, Path],
        reference: bool = True,
        device: Union[str, torch.device] = "cpu",
        progress: bool = True,
        dataset_description: str = "",
        fresh: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        rate_average: RateAverage = RateAverage.IMAGE,
        skipped: Sequence[Tuple[Any, str]] = (),
        batch_size: int = 1,
        object_boxes: Optional[Callable[[Any], List[List[float]]]] = None,
    ) -> None:
        if not tasks:
            raise ValueError("no task to evaluate")
        protocols = {t.protocol() for t in tasks}
        if len(protocols) != 1:
            raise ValueError(f"tasks {[t.name for t in tasks]} use different test protocols; evaluate them separately")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task listed twice: {names}")
        for spec in codecs:
            if spec.task is not None and spec.task not in names:
                raise ValueError(f"rate point {spec.describe()} is for task {spec.task!r}, which is not evaluated")
            if spec.roi_map == "saliency" and spec.task is None and len(names) != 1:
                raise ValueError(f"{spec.describe()}: saliency maps need one task; evaluate one --task at a time")
            if spec.roi_map == "boxes" and object_boxes is None:
                raise ValueError(f"{spec.describe()}: box maps need a dataset with object boxes (COCO annotations)")
        self.object_boxes = object_boxes
        self.dataset = dataset
        if not len(self.dataset):
            raise ValueError("the dataset is empty")
        self.tasks = list(tasks)
        self.codecs = list(codecs)
        self.protocol = protocols.pop()
        self.output_dir = Path(output_dir)
        self.reference = reference
        self.device = torch.device(device)
        self.progress = progress
        self.dataset_description = dataset_description or f"{len(self.dataset)} images"
        self.records_path = self.output_dir / "records.jsonl"
        self.history_path = self.output_dir / "codecs.json"
        self.fresh = fresh
        self.max_pixels = int(max_pixels)
        self.rate_average = RateAverage(rate_average)
        self.skipped = list(skipped)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._task_keys: Dict[int, str] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def random_weights(self) -> bool:
        """Whether any codec or task network has random weights."""
        return any(t.random_weights for t in self.tasks) or any(s.random_weights for s in self.codecs)

    def _tag(self) -> str:
        return f"[{RANDOM_LABEL}] " if self.random_weights else ""

    def task_key(self, task: Task) -> str:
        """Fingerprint of a task network and its protocol."""
        key = self._task_keys.get(id(task))
        if key is None:
            key = self._task_keys[id(task)] = fingerprint(
                {
                    "task": task.name,
                    "backend": task.backend,
                    "weights": task.describe_weights(),
                    "seed": task.seed if task.random_weights else None,
                    "protocol": task.protocol().as_dict(),
                }
            )
        return key

    def _prediction_problem(self, task_key: str, prediction: Any) -> Optional[str]:
        """A stored prediction that its task (one of this run's) cannot use; records of
        other tasks are not judged here."""
        task = next((t for t in self.tasks if self.task_key(t) == task_key), None)
        if task is None:
            return None
        problem = task.prediction_problem(prediction)
        return None if problem is None else f"'prediction' of task {task.name!r}: {problem}"

    def codec_key(self, spec: CodecSpec) -> str:
        """Fingerprint of a rate point under this protocol."""
        return fingerprint({"codec": spec.key(), "protocol": self.protocol.as_dict()})

    def tasks_of(self, spec: CodecSpec) -> List[Task]:
        return [t for t in self.tasks if spec.task is None or spec.task == t.name]

    def _prepare(self, item: Any) -> torch.Tensor:
        image = item.load(self.max_pixels)
        try:
            x = self.protocol.prepare(image, self.max_pixels)
        except ValueError as exc:  # the size the protocol would make
            raise ValueError(f"{item.path}: {exc}") from None
        return x[None].to(self.device)

    # ------------------------------------------------------------------ running
    def run(self) -> List[Curve]:
        """Run (or continue) the evaluation and write all outputs; returns the curves."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with RecordStore(self.records_path, self._prediction_problem) as store:
            if self.fresh:
                self._set_aside_earlier_runs(store)
            if len(store):
                logger.info("%sresuming from %s (%d finished records)", self._tag(), self.records_path, len(store))
            earlier = remember(self.history_path, self.codecs)
            self._run_reference(store)
            for spec in self.codecs:
                self._run_codec(spec, store)
            curves = self._aggregate(store, self._merged_specs(store, earlier))
            self._write_outputs(curves, store)  # under the records' lock: one run writes the results at a time
        return curves

    def _set_aside_earlier_runs(self, store: RecordStore) -> None:
        """``--fresh``: move the records and rate points of earlier runs to a folder of
        their own, ``previous-<time>/`` (``-2``, ``-3``... after it when that exists)."""
        earlier = [p for p in (store.path, store.damaged_path, self.history_path) if p.exists()]
        if not earlier:
            return
        folder = _new_folder(self.output_dir, time.strftime("previous-%Y%m%d-%H%M%S", time.gmtime()))
        store.move_to(folder)
        if self.history_path.exists():
            self.history_path.replace(folder / self.history_path.name)
        logger.info("earlier records set aside in %s (--fresh)", folder)

    def _merged_specs(self, store: RecordStore, earlier: Sequence[CodecSpec]) -> List[CodecSpec]:
        """This run's rate points, then earlier runs' that are complete here and fit a curve."""
        merged = list(self.codecs)
        keys = {self.codec_key(s) for s in merged}
        owner = {s.label: s for s in reversed(self.codecs)}  # the spec that sets each curve's identity
        for spec in earlier:
            key, tasks = self.codec_key(spec), self.tasks_of(spec)
            if key in keys or not tasks or self._todo(store, key, tasks):
                continue  # evaluated now, for other tasks, or not on every image of this dataset
            first = owner.setdefault(spec.label, spec)
            if curve_identity(first) != curve_identity(spec):
                logger.warning(
                    "earlier records of %s are not merged into the curve %r of %s",
                    spec.describe(),
                    spec.label,
                    first.describe(),
                )
                continue
            merged.append(spec)
            keys.add(key)
        return merged

    def _todo(self, store: RecordStore, codec_key: str, tasks: Sequence[Task]) -> List[Tuple[Any, List[Task]]]:
        todo = []
        for item in self.dataset:
            missing = [t for t in tasks if store.key(codec_key, self.task_key(t), item.image_id) not in store]
            if missing:
                todo.append((item, missing))
        return todo

    @property
    def reference_tasks(self) -> List[Task]:
        """The tasks whose uncompressed reference is evaluated."""
        return [t for t in self.tasks if t.has_reference] if self.reference else []

    def _batches(self, todo: List[Tuple[Any, List[Task]]]) -> Iterator[List[Tuple[Any, List[Task], torch.Tensor]]]:
        """The items of ``todo`` with their prepared images, in groups of ``batch_size``
        images of one size (the order of ``todo`` is kept)."""
        group: List[Tuple[Any, List[Task], torch.Tensor]] = []
        for item, tasks in todo:
            x = self._prepare(item)
            if group and (len(group) == self.batch_size or group[0][2].shape != x.shape):
                yield group
                group = []
            group.append((item, tasks, x))
        if group:
            yield group

    @staticmethod
    def _predictions(task: Task, images: Sequence[Any], items: Sequence[Any]) -> List[Any]:
        """The task's predictions of equal-size images (or of a channel-selection codec's
        features), batched when there are several."""
        if isinstance(images[0], DecodedFeatures):
            res2 = torch.cat([d.res2 for d in images])
            return task.predict_from_features(res2, images[0].size, items)
        if len(images) == 1:
            return [task.predict(images[0], items[0])]
        return task.predict_batch(torch.cat(list(images)), items)

    def _predict_group(
        self, tasks_per_item: Sequence[List[Task]], images: Sequence[Any], items: Sequence[Any]
    ) -> List[Dict[str, Any]]:
        """Per item, ``{task name: prediction}`` for the tasks it still needs."""
        out: List[Dict[str, Any]] = [{} for _ in items]
        for task in self.tasks:
            chosen = [i for i, tasks in enumerate(tasks_per_item) if task in tasks]
            if chosen:
                predicted = self._predictions(task, [images[i] for i in chosen], [items[i] for i in chosen])
                for i, prediction in zip(chosen, predicted):
                    out[i][task.name] = prediction
        return out

    def _run_reference(self, store: RecordStore) -> None:
        todo = self._todo(store, REFERENCE_KEY, self.reference_tasks)
        if not todo:
            return
        bar = tqdm(total=len(todo), desc=f"{self._tag()}uncompressed reference", disable=not self.progress, unit="img")
        for group in self._batches(todo):
            items, tasks_per_item, images = zip(*group)
            predictions = self._predict_group(tasks_per_item, images, items)
            for item, tasks, predicted in zip(items, tasks_per_item, predictions):
                for task in tasks:
                    store.append(
                        {
                            "codec": REFERENCE_KEY,
                            "task": self.task_key(task),
                            "image": item.image_id,
                            "label": REFERENCE_KEY,
                            "task_name": task.name,
                            "prediction": predicted[task.name],
                        }
                    )
            bar.update(len(group))
        bar.close()

    def _run_codec(self, spec: CodecSpec, store: RecordStore) -> None:
        key = self.codec_key(spec)
        todo = self._todo(store, key, self.tasks_of(spec))
        if not todo:
            logger.info("%s%s: all %d images done", self._tag(), spec.describe(), len(self.dataset))
            return
        logger.info("%s%s: %d images to code", self._tag(), spec.describe(), len(todo))
        model = spec.load(self.device, progress=self.progress)
        if spec.roi_map is not None and not isinstance(model, TICROI):
            raise ValueError(f"{spec.describe()}: quality maps (--roi-map) are for tic-roi codecs, not this one")
        desc = f"{self._tag()}{spec.label}" + (f" q{spec.quality}" if spec.quality is not None else "")
        bar = tqdm(total=len(todo), desc=desc, disable=not self.progress, unit="img")
        for group in self._batches(todo):
            items, tasks_per_item, images = zip(*group)
            maps = self._quality_maps(spec, items, images)
            coded = code_batch(model, torch.cat(images), self.protocol, quality_map=maps)
            decoded = [
                c.x_hat if c.features is None else DecodedFeatures(c.features, c.x_hat.shape[-2:]) for c in coded
            ]
            predictions = self._predict_group(tasks_per_item, decoded, items)
            for item, tasks, result, predicted in zip(items, tasks_per_item, coded, predictions):
                for task in tasks:
                    store.append(
                        {
                            "codec": key,
                            "task": self.task_key(task),
                            "image": item.image_id,
                            "label": spec.label,
                            "quality": spec.quality,
                            "task_name": task.name,
                            "bytes": result.num_bytes,
                            "pixels": result.pixels,
                            "bpp": result.bpp,
                            "bpp_likelihood": result.bpp_likelihood,
                            "psnr": result.psnr,
                            "ms_ssim": result.ms_ssim,
                            "encoding_time": result.encoding_time,
                            "decoding_time": result.decoding_time,
                            "prediction": predicted[task.name],
                        }
                    )
            bar.update(len(group))
        bar.close()
        del model

    def _quality_maps(self, spec: CodecSpec, items: Sequence[Any], images: Sequence[Tensor]) -> Optional[Tensor]:
        """The maps an ROI rate point codes a batch with (``None``: full quality)."""
        if spec.roi_map is None:
            return None
        x = torch.cat(list(images))
        if spec.roi_map == "saliency":
            name = spec.task or self.tasks[0].name
            return next(t for t in self.tasks if t.name == name).saliency(x).cpu()
        assert self.object_boxes is not None
        size = x.shape[-2:]
        return torch.stack([box_map(self.object_boxes(i.image_id), (i.height, i.width), size) for i in items])

    # ------------------------------------------------------------------ aggregation
    def _collect(self, store: RecordStore, codec_key: str, task: Task) -> Dict[str, Dict[str, Any]]:
        tkey = self.task_key(task)
        return {str(item.image_id): store.get(store.key(codec_key, tkey, item.image_id)) for item in self.dataset}

    def _metrics(self, task: Task, records: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
        predictions = {item.image_id: records[str(item.image_id)]["prediction"] for item in self.dataset}
        return task.compute_metrics(predictions, self.dataset)

    def _aggregate(self, store: RecordStore, specs: Sequence[CodecSpec]) -> List[Curve]:
        curves: Dict[Tuple[str, str], Curve] = {}
        for spec in specs:
            for task in self.tasks_of(spec):
                curve = curves.get((spec.label, task.name))
                if curve is None:
                    curve = curves[(spec.label, task.name)] = Curve(
                        spec.label, task, [], num_images=len(self.dataset), rate_average=self.rate_average
                    )
                records = self._collect(store, self.codec_key(spec), task)
                point = self._coding_means(spec, list(records.values()))
                point.update(self._metrics(task, records))
                curve.specs.append(spec)
                curve.points.append(point)
        references = {
            task.name: self._metrics(task, self._collect(store, REFERENCE_KEY, task)) for task in self.reference_tasks
        }
        for curve in curves.values():
            order = sorted(range(len(curve.points)), key=lambda i: _point_order(curve.specs[i], curve.points[i]))
            curve.points = [curve.points[i] for i in order]
            curve.specs = [curve.specs[i] for i in order]
            curve.reference = references.get(curve.task.name, {})
            curve.description = self._describe(curve)
        return list(curves.values())

    def _coding_means(self, spec: CodecSpec, records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """Rate, fidelity and times of one rate point, averaged over its images."""
        if self.rate_average is RateAverage.TOTAL:
            bpp = 8.0 * sum(r["bytes"] for r in records) / sum(r["pixels"] for r in records)
        else:
            bpp = _mean([r["bpp"] for r in records])
        return {
            "quality": spec.quality,
            "bpp": bpp,
            "bpp-likelihood": _mean([r["bpp_likelihood"] for r in records]),
            "psnr-rgb": _mean([r["psnr"] for r in records]),
            "ms-ssim-rgb": _mean([r.get("ms_ssim") for r in records]),
            "encoding_time": _mean([r.get("encoding_time") for r in records]),
            "decoding_time": _mean([r.get("decoding_time") for r in records]),
        }

    def _describe(self, curve: Curve) -> str:
        protocol = self.protocol.as_dict()
        parts = [
            f"{RANDOM_LABEL}: results are not meaningful" if curve.random_weights else "",
            "Rate-accuracy evaluation of " + "; ".join(s.describe() for s in curve.specs),
            f"task {curve.task.name}: {curve.task.title}, network weights: {curve.task.describe_weights()}",
            "protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.items() if v not in (None, "none")),
            f"dataset: {self.dataset_description}",
            (
                f"{len(self.skipped)} unreadable image(s) left out (--skip-bad), listed in {SKIPPED_FILE}"
                if self.skipped
                else ""
            ),
            "bpp from the real bitstream or coded file (bpp-likelihood from forward()), per pixel of the "
            f"prepared image, {self.rate_average.describe()}; "
            + ", ".join(f"{m} in {curve.task.metric_units.get(m, '%')}" for m in curve.task.metric_names),
        ]
        return ". ".join(p for p in parts if p)

    # ------------------------------------------------------------------ outputs
    def curve_path(self, curve: Curve) -> Path:
        """``<output_dir>/<curve name>-<task>.json`` (unsafe characters of the name as ``_``)."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", curve.name)
        return self.output_dir / f"{name}-{curve.task.name}.json"

    def _write_outputs(self, curves: Sequence[Curve], store: RecordStore) -> None:
        for curve in curves:
            write_json(self.curve_path(curve), curve.to_json())
        self._write_table(curves)
        self._write_per_image(curves, store)
        for task in self.tasks:
            self._write_mpeg_table(task, [c for c in curves if c.task is task])
        self._write_plots(curves)
        skipped = self.output_dir / SKIPPED_FILE
        if self.skipped:
            atomic_write_text(skipped, "".join(f"{item.path}\t{reason}\n" for item, reason in self.skipped))
        elif skipped.exists():
            skipped.unlink()  # from an earlier run: this run evaluated every image

    def _write_table(self, curves: Sequence[Curve]) -> None:
        """``results.csv``: one row per curve point and task, the uncompressed references first."""
        columns = [
            "curve",
            "task",
            "quality",
            "weights",
            "random_weights",
            "num_images",
            "bpp",
            "bpp-likelihood",
            "psnr-rgb",
            "ms-ssim-rgb",
        ]
        for task in self.tasks:
            columns += [m for m in task.metric_names if m not in columns]
        columns += ["encoding_time", "decoding_time"]
        rows = []
        for task in self.tasks:
            task_curves = [c for c in curves if c.task is task]
            if task in self.reference_tasks and task_curves:
                ref = task_curves[0].reference
                rows.append(
                    {
                        "curve": "uncompressed",
                        "task": task.name,
                        "weights": "",
                        "random_weights": task.random_weights,
                        "num_images": len(self.dataset),
                        **ref,
                    }
                )
            for curve in task_curves:
                for spec, point in zip(curve.specs, curve.points):
                    rows.append(
                        {
                            "curve": curve.name,
                            "task": task.name,
                            "weights": spec.describe(),
                            "random_weights": curve.random_weights,
                            "num_images": curve.num_images,
                            **point,
                        }
                    )
        write_csv(self.output_dir / "results.csv", rows, columns)

    def _write_per_image(self, curves: Sequence[Curve], store: RecordStore) -> None:
        """``per-image.csv``: bytes, bpp, PSNR, MS-SSIM and times of every coded image."""
        rows, done = [], set()
        for curve in curves:
            for spec in curve.specs:
                key = self.codec_key(spec)
                if key in done:  # a codec without prompts is one set of bitstreams for every task
                    continue
                done.add(key)
                for image_id, r in self._collect(store, key, curve.task).items():
                    rows.append(
                        {
                            "curve": curve.name,
                            "quality": spec.quality,
                            "weights": spec.describe(),
                            "image": image_id,
                            "bytes": r["bytes"],
                            "pixels": r["pixels"],
                            "bpp": r["bpp"],
                            "bpp-likelihood": r["bpp_likelihood"],
                            "psnr-rgb": r["psnr"],
                            "ms-ssim-rgb": r.get("ms_ssim"),
                            "encoding_time": r.get("encoding_time"),
                            "decoding_time": r.get("decoding_time"),
                        }
                    )
        write_csv(self.output_dir / "per-image.csv", rows, PER_IMAGE_COLUMNS)

    def _write_mpeg_table(self, task: Task, curves: Sequence[Curve]) -> None:
        """``<task>-mpeg.csv``: dataset, codec, quality, average bpp and the task's accuracy."""
        if not curves:
            return
        metric = task.primary_metric
        columns = ["dataset", "codec", "quality", "bpp", metric]
        rows = [
            {
                "dataset": self.dataset_description,
                "codec": curve.name,
                "quality": point["quality"],
                "bpp": point["bpp"],
                metric: point.get(metric),
            }
            for curve in curves
            for point in curve.points
        ]
        write_csv(self.output_dir / f"{task.name}-mpeg.csv", rows, columns)

    def _write_plots(self, curves: Sequence[Curve]) -> None:
        """``<task>-<metric>.png`` per task, and ``<task>-psnr-rgb.png`` next to each task plot."""
        for task in self.tasks:
            task_curves = [c.to_json() for c in curves if c.task is task]
            if not task_curves:
                continue
            plot_curves(task_curves, self.plot_path(task))
            if task.primary_metric != "psnr-rgb":
                plot_curves(task_curves, self.plot_path(task, "psnr-rgb"), metric="psnr-rgb", show_reference=False)

    def plot_path(self, task: Task, metric: str = "") -> Path:
        """``<output_dir>/<task>-<metric>.png`` (the task's primary metric by default)."""
        return self.output_dir / f"{task.name}-{metric or task.primary_metric}.png"
