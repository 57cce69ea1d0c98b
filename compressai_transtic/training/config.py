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
import reprlib
import shlex
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Type, TypeVar, Union

from ..filekinds import ImageCheck, regular_file_problem
from ..jsonvalues import is_finite_number, is_integer, nests_deeper
from ..strenum import StrEnum

__all__ = [
    "CROP_MODES",
    "FALLBACK_DEFAULTS",
    "MAX_NESTING",
    "MAX_VALUES",
    "TASK_DEFAULT_KEYS",
    "ConfigError",
    "CropMode",
    "MixedPrecision",
    "SelectBy",
    "TrainConfig",
    "ValidationCrop",
    "check_type",
    "choice_of",
    "command_line_messages",
    "default_output",
    "load_config_file",
    "option_ref",
    "parse_nested",
]


class CropMode(StrEnum):
    """How a training image becomes a ``patch_size`` square."""

    #: Resize(patch) + CenterCrop(patch) (the paper's ImageNet setting)
    CENTER = "center"
    #: RandomCrop(patch) + horizontal flip (the paper's COCO setting)
    RANDOM = "random"


class ValidationCrop(StrEnum):
    """What of a validation image the validation sees."""

    #: Resize + CenterCrop to ``patch_size``, in batches
    CENTER = "center"
    #: the whole image, one at a time
    FULL = "full"


class MixedPrecision(StrEnum):
    """The ``amp`` setting: how the training forward runs on a GPU."""

    #: bf16 on GPUs that support it, else fp16; off on the CPU
    AUTO = "auto"
    #: float32 throughout
    OFF = "off"
    #: bfloat16 autocast
    BF16 = "bf16"
    #: float16 autocast with loss scaling
    FP16 = "fp16"


class SelectBy(StrEnum):
    """The validation metric that picks the best adapter."""

    #: the rate-accuracy objective
    LOSS = "loss"
    #: the perceptual (task) distortion alone
    TASK_LOSS = "task_loss"


#: the values of :class:`CropMode` (``--crop``)
CROP_MODES = CropMode.values()

#: settings a task's ``training_defaults`` may provide, and the value used when neither
#: the task nor the user gives one
FALLBACK_DEFAULTS: Dict[str, Any] = {
    "epochs": 40,
    "batch_size": 8,
    "patch_size": 256,
    "crop": CropMode.RANDOM,
    "lr": 1e-4,
    # the authors' training scripts build MultiStepLR(milestones=[]): a constant rate
    "lr_milestones": (),
    "lr_gamma": 0.1,
    "clip_max_norm": 1.0,
    "samples_per_epoch": None,
}
TASK_DEFAULT_KEYS = tuple(FALLBACK_DEFAULTS)

#: upper bounds of the settings that size memory or processes: a patch of 4096 x 4096
#: pixels is the default ``max_pixels``, and more workers than this only cost memory
MAX_VALUES = {"patch_size": 4096, "workers": 256}

#: the deepest nesting of lists and tables in settings (the options are flat: an option's
#: list is at depth 3 of a config file); deeper ones would exhaust Python's recursion
MAX_NESTING = 32


T = TypeVar("T")


def given(value: Optional[T]) -> T:
    """A setting that :meth:`TrainConfig.resolve` has filled (never ``None`` after it)."""
    assert value is not None, "the training settings were not resolved"
    return value


class ConfigError(ValueError):
    """Invalid training settings (the message names the option and what is allowed)."""


# ---------------------------------------------------------------------------------- messages
#: whether messages name settings by their command-line flags (inside
#: :func:`command_line_messages`) or, the default, by their :class:`TrainConfig` fields
_COMMAND_LINE: ContextVar[bool] = ContextVar("compressai_transtic_training_command_line", default=False)

#: the flags that are not the field's name with dashes
_FLAGS = {"lmbda": "--lambda", "prompt_options": "--adapter-option", "task_options": "--task-option"}
#: the value of a flag given alone (``--resume`` is ``resume="last"``)
_FLAG_ALONE = {"resume": "last"}
_NO_VALUE = object()


