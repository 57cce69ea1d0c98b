"""Additive attention masks and biases of window attention.

A window attends over its own tokens and, with prompts, over prompt keys placed
before them. Three things shape the scores: the relative position bias between
tokens (zero for every pair with a prompt), the shifted-window mask (tokens that the
cyclic shift brought together from different regions of the map may not attend to
each other) and the padding mask (keys in the padding added to reach whole windows
are hidden). :func:`window_biases` folds them into one additive bias per window,
shared by the windows that need no mask.
"""

from __future__ import annotations

import enum
from typing import List, NamedTuple, Optional

import torch
from torch import Tensor

from .geometry import WindowGeometry, window_order

__all__ = [
    "SHIFT_MASK_VALUE",
    "PAD_MASK_VALUE",
    "PromptMode",
    "PromptLayout",
    "NO_PROMPTS",
    "BiasPart",
    "relative_position_index",
    "shifted_window_mask",
    "legacy_prompt_mask",
    "attention_mask",
    "masked_windows",
    "prompt_bias",
    "window_biases",
    "reference_biases",
]

#: additive attention mask for pairs of tokens from different shifted-window regions;
#: the released weights were trained with -100 (not -inf).
SHIFT_MASK_VALUE = -100.0
#: additive mask for keys that lie in the padding added to reach a multiple of the
#: window; finite so that fully padded windows never produce NaN.
PAD_MASK_VALUE = -1.0e4


class PromptMode(enum.Enum):
    """How prompts join the windows of a block (see ``WindowPrompts``)."""

    #: no prompts
    NONE = "none"
    #: the same prompt keys/values for every window (TP-type prompts)
    SHARED = "shared"
    #: each window gets the keys/values of its co-located prompts (IP-type prompts)
    WINDOW = "window"
    #: as ``WINDOW``, with the encoder mask layout of the released weights (shifted blocks)
    LEGACY = "legacy"
    #: prompts are full tokens of the window: queries too, and updated by attention
    FULL = "full"

    @property
    def per_window(self) -> bool:
        """Whether every window has prompts of its own (taken from a prompt map)."""
        return self in (PromptMode.WINDOW, PromptMode.LEGACY)


class PromptLayout(NamedTuple):
    """How the prompts of one block call join its windows.

    Attributes:
        mode: how they join (:class:`PromptMode`).
        num_prompts: prompts per window ``P`` (0 without prompts).
        downsample: the prompt map's stride ``d`` relative to the block's map (1 for
            shared keys and values, and without prompts).
    """

    mode: PromptMode
    num_prompts: int = 0
    downsample: int = 1


#: the layout of a block call without prompts
NO_PROMPTS = PromptLayout(PromptMode.NONE)


class BiasPart(NamedTuple):
    """The additive bias ``(1 or end - start, heads, Nq, K)`` of windows ``start:end``
    (in window order); one shared bias broadcasts over its windows."""

    start: int
    end: int
    bias: Tensor


