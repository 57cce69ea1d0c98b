"""The package's Swin blocks and RSTBs compute what the independent reference says.

``tests/swin_oracle.py`` is a plain functional Swin block written from the facts page
(``transtic-facts.md``) alone, sharing no code with ``compressai_transtic``. Every code
path of :class:`compressai_transtic.layers.SwinBlock` and
:class:`compressai_transtic.layers.RSTB` must agree with it:

* routes: inference (eval mode, no autograd, in-place residuals, chunks of windows) with
  each CPU attention choice (``set_cpu_attention("packed" | "sdpa")``) and with
  ``reference_attention()``; training mode with autograd (fused SDPA and reference);
* shifted and unshifted blocks, maps that are multiples of the window and maps that are
  not (padding, smaller than one window, non-square), batch 1 and 2, windows 8 and 4;
* every prompt kind and mask layout (TP shared prompts, IP prompt maps with the
  released "legacy" and the "aligned" masks at strides 1, 2, 4, full-token prompts);
* float32 and float64, and CPU autocast (bfloat16 products) against the float64
  reference to bfloat16's precision.

Outputs agree to 1e-4 (atol and rtol) in float32 and 1e-12 in float64. Gradients
(input, parameters, prompts) use the same rtol and an atol of that figure times their
largest magnitude: parameter gradients are sums over every token of the batch and the
input gradient of an RSTB goes back through several peaked softmaxes, so their values
reach the hundreds, and in float32 the package and the oracle each differ from the
float64 truth by a few millionths of that magnitude.

All parameters, prompt tokens and maps are random (fixed seeds) and large enough that
the relative position bias, the shifted-window mask and the prompt masks change the
result; ``test_the_reference_is_sensitive_to_*`` check that the comparison can fail.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import swin_oracle as oracle
import torch
from swin_cases import (
    DIM,
    HEADS,
    PROMPT_KINDS,
    TOLERANCE,
    as_tuple,
    block_input,
    leaf,
    make_block,
    make_prompts,
    randomise_,
    reference_in_float64,
)

from compressai_transtic.layers import RSTB, SwinBlock, WindowPrompts, reference_attention, set_cpu_attention

DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])

# route -> (path, CPU attention). The CPU attention choice only matters at inference
# (set_cpu_attention's contract); training always runs with autograd, fused or reference.
ROUTES = {
    "inference-packed": ("inference", "packed"),
    "inference-sdpa": ("inference", "sdpa"),
    "inference-reference": ("inference", "reference"),
    "training": ("training", "auto"),
    "training-reference": ("training", "reference"),
}


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def on_route(route: str) -> Iterator[str]:
    """Select the route's attention implementation (restoring "auto" and the default
    path afterwards) and give its path, "inference" or "training"."""
    path, attention = ROUTES[route]
    with contextlib.ExitStack() as stack:
        if attention == "reference":
            stack.enter_context(reference_attention())
        else:
            set_cpu_attention(attention)
            stack.callback(set_cpu_attention, None)
        yield path


def oracle_params(module: torch.nn.Module, grad: bool) -> Dict[str, torch.Tensor]:
    """The module's parameters as plain tensors (fresh leaves when gradients are wanted)."""
    names = {n for n, _ in module.named_parameters()}
    return {k: leaf(v, grad and k in names) for k, v in module.state_dict().items()}


def assert_matches(actual, expected, dtype: torch.dtype, what: str, scaled: bool = False) -> float:
    """``actual`` equals ``expected`` to the dtype's tolerance (times the largest
    magnitude of ``expected`` when ``scaled``); returns the max abs difference."""
    actual, expected = as_tuple(actual), as_tuple(expected)
    assert len(actual) == len(expected), what
    worst = 0.0
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a is not None and a.dtype == dtype and a.shape == e.shape, what
        tol = TOLERANCE[dtype]
        atol = tol * max(1.0, e.abs().max().item()) if scaled else tol
        torch.testing.assert_close(a, e.to(dtype), rtol=tol, atol=atol, msg=lambda m, i=i: f"{what}[{i}]: {m}")
        worst = max(worst, (a - e).abs().max().item() if a.numel() else 0.0)
    return worst


