"""Codec architectures: :class:`TIC` (base codec) and :class:`TransTIC` (prompted)."""

from .tic import TIC
from .transtic import TransTIC

__all__ = ["TIC", "TransTIC"]