@contextmanager
def command_line_messages() -> Iterator[None]:
    """Within it, messages name settings as the command line spells them (``--batch-size``),
    not as :class:`TrainConfig` fields (``batch_size``); ``compressai-transtic train`` runs
    inside it."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def option_ref(name: str, value: Any = _NO_VALUE) -> str:
    """How a message names the setting ``name`` (a :class:`TrainConfig` field), with a
    value to give it: the field (``batch_size``, ``epochs=3``, ``arch='tic-sft'``), or
    inside :func:`command_line_messages` the flag (``--batch-size``, ``--epochs 3``,
    ``--arch tic-sft``, ``--resume``)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not _COMMAND_LINE.get():
        return name if value is _NO_VALUE else f"{name}={value!r}"
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    if value is _NO_VALUE or (name in _FLAG_ALONE and value == _FLAG_ALONE[name]):
        return flag
    return f"{flag} {shlex.quote(str(value))}"


def default_output(task: str, quality: int, arch: str = "transtic", variant: Optional[str] = None) -> str:
    """The output folder of a run given none: ``runs/<task>-q<quality>`` for TransTIC's
    default prompts, the architecture and any other variant in front otherwise, so that
    runs of the same task and quality do not share a folder (``runs/tic-sft-cls-q1``,
    ``runs/transtic-shallow-cls-q1``)."""
    name = f"{task}-q{quality}"
    if arch != "transtic" or variant not in (None, "deep"):
        name = "-".join([arch, *([variant] if variant is not None else []), name])
    return os.path.join("runs", name)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a prompt-training run.

    Fields left ``None`` are filled by :meth:`resolve` from the task's
    ``training_defaults`` (then :data:`FALLBACK_DEFAULTS`).

    Args:
        task: registered task name (``cls``, ``det``, ``seg`` or a plugin's).
        dataset: training images: any folder, searched recursively (ImageNet-style
            class folders, COCO ``train2017``, your own images).
        output: output directory (default :func:`default_output`: ``runs/<task>-q<quality>``
            for TransTIC's default prompts, e.g. ``runs/tic-sft-cls-q1`` for a baseline).
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
            / ``--prompt-option`` on the command line), e.g. ``{"encoder_mask": "aligned"}``;
            each of its field's type, integer sizes at most 512 (``adapters.MAX_ADAPTER_SIZE``).
        init_adapter: adapter file to start from instead of freshly initialised prompts.
        task_weights: recognition network weights: ``default`` (torchvision's file),
            a path, or ``random`` (tests only: the loss is then meaningless).
        task_options: further constructor options of the task (e.g. ``backend``), each of
            its parameter's type.
        val_dataset: validation images (folder); enables best-checkpoint selection.
        val_fraction: fraction of the training images held out for validation instead
            (deterministic split by ``seed``); 0 disables.
        val_limit: validate on at most this many images (evenly spaced).
        val_crop: a :class:`ValidationCrop` (or its value).
        epochs: training epochs.
        batch_size: GLOBAL batch size (split evenly over the processes of a
            distributed run, so results do not depend on the number of processes).
        patch_size: side of the training crops (at most 4096, see :data:`MAX_VALUES`).
        crop: a :class:`CropMode` (or its value).
        lr: Adam learning rate.
        lr_milestones: epochs after which the rate is multiplied by ``lr_gamma``
            (``MultiStepLR``, stepped once per epoch).
        lr_gamma: factor of each step.
        clip_max_norm: gradient-norm clipping of the prompt parameters (0: off).
        samples_per_epoch: images drawn (without replacement) per epoch; default all.
        seed: seed of initialisation, data order, crops and quantization noise.
        workers: data-loading processes per training process (default min(4, CPUs);
            at most 256).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: a :class:`MixedPrecision` (or its value).
        deterministic: ask PyTorch for deterministic kernels (slower on GPU).
        resume: ``last`` (the output directory's checkpoint, which must exist),
            ``auto`` (resume when it exists), or a checkpoint path.
        select_by: a :class:`SelectBy` (or its value).
        save_every: also keep the adapter of every N-th epoch (0: only last/best/final).
        checkpoint_every: additionally checkpoint every N steps inside an epoch (0: off).
        log_every: steps between log lines / CSV rows / TensorBoard points.
        verify_images: the check of every image before training, an
            :class:`~compressai_transtic.filekinds.ImageCheck` (or its value).
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
    val_crop: ValidationCrop = ValidationCrop.CENTER
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    patch_size: Optional[int] = None
    crop: Optional[CropMode] = None
    lr: Optional[float] = None
    lr_milestones: Optional[Tuple[int, ...]] = None
    lr_gamma: Optional[float] = None
    clip_max_norm: Optional[float] = None
    samples_per_epoch: Optional[int] = None
    seed: int = 0
    workers: Optional[int] = None
    device: str = "auto"
    amp: MixedPrecision = MixedPrecision.AUTO
    deterministic: bool = False
    resume: Optional[str] = None
    select_by: SelectBy = SelectBy.LOSS
    save_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 50
    verify_images: ImageCheck = ImageCheck.HEADER
    max_pixels: int = 2**24  # compressai_transtic.imageio.DEFAULT_MAX_PIXELS (not imported: it loads torch)
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        """Normalise the values (paths to strings, ``lr_milestones`` to a sorted tuple)
        and check their types.

        Raises:
            ConfigError: naming the first option whose value is not of its field's type.
        """
        for f in fields(self):
            value = _normalised(f.name, getattr(self, f.name), str(f.type).startswith("Optional["))
            check_type(_option_name(f.name), value, f.type)
            object.__setattr__(self, f.name, value)

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "settings") -> "TrainConfig":
        """Build from a mapping whose keys are field names (``-`` allowed for ``_``).

        Raises:
            ConfigError: unknown keys (the message lists the known ones) or a value of
                the wrong type.
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
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def merged(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``overrides`` (field name -> value) applied."""
        base = asdict(self)
        base.update(overrides)
        return TrainConfig.from_dict(base)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable form with the command line's names (``lambda``, not the
        field's ``lmbda``; tuples become lists), which :meth:`from_dict` reads back."""
        d = {("lambda" if k == "lmbda" else k): _plain(v) for k, v in asdict(self).items()}
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
            raise ConfigError(f"no task given: pass {option_ref('task')} (e.g. cls, det, seg)")
        if not self.dataset:
            raise ConfigError(f"no training images given: pass {option_ref('dataset')} (their folder)")
        filled: Dict[str, Any] = {}
        for key in TASK_DEFAULT_KEYS:
            if getattr(self, key) is None:
                filled[key] = task_defaults.get(key, FALLBACK_DEFAULTS[key])
        try:
            filled["lmbda"] = float(default_lambda(self.quality) if self.lmbda is None else self.lmbda)
        except ValueError as exc:
            raise ConfigError(f"{exc}; pass {option_ref('lmbda')}") from None
        if self.variant is None and self.arch == "transtic":  # TransTIC's default preset, named in the config
            filled["variant"] = "deep"
        if self.output is None:
            filled["output"] = default_output(self.task, self.quality, self.arch, self.variant)
        if self.workers is None:
            filled["workers"] = min(4, os.cpu_count() or 1)
        resolved = replace(self, **filled)
        resolved.validate()
        return resolved

    def validate(self) -> None:
        """Check the values of a resolved configuration.

        Raises:
            ConfigError: naming the first invalid option.
        """
        self._check_numbers()
        for name, kind in _CHOICES.items():  # unset ones (a task default of None) included
            if getattr(self, name) is None:
                choice_of(name, kind, None)  # refuses it, naming the values
        if self.quality not in (1, 2, 3, 4) and self.base is None:
            raise ConfigError(f"quality must be 1..4 to pick a released base codec (got {self.quality})")
        if self.val_fraction and self.val_dataset:
            raise ConfigError("give either val_dataset or val_fraction, not both")

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
        for name, most in MAX_VALUES.items():
            if getattr(self, name) > most:
                raise ConfigError(f"{name} must be at most {most} (got {getattr(self, name)})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if self.lmbda is not None and self.lmbda < 0:
            raise ConfigError(f"lambda must be >= 0 (got {self.lmbda})")
        if any(m < 1 for m in self.lr_milestones or ()):
            raise ConfigError(f"lr_milestones must be epoch numbers >= 1 (got {self.lr_milestones})")


#: the options with a fixed set of values
_CHOICES: Dict[str, Type[StrEnum]] = {
    "crop": CropMode,
    "val_crop": ValidationCrop,
    "amp": MixedPrecision,
    "select_by": SelectBy,
    "verify_images": ImageCheck,
}


#: the options that name a file, a folder or a URL (``os.PathLike`` values become strings)
_PATH_OPTIONS = ("base", "init_adapter", "val_dataset", "resume", "output", "dataset", "task_weights")


def _option_name(field_name: str) -> str:
    """The option's name in messages and on the command line (``lambda``, not ``lmbda``)."""
    return "lambda" if field_name == "lmbda" else field_name


def _normalised(name: str, value: Any, optional: bool) -> Any:
    """A value read from JSON/TOML/argparse/Python in the form of its field; a value of
    another type is returned unchanged, for :func:`check_type` to name. A setting with a
    fixed set of values becomes its member, refused outside them (``None`` only where the
    field is ``optional``)."""
    if name == "lr_milestones":
        return _milestones(value)
    if name in _CHOICES and not (optional and value is None):
        return choice_of(name, _CHOICES[name], value)
    if name in ("prompt_options", "task_options") and value is None:
        return {}
    if name in _PATH_OPTIONS and isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def choice_of(option: str, kind: Type[StrEnum], value: Any) -> StrEnum:
    """``value`` as a member of ``kind``, or the :class:`ConfigError` naming ``option``
    and the values it takes."""
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{option} must be one of {', '.join(kind.values())} (got {_SHOWN.repr(value)})") from None


def _plain(value: Any) -> Any:
    """A setting as JSON and ``torch.load(weights_only=True)`` take it: members as their values."""
    return value.value if isinstance(value, StrEnum) else value


def _milestones(value: Any) -> Any:
    """Epoch numbers from a list or a text such as ``"30, 60"``, as a sorted tuple."""
    if isinstance(value, str):
        try:
            value = [int(m) for m in value.replace(",", " ").split()]
        except ValueError:
            return value
    if isinstance(value, (list, tuple)) and all(map(_is_int, value)):
        return tuple(sorted(value))
    return value


def _is_int(value: Any) -> bool:
    """An integer that fits 64 bits (what torch and NumPy take); ``True`` is no number."""
    return is_integer(value) and -(2**63) <= value < 2**63


#: annotation (as written) -> what a value must be, and the test of it
_TYPES: Dict[str, Tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("a 64-bit integer", _is_int),
    "float": ("a finite number", is_finite_number),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "Tuple[int, ...]": ("a list of 64-bit integers", lambda v: isinstance(v, (list, tuple)) and all(map(_is_int, v))),
    "Dict[str, Any]": ("a table of options", lambda v: isinstance(v, dict)),
}

_SHOWN = reprlib.Repr()  # values in messages: long or deeply nested ones abbreviated
_SHOWN.maxstring = _SHOWN.maxother = 100


def check_type(option: str, value: Any, annotation: Any) -> None:
    """Check ``value`` against a field's or parameter's type ``annotation``: ``int``,
    ``float``, ``bool``, ``str``, ``Tuple[int, ...]``, ``Dict[str, Any]`` or
    ``Optional[...]`` of one (written so, or the type itself); others are not checked.

    Raises:
        ConfigError: naming ``option``, what it must be, and the value.
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    inner = text[len("Optional[") : -1] if text.startswith("Optional[") else text
    if inner not in _TYPES or (value is None and inner != text):
        return
    what, ok = _TYPES[inner]
    if not ok(value):
        raise ConfigError(f"{option} must be {what} (got {_SHOWN.repr(value)})")


def parse_nested(loads: Callable[[str], Any], text: str, what: str) -> Any:
    """``loads(text)``, refused when it nests lists or tables deeper than :data:`MAX_NESTING`.

    Raises:
        ConfigError: too deep (naming ``what``); ``loads``'s own errors pass through.
    """
    try:
        data = loads(text)
        too_deep = nests_deeper(data, MAX_NESTING)
    except RecursionError:
        too_deep = True
    if too_deep:
        raise ConfigError(f"{what} nests lists or tables more than {MAX_NESTING} deep; the options are flat")
    return data


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
    problem = regular_file_problem(path)
    if problem is not None:
        raise ConfigError(f"config file {path}: {problem}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = parse_nested(json.loads, path.read_text(encoding="utf-8"), f"config file {path}")
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
            data = parse_nested(tomllib.loads, path.read_text(encoding="utf-8"), f"config file {path}")
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
