"""Stages of Swin blocks: :class:`BasicLayer` (blocks in sequence) and :class:`RSTB`
(a residual stage between convolutions).

At inference a stage keeps its tokens in window order from block to block: one
gather in, one gather between blocks (the composition of one block's inverse
partition with the next one's partition), one gather out.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, cast

import torch
import torch.nn as nn
from torch import Tensor

from .attention import use_reference
from .block import SwinBlock
from .geometry import WindowGeometry
from .window_prompts import WindowPrompts
from .workspace import scratch

__all__ = ["BasicLayer", "RSTB", "drop_path_rates"]


class BasicLayer(nn.Module):
    """A sequence of Swin blocks (``blocks``), alternating unshifted and shifted windows.

    Args:
        dim: channels.
        depth: number of blocks.
        num_heads: attention heads.
        window_size: window side.
        shift: whether odd blocks are shifted by ``window_size // 2``.
        mlp_ratio: MLP expansion.
        drop_path: per-block stochastic depth rates (length ``depth``).
        mask_resolution: feature-map size at which persistent masks are stored.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        shift: bool = True,
        mlp_ratio: float = 2.0,
        drop_path: Sequence[float] = (),
        mask_resolution: Optional[Tuple[int, int]] = None,
    ) -> None:
        super().__init__()
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            [
                SwinBlock(
                    dim,
                    num_heads,
                    window_size,
                    shift_size=(window_size // 2) if (shift and i % 2 == 1) else 0,
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[i],
                    mask_resolution=mask_resolution,
                )
                for i in range(depth)
            ]
        )

    def forward(
        self, x: Tensor, prompts: Optional[List[Optional[WindowPrompts]]] = None, add_to: Optional[Tensor] = None
    ) -> Tensor:
        """Run the blocks; ``prompts[i]`` goes to block ``i``. A full-token prompt map
        returned by a block is carried into the following blocks that get no prompts.

        Args:
            x: ``(B, H, W, C)`` map.
            prompts: optional per-block prompts.
            add_to: optional ``(B, H, W, C)`` tensor (``x`` itself is allowed) that the
                output is added into, in place; it is then returned. At inference this
                saves allocating a full-size output.
        """
        if self._can_fuse(prompts):
            return self._forward_fused(x, prompts, add_to)
        carried: Optional[WindowPrompts] = None
        for i, block in enumerate(self._swin_blocks()):
            given = _prompts_of(prompts, i)
            current = given if given is not None else carried
            if current is not None and current.full_tokens:
                x, pmap = block(x, current)
                carried = WindowPrompts(prompt_map=pmap, downsample=current.stride(block.window_size), full_tokens=True)
            else:
                x = block(x, current)
        return x if add_to is None else add_to.add_(x)

    def _swin_blocks(self) -> List[SwinBlock]:
        return cast(List[SwinBlock], list(self.blocks))

    def _can_fuse(self, prompts: Optional[List[Optional[WindowPrompts]]]) -> bool:
        if torch.is_grad_enabled() or use_reference():
            return False
        if prompts is not None and any(p is not None and p.full_tokens for p in prompts):
            return False
        return len({blk.window_size for blk in self._swin_blocks()}) == 1

    def _forward_fused(
        self, x: Tensor, prompts: Optional[List[Optional[WindowPrompts]]], add_to: Optional[Tensor] = None
    ) -> Tensor:
        """Inference path: tokens stay in window order from block to block.

        The tokens live in two scratch buffers (:func:`~.workspace.scratch`): between
        two blocks one gather (the composition of the first block's inverse partition
        and the next block's partition) moves them from one buffer to the other,
        instead of scattering to a fresh map and gathering again.
        """
        blocks = self._swin_blocks()
        b, h, w, c = x.shape
        geometry = blocks[0].geometry(h, w)
        x = geometry.pad(x)
        windows = (b, geometry.num_windows, geometry.window_tokens, c)
        with scratch(x, (b, geometry.height * geometry.width, c)) as (current, spare):
            torch.index_select(x.reshape(current.shape), 1, geometry.partition_index(x.device), out=current)
            for i, block in enumerate(blocks):
                if i > 0:
                    following = geometry.with_shift(block.shift_size)
                    torch.index_select(current, 1, geometry.reorder_index(following, x.device), out=spare)
                    current, spare, geometry = spare, current, following
                block.forward_windows(current.view(windows), geometry, _prompts_of(prompts, i))
            return _gather_map(current, spare, geometry, add_to)


