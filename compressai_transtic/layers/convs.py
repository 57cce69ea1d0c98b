"""The convolutions between the Swin stages of the transforms: sizes divide or
multiply exactly by the stride."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["conv", "deconv"]


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
