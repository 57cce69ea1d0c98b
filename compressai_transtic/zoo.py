"""Model zoo: CompressAI-style tables and entry functions for TIC and TransTIC.

Tables (plain dicts, same shapes as CompressAI's ``compressai.zoo.image``):

- ``cfgs[arch][quality]``: positional constructor arguments, as CompressAI's
  ``model_architectures[arch](*cfgs[arch][quality])`` uses them: ``(N, M)`` for
  TIC, ``(config, N, M)`` for the adapted codecs (``config`` None: the default);
- ``model_urls[arch][metric][quality]``: released weights, from the manifest
  ``zoo/weights.json`` (installed as ``compressai_transtic/_zoo/weights.json``);
- ``weights``: every manifest row as a :class:`Weights` record.

Entry functions follow CompressAI's signature (``quality, metric, pretrained,
progress, **kwargs``): :func:`tic`, :func:`transtic` (its ``task`` keyword-only), the per-task
:func:`transtic_cls`, :func:`transtic_det`, :func:`transtic_seg`, and the
baselines :func:`tic_sft`, :func:`tic_chsel` and :func:`tic_roi` (no released
weights). They are registered into CompressAI's own tables under ``tic``,
``transtic``, ``transtic-cls``, ``transtic-det``, ``transtic-seg``, ``tic-sft``,
``tic-chsel`` and ``tic-roi`` (see
:mod:`compressai_transtic.registration`), so ``python -m
compressai.utils.eval_model pretrained -a transtic-cls -q 1 ...`` works.

Pretrained weights are looked up in the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file name>``, see :func:`torch.hub.get_dir`)
and downloaded there when missing. Nothing is printed to stdout: progress bars
go to stderr, messages to :mod:`logging`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Tuple

import torch.hub
from torch import nn

from .checkpoint import load_state_dict, model_from_state_dict
from .download import ChecksumMismatchError, FileToFetch, WeightsToFetchError, WeightsUnavailableError, fetch_url
from .jsonvalues import as_index
from .models import ADAPTED_CODECS, TIC, TransTIC
from .registration import ModelEntry
from .trust import TrustStore, TrustStoreError

logger = logging.getLogger(__name__)

__all__ = [
    "ChecksumMismatchError",
    "TrustStore",
    "TrustStoreError",
    "Weights",
    "WeightsUnavailableError",
    "cfgs",
    "channels",
    "fetch_url",
    "fetch_weights",
    "fetch_all",
    "fetch_files",
    "get_weights",
    "load_pretrained",
    "model_card",
    "model_urls",
    "tic",
    "transtic",
    "transtic_cls",
    "transtic_det",
    "transtic_seg",
    "tic_chsel",
    "tic_roi",
    "tic_sft",
    "weights",
]

QUALITIES = (1, 2, 3, 4)
TASKS = ("cls", "det", "seg")
METRICS = ("mse",)

#: Architecture names registered into CompressAI (``transtic`` = ``transtic-cls`` by default).
ARCHITECTURES = ("tic", "transtic", "transtic-cls", "transtic-det", "transtic-seg", "tic-sft", "tic-chsel", "tic-roi")

#: Model card (a file of ``zoo/``) per architecture name.
MODEL_CARDS = {name: "transtic.md" if name.startswith("transtic") else f"{name}.md" for name in ARCHITECTURES}

#: Positional constructor arguments per architecture and quality: ``(N, M)`` for TIC,
#: ``(config, N, M)`` for the adapted codecs, whose first argument is their configuration.
cfgs: Dict[str, Dict[int, Tuple[Any, ...]]] = {
    arch: {q: (128, 192) if arch == "tic" else (None, 128, 192) for q in QUALITIES} for arch in ARCHITECTURES
}


def channels(arch: str, quality: int) -> Tuple[int, int]:
    """``(N, M)`` of ``arch`` at ``quality``: the last two of its :data:`cfgs` arguments."""
    N, M = cfgs[arch][quality][-2:]
    return N, M


@dataclass(frozen=True)
class Weights:
    """One row of the weights manifest (``zoo/weights.json``).

    Args:
        url: download URL.
        filename: file name in the cache (the URL's basename).
        sha256: hex digest of the file; empty when none is published (not verified).
        task: ``"cls"``, ``"det"``, ``"seg"`` or None for the base codec.
        quality: 1..4.
        lmbda: rate-distortion trade-off used in training (None if unknown).
        arch: ``"tic"`` or ``"transtic"``.
        metric: distortion metric of the base codec (``"mse"``).
        metadata: free-form facts (loss, recognition network, variant ...).
    """

    url: str
    filename: str
    sha256: str
    task: Optional[str]
    quality: int
    lmbda: Optional[float]
    arch: str
    metric: str = "mse"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Zoo name this row is registered under (``tic`` or ``transtic-<task>``)."""
        return self.arch if self.task is None else f"{self.arch}-{self.task}"

    @property
    def title(self) -> str:
        """The zoo name and quality, for humans (``transtic-cls q2``)."""
        return f"{self.name} q{self.quality}"

    @property
    def cache_path(self) -> Path:
        """Where the file is looked up and downloaded: ``<torch hub dir>/checkpoints/<filename>``."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


def _zoo_file(filename: str) -> Path:
    """A file of the top-level ``zoo/`` folder: installed under ``compressai_transtic/_zoo``
    by the wheel (pyproject force-include), or next to the package in a checkout."""
    here = Path(__file__).resolve().parent
    candidates = (here / "_zoo" / filename, here.parent / "zoo" / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"zoo file {filename} not found; looked at " + ", ".join(map(str, candidates)))


def model_card(name: str) -> str:
    """The model card (Markdown) of a zoo name, e.g. ``model_card("transtic-det")``."""
    if name not in MODEL_CARDS:
        raise ValueError(f"no model card for {name!r}; zoo names: {sorted(MODEL_CARDS)}")
    return _zoo_file(MODEL_CARDS[name]).read_text(encoding="utf-8")


def _read_manifest(path: Path) -> Tuple[Weights, ...]:
    with path.open(encoding="utf-8") as f:
        doc = json.load(f)
    if doc.get("format_version") != 1:
        raise ValueError(f"{path}: unsupported format_version {doc.get('format_version')!r} (expected 1)")
    rows = []
    for row in doc["weights"]:
        rows.append(
            Weights(
                url=row["url"],
                filename=row.get("filename") or row["url"].rsplit("/", 1)[-1],
                sha256=(row.get("sha256") or "").lower(),
                task=row.get("task"),
                quality=int(row["quality"]),
                lmbda=row.get("lambda"),
                arch=row["arch"],
                metric=row.get("metric", "mse"),
                metadata=dict(row.get("metadata") or {}),
            )
        )
    return tuple(rows)


#: Every released weights file.
weights: Tuple[Weights, ...] = _read_manifest(_zoo_file("weights.json"))


def _build_model_urls() -> Dict[str, Dict[str, Dict[int, str]]]:
    urls: Dict[str, Dict[str, Dict[int, str]]] = {}
    for w in weights:
        urls.setdefault(w.name, {}).setdefault(w.metric, {})[w.quality] = w.url
    # ``transtic`` without a task is the default task (cls).
    if "transtic-cls" in urls:
        urls["transtic"] = {m: dict(q) for m, q in urls["transtic-cls"].items()}
    return urls


#: ``model_urls[arch][metric][quality]`` -> URL of the released weights.
model_urls: Dict[str, Dict[str, Dict[int, str]]] = _build_model_urls()


def get_weights(arch: str, quality: int, task: Optional[str] = None, metric: str = "mse") -> Weights:
    """Find the manifest row of released weights.

    Args:
        arch: ``"tic"`` or ``"transtic"``.
        quality: 1..4.
        task: for ``transtic``: ``"cls"``, ``"det"`` or ``"seg"``; None for ``tic``.
        metric: ``"mse"``.

    Raises:
        ValueError: no such weights (the message lists what exists).
    """
    for w in weights:
        if (w.arch, w.quality, w.task, w.metric) == (arch, quality, task, metric):
            return w
    available = sorted(f"{w.arch}/{w.task or '-'}/{w.metric}/q{w.quality}" for w in weights)
    raise ValueError(
        f"no released weights for arch={arch!r} task={task!r} metric={metric!r} "
        f"quality={quality!r}; available: {', '.join(available)}"
    )


def fetch_weights(w: Weights, progress: bool = True) -> Path:
    """Return the local path of released weights, downloading them if needed.

    At a file's first use (no sha256 in the manifest, none recorded yet), its weights
    are loaded into their model before their hash is recorded: a damaged file is
    refused, not trusted.

    Args:
        w: manifest row (see :func:`get_weights`).
        progress: show a progress bar on stderr while downloading.

    Raises:
        WeightsUnavailableError: not cached and not downloadable.
        ChecksumMismatchError: the file's sha256 differs from the manifest's.
        CheckpointError, ArchitectureMismatchError: a file used for the first time
            cannot be loaded as these weights.
    """

    def check(path: Path) -> None:
        model_from_state_dict(load_state_dict(path), w.arch, source=str(path))

    return fetch_url(w.url, filename=w.filename, sha256=w.sha256, progress=progress, check=check)


class HasNetwork(Protocol):
    """What :func:`fetch_all` asks of a task (:class:`~.tasks.Task`)."""

    def prepare_network(self) -> List[FileToFetch]: ...


def fetch_files(rows: Iterable[Weights], progress: bool = True) -> List[FileToFetch]:
    """Fetch every file of ``rows`` (each once, in order) and return those that are
    neither cached nor downloadable.

    Raises:
        ChecksumMismatchError, TrustStoreError, CheckpointError, ArchitectureMismatchError:
            as :func:`fetch_weights`: a file that is there but wrong is refused, not
            listed, and the files after it are not looked at.
    """
    missing, seen = [], set()
    for w in rows:
        if w.filename in seen:
            continue
        seen.add(w.filename)
        try:
            fetch_weights(w, progress=progress)
        except WeightsUnavailableError as err:
            missing.append(err.to_fetch(w.title))
    return missing


def fetch_all(rows: Iterable[Weights], tasks: Iterable[HasNetwork] = (), progress: bool = True) -> None:
    """Fetch the released files of ``rows`` and load the networks of ``tasks`` now, so
    that a command names every missing file in one error before it starts its work.

    Raises:
        WeightsToFetchError: files neither cached nor downloadable (each named once).
        ChecksumMismatchError, TrustStoreError, CheckpointError, ArchitectureMismatchError:
            as :func:`fetch_files`.
    """
    missing = fetch_files(rows, progress) + [file for task in tasks for file in task.prepare_network()]
    if missing:
        raise WeightsToFetchError(list(dict.fromkeys(missing)))


def load_pretrained(
    arch: str, quality: int, task: Optional[str] = None, progress: bool = True, metric: str = "mse"
) -> nn.Module:
    """Build a model holding released weights (the one loader behind ``pretrained=True``).

    The file is taken from the torch hub cache or downloaded there, its
    architecture is checked, and the entropy-coder tables are rebuilt with
    ``update(force=True)`` when the file lacks them, so the model can
    ``compress()`` right away.

    Args:
        arch: ``"tic"`` or ``"transtic"``.
        quality: 1..4.
        task: ``"cls"``, ``"det"``, ``"seg"`` for ``transtic``; None for ``tic``.
        progress: show a progress bar on stderr while downloading.
        metric: ``"mse"``.

    Raises:
        WeightsUnavailableError, ChecksumMismatchError: see :func:`fetch_weights`.
        ArchitectureMismatchError: the file holds another architecture.
    """
    w = get_weights(arch, quality, task, metric)
    path = fetch_weights(w, progress=progress)
    return model_from_state_dict(load_state_dict(path), arch, source=str(path))


def _check_args(quality: int, metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"invalid metric {metric!r}: the released base codecs are trained for {METRICS}")
    if as_index(quality) not in QUALITIES:
        raise ValueError(f"invalid quality {quality!r}: choose one of the integers {QUALITIES}")


def _no_kwargs_with_pretrained(kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise TypeError(
            f"arguments {sorted(kwargs)} cannot be combined with pretrained=True: "
            "the released weights fix the architecture"
        )


def tic(quality: int, metric: str = "mse", pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """TIC base codec (Swin-transformer hyperprior codec, the authors' ``TIC_hp``).

    Args:
        quality: 1 (lowest rate) .. 4; every quality uses N=128, M=192.
        metric: ``"mse"`` (the only metric released).
        pretrained: load the released ``base_codec_<quality>`` weights
            (entropy tables are rebuilt when the file lacks them).
        progress: show a download progress bar on stderr.
        **kwargs: extra arguments of :class:`compressai_transtic.models.TIC`
            (only without ``pretrained``).
    """
    _check_args(quality, metric)
    if pretrained:
        _no_kwargs_with_pretrained(kwargs)
        return load_pretrained("tic", quality, None, progress, metric)
    N, M = channels("tic", quality)
    return TIC(N=N, M=M, **kwargs)


def transtic(
    quality: int,
    metric: str = "mse",
    pretrained: bool = False,
    progress: bool = True,
    *,
    task: str = "cls",
    **kwargs: Any,
) -> nn.Module:
    """TransTIC: the TIC base codec with prompts for a machine task.

    Args:
        quality: 1..4 (the base codec ``base_codec_<quality>`` underneath).
        metric: ``"mse"``, the base codec's training metric.
        pretrained: load the released ``<task>_<quality>`` weights (base codec
            and prompts).
        progress: show a download progress bar on stderr.
        task: ``"cls"`` (ImageNet classification), ``"det"`` (COCO detection)
            or ``"seg"`` (COCO instance segmentation): which released weights
            ``pretrained`` loads. Keyword-only, so that the positional arguments
            are CompressAI's (``transtic(1, "mse", True)``).
        **kwargs: extra arguments of :class:`compressai_transtic.models.TransTIC`
            (e.g. ``config``; only without ``pretrained``).
    """
    _check_args(quality, metric)
    if task not in TASKS:
        raise ValueError(f"invalid task {task!r}: choose one of {TASKS}")
    if pretrained:
        _no_kwargs_with_pretrained(kwargs)
        return load_pretrained("transtic", quality, task, progress, metric)
    N, M = channels(f"transtic-{task}", quality)
    return TransTIC(N=N, M=M, **kwargs)


def _baseline_function(arch: str, title: str) -> Callable[..., nn.Module]:
    """The zoo function of a learned baseline (no released weights), CompressAI's signature."""
    codec = ADAPTED_CODECS[arch]

    def zoo_function(
        quality: int, metric: str = "mse", pretrained: bool = False, progress: bool = True, **kwargs: Any
    ) -> nn.Module:
        _check_args(quality, metric)
        if pretrained:
            raise ValueError(
                f"no {arch} weights are released: train them with `compressai-transtic train --arch {arch} "
                f"-q {quality} ...` and load model_final.pth.tar with compressai_transtic.checkpoint.load_model"
            )
        N, M = channels(arch, quality)
        return codec(N=N, M=M, **kwargs)

    zoo_function.__name__ = zoo_function.__qualname__ = arch.replace("-", "_")
    zoo_function.__doc__ = (
        f"{title}: the paper's baseline on the TIC base codec (:class:`~compressai_transtic.models."
        f"{codec.__name__}`). No weights are released: ``pretrained=True`` raises and says how to train "
        f"them (``compressai-transtic train --arch {arch}``). Arguments as :func:`tic`; ``**kwargs`` go "
        "to the class (e.g. ``config``)."
    )
    return zoo_function


#: the paper's learned baselines: architecture name -> title
BASELINES = {"tic-sft": "TIC+SFT", "tic-chsel": "TIC+channel selection", "tic-roi": "TIC+ROI"}
#: architecture name -> zoo function of each baseline (``tic_sft`` ...)
BASELINE_FUNCTIONS = {arch: _baseline_function(arch, title) for arch, title in BASELINES.items()}
tic_sft = BASELINE_FUNCTIONS["tic-sft"]
tic_chsel = BASELINE_FUNCTIONS["tic-chsel"]
tic_roi = BASELINE_FUNCTIONS["tic-roi"]


#: what each task's released prompts were trained for
TASK_TITLES = {
    "cls": "ImageNet classification (ResNet50)",
    "det": "COCO object detection (Faster R-CNN R50-FPN)",
    "seg": "COCO instance segmentation (Mask R-CNN R50-FPN)",
}


def _transtic_for(task: str) -> Callable[..., nn.Module]:
    """The zoo function of one task: :func:`transtic` with ``task`` fixed (CompressAI's signature)."""

    def zoo_function(
        quality: int, metric: str = "mse", pretrained: bool = False, progress: bool = True, **kwargs: Any
    ) -> nn.Module:
        return transtic(quality, metric, pretrained, progress, task=task, **kwargs)

    zoo_function.__name__ = zoo_function.__qualname__ = f"transtic_{task}"
    zoo_function.__doc__ = f"TransTIC for {TASK_TITLES[task]}; see :func:`transtic`."
    return zoo_function


#: task -> its zoo function (``transtic_cls`` ...)
TASK_FUNCTIONS = {task: _transtic_for(task) for task in TASKS}
transtic_cls = TASK_FUNCTIONS["cls"]
transtic_det = TASK_FUNCTIONS["det"]
transtic_seg = TASK_FUNCTIONS["seg"]


def _entry(name: str, zoo_function: Any, architecture: type) -> ModelEntry:
    return ModelEntry(
        name=name,
        zoo_function=zoo_function,
        architecture=architecture,
        cfgs=cfgs[name],
        model_urls=model_urls.get(name, {}),
    )


# Registered into CompressAI through the entry-point group "compressai_transtic.models"
# (pyproject.toml), the same way as third-party models.
TIC_ENTRY = _entry("tic", tic, TIC)
TRANSTIC_ENTRY = _entry("transtic", transtic, TransTIC)
TRANSTIC_CLS_ENTRY, TRANSTIC_DET_ENTRY, TRANSTIC_SEG_ENTRY = (
    _entry(f"transtic-{task}", TASK_FUNCTIONS[task], TransTIC) for task in TASKS
)
TIC_SFT_ENTRY, TIC_CHSEL_ENTRY, TIC_ROI_ENTRY = (
    _entry(arch, BASELINE_FUNCTIONS[arch], ADAPTED_CODECS[arch]) for arch in BASELINES
)
