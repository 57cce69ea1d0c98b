"""Codec architectures: :class:`TIC` (base codec) and the adapted codecs around a frozen
TIC: :class:`TransTIC` (prompts) and the paper's baselines :class:`TICSFT`,
:class:`TICChannelSelection` and :class:`TICROI`."""

from typing import Dict, Type

from .adapted import AdaptedCodec
from .chsel import ChannelSelectionConfig, TICChannelSelection
from .roi import TICROI, ROIConfig
from .sft import TICSFT, SFTConfig
from .tic import TIC
from .transtic import TransTIC

__all__ = [
    "ADAPTED_CODECS",
    "AdaptedCodec",
    "ChannelSelectionConfig",
    "TICChannelSelection",
    "ROIConfig",
    "SFTConfig",
    "TIC",
    "TICROI",
    "TICSFT",
    "TransTIC",
]

#: architecture name -> class of every adapted codec
ADAPTED_CODECS: Dict[str, Type[AdaptedCodec]] = {
    cls.arch: cls for cls in (TransTIC, TICSFT, TICChannelSelection, TICROI)
}
