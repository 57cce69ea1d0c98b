"""What the Swin oracle tests share with the GPU tests: random blocks, inputs and
prompts of every kind, each as the package takes it and as the independent reference
(``swin_oracle.py``) takes it."""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import swin_oracle as oracle
import torch

from compressai_transtic.layers import SwinBlock, WindowPrompts

DIM, HEADS = 16, 2
#: package against reference: float32 and float64 outputs agree to these (atol and rtol)
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-12}


def randomise_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Draw every parameter at random: unit-variance relative position bias (so the bias
    matters), weights of ~1.5 / sqrt(fan_in) (peaked attention), norms around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.endswith("relative_position_bias_table"):
                value = r
            elif ".norm" in name or name.startswith("norm"):
                value = 1.0 + 0.2 * r if name.endswith("weight") else 0.2 * r
            elif name.endswith("bias"):
                value = 0.2 * r
            else:
                value = r * 1.5 / math.sqrt(p.shape[1])
            p.copy_(value)
    return module


def make_block(window: int, shift: int, dtype: torch.dtype, seed: int = 0) -> SwinBlock:
    block = SwinBlock(DIM, HEADS, window, shift, mask_resolution=(2 * window, 2 * window))
    return randomise_(block, seed).to(dtype)


def leaf(t: torch.Tensor, grad: bool) -> torch.Tensor:
    return t.detach().clone().requires_grad_(grad)


# Prompt kinds, as the package names them (WindowPrompts) and as the oracle takes them.
# tp: TransTIC's decoder task-specific prompts (deep); ip: encoder instance-specific
# prompt maps at stride d with the released ("legacy") or the aligned mask layout;
# full: the supplementary material's "Shallow" variant (prompts as full tokens).
PROMPT_KINDS = {
    "none": None,
    "tp-16": ("tp", 16),
    "tp-4": ("tp", 4),
    "tp-64": ("tp", 64),
    "ip-legacy-d2": ("ip-legacy", 2),
    "ip-legacy-d4": ("ip-legacy", 4),
    "ip-aligned-d1": ("ip-aligned", 1),
    "ip-aligned-d2": ("ip-aligned", 2),
    "ip-aligned-d4": ("ip-aligned", 4),
    "full-map-d2": ("full-map", 2),
    "full-map-d4": ("full-map", 4),
    "full-tp-16": ("full-tp", 16),
}


def make_prompts(
    kind: Optional[str], b: int, h: int, w: int, window: int, dtype: torch.dtype, grad: bool, seed: int = 1
) -> Tuple[Optional[WindowPrompts], Optional[dict], List[torch.Tensor], List[torch.Tensor]]:
    """Random prompts of one kind: the package's WindowPrompts, the oracle's keyword
    arguments, and the leaf tensors of each (to compare their gradients)."""
    spec = PROMPT_KINDS[kind] if kind is not None else None
    if spec is None:
        return None, None, [], []
    g = torch.Generator().manual_seed(seed)
    family, size = spec
    hp, wp = -(-h // window) * window, -(-w // window) * window
    if family in ("tp", "full-tp"):
        tokens = torch.randn(size, DIM, generator=g, dtype=torch.float64).to(dtype)
        mine, theirs = leaf(tokens, grad), leaf(tokens, grad)
        full = family == "full-tp"
        return (
            WindowPrompts(tokens=mine, full_tokens=full),
            {"shared_prompts": theirs, "full_tokens": full},
            [mine],
            [theirs],
        )
    d = size
    pmap = torch.randn(b, hp // d, wp // d, DIM, generator=g, dtype=torch.float64).to(dtype)
    mine, theirs = leaf(pmap, grad), leaf(pmap, grad)
    legacy, full = family == "ip-legacy", family == "full-map"
    package = WindowPrompts(prompt_map=mine, downsample=d, legacy_mask=legacy, full_tokens=full)
    return (
        package,
        {"prompt_map": theirs, "downsample": d, "legacy_mask": legacy, "full_tokens": full},
        [mine],
        [theirs],
    )


def as_tuple(out) -> Tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def block_input(b: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(b, h, w, DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)


def reference_in_float64(
    block: SwinBlock, x: torch.Tensor, prompt_kwargs: Optional[dict], window: int, shift: int
) -> Tuple[torch.Tensor, ...]:
    """The reference's output for ``block`` (its parameters) on ``x`` with the prompts
    of ``prompt_kwargs`` (as :func:`make_prompts` gives them), computed in float64 on
    the CPU: the truth a block in another dtype or on another device is held to."""
    as64 = {k: v.double().cpu() if torch.is_tensor(v) else v for k, v in (prompt_kwargs or {}).items()}
    params = {k: v.double().cpu() for k, v in block.state_dict().items()}
    out = oracle.swin_block(x.double().cpu(), params, num_heads=HEADS, window=window, shift=shift, **as64)
    return as_tuple(out)
