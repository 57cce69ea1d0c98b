"""Weights of the recognition networks: torchvision's standard files, a path, or random.

A task network gets its weights from one of three sources, chosen by the ``weights``
option of a task (``get_task("det", weights=...)``):

- ``"default"``: torchvision's standard weight file for the network (the files
  ``torchvision.models.*_Weights`` point to), read from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/<file>``, ``~/.cache/torch`` by default) or downloaded
  there with the SHA-256 prefix in its name checked (nothing is printed to stdout). Offline without the file:
  :class:`TaskWeightsUnavailableError`, naming the file, its URL and where to put it.
- a path to a state-dict file (``torch.save`` of ``model.state_dict()``, possibly
  wrapped in ``{"state_dict": ...}`` or ``{"model": ...}``).
- ``"random"`` (or ``None``): random initialisation, no file, no download. Meant for
  tests and for demos without network access; results are meaningless.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.hub

from ..download import FileToFetch
from ..filekinds import regular_file_problem

__all__ = [
    "DEFAULT_WEIGHTS",
    "TaskWeightsUnavailableError",
    "TorchvisionWeights",
    "WeightsOption",
    "hub_checkpoint_path",
    "is_random",
    "load_state_dict_file",
    "normalize_weights_option",
    "resolve_torchvision_state_dict",
]

logger = logging.getLogger(__name__)

#: what a ``weights`` option may be: "default", "random", None (= "random") or a path
WeightsOption = Union[str, os.PathLike, None]

_RANDOM = "random"
#: the ``weights`` option of the network's standard weight file
DEFAULT_WEIGHTS = "default"


class TaskWeightsUnavailableError(RuntimeError):
    """The weights of a recognition network are neither cached nor downloadable.

    Attributes:
        description: what the network is, for humans.
        reason: why the download failed.
        filename: the file's name (e.g. ``resnet50-0676ba61.pth``).
        url: where the file can be downloaded.
        path: where the file is looked for (put it there), or ``None`` where only an
            explicit path can serve.
    """

    def __init__(self, description: str, filename: str, url: str, path: Optional[Path], reason: str) -> None:
        self.description = description
        self.reason = reason
        self.filename = filename
        self.url = url
        self.path = None if path is None else Path(path)
        if self.path is not None:
            where = f"is not in the torch hub cache ({self.path}) and"
            advice = (
                f"Download it on a machine with network access and copy it to {self.path} (the "
                f"directory is $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to ~/.cache/torch), "
                f"or pass the file explicitly with weights=PATH (CLI: --task-weights PATH)."
            )
        else:
            where = "is not cached and"
            advice = "Download it and pass it explicitly with weights=PATH (CLI: --task-weights PATH)."
        super().__init__(
            f"{description}: the weight file {filename!r} {where} could not be downloaded from "
            f"{url} ({reason}). {advice}"
        )

    def to_fetch(self, what: Optional[str] = None) -> FileToFetch:
        """This file as one entry of a :class:`~compressai_transtic.download.WeightsToFetchError`
        (``what``: what it holds, by default the network's description)."""
        return FileToFetch(what or self.description, self.url, self.path, self.reason)


@dataclass(frozen=True)
class TorchvisionWeights:
    """One of torchvision's standard weight files.

    Args:
        description: what the network is, for messages.
        url: torchvision's download URL; its basename (``name-<sha256 prefix>.pth``) is
            the file name in the hub cache.
    """

    description: str
    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def is_random(weights: WeightsOption) -> bool:
    """Whether a ``weights`` option means random initialisation."""
    return weights is None or (isinstance(weights, str) and weights == _RANDOM)


def normalize_weights_option(weights: WeightsOption) -> Union[str, Path]:
    """Canonical form of a ``weights`` option: ``"default"``, ``"random"`` or a ``Path``.

    Args:
        weights: ``"default"``, ``"random"``, ``None`` (random) or a path.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    if is_random(weights):
        return _RANDOM
    if isinstance(weights, str) and weights in (DEFAULT_WEIGHTS, "pretrained"):
        return DEFAULT_WEIGHTS
    path = Path(os.fspath(weights)).expanduser()  # type: ignore[arg-type]
    problem = regular_file_problem(path)
    if problem is not None:
        raise FileNotFoundError(
            f"task weights file {path}: {problem}; pass an existing state-dict file, "
            f"'default' (torchvision's standard weights) or 'random'"
        )
    return path


def hub_checkpoint_path(filename: str) -> Path:
    """Where torch.hub caches a downloaded weight file of this name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_state_dict_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a state dict saved with ``torch.save`` (weights only, on the CPU).

    Accepts a bare state dict or one wrapped under ``state_dict`` or ``model``.

    Args:
        path: the file.

    Raises:
        ValueError: the file does not hold a state dict.
    """
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return dict(obj)


def resolve_torchvision_state_dict(
    spec: TorchvisionWeights, weights: WeightsOption, progress: bool = True
) -> Optional[Dict[str, Any]]:
    """The state dict a ``weights`` option designates, or ``None`` for random init.

    Args:
        spec: the network's standard torchvision file.
        weights: ``"default"`` (cache or download), a path, or ``"random"``/``None``.
        progress: show a download progress bar (stderr).

    Raises:
        TaskWeightsUnavailableError: ``"default"`` while the file is neither cached nor
            downloadable.
    """
    option = normalize_weights_option(weights)
    if option == _RANDOM:
        return None
    if isinstance(option, Path):
        logger.info("loading %s weights from %s", spec.description, option)
        return load_state_dict_file(option)
    path = hub_checkpoint_path(spec.filename)
    if path.is_file():
        logger.info("loading %s weights from the torch hub cache: %s", spec.description, path)
        return load_state_dict_file(path)
    logger.info("downloading %s weights from %s to %s", spec.description, spec.url, path)
    match = re.search(r"-([0-9a-f]{8,})\.", spec.filename)  # torchvision names carry a sha256 prefix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # downloads to a temporary file, checks the hash and renames it into place
        torch.hub.download_url_to_file(
            spec.url, str(path), hash_prefix=match.group(1) if match else None, progress=progress
        )
    except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, socket and disk errors
        reason = f"{type(err).__name__}: {err}"
        raise TaskWeightsUnavailableError(spec.description, spec.filename, spec.url, path, reason) from err
    return load_state_dict_file(path)
