"""What the trainer adapts: a frozen base codec plus a small set of trainable parameters.

The trainer is generic over an :class:`AdapterKind`, which knows how to put trainable
parts around a base codec, which parameters train, and how to save and restore them.
``transtic`` (prompts, :class:`PromptAdapter`) is built in; a baseline (SFT layers,
channel selection ...) adds its own kind with :func:`register_adapter_kind`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch.nn as nn
from torch import Tensor

from ..models import TransTIC
from ..prompts import AdapterMismatchError, PromptConfig, base_codec_hash, load_adapter, save_adapter

__all__ = [
    "ADAPTER_KINDS",
    "AdapterKind",
    "PromptAdapter",
    "get_adapter_kind",
    "register_adapter_kind",
]

logger = logging.getLogger(__name__)


class AdapterKind:
    """Interface of an adapted architecture, as the trainer uses it.

    Attributes:
        name: the ``--arch`` name.
    """

    name: str = ""

    def build(self, base: nn.Module, options: Mapping[str, Any]) -> nn.Module:
        """The adapted model around ``base`` (a loaded TIC), base frozen.

        Args:
            base: the base codec.
            options: ``variant`` and ``prompt_options`` (kind-specific settings).
        """
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
        """The named parameters the optimizer updates (nothing of the base codec)."""
        raise NotImplementedError

    def state_dict(self, model: nn.Module) -> Dict[str, Tensor]:
        """Trainable parameters and their buffers (e.g. BatchNorm statistics)."""
        raise NotImplementedError

    def load_state_dict(self, model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
        raise NotImplementedError

    def base_hash(self, model: nn.Module) -> str:
        """A digest of the frozen base codec's weights."""
        raise NotImplementedError

    def signature(self, model: nn.Module) -> Dict[str, Any]:
        """Settings an adapter must share with ``model`` to be loadable (JSON-like)."""
        raise NotImplementedError

    def check_compatible(self, model: nn.Module, signature: Mapping[str, Any], base_hash: str, source: str) -> None:
        """Raise if adapter weights with ``signature`` / ``base_hash`` do not fit ``model``."""
        raise NotImplementedError

    def save(
        self, model: nn.Module, path: Union[str, os.PathLike], task: Optional[str], metadata: Dict[str, Any]
    ) -> Path:
        """Write the adapter file (atomically)."""
        raise NotImplementedError

    def load(self, model: nn.Module, path: Union[str, os.PathLike]) -> Dict[str, Any]:
        """Load an adapter file into ``model``; returns its header."""
        raise NotImplementedError


class PromptAdapter(AdapterKind):
    """TransTIC prompts: the default "Deep" model or any variant of ``prompts.VARIANTS``.

    Options: ``variant`` (preset name) and ``prompt_options`` (field overrides of
    :class:`~compressai_transtic.prompts.PromptConfig`).
    """

    name = "transtic"

    def prompt_config(self, options: Mapping[str, Any]) -> PromptConfig:
        config = PromptConfig.variant(str(options.get("variant", "deep")))
        overrides = dict(options.get("prompt_options") or {})
        if overrides:
            known = set(PromptConfig.__dataclass_fields__)
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ValueError(f"unknown prompt options {unknown}; known: {sorted(known)}")
            config = config.replace(**overrides)
        return config

    def build(self, base: Any, options: Mapping[str, Any]) -> nn.Module:
        return TransTIC.from_base(base, config=self.prompt_config(options))

    def trainable_parameters(self, model: Any) -> List[Tuple[str, nn.Parameter]]:
        return list(model.named_prompt_parameters())

    def state_dict(self, model: Any) -> Dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in model.prompt_state_dict().items()}

    def load_state_dict(self, model: Any, state_dict: Mapping[str, Tensor]) -> None:
        model.load_prompt_state_dict(state_dict)

    def base_hash(self, model: Any) -> str:
        return base_codec_hash(model)

    def signature(self, model: Any) -> Dict[str, Any]:
        return {"arch": self.name, "config": model.config.to_dict()}

    def check_compatible(self, model: Any, signature: Mapping[str, Any], base_hash: str, source: str) -> None:
        if signature.get("arch") != self.name:
            raise AdapterMismatchError(
                f"{source} holds {signature.get('arch')!r} adapter weights, not {self.name!r} ones; "
                f"use --arch {signature.get('arch')}"
            )
        config = PromptConfig.from_dict(signature["config"])
        if config != model.config:
            raise AdapterMismatchError(
                f"{source} was made for the prompt configuration {config}, but this run uses "
                f"{model.config}; pass the matching --variant / --prompt-option settings"
            )
        expected = self.base_hash(model)
        if base_hash != expected:
            raise AdapterMismatchError(
                f"{source} was trained on another base codec (base sha256 {base_hash[:12]}..., this "
                f"run's base is {expected[:12]}...); pass the matching --base / --quality"
            )

    def save(self, model: Any, path: Union[str, os.PathLike], task: Optional[str], metadata: Dict[str, Any]) -> Path:
        return save_adapter(model, path, task=task, metadata=metadata)

    def load(self, model: Any, path: Union[str, os.PathLike]) -> Dict[str, Any]:
        return load_adapter(model, path)


#: ``--arch`` name -> adapter kind
ADAPTER_KINDS: Dict[str, AdapterKind] = {PromptAdapter.name: PromptAdapter()}


def register_adapter_kind(kind: AdapterKind) -> None:
    """Make ``kind`` available as ``--arch <kind.name>``.

    Raises:
        ValueError: the name is taken by another kind.
    """
    existing = ADAPTER_KINDS.get(kind.name)
    if existing is not None and type(existing) is not type(kind):
        raise ValueError(f"adapter kind {kind.name!r} is already registered ({type(existing).__name__})")
    ADAPTER_KINDS[kind.name] = kind


def get_adapter_kind(name: str) -> AdapterKind:
    """The adapter kind registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return ADAPTER_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} to train; available: {sorted(ADAPTER_KINDS)}") from None
