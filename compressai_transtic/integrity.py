"""Checks of loaded tensors, shared by the checkpoint and adapter loaders and the models'
``load_state_dict``: weights that cannot be right are refused before any model is built
or changed."""

from __future__ import annotations

from typing import Any, List, Mapping

import torch
from torch import Tensor

from .console import and_more

__all__ = ["non_finite_tensors", "tensor_problems"]

#: tensor names shown per kind of problem in a message
SHOWN = 5


def non_finite_tensors(state_dict: Mapping[str, Tensor]) -> List[str]:
    """Names of the floating-point tensors that hold NaN or Inf."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _stores_every_value(tensor: Tensor) -> bool:
    """Whether the tensor's storage holds at least as many bytes as its values need.

    A file written by ``torch.save`` holds the storages, so a tensor that declares far
    more values than its storage has (an expanded view, strides of 0) would make a
    model of its declared size from a file of any size.
    """
    return tensor.untyped_storage().nbytes() >= tensor.numel() * tensor.element_size()


def _names(keys: List[str]) -> str:
    return f"{keys[:SHOWN]}{and_more(keys, SHOWN)}"


def tensor_problems(tensors: Mapping[str, Any]) -> List[str]:
    """What makes these tensors unusable as weights: one line per kind of problem,
    empty when there is none. Entries that are not tensors are not looked at.

    Refused: sparse or other non-strided layouts, tensors on the ``meta`` device (they
    hold no values), complex values, tensors that declare more values than their
    storage holds, and NaN or Inf in floating-point tensors.
    """
    found = {k: v for k, v in tensors.items() if isinstance(v, Tensor)}
    meta = [k for k, v in found.items() if v.is_meta]
    strided = {k: v for k, v in found.items() if v.layout == torch.strided and not v.is_meta}
    problems = []
    checks = (
        ("are not dense (sparse or another layout)", [k for k in found if k not in strided and k not in meta]),
        ("are on the meta device (they hold no values)", meta),
        ("hold complex values", [k for k, v in strided.items() if v.is_complex()]),
        (
            "declare more values than their storage holds (expanded views)",
            [k for k, v in strided.items() if not _stores_every_value(v)],
        ),
    )
    for what, keys in checks:
        if keys:
            problems.append(f"tensors {_names(keys)} {what}")
    dense = {k: v for k, v in strided.items() if not v.is_complex() and _stores_every_value(v)}
    non_finite = non_finite_tensors(dense)
    if non_finite:
        problems.append(f"holds NaN or Inf values in {_names(non_finite)}")
    return problems
