"""Building blocks of the TIC / TransTIC transforms.

Swin-transformer blocks that work on channel-last feature maps ``(B, H, W, C)`` of any
size, residual Swin-transformer blocks (RSTB) that plug between convolutions, and the
prompt generator of TransTIC.

Performance notes (the transforms spend most of their time here):

* attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with
  the relative position bias and the shifted-window mask folded into one additive
  bias; that bias is built once per feature-map size and cached (the cache follows
  in-place updates of the bias table through the tensor's version counter);
* the cyclic shift and the window partition are a single gather with a cached index,
  not ``roll`` + ``permute`` + ``reshape`` copies;
* convolutions hand channels-last tensors to the blocks, so the NCHW <-> NHWC
  conversions around every RSTB are free views;
* blocks run chunk by chunk of windows in an order that puts the few windows that
  need masks last; at inference the residuals accumulate in place;
* on AVX2 CPUs, blocks without prompts replace the fused kernel by batched matrix
  products over compact per-window, per-head matrices (head dimension 16 is too
  small for the fused kernel there); see :func:`set_cpu_attention`.
* on the CPU, the tokens of a layer live in two per-thread scratch buffers that are
  reused from call to call (:func:`release_workspace` frees them), and ``RSTB(inplace=True)``
  adds into its input: fresh full-size maps cost more in page faults than the
  copies they would hold.

:func:`reference_attention` switches every block to a plain (unfused, uncached)
implementation, used by the tests to check the fast path.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor

__all__ = [
    "SHIFT_MASK_VALUE",
    "PAD_MASK_VALUE",
    "conv",
    "deconv",
    "Mlp",
    "WindowAttention",
    "SwinBlock",
    "BasicLayer",
    "RSTB",
    "WindowPrompts",
    "PromptGenerator",
    "reference_attention",
    "set_cpu_attention",
    "release_workspace",
    "window_partition_index",
    "window_unpartition_index",
    "shifted_window_mask",
]

#: additive attention mask for pairs of tokens from different shifted-window regions;
#: the released weights were trained with -100 (not -inf).
SHIFT_MASK_VALUE = -100.0
#: additive mask for keys that lie in the padding added to reach a multiple of the
#: window; finite so that fully padded windows never produce NaN.
PAD_MASK_VALUE = -1.0e4

_state = threading.local()


def _use_reference() -> bool:
    return getattr(_state, "reference", False)


@contextlib.contextmanager
def reference_attention(enabled: bool = True) -> Iterator[None]:
    """Run window attention through the plain reference path inside the context.

    The reference path computes ``softmax(q k^T * scale + bias + mask) v`` explicitly,
    rebuilds masks and biases on every call and partitions windows with
    ``roll``/``view``/``permute``. It exists to test the fused path against.
    """
    previous = _use_reference()
    _state.reference = enabled
    try:
        yield
    finally:
        _state.reference = previous


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """Convolution with ``padding = kernel_size // 2``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """Transposed convolution that multiplies the spatial size by ``stride`` exactly."""
    return nn.ConvTranspose2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        output_padding=stride - 1,
    )


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
        torch._C._nn.gelu_(hidden)
        residual.addmm_(hidden, self.fc2.weight.t())
        if self.fc2.bias is not None:
            residual.add_(self.fc2.bias)


# ----------------------------------------------------------------------------------------
# window geometry (cached)
# ----------------------------------------------------------------------------------------


