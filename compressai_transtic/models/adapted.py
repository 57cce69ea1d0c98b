"""A frozen TIC base codec with trainable parts: what TransTIC and the baselines share.

An adapted codec is a :class:`TIC` subclass whose added modules (prompts, SFT layers
...) are the only trainable parameters. Each such architecture has a name
(:attr:`AdaptedCodec.arch`, its zoo and ``--arch`` name) and a keyword that every
name of its added parameters and buffers holds and no name of TIC does
(:data:`~compressai_transtic.state_dicts.ADAPTER_KEYWORDS`), so that a state dict
splits into the base codec and the *adapter* by name alone, and the loader can tell
the architecture from the keys.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar, Dict, Iterator, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..adapter_files import MAX_ADAPTER_SIZE
from ..console import and_more
from ..integrity import tensor_problems
from ..state_dicts import ADAPTER_KEYWORDS, check_architecture, checkpoint_filter_fn, needs_entropy_update, tic_channels
from .tic import TIC

__all__ = ["AdaptedCodec", "ConfigDict", "MAX_ADAPTER_SIZE"]

logger = logging.getLogger(__name__)


#: annotation of a settings field -> the Python types its values may have
_FIELD_TYPES: Dict[str, Tuple[type, ...]] = {"int": (int,), "bool": (bool,), "float": (int, float)}


class ConfigDict:
    """``to_dict`` / ``from_dict`` of a flat frozen dataclass of settings (JSON-like),
    refusing unknown keys by name, and a check of the values' types
    (:meth:`check_types`, for ``__post_init__``)."""

    def check_types(self) -> None:
        """Raise ``ValueError`` naming a field whose value is not of its annotated type
        (``int``, ``bool`` or ``float``; a ``bool`` is no number here), or an ``int``
        (every one is a size: channels or levels) above :data:`MAX_ADAPTER_SIZE`."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            allowed = _FIELD_TYPES.get(str(f.type))
            value: Any = getattr(self, f.name)
            if allowed is None:
                continue
            if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
                raise ValueError(f"{type(self).__name__}.{f.name} must be of type {f.type}, got {value!r}")
            if isinstance(value, int) and str(f.type) == "int" and value > MAX_ADAPTER_SIZE:
                raise ValueError(f"{type(self).__name__}.{f.name} must be at most {MAX_ADAPTER_SIZE}, got {value}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} options {unknown}; known: {known}")
        return cls(**dict(data))


