"""Codec architectures: :class:`TIC` (base codec) and the adapted codecs around a frozen
TIC: :class:`TransTIC` (prompts) and the paper's baselines :class:`TICSFT` and
:class:`TICROI`."""

from typing import Dict, Type

from .adapted import AdaptedCodec
from .roi import TICROI, ROIConfig
from .sft import TICSFT, SFTConfig
from .tic import TIC
from .transtic import TransTIC

__all__ = ["ADAPTED_CODECS", "AdaptedCodec", "ROIConfig", "SFTConfig", "TIC", "TICROI", "TICSFT", "TransTIC"]

#: architecture name -> class of every adapted codec
ADAPTED_CODECS: Dict[str, Type[AdaptedCodec]] = {cls.arch: cls for cls in (TransTIC, TICSFT, TICROI)}
