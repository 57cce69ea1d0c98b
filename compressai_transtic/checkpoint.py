"""Reading TIC / TransTIC checkpoints in the layouts found in the wild: the one loader.

It sits above the models: files (or URLs, fetched by :mod:`.download`) are read with
``torch.load(weights_only=True)``, unwrapped, checked finite, converted by
:func:`~compressai_transtic.state_dicts.checkpoint_filter_fn` and loaded by the
class's ``from_state_dict``. The layouts it reads:

- wrappers: a bare state dict, or a dict holding it under ``network``,
  ``state_dict`` or ``model_state_dict`` (CompressAI's training script, the
  authors' release files);
- ``module.`` prefixes left by ``DataParallel``;
- released files that lack the entropy-coder tables (``base_codec_4`` has no
  ``entropy_bottleneck._quantized_cdf`` and friends): they are filled with
  empty tables so that strict loading works, and :func:`needs_entropy_update`
  tells the caller to run ``model.update(force=True)``.

Everything is read with ``torch.load(weights_only=True)``: a file holding
arbitrary Python objects is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional, Type, Union

from torch import Tensor, nn

from .adapter_files import AdapterError, adapter_config, load_adapter, read_adapter
from .download import fetch_url
from .filekinds import regular_file_problem
from .integrity import tensor_problems
from .models import ADAPTED_CODECS, TIC, AdaptedCodec
from .state_dicts import (
    ADAPTER_FORMAT_KEY,
    ARCHITECTURES,
    WRAPPER_KEYS,
    ArchitectureMismatchError,
    CheckpointError,
    architecture_hints,
    check_architecture,
    checkpoint_filter_fn,
    detect_architecture,
    needs_entropy_update,
    unknown_architecture_message,
)
from .torchfile import load_torch_file

logger = logging.getLogger(__name__)

__all__ = [
    "ArchitectureMismatchError",
    "CheckpointError",
    "architecture_hints",
    "check_architecture",
    "checkpoint_filter_fn",
    "detect_architecture",
    "load_model",
    "load_state_dict",
    "model_from_adapter",
    "model_from_state_dict",
    "needs_entropy_update",
]

StateDict = Dict[str, Tensor]


def _is_url(path_or_url: Union[str, os.PathLike]) -> bool:
    return isinstance(path_or_url, str) and path_or_url.startswith(("http://", "https://"))


def _unwrap(obj: Any, source: str) -> Any:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a dict of tensors (state dict).")
    if ADAPTER_FORMAT_KEY in obj:
        return dict(obj)
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state_dict: StateDict = {}
    not_tensors = []
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            not_tensors.append(key)
            continue
        state_dict[key[len("module.") :] if key.startswith("module.") else key] = value
    if not_tensors:
        raise CheckpointError(
            f"{source}: not a state dict: entries {sorted(map(str, not_tensors))[:5]} are "
            f"not tensors and none of {list(WRAPPER_KEYS)} holds the weights."
        )
    if not state_dict:
        raise CheckpointError(f"{source}: the state dict is empty.")
    problems = tensor_problems(state_dict)
    if problems:
        raise CheckpointError(
            f"{source}: {'; '.join(problems)}; the file is damaged or was modified: "
            "delete it and fetch or export it again."
        )
    return state_dict


def load_state_dict(
    path_or_url: Union[str, os.PathLike], map_location: Any = "cpu", progress: bool = True
) -> Dict[str, Any]:
    """Read the weights of a checkpoint file (or URL) as a flat state dict.

    Accepts a bare state dict or a dict wrapping it under ``network``,
    ``state_dict`` or ``model_state_dict``, and strips ``module.`` prefixes.
    An adapter file (a dict with an ``adapter_format`` key) is returned as is,
    so that :func:`detect_architecture` can name it.

    Args:
        path_or_url: a local file, or an ``http(s)://`` URL, fetched through the
            torch hub cache like the zoo weights.
        map_location: passed to ``torch.load``.
        progress: show a download progress bar (stderr) for URLs.

    Returns:
        ``{key: tensor}`` (or the adapter dict).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is not a checkpoint, is truncated, or holds
            arbitrary Python objects (refused by ``weights_only=True``).
    """
    if _is_url(path_or_url):
        path = fetch_url(
            str(path_or_url), progress=progress, check=lambda p: _unwrap(load_torch_file(p, CheckpointError), str(p))
        )
    else:
        path = Path(path_or_url).expanduser()
    problem = regular_file_problem(path)
    if problem is not None:
        raise FileNotFoundError(f"checkpoint file {path}: {problem}")
    obj = load_torch_file(path, CheckpointError, map_location)
    return _unwrap(obj, str(path))


#: the class of each architecture name
CLASSES: Dict[str, Type[TIC]] = {"tic": TIC, **ADAPTED_CODECS}


def model_from_state_dict(state_dict: Mapping[str, Tensor], arch: Optional[str] = None, source: str = "") -> nn.Module:
    """Build the model holding ``state_dict`` (TIC, TransTIC or a baseline), ready to code.

    The architecture is taken from the keys when ``arch`` is None; the class's
    ``from_state_dict`` converts the layout (:func:`checkpoint_filter_fn`, once),
    loads strictly, and rebuilds entropy-coder tables the weights lack (once).

    Args:
        state_dict: weights, e.g. from :func:`load_state_dict`.
        arch: an architecture name (:data:`CLASSES`: ``"tic"``, ``"transtic"``, ``"tic-sft"``,
            ``"tic-chsel"``, ``"tic-roi"``) or None (detect).
        source: file name used in error messages.

    Raises:
        ArchitectureMismatchError: ``arch`` is given and the weights are another one.
        CheckpointError: the architecture cannot be recognised, or the weights do not
            fit it (keys, shapes) or are unusable (NaN, Inf, sparse, expanded views).
    """
    found = detect_architecture(state_dict)
    if found == "unknown":
        raise CheckpointError(unknown_architecture_message(state_dict, source))
    if arch is not None and found != arch:
        raise ArchitectureMismatchError(found, arch, source)
    if found not in ARCHITECTURES:
        raise ArchitectureMismatchError(found, arch or " or ".join(ARCHITECTURES), source)
    try:
        return CLASSES[found].from_state_dict(state_dict)
    except CheckpointError as err:  # keys, shapes or values, found before the model changed
        raise CheckpointError(f"{source}: {err}" if source else str(err)) from None


def load_model(
    arch: Optional[str], path: Union[str, os.PathLike], map_location: Any = "cpu", progress: bool = True
) -> nn.Module:
    """Load a TIC or TransTIC checkpoint, picking the class from the keys.

    Args:
        arch: ``"tic"``, ``"transtic"``, or None to detect it from the keys.
        path: checkpoint file or URL (any layout :func:`load_state_dict` reads).
        map_location: passed to ``torch.load``.
        progress: show a download progress bar (stderr) for URLs.

    Returns:
        The model (train mode, like CompressAI's zoo), entropy tables built.

    Raises:
        ArchitectureMismatchError: the file holds another architecture than ``arch``.
        CheckpointError: unreadable file or unrecognised keys.
    """
    state_dict = load_state_dict(path, map_location=map_location, progress=progress)
    return model_from_state_dict(state_dict, arch, source=os.fspath(path))


def model_from_adapter(base: TIC, path: Union[str, os.PathLike]) -> AdaptedCodec:
    """The adapted codec of an adapter file on ``base``: the architecture and configuration
    come from the file, the frozen base codec from ``base`` (whose hash must match).

    Raises:
        AdapterError: unreadable file, or an architecture this installation does not know.
        AdapterMismatchError: the adapter was trained on another base codec.
    """
    header = read_adapter(path)
    codec = ADAPTED_CODECS.get(header["arch"])
    if codec is None:
        raise AdapterError(
            f"{path}: adapter of unknown architecture {header['arch']!r}; known: {sorted(ADAPTED_CODECS)}"
        )
    model = codec.from_base(base, config=adapter_config(header, codec.config_class, os.fspath(path)))
    load_adapter(model, path)
    return model
