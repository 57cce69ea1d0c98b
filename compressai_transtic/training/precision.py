"""Mixed precision on GPU: autocast for the transforms, float32 for the entropy models."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyModel

from ..strenum import parse_choice
from .config import MixedPrecision, option_ref

__all__ = ["Precision", "entropy_models_in_float32", "resolve_precision"]

logger = logging.getLogger(__name__)


@dataclass
class Precision:
    """How the training forward runs.

    Args:
        mode: ``OFF``, ``BF16`` or ``FP16`` (``AUTO`` is resolved by :func:`resolve_precision`).
        device_type: ``cpu`` or ``cuda``.
    """

    mode: MixedPrecision
    device_type: str

    def __post_init__(self) -> None:
        self.mode = parse_choice(MixedPrecision, self.mode, "precision")
        if self.mode is MixedPrecision.AUTO:
            raise ValueError("Precision takes off, bf16 or fp16; resolve_precision() turns auto into one of them")

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return {MixedPrecision.BF16: torch.bfloat16, MixedPrecision.FP16: torch.float16}.get(self.mode)

    def autocast(self) -> ContextManager[Any]:
        """The autocast context of the training forward (a no-op when off)."""
        if self.mode is MixedPrecision.OFF:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler":
        """A loss scaler, enabled for fp16 only (bf16 has float32's range)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.mode is MixedPrecision.FP16)


def resolve_precision(option: MixedPrecision, device: torch.device) -> Precision:
    """Turn the ``amp`` option into a :class:`Precision` for ``device``.

    ``auto``: bf16 on CUDA devices that support it, fp16 on older ones, off on CPU.

    Raises:
        ValueError: bf16/fp16 requested on the CPU (not supported for training here).
    """
    option = parse_choice(MixedPrecision, option, "amp setting")
    if device.type != "cuda":
        if option in (MixedPrecision.BF16, MixedPrecision.FP16):
            raise ValueError(
                f"{option_ref('amp', option.value)} needs a CUDA device; training runs on {device} "
                f"(use {option_ref('amp', MixedPrecision.OFF.value)})"
            )
        return Precision(MixedPrecision.OFF, device.type)
    if option is MixedPrecision.AUTO:
        option = MixedPrecision.BF16 if torch.cuda.is_bf16_supported() else MixedPrecision.FP16
    return Precision(option, device.type)


def entropy_models_in_float32(model: nn.Module, device_type: str) -> Callable[[], None]:
    """Run the entropy models of ``model`` in float32 even under autocast.

    Likelihoods are differences of nearby cumulative probabilities: in half precision
    they lose most of their digits (and underflow below the likelihood bound in fp16).
    Inputs of the entropy models are cast to float32 and autocast is disabled inside.

    Returns:
        A function that removes the patches.
    """
    patched = []
    for module in model.modules():
        if isinstance(module, EntropyModel):
            original = type(module).forward.__get__(module)

            def forward(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
                args = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
                kwargs = {
                    k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in kwargs.items()
                }
                with torch.autocast(device_type=device_type, enabled=False):
                    return _original(*args, **kwargs)

            module.forward = forward
            patched.append(module)

    def remove() -> None:
        for module in patched:
            module.__dict__.pop("forward", None)

    return remove
