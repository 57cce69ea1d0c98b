"""What the trainer adapts: a frozen base codec plus the trainable parts of an architecture.

One :class:`AdapterKind` per adapted codec of :data:`compressai_transtic.models.ADAPTED_CODECS`
(``transtic``, ``tic-sft``, ``tic-chsel``, ``tic-roi``): it builds the model around a base codec from the run's
``variant`` and options, and checks, saves and restores the adapter through the
model's own methods and :mod:`compressai_transtic.adapter_files`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

import torch.nn as nn
from torch import Tensor

from ..adapter_files import (
    MAX_ADAPTER_SIZE,
    AdapterMismatchError,
    adapter_config,
    base_codec_hash,
    load_adapter,
    save_adapter,
)
from ..models import ADAPTED_CODECS, AdaptedCodec
from ..strenum import StrEnum
from .config import ConfigError, check_type, choice_of, option_ref

__all__ = ["ADAPTER_KINDS", "MAX_ADAPTER_SIZE", "AdapterKind", "get_adapter_kind"]


@dataclasses.dataclass(frozen=True)
class AdapterKind:
    """The trainer's view of one adapted architecture.

    Args:
        codec: the adapted codec class (its ``arch`` is the ``--arch`` name, its
            ``presets`` the ``--variant`` names).
    """

    codec: Type[AdaptedCodec]

    @property
    def name(self) -> str:
        return self.codec.arch

    def model_config(self, variant: Optional[str], options: Mapping[str, Any]) -> Any:
        """The configuration of a run: a named preset (or the default) with fields overridden.

        Raises:
            ValueError: an unknown preset or option (the message lists the known ones),
                or a value of the wrong type or size (:class:`~.config.ConfigError`).
        """
        presets = self.codec.presets
        if variant is not None and variant not in presets:
            known = ", ".join(sorted(presets)) or f"none: set fields with {option_ref('prompt_options')}"
            raise ValueError(f"unknown {self.name} variant {variant!r}; variants: {known}")
        config = presets[variant] if variant is not None else self.codec.config_class()
        self._check_options(config, options)
        return dataclasses.replace(config, **options) if options else config

    def _check_options(self, config: Any, options: Mapping[str, Any]) -> None:
        """Refuse unknown options, values not of their field's type and sizes above
        :data:`MAX_ADAPTER_SIZE`."""
        types = {f.name: f.type for f in dataclasses.fields(config)}
        unknown = sorted(set(options) - set(types))
        if unknown:
            raise ValueError(f"unknown {self.name} options {unknown}; known: {sorted(types)}")
        for name, value in options.items():
            option = f"{self.name} option {name}"
            kind = type(getattr(config, name))
            if issubclass(kind, StrEnum):
                choice_of(option, kind, value)
            check_type(option, value, types[name])
            if types[name] in ("int", int) and value > MAX_ADAPTER_SIZE:
                raise ConfigError(f"{option} must be at most {MAX_ADAPTER_SIZE} (got {value})")

    def build(self, base: Any, variant: Optional[str], options: Mapping[str, Any]) -> AdaptedCodec:
        """The adapted model around ``base``, base frozen, fresh trainable parts."""
        return self.codec.from_base(base, config=self.model_config(variant, options))

    @staticmethod
    def trainable_parameters(model: Any) -> List[Tuple[str, nn.Parameter]]:
        """The named parameters the optimizer updates (nothing of the base codec)."""
        return list(model.named_adapter_parameters())

    @staticmethod
    def state_dict(model: Any) -> Dict[str, Tensor]:
        """Trainable parameters and their buffers (e.g. BatchNorm statistics), copied."""
        return {k: v.detach().clone() for k, v in model.adapter_state_dict().items()}

    @staticmethod
    def load_state_dict(model: Any, state_dict: Mapping[str, Tensor]) -> None:
        model.load_adapter_state_dict(state_dict)

    @staticmethod
    def base_hash(model: Any) -> str:
        """A digest of the frozen base codec's weights."""
        return base_codec_hash(model)

    def signature(self, model: Any) -> Dict[str, Any]:
        """What an adapter must share with ``model`` to be loadable (JSON-like)."""
        return {"arch": self.name, "config": model.config.to_dict()}

    def check_compatible(self, model: Any, signature: Mapping[str, Any], base_hash: str, source: str) -> None:
        """Raise :class:`AdapterMismatchError` if adapter weights of ``signature`` and
        ``base_hash`` do not fit ``model``."""
        if signature.get("arch") != self.name:
            raise AdapterMismatchError(
                f"{source} holds {signature.get('arch')!r} adapter weights, not {self.name!r} ones; "
                f"use {option_ref('arch', signature.get('arch'))}"
            )
        config = adapter_config(signature, self.codec.config_class, source)
        if config != model.config:
            raise AdapterMismatchError(
                f"{source} was made for the {self.name} configuration {config}, but this run uses "
                f"{model.config}; pass the matching {option_ref('variant')} / {option_ref('prompt_options')} settings"
            )
        expected = self.base_hash(model)
        if base_hash != expected:
            raise AdapterMismatchError(
                f"{source} was trained on another base codec (base sha256 {base_hash[:12]}..., this "
                f"run's base is {expected[:12]}...); pass the matching {option_ref('base')} / {option_ref('quality')}"
            )

    @staticmethod
    def save(model: Any, path: Union[str, os.PathLike], task: Optional[str], metadata: Dict[str, Any]) -> Path:
        """Write the adapter file (atomically)."""
        return save_adapter(model, path, task=task, metadata=metadata)

    @staticmethod
    def load(model: Any, path: Union[str, os.PathLike]) -> Dict[str, Any]:
        """Load an adapter file into ``model``; returns its header."""
        return load_adapter(model, path)


#: ``--arch`` name -> adapter kind
ADAPTER_KINDS: Dict[str, AdapterKind] = {name: AdapterKind(codec) for name, codec in ADAPTED_CODECS.items()}


def get_adapter_kind(name: str) -> AdapterKind:
    """The adapter kind of the architecture ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return ADAPTER_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} to train; available: {sorted(ADAPTER_KINDS)}") from None
