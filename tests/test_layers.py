"""Swin layers: masks follow the published constructions; the fast path equals the reference."""

from __future__ import annotations

import copy
import re
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import compressai_transtic.layers.masks as masks_module
from compressai_transtic.layers import (
    RSTB,
    SwinBlock,
    WindowGeometry,
    WindowPrompts,
    packed_attention_is_faster,
    reference_attention,
    release_workspace,
    set_cpu_attention,
    shifted_window_mask,
    window_order,
    window_partition_index,
    workspace,
)
from compressai_transtic.layers import cpu_attention as cpu_attention_in_force
from compressai_transtic.layers.attention import pack_weights, packed_window_attention
from compressai_transtic.layers.cache import LRUCache
from compressai_transtic.layers.masks import (
    PromptLayout,
    PromptMode,
    attention_mask,
    legacy_prompt_mask,
    masked_windows,
)
from compressai_transtic.layers.workspace import scratch


def swin_reference_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """The shifted-window mask exactly as the Swin paper's code builds it."""
    img_mask = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    windows = img_mask.view(1, h // window, window, w // window, window, 1).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, window * window)
    attn_mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


@pytest.mark.parametrize("h,w,window,shift", [(16, 16, 8, 4), (128, 128, 8, 4), (8, 8, 4, 2), (24, 40, 8, 4)])
def test_shifted_window_mask_matches_swin_construction(h, w, window, shift):
    assert torch.equal(shifted_window_mask(h, w, window, shift), swin_reference_mask(h, w, window, shift))


def test_shifted_window_mask_uses_minus_100_not_minus_inf():
    mask = shifted_window_mask(16, 16, 8, 4)
    assert set(mask.unique().tolist()) == {-100.0, 0.0}  # the Swin reference's value


def test_persistent_attn_mask_buffer_is_the_256x256_reference_mask():
    block = SwinBlock(32, 4, 8, 4, mask_resolution=(128, 128))
    assert block.attn_mask.shape == (256, 64, 64)
    assert torch.equal(block.attn_mask, swin_reference_mask(128, 128, 8, 4))


@pytest.mark.parametrize("num_prompts", [4, 16])
def test_legacy_prompt_mask_follows_the_released_construction(num_prompts):
    """[image mask, nearest-resampled columns P..N-P] applied to keys [prompts, image]."""
    image_mask = shifted_window_mask(32, 32, 8, 4)
    n = image_mask.shape[-1]
    middle = image_mask[:, :, num_prompts : n - num_prompts].unsqueeze(1)
    prompt_part = F.interpolate(middle, size=(n, num_prompts), mode="nearest").squeeze(1)
    expected = torch.cat([image_mask, prompt_part], dim=-1)
    assert torch.equal(legacy_prompt_mask(image_mask, num_prompts), expected)


@pytest.mark.parametrize("h,w,window,shift", [(16, 24, 8, 4), (8, 8, 4, 2), (16, 16, 8, 0)])
def test_partition_index_is_roll_then_window_partition(h, w, window, shift):
    x = torch.arange(h * w).view(1, h, w, 1).float()
    rolled = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = rolled.view(1, h // window, window, w // window, window, 1).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, window * window)[window_order(h // window, w // window)]
    idx = window_partition_index(h, w, window, shift, torch.device("cpu"))
    assert torch.equal(x.view(-1)[idx].view_as(windows), windows)


def test_window_order_puts_last_row_and_column_last():
    order = window_order(3, 4).tolist()
    assert order[:6] == [0, 1, 2, 4, 5, 6]
    assert sorted(order[6:]) == [3, 7, 8, 9, 10, 11]


_MASK_CASES = [
    # (map h, w, window, shift, mode, prompts per window, prompt-map stride)
    (32, 48, 8, 4, PromptMode.NONE, 0, 1),
    (25, 41, 8, 4, PromptMode.NONE, 0, 1),  # padding and shift reach the second-to-last row/column
    (30, 29, 8, 0, PromptMode.NONE, 0, 1),
    (30, 29, 8, 4, PromptMode.SHARED, 5, 1),
    (32, 48, 8, 4, PromptMode.WINDOW, 4, 4),
    (32, 48, 8, 4, PromptMode.LEGACY, 4, 4),
    (32, 48, 8, 4, PromptMode.FULL, 4, 4),
    (30, 29, 8, 4, PromptMode.FULL, 4, 4),
]


@pytest.mark.parametrize("h,w,window,shift,mode,p,d", _MASK_CASES)
def test_the_mask_of_some_windows_is_their_rows_of_the_whole_mask(h, w, window, shift, mode, p, d):
    geometry = WindowGeometry.cover(h, w, window, shift)
    whole = attention_mask(geometry, PromptLayout(mode, p, d))
    assert whole is not None
    windows = torch.tensor([geometry.num_windows - 1, 0, 3])
    assert torch.equal(attention_mask(geometry, PromptLayout(mode, p, d), windows), whole[windows])


@pytest.mark.parametrize("h,w,window,shift,mode,p,d", _MASK_CASES)
def test_every_window_with_a_mask_is_flagged_without_building_the_mask(h, w, window, shift, mode, p, d):
    geometry = WindowGeometry.cover(h, w, window, shift)
    carries_mask = attention_mask(geometry, PromptLayout(mode, p, d)).flatten(1).ne(0).any(1)
    flags = masked_windows(geometry, PromptLayout(mode, p, d))
    assert not (carries_mask & ~flags).any()
    assert torch.equal(flags, carries_mask)  # and, in these layouts, only those


def test_a_large_map_builds_the_masks_of_its_boundary_windows_only(monkeypatch):
    """At 512x768 a mask of every window would take 100 MB; the boundary has 159 windows."""
    built = []

    def recording_mask(*args, **kwargs):
        mask = attention_mask(*args, **kwargs)
        built.append(mask.shape[0])
        return mask

    monkeypatch.setattr(masks_module, "attention_mask", recording_mask)
    block = SwinBlock(8, 2, 8, 4).eval()
    with torch.no_grad():
        block(torch.randn(1, 512, 768, 8))
    assert built == [64 + 96 - 1]


def _block_and_input(shift: int, b: int, h: int, w: int, dim: int = 32):
    torch.manual_seed(0)
    block = SwinBlock(dim, 4, 8, shift, mask_resolution=(16, 16)).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1)
    return block, torch.randn(b, h, w, dim)


def _fast_and_reference(block, x, prompts=None):
    with torch.no_grad():
        fast = block(x, prompts)
        with reference_attention():
            ref = block(x, prompts)
    return fast, ref


@pytest.fixture(params=["packed", "sdpa"])
def cpu_attention(request):
    """Run the test with each CPU attention implementation, then restore the default."""
    set_cpu_attention(request.param)
    yield request.param
    set_cpu_attention(None)


@pytest.mark.parametrize("shift", [0, 4])
# 25x41 and 30x29: padding plus shift puts padded keys into the second-to-last window
# row/column, which then needs its own mask
@pytest.mark.parametrize("b,h,w", [(1, 16, 16), (2, 24, 32), (2, 12, 20), (1, 4, 4), (1, 25, 41), (2, 30, 29)])
def test_fast_path_equals_reference_without_prompts(shift, b, h, w, cpu_attention):
    block, x = _block_and_input(shift, b, h, w)
    fast, ref = _fast_and_reference(block, x)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["shared", "legacy", "aligned", "full-map", "full-shared"])
