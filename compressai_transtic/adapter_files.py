"""Adapter files: the trainable parts of an adapted codec, saved apart from its base codec.

An *adapter* is what training changes in an adapted codec (TransTIC's prompts, TIC+SFT's
transform layers ...): the tensors whose names hold the architecture's keyword. Its
file records the architecture, the configuration, the task and the hash of the base
codec it was trained on, so that one loaded base codec can serve several tasks by
switching adapters, and an adapter is refused by a model of another architecture,
configuration or base codec.

A leaf module: it imports no model (the models are passed in and used through the
methods of :class:`~compressai_transtic.models.AdaptedCodec`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from .fileio import atomic_torch_save
from .filekinds import regular_file_problem
from .integrity import tensor_problems
from .torchfile import load_torch_file

__all__ = [
    "ADAPTER_FORMAT",
    "MAX_ADAPTER_SIZE",
    "AdapterError",
    "AdapterMismatchError",
    "base_codec_hash",
    "load_adapter",
    "read_adapter",
    "save_adapter",
]

logger = logging.getLogger(__name__)

ADAPTER_FORMAT = 1

#: the largest integer size (channels, prompts, levels) of an adapted codec's
#: configuration: 16 x TransTIC's default generator width, 2 x the largest default width
#: of the baselines; parameters and activations grow with its square. The trainer
#: bounds ``--adapter-option`` sizes by it too.
MAX_ADAPTER_SIZE = 512

#: the architecture of adapter files without an ``arch`` entry
_DEFAULT_ARCH = "transtic"

# buffers derived from the parameters: left out of the base codec's hash
_DERIVED_SUFFIXES = (
    "_quantized_cdf",
    "_offset",
    "_cdf_length",
    "scale_table",
    "attn_mask",
    "relative_position_index",
    "target",
    ".bound",
    "scale_bound",
)


class AdapterError(ValueError):
    """An adapter file that cannot be read or used."""


class AdapterMismatchError(AdapterError):
    """An adapter made for another architecture, configuration or base codec."""


def base_codec_hash(state: Union[Any, Mapping[str, Tensor]]) -> str:
    """SHA-256 over the base codec's parameters (names, shapes, dtypes and values).

    Entropy-coder tables and masks are left out: they are derived from the parameters.
    Accepts an adapted codec (its ``base_state_dict()``) or a TIC state dict.
    """
    sd = state.base_state_dict() if hasattr(state, "base_state_dict") else state
    digest = hashlib.sha256()
    for key in sorted(sd):
        if key.endswith(_DERIVED_SUFFIXES):
            continue
        t = sd[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def save_adapter(
    model: Any,
    path: Union[str, os.PathLike],
    task: Optional[str] = None,
    metadata: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write the trainable parts (and their buffers) of an adapted codec.

    The file (a torch pickle readable with ``weights_only=True``) holds
    ``adapter_format``, ``arch``, ``config``, ``task``, ``base_sha256`` (see
    :func:`base_codec_hash`), ``state_dict`` and ``metadata``. It is written atomically.

    Args:
        model: an :class:`~compressai_transtic.models.AdaptedCodec` (TransTIC, TIC+SFT ...).
        path: destination file.
        task: name of the task the adapter was trained for.
        metadata: JSON-like extra information (training settings, metrics, ...).

    Returns:
        The path written.
    """
    path = Path(path)
    payload: Dict[str, Any] = {
        "adapter_format": ADAPTER_FORMAT,
        "arch": model.arch,
        "config": model.config.to_dict(),
        "task": task,
        "base_sha256": base_codec_hash(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.adapter_state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    atomic_torch_save(payload, path)
    logger.info("saved %s %s adapter (%d tensors) to %s", task or "", model.arch, len(payload["state_dict"]), path)
    return path


def read_adapter(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read and check an adapter file without applying it; ``arch`` is always filled."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None:
        raise AdapterError(f"adapter file {path}: {problem}")
    payload = load_torch_file(path, AdapterError)
    if not isinstance(payload, dict) or payload.get("adapter_format") is None:
        raise AdapterError(
            f"{path} is not an adapter file (no 'adapter_format' entry); "
            "for a full checkpoint use compressai_transtic.checkpoint.load_model"
        )
    if payload["adapter_format"] != ADAPTER_FORMAT:
        raise AdapterError(
            f"{path}: adapter format {payload['adapter_format']} is not supported (expected {ADAPTER_FORMAT})"
        )
    for key in ("config", "base_sha256", "state_dict"):
        if key not in payload:
            raise AdapterError(f"{path}: adapter is missing its {key!r} entry")
    payload.setdefault("arch", _DEFAULT_ARCH)
    if not isinstance(payload["arch"], str) or not isinstance(payload["config"], dict):
        raise AdapterError(f"{path}: the adapter's 'arch' or 'config' entry is malformed")
    if not isinstance(payload["base_sha256"], str) or not isinstance(payload.get("task"), (str, type(None))):
        raise AdapterError(f"{path}: the adapter's 'base_sha256' or 'task' entry is not text")
    tensors = payload["state_dict"]
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in tensors.items()
    ):
        raise AdapterError(f"{path}: the adapter's 'state_dict' entry is not a dict of tensors")
    problems = tensor_problems(tensors)
    if problems:
        raise AdapterError(f"{path}: {'; '.join(problems)}; the file is damaged or was modified")
    return payload


def adapter_config(payload: Mapping[str, Any], config_class: Any, source: str) -> Any:
    """The configuration object of a read adapter, as ``config_class``."""
    try:
        return config_class.from_dict(payload["config"])
    except (TypeError, ValueError) as err:
        raise AdapterError(f"{source}: the adapter's configuration is invalid: {err}") from None


def load_adapter(model: Any, path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Load an adapter into ``model`` in place (the base codec is not touched).

    Every check happens before any tensor of ``model`` changes.

    Args:
        model: the adapted codec whose trainable parts are replaced.
        path: adapter file written by :func:`save_adapter`.

    Returns:
        The adapter's header (``arch``, ``task``, ``config``, ``metadata``, ...).

    Raises:
        AdapterMismatchError: the adapter was made for another architecture, another
            configuration or another base codec.
    """
    payload = read_adapter(path)
    if payload["arch"] != model.arch:
        raise AdapterMismatchError(
            f"adapter {path} holds {payload['arch']} weights, not {model.arch} ones; load it into a "
            f"{payload['arch']} model (compressai_transtic.checkpoint.model_from_adapter builds one)"
        )
    config = adapter_config(payload, type(model.config), str(path))
    if config != model.config:
        raise AdapterMismatchError(
            f"adapter {path} was made for the {model.arch} configuration {config}, but the model uses "
            f"{model.config}; build the model with that configuration"
        )
    expected = base_codec_hash(model)
    if payload["base_sha256"] != expected:
        raise AdapterMismatchError(
            f"adapter {path} was trained on another base codec (base sha256 "
            f"{payload['base_sha256'][:12]}..., this model's base is {expected[:12]}...); "
            "load the matching base weights first"
        )
    try:
        model.load_adapter_state_dict(payload["state_dict"])
    except ValueError as err:  # keys or shapes: checked before any tensor changed
        raise AdapterMismatchError(f"adapter {path}: {err}") from None
    header = {k: v for k, v in payload.items() if k != "state_dict"}
    logger.info("loaded %s %s adapter from %s", payload.get("task") or "", model.arch, path)
    return header