def relative_position_index(window: int) -> Tensor:
    """``(N, N)`` index into the ``(2 window - 1)^2`` relative position bias table,
    ``N = window ** 2``, tokens in raster order."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    rel = rel.permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def partition_labels(labels: Tensor, window: int, shift: int) -> Tensor:
    """(H, W) labels -> (num_windows, window*window) after the cyclic shift."""
    height, width = labels.shape
    if shift:
        labels = torch.roll(labels, shifts=(-shift, -shift), dims=(0, 1))
    labels = labels.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
    return labels.reshape(-1, window * window)


def region_labels(height: int, width: int, window: int, shift: int) -> Tensor:
    """(num_windows, window^2) labels of the shifted-window regions of every token.

    Labels are laid out in the frame of the cyclically shifted map (as in Swin): its
    last ``window`` rows/columns hold tokens from up to three regions of the original
    map (the last ``shift`` ones wrapped around from the start). Tokens with different
    labels may not attend to each other.
    """
    labels = torch.zeros(height, width)
    if shift:
        cnt = 0
        for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                labels[hs, ws] = cnt
                cnt += 1
    return partition_labels(labels, window, 0)


def label_mask(query_labels: Tensor, key_labels: Tensor) -> Tensor:
    """(nW, Nq, Nk) additive mask: 0 for equal labels, :data:`SHIFT_MASK_VALUE` otherwise."""
    diff = key_labels[:, None, :] - query_labels[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK_VALUE)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """Shifted-window attention mask ``(num_windows, N, N)`` with 0 / :data:`SHIFT_MASK_VALUE`.

    Tokens of one window that came from different regions of the un-shifted map (the
    cyclic shift wraps the last ``shift`` rows/columns around) may not attend to each
    other. ``height`` and ``width`` must be multiples of ``window``.
    """
    labels = region_labels(height, width, window, shift)
    return label_mask(labels, labels)


def padding_key_mask(geometry: WindowGeometry) -> Tensor:
    """(num_windows, N) additive mask that hides keys lying in the bottom/right padding
    (windows in raster order)."""
    valid = torch.zeros(geometry.height, geometry.width)
    valid[: geometry.valid_height, : geometry.valid_width] = 1.0
    windows = partition_labels(valid, geometry.window, geometry.shift)
    return torch.where(windows > 0, 0.0, PAD_MASK_VALUE)


def legacy_prompt_mask(image_mask: Tensor, num_prompts: int) -> Tensor:
    """The encoder mask layout of the released TransTIC weights (see ``transtic-facts``).

    The authors build a mask for keys ordered ``[image, prompts]``: the image mask
    followed by a prompt part obtained by nearest-neighbour resampling of image-mask
    columns ``P .. N-P`` to ``P`` columns. The keys are then ordered ``[prompts, image]``,
    so column ``k`` of that mask lands on stored key ``k``. This returns the
    ``(num_windows, N, P + N)`` mask as it is applied.
    """
    n = image_mask.shape[-1]
    if 2 * num_prompts >= n:
        raise ValueError(
            f"the legacy prompt mask keeps image-mask columns P..N-P, none for {num_prompts} prompts per window "
            f"of {n} tokens: use the aligned mask for prompt maps this fine (legacy_mask=False)"
        )
    middle = image_mask[:, :, num_prompts : n - num_prompts]
    src = (torch.arange(num_prompts) * middle.shape[-1]) // num_prompts  # floor(j * in / out)
    prompt_part = middle[:, :, src]
    return torch.cat([image_mask, prompt_part], dim=-1)


def _rows(t: Tensor, windows: Optional[Tensor]) -> Tensor:
    return t if windows is None else t[windows]


def _geometry_labels(geometry: WindowGeometry, windows: Optional[Tensor] = None) -> Tensor:
    return _rows(region_labels(geometry.height, geometry.width, geometry.window, geometry.shift), windows)


def _padding_mask(geometry: WindowGeometry, windows: Optional[Tensor]) -> Tensor:
    return _rows(padding_key_mask(geometry), windows)[:, None, :]  # nW, 1, N


def _image_key_mask(geometry: WindowGeometry, layout: PromptLayout, windows: Optional[Tensor]) -> Optional[Tensor]:
    """The mask without prompts, or with shared prompt keys (which every token sees)."""
    n = geometry.window_tokens
    mask = None
    if geometry.shift:
        labels = _geometry_labels(geometry, windows)
        mask = label_mask(labels, labels)
    if geometry.padded:
        pad = _padding_mask(geometry, windows)
        mask = pad.expand(-1, n, -1) if mask is None else mask + pad
    if mask is not None and layout.mode is PromptMode.SHARED:
        mask = torch.cat([mask.new_zeros(mask.shape[0], n, layout.num_prompts), mask], dim=-1)
    return mask


def _full_token_mask(
    geometry: WindowGeometry, prompt_labels: Tensor, num_prompts: int, windows: Optional[Tensor]
) -> Tensor:
    """The mask when prompts are full tokens: every token, prompt or not, keeps to its
    region, and nobody attends to padded keys."""
    labels = torch.cat([prompt_labels, _geometry_labels(geometry, windows)], dim=1)
    mask = label_mask(labels, labels)
    if geometry.padded:
        pad = _padding_mask(geometry, windows)
        mask = mask + torch.cat([pad.new_zeros(pad.shape[0], 1, num_prompts), pad], dim=-1)
    return mask


def _check_prompt_geometry(geometry: WindowGeometry, mode: PromptMode) -> None:
    if geometry.padded and mode.per_window:
        raise RuntimeError(
            f"per-window prompts need a feature map that is a multiple of the window ({geometry.window}); "
            f"got {geometry.valid_height}x{geometry.valid_width}"
        )


def attention_mask(
    geometry: WindowGeometry, layout: PromptLayout = NO_PROMPTS, windows: Optional[Tensor] = None
) -> Optional[Tensor]:
    """Additive mask ``(nW, Nq, K)`` in raster window order, or None if nothing is masked.

    ``K`` counts the prompt keys (first) then the window's tokens; ``Nq`` counts the
    prompts too when they are full tokens. ``windows`` (raster ids) builds the mask of
    those windows only, in that order: a mask of every window of a large map takes
    hundreds of megabytes, of which only the boundary windows' part is not zero.
    """
    mode = layout.mode
    _check_prompt_geometry(geometry, mode)
    if mode in (PromptMode.NONE, PromptMode.SHARED):
        return _image_key_mask(geometry, layout, windows)
    if not geometry.shift and not geometry.padded:
        return None
    image_labels = _geometry_labels(geometry, windows)
    if mode is PromptMode.LEGACY:
        return legacy_prompt_mask(label_mask(image_labels, image_labels), layout.num_prompts)
    prompt_labels = _geometry_labels(geometry.downsampled(layout.downsample), windows)
    if mode is PromptMode.WINDOW:
        return torch.cat([label_mask(image_labels, prompt_labels), label_mask(image_labels, image_labels)], dim=-1)
    return _full_token_mask(geometry, prompt_labels, layout.num_prompts, windows)


def masked_windows(geometry: WindowGeometry, layout: PromptLayout = NO_PROMPTS) -> Tensor:
    """``(nW,)`` booleans in raster window order: the windows whose :func:`attention_mask`
    may hold a non-zero entry, found without building it.

    A window's mask is zero unless its tokens (and, for per-window and full-token
    prompts, its prompts) carry more than one region label, or it holds padded keys.
    The flags may include a window whose mask turns out zero, never miss one that is not.
    """
    mode = layout.mode
    _check_prompt_geometry(geometry, mode)
    flags = torch.zeros(geometry.num_windows, dtype=torch.bool)
    if geometry.shift:
        labels = _geometry_labels(geometry)
        if mode.per_window or mode is PromptMode.FULL:
            labels = torch.cat([_geometry_labels(geometry.downsampled(layout.downsample)), labels], dim=1)
        flags |= labels.ne(labels[:, :1]).any(1)
    if geometry.padded:
        flags |= padding_key_mask(geometry).ne(0).any(1)
    return flags


def prompt_bias(relative: Tensor, layout: PromptLayout) -> Tensor:
    """The relative position bias ``(heads, N, N)`` widened to ``(heads, Nq, K)`` with
    zeros for every pair that involves a prompt."""
    mode, num_prompts = layout.mode, layout.num_prompts
    if mode is PromptMode.NONE:
        return relative
    heads, n = relative.shape[0], relative.shape[-1]
    if mode is PromptMode.FULL:
        full = relative.new_zeros(heads, num_prompts + n, num_prompts + n)
        full[:, num_prompts:, num_prompts:] = relative
        return full
    return torch.cat([relative.new_zeros(heads, n, num_prompts), relative], dim=-1)


def window_biases(bias: Tensor, geometry: WindowGeometry, layout: PromptLayout, like: Tensor) -> List[BiasPart]:
    """The bias of every window in :func:`window_order`, in at most two parts.

    Windows before the first one that may carry a mask (:func:`masked_windows`) share
    the broadcast ``bias``. That is every interior window, except when padding and
    shift together push padded keys into the second-to-last window row or column.
    The windows from there on get ``mask + bias`` in ``like``'s dtype and on its
    device, with :func:`attention_mask` built for those windows only. Both parts are
    contiguous: the attention kernels add them to every window's scores, and a bias in
    the table's head-last order makes that add several times slower.
    """
    nw = geometry.num_windows
    bias = bias.contiguous()
    order = window_order(geometry.windows_h, geometry.windows_w)
    flags = masked_windows(geometry, layout)[order].tolist()
    first = flags.index(True) if True in flags else nw
    mask = attention_mask(geometry, layout, order[first:]) if first < nw else None
    if mask is None:
        return [BiasPart(0, nw, bias[None])]
    boundary = mask.to(device=like.device, dtype=like.dtype)
    return [BiasPart(0, first, bias[None]), BiasPart(first, nw, boundary[:, None] + bias)]


def reference_biases(bias: Tensor, mask: Optional[Tensor], geometry: WindowGeometry, like: Tensor) -> List[BiasPart]:
    """One bias per window in raster order (the plain reference path)."""
    full = bias[None] if mask is None else mask.to(bias.device)[:, None] + bias
    return [BiasPart(0, geometry.num_windows, full.to(dtype=like.dtype))]