def _prompts_of(prompts: Optional[List[Optional[WindowPrompts]]], i: int) -> Optional[WindowPrompts]:
    return prompts[i] if prompts is not None and i < len(prompts) else None


def _gather_map(tokens: Tensor, spare: Tensor, geometry: WindowGeometry, add_to: Optional[Tensor]) -> Tensor:
    """The map of ``tokens`` (in ``geometry``'s window order, in a scratch buffer),
    cropped, as a caller-owned tensor: fresh, or ``add_to`` after adding it in."""
    b, c = tokens.shape[0], tokens.shape[-1]
    shape = (b, geometry.height, geometry.width, c)
    inverse = geometry.unpartition_index(tokens.device)
    if add_to is None and not geometry.padded:  # the output leaves the scratch buffers: a fresh tensor
        return tokens.index_select(1, inverse).view(shape)
    out = torch.index_select(tokens, 1, inverse, out=spare).view(shape)
    if geometry.padded:
        out = out[:, : geometry.valid_height, : geometry.valid_width]
    return out.contiguous() if add_to is None else add_to.add_(out)


class RSTB(nn.Module):
    """Residual Swin-transformer block: ``x + blocks(x)`` on an NCHW tensor.

    The input is expected in channels-last memory format (so the NHWC view is free);
    the output is an NCHW tensor in channels-last memory format.

    Args:
        dim: channels.
        depth: number of Swin blocks.
        num_heads: attention heads.
        window_size: window side.
        reference_resolution: feature-map size of this stage for the 256 x 256 input
            that the released weights were built for. A stage whose resolution there
            is not larger than the window uses window = that resolution and no shift
            (exactly as the released checkpoints).
        mlp_ratio: MLP expansion.
        drop_path: per-block stochastic depth rates.
        inplace: without autograd, add the blocks' output into the input tensor and
            return it (as ``nn.ReLU(inplace=True)`` does) instead of allocating a new
            map; for inputs that nothing else reads afterwards, such as the output of
            the convolution before this block.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        reference_resolution: Tuple[int, int],
        mlp_ratio: float = 2.0,
        drop_path: Sequence[float] = (),
        inplace: bool = False,
    ) -> None:
        super().__init__()
        self.inplace = inplace
        shift = True
        if min(reference_resolution) <= window_size:
            window_size = min(reference_resolution)
            shift = False
        self.dim = dim
        self.window_size = window_size
        self.residual_group = BasicLayer(
            dim,
            depth,
            num_heads,
            window_size,
            shift=shift,
            mlp_ratio=mlp_ratio,
            drop_path=drop_path,
            mask_resolution=reference_resolution,
        )

    def forward(self, x: Tensor, prompts: Optional[List[Optional[WindowPrompts]]] = None) -> Tensor:
        """``x + blocks(x)`` for ``(B, C, H, W)`` ``x``; ``prompts[i]`` goes to block ``i``."""
        t = x.permute(0, 2, 3, 1)
        own = False
        if not t.is_contiguous():
            t, own = t.contiguous(), True
        if (own or self.inplace) and not torch.is_grad_enabled():
            out = self.residual_group(t, prompts, add_to=t)
        else:
            out = self.residual_group(t, prompts).add_(t)
        return out.permute(0, 3, 1, 2)


def drop_path_rates(depths: Sequence[int], max_rate: float = 0.1) -> List[List[float]]:
    """Stochastic-depth rates spread linearly over all blocks, split per stage."""
    total = sum(depths)
    # on the CPU whatever the default device: a model built on ``meta`` (to check weights
    # before allocating) needs these as numbers
    rates = torch.linspace(0, max_rate, total, device="cpu").tolist() if total > 1 else [0.0] * total
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out
