"""Prompts offered to the windows of a Swin block (TransTIC)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor

from .geometry import WindowGeometry
from .masks import PromptLayout, PromptMode

__all__ = ["WindowPrompts"]


@dataclass
class WindowPrompts:
    """Prompt tokens offered to one Swin block as extra keys and values.

    Exactly one of ``tokens`` / ``prompt_map`` is set.

    Attributes:
        tokens: ``(P, C)`` prompts shared by every window (TransTIC's task-specific,
            "TP-type" decoder prompts).
        prompt_map: ``(B, H / d, W / d, C)`` map whose co-located ``(w / d)^2`` tokens
            are given to each ``w x w`` window (instance-specific "IP-type" prompts).
        downsample: ``d``, the prompt map's stride relative to the block's feature map.
        legacy_mask: apply the released weights' encoder mask layout (see
            :func:`~.masks.legacy_prompt_mask`) instead of the aligned one.
        full_tokens: VPT-shallow style: the prompts are full tokens of the window
            (normalised, and queries too) that the attention sub-layer updates (with
            its residual connection; the MLP is not applied to them), and the block
            returns the updated prompt map so that the next block can carry it.
            Shared ``tokens`` are first tiled over the windows.
    """

    tokens: Optional[Tensor] = None
    prompt_map: Optional[Tensor] = None
    downsample: int = 1
    legacy_mask: bool = False
    full_tokens: bool = False

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.prompt_map is None):
            raise ValueError("WindowPrompts takes exactly one of tokens and prompt_map")
        if self.tokens is not None and self.tokens.dim() != 2:
            raise ValueError(f"shared prompts must be (P, C), got shape {tuple(self.tokens.shape)}")
        if self.prompt_map is not None and self.prompt_map.dim() != 4:
            raise ValueError(f"a prompt map must be (B, H / d, W / d, C), got shape {tuple(self.prompt_map.shape)}")
        if self.downsample < 1:
            raise ValueError(f"the prompt map's downsample must be >= 1, got {self.downsample}")

    def mode(self, shifted: bool) -> PromptMode:
        """How these prompts join the windows of a block (shifted or not)."""
        if self.full_tokens:
            return PromptMode.FULL
        if self.tokens is not None:
            return PromptMode.SHARED
        return PromptMode.LEGACY if self.legacy_mask and shifted else PromptMode.WINDOW

    def layout(self, window: int, shifted: bool) -> PromptLayout:
        """How these prompts join the windows of a block with ``window`` (shifted or
        not): the mode, prompts per window, and the prompt map's stride (1 for shared
        keys/values)."""
        mode = self.mode(shifted)
        if mode is PromptMode.SHARED:
            assert self.tokens is not None
            return PromptLayout(mode, self.tokens.shape[-2], 1)
        d = self.stride(window)
        return PromptLayout(mode, (window // d) ** 2, d)

    def stride(self, window: int) -> int:
        """The prompt map's stride ``d`` relative to the map of a block with ``window``.

        Shared full-token prompts are tiled over the windows, a square of ``P`` tokens
        per window, so ``d = window / sqrt(P)``; a prompt map has ``downsample``.
        """
        if self.tokens is None:
            return self.downsample
        p = self.tokens.shape[-2]
        side = int(round(math.sqrt(p)))
        if side * side != p or window % side:
            raise ValueError(f"{p} shared prompts cannot be tiled over {window}x{window} windows")
        return window // side

    def full_token_map(self, geometry: WindowGeometry, downsample: int, batch: int) -> Tensor:
        """Full-token prompts as a ``(B, H / d, W / d, C)`` map covering the padded map
        of ``geometry``: a prompt map as given, shared tokens tiled over the windows."""
        d = downsample
        if self.tokens is not None:
            side, c = geometry.window // d, self.tokens.shape[-1]
            tile = self.tokens.reshape(side, side, c)
            pmap = tile.repeat(geometry.windows_h, geometry.windows_w, 1).unsqueeze(0).expand(batch, -1, -1, -1)
        else:
            assert self.prompt_map is not None
            pmap = self.prompt_map
        if tuple(pmap.shape[1:3]) != (geometry.height // d, geometry.width // d):
            raise ValueError(
                f"prompt map {tuple(pmap.shape[1:3])} does not cover the padded map "
                f"{geometry.height}x{geometry.width} at 1/{d}"
            )
        return pmap

    def window_prompt_map(self, geometry: WindowGeometry, downsample: int) -> Tuple[Tensor, WindowGeometry]:
        """The prompt map of per-window prompts and the geometry of its windows, one
        ``(w / d) x (w / d)`` window of prompts per window of ``geometry``."""
        pmap, d = self.prompt_map, downsample
        assert pmap is not None
        if geometry.window % d or geometry.shift % d:
            raise ValueError(f"prompt downsample {d} does not divide window {geometry.window} / shift {geometry.shift}")
        pw, ps = geometry.window // d, geometry.shift // d
        ph, pwid = pmap.shape[1:3]
        grid = (geometry.windows_h, geometry.windows_w)
        if ph % pw or pwid % pw or (ph // pw, pwid // pw) != grid:
            raise ValueError(
                f"prompt map of {ph}x{pwid} does not tile the {grid[0]}x{grid[1]} windows of this block "
                f"with {pw}x{pw} windows"
            )
        return pmap, WindowGeometry(ph, pwid, ph, pwid, pw, ps)
