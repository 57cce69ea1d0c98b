"""Building blocks of the TIC / TransTIC transforms.

Swin-transformer blocks that work on channel-last feature maps ``(B, H, W, C)`` of any
size, and residual Swin-transformer blocks (RSTB) that plug between convolutions.
The modules, from the bottom up (each imports only those before it):

* :mod:`.cache`: the least-recently-used cache of indices and biases, and values
  derived from parameters (:class:`~.cache.DerivedValue`);
* :mod:`.geometry`: where the windows fall on a map (:class:`WindowGeometry`), and the
  cached gathers that move tokens between the map and window order;
* :mod:`.masks`: relative position index, shifted-window, padding and prompt masks,
  folded into one additive bias per window;
* :mod:`.workspace`: chunking and per-thread scratch buffers of CPU inference;
* :mod:`.attention`: :class:`WindowAttention` and the switches that choose how it is
  computed (:func:`reference_attention`, :func:`set_cpu_attention`, or the
  environment variable ``COMPRESSAI_TRANSTIC_CPU_ATTENTION``);
* :mod:`.window_prompts`: :class:`WindowPrompts`, the prompts given to a block;
* :mod:`.block`: :class:`SwinBlock` and its :class:`Mlp`;
* :mod:`.stage`: :class:`BasicLayer` and :class:`RSTB`;
* :mod:`.convs`: the convolutions between stages.

TransTIC's prompt generator lives with TransTIC
(:mod:`compressai_transtic.models.prompt_generator`).
"""

from __future__ import annotations

from .attention import (
    CPU_ATTENTION_CHOICES,
    CPU_ATTENTION_ENV,
    CpuAttention,
    WindowAttention,
    cpu_attention,
    packed_attention_is_faster,
    reference_attention,
    set_cpu_attention,
)
from .block import Mlp, SwinBlock
from .convs import SubPixelConvTranspose2d, conv, deconv
from .geometry import WindowGeometry, ceil_to, window_order, window_partition_index, window_unpartition_index
from .masks import PAD_MASK_VALUE, SHIFT_MASK_VALUE, PromptLayout, PromptMode, shifted_window_mask
from .stage import RSTB, BasicLayer, drop_path_rates
from .window_prompts import WindowPrompts
from .workspace import release_workspace

__all__ = [
    "SHIFT_MASK_VALUE",
    "PAD_MASK_VALUE",
    "CPU_ATTENTION_CHOICES",
    "CPU_ATTENTION_ENV",
    "CpuAttention",
    "conv",
    "deconv",
    "SubPixelConvTranspose2d",
    "Mlp",
    "WindowAttention",
    "SwinBlock",
    "BasicLayer",
    "RSTB",
    "WindowPrompts",
    "PromptLayout",
    "PromptMode",
    "reference_attention",
    "set_cpu_attention",
    "cpu_attention",
    "packed_attention_is_faster",
    "release_workspace",
    "WindowGeometry",
    "window_order",
    "window_partition_index",
    "window_unpartition_index",
    "shifted_window_mask",
    "drop_path_rates",
    "ceil_to",
]