class AdaptedCodec(TIC):
    """A frozen :class:`TIC` plus trainable parts named with the architecture's keyword.

    Subclasses set :attr:`arch` and :attr:`config_class` (a frozen dataclass with
    ``to_dict``, ``from_dict`` and ``from_state_dict``), optionally :attr:`presets`
    (named configurations), take ``(config, N, M, **kwargs)`` in their constructor,
    build their parts there and end it with :meth:`freeze_base`.

    ``config`` may be a configuration object, ``None`` (the default configuration) or
    the name of a preset (see :meth:`resolve_config`).
    """

    arch: ClassVar[str] = ""
    config_class: ClassVar[Any] = None
    presets: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: Any = None, N: int = 128, M: int = 192, **kwargs: Any) -> None:
        config = self.resolve_config(config)  # before anything is built
        super().__init__(N=N, M=M, **kwargs)
        self.config = config

    @classmethod
    def resolve_config(cls, config: Any) -> Any:
        """The configuration ``config`` stands for: itself if it is a
        :attr:`config_class`, the default for ``None``, the preset of that name (a key
        of :attr:`presets`) for a string.

        Raises:
            ValueError: a string that names no preset (the message lists the presets).
            TypeError: anything else (e.g. a dict: use ``config_class.from_dict``).
        """
        if config is None:
            return cls.config_class()
        if isinstance(config, cls.config_class):
            return config
        kind = cls.config_class.__name__
        names = sorted(cls.presets)
        if isinstance(config, str) and names:
            if config not in cls.presets:
                raise ValueError(f"unknown {cls.arch} variant {config!r}; choose from {names}")
            return cls.presets[config]
        named = f", or a variant name ({', '.join(names)})" if names else " (it has no named variants)"
        hint = f"; for a dict of settings use {kind}.from_dict" if isinstance(config, Mapping) else ""
        raise TypeError(
            f"{cls.__name__} config must be None or of type {kind}{named}; "
            f"got {type(config).__name__} {config!r:.80}{hint}"
        )

    @classmethod
    def adapter_keyword(cls) -> str:
        return ADAPTER_KEYWORDS[cls.arch]

    @classmethod
    def is_adapter_key(cls, name: str) -> bool:
        """Whether a parameter/buffer name belongs to the trainable parts."""
        return cls.adapter_keyword() in name

    # ------------------------------------------------------------------------------
    # parameter groups
    # ------------------------------------------------------------------------------
    def freeze_base(self) -> None:
        """``requires_grad`` only on the added parts (the entropy models stay frozen too)."""
        for name, p in self.named_parameters():
            p.requires_grad_(self.is_adapter_key(name))

    def named_adapter_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """The trainable parameters with their names (what an optimizer gets)."""
        for name, p in self.named_parameters():
            if self.is_adapter_key(name):
                yield name, p

    def adapter_state_dict(self) -> Dict[str, Tensor]:
        """Parameters and buffers of the added parts (e.g. BatchNorm statistics)."""
        return {k: v for k, v in self.state_dict().items() if self.is_adapter_key(k)}

    def base_state_dict(self) -> Dict[str, Tensor]:
        """The base codec's weights, keyed exactly as a :class:`TIC` state dict."""
        return {k: v for k, v in self.state_dict().items() if not self.is_adapter_key(k)}

    def load_adapter_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Replace the added parts' tensors; every entry is checked (see
        :meth:`check_adapter_state_dict`) before any tensor changes.

        Raises:
            TypeError: not a mapping, or values that are not tensors.
            ValueError: missing or unexpected keys, or tensors that cannot be these
                weights (see :meth:`check_adapter_state_dict`).
        """
        self.check_adapter_state_dict(state_dict)
        self._copy_adapter(state_dict)

    def check_adapter_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Raise unless ``state_dict`` can replace the added parts' tensors as it is: the
        keys exactly the adapter's, every value a dense, finite, real tensor with its
        values in memory (not on the ``meta`` device), of the model's shape and of a
        dtype that converts to the model's without changing kind (no float into an
        integer buffer). Nothing changes."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{self.arch} adapter weights must be a mapping of names to tensors, got {type(state_dict)}"
            )
        not_names = [f"{k!r:.40}" for k in state_dict if not isinstance(k, str)]
        if not_names:
            shown = ", ".join(not_names[:5]) + and_more(not_names, 5)
            raise TypeError(f"{self.arch} adapter weights must be keyed by names (str); other keys: {shown}")
        expected, given = set(self.adapter_state_dict()), set(state_dict)
        if expected != given:
            missing, unexpected = sorted(expected - given), sorted(given - expected)
            raise ValueError(
                f"{self.arch} adapter weights do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self._check_adapter_values(state_dict)
        own = self.state_dict(keep_vars=True)
        for key, value in state_dict.items():
            if own[key].shape != value.shape:
                raise ValueError(f"adapter tensor {key}: shape {tuple(value.shape)} != model's {tuple(own[key].shape)}")
            if not torch.can_cast(value.dtype, own[key].dtype):
                raise ValueError(
                    f"adapter tensor {key}: dtype {value.dtype} does not convert to the model's {own[key].dtype} "
                    "without changing its values"
                )

    def _check_adapter_values(self, state_dict: Mapping[str, Any]) -> None:
        """Raise unless every value is a tensor with real, finite values in memory."""
        not_tensors = [f"{k} ({type(v).__name__})" for k, v in state_dict.items() if not isinstance(v, Tensor)]
        if not_tensors:
            shown = f"{not_tensors[:5]}{and_more(not_tensors, 5)}"
            raise TypeError(
                f"{self.arch} adapter weights must be tensors; {shown} are not (a state dict of torch tensors "
                "is expected)"
            )
        problems = tensor_problems(state_dict)  # NaN, Inf, complex, sparse, meta, expanded views
        if problems:
            raise ValueError(f"{self.arch} adapter weights refused: {'; '.join(problems)}")

    def _copy_adapter(self, state_dict: Mapping[str, Tensor]) -> None:
        """Copy checked adapter tensors into the model (see :meth:`check_adapter_state_dict`)."""
        own = self.state_dict(keep_vars=True)
        with torch.no_grad():
            for key, value in state_dict.items():
                own[key].copy_(value)

    def load_base_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load TIC weights into the base codec; the added parts are left as they are."""
        full = dict(self.adapter_state_dict())
        full.update(state_dict)
        self.load_state_dict(full, strict=True)

    # ------------------------------------------------------------------------------
    # construction from weights
    # ------------------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], config: Optional[Any] = None, **kwargs: Any) -> Any:
        """Build the model that ``state_dict`` belongs to (configuration read from the
        keys unless given) and load it strictly; missing entropy tables are rebuilt."""
        state_dict = checkpoint_filter_fn(state_dict)
        check_architecture(state_dict, cls.arch)
        if config is None:
            config = cls.config_class.from_state_dict(state_dict)
        N, M = tic_channels(state_dict)
        net = cls.built_for(state_dict, config=config, N=N, M=M, **kwargs)
        net.load_state_dict(state_dict)
        if needs_entropy_update(state_dict):  # e.g. the released base_codec_4 lacks its tables
            logger.info("rebuilding the entropy-coder tables the weights lack (update())")
            net.update()
        return net

    @classmethod
    def from_base(cls, base: Union[TIC, Mapping[str, Tensor]], config: Optional[Any] = None, **kwargs: Any) -> Any:
        """Freshly initialised added parts on the weights of a base codec.

        Args:
            base: a :class:`TIC` model (or an adapted codec, whose base is taken) or its
                state dict.
            config: the architecture's configuration or a preset name (default: its
                default; see :meth:`resolve_config`).
        """
        if hasattr(base, "base_state_dict"):  # an adapted codec: its base only
            sd = base.base_state_dict()
        else:
            sd = base.state_dict() if isinstance(base, nn.Module) else dict(base)
        N, M = tic_channels(sd)
        net = cls(config=config, N=N, M=M, **kwargs)
        net.load_base_state_dict(sd)
        return net
