"""Window attention, and the switches that choose how it is computed.

Three implementations compute the same function (:class:`AttentionBackend`):

* ``REFERENCE`` (inside :func:`reference_attention`): ``softmax(q k^T * scale + bias) v``
  written out, with masks rebuilt and windows partitioned the plain way on every
  call; the tests check the others against it;
* ``FUSED``: :func:`torch.nn.functional.scaled_dot_product_attention`, with the
  relative position bias and the masks folded into one additive bias;
* ``PACKED``: CPU inference of blocks without prompts or with prompts as keys and
  values (shared or per window), as
  batched matrix products over compact per-window, per-head matrices that update the
  residual in place (:func:`packed_window_attention`); :func:`set_cpu_attention`
  says where it replaces ``FUSED``.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import threading
from typing import Iterator, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor

from ..strenum import StrEnum
from .cache import DerivedValue
from .masks import relative_position_index

__all__ = [
    "CPU_ATTENTION_CHOICES",
    "CpuAttention",
    "CPU_ATTENTION_ENV",
    "AttentionBackend",
    "PackedWeights",
    "WindowAttention",
    "attention_backend",
    "cpu_attention",
    "cpu_vendor",
    "pack_weights",
    "packed_attention_is_faster",
    "packed_window_attention",
    "reference_attention",
    "set_cpu_attention",
    "use_reference",
]


class CpuAttention(StrEnum):
    """The CPU attention choice of :func:`set_cpu_attention` (and of :data:`CPU_ATTENTION_ENV`)."""

    #: as :func:`packed_attention_is_faster` says for this CPU
    AUTO = "auto"
    #: batched matrix products over per-window, per-head matrices (:func:`packed_window_attention`)
    PACKED = "packed"
    #: PyTorch's fused scaled-dot-product attention
    SDPA = "sdpa"


#: the values of :class:`CpuAttention`
CPU_ATTENTION_CHOICES = CpuAttention.values()
#: environment variable that chooses the CPU attention where no code has called
#: :func:`set_cpu_attention` (for programs that cannot call it, such as CompressAI's
#: ``eval_model``)
CPU_ATTENTION_ENV = "COMPRESSAI_TRANSTIC_CPU_ATTENTION"


class _Switches(threading.local):
    """The reference switch holds for the thread that set it."""

    def __init__(self) -> None:
        self.reference = False


_switches = _Switches()
#: the choice of code for every thread, or None: not set by code
_cpu_attention: Optional[CpuAttention] = None


class AttentionBackend(enum.Enum):
    """How window attention is computed (see the module's description)."""

    REFERENCE = "reference"
    FUSED = "sdpa"
    PACKED = "packed"


def use_reference() -> bool:
    """Whether this thread is inside :func:`reference_attention`."""
    return _switches.reference


@contextlib.contextmanager
def reference_attention(enabled: bool = True) -> Iterator[None]:
    """Run window attention through the plain reference path inside the context.

    The reference path computes ``softmax(q k^T * scale + bias + mask) v`` explicitly,
    rebuilds masks and biases on every call and partitions windows with
    ``roll``/``view``/``permute``. It exists to test the fused path against.
    """
    previous = _switches.reference
    _switches.reference = enabled
    try:
        yield
    finally:
        _switches.reference = previous


def set_cpu_attention(kind: Optional[CpuAttention]) -> None:
    """Choose how Swin blocks without prompts (or with prompts as keys and values)
    attend on the CPU at inference.

    Args:
        kind: a :class:`CpuAttention` (or its value): ``packed``, batched matrix
            products over per-window, per-head matrices with in-place residual updates
            (:func:`packed_window_attention`); ``sdpa``, PyTorch's fused
            scaled-dot-product attention; ``auto``, as :func:`packed_attention_is_faster`
            says for this CPU. ``None``: back to the default, the environment variable
            :data:`CPU_ATTENTION_ENV` where it is set, else ``auto``.

    Both compute the same function; results differ by float rounding only, so an
    encoder and its decoder should make the same choice.
    """
    global _cpu_attention
    if kind is not None and kind not in CPU_ATTENTION_CHOICES:
        raise ValueError(f"cpu attention must be one of {CPU_ATTENTION_CHOICES} or None, got {kind!r}")
    _cpu_attention = None if kind is None else CpuAttention(kind)


def cpu_attention() -> CpuAttention:
    """The CPU attention choice in force: the one :func:`set_cpu_attention` made, else
    the environment variable :data:`CPU_ATTENTION_ENV`, else ``"auto"``.

    Raises:
        ValueError: the environment variable holds something else than one of
            :data:`CPU_ATTENTION_CHOICES` (refused rather than ignored, as it
            changes results).
    """
    if _cpu_attention is not None:
        return _cpu_attention
    kind = os.environ.get(CPU_ATTENTION_ENV, "").strip()
    if not kind:
        return CpuAttention.AUTO
    if kind not in CPU_ATTENTION_CHOICES:
        raise ValueError(
            f"environment variable {CPU_ATTENTION_ENV}={kind!r} is not one of {', '.join(CPU_ATTENTION_CHOICES)}: "
            "set it to one of them, or unset it for 'auto'"
        )
    return CpuAttention(kind)


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch < 2.4
        return torch.is_autocast_cpu_enabled()


def packed_attention_is_faster(capability: str, vendor: str) -> bool:
    """The rule behind ``set_cpu_attention("auto")``, from PyTorch's CPU capability
    (``torch.backends.cpu.get_cpu_capability()``) and the CPU's vendor string.

    With windows of 64 tokens and head dimension 16 to 32, the fused kernel's AVX2
    code falls well short of the machine's matrix-product speed, which the packed
    products reach. The packed products were also measured faster on an AMD CPU with
    AVX-512, the fused kernel on an Intel one; other CPUs (other architectures, no
    vector extension) keep the fused kernel. The rule is per CPU class, not per run,
    so that an encoder and a decoder on one machine always compute alike.
    ``benchmarks/bench_codec.py --cpu-attention packed|sdpa`` measures both.
    """
    if capability == "AVX2":
        return True
    return capability.startswith("AVX512") and vendor == "AuthenticAMD"


@functools.lru_cache(maxsize=None)
def _auto_packed() -> bool:
    return packed_attention_is_faster(torch.backends.cpu.get_cpu_capability(), cpu_vendor())


def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``; Linux
    ``/proc/cpuinfo``), or ``""`` where the system does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip()
    except OSError:
        pass
    return ""


