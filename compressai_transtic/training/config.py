"""Training settings: one dataclass, filled from task defaults, a config file and the CLI.

Precedence, lowest first: built-in defaults < the task's ``training_defaults`` (the
paper's settings) < a JSON/TOML config file < command-line options. The config file's
keys are the field names of :class:`TrainConfig` (dashes may replace underscores), e.g.::

    # prompts-cls-q2.toml
    task = "cls"
    dataset = "/data/imagenet/train"
    val_dataset = "/data/imagenet/val"
    val_limit = 2000
    quality = 2
    output = "runs/cls-q2"

This module imports no torch: the command line can be built and parsed cheaply.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, TypeVar, Union

__all__ = [
    "CROP_MODES",
    "FALLBACK_DEFAULTS",
    "TASK_DEFAULT_KEYS",
    "ConfigError",
    "TrainConfig",
    "load_config_file",
]

#: ``"center"``: Resize(patch) + CenterCrop(patch) (the paper's ImageNet setting);
#: ``"random"``: RandomCrop(patch) + horizontal flip (the paper's COCO setting).
CROP_MODES = ("center", "random")

#: settings a task's ``training_defaults`` may provide, and the value used when neither
#: the task nor the user gives one
FALLBACK_DEFAULTS: Dict[str, Any] = {
    "epochs": 40,
    "batch_size": 8,
    "patch_size": 256,
    "crop": "random",
    "lr": 1e-4,
    # the authors' training scripts build MultiStepLR(milestones=[]): a constant rate
    "lr_milestones": (),
    "lr_gamma": 0.1,
    "clip_max_norm": 1.0,
    "samples_per_epoch": None,
}
TASK_DEFAULT_KEYS = tuple(FALLBACK_DEFAULTS)


T = TypeVar("T")


def given(value: Optional[T]) -> T:
    """A setting that :meth:`TrainConfig.resolve` has filled (never ``None`` after it)."""
    assert value is not None, "the training settings were not resolved"
    return value


class ConfigError(ValueError):
    """Invalid training settings (the message names the option and what is allowed)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a prompt-training run.

    Fields left ``None`` are filled by :meth:`resolve` from the task's
    ``training_defaults`` (then :data:`FALLBACK_DEFAULTS`).

    Args:
        task: registered task name (``cls``, ``det``, ``seg`` or a plugin's).
        dataset: training images: any folder, searched recursively (ImageNet-style
            class folders, COCO ``train2017``, your own images).
        output: output directory (default ``runs/<task>-q<quality>``).
        arch: adapted architecture: ``transtic`` (prompts) or a baseline (``tic-sft``,
            ``tic-chsel``, ``tic-roi``); see ``compressai_transtic.models.ADAPTED_CODECS``.
        base: base codec (TIC) checkpoint file or URL; default: the released
            ``base_codec_<quality>`` (cache or download).
        quality: quality level 1..4: selects the released base codec and the paper's lambda.
        lmbda: rate-accuracy trade-off; default: the task's lambda for ``quality``.
        variant: configuration preset of the architecture (for ``transtic`` the prompt
            variants of ``compressai_transtic.prompts.VARIANTS``); default: the
            architecture's default configuration (TransTIC's ``deep``).
        prompt_options: overrides of the configuration's fields (``PromptConfig``,
            ``SFTConfig``, ``ChannelSelectionConfig``, ``ROIConfig``; ``--adapter-option``
            / ``--prompt-option`` on the command line), e.g. ``{"encoder_mask": "aligned"}``.
        init_adapter: adapter file to start from instead of freshly initialised prompts.
        task_weights: recognition network weights: ``default`` (torchvision's file),
            a path, or ``random`` (tests only: the loss is then meaningless).
        task_options: further constructor options of the task (e.g. ``backend``).
        val_dataset: validation images (folder); enables best-checkpoint selection.
        val_fraction: fraction of the training images held out for validation instead
            (deterministic split by ``seed``); 0 disables.
        val_limit: validate on at most this many images (evenly spaced).
        val_crop: ``center`` (Resize + CenterCrop to ``patch_size``, batched) or
            ``full`` (whole images, one at a time).
        epochs: training epochs.
        batch_size: GLOBAL batch size (split evenly over the processes of a
            distributed run, so results do not depend on the number of processes).
        patch_size: side of the training crops.
        crop: ``center`` or ``random`` (see :data:`CROP_MODES`).
        lr: Adam learning rate.
        lr_milestones: epochs after which the rate is multiplied by ``lr_gamma``
            (``MultiStepLR``, stepped once per epoch).
        lr_gamma: factor of each step.
        clip_max_norm: gradient-norm clipping of the prompt parameters (0: off).
        samples_per_epoch: images drawn (without replacement) per epoch; default all.
        seed: seed of initialisation, data order, crops and quantization noise.
        workers: data-loading processes per training process (default min(4, CPUs)).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision: ``auto`` (bf16 on GPUs that support it, else fp16;
            off on CPU), ``off``, ``bf16`` or ``fp16`` (with loss scaling).
        deterministic: ask PyTorch for deterministic kernels (slower on GPU).
        resume: ``last`` (the output directory's checkpoint, which must exist),
            ``auto`` (resume when it exists), or a checkpoint path.
        select_by: validation metric that picks the best adapter: ``loss`` (the
            rate-accuracy objective) or ``task_loss`` (the perceptual distortion).
        save_every: also keep the adapter of every N-th epoch (0: only last/best/final).
        checkpoint_every: additionally checkpoint every N steps inside an epoch (0: off).
        log_every: steps between log lines / CSV rows / TensorBoard points.
        verify_images: check of every image before training: ``header`` (open and
            verify headers), ``full`` (decode every image), ``off``.
        max_pixels: the largest image accepted (width x height); larger ones are
            reported by the check (and refused when read).
        tensorboard: also log to TensorBoard (when it is installed).
        progress: show tqdm progress bars.
    """

    task: str = ""
    dataset: str = ""
    output: Optional[str] = None
    arch: str = "transtic"
    base: Optional[str] = None
    quality: int = 1
    lmbda: Optional[float] = None
    variant: Optional[str] = None
    prompt_options: Dict[str, Any] = field(default_factory=dict)
    init_adapter: Optional[str] = None
    task_weights: str = "default"
    task_options: Dict[str, Any] = field(default_factory=dict)
    val_dataset: Optional[str] = None
    val_fraction: float = 0.0
    val_limit: Optional[int] = None
    val_crop: str = "center"
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    patch_size: Optional[int] = None
    crop: Optional[str] = None
    lr: Optional[float] = None
    lr_milestones: Optional[Tuple[int, ...]] = None
    lr_gamma: Optional[float] = None
    clip_max_norm: Optional[float] = None
    samples_per_epoch: Optional[int] = None
    seed: int = 0
    workers: Optional[int] = None
    device: str = "auto"
    amp: str = "auto"
    deterministic: bool = False
    resume: Optional[str] = None
    select_by: str = "loss"
    save_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 50
    verify_images: str = "header"
    max_pixels: int = 2**24  # compressai_transtic.imageio.DEFAULT_MAX_PIXELS (not imported: it loads torch)
    tensorboard: bool = True
    progress: bool = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "settings") -> "TrainConfig":
        """Build from a mapping whose keys are field names (``-`` allowed for ``_``).

        Raises:
            ConfigError: unknown keys (the message lists the known ones).
        """
        known = set(cls.field_names())
        values: Dict[str, Any] = {}
        unknown = []
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name == "lambda":
                name = "lmbda"
            if name not in known:
                unknown.append(str(key))
                continue
            values[name] = value
        if unknown:
            raise ConfigError(f"{source}: unknown training options {sorted(unknown)}; known options: {sorted(known)}")
        return cls(**_normalise(values))

    def merged(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``overrides`` (field name -> value) applied."""
        base = asdict(self)
        base.update(overrides)
        return TrainConfig.from_dict(base)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable form with the command line's names (``lambda``, not the
        field's ``lmbda``; tuples become lists), which :meth:`from_dict` reads back."""
        d = {("lambda" if k == "lmbda" else k): v for k, v in asdict(self).items()}
        if d["lr_milestones"] is not None:
            d["lr_milestones"] = list(d["lr_milestones"])
        return d

    # ------------------------------------------------------------------ resolution
    def resolve(self, task_defaults: Mapping[str, Any], default_lambda: Callable[[int], float]) -> "TrainConfig":
        """Fill unset fields from the task's defaults and check every value.

        Args:
            task_defaults: the task's ``training_defaults``.
            default_lambda: the task's lambda for a quality level
                (``Task.default_lambda``); it raises ValueError for a quality without one.

        Raises:
            ConfigError: a missing or invalid setting.
        """
        if not self.task:
            raise ConfigError("no task given: pass --task NAME (e.g. cls, det, seg)")
        if not self.dataset:
            raise ConfigError("no training images given: pass --dataset DIR")
        filled: Dict[str, Any] = {}
        for key in TASK_DEFAULT_KEYS:
            if getattr(self, key) is None:
                filled[key] = task_defaults.get(key, FALLBACK_DEFAULTS[key])
        try:
            filled["lmbda"] = float(default_lambda(self.quality) if self.lmbda is None else self.lmbda)
        except ValueError as exc:
            raise ConfigError(f"{exc}; pass --lambda") from None
        if self.variant is None and self.arch == "transtic":  # TransTIC's default preset, named as before
            filled["variant"] = "deep"
        if self.output is None:
            filled["output"] = os.path.join("runs", f"{self.task}-q{self.quality}")
        if self.workers is None:
            filled["workers"] = min(4, os.cpu_count() or 1)
        resolved = replace(self, **_normalise(filled))
        resolved.validate()
        return resolved

    def validate(self) -> None:
        """Check the values of a resolved configuration.

        Raises:
            ConfigError: naming the first invalid option.
        """
        self._check_numbers()
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        if self.quality not in (1, 2, 3, 4) and self.base is None:
            raise ConfigError(f"quality must be 1..4 to pick a released base codec (got {self.quality})")
        if self.val_fraction and self.val_dataset:
            raise ConfigError("give either val_dataset or val_fraction, not both")
        if not isinstance(self.prompt_options, dict) or not isinstance(self.task_options, dict):
            raise ConfigError("prompt_options and task_options must be tables / dicts")

    def _check_numbers(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            if value is None or value < 0 or (value == 0 and not allow_zero):
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{name} must be {bound} (got {value!r})")

        for name in ("epochs", "batch_size", "patch_size", "lr", "lr_gamma", "log_every", "max_pixels"):
            positive(name)
        for name in ("clip_max_norm", "save_every", "checkpoint_every", "workers"):
            positive(name, allow_zero=True)
        for name in ("samples_per_epoch", "val_limit"):
            if getattr(self, name) is not None:
                positive(name)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if self.lmbda is not None and self.lmbda < 0:
            raise ConfigError(f"lambda must be >= 0 (got {self.lmbda})")
        if any(m < 1 for m in self.lr_milestones or ()):
            raise ConfigError(f"lr_milestones must be epoch numbers >= 1 (got {self.lr_milestones})")


#: the options with a fixed set of values
_CHOICES = {
    "crop": CROP_MODES,
    "val_crop": ("center", "full"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "select_by": ("loss", "task_loss"),
    "verify_images": ("header", "full", "off"),
}


def _normalise(values: Dict[str, Any]) -> Dict[str, Any]:
    """Coerce values read from JSON/TOML/argparse to the field types."""
    out = dict(values)
    if out.get("lr_milestones") is not None:
        ms = out["lr_milestones"]
        if isinstance(ms, str):
            ms = [m for m in ms.replace(",", " ").split() if m]
        try:
            out["lr_milestones"] = tuple(sorted(int(m) for m in ms))
        except (TypeError, ValueError):
            raise ConfigError(f"lr_milestones must be a list of epoch numbers (got {ms!r})") from None
    for key in ("prompt_options", "task_options"):
        if key in out and out[key] is None:
            out[key] = {}
    for key in ("base", "init_adapter", "val_dataset", "resume", "output", "dataset"):
        if isinstance(out.get(key), os.PathLike):
            out[key] = os.fspath(out[key])
    return out


#: the keys of the ``config.json`` a run writes (its options are under ``config``)
RUN_RECORD_KEYS = frozenset(
    {
        "config",
        "world_size",
        "device",
        "precision",
        "base_sha256",
        "num_train_images",
        "num_val_images",
        "steps_per_epoch",
        "resumed_from",
    }
)


def load_config_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a ``.json`` or ``.toml`` file of training options, or a run's ``config.json``
    (its options, without the run's ``output`` and ``resume``: a new run gets its own).

    Raises:
        ConfigError: missing file, unsupported extension or invalid syntax.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".toml":
            try:
                import tomllib  # Python >= 3.11
            except ModuleNotFoundError:  # pragma: no cover - depends on the Python version
                try:
                    import tomli as tomllib  # type: ignore[no-redef]
                except ModuleNotFoundError:
                    raise ConfigError(
                        f"reading {path} needs Python >= 3.11 or the 'tomli' package (pip install tomli); "
                        "or write the options as JSON"
                    ) from None
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            raise ConfigError(f"config file {path}: unsupported extension {suffix!r}; use .json or .toml")
    except ConfigError:
        raise
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise ConfigError(f"config file {path} is not valid {suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of options, not {type(data).__name__}")
    if set(data) >= {"config"} and isinstance(data["config"], dict) and set(data) <= RUN_RECORD_KEYS:
        data = dict(data["config"])  # a run's own config.json: its options are under "config"
        for key in ("output", "resume"):  # where that run wrote, and how it started: not options of a new run
            data.pop(key, None)
    TrainConfig.from_dict(data, source=str(path))  # reject unknown keys early
    return data