#: the largest difference seen, per dtype and quantity (``pytest -s`` prints it at the end)
WORST: Dict[Tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_a_report() -> Iterator[None]:
    """Run single-threaded (the tensors are tiny: intra-op threads only add
    synchronisation), then restore the thread count and print the largest differences seen."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    for (dtype, what), value in sorted(WORST.items()):
        print(f"\nlargest |package - reference| {dtype} {what}: {value:.3g}", end="")


def _record(dtype: torch.dtype, what: str, value: float) -> None:
    key = (str(dtype).replace("torch.", ""), what)
    WORST[key] = max(WORST.get(key, 0.0), value)


def compare_with_oracle(
    run_package,
    run_oracle,
    params: Dict[str, torch.Tensor],
    x: torch.Tensor,
    path: str,
    dtype: torch.dtype,
    package_leaves: Dict[str, torch.Tensor],
    oracle_leaves: Dict[str, torch.Tensor],
) -> None:
    """Run the package and the oracle on the same input; compare outputs and, when
    training, the gradients of the input and of every leaf (parameters, prompts) for a
    random upstream gradient.

    ``package_leaves`` / ``oracle_leaves``: name -> leaf tensor whose gradient must agree.
    """
    grad = path == "training"
    x_mine, x_theirs = leaf(x, grad), leaf(x, grad)
    with torch.set_grad_enabled(grad):
        out = run_package(x_mine if grad else x_mine.clone())
    expected = run_oracle(x_theirs, params)
    _record(dtype, "output", assert_matches(out, expected, dtype, "output"))
    if not grad:
        return
    g = torch.Generator().manual_seed(7)
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype) for o in as_tuple(out)]
    sum((o * u).sum() for o, u in zip(as_tuple(out), ups)).backward()
    sum((o * u).sum() for o, u in zip(as_tuple(expected), ups)).backward()
    diff = assert_matches(x_mine.grad, x_theirs.grad, dtype, "input gradient", scaled=True)
    _record(dtype, "gradient", diff)
    _record(dtype, "gradient / its largest magnitude", diff / max(1.0, x_theirs.grad.abs().max().item()))
    assert package_leaves.keys() == oracle_leaves.keys()
    for name, a in package_leaves.items():
        expected = oracle_leaves[name].grad
        diff = assert_matches(a.grad, expected, dtype, f"gradient of {name}", scaled=True)
        _record(dtype, "gradient", diff)
        _record(dtype, "gradient / its largest magnitude", diff / max(1.0, expected.abs().max().item()))


def check_block(
    b: int, h: int, w: int, window: int, shift: int, kind: Optional[str], route: str, dtype: torch.dtype
) -> None:
    """SwinBlock (random parameters, ``kind`` prompts) against the oracle on one route."""
    block = make_block(window, shift, dtype)
    x = block_input(b, h, w, dtype)
    with on_route(route) as path:
        grad = path == "training"
        block.train(grad)
        prompts, kwargs, mine, theirs = make_prompts(kind, b, h, w, window, dtype, grad)
        params = oracle_params(block, grad)

        def run_oracle(t, params):
            return oracle.swin_block(t, params, num_heads=HEADS, window=window, shift=shift, **(kwargs or {}))

        package_leaves = dict(block.named_parameters(), **{f"prompts{i}": t for i, t in enumerate(mine)})
        oracle_leaves = {n: params[n] for n, _ in block.named_parameters()}
        oracle_leaves.update({f"prompts{i}": t for i, t in enumerate(theirs)})
        compare_with_oracle(
            lambda t: block(t, prompts), run_oracle, params, x, path, dtype, package_leaves, oracle_leaves
        )


# ---------------------------------------------------------------------------------------
# the block
# ---------------------------------------------------------------------------------------

# (batch, height, width, window): multiples of the window (square; non-square with 35
# windows: several chunks of windows on every route at batch 2), sizes that need padding
# (non-square; smaller than one window; padding plus shift reaching the second-to-last
# window row and column: 25x41), and window 4 as in h_a / h_s.
SIZES = [
    (1, 16, 16, 8),
    (2, 40, 56, 8),
    (2, 12, 20, 8),
    (1, 25, 41, 8),
    (2, 3, 5, 8),
    (1, 1, 1, 4),
    (2, 10, 6, 4),
]


@DTYPES
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("shifted", [False, True], ids=["unshifted", "shifted"])
@pytest.mark.parametrize("b,h,w,window", SIZES, ids=[f"b{b}-{h}x{w}-w{win}" for b, h, w, win in SIZES])
def test_swin_block_matches_the_independent_reference(b, h, w, window, shifted, route, dtype):
    check_block(b, h, w, window, window // 2 if shifted else 0, None, route, dtype)


def _prompted_cases(kinds_and_shifts, sizes) -> list:
    """Every (prompt kind, shift, size, route); the packed CPU attention is offered
    prompts as keys and values (full-token prompts take the SDPA route there too)."""
    cases = []
    for kind, shifts, *extra_sizes in kinds_and_shifts:
        sizes_of_kind = list(sizes) + (extra_sizes[0] if extra_sizes else [])
        for shifted in shifts:
            for b, h, w in sizes_of_kind:
                for route in ROUTES:
                    if route == "inference-packed" and PROMPT_KINDS[kind][0].startswith("full"):
                        continue
                    name = f"{kind}-{'shifted' if shifted else 'unshifted'}-b{b}-{h}x{w}-{route}"
                    cases.append(pytest.param(kind, shifted, b, h, w, route, id=name))
    return cases


BOTH = (False, True)
# in an unshifted block every mask is zero: the legacy and aligned layouts coincide
PROMPTED = [
    ("tp-16", BOTH, [(2, 40, 56)]),  # and 35 windows: several chunks of windows
    ("tp-4", BOTH),
    ("tp-64", (True,)),
    ("ip-legacy-d2", (True,), [(2, 40, 56)]),  # several chunks of windows per image
    ("ip-legacy-d4", (True,)),
    ("ip-aligned-d1", BOTH),
    ("ip-aligned-d2", BOTH, [(2, 40, 56)]),
    ("ip-aligned-d4", (True,)),
    ("full-map-d2", BOTH),
    ("full-map-d4", (True,)),
    ("full-tp-16", BOTH, [(2, 40, 56)]),
]


@DTYPES
@pytest.mark.parametrize("kind,shifted,b,h,w,route", _prompted_cases(PROMPTED, [(2, 16, 24)]))
def test_prompted_swin_block_matches_the_independent_reference(kind, shifted, b, h, w, route, dtype):
    """Every prompt kind and mask layout on a 16x24 map (window 8: 2 x 3 windows), and
    shared, per-window and full-token prompts on a 40x56 map as well (35 windows)."""
    check_block(b, h, w, 8, 4 if shifted else 0, kind, route, dtype)


PADDED_PROMPTED = [
    ("tp-16", BOTH),
    ("tp-4", (True,)),
    ("tp-64", (True,)),
    ("full-map-d2", (True,)),
    ("full-tp-16", BOTH),
]


@DTYPES
@pytest.mark.parametrize(
    "kind,shifted,b,h,w,route", _prompted_cases(PADDED_PROMPTED, [(2, 12, 20), (1, 3, 5), (1, 25, 41)])
)
def test_prompted_swin_block_on_a_padded_map_matches_the_independent_reference(kind, shifted, b, h, w, route, dtype):
    """Shared prompts of every count and full-token prompts on maps that are not a
    multiple of the window (25x41: padding plus shift reach the second-to-last window
    row and column)."""
    check_block(b, h, w, 8, 4 if shifted else 0, kind, route, dtype)


@pytest.mark.parametrize("kind", ["ip-legacy-d2", "ip-aligned-d2"])
def test_per_window_prompts_on_a_padded_map_are_refused(kind):
    """IP-type prompts need a multiple of the window: an error, never a silent guess."""
    block = make_block(8, 4, torch.float32).eval()
    prompts, _, _, _ = make_prompts(kind, 1, 12, 20, 8, torch.float32, False)
    with torch.no_grad(), pytest.raises((RuntimeError, ValueError)):
        block(block_input(1, 12, 20, torch.float32), prompts)


def test_block_buffers_hold_the_swin_index_and_the_shifted_window_mask():
    """``relative_position_index`` and the persistent ``attn_mask`` (stored for the
    reference resolution) are those of the Swin definition."""
    block = SwinBlock(DIM, HEADS, 8, 4, mask_resolution=(32, 24))
    state = block.state_dict()
    assert torch.equal(state["attn.relative_position_index"], oracle.relative_position_index(8))
    assert torch.equal(state["attn_mask"], oracle.shifted_window_mask(32, 24, 8, 4))
    assert set(state["attn_mask"].unique().tolist()) == {0.0, oracle.SHIFT_MASK_VALUE}


# ---------------------------------------------------------------------------------------
# the comparison can fail
# ---------------------------------------------------------------------------------------


def _inference(block: SwinBlock, x: torch.Tensor, prompts: Optional[WindowPrompts] = None) -> torch.Tensor:
    block.eval()
    with torch.no_grad():
        return block(x, prompts)


def test_the_reference_is_sensitive_to_the_shift_and_the_bias_orientation():
    block = make_block(8, 4, torch.float64)
    x = block_input(1, 16, 24, torch.float64)
    out = _inference(block, x)
    params = block.state_dict()
    right = oracle.swin_block(x, params, num_heads=HEADS, window=8, shift=4)
    wrong_shift = oracle.swin_block(x, params, num_heads=HEADS, window=8, shift=0)
    # reversing the table turns bias(i, j) into bias(j, i): a transposed bias
    table = params["attn.relative_position_bias_table"]
    transposed = oracle.swin_block(
        x, dict(params, **{"attn.relative_position_bias_table": table.flip(0)}), num_heads=HEADS, window=8, shift=4
    )
    assert (out - right).abs().max() < 1e-12
    assert (out - wrong_shift).abs().max() > 1e-3
    assert (out - transposed).abs().max() > 1e-3


def test_the_reference_is_sensitive_to_the_prompt_mask_layout_and_the_prompts():
    block = make_block(8, 4, torch.float64)
    x = block_input(1, 16, 24, torch.float64)
    prompts, kwargs, _, _ = make_prompts("ip-legacy-d2", 1, 16, 24, 8, torch.float64, False)
    out = _inference(block, x, prompts)
    params = block.state_dict()
    common = {"num_heads": HEADS, "window": 8, "shift": 4}
    legacy = oracle.swin_block(x, params, **common, **kwargs)
    aligned = oracle.swin_block(x, params, **common, **dict(kwargs, legacy_mask=False))
    unprompted = oracle.swin_block(x, params, **common)
    assert (out - legacy).abs().max() < 1e-12
    assert (out - aligned).abs().max() > 1e-3
    assert (out - unprompted).abs().max() > 1e-3


def test_the_reference_is_sensitive_to_padded_keys():
    """Attending to the padding (a 12x20 map computed as if it were zero-padded to
    16x24 with the padded tokens visible as keys) gives a different answer."""
    block = make_block(8, 0, torch.float64)
    x = block_input(1, 12, 20, torch.float64)
    out = _inference(block, x)
    params = block.state_dict()
    right = oracle.swin_block(x, params, num_heads=HEADS, window=8, shift=0)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 4, 0, 4))
    visible = oracle.swin_block(padded, params, num_heads=HEADS, window=8, shift=0)[:, :12, :20]
    assert (out - right).abs().max() < 1e-12
    assert (out - visible).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------
# RSTB: blocks with alternating shifts and one residual connection around them
# ---------------------------------------------------------------------------------------


def rstb_prompts(
    kind: str, depth: int, b: int, h: int, w: int, window: int, dtype: torch.dtype, grad: bool
) -> Tuple[Optional[list], Optional[list], List[torch.Tensor], List[torch.Tensor]]:
    """Per-block prompts as TransTIC gives them: deep kinds one per block, shallow
    (full-token) kinds at the first block only (then carried to the next blocks)."""
    if kind == "none":
        return None, None, [], []
    if kind.startswith("full"):
        p, o, m, t = make_prompts(kind, b, h, w, window, dtype, grad, seed=11)
        return [p], [o], m, t
    package, theirs, mine_leaves, their_leaves = [], [], [], []
    for i in range(depth):
        p, o, m, t = make_prompts(kind, b, h, w, window, dtype, grad, seed=11 + i)
        package.append(p)
        theirs.append(o)
        mine_leaves += m
        their_leaves += t
    return package, theirs, mine_leaves, their_leaves


RSTB_DEPTH = 3
RSTB_CASES = [
    # (prompt kind, batch, height, width, window, resolution at the 256 x 256 reference input)
    ("none", 2, 40, 56, 8, (32, 32)),  # several chunks of windows
    ("none", 2, 12, 20, 8, (32, 32)),  # padding
    ("none", 1, 6, 5, 8, (4, 4)),  # stage not larger than the window: window 4, no shift
    ("tp-16", 2, 16, 24, 8, (32, 32)),
    ("tp-16", 1, 12, 20, 8, (32, 32)),
    ("ip-legacy-d2", 2, 16, 24, 8, (32, 32)),
    ("ip-aligned-d2", 1, 16, 24, 8, (32, 32)),
    ("full-tp-16", 1, 12, 20, 8, (32, 32)),
    ("full-map-d2", 2, 16, 24, 8, (32, 32)),
    ("tp-4", 1, 16, 24, 8, (32, 32)),
    ("tp-64", 1, 16, 24, 8, (32, 32)),
    ("ip-aligned-d1", 1, 16, 24, 8, (32, 32)),
    ("ip-legacy-d4", 2, 16, 24, 8, (32, 32)),
    ("ip-aligned-d4", 1, 16, 24, 8, (32, 32)),
    ("none", 2, 16, 24, 4, (8, 8)),  # window 4 with shifted blocks, as h_a1 and h_s2
]
RSTB_ROUTES = ["inference-packed", "inference-sdpa", "inference-reference", "training", "training-reference"]


@DTYPES
@pytest.mark.parametrize("route", RSTB_ROUTES)
@pytest.mark.parametrize(
    "kind,b,h,w,window,resolution", RSTB_CASES, ids=[f"{c[0]}-b{c[1]}-{c[2]}x{c[3]}-ref{c[5][0]}" for c in RSTB_CASES]
)
def test_rstb_matches_chaining_the_independent_reference(kind, b, h, w, window, resolution, route, dtype):
    module = randomise_(RSTB(DIM, RSTB_DEPTH, HEADS, window, resolution), seed=5).to(dtype)
    x = torch.randn(b, DIM, h, w, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with on_route(route) as path:
        grad = path == "training"
        module.train(grad)
        prompts, kwargs, mine, theirs = rstb_prompts(kind, RSTB_DEPTH, b, h, w, module.window_size, dtype, grad)
        params = oracle_params(module, grad)

        def run_oracle(t, params):
            return oracle.rstb(
                t,
                params,
                depth=RSTB_DEPTH,
                num_heads=HEADS,
                window=window,
                reference_resolution=resolution,
                prompts=kwargs,
            )

        package_leaves = dict(module.named_parameters(), **{f"prompts{i}": t for i, t in enumerate(mine)})
        oracle_leaves = {n: params[n] for n, _ in module.named_parameters()}
        oracle_leaves.update({f"prompts{i}": t for i, t in enumerate(theirs)})
        compare_with_oracle(
            lambda t: module(t, prompts), run_oracle, params, x, path, dtype, package_leaves, oracle_leaves
        )


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("route", ["inference-packed", "inference-sdpa"])
def test_inplace_rstb_at_inference_matches_the_independent_reference(memory_format, route):
    module = randomise_(RSTB(DIM, RSTB_DEPTH, HEADS, 8, (32, 32), inplace=True), seed=5).eval()
    x = torch.randn(2, DIM, 12, 20, generator=torch.Generator().manual_seed(3)).contiguous(memory_format=memory_format)
    expected = oracle.rstb(
        x, module.state_dict(), depth=RSTB_DEPTH, num_heads=HEADS, window=8, reference_resolution=(32, 32)
    )
    with on_route(route), torch.no_grad():
        out = module(x.clone(memory_format=memory_format))
    _record(torch.float32, "output", assert_matches(out, expected, torch.float32, "output"))


# ---------------------------------------------------------------------------------------
# CPU autocast: bfloat16 products, the function of the float64 reference
# ---------------------------------------------------------------------------------------

#: bfloat16 keeps 8 significant bits: through a block's products and peaked softmaxes the
#: outputs differ from the float64 truth by about 1 % of their largest magnitude, while a
#: wrong shift or prompt layout moves them by a large part of it
BFLOAT16_TOLERANCE = 2e-2


@pytest.mark.parametrize("kind", ["none", "tp-16", "ip-legacy-d2", "full-tp-16"])
@pytest.mark.parametrize("cpu_attention", ["packed", "sdpa"])
def test_block_under_cpu_autocast_computes_the_reference_function_to_bfloat16_precision(kind, cpu_attention):
    """Under ``torch.autocast("cpu", torch.bfloat16)`` the packed products step aside
    (their in-place sums need one dtype): whatever the CPU attention choice, the block
    still computes the reference's function, in float32 out, to bfloat16's precision."""
    block = make_block(8, 4, torch.float32).eval()
    x = block_input(2, 16, 24, torch.float32)
    prompts, kwargs, _, _ = make_prompts(None if kind == "none" else kind, 2, 16, 24, 8, torch.float32, False)
    with on_route(f"inference-{cpu_attention}"), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = as_tuple(block(x.clone(), prompts))[0]
    expected = reference_in_float64(block, x, kwargs, 8, 4)[0]
    assert out.dtype == torch.float32
    scale = expected.abs().max().item()
    torch.testing.assert_close(out.double(), expected, rtol=BFLOAT16_TOLERANCE, atol=BFLOAT16_TOLERANCE * scale)
    unshifted = reference_in_float64(block, x, kwargs, 8, 0)[0]
    assert (unshifted - expected).abs().max().item() > 10 * BFLOAT16_TOLERANCE * scale  # the check can fail