@pytest.mark.parametrize("b", [1, 2])
def test_fast_path_equals_reference_with_prompts(kind, b, cpu_attention):
    block, x = _block_and_input(4, b, 16, 32)
    g = torch.Generator().manual_seed(1)
    if kind == "shared":
        prompts = WindowPrompts(tokens=torch.randn(16, 32, generator=g))
    elif kind in ("legacy", "aligned"):
        prompts = WindowPrompts(
            prompt_map=torch.randn(b, 8, 16, 32, generator=g), downsample=2, legacy_mask=kind == "legacy"
        )
    elif kind == "full-map":
        prompts = WindowPrompts(prompt_map=torch.randn(b, 8, 16, 32, generator=g), downsample=2, full_tokens=True)
    else:
        prompts = WindowPrompts(tokens=torch.randn(16, 32, generator=g), full_tokens=True)
    fast, ref = _fast_and_reference(block, x, prompts)
    if isinstance(fast, tuple):
        for a, r in zip(fast, ref):
            torch.testing.assert_close(a, r, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


def test_legacy_and_aligned_prompt_masks_give_different_results_in_shifted_blocks():
    block, x = _block_and_input(4, 1, 16, 16)
    pmap = torch.randn(1, 8, 8, 32)
    with torch.no_grad():
        legacy = block(x, WindowPrompts(prompt_map=pmap, downsample=2, legacy_mask=True))
        aligned = block(x, WindowPrompts(prompt_map=pmap, downsample=2, legacy_mask=False))
    assert (legacy - aligned).abs().max() > 1e-3


def test_padded_keys_are_masked_out():
    """A 4x8 map in an 8x8 window attends over its 32 real tokens only."""
    block, x = _block_and_input(0, 1, 4, 8)
    with torch.no_grad():
        out = block(x)
        t = x.reshape(1, 32, 32)
        qkv = block.attn.qkv(block.norm1(t)).view(1, 32, 3, 4, 8).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = block.attn.relative_position_bias()[:, :32, :32]
        attn = (q * block.attn.scale @ k.transpose(-2, -1) + bias).softmax(-1)
        y = t + block.attn.proj((attn @ v).transpose(1, 2).reshape(1, 32, 32))
        expected = (y + block.mlp(block.norm2(y))).view(1, 4, 8, 32)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_cached_bias_follows_in_place_updates_of_the_bias_table():
    block, x = _block_and_input(4, 1, 16, 16)
    with torch.no_grad():
        before = block(x)
        block.attn.relative_position_bias_table.add_(1.0 * torch.randn_like(block.attn.relative_position_bias_table))
        after = block(x)
        with reference_attention():
            ref = block(x)
    assert (before - after).abs().max() > 1e-4
    torch.testing.assert_close(after, ref, rtol=0, atol=1e-5)


def test_cached_bias_is_not_taken_for_a_replaced_table_at_the_same_address():
    """A table replaced by a fresh one could land at the freed address with the same
    version and shape, and pass for the old one in the cache's key (CUDA's caching
    allocator hands a freed block out again at once; glibc often does). The cache keeps
    the old storage alive instead: no allocation takes that address, and the biases
    are rebuilt for each new table."""
    block, x = _block_and_input(4, 1, 16, 16)
    for _ in range(10):
        with torch.no_grad():
            block(x)
            old = block.attn.relative_position_bias_table
            address, version, shape = old.data_ptr(), old._version, old.shape
            del block.attn.relative_position_bias_table
            del old  # the block held the last reference to the table
            candidates = [torch.empty(shape) for _ in range(200)]
            assert address not in {t.data_ptr() for t in candidates}
            fresh = candidates[0].normal_(0, 1)
            while fresh._version < version:
                fresh.add_(0)
            del candidates
            block.attn.relative_position_bias_table = nn.Parameter(fresh)
            out = block(x)
            with reference_attention():
                ref = block(x)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_gradients_flow_through_the_fast_path():
    block, x = _block_and_input(4, 2, 16, 16)
    block.train()
    x.requires_grad_(True)
    block(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert block.attn.relative_position_bias_table.grad.abs().sum() > 0


def test_stochastic_depth_drops_whole_samples_whatever_the_chunking(monkeypatch):
    """One draw per residual branch and sample for the whole block, not per chunk."""
    torch.manual_seed(0)
    block = SwinBlock(32, 4, 8, 4, drop_path=0.5, mask_resolution=(16, 16)).train()
    x = torch.randn(4, 16, 32, 32)
    outputs = []
    for chunk in (64, 100_000):
        monkeypatch.setattr(workspace, "CHUNK_TOKENS", chunk)
        torch.manual_seed(1)
        outputs.append(block(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-5)


def test_cpu_attention_choice_is_validated():
    with pytest.raises(ValueError, match="cpu attention must be one of"):
        set_cpu_attention("fast")


def test_cpu_autocast_inference_runs_and_stays_close(cpu_attention):
    """Under CPU autocast the packed path steps aside (its in-place sums need one dtype)."""
    block, x = _block_and_input(4, 1, 16, 24)
    with torch.no_grad():
        full = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(x)
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=0.1)


def _rstb(inplace: bool = False, window: int = 8) -> RSTB:
    torch.manual_seed(0)
    rstb = RSTB(32, 3, 4, window, reference_resolution=(32, 32), inplace=inplace).eval()
    with torch.no_grad():
        for block in rstb.residual_group.blocks:
            block.attn.relative_position_bias_table.normal_(0, 1)
    return rstb


def _map(h: int, w: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(2, 32, h, w).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("h,w", [(16, 24), (19, 13)])
def test_rstb_inference_equals_the_reference_path(h, w, cpu_attention):
    rstb, x = _rstb(), _map(h, w, 0)
    with torch.no_grad():
        fast = rstb(x)
        with reference_attention():
            ref = rstb(x)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


def test_outputs_never_share_the_reused_scratch_buffers():
    """Inference reuses per-thread scratch buffers from call to call; an output stays
    what it was when later calls (of any size) run."""
    release_workspace()
    rstb = _rstb()
    first_in, second_in = _map(16, 24, 1), _map(24, 16, 2)
    with torch.no_grad():
        first = rstb(first_in)
        kept = first.clone()
        reused = [b.data_ptr() for b in workspace.WORKSPACE.buffers[(first.device, first.dtype)]]
        rstb(second_in)
        rstb(_map(8, 8, 3))
        assert [b.data_ptr() for b in workspace.WORKSPACE.buffers[(first.device, first.dtype)]] == reused
    assert torch.equal(first, kept)
    assert torch.equal(first_in, _map(16, 24, 1)), "a plain RSTB must not modify its input"
    release_workspace()
    assert not workspace.WORKSPACE.buffers


def test_nested_scratch_use_gets_its_own_buffers():
    like = torch.empty(0)
    with scratch(like, (4, 5)) as outer:
        with scratch(like, (4, 5)) as inner:
            pointers = {t.data_ptr() for t in outer + inner}
    assert len(pointers) == 4


def test_threads_running_one_layer_at_once_get_their_own_results():
    rstb = _rstb()
    inputs = [_map(24, 24, seed) for seed in range(4)]
    with torch.no_grad():
        expected = [rstb(x) for x in inputs]
    results = {}

    def work(i: int) -> None:
        with torch.no_grad():
            for _ in range(3):
                results[i] = rstb(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        torch.testing.assert_close(results[i], expected[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("h,w", [(16, 24), (19, 13)])
def test_inplace_rstb_adds_into_its_input_at_inference_only(h, w):
    plain, inplace = _rstb(), _rstb(inplace=True)
    x = _map(h, w, 4)
    with torch.no_grad():
        expected = plain(x)
        given = x.clone()
        out = inplace(given)
    assert out.data_ptr() == given.data_ptr()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    trained = x.clone().requires_grad_()
    out = inplace(trained)
    assert torch.equal(trained.detach(), x), "with autograd the input must stay as it was"
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=1e-5)


def test_window_geometry_pads_to_whole_windows_and_scales_for_prompt_maps():
    geometry = WindowGeometry.cover(19, 13, 8, 4)
    assert (geometry.height, geometry.width, geometry.num_windows, geometry.window_tokens) == (24, 16, 6, 64)
    assert geometry.padded and not WindowGeometry.cover(16, 24, 8).padded
    prompts = geometry.downsampled(2)
    assert (prompts.height, prompts.width, prompts.window, prompts.shift, prompts.padded) == (12, 8, 4, 2, False)
    x = torch.randn(2, 19, 13, 3)
    windows = geometry.partition(geometry.pad(x))
    assert windows.shape == (2, 6, 64, 3)
    assert torch.equal(geometry.crop(geometry.unpartition(windows)), x)
    assert torch.equal(geometry.crop(geometry.unpartition_reference(geometry.partition_reference(geometry.pad(x)))), x)


def test_prompt_modes_follow_the_prompts_and_the_shift():
    tokens, pmap = torch.zeros(16, 8), torch.zeros(1, 4, 4, 8)
    shared = WindowPrompts(tokens=tokens).layout(8, shifted=True)
    assert isinstance(shared, PromptLayout) and shared == PromptLayout(PromptMode.SHARED, 16, 1)
    assert WindowPrompts(tokens=tokens, full_tokens=True).layout(8, shifted=False) == PromptLayout(
        PromptMode.FULL, 16, 2
    )
    legacy = WindowPrompts(prompt_map=pmap, downsample=2, legacy_mask=True)
    assert legacy.layout(8, shifted=True) == PromptLayout(PromptMode.LEGACY, 16, 2)
    assert legacy.layout(8, shifted=False) == PromptLayout(PromptMode.WINDOW, 16, 2)
    with pytest.raises(ValueError, match="cannot be tiled"):
        WindowPrompts(tokens=torch.zeros(15, 8), full_tokens=True).layout(8, shifted=False)


def test_the_cache_drops_the_least_recently_used_entry_and_copies_empty():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert cache.get_or_build("b", lambda: 4) == 4 and cache.get("a") is None
    copied = copy.deepcopy(cache)
    assert len(copied) == 0 and copied.size == 2


@pytest.mark.parametrize(
    "prompts, message",
    [
        (lambda: WindowPrompts(tokens=torch.zeros(2, 16, 32)), r"shared prompts must be \(P, C\)"),
        (lambda: WindowPrompts(prompt_map=torch.zeros(8, 12, 32)), r"prompt map must be \(B, H / d, W / d, C\)"),
        (lambda: WindowPrompts(), "exactly one of tokens and prompt_map"),
        (lambda: WindowPrompts(tokens=torch.zeros(16, 32), prompt_map=torch.zeros(1, 8, 12, 32)), "exactly one"),
        (lambda: WindowPrompts(prompt_map=torch.zeros(1, 8, 12, 32), downsample=0), "downsample must be >= 1"),
    ],
)
def test_malformed_prompts_are_refused_when_made(prompts, message):
    with pytest.raises(ValueError, match=message):
        prompts()


def test_a_prompt_map_on_another_window_grid_is_refused():
    """16x24 has 2x3 windows of 8; a 12x8 map at 1/2 also has six 4x4 prompt windows, but 3x2."""
    block = SwinBlock(32, 2, 8, 4).eval()
    x = torch.randn(1, 16, 24, 32)
    with torch.no_grad():
        block(x, WindowPrompts(prompt_map=torch.randn(1, 8, 12, 32), downsample=2))  # the right grid
        with pytest.raises(ValueError, match="does not tile"):
            block(x, WindowPrompts(prompt_map=torch.randn(1, 12, 8, 32), downsample=2))


def test_the_legacy_mask_needs_a_prompt_map_coarser_than_the_image():
    """The released construction keeps image-mask columns P..N-P: none are left when P = N."""
    block = SwinBlock(32, 2, 8, 4).eval()
    x = torch.randn(1, 16, 16, 32)
    with torch.no_grad(), pytest.raises(ValueError, match="legacy prompt mask"):
        block(x, WindowPrompts(prompt_map=torch.randn(1, 16, 16, 32), downsample=1, legacy_mask=True))


@pytest.mark.parametrize(
    "capability, vendor, packed",
    [
        ("AVX2", "GenuineIntel", True),
        ("AVX2", "AuthenticAMD", True),
        ("AVX512", "AuthenticAMD", True),  # 512-bit operations in two 256-bit halves
        ("AVX512", "GenuineIntel", False),  # full-width AVX-512: the fused kernel
        ("AVX512", "", False),
        ("DEFAULT", "AuthenticAMD", False),
    ],
)
def test_auto_cpu_attention_takes_the_packed_products_where_they_are_faster(capability, vendor, packed):
    assert packed_attention_is_faster(capability, vendor) is packed


def _plain_window_attention(x, qkv, proj, heads, bias, prompts=None):
    """softmax(q k^T / sqrt(d) + bias) v, keys and values of the prompts first, then proj."""
    nw, n, c = x.shape
    hd = c // heads
    q, k, v = qkv(x).view(nw, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    if prompts is not None:  # (P, C) shared by the windows or (nW, P, C)
        pk, pv = qkv(prompts.expand(nw, -1, -1)).view(nw, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)[1:]
        k = torch.cat([pk, k], dim=2)
        v = torch.cat([pv, v], dim=2)
    weights = torch.softmax(q @ k.transpose(-1, -2) * hd**-0.5 + bias, dim=-1)
    return proj((weights @ v).transpose(1, 2).reshape(nw, n, c))


@pytest.mark.parametrize("prompt_shape", [None, (4,), (3, 4)], ids=["no-prompts", "shared", "per-window"])
def test_the_packed_kernel_adds_window_attention_to_the_residual(prompt_shape):
    torch.manual_seed(0)
    c, heads, n, nw = 32, 2, 16, 3
    qkv, proj = nn.Linear(c, 3 * c).double(), nn.Linear(c, c).double()
    x, residual = torch.randn(nw, n, c, dtype=torch.float64), torch.randn(nw, n, c, dtype=torch.float64)
    num_prompts = prompt_shape[-1] if prompt_shape else 0
    bias = torch.randn(1, heads, n, num_prompts + n, dtype=torch.float64)
    prompts = torch.randn(*prompt_shape, c, dtype=torch.float64) if prompt_shape else None
    expected = residual + _plain_window_attention(x, qkv, proj, heads, bias, prompts)
    prompt_kv = None
    if prompts is not None:  # keys and values of the prompts without their biases, (..., heads, d, P)
        projected = F.linear(prompts, qkv.weight).unflatten(-1, (3, heads, c // heads))
        prompt_kv = tuple(projected.select(-3, i).movedim(-3, -1).contiguous() for i in (1, 2))
    with torch.no_grad():
        packed_window_attention(
            x, bias, residual, pack_weights(qkv, proj, heads, (c // heads) ** -0.5), heads, prompt_kv
        )
    torch.testing.assert_close(residual, expected, rtol=0, atol=1e-12)


FUSED_OP, PACKED_OP = "aten::scaled_dot_product_attention", "aten::baddbmm_"


@pytest.mark.parametrize("prompts", ["none", "shared", "per-window"])
@pytest.mark.parametrize("kind, runs, absent", [("packed", PACKED_OP, FUSED_OP), ("sdpa", FUSED_OP, PACKED_OP)])
def test_the_chosen_cpu_attention_is_the_one_that_runs(kind, runs, absent, prompts):
    """Seen from the operators PyTorch runs, not from the package's internals; prompts
    as keys and values take the packed products too."""
    block, x = _block_and_input(4, 2, 16, 24)
    window_prompts = {
        "none": None,
        "shared": WindowPrompts(tokens=torch.randn(16, 32)),
        "per-window": WindowPrompts(prompt_map=torch.randn(2, 8, 12, 32), downsample=2),
    }[prompts]
    set_cpu_attention(kind)
    try:
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            block(x, window_prompts)
    finally:
        set_cpu_attention(None)
    names = {event.key for event in prof.key_averages()}
    assert runs in names and absent not in names


def _operators_run(block, x):
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        block(x)
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("kind, runs, absent", [("packed", PACKED_OP, FUSED_OP), ("sdpa", FUSED_OP, PACKED_OP)])
def test_the_environment_chooses_the_cpu_attention_where_code_does_not(monkeypatch, kind, runs, absent):
    block, x = _block_and_input(4, 2, 16, 24)
    monkeypatch.setenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION", kind)
    assert cpu_attention_in_force() == kind
    names = _operators_run(block, x)
    assert runs in names and absent not in names


def test_code_overrides_the_environment_until_it_restores_the_default(monkeypatch):
    block, x = _block_and_input(4, 2, 16, 24)
    monkeypatch.setenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION", "sdpa")
    set_cpu_attention("packed")
    try:
        assert cpu_attention_in_force() == "packed"
        assert PACKED_OP in _operators_run(block, x)
    finally:
        set_cpu_attention(None)
    assert cpu_attention_in_force() == "sdpa"
    monkeypatch.delenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION")
    assert cpu_attention_in_force() == "auto"


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_cpu_attention_in_the_environment_means_auto(monkeypatch, value):
    monkeypatch.setenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION", value)
    assert cpu_attention_in_force() == "auto"


@pytest.mark.parametrize("value", ["fast", "Packed", "packed,sdpa"])
def test_an_unknown_cpu_attention_in_the_environment_is_refused_by_name(monkeypatch, value):
    block, x = _block_and_input(4, 2, 16, 24)
    monkeypatch.setenv("COMPRESSAI_TRANSTIC_CPU_ATTENTION", value)
    expected = f"COMPRESSAI_TRANSTIC_CPU_ATTENTION='{value}' is not one of auto, packed, sdpa"
    with pytest.raises(ValueError, match=re.escape(expected)), torch.no_grad():
        block(x)


@pytest.mark.parametrize("map_batch", [1, 3])
def test_a_prompt_map_for_another_batch_is_refused(map_batch, cpu_attention):
    block, x = _block_and_input(4, 2, 16, 24)
    prompts = WindowPrompts(prompt_map=torch.randn(map_batch, 8, 12, 32), downsample=2)
    with torch.no_grad(), pytest.raises(ValueError, match=f"prompt map holds {map_batch} images, the feature map 2"):
        block(x, prompts)
