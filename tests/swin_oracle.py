"""An independent, functional reference of the TIC / TransTIC Swin block (test oracle).

Written from the project's facts page (``transtic-facts.md`` of the shared reference)
and the parameter names of ``state-dict/*.tsv``, not from the package: it imports nothing from
``compressai_transtic``, takes the block's parameters as plain tensors (for example
``block.state_dict()``), and spells every stage out on whole tensors with ``roll``,
``view`` and ``permute``, slowly and plainly. Nothing is cached, fused or done in place.

The block (facts page, "Base codec"): pre-norm Swin block with a LayerNorm (``norm1``),
window multi-head self-attention with a qkv bias and a learned relative position bias
table of ``(2w-1)^2 x heads`` entries (``attn.relative_position_bias_table``,
``attn.qkv``, ``attn.proj``), a cyclic shift by ``shift`` for shifted blocks whose
cross-region pairs get an additive ``-100`` (not ``-inf``), then a LayerNorm (``norm2``)
and a GELU MLP (``mlp.fc1``, ``mlp.fc2``); both sub-layers are residual::

    x = x + attention(norm1(x))
    x = x + mlp(norm2(x))

Prompts (facts page, "TransTIC") are extra keys and values PREPENDED to every window's
keys (queries are image tokens only), projected by the block's own qkv (with its
bias), not normalised, with zero relative position bias:

* TP-type (decoder, ``shared_prompts``): ``(P, C)`` learned tokens shared by every
  window; their mask columns are zero (the shifted-window mask is padded with zeros).
* IP-type (encoder, ``prompt_map``): a ``(B, Hp/d, Wp/d, C)`` map, rolled by
  ``shift/d`` and partitioned with window ``w/d`` so each window gets its co-located
  ``(w/d)^2`` tokens. Mask: ``legacy_mask=True`` reproduces the released weights'
  quirk (a mask built for keys ``[image, prompts]`` whose prompt part is a nearest
  resampling of image-mask columns ``P..N-P`` to ``P`` columns, applied column by
  column to keys stored as ``[prompts, image]``); ``legacy_mask=False`` is the
  "aligned" mask.
* Full tokens (``full_tokens=True``, the supplementary material's "Shallow" /
  VPT-shallow variant): the prompts are full tokens of the window, normalised by
  ``norm1``, queries as well as keys and values; attention updates them with its
  residual (no MLP) and the block returns the updated prompt map as well.

Readings chosen where the facts page is silent (documented here on purpose):

* Any ``H x W`` (facts: "This project must accept any H x W"): the map is padded with
  zeros at the bottom/right to a multiple of the window BEFORE the cyclic shift, and
  keys that lie in the padding are hidden from every query (additive ``-inf``, i.e.
  they receive exactly zero attention weight; a finite large value such as ``-1e4``
  gives the same result, ``exp(-1e4)`` underflows to 0 in float32 and float64). The
  shifted-window regions are those of the padded map. Outputs at padded positions are
  dropped. Prompt tokens are never hidden by padding (they are not image positions).
* IP-type (per-window) prompts need a map that is a multiple of the window (the
  authors' code needs multiples of 256); the oracle refuses other sizes.
* "Aligned" IP mask: a prompt token co-located with image cell ``(y*d, x*d)`` of the
  shifted map belongs to the same shifted-window region as that cell (``w`` and the
  shift are multiples of ``d``, so the whole ``d x d`` cell is in one region); a query
  and a prompt key from different regions get ``-100``, as image pairs do.
* The legacy construction: "columns P..N-P" is read as the half-open range
  ``[P, N-P)`` (``N - 2P`` columns, Python's ``mask[..., P:N-P]``), resampled with
  ``torch.nn.functional.interpolate(mode="nearest")`` to ``N x P``. It is undefined for
  ``d = 1`` (``P = N``, no column left), which the facts page says the authors' code
  fails on; the oracle refuses it. In an unshifted block every mask is zero, so the
  legacy and aligned layouts coincide there.
* Full tokens given as shared ``(P, C)`` tokens are first tiled over the padded map
  (a ``sqrt(P) x sqrt(P)`` tile, stride ``d = w / sqrt(P)``, tiled in the frame of the
  un-shifted map) and then treated exactly like a prompt map; the returned map covers
  the padded map. Shifted-window regions and padding apply to full tokens as to image
  tokens of the same region (prompt keys themselves are never padding).
* LayerNorm uses ``eps = 1e-5`` and biased variance (``torch.nn.LayerNorm``'s
  default), GELU is the exact erf form (``torch.nn.GELU``'s default), the softmax scale
  is ``head_dim ** -0.5``.
* RSTB (facts: "a sequence of Swin blocks on tokens (B, H*W, C) plus one residual
  connection around the whole group. No conv inside"): ``x + blocks(x)`` on an NCHW
  map; odd blocks shifted by ``w // 2``; a stage whose resolution at the 256 x 256
  reference input is ``<= w`` uses ``w = min(that resolution)`` and no shift. A
  full-token prompt map returned by a block is carried into the next blocks that get no
  prompts of their own.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

#: additive mask between tokens of different shifted-window regions (facts page)
SHIFT_MASK_VALUE = -100.0
#: additive mask of keys lying in the padding (reading chosen here, see the docstring)
PAD_MASK_VALUE = float("-inf")

Params = Mapping[str, Tensor]


# ---------------------------------------------------------------------------------------
# elementary layers
# ---------------------------------------------------------------------------------------


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``x W^T + b``."""
    y = x @ weight.transpose(0, 1)
    return y if bias is None else y + bias


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dimension (biased variance)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu(x: Tensor) -> Tensor:
    """Exact GELU: ``x * Phi(x)``."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def mlp(x: Tensor, params: Params) -> Tensor:
    """fc1 -> GELU -> fc2."""
    hidden = gelu(linear(x, params["mlp.fc1.weight"], params["mlp.fc1.bias"]))
    return linear(hidden, params["mlp.fc2.weight"], params["mlp.fc2.bias"])


# ---------------------------------------------------------------------------------------
# relative position bias and masks
# ---------------------------------------------------------------------------------------


def relative_position_index(window: int) -> Tensor:
    """``(N, N)`` index into the ``(2w-1)^2`` bias table for query ``i`` and key ``j``
    (raster order inside the window): ``(dy + w - 1) * (2w - 1) + (dx + w - 1)`` with
    ``dy = y_i - y_j``, ``dx = x_i - x_j``."""
    pos = torch.arange(window * window)
    y, x = pos // window, pos % window
    dy = y[:, None] - y[None, :]
    dx = x[:, None] - x[None, :]
    return (dy + window - 1) * (2 * window - 1) + (dx + window - 1)


def relative_position_bias(table: Tensor, window: int) -> Tensor:
    """``(heads, N, N)`` bias: ``bias[h, i, j] = table[index[i, j], h]``."""
    return table[relative_position_index(window)].permute(2, 0, 1)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _partition(t: Tensor, window: int) -> Tensor:
    """``(B, H, W, ...)`` -> ``(B, H/w, W/w, w*w, ...)``: windows in raster order, tokens
    in raster order inside each window."""
    b, h, w = t.shape[:3]
    rest = t.shape[3:]
    t = t.reshape(b, h // window, window, w // window, window, *rest)
    t = t.permute(0, 1, 3, 2, 4, *range(5, 5 + len(rest)))
    return t.reshape(b, h // window, w // window, window * window, *rest)


def _unpartition(t: Tensor, window: int) -> Tensor:
    """Inverse of :func:`_partition`."""
    b, nh, nw = t.shape[:3]
    rest = t.shape[4:]
    t = t.reshape(b, nh, nw, window, window, *rest)
    t = t.permute(0, 1, 3, 2, 4, *range(5, 5 + len(rest)))
    return t.reshape(b, nh * window, nw * window, *rest)


def _region_groups(hp: int, wp: int, shift: int, stride: int, window: int) -> Tensor:
    """``(nH, nW, (w/stride)^2)`` shifted-window region of every token (image tokens for
    ``stride = 1``, co-located prompt tokens for ``stride = d``), per window.

    In the cyclically shifted map, the cell at row ``r`` came from row ``(r + shift)
    mod Hp`` of the padded map; it was wrapped around from the top iff
    ``r >= Hp - shift``. Two tokens of a window belong to the same region iff they were
    wrapped (or not) alike along both axes.
    """
    rows = torch.arange(hp // stride) * stride
    cols = torch.arange(wp // stride) * stride
    wrapped_r = (rows >= hp - shift) if shift else torch.zeros_like(rows, dtype=torch.bool)
    wrapped_c = (cols >= wp - shift) if shift else torch.zeros_like(cols, dtype=torch.bool)
    groups = 2 * wrapped_r.long()[:, None] + wrapped_c.long()[None, :]  # in the shifted frame already
    return _partition(groups[None], window // stride)[0]


def _group_mask(query_groups: Tensor, key_groups: Tensor) -> Tensor:
    """``(nH, nW, Nq, K)``: 0 for pairs of one region, :data:`SHIFT_MASK_VALUE` otherwise."""
    different = query_groups[..., :, None] != key_groups[..., None, :]
    return torch.where(different, SHIFT_MASK_VALUE, 0.0).to(torch.float64)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """Image-image mask ``(num_windows, N, N)`` (raster window order) of a shifted block on
    a ``height x width`` map (multiples of the window), as stored in ``attn_mask``."""
    groups = _region_groups(height, width, shift, 1, window)
    return _group_mask(groups, groups).flatten(0, 1).to(torch.float32)


def _padding_key_mask(h: int, w: int, hp: int, wp: int, window: int, shift: int) -> Tensor:
    """``(nH, nW, N)``: 0 for keys inside the ``h x w`` image, :data:`PAD_MASK_VALUE` for
    keys in the bottom/right padding (after the cyclic shift)."""
    valid = torch.zeros(hp, wp, dtype=torch.bool)
    valid[:h, :w] = True
    if shift:
        valid = torch.roll(valid, shifts=(-shift, -shift), dims=(0, 1))
    valid = _partition(valid[None], window)[0]
    return torch.where(valid, 0.0, PAD_MASK_VALUE).to(torch.float64)


def legacy_prompt_mask(image_mask: Tensor, num_prompts: int) -> Tensor:
    """The released encoder mask ``(..., N, N + P)`` for keys ``[image, prompts]``: the
    image mask, then columns ``[P, N-P)`` of it resampled (nearest) to ``P`` columns. The
    caller adds column ``k`` to stored key ``k`` of ``[prompts, image]`` (the quirk)."""
    n = image_mask.shape[-1]
    if n - 2 * num_prompts <= 0:
        raise ValueError(f"the released mask construction is undefined for {num_prompts} prompts in {n} tokens")
    lead = image_mask.shape[:-2]
    middle = image_mask[..., num_prompts : n - num_prompts].reshape(-1, 1, n, n - 2 * num_prompts)
    part = torch.nn.functional.interpolate(middle, size=(n, num_prompts), mode="nearest")
    return torch.cat([image_mask, part.reshape(*lead, n, num_prompts)], dim=-1)


# ---------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------


def _split_heads(t: Tensor, heads: int) -> Tensor:
    """``(..., T, C)`` -> ``(..., heads, T, C/heads)``."""
    return t.reshape(*t.shape[:-1], heads, t.shape[-1] // heads).transpose(-3, -2)


def window_attention(queries: Tensor, keys_values: Tensor, params: Params, num_heads: int, additive: Tensor) -> Tensor:
    """Multi-head attention inside windows.

    Args:
        queries: ``(B, nH, nW, Nq, C)`` (already normalised where the block wants it).
        keys_values: ``(B, nH, nW, K, C)`` tokens that give keys and values.
        params: block parameters (``attn.qkv.*``, ``attn.proj.*``).
        additive: ``(nH, nW, heads, Nq, K)`` relative position bias plus masks.

    Returns:
        ``(B, nH, nW, Nq, C)``.
    """
    c = queries.shape[-1]
    weight, bias = params["attn.qkv.weight"], params["attn.qkv.bias"]
    q = linear(queries, weight[:c], bias[:c])
    k = linear(keys_values, weight[c : 2 * c], bias[c : 2 * c])
    v = linear(keys_values, weight[2 * c :], bias[2 * c :])
    q, k, v = (_split_heads(t, num_heads) for t in (q, k, v))  # B, nH, nW, heads, T, hd
    scale = (c // num_heads) ** -0.5
    scores = (q * scale) @ k.transpose(-2, -1) + additive.to(q.dtype)
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).transpose(-3, -2)  # B, nH, nW, Nq, heads, hd
    out = out.reshape(*out.shape[:-2], c)
    return linear(out, params["attn.proj.weight"], params["attn.proj.bias"])


def _tile_tokens(tokens: Tensor, batch: int, hp: int, wp: int, window: int) -> Tuple[Tensor, int]:
    """Shared ``(P, C)`` tokens tiled over the padded map: ``(B, Hp/d, Wp/d, C)`` and d."""
    p, c = tokens.shape
    side = math.isqrt(p)
    if side * side != p or window % side:
        raise ValueError(f"{p} tokens do not tile a {window}x{window} window")
    d = window // side
    tile = tokens.reshape(side, side, c)
    pmap = tile.repeat(hp // d // side, wp // d // side, 1)
    return pmap[None].expand(batch, -1, -1, -1), d


def _prompt_windows(pmap: Tensor, hp: int, wp: int, window: int, shift: int, d: int) -> Tensor:
    """A ``(B, Hp/d, Wp/d, C)`` prompt map shifted by ``shift/d`` and partitioned with
    window ``w/d``: ``(B, nH, nW, (w/d)^2, C)``, the tokens co-located with each window."""
    if window % d or shift % d or tuple(pmap.shape[1:3]) != (hp // d, wp // d):
        raise ValueError(f"a prompt map of {tuple(pmap.shape[1:3])} at 1/{d} does not fit {hp}x{wp} / window {window}")
    if shift:
        pmap = torch.roll(pmap, shifts=(-(shift // d), -(shift // d)), dims=(1, 2))
    return _partition(pmap, window // d)


def _prompt_keys_and_mask(
    windows: Tensor,
    geometry: Tuple[int, int, int, int],
    window: int,
    shift: int,
    shared_prompts: Optional[Tensor],
    prompt_map: Optional[Tensor],
    d: int,
    legacy_mask: bool,
) -> Tuple[Tensor, Tensor]:
    """Prompt tokens giving extra keys/values per window ``(B, nH, nW, P, C)`` and the
    additive mask ``(nH, nW, N, P + N)`` for keys ``[prompts, image]``."""
    h, w, hp, wp = geometry
    b, nh, nw, n, _ = windows.shape
    image_groups = _region_groups(hp, wp, shift, 1, window)
    image_mask = _group_mask(image_groups, image_groups)  # nH, nW, N, N
    pad_mask = _padding_key_mask(h, w, hp, wp, window, shift)[:, :, None, :]  # nH, nW, 1, N
    if shared_prompts is not None:  # TP-type: zero mask columns for the prompts
        kv_prompts = shared_prompts[None, None, None].expand(b, nh, nw, -1, -1)
        prompt_mask = image_mask.new_zeros(nh, nw, n, shared_prompts.shape[0])
        return kv_prompts, torch.cat([prompt_mask, image_mask + pad_mask], dim=-1)
    if prompt_map is None:  # no prompts
        return windows[..., :0, :], image_mask + pad_mask
    # IP-type
    if (hp, wp) != (h, w):
        raise ValueError("per-window prompts need a map that is a multiple of the window")
    kv_prompts = _prompt_windows(prompt_map, hp, wp, window, shift, d)
    if legacy_mask:  # built for keys [image, prompts], applied to keys stored as [prompts, image]
        return kv_prompts, legacy_prompt_mask(image_mask, kv_prompts.shape[-2])
    # aligned: each prompt key masked by its own region
    prompt_groups = _region_groups(hp, wp, shift, d, window)
    return kv_prompts, torch.cat([_group_mask(image_groups, prompt_groups), image_mask], dim=-1)


# ---------------------------------------------------------------------------------------
# the block
# ---------------------------------------------------------------------------------------


def swin_block(
    x: Tensor,
    params: Params,
    *,
    num_heads: int,
    window: int,
    shift: int,
    shared_prompts: Optional[Tensor] = None,
    prompt_map: Optional[Tensor] = None,
    downsample: int = 1,
    legacy_mask: bool = False,
    full_tokens: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """One Swin block on a channel-last map.

    Args:
        x: ``(B, H, W, C)``, any ``H x W``.
        params: the block's parameters by ``state_dict`` name (``norm1.weight``,
            ``attn.relative_position_bias_table``, ``attn.qkv.weight``, ...). Buffers
            (``attn.relative_position_index``, ``attn_mask``) are not read: the oracle
            builds its own index and masks.
        num_heads, window, shift: the block's geometry (``0 <= shift < window``).
        shared_prompts: ``(P, C)`` TP-type prompts shared by every window.
        prompt_map: ``(B, Hp/d, Wp/d, C)`` IP-type prompt map (``Hp, Wp``: the map padded
            to a multiple of the window), ``d = downsample``.
        legacy_mask: the released encoder mask layout for IP-type prompts.
        full_tokens: prompts (map or shared tokens) as full tokens of the windows.

    Returns:
        ``(B, H, W, C)``; with ``full_tokens`` also the updated ``(B, Hp/d, Wp/d, C)``
        prompt map.
    """
    b, h, w, c = x.shape
    if not 0 <= shift < window:
        raise ValueError(f"shift {shift} not in [0, {window})")
    hp, wp = _ceil_to(h, window), _ceil_to(w, window)
    n = window * window
    nh, nw = hp // window, wp // window

    # --- attention sub-layer -----------------------------------------------------------
    # pre-norm of the image tokens
    xn = layer_norm(x, params["norm1.weight"], params["norm1.bias"])
    # stage 1: pad the bottom/right with zeros up to a multiple of the window
    xn = torch.nn.functional.pad(xn, (0, 0, 0, wp - w, 0, hp - h))
    # stage 2: cyclic shift by -shift along both axes
    if shift:
        xn = torch.roll(xn, shifts=(-shift, -shift), dims=(1, 2))
    # stage 3: partition into windows: B, nH, nW, N, C
    windows = _partition(xn, window)

    # stage 4: masks and relative position bias (nH, nW, [heads,] queries, keys)
    image_groups = _region_groups(hp, wp, shift, 1, window)  # nH, nW, N
    pad_mask = _padding_key_mask(h, w, hp, wp, window, shift)  # nH, nW, N
    rel = relative_position_bias(params["attn.relative_position_bias_table"], window).to(torch.float64)

    d = downsample
    if full_tokens:
        if shared_prompts is not None:
            pmap, d = _tile_tokens(shared_prompts, b, hp, wp, window)
        elif prompt_map is not None:
            pmap = prompt_map
        else:
            raise ValueError("full_tokens needs shared_prompts or a prompt_map")
        # the prompt map is shifted (by shift/d) and partitioned (window w/d) like the map
        prompt_windows = _prompt_windows(pmap, hp, wp, window, shift, d)
        p = prompt_windows.shape[-2]
        # queries, keys and values: [prompts, image], all normalised; regions and padded
        # keys masked over all of them, bias only between image tokens
        prompt_groups = _region_groups(hp, wp, shift, d, window)
        groups = torch.cat([prompt_groups, image_groups], dim=-1)
        mask = _group_mask(groups, groups)
        mask = mask + torch.cat([pad_mask.new_zeros(nh, nw, p), pad_mask], dim=-1)[:, :, None, :]
        bias = rel.new_zeros(num_heads, p + n, p + n)
        bias[:, p:, p:] = rel
        tokens = torch.cat([layer_norm(prompt_windows, params["norm1.weight"], params["norm1.bias"]), windows], dim=-2)
        attended = window_attention(tokens, tokens, params, num_heads, mask[:, :, None] + bias)
        new_prompts: Optional[Tensor] = prompt_windows + attended[..., :p, :]  # residual, no MLP for prompts
        attended = attended[..., p:, :]
    else:
        # keys and values: [prompts, image], queries: image; bias only between image tokens
        kv_prompts, mask = _prompt_keys_and_mask(
            windows, (h, w, hp, wp), window, shift, shared_prompts, prompt_map, d, legacy_mask
        )
        p = kv_prompts.shape[-2]
        bias = torch.cat([rel.new_zeros(num_heads, n, p), rel], dim=-1)
        keys_values = torch.cat([kv_prompts.to(windows.dtype), windows], dim=-2)  # prompts first
        attended = window_attention(windows, keys_values, params, num_heads, mask[:, :, None] + bias)
        new_prompts = None

    # stage 5: reverse the partition
    out = _unpartition(attended, window)
    # stage 6: roll back by +shift
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    # stage 7: drop the padding
    out = out[:, :h, :w, :]

    # --- the two residual lines ---------------------------------------------------------
    x = x + out
    x = x + mlp(layer_norm(x, params["norm2.weight"], params["norm2.bias"]), params)

    if new_prompts is None:
        return x
    pmap = _unpartition(new_prompts, window // d)
    if shift:
        pmap = torch.roll(pmap, shifts=(shift // d, shift // d), dims=(1, 2))
    return x, pmap


# ---------------------------------------------------------------------------------------
# residual Swin-transformer block (RSTB)
# ---------------------------------------------------------------------------------------


def rstb_geometry(window: int, reference_resolution: Tuple[int, int]) -> Tuple[int, bool]:
    """Window and whether odd blocks are shifted, for a stage of this resolution at the
    256 x 256 reference input: a stage not larger than its window uses window = its
    resolution and no shift."""
    if min(reference_resolution) <= window:
        return min(reference_resolution), False
    return window, True


def block_params(params: Params, index: int, prefix: str = "residual_group.blocks.") -> Dict[str, Tensor]:
    """The parameters of block ``index`` of an RSTB ``state_dict``, without the prefix."""
    head = f"{prefix}{index}."
    return {k[len(head) :]: v for k, v in params.items() if k.startswith(head)}


def rstb(
    x: Tensor,
    params: Params,
    *,
    depth: int,
    num_heads: int,
    window: int,
    reference_resolution: Tuple[int, int],
    prompts: Optional[Sequence[Optional[Dict[str, object]]]] = None,
) -> Tensor:
    """``x + blocks(x)`` on an NCHW map.

    Args:
        x: ``(B, C, H, W)``.
        params: the RSTB's parameters by ``state_dict`` name
            (``residual_group.blocks.<i>.<name>``).
        depth, num_heads, window, reference_resolution: as the module was built.
        prompts: per block, ``None`` or the prompt keyword arguments of
            :func:`swin_block` (``shared_prompts``, ``prompt_map``, ``downsample``,
            ``legacy_mask``, ``full_tokens``).
    """
    window, shifted = rstb_geometry(window, reference_resolution)
    t = x.permute(0, 2, 3, 1)
    hp = _ceil_to(t.shape[1], window)
    carried: Optional[Dict[str, object]] = None
    for i in range(depth):
        shift = window // 2 if (shifted and i % 2 == 1) else 0
        given = prompts[i] if prompts is not None and i < len(prompts) else None
        current = given if given is not None else carried
        kwargs: Dict[str, object] = dict(current) if current is not None else {}
        out = swin_block(t, block_params(params, i), num_heads=num_heads, window=window, shift=shift, **kwargs)
        if isinstance(out, tuple):
            t, pmap = out
            carried = {"prompt_map": pmap, "downsample": hp // pmap.shape[1], "full_tokens": True}
        else:
            t = out
    return x + t.permute(0, 3, 1, 2)


__all__: List[str] = [
    "SHIFT_MASK_VALUE",
    "PAD_MASK_VALUE",
    "block_params",
    "gelu",
    "layer_norm",
    "legacy_prompt_mask",
    "linear",
    "mlp",
    "relative_position_bias",
    "relative_position_index",
    "rstb",
    "rstb_geometry",
    "shifted_window_mask",
    "swin_block",
    "window_attention",
]