def _packed_chosen() -> bool:
    kind = cpu_attention()
    if kind is CpuAttention.AUTO:
        return _auto_packed()
    return kind is CpuAttention.PACKED


def attention_backend(device: torch.device) -> AttentionBackend:
    """The implementation that window attention on ``device`` uses now.

    ``PACKED`` means that blocks which can (inference without stochastic depth, no
    full-token prompts) take the packed products; the others use ``FUSED``. It is
    never chosen under CPU autocast: its in-place sums need one dtype throughout.
    """
    if _switches.reference:
        return AttentionBackend.REFERENCE
    if device.type == "cpu" and not _cpu_autocast() and _packed_chosen():
        return AttentionBackend.PACKED
    return AttentionBackend.FUSED


class PackedWeights(NamedTuple):
    """The projections of a :class:`WindowAttention` laid out for
    :func:`packed_window_attention` (see :func:`pack_weights`)."""

    qkv_weight: Tensor  # (3 C, C), rows (heads, 3, d), query rows scaled
    query_bias: Tensor  # (heads, d, 1), scaled
    proj_weight_t: Tensor  # (C, C), the output projection transposed
    proj_bias: Tensor  # (C,), b_proj + W_proj b_v


def pack_weights(qkv: nn.Linear, proj: nn.Linear, heads: int, scale: float) -> PackedWeights:
    """Lay out the projection weights for :func:`packed_window_attention`.

    The qkv rows are reordered from ``(3, heads, d)`` to ``(heads, 3, d)`` and the query
    rows carry the softmax scale, so one batched product per window yields every
    head's ``q^T, k^T, v^T`` as compact ``(d, N)`` matrices. Only the query bias is
    added to them: the key bias adds ``q . b_k`` to a whole row of scores, which the
    softmax ignores, and since every row of attention weights sums to one the value
    bias comes out unchanged, so it joins the projection bias (``b_proj + W_proj b_v``).
    """
    w, bq, pw, pb = qkv.weight, qkv.bias, proj.weight, proj.bias
    c = w.shape[1]
    hd = c // heads
    with torch.no_grad():
        weight = w.detach().view(3, heads, hd, c).clone()
        bias = bq.detach().view(3, heads, hd) if bq is not None else weight.new_zeros(3, heads, hd)
        weight[0] *= scale
        proj_bias = pb.detach() if pb is not None else pw.new_zeros(c)
        return PackedWeights(
            weight.transpose(0, 1).reshape(3 * c, c).contiguous(),
            (bias[0] * scale).reshape(heads, hd, 1).contiguous(),
            pw.detach().t().contiguous(),
            proj_bias + pw.detach() @ bias[2].reshape(c),
        )


