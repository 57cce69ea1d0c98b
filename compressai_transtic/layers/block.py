"""The Swin-transformer block, its MLP and its prompts.

A block works on a channel-last map ``(B, H, W, C)`` of any size: it pads the map to
whole windows, shifts and cuts it (:class:`~.geometry.WindowGeometry`), runs
attention and the MLP chunk by chunk of windows, and puts the map back together.
Each call first settles a plan (:class:`_Plan`: prompt layout, attention backend,
chunk size, stochastic depth), then runs straight through one of three paths: the
packed CPU kernel (inference, prompts as keys/values or none), prompts as extra
keys/values, or prompts as full tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor

from .attention import AttentionBackend, WindowAttention, attention_backend, use_reference
from .cache import LRUCache, tensors_key
from .geometry import WindowGeometry
from .masks import (
    NO_PROMPTS,
    BiasPart,
    PromptLayout,
    PromptMode,
    attention_mask,
    prompt_bias,
    reference_biases,
    shifted_window_mask,
    window_biases,
)
from .window_prompts import WindowPrompts
from .workspace import chunk_windows

__all__ = ["Mlp", "SwinBlock"]


class Mlp(nn.Module):
    """Two-layer GELU MLP (``fc1`` -> GELU -> ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def accumulate(self, x: Tensor, residual: Tensor) -> None:
        """Inference: ``residual += mlp(x)`` for 2-D ``(T, C)`` tensors, with the GELU
        applied in place and ``fc2`` accumulated straight into ``residual``."""
        hidden = F.linear(x, self.fc1.weight, self.fc1.bias)
        torch._C._nn.gelu_(hidden)  # type: ignore[attr-defined]  # the in-place GELU has no stub
        residual.addmm_(hidden, self.fc2.weight.t())
        if self.fc2.bias is not None:
            residual.add_(self.fc2.bias)


def _scaled(x: Tensor, keep: Optional[Tensor]) -> Tensor:
    return x if keep is None else x * keep


@dataclass(frozen=True)
class _Plan:
    """How one call of a block runs, settled before any work is done.

    Attributes:
        geometry: the windows of the block on the map.
        prompts: how prompts join the windows.
        backend: the attention implementation in force.
        in_place: no autograd: residuals accumulate into the gathered tokens.
        windows_per_chunk: windows per chunk (all of them off the CPU).
        stochastic_depth: residual branches are dropped per sample.
        packed: the packed CPU kernel runs the block.
    """

    geometry: WindowGeometry
    prompts: PromptLayout
    backend: AttentionBackend
    in_place: bool
    windows_per_chunk: int
    stochastic_depth: bool
    packed: bool

    @property
    def mode(self) -> PromptMode:
        return self.prompts.mode

    @property
    def prompt_geometry(self) -> WindowGeometry:
        return self.geometry.downsampled(self.prompts.downsample)


class _Keep(NamedTuple):
    """Per-sample stochastic-depth factors of the residual branches, drawn once per
    call and shared by every chunk (None: the branch is kept as is)."""

    attn: Optional[Tensor] = None
    mlp: Optional[Tensor] = None
    prompt: Optional[Tensor] = None


class SwinBlock(nn.Module):
    """Swin-transformer block on a channel-last map ``(B, H, W, C)`` of any size.

    The map is padded at the bottom/right to a multiple of the window (padded keys are
    masked out), cyclically shifted by ``shift_size`` when that is non-zero, split into
    windows, and restored after attention. Prompts (:class:`WindowPrompts`) may join
    the windows as extra keys/values or as full tokens.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: window side.
        shift_size: cyclic shift (0 or ``window_size // 2``).
        mlp_ratio: hidden size of the MLP relative to ``dim``.
        drop_path: stochastic depth rate.
        mask_resolution: when ``shift_size > 0``, the feature-map size at which the
            persistent ``attn_mask`` buffer is stored (the released checkpoints hold it
            for a 256 x 256 input). The mask actually used is rebuilt for the real size.
    """

    attn_mask: Optional[Tensor]

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 8,
        shift_size: int = 0,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
        mask_resolution: Optional[Tuple[int, int]] = None,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size={shift_size} must be in [0, window_size={window_size})")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        if shift_size > 0:
            h, w = mask_resolution if mask_resolution is not None else (window_size, window_size)
            self.register_buffer("attn_mask", shifted_window_mask(h, w, window_size, shift_size), persistent=True)
        else:
            self.attn_mask = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # window biases per map size and prompt layout, valid for one version of the table
        self._bias_cache: LRUCache[Tuple[Tensor, List[BiasPart]]] = LRUCache(4)

    def geometry(self, height: int, width: int) -> WindowGeometry:
        """The windows of this block on a ``height x width`` map."""
        return WindowGeometry.cover(height, width, self.window_size, self.shift_size)

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: Tensor, prompts: Optional[WindowPrompts] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Run the block on a map.

        Args:
            x: ``(B, H, W, C)`` channel-last map.
            prompts: optional prompts for this block.

        Returns:
            the updated map, and for full-token prompts also the updated prompt map.

        The block runs in window order: one gather in, then attention, residuals and
        MLP chunk by chunk of windows (small temporaries that stay in cache and are
        reused by the allocator), then one gather out.
        """
        geometry = self.geometry(x.shape[1], x.shape[2])
        tokens = self._partition(geometry.pad(x), geometry)  # B, nW, N, C (a fresh tensor)
        tokens, prompt_tokens = self.forward_windows(tokens, geometry, prompts)
        out = geometry.crop(self._unpartition(tokens, geometry))
        if prompt_tokens is None or prompts is None:
            return out
        return out, self._unpartition(prompt_tokens, geometry.downsampled(prompts.stride(self.window_size)))

    def forward_windows(
        self, tokens: Tensor, geometry: WindowGeometry, prompts: Optional[WindowPrompts] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """The block on tokens already in this block's window order.

        Args:
            tokens: ``(B, nW, N, C)`` from :meth:`_partition` of the padded map; updated
                in place when gradients are off.
            geometry: the block's windows on the map (:meth:`geometry`).
            prompts: optional prompts for this block.

        Returns:
            the updated tokens, and the updated prompt tokens ``(B, nW, P, C)`` of
            full-token prompts (else None).
        """
        plan = self._plan(tokens, geometry, prompts)
        prompt_tokens = self._prompt_tokens(prompts, plan, tokens.shape[0])
        if plan.packed:
            self._forward_packed(tokens, plan, prompts.tokens if prompts is not None else None, prompt_tokens)
            return tokens, None
        keep = self._draw_keep(plan, tokens)
        if plan.mode is PromptMode.FULL:
            assert prompt_tokens is not None
            return self._forward_full(tokens, prompt_tokens, plan, keep)
        shared_kv = None
        if plan.mode is PromptMode.SHARED:
            assert prompts is not None and prompts.tokens is not None
            shared_kv = self.attn.project_kv(prompts.tokens)
        return self._forward_keys(tokens, prompt_tokens, shared_kv, plan, keep), None

    def _plan(self, tokens: Tensor, geometry: WindowGeometry, prompts: Optional[WindowPrompts]) -> _Plan:
        b, nw, n, _ = tokens.shape
        layout = NO_PROMPTS if prompts is None else prompts.layout(self.window_size, self.shift_size > 0)
        backend = attention_backend(tokens.device)
        # chunks keep a block's temporaries in the CPU's caches; a GPU wants whole maps
        chunked = tokens.device.type == "cpu" and backend is not AttentionBackend.REFERENCE
        stochastic_depth = self.training and not isinstance(self.drop_path, nn.Identity)
        in_place = not torch.is_grad_enabled()
        # the packed kernel takes prompts as keys and values (shared or per window), not as tokens
        packable = layout.mode is not PromptMode.FULL
        packed = backend is AttentionBackend.PACKED and in_place and not stochastic_depth and packable
        step = chunk_windows(b, n + layout.num_prompts) if chunked else nw
        return _Plan(geometry, layout, backend, in_place, step, stochastic_depth, packed)

    # -- the three paths ----------------------------------------------------------------
    def _forward_packed(
        self, tokens: Tensor, plan: _Plan, shared_prompts: Optional[Tensor], window_prompts: Optional[Tensor]
    ) -> None:
        """CPU inference with prompts as keys and values, if any: shared ones ``(P, C)``
        or the per-window ``(B, nW, P, C)``. Every chunk of windows is updated in place
        by :meth:`WindowAttention.attend_windows` and :meth:`Mlp.accumulate`."""
        b, c = tokens.shape[0], tokens.shape[-1]
        kv = self.attn.packed_prompt_kv(shared_prompts) if shared_prompts is not None else None
        step = max(1, plan.windows_per_chunk * b)  # chunks are taken per image, so each one is contiguous
        for start, end, bias in self._chunks(plan, tokens, step):
            for i in range(b):
                t = tokens[i, start:end]
                if window_prompts is not None:
                    kv = self.attn.packed_prompt_kv(window_prompts[i, start:end])
                self.attn.attend_windows(self.norm1(t), bias, t, kv)
                flat = t.view(-1, c)
                self.mlp.accumulate(self.norm2(flat), flat)

    def _forward_keys(
        self,
        tokens: Tensor,
        prompt_tokens: Optional[Tensor],
        shared_kv: Optional[Tuple[Tensor, Tensor]],
        plan: _Plan,
        keep: _Keep,
    ) -> Tensor:
        """No prompts, or prompts as extra keys and values: shared ones (``shared_kv``)
        or the per-window ``prompt_tokens``."""
        outs: List[Tensor] = []
        for start, end, bias in self._chunks(plan, tokens, plan.windows_per_chunk):
            t = tokens[:, start:end]
            kv = shared_kv if prompt_tokens is None else self.attn.project_kv(prompt_tokens[:, start:end])
            outs.append(self._residuals(t, self.attn(self.norm1(t), bias, kv), keep, plan.in_place))
        return tokens if plan.in_place else torch.cat(outs, dim=1)

    def _forward_full(self, tokens: Tensor, prompt_tokens: Tensor, plan: _Plan, keep: _Keep) -> Tuple[Tensor, Tensor]:
        """Prompts as full tokens: they join the queries and get the attention
        sub-layer's update (with its residual), not the MLP's."""
        p = plan.prompts.num_prompts
        outs: List[Tensor] = []
        prompt_outs: List[Tensor] = []
        for start, end, bias in self._chunks(plan, tokens, plan.windows_per_chunk):
            t, pt = tokens[:, start:end], prompt_tokens[:, start:end]
            a = self.attn(self.norm1(torch.cat([pt, t], dim=2)), bias)
            new_p = _scaled(a[:, :, :p], keep.prompt)
            prompt_outs.append(pt.add_(new_p) if plan.in_place else pt + new_p)
            outs.append(self._residuals(t, a[:, :, p:], keep, plan.in_place))
        if plan.in_place:
            return tokens, prompt_tokens
        return torch.cat(outs, dim=1), torch.cat(prompt_outs, dim=1)

    def _residuals(self, t: Tensor, attended: Tensor, keep: _Keep, in_place: bool) -> Tensor:
        """The block's two residual branches after attention: ``t + attended``, then
        ``+ mlp(norm2(.))``; at inference they accumulate into ``t``."""
        if in_place:
            t.add_(_scaled(attended, keep.attn))
            return t.add_(_scaled(self.mlp(self.norm2(t)), keep.mlp))
        y = t + _scaled(attended, keep.attn)
        return y + _scaled(self.mlp(self.norm2(y)), keep.mlp)

    # -- pieces of a call ---------------------------------------------------------------
    def _chunks(self, plan: _Plan, like: Tensor, step: int) -> Iterator[Tuple[int, int, Tensor]]:
        """``(start, end, bias)`` of every chunk of at most ``step`` windows."""
        for start, end, bias in self._window_biases(plan, like):
            for cs in range(start, end, step):
                ce = min(end, cs + step)
                yield cs, ce, (bias if bias.shape[0] == 1 else bias[cs - start : ce - start])

    def _window_biases(self, plan: _Plan, like: Tensor) -> List[BiasPart]:
        """Relative position bias plus masks of every window, cached per map size,
        prompt layout and version of the bias table, except while autograd tracks it."""
        if plan.backend is AttentionBackend.REFERENCE:
            bias = prompt_bias(self.attn.relative_position_bias(), plan.prompts)
            return reference_biases(bias, self._mask(plan), plan.geometry, like)
        table = self.attn.relative_position_bias_table
        if torch.is_grad_enabled() and table.requires_grad:
            return self._build_window_biases(plan, like)
        size = (plan.geometry, plan.prompts)
        key = size + tensors_key([table]) + (like.dtype, like.device)
        # an entry holds the table's storage: no later table can take its address and pass for it
        _, biases = self._bias_cache.get_or_build(key, lambda: (table.detach(), self._build_window_biases(plan, like)))
        return biases

    def _build_window_biases(self, plan: _Plan, like: Tensor) -> List[BiasPart]:
        bias = prompt_bias(self.attn.relative_position_bias(), plan.prompts).to(dtype=like.dtype)
        return window_biases(bias, plan.geometry, plan.prompts, like)

    def _mask(self, plan: _Plan) -> Optional[Tensor]:
        return attention_mask(plan.geometry, plan.prompts)

    def _draw_keep(self, plan: _Plan, like: Tensor) -> _Keep:
        """Stochastic depth: one per-sample draw per residual branch for the whole call."""
        if not plan.stochastic_depth:
            return _Keep()
        b = like.shape[0]
        attn, mlp = self._keep_scale(b, like), self._keep_scale(b, like)
        return _Keep(attn, mlp, self._keep_scale(b, like) if plan.mode is PromptMode.FULL else None)

    def _keep_scale(self, b: int, like: Tensor) -> Tensor:
        """Per-sample stochastic-depth factor (0 or 1 / keep probability), ``(B, 1, 1, 1)``."""
        return self.drop_path(like.new_ones(b, 1, 1, 1))

    def _partition(self, x: Tensor, geometry: WindowGeometry) -> Tensor:
        """``(B, H, W, C)`` -> ``(B, nW, window^2, C)``: windows in raster order on the
        reference path, in window order on the fast path."""
        return geometry.partition_reference(x) if use_reference() else geometry.partition(x)

    def _unpartition(self, t: Tensor, geometry: WindowGeometry) -> Tensor:
        """Inverse of :meth:`_partition`."""
        return geometry.unpartition_reference(t) if use_reference() else geometry.unpartition(t)

    # -- prompts ------------------------------------------------------------------------
    def _prompt_tokens(self, prompts: Optional[WindowPrompts], plan: _Plan, b: int) -> Optional[Tensor]:
        """The prompt tokens of every window ``(B, nW, P, C)``, for full-token and
        per-window prompts (else None)."""
        if prompts is None or not (plan.mode is PromptMode.FULL or plan.mode.per_window):
            return None
        if plan.mode is PromptMode.FULL:
            tokens = self._partition(
                prompts.full_token_map(plan.geometry, plan.prompts.downsample, b), plan.prompt_geometry
            )
        else:
            tokens = self._partition(*prompts.window_prompt_map(plan.geometry, plan.prompts.downsample))
        if tokens.shape[0] != b:
            raise ValueError(f"the prompt map holds {tokens.shape[0]} images, the feature map {b}")
        return tokens
