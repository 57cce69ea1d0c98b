"""Checks of loaded tensors, shared by the checkpoint and adapter loaders."""

from __future__ import annotations

from typing import List, Mapping

import torch
from torch import Tensor

__all__ = ["non_finite_tensors"]


def non_finite_tensors(state_dict: Mapping[str, Tensor]) -> List[str]:
    """Names of the floating-point tensors that hold NaN or Inf."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