def packed_window_attention(
    x: Tensor,
    bias: Tensor,
    residual: Tensor,
    weights: PackedWeights,
    heads: int,
    prompt_kv: Optional[Tuple[Tensor, Tensor]] = None,
) -> None:
    """CPU inference: ``residual += proj(attention(x))`` without copies.

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
        weights: from :func:`pack_weights`.
        heads: attention heads.
        prompt_kv: keys and values of prompts without the key and value biases: two
            ``(heads, d, P)`` tensors shared by every window, or two ``(nW, heads, d, P)``.
    """
    nw, n, c = x.shape
    hd = c // heads
    qkv = torch.bmm(weights.qkv_weight.expand(nw, -1, -1), x.transpose(1, 2)).view(nw, heads, 3, hd, n)
    qkv[:, :, 0].add_(weights.query_bias)
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
    residual.baddbmm_(out_t.transpose(1, 2), weights.proj_weight_t.expand(nw, -1, -1)).add_(weights.proj_bias)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias.

    Args:
        dim: number of channels.
        window_size: side of the square window.
        num_heads: number of attention heads.

    The query/key/value projection has a bias, as in Swin and the released weights.
    """

    relative_position_index: Tensor

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
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=True)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._packed: DerivedValue[PackedWeights] = DerivedValue()

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

    def forward(self, x: Tensor, bias: Tensor, prompt_kv: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Attend inside windows (``REFERENCE`` or ``FUSED``).

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
        qkv = self.qkv(x).view(b * nw, nq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each B*nW, heads, Nq, d
        if prompt_kv is not None:
            k, v = (torch.cat([_per_window(prompt, b * nw), t], dim=-2) for prompt, t in zip(prompt_kv, (k, v)))
        if b > 1 and bias.shape[0] > 1:
            bias = bias.expand(b, -1, -1, -1, -1).reshape(b * nw, *bias.shape[1:])
        if use_reference():
            out = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, nw, nq, c))

    def packed_weights(self) -> PackedWeights:
        """:func:`pack_weights` of this module, cached until a weight changes (in place
        or replaced)."""
        return self._packed.get(
            (self.qkv.weight, self.proj.weight, self.qkv.bias, self.proj.bias),
            lambda: pack_weights(self.qkv, self.proj, self.num_heads, self.scale),
        )

    def packed_prompt_kv(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """Keys and values of prompt tokens ``(..., P, C)`` for :meth:`attend_windows`:
        two ``(..., heads, d, P)`` tensors, without the key and value biases (which the
        packed path leaves out for every key, see :func:`pack_weights`)."""
        k, v = self.project_kv(tokens, with_bias=False)
        return k.transpose(-2, -1), v.transpose(-2, -1)

    def attend_windows(
        self, x: Tensor, bias: Tensor, residual: Tensor, prompt_kv: Optional[Tuple[Tensor, Tensor]] = None
    ) -> None:
        """``PACKED``: ``residual += proj(attention(x))`` in place, for ``(nW, N, C)``
        tokens (see :func:`packed_window_attention`)."""
        packed_window_attention(x, bias, residual, self.packed_weights(), self.num_heads, prompt_kv)


def _per_window(prompt: Tensor, windows: int) -> Tensor:
    """Prompt keys or values ``(heads, P, d)`` or ``(B, nW, heads, P, d)`` as
    ``(B * nW, heads, P, d)``."""
    if prompt.dim() == 3:
        return prompt.expand(windows, -1, -1, -1)
    return prompt.reshape(windows, *prompt.shape[2:])
