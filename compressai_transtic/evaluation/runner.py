"""The rate-accuracy evaluator: codecs x qualities x tasks over a dataset.

For every rate point (:class:`~.codecs.CodecSpec`) and every image, the image is
prepared by the task's protocol, coded with real bitstreams, decoded, and given to each
task network; per-image results go to ``records.jsonl`` (so a crashed run continues
where it stopped), then every curve is aggregated into a JSON file per (curve, task),
one CSV table and one PNG plot per task. The uncompressed reference accuracy of each
task is evaluated the same way without coding.

Curves and their rate averages are in :mod:`.curves`, the output files in :mod:`.outputs`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from tqdm import tqdm

from ..imageio import DEFAULT_MAX_PIXELS, open_image
from ..metrics import MS_SSIM_MIN_SIDE, ms_ssim_size_problem
from ..models import TICROI
from ..protocol import CodingProtocol
from ..quality_maps import box_map
from ..strenum import parse_choice
from ..tasks.base import Task
from . import outputs
from .codecs import CodecSpec, QualityMapSource, code_batch, fingerprint
from .curves import Curve, RateAverage, coding_means
from .history import curve_identity, remember
from .outputs import SKIPPED_FILE
from .records import REFERENCE_CODEC, RecordStore, stored_keys
from .results import CODING_METRICS, RANDOM_LABEL, unit_words, write_json

__all__ = ["Curve", "Evaluation", "RateAverage", "RANDOM_LABEL"]

logger = logging.getLogger(__name__)

#: the images without MS-SSIM named one by one; the others are counted
_NAMED_IMAGES = 10


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


def _random_note(curve: Curve) -> str:
    """What the curve's random weights make meaningless, for its description."""
    if curve.random_codec:
        parts = ", ".join(curve.random_parts(curve.task.metric_names or ["bpp"]))
        return f"{RANDOM_LABEL} ({parts}): results are not meaningful"
    if curve.random_task_network:
        task_metrics = ", ".join(m for m in curve.task.metric_names if m not in CODING_METRICS)
        return (
            f"{RANDOM_LABEL} (task network): {task_metrics} and the uncompressed reference are not meaningful; "
            "bpp, PSNR and MS-SSIM do not depend on the task network"
        )
    return ""


@dataclass(frozen=True)
class DecodedFeatures:
    """What a channel-selection codec decodes for the network: ``res2`` features of a
    prepared image of ``size``."""

    res2: Tensor
    size: Tuple[int, ...]


def _shared_protocol(tasks: Sequence[Task], codecs: Sequence[CodecSpec], with_boxes: bool) -> CodingProtocol:
    """The one coding protocol of ``tasks``; refuses tasks that differ in it or repeat,
    and rate points that need a task not evaluated, or quality maps nothing gives."""
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
        if spec.roi_map is QualityMapSource.SALIENCY and spec.task is None and len(names) != 1:
            raise ValueError(f"{spec.describe()}: saliency maps need one task; evaluate one --task at a time")
        if spec.roi_map is QualityMapSource.BOXES and not with_boxes:
            raise ValueError(f"{spec.describe()}: box maps need a dataset with object boxes (COCO annotations)")
    return protocols.pop()