class _LRU(OrderedDict):
    """Small least-recently-used cache for per-size geometry (indices, masks)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get(self, key, default=None):  # type: ignore[override]
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


_INDEX_CACHE = _LRU(256)
#: tokens (batch x windows x tokens per window) processed at once by a Swin block on
#: the CPU (GPUs take whole maps)
_CHUNK_TOKENS = 2048

CPU_ATTENTION_CHOICES = ("auto", "packed", "sdpa")
_cpu_attention = "auto"


def set_cpu_attention(kind: str) -> None:
    """Choose how Swin blocks without prompts (or with shared prompts) attend on the
    CPU at inference.

    Args:
        kind: ``"packed"``: batched matrix products over per-window, per-head matrices
            with in-place residual updates (:meth:`WindowAttention.attend_windows`);
            ``"sdpa"``: PyTorch's fused scaled-dot-product attention; ``"auto"``
            (default): ``packed`` where PyTorch's CPU kernels run with AVX2, ``sdpa``
            elsewhere. Measured at 768x512 with 2 threads, TIC forward: on an AVX2
            CPU (AMD EPYC) the fused kernel spends 3.6 ms per 32 windows of 64
            tokens and 8 heads of 16 channels where the packed products spend
            1.4 ms; on an AVX-512 CPU (Intel Xeon) the fused kernel is faster.

    Both compute the same function; results differ by float rounding only.
    """
    global _cpu_attention
    if kind not in CPU_ATTENTION_CHOICES:
        raise ValueError(f"cpu attention must be one of {CPU_ATTENTION_CHOICES}, got {kind!r}")
    _cpu_attention = kind


class _Workspace(threading.local):
    """Per-thread scratch buffers of the fused inference path on the CPU.

    PyTorch does not cache CPU allocations, and a fresh buffer of a full-resolution
    token map (48 MB for TIC at 768x512) costs about as much in page faults as four
    copies of it, so the two token buffers of :meth:`BasicLayer._forward_fused` are
    kept from call to call. Each grows to the largest map seen; they never leave the
    layer (its output is always a caller-owned tensor).
    """

    def __init__(self) -> None:
        self.buffers: Dict[Tuple[torch.device, torch.dtype], List[Tensor]] = {}
        self.busy = False


_workspace = _Workspace()


def release_workspace() -> None:
    """Free this thread's scratch buffers of the CPU inference path.

    Inference on the CPU keeps two buffers per thread, each the size of the largest
    token map coded so far (2 x 48 MB for TIC at 768x512), so that repeated calls
    need no fresh memory for them. They are rebuilt on the next call.
    """
    _workspace.buffers.clear()


@contextlib.contextmanager
def _scratch(like: Tensor, shape: Tuple[int, ...]) -> Iterator[Tuple[Tensor, Tensor]]:
    """Two uninitialised tensors of ``shape`` (``like``'s dtype and device): views of
    this thread's workspace on the CPU, fresh tensors elsewhere (GPU allocators cache
    on their own) and in nested use."""
    if like.device.type != "cpu" or _workspace.busy:
        yield like.new_empty(shape), like.new_empty(shape)
        return
    numel = math.prod(shape)
    key = (like.device, like.dtype)
    buffers = _workspace.buffers.get(key)
    if buffers is None or buffers[0].numel() < numel:
        _workspace.buffers.pop(key, None)  # the old pair goes before the new one comes
        buffers = _workspace.buffers[key] = [like.new_empty(numel), like.new_empty(numel)]
    _workspace.busy = True
    try:
        yield buffers[0][:numel].view(shape), buffers[1][:numel].view(shape)
    finally:
        _workspace.busy = False


def _packed_cpu_attention() -> bool:
    try:
        autocast = torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch < 2.4
        autocast = torch.is_autocast_cpu_enabled()
    if autocast:  # the in-place accumulations need one dtype throughout
        return False
    if _cpu_attention == "auto":
        return torch.backends.cpu.get_cpu_capability() == "AVX2"
    return _cpu_attention == "packed"


def _relative_position_index(window: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    rel = rel.permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_order(windows_h: int, windows_w: int) -> Tensor:
    """Permutation of raster window ids that puts the last window row and column last.

    Shifted-window masks only fall on the last row/column, and so do padding masks
    unless padding and shift together reach past one window; with this order the
    unmasked windows come first and share one broadcast bias, and only the few
    boundary windows need a mask of their own.
    """
    ids = torch.arange(windows_h * windows_w).view(windows_h, windows_w)
    boundary = torch.zeros(windows_h, windows_w, dtype=torch.bool)
    boundary[-1, :] = True
    boundary[:, -1] = True
    return torch.cat([ids[~boundary], ids[boundary]])


def window_partition_index(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Index that gathers a flattened ``height x width`` map into shifted windows.

    ``tokens.index_select(1, idx)`` equals ``roll(map, (-shift, -shift))`` followed by the
    usual window partition, with windows in :func:`window_order` and tokens in raster
    order inside each window. :func:`window_unpartition_index` undoes it.
    """
    key = ("part", height, width, window, shift, str(device))
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        grid = torch.arange(height * width, dtype=torch.long).view(height, width)
        if shift:
            grid = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
        grid = grid.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
        grid = grid.reshape(-1, window * window)[window_order(height // window, width // window)]
        idx = grid.reshape(-1).to(device)
        _INDEX_CACHE.put(key, idx)
    return idx


def window_unpartition_index(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Inverse of :func:`window_partition_index`: window order back to the map."""
    key = ("inv", height, width, window, shift, str(device))
    inv = _INDEX_CACHE.get(key)
    if inv is None:
        inv = torch.argsort(window_partition_index(height, width, window, shift, device))
        _INDEX_CACHE.put(key, inv)
    return inv


def _composed_index(
    height: int, width: int, window: int, shift_from: int, shift_to: int, device: torch.device
) -> Tensor:
    """Index taking tokens from the window order of ``shift_from`` to that of ``shift_to``."""
    key = ("comp", height, width, window, shift_from, shift_to, str(device))
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        inv = window_unpartition_index(height, width, window, shift_from, device)
        idx = inv[window_partition_index(height, width, window, shift_to, device)]
        _INDEX_CACHE.put(key, idx)
    return idx


def _partition_labels(labels: Tensor, window: int, shift: int) -> Tensor:
    """(H, W) labels -> (num_windows, window*window) after the cyclic shift."""
    height, width = labels.shape
    if shift:
        labels = torch.roll(labels, shifts=(-shift, -shift), dims=(0, 1))
    labels = labels.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
    return labels.reshape(-1, window * window)


def _region_labels(height: int, width: int, window: int, shift: int) -> Tensor:
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
    return _partition_labels(labels, window, 0)


def _label_mask(query_labels: Tensor, key_labels: Tensor) -> Tensor:
    """(nW, Nq, Nk) additive mask: 0 for equal labels, :data:`SHIFT_MASK_VALUE` otherwise."""
    diff = key_labels[:, None, :] - query_labels[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK_VALUE)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """Shifted-window attention mask ``(num_windows, N, N)`` with 0 / :data:`SHIFT_MASK_VALUE`.

    Tokens of one window that came from different regions of the un-shifted map (the
    cyclic shift wraps the last ``shift`` rows/columns around) may not attend to each
    other. ``height`` and ``width`` must be multiples of ``window``.
    """
    labels = _region_labels(height, width, window, shift)
    return _label_mask(labels, labels)


def _padding_key_mask(height: int, width: int, valid_h: int, valid_w: int, window: int, shift: int) -> Tensor:
    """(num_windows, N) additive mask that hides keys lying in the bottom/right padding."""
    valid = torch.zeros(height, width)
    valid[:valid_h, :valid_w] = 1.0
    windows = _partition_labels(valid, window, shift)
    return torch.where(windows > 0, 0.0, PAD_MASK_VALUE)


def _scaled(x: Tensor, keep: Optional[Tensor]) -> Tensor:
    return x if keep is None else x * keep


def _legacy_prompt_mask(image_mask: Tensor, num_prompts: int) -> Tensor:
    """The encoder mask layout of the released TransTIC weights (see ``transtic-facts``).

    The authors build a mask for keys ordered ``[image, prompts]``: the image mask
    followed by a prompt part obtained by nearest-neighbour resampling of image-mask
    columns ``P .. N-P`` to ``P`` columns. The keys are then ordered ``[prompts, image]``,
    so column ``k`` of that mask lands on stored key ``k``. This returns the
    ``(num_windows, N, P + N)`` mask as it is applied.
    """
    n = image_mask.shape[-1]
    middle = image_mask[:, :, num_prompts : n - num_prompts]
    src = (torch.arange(num_prompts) * middle.shape[-1]) // num_prompts  # floor(j * in / out)
    prompt_part = middle[:, :, src]
    return torch.cat([image_mask, prompt_part], dim=-1)


# ----------------------------------------------------------------------------------------
# attention and blocks
# ----------------------------------------------------------------------------------------


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
            :func:`_legacy_prompt_mask`) instead of the aligned one.
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


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias.

    Args:
        dim: number of channels.
        window_size: side of the square window.
        num_heads: number of attention heads.

    The query/key/value projection has a bias, as in Swin and the released weights.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window_size), persistent=True)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """``(num_heads, N, N)`` bias, ``N = window_size ** 2``."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def project_kv(self, tokens: Tensor, with_bias: bool = True) -> Tuple[Tensor, Tensor]:
        """Keys and values of prompt tokens ``(..., P, C)`` -> two ``(..., heads, P, d)``
        (without the key and value biases when ``with_bias`` is false)."""
        weight = self.qkv.weight[self.dim :]
        bias = self.qkv.bias[self.dim :] if self.qkv.bias is not None and with_bias else None
        kv = F.linear(tokens, weight, bias)
        kv = kv.unflatten(-1, (2, self.num_heads, self.head_dim)).movedim(-4, -2)  # ..., 2, heads, P, d
        return kv.select(-4, 0), kv.select(-4, 1)

    def forward(
        self,
        x: Tensor,
        bias: Tensor,
        prompt_kv: Optional[Tuple[Tensor, Tensor]] = None,
    ) -> Tensor:
        """Attend inside windows.

        Args:
            x: ``(B, nW, Nq, C)`` window tokens (queries, keys and values).
            bias: additive bias ``(1 or nW, heads, Nq, K)``; ``K`` counts prompt keys
                (first), then the tokens of ``x``.
            prompt_kv: extra keys and values, each ``(heads, P, d)`` (shared by every
                window) or ``(B, nW, heads, P, d)``.

        Returns:
            ``(B, nW, Nq, C)``.
        """
        b, nw, nq, c = x.shape
        heads, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).view(b * nw, nq, 3, heads, hd).permute(2, 0, 3, 1, 4)  # 3, B*nW, h, Nq, d
        q, k, v = qkv.unbind(0)
        if prompt_kv is not None:
            pk, pv = prompt_kv
            if pk.dim() == 3:
                pk = pk.expand(b * nw, -1, -1, -1)
                pv = pv.expand(b * nw, -1, -1, -1)
            else:
                pk = pk.reshape(b * nw, *pk.shape[2:])
                pv = pv.reshape(b * nw, *pv.shape[2:])
            k = torch.cat([pk, k], dim=-2)
            v = torch.cat([pv, v], dim=-2)
        if b > 1 and bias.shape[0] > 1:
            bias = bias.expand(b, -1, -1, -1, -1).reshape(b * nw, *bias.shape[1:])
        if _use_reference():
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, nw, nq, c))

    def _packed_weights(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Projection weights laid out for :meth:`attend_windows` (cached per version).

        Returns ``(qkv weight, query bias, proj weight^T, proj bias)``. The qkv rows are
        reordered from ``(3, heads, d)`` to ``(heads, 3, d)`` and the query rows carry
        the softmax scale, so one batched product per window yields every head's
        ``q^T, k^T, v^T`` as compact ``(d, N)`` matrices. Only the query bias is
        added to them: the key bias adds ``q . b_k`` to a whole row of scores, which
        the softmax ignores, and since every row of attention weights sums to one the
        value bias comes out unchanged, so it joins the projection bias
        (``b_proj + W_proj b_v``).
        """
        w, bq, pw, pb = self.qkv.weight, self.qkv.bias, self.proj.weight, self.proj.bias
        key = tuple((t._version, t.data_ptr()) for t in (w, pw) + tuple(t for t in (bq, pb) if t is not None))
        cached = self.__dict__.get("_packed")
        if cached is not None and cached[0] == key:
            return cached[1]
        c, heads, hd = self.dim, self.num_heads, self.head_dim
        with torch.no_grad():
            weight = w.detach().view(3, heads, hd, c).clone()
            bias = bq.detach().view(3, heads, hd) if bq is not None else weight.new_zeros(3, heads, hd)
            weight[0] *= self.scale
            proj_bias = pb.detach() if pb is not None else pw.new_zeros(c)
            packed = (
                weight.transpose(0, 1).reshape(3 * c, c).contiguous(),
                (bias[0] * self.scale).reshape(heads, hd, 1).contiguous(),
                pw.detach().t().contiguous(),
                proj_bias + pw.detach() @ bias[2].reshape(c),
            )
        self.__dict__["_packed"] = (key, packed)
        return packed

    def packed_prompt_kv(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """Keys and values of shared prompt tokens ``(P, C)`` for :meth:`attend_windows`:
        two ``(heads, d, P)`` tensors, without the key and value biases (which the
        packed path leaves out for every key, see :meth:`_packed_weights`)."""
        k, v = self.project_kv(tokens, with_bias=False)
        return k.transpose(-2, -1), v.transpose(-2, -1)

    def attend_windows(
        self, x: Tensor, bias: Tensor, residual: Tensor, prompt_kv: Optional[Tuple[Tensor, Tensor]] = None
    ) -> None:
        """Inference on CPU: ``residual += proj(attention(x))`` without copies.

        Window attention as four batched matrix products over compact per-window,
        per-head matrices (head dimension 16 is far too small for the fused kernel to
        reach the machine's matmul speed): ``qkv^T = W x^T`` per window, ``s = q k^T``,
        ``softmax(s + bias)`` in place, ``o^T = v^T p^T``, and the output projection
        accumulated straight into ``residual``.

        Args:
            x: ``(nW, N, C)`` normalised window tokens (contiguous).
            bias: additive bias ``(1 or nW, heads, N, K)``; ``K`` counts the prompt
                keys (first), then the ``N`` tokens.
            residual: ``(nW, N, C)`` contiguous tokens, updated in place.
            prompt_kv: keys and values of shared prompts from :meth:`packed_prompt_kv`.
        """
        nw, n, c = x.shape
        heads, hd = self.num_heads, self.head_dim
        w_qkv, b_q, w_proj_t, b_proj = self._packed_weights()
        qkv = torch.bmm(w_qkv.expand(nw, -1, -1), x.transpose(1, 2)).view(nw, heads, 3, hd, n)
        qkv[:, :, 0].add_(b_q)
        q_t = qkv[:, :, 0].reshape(nw * heads, hd, n)
        if prompt_kv is None:
            k_t, v_t = (qkv[:, :, i].reshape(nw * heads, hd, n) for i in (1, 2))
        else:
            k_t, v_t = (
                torch.cat([pt.expand(nw, -1, -1, -1), qkv[:, :, i]], dim=3).view(nw * heads, hd, -1)
                for i, pt in ((1, prompt_kv[0]), (2, prompt_kv[1]))
            )
        scores = torch.bmm(q_t.transpose(1, 2), k_t)
        scores.view(nw, heads, n, -1).add_(bias)
        torch.softmax(scores, -1, out=scores)
        out_t = torch.bmm(v_t, scores.transpose(1, 2)).view(nw, c, n)
        residual.baddbmm_(out_t.transpose(1, 2), w_proj_t.expand(nw, -1, -1)).add_(b_proj)


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
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    # -- geometry -----------------------------------------------------------------------
    def _padded(self, h: int, w: int) -> Tuple[int, int]:
        ws = self.window_size
        return -(-h // ws) * ws, -(-w // ws) * ws

    def _partition(self, x: Tensor, window: int, shift: int) -> Tensor:
        """(B, H, W, C) -> (B, nW, window^2, C) after the cyclic shift.

        Windows are in raster order on the reference path, in :func:`window_order` on
        the fast path.
        """
        b, h, w, c = x.shape
        nw = (h // window) * (w // window)
        if _use_reference():
            xs = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x
            out = xs.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
            return out.reshape(b, nw, window * window, c).clone()  # always a fresh tensor
        idx = window_partition_index(h, w, window, shift, x.device)
        return x.reshape(b, h * w, c).index_select(1, idx).view(b, nw, window * window, c)

    def _unpartition(self, t: Tensor, h: int, w: int, window: int, shift: int) -> Tensor:
        """Inverse of :meth:`_partition`: (B, nW, window^2, C) -> (B, H, W, C)."""
        b, c = t.shape[0], t.shape[-1]
        if _use_reference():
            out = t.reshape(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
            out = out.reshape(b, h, w, c)
            return torch.roll(out, shifts=(shift, shift), dims=(1, 2)) if shift else out
        inv = window_unpartition_index(h, w, window, shift, t.device)
        return t.reshape(b, h * w, c).index_select(1, inv).view(b, h, w, c)

    # -- masks and biases ---------------------------------------------------------------
    def _raster_mask(self, hp: int, wp: int, h: int, w: int, mode: str, p: int, d: int) -> Optional[Tensor]:
        """Additive mask ``(nW, Nq, K)`` in raster window order, or None if nothing is masked.

        ``mode``: "none" (no prompts), "shared" (shared prompt keys), "window" (aligned
        per-window prompt keys), "legacy" (released encoder layout), "full" (prompts as
        full tokens).
        """
        ws, ss = self.window_size, self.shift_size
        padded = (hp, wp) != (h, w)
        if padded and mode in ("window", "legacy"):
            raise RuntimeError(
                f"per-window prompts need a feature map that is a multiple of the window ({ws}); got {h}x{w}"
            )
        image_labels = _region_labels(hp, wp, ws, ss)
        pad = _padding_key_mask(hp, wp, h, w, ws, ss)[:, None, :] if padded else None  # nW, 1, N
        if mode in ("none", "shared"):
            mask = _label_mask(image_labels, image_labels) if ss else None
            if pad is not None:
                mask = pad.expand(-1, ws * ws, -1) if mask is None else mask + pad
            if mask is not None and mode == "shared":
                mask = torch.cat([mask.new_zeros(mask.shape[0], ws * ws, p), mask], dim=-1)
            return mask
        if not ss and not padded:
            return None
        prompt_labels = _region_labels(hp // d, wp // d, ws // d, ss // d)
        if mode == "legacy":
            return _legacy_prompt_mask(_label_mask(image_labels, image_labels), p)
        if mode == "window":
            return torch.cat(
                [_label_mask(image_labels, prompt_labels), _label_mask(image_labels, image_labels)], dim=-1
            )
        labels = torch.cat([prompt_labels, image_labels], dim=1)  # full tokens
        mask = _label_mask(labels, labels)
        if pad is not None:
            mask = mask + torch.cat([pad.new_zeros(pad.shape[0], 1, p), pad], dim=-1)
        return mask

    def _bias(self, mode: str, p: int) -> Tensor:
        """Relative position bias ``(heads, Nq, K)``, zero for every pair with a prompt."""
        rel = self.attn.relative_position_bias()
        if mode == "none":
            return rel
        n = self.window_size**2
        if mode == "full":
            full = rel.new_zeros(self.num_heads, p + n, p + n)
            full[:, p:, p:] = rel
            return full
        return torch.cat([rel.new_zeros(self.num_heads, n, p), rel], dim=-1)

    def _bias_parts(
        self, hp: int, wp: int, h: int, w: int, mode: str, p: int, d: int, x: Tensor
    ) -> List[Tuple[int, int, Tensor]]:
        ws = self.window_size
        nwh, nww = hp // ws, wp // ws
        nw = nwh * nww
        if _use_reference():
            bias = self._bias(mode, p)
            mask = self._raster_mask(hp, wp, h, w, mode, p, d)
            full = bias[None] if mask is None else mask.to(bias.device)[:, None] + bias
            return [(0, nw, full.to(dtype=x.dtype))]

        table = self.attn.relative_position_bias_table
        cacheable = not (torch.is_grad_enabled() and table.requires_grad)
        key = (hp, wp, h, w, mode, p, d, table._version, table.data_ptr(), x.dtype, str(x.device))
        cache: Dict[Tuple, List[Tuple[int, int, Tensor]]] = self.__dict__.setdefault("_bias_cache", {})
        if cacheable and key in cache:
            return cache[key]
        bias = self._bias(mode, p).to(dtype=x.dtype)
        mask = self._raster_mask(hp, wp, h, w, mode, p, d)
        if mask is None:
            parts = [(0, nw, bias[None])]
        else:
            # windows before the first one that carries a mask share the broadcast bias.
            # That is every interior window, except when padding and shift together
            # push padded keys into the second-to-last window row or column.
            ordered = mask[window_order(nwh, nww)]
            masked = ordered.flatten(1).ne(0).any(1).tolist()
            first = masked.index(True) if True in masked else nw
            boundary = ordered[first:].to(device=x.device, dtype=x.dtype)
            parts = [(0, first, bias[None]), (first, nw, boundary[:, None] + bias)]
        if cacheable:
            if len(cache) >= 4:
                cache.clear()
            cache[key] = parts
        return parts

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: Tensor, prompts: Optional[WindowPrompts] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Args:
        x: ``(B, H, W, C)`` channel-last map.
        prompts: optional prompts for this block.

        Returns:
            the updated map, and for full-token prompts also the updated prompt map.

        The block runs in window order: one gather in, then attention, residuals and
        MLP chunk by chunk of windows (small temporaries that stay in cache and are
        reused by the allocator), then one gather out.
        """
        b, h, w, c = x.shape
        hp, wp = self._padded(h, w)
        ws, ss = self.window_size, self.shift_size
        padded = (hp, wp) != (h, w)
        xp = F.pad(x, (0, 0, 0, wp - w, 0, hp - h)) if padded else x
        tokens = self._partition(xp, ws, ss)  # B, nW, N, C (a fresh tensor)
        tokens, prompt_tokens, d = self.forward_windows(tokens, (hp, wp, h, w), prompts)
        out = self._unpartition(tokens, hp, wp, ws, ss)
        if padded:
            out = out[:, :h, :w, :].contiguous()
        if prompt_tokens is not None:
            return out, self._unpartition(prompt_tokens, hp // d, wp // d, ws // d, ss // d)
        return out

    def forward_windows(
        self, tokens: Tensor, geometry: Tuple[int, int, int, int], prompts: Optional[WindowPrompts] = None
    ) -> Tuple[Tensor, Optional[Tensor], int]:
        """The block on tokens already in this block's window order.

        Args:
            tokens: ``(B, nW, N, C)`` from :meth:`_partition` of the padded map; updated
                in place when gradients are off.
            geometry: ``(padded H, padded W, H, W)`` of the map.
            prompts: optional prompts for this block.

        Returns:
            the updated tokens, the updated prompt tokens (full-token prompts only,
            else None) and the prompt stride ``d``.
        """
        hp, wp, h, w = geometry
        b, nw, n, c = tokens.shape
        ws, ss = self.window_size, self.shift_size

        mode, p, d = "none", 0, 1
        shared_kv: Optional[Tuple[Tensor, Tensor]] = None
        prompt_tokens: Optional[Tensor] = None  # B, nW, P, C
        if prompts is not None:
            if prompts.full_tokens:
                mode = "full"
                pmap, d = self._tile_prompts(prompts, b, hp, wp)
                p = (ws // d) ** 2
                prompt_tokens = self._partition(pmap, ws // d, ss // d)
            elif prompts.tokens is not None:
                mode, p = "shared", prompts.tokens.shape[-2]
            else:
                d = prompts.downsample
                mode = "legacy" if (prompts.legacy_mask and ss) else "window"
                p = (ws // d) ** 2
                prompt_tokens = self._window_prompt_tokens(prompts, b, nw)

        in_place = not torch.is_grad_enabled()
        # chunks keep a block's temporaries in the CPU's caches; a GPU wants whole maps
        chunked = tokens.device.type == "cpu" and not _use_reference()
        step = max(1, _CHUNK_TOKENS // (b * (n + p))) if chunked else nw
        # stochastic depth: one per-sample draw per branch for the whole block, shared
        # by all chunks (None when inactive)
        keep_attn = keep_mlp = keep_prompt = None
        if self.training and not isinstance(self.drop_path, nn.Identity):
            keep_attn = self._keep_scale(b, tokens)
            keep_mlp = self._keep_scale(b, tokens)
            if mode == "full":
                keep_prompt = self._keep_scale(b, tokens)
        if (
            (mode == "none" or (mode == "shared" and prompts.tokens.dim() == 2))
            and in_place
            and chunked
            and keep_attn is None
            and keep_mlp is None
            and _packed_cpu_attention()
        ):
            self._forward_windows_packed(tokens, geometry, step, prompts.tokens if mode == "shared" else None)
            return tokens, None, d
        if mode == "shared":
            shared_kv = self.attn.project_kv(prompts.tokens)
        outs: List[Tensor] = []
        prompt_outs: List[Tensor] = []
        for start, end, bias in self._bias_parts(hp, wp, h, w, mode, p, d, tokens):
            for cs in range(start, end, step):
                ce = min(end, cs + step)
                t = tokens[:, cs:ce]
                chunk_bias = bias if bias.shape[0] == 1 else bias[cs - start : ce - start]
                if mode == "full":
                    pt = prompt_tokens[:, cs:ce]
                    a = self.attn(self.norm1(torch.cat([pt, t], dim=2)), chunk_bias)
                    new_p = _scaled(a[:, :, :p], keep_prompt)
                    a = a[:, :, p:]
                    if in_place:
                        pt.add_(new_p)
                    else:
                        prompt_outs.append(pt + new_p)
                else:
                    kv = shared_kv
                    if prompt_tokens is not None:
                        kv = self.attn.project_kv(prompt_tokens[:, cs:ce])
                    a = self.attn(self.norm1(t), chunk_bias, kv)
                if in_place:  # inference: residuals accumulate into the gathered tokens
                    t.add_(_scaled(a, keep_attn))
                    t.add_(_scaled(self.mlp(self.norm2(t)), keep_mlp))
                else:
                    y = t + _scaled(a, keep_attn)
                    outs.append(y + _scaled(self.mlp(self.norm2(y)), keep_mlp))
        out_tokens = tokens if in_place else torch.cat(outs, dim=1)
        if mode == "full":
            return out_tokens, (prompt_tokens if in_place else torch.cat(prompt_outs, dim=1)), d
        return out_tokens, None, d

    def _forward_windows_packed(
        self, tokens: Tensor, geometry: Tuple[int, int, int, int], step: int, shared_prompts: Optional[Tensor] = None
    ) -> None:
        """CPU inference without prompts or with shared prompts ``(P, C)``: every chunk
        of windows is updated in place by :meth:`WindowAttention.attend_windows` and
        :meth:`Mlp.accumulate`."""
        hp, wp, h, w = geometry
        b, _, n, c = tokens.shape
        step = max(1, step * b)  # chunks are taken per image, so each one is contiguous
        if shared_prompts is None:
            mode, p, kv = "none", 0, None
        else:
            mode, p, kv = "shared", shared_prompts.shape[0], self.attn.packed_prompt_kv(shared_prompts)
        for start, end, bias in self._bias_parts(hp, wp, h, w, mode, p, 1, tokens):
            for cs in range(start, end, step):
                ce = min(end, cs + step)
                chunk_bias = bias if bias.shape[0] == 1 else bias[cs - start : ce - start]
                for i in range(b):
                    t = tokens[i, cs:ce]
                    self.attn.attend_windows(self.norm1(t), chunk_bias, t, kv)
                    flat = t.view(-1, c)
                    self.mlp.accumulate(self.norm2(flat), flat)

    def _keep_scale(self, b: int, like: Tensor) -> Tensor:
        """Per-sample stochastic-depth factor (0 or 1 / keep probability), ``(B, 1, 1, 1)``."""
        return self.drop_path(like.new_ones(b, 1, 1, 1))

    def _tile_prompts(self, prompts: WindowPrompts, b: int, hp: int, wp: int) -> Tuple[Tensor, int]:
        """Prompt map covering the padded map, and its stride ``d`` (full-token mode)."""
        ws = self.window_size
        if prompts.tokens is not None:
            p, c = prompts.tokens.shape[-2:]
            side = int(round(math.sqrt(p)))
            if side * side != p or ws % side:
                raise ValueError(f"{p} shared prompts cannot be tiled over {ws}x{ws} windows")
            d = ws // side
            tile = prompts.tokens.reshape(side, side, c)
            pmap = tile.repeat(hp // ws, wp // ws, 1).unsqueeze(0).expand(b, -1, -1, -1)
        else:
            pmap, d = prompts.prompt_map, prompts.downsample
        if tuple(pmap.shape[1:3]) != (hp // d, wp // d):
            raise ValueError(f"prompt map {tuple(pmap.shape[1:3])} does not cover the padded map {hp}x{wp} at 1/{d}")
        return pmap, d

    def _window_prompt_tokens(self, prompts: WindowPrompts, b: int, nw: int) -> Tensor:
        """Co-located prompt tokens of every window: ``(B, nW, (w / d)^2, C)``."""
        pmap, d = prompts.prompt_map, prompts.downsample
        if self.window_size % d or self.shift_size % d:
            raise ValueError(
                f"prompt downsample {d} does not divide window {self.window_size} / shift {self.shift_size}"
            )
        pw, ps = self.window_size // d, self.shift_size // d
        ph, pwid = pmap.shape[1:3]
        if ph % pw or pwid % pw or (ph // pw) * (pwid // pw) != nw:
            raise ValueError(
                f"prompt map of {ph}x{pwid} does not tile the {nw} windows of this block with {pw}x{pw} windows"
            )
        return self._partition(pmap, pw, ps)


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
        for i, block in enumerate(self.blocks):
            given = prompts[i] if prompts is not None and i < len(prompts) else None
            current = given if given is not None else carried
            if current is not None and current.full_tokens:
                x, pmap = block(x, current)
                if current.tokens is not None:
                    side = int(round(math.sqrt(current.tokens.shape[-2])))
                    d = block.window_size // side
                else:
                    d = current.downsample
                carried = WindowPrompts(prompt_map=pmap, downsample=d, full_tokens=True)
            else:
                x = block(x, current)
        return x if add_to is None else add_to.add_(x)

    def _can_fuse(self, prompts: Optional[List[Optional[WindowPrompts]]]) -> bool:
        if torch.is_grad_enabled() or _use_reference():
            return False
        if prompts is not None and any(p is not None and p.full_tokens for p in prompts):
            return False
        return len({blk.window_size for blk in self.blocks}) == 1

    def _forward_fused(
        self, x: Tensor, prompts: Optional[List[Optional[WindowPrompts]]], add_to: Optional[Tensor] = None
    ) -> Tensor:
        """Inference path: tokens stay in window order from block to block.

        The tokens live in two scratch buffers (see :class:`_Workspace`): between two
        blocks one gather (the composition of the first block's inverse partition
        and the next block's partition) moves them from one buffer to the other,
        instead of scattering to a fresh map and gathering again.
        """
        first = self.blocks[0]
        b, h, w, c = x.shape
        hp, wp = first._padded(h, w)
        ws = first.window_size
        nw, n = (hp // ws) * (wp // ws), ws * ws
        padded = (hp, wp) != (h, w)
        if padded:
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        device = x.device
        with _scratch(x, (b, hp * wp, c)) as (current, spare):
            torch.index_select(
                x.reshape(b, hp * wp, c), 1, window_partition_index(hp, wp, ws, first.shift_size, device), out=current
            )
            previous_shift = first.shift_size
            for i, block in enumerate(self.blocks):
                if i > 0:
                    index = _composed_index(hp, wp, ws, previous_shift, block.shift_size, device)
                    torch.index_select(current, 1, index, out=spare)
                    current, spare = spare, current
                given = prompts[i] if prompts is not None and i < len(prompts) else None
                block.forward_windows(current.view(b, nw, n, c), (hp, wp, h, w), given)
                previous_shift = block.shift_size
            inverse = window_unpartition_index(hp, wp, ws, previous_shift, device)
            if add_to is None and not padded:  # the output leaves the scratch buffers: a fresh tensor
                return current.index_select(1, inverse).view(b, hp, wp, c)
            out = torch.index_select(current, 1, inverse, out=spare).view(b, hp, wp, c)
            if padded:
                out = out[:, :h, :w]
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
        t = x.permute(0, 2, 3, 1)
        own = False
        if not t.is_contiguous():
            t, own = t.contiguous(), True
        if (own or self.inplace) and not torch.is_grad_enabled():
            out = self.residual_group(t, prompts, add_to=t)
        else:
            out = self.residual_group(t, prompts).add_(t)
        return out.permute(0, 3, 1, 2)


class _ConvBNReLU(nn.Sequential):
    """``repeats`` x (conv3x3, BatchNorm, ReLU); indices 0/1/2, 3/4/5, ..."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int) -> None:
        layers: List[nn.Module] = []
        for i in range(repeats):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class PromptGenerator(nn.Module):
    """TransTIC's instance-specific prompt generator (U-Net-like, output at 1/2).

    ``down1`` (2 x conv-BN-ReLU at ``width``), max-pool, ``down2`` (at 2 x width),
    max-pool, ``down3`` (at 4 x width), bilinear x2 up (align_corners) + skip -> ``up2``
    (3 x conv-BN-ReLU), up + skip -> ``up1`` (3 x), then ``classifier`` (conv3x3,
    stride 2, to ``out_channels``, no activation).

    Both concatenations put the skip connection first and the upsampled map second:
    ``up2`` sees ``[down2 (2w), up(down3) (4w)]`` and ``up1`` sees ``[down1 (w),
    up(up2) (2w)]``. That is the channel order the released weights expect; the other
    order loads with ``strict=True`` as well (the shapes agree) but gives other
    prompts, so ``tests/test_prompt_generator.py`` checks it against an independent
    functional implementation.

    Args:
        out_channels: channels of the prompt features (N of the codec).
        width: channels of the first level.
        in_channels: image channels.
    """

    def __init__(self, out_channels: int, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.down1 = _ConvBNReLU(in_channels, width, 2)
        self.down2 = _ConvBNReLU(width, 2 * width, 2)
        self.down3 = _ConvBNReLU(2 * width, 4 * width, 2)
        self.maxpool = nn.MaxPool2d(2)
        self.up2 = _ConvBNReLU(4 * width + 2 * width, 2 * width, 3)
        self.up1 = _ConvBNReLU(2 * width + width, width, 3)
        self.classifier = nn.Sequential(nn.Conv2d(width, out_channels, 3, stride=2, padding=1))

    @staticmethod
    def _up(x: Tensor, like: Tensor) -> Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)

    def forward(self, x: Tensor) -> Tensor:
        d1 = self.down1(x)
        d2 = self.down2(self.maxpool(d1))
        d3 = self.down3(self.maxpool(d2))
        u2 = self.up2(torch.cat([d2, self._up(d3, d2)], dim=1))  # skip first, then upsampled
        u1 = self.up1(torch.cat([d1, self._up(u2, d1)], dim=1))
        return self.classifier(u1)


def drop_path_rates(depths: Sequence[int], max_rate: float = 0.1) -> List[List[float]]:
    """Stochastic-depth rates spread linearly over all blocks, split per stage."""
    total = sum(depths)
    rates = torch.linspace(0, max_rate, total).tolist() if total > 1 else [0.0] * total
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out


def ceil_to(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)
