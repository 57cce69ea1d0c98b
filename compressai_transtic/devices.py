"""Checking a ``--device`` argument before anything is built on it."""

from __future__ import annotations

import torch

__all__ = ["DeviceUnavailableError", "check_device"]


class DeviceUnavailableError(ValueError):
    """A device that this machine does not have, or a device name torch does not know."""


def check_device(device: str) -> None:
    """Raise :class:`DeviceUnavailableError`, with torch's reason, unless a tensor can be
    made on ``device``."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise DeviceUnavailableError(f"device {device!r} is not available here ({exc})") from None