def _empty_dataset_error(dataset: Any, description: str, skipped: Sequence[Tuple[Any, str]]) -> ValueError:
    """The refusal of a dataset without images: which one, and what to do."""
    described = description or getattr(dataset, "describe", lambda: "")()
    what = f"the dataset ({described})" if described else "the dataset"
    todo = (
        f"all {len(skipped)} of its images were left out as unreadable; fix or replace them"
        if skipped
        else "give images to evaluate (a folder of images, or COCO annotations with their image folder)"
    )
    return ValueError(f"{what} holds no image to evaluate: {todo}")


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
        fresh: start afresh: earlier records and rate points of ``output_dir``, and the
            files written from them (curves, tables, plots, the list of skipped images:
            :func:`.outputs.earlier_outputs`), are moved to ``previous-<time>/`` there
            (kept, not merged; other files stay). Without it, curves merge the points of
            earlier runs into the same folder that are complete for this dataset, tasks
            and protocol.
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
        self.protocol = _shared_protocol(tasks, codecs, object_boxes is not None)
        if not len(dataset):
            raise _empty_dataset_error(dataset, dataset_description, skipped)
        self.object_boxes = object_boxes
        self.dataset = dataset
        self.tasks = list(tasks)
        self.codecs = list(codecs)
        self.output_dir = Path(output_dir)
        self.reference = reference
        self.device = torch.device(device)
        self.progress = progress
        self.dataset_description = dataset_description or f"{len(self.dataset)} images"
        self.records_path = self.output_dir / "records.jsonl"
        self.history_path = self.output_dir / "codecs.json"
        self.fresh = fresh
        self.max_pixels = int(max_pixels)
        self.rate_average = parse_choice(RateAverage, rate_average, "rate average")
        self.skipped = list(skipped)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._task_keys: Dict[int, str] = {}
        #: where ``fresh`` moved the earlier runs' files (``None``: nothing was moved)
        self.set_aside: Optional[Path] = None
        #: the images whose records have no MS-SSIM (too small for it), after :meth:`run`
        self.without_ms_ssim: List[Any] = []

    # ------------------------------------------------------------------ helpers
    @property
    def random_weights(self) -> bool:
        """Whether any codec or task network has random weights."""
        return any(t.random_weights for t in self.tasks) or any(s.random_weights for s in self.codecs)

    def _tag(self, spec: Optional[CodecSpec] = None) -> str:
        """The label of a progress bar: of any random weights, or of ``spec``'s values
        (its codec's weights, or a task network of its tasks)."""
        random = (
            self.random_weights
            if spec is None
            else spec.random_weights or any(t.random_weights for t in self.tasks_of(spec))
        )
        return f"[{RANDOM_LABEL}] " if random else ""

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

    def pending_codecs(self) -> List[CodecSpec]:
        """The rate points with images left to code: every one with ``fresh``, else those
        that the records on disk (read as they are: :func:`.records.stored_keys`) do
        not hold for every image and task; their weights are needed, the others' not."""
        if self.fresh:
            return list(self.codecs)
        done = stored_keys(self.records_path)

        def complete(spec: CodecSpec) -> bool:
            codec, tasks = self.codec_key(spec), [self.task_key(t) for t in self.tasks_of(spec)]
            return all(RecordStore.key(codec, task, item.image_id) in done for item in self.dataset for task in tasks)

        return [spec for spec in self.codecs if not complete(spec)]

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
                logger.info("resuming from %s (%d finished records)", self.records_path, len(store))
            earlier = remember(self.history_path, self.codecs)
            self._run_reference(store)
            for spec in self.codecs:
                self._run_codec(spec, store)
            curves = self._aggregate(store, self._merged_specs(store, earlier))
            self._write_outputs(curves, store)  # under the records' lock: one run writes the results at a time
        return curves

    def _set_aside_earlier_runs(self, store: RecordStore) -> None:
        """``--fresh``: move the records and rate points of earlier runs, and the files
        written from them (:func:`.outputs.earlier_outputs`), to a new folder of their
        own, ``previous-<time>/`` (``-2``, ``-3``... after it when that exists): nothing is
        deleted or overwritten, and files the evaluator did not write stay."""
        history = [self.history_path, self.history_path.with_name(self.history_path.name + ".damaged")]
        primary = {t.name: t.primary_metric for t in self.tasks}
        files = outputs.earlier_outputs(self.output_dir, store.curves, primary)
        files += [p for p in history if p.is_file()]
        if not files and not store.path.exists() and not store.damaged_path.exists():
            return
        folder = _new_folder(self.output_dir, time.strftime("previous-%Y%m%d-%H%M%S", time.gmtime()))
        store.move_to(folder)
        for path in files:
            path.replace(folder / path.name)  # a new folder: nothing there to overwrite
        self.set_aside = folder
        logger.info("earlier records and %d files of their results set aside in %s (--fresh)", len(files), folder)

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
        todo = self._todo(store, REFERENCE_CODEC, self.reference_tasks)
        if not todo:
            return
        random = any(t.random_weights for t in self.reference_tasks)
        desc = (f"[{RANDOM_LABEL}] " if random else "") + "uncompressed reference"
        bar = tqdm(total=len(todo), desc=desc, disable=not self.progress, unit="img")
        for group in self._batches(todo):
            items, tasks_per_item, images = zip(*group)
            predictions = self._predict_group(tasks_per_item, images, items)
            for item, tasks, predicted in zip(items, tasks_per_item, predictions):
                for task in tasks:
                    store.append(
                        {
                            "codec": REFERENCE_CODEC,
                            "task": self.task_key(task),
                            "image": item.image_id,
                            "label": REFERENCE_CODEC,
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
            logger.info("%s: all %d images done", spec.describe(), len(self.dataset))
            return
        logger.info("%s: %d images to code", spec.describe(), len(todo))
        model = spec.load(self.device, progress=self.progress)
        if hasattr(model, "max_decode_pixels"):  # every coded image fits it (protocol.size_problem)
            model.max_decode_pixels = self.max_pixels
        if spec.roi_map is not None and not isinstance(model, TICROI):
            raise ValueError(f"{spec.describe()}: quality maps (--roi-map) are for tic-roi codecs, not this one")
        desc = f"{self._tag(spec)}{spec.label}" + (f" q{spec.quality}" if spec.quality is not None else "")
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
        if spec.roi_map is QualityMapSource.SALIENCY:
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
        without_ms_ssim: Dict[str, None] = {}
        for spec in specs:
            for task in self.tasks_of(spec):
                curve = curves.get((spec.label, task.name))
                if curve is None:
                    curve = curves[(spec.label, task.name)] = Curve(
                        spec.label, task, [], num_images=len(self.dataset), rate_average=self.rate_average
                    )
                records = self._collect(store, self.codec_key(spec), task)
                # null: measured, and too small; records without an "ms_ssim" field are not counted
                without_ms_ssim.update((i, None) for i, r in records.items() if "ms_ssim" in r and r["ms_ssim"] is None)
                point = coding_means(spec, list(records.values()), self.rate_average)
                point.update(self._metrics(task, records))
                curve.specs.append(spec)
                curve.points.append(point)
        references = {
            task.name: self._metrics(task, self._collect(store, REFERENCE_CODEC, task)) for task in self.reference_tasks
        }
        self.without_ms_ssim = [item for item in self.dataset if str(item.image_id) in without_ms_ssim]
        self._warn_of_images_without_ms_ssim()
        for curve in curves.values():
            curve.sort_points()
            curve.reference = references.get(curve.task.name, {})
            curve.description = self._describe(curve)
        return list(curves.values())

    def _warn_of_images_without_ms_ssim(self) -> None:
        """Name, once each, the images too small for MS-SSIM (the first
        :data:`_NAMED_IMAGES`; the others are counted), and say what that makes of the
        means, when a task reports MS-SSIM (fidelity); other tasks' curves say it in
        their descriptions only."""
        if not any("ms-ssim-rgb" in t.metric_names for t in self.tasks):
            return
        missing = self.without_ms_ssim
        for item in missing[:_NAMED_IMAGES]:
            logger.warning("%s: no MS-SSIM: %s", item.path, self._ms_ssim_problem(item))
        if len(missing) > _NAMED_IMAGES:
            logger.warning(
                "%d more images have no MS-SSIM: a side of %d pixels or less",
                len(missing) - _NAMED_IMAGES,
                MS_SSIM_MIN_SIDE,
            )
        if missing:
            logger.warning("%s", self.ms_ssim_note())

    def ms_ssim_note(self) -> str:
        """What images without MS-SSIM make of each point's mean MS-SSIM."""
        count, total = len(self.without_ms_ssim), len(self.dataset)
        return (
            f"{count} of {total} images {'has' if count == 1 else 'have'} no MS-SSIM (a side of "
            f"{MS_SSIM_MIN_SIDE} pixels or less as coded), so no point has a mean MS-SSIM (NaN): "
            "a point's rate, PSNR and MS-SSIM average the same images; per-image.csv holds the others' values"
        )

    def _ms_ssim_problem(self, item: Any) -> str:
        """Why ``item`` has no MS-SSIM, with the size it is coded at when its header reads."""
        try:
            with open_image(item.path) as image:
                width, height = image.size
        except (OSError, ValueError):
            return f"a side of {MS_SSIM_MIN_SIDE} pixels or less as coded"
        height, width = self.protocol.prepared_size(height, width)
        return ms_ssim_size_problem(height, width) or f"a side of {MS_SSIM_MIN_SIDE} pixels or less as coded"

    def _describe(self, curve: Curve) -> str:
        protocol = self.protocol.as_dict()
        parts = [
            _random_note(curve),
            "Rate-accuracy evaluation of " + "; ".join(s.describe() for s in curve.specs),
            f"task {curve.task.name}: {curve.task.title}, network weights: {curve.task.describe_weights()}",
            "protocol: "
            + (", ".join(f"{k}={v}" for k, v in protocol.items() if v not in (None, "none")) or "images as they are"),
            f"dataset: {self.dataset_description}",
            (
                f"{len(self.skipped)} unreadable image(s) left out (--skip-bad), listed in {SKIPPED_FILE}"
                if self.skipped
                else ""
            ),
            "bpp from the real bitstream or coded file (bpp-likelihood from forward()), per pixel of the "
            f"prepared image, {self.rate_average.describe()}; "
            + ", ".join(f"{m} {unit_words(curve.task.metric_units.get(m, '%'))}" for m in curve.task.metric_names),
            self.ms_ssim_note() if self.without_ms_ssim else "",
        ]
        return ". ".join(p for p in parts if p)

    # ------------------------------------------------------------------ outputs
    def curve_path(self, curve: Curve) -> Path:
        """Where ``curve``'s JSON file goes (:func:`.outputs.curve_path`)."""
        return outputs.curve_path(self.output_dir, curve)

    def plot_path(self, task: Task, metric: str = "") -> Path:
        """Where ``task``'s plot of ``metric`` goes (:func:`.outputs.plot_path`)."""
        return outputs.plot_path(self.output_dir, task, metric)

    def _write_outputs(self, curves: Sequence[Curve], store: RecordStore) -> None:
        for curve in curves:
            write_json(self.curve_path(curve), curve.to_json())
        table = self.output_dir / "results.csv"
        outputs.write_results_table(table, curves, self.tasks, self.reference_tasks, len(self.dataset))
        outputs.write_per_image(self.output_dir / "per-image.csv", self._coded_images(curves, store))
        for task in self.tasks:
            task_curves = [c for c in curves if c.task is task]
            if task_curves:
                mpeg = self.output_dir / f"{task.name}-mpeg.csv"
                outputs.write_mpeg_table(mpeg, task, task_curves, self.dataset_description)
                outputs.write_plots(self.output_dir, task, task_curves)
        outputs.write_skipped(self.output_dir / SKIPPED_FILE, self.skipped)

    def _coded_images(
        self, curves: Sequence[Curve], store: RecordStore
    ) -> Iterator[Tuple[Curve, CodecSpec, str, Dict[str, Any]]]:
        """Every coded image's record once: a codec without prompts is one set of
        bitstreams for every task."""
        done = set()
        for curve in curves:
            for spec in curve.specs:
                key = self.codec_key(spec)
                if key not in done:
                    done.add(key)
                    for image_id, record in self._collect(store, key, curve.task).items():
                        yield curve, spec, image_id, record
