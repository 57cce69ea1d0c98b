"""Checks of a training checkpoint, field by field: when it is read
(:func:`check_checkpoint`) and against the run that continues it
(:func:`check_training_state`), so that a damaged or foreign checkpoint is refused,
naming the file and the fields, before anything is written or trained."""

from __future__ import annotations

import reprlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Tuple

from torch import Tensor

from ..integrity import tensor_problems
from ..jsonvalues import is_finite_number
from .config import option_ref
from .epoch_metrics import MetricSums
from .randomness import rng_state_problems

__all__ = [
    "ResumeError",
    "canonical",
    "check_checkpoint",
    "check_training_state",
    "failed_checks",
    "refuse",
]


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run (the message says why)."""


def canonical(value: Any) -> Any:
    """A value in a form that compares equal across JSON, TOML and Python spellings
    (lists and tuples alike, dicts as sorted items, integers as floats)."""
    if isinstance(value, (list, tuple)):
        return tuple(canonical(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(((k, canonical(v)) for k, v in value.items()), key=lambda item: repr(item[0])))
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


#: how deeply a checkpoint's containers may nest (the trainer's nest 3 deep)
MAX_DEPTH = 16
#: fields named in one message at most
SHOWN = 5

_MISSING = object()

#: a check of one field: its name, its value, whether the value is right, what it should be
_Check = Tuple[str, Any, Callable[[Any], bool], str]


def _is(*types: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, types) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is(int)(value) and value >= 0


def _is_number(value: Any) -> bool:
    """A finite number of at least 0."""
    return is_finite_number(value) and value >= 0


def _is_positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _are_numbers(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)


def _has_string_keys(value: Mapping[Any, Any]) -> bool:
    return all(isinstance(key, str) for key in value)


_COUNT = (_is_count, "a count of at least 0")
_MAPPING = (_is(dict), "a mapping")

#: the fields of a checkpoint: whether a value is right, and what it should be
_FIELDS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "config": _MAPPING,
    "adapter": _MAPPING,
    "optimizer": _MAPPING,
    "scheduler": _MAPPING,
    "scaler": _MAPPING,
    "epoch": _COUNT,
    "step_in_epoch": _COUNT,
    "global_step": _COUNT,
    "epoch_sums": (_is(Tensor, type(None)), "a tensor or None"),
    "best": _MAPPING,
    "rng": _MAPPING,
    "dataset_digest": (_is(str), "a string"),
    "num_train_images": _COUNT,
}

#: the settings of the optimiser, scheduler and loss scaler that training changes, and
#: what they must be; their other settings must be this run's
_CHANGING: Dict[str, Dict[str, Tuple[Callable[[Any], bool], str]]] = {
    "optimizer": {"lr": (_is_number, "a finite number of at least 0")},
    "scheduler": {
        "last_epoch": _COUNT,
        "_step_count": _COUNT,
        "_last_lr": (_are_numbers, "a list of finite numbers of at least 0"),
    },
    "scaler": {"scale": (_is_positive, "a finite number above 0"), "_growth_tracker": _COUNT},
}


def check_checkpoint(checkpoint: Mapping[str, Any], source: str) -> None:
    """Refuse a training checkpoint that this trainer cannot continue from, naming the fields:

    - containers nested more than :data:`MAX_DEPTH` deep; tensors, wherever they are, that
      :func:`~compressai_transtic.integrity.tensor_problems` refuses (NaN or Inf, sparse,
      complex, expanded views that would allocate far more than the file holds);
    - a missing field, one of another type, a negative count;
    - adapter, optimiser, progress and random-generator states unlike those
      :func:`run_state` writes (against the run: :func:`check_resume` and
      :func:`check_training_state`).

    Raises:
        ResumeError: naming ``source`` and the fields.
    """
    refuse(source, _tensor_problems(checkpoint))
    refuse(source, failed_checks((name, checkpoint.get(name, _MISSING), *rule) for name, rule in _FIELDS.items()))
    parts = [*_adapter_checks(checkpoint), *_optimizer_checks(checkpoint), *_progress_checks(checkpoint)]
    refuse(source, failed_checks(parts))
    refuse(source, [f"rng.{problem}" for problem in rng_state_problems(checkpoint["rng"])])


def check_training_state(
    checkpoint: Mapping[str, Any], optimizer: Any, scheduler: Any, scaler: Any, source: str
) -> None:
    """Refuse optimiser, scheduler and loss-scaler states that do not fit this run's.

    Adam's parameter groups must be this run's (their parameters and settings; the
    learning rate is the schedule's), each parameter's state a step count and moments
    shaped like the parameter; the scheduler's and scaler's settings must be this run's
    but for what training changes (:data:`_CHANGING`). A scaler state saved without
    loss scaling (empty) fits any run.

    Raises:
        ResumeError: naming ``source`` and the fields.
    """
    saved = checkpoint["optimizer"]
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    problems = _group_problems(saved["param_groups"], optimizer.state_dict()["param_groups"])
    problems += _moment_problems(saved["state"], parameters)
    live = scheduler.state_dict()
    problems += _setting_problems(checkpoint["scheduler"], live, "scheduler")
    problems += [
        f"scheduler.{key} is not part of a scheduler's state (loading it would replace the scheduler's {key})"
        for key in checkpoint["scheduler"]
        if key not in live and hasattr(scheduler, key)
    ]
    if checkpoint["scaler"] and scaler.is_enabled():
        live = scaler.state_dict()
        problems += _setting_problems(checkpoint["scaler"], live, "scaler", required=live)
    refuse(source, problems)


def refuse(source: str, problems: List[str]) -> None:
    if problems:
        more = [f"{len(problems) - SHOWN} more problems"] if len(problems) > SHOWN else []
        advice = f"Resume from an intact checkpoint, or start a new run in another {option_ref('output')} directory."
        raise ResumeError(f"cannot resume from {source}: {'; '.join(problems[:SHOWN] + more)}. {advice}")


def failed_checks(checks: Iterable[_Check]) -> List[str]:
    """The failed checks, each as ``"<field> is <value>, not <what it should be>"``."""
    return [
        f"{field} is missing" if value is _MISSING else f"{field} is {_describe(value)}, not {what}"
        for field, value, ok, what in checks
        if value is _MISSING or not ok(value)
    ]


def _describe(value: Any) -> str:
    """A value in a few words (never a whole tensor or a long list)."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return reprlib.repr(value)


def _tensor_problems(checkpoint: Mapping[str, Any]) -> List[str]:
    try:
        return tensor_problems(_tensors(checkpoint))
    except ValueError as exc:  # nested too deeply
        return [str(exc)]


def _tensors(value: Any, name: str = "", depth: int = 0) -> Dict[str, Tensor]:
    """Every tensor in ``value`` and its containers, by dotted name.

    Raises:
        ValueError: containers nested more than :data:`MAX_DEPTH` deep.
    """
    if isinstance(value, Tensor):
        return {name: value}
    if isinstance(value, Mapping):
        items: Iterable[Tuple[Any, Any]] = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return {}
    if depth >= MAX_DEPTH:
        raise ValueError(f"{name} nests containers more than {MAX_DEPTH} deep")
    found: Dict[str, Tensor] = {}
    for key, item in items:
        found.update(_tensors(item, f"{name}.{key}" if name else str(key), depth + 1))
    return found


def _adapter_checks(checkpoint: Mapping[str, Any]) -> List[_Check]:
    adapter = checkpoint["adapter"]
    return [
        ("config", checkpoint["config"], _has_string_keys, "a mapping of setting names"),
        ("adapter.signature", adapter.get("signature", _MISSING), _is_signature, "a mapping with 'arch' and 'config'"),
        ("adapter.base_sha256", adapter.get("base_sha256", _MISSING), _is(str), "a string"),
        ("adapter.state_dict", adapter.get("state_dict", _MISSING), _is_tensor_table, "a mapping of names to tensors"),
    ]


def _optimizer_checks(checkpoint: Mapping[str, Any]) -> List[_Check]:
    optimizer, scheduler = checkpoint["optimizer"], checkpoint["scheduler"]
    epoch = checkpoint["epoch"]
    return [
        ("optimizer.state", optimizer.get("state", _MISSING), _is_state_table, "a mapping of parameter numbers"),
        ("optimizer.param_groups", optimizer.get("param_groups", _MISSING), _is_group_list, "a list of mappings"),
        ("scheduler", scheduler, _has_string_keys, "a mapping of names"),
        # the schedule steps once per epoch
        (
            "scheduler.last_epoch",
            scheduler.get("last_epoch", _MISSING),
            lambda v: _is_count(v) and v == epoch,
            f"the checkpoint's epoch {epoch} (the schedule steps once per epoch)",
        ),
        ("scaler", checkpoint["scaler"], _has_string_keys, "a mapping of names"),
    ]


def _progress_checks(checkpoint: Mapping[str, Any]) -> List[_Check]:
    epoch, best = checkpoint["epoch"], checkpoint["best"]
    size = MetricSums("cpu").values.numel()
    if checkpoint["step_in_epoch"] == 0:  # an epoch boundary
        sums: Tuple[Callable[[Any], bool], str] = (lambda v: v is None, "None at the end of an epoch")
    else:
        sums = (lambda v: _is(Tensor)(v) and v.is_floating_point() and v.shape == (size,), f"{size} sums")
    return [
        ("epoch_sums", checkpoint["epoch_sums"], *sums),
        (
            "best.value",
            best.get("value", _MISSING),
            lambda v: v is None or is_finite_number(v),
            "a finite number or None",
        ),
        (
            "best.epoch",
            best.get("epoch", _MISSING),
            lambda v: v is None or (_is_count(v) and v <= epoch),
            f"an epoch of 0..{epoch} or None",
        ),
    ]


def _is_signature(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("arch"), str) and isinstance(value.get("config"), dict)


def _is_tensor_table(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def _is_state_table(value: Any) -> bool:
    return isinstance(value, dict) and all(
        _is(int)(k) and isinstance(entry, dict) and _has_string_keys(entry) for k, entry in value.items()
    )


def _is_group_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(group, dict) and _has_string_keys(group) for group in value)


def _group_problems(saved: List[Mapping[str, Any]], live: List[Mapping[str, Any]]) -> List[str]:
    """Adam's parameter groups against this run's."""
    if len(saved) != len(live):
        return [f"optimizer.param_groups holds {len(saved)} groups, not this run's {len(live)}"]
    return [
        problem
        for i, (group, run_group) in enumerate(zip(saved, live))
        for problem in _setting_problems(group, run_group, f"optimizer.param_groups.{i}", required=("params",))
    ]


def _setting_problems(
    saved: Mapping[str, Any], live: Mapping[str, Any], field: str, required: Iterable[str] = ()
) -> List[str]:
    """Saved settings against this run's ``live`` ones: those training changes
    (:data:`_CHANGING`) as they must be, the others equal to this run's; the changing
    and ``required`` ones present."""
    changing = _CHANGING[field.split(".")[0]]
    needed = {*changing, *required}
    return failed_checks(
        (f"{field}.{key}", saved.get(key, _MISSING), *(changing.get(key) or _equal_to(live[key])))
        for key in live
        if key in saved or key in needed
    )


def _equal_to(live: Any) -> Tuple[Callable[[Any], bool], str]:
    expected = canonical(live)
    return (lambda value: not _tensors(value) and canonical(value) == expected), f"this run's {reprlib.repr(live)}"


def _moment_problems(state: Mapping[int, Mapping[str, Any]], parameters: List[Tensor]) -> List[str]:
    """Adam's state of each parameter: a step count, and moments shaped like the parameter."""
    n = len(parameters)
    problems = [f"optimizer.state.{i} belongs to none of this run's {n} parameters" for i in state if not 0 <= i < n]
    checks = [
        check
        for i, entry in state.items()
        if 0 <= i < n
        for check in _moment_checks(f"optimizer.state.{i}", entry, tuple(parameters[i].shape))
    ]
    return problems + failed_checks(checks)


def _moment_checks(field: str, entry: Mapping[str, Any], shape: Tuple[int, ...]) -> List[_Check]:
    def moment(value: Any) -> bool:
        return isinstance(value, Tensor) and value.is_floating_point() and tuple(value.shape) == shape

    tensor = f"a floating-point tensor of shape {shape}"
    return [
        (f"{field}.step", entry.get("step", _MISSING), _is_step, "a step count of at least 0"),
        (f"{field}.exp_avg", entry.get("exp_avg", _MISSING), moment, tensor),
        (
            f"{field}.exp_avg_sq",
            entry.get("exp_avg_sq", _MISSING),
            lambda v: moment(v) and not bool((v < 0).any()),
            f"{tensor} without negative values",
        ),
    ]


def _is_step(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.numel() == 1 and not value.is_complex() and float(value) >= 0
    return _is_number(value)
