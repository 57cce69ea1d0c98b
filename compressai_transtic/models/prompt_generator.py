"""TransTIC's instance-specific prompt generator: a small U-Net that turns the image into
the prompt features of the encoder stages."""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PromptGenerator"]


class _ConvBNReLU(nn.Sequential):
    """``repeats`` x (conv3x3, BatchNorm, ReLU); indices 0/1/2, 3/4/5, ..."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int) -> None:
        layers: List[nn.Module] = []
        for i in range(repeats):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class PromptGenerator(nn.Module):
    """TransTIC's instance-specific prompt generator (U-Net-like, output at 1/2).

    ``down1`` (2 x conv-BN-ReLU at ``width``), max-pool, ``down2`` (at 2 x width),
    max-pool, ``down3`` (at 4 x width), bilinear x2 up (align_corners) + skip -> ``up2``
    (3 x conv-BN-ReLU), up + skip -> ``up1`` (3 x), then ``classifier`` (conv3x3,
    stride 2, to ``out_channels``, no activation).

    Both concatenations put the skip connection first and the upsampled map second:
    ``up2`` sees ``[down2 (2w), up(down3) (4w)]`` and ``up1`` sees ``[down1 (w),
    up(up2) (2w)]``. That is the channel order the released weights expect; the other
    order loads with ``strict=True`` as well (the shapes agree) but gives other
    prompts, so ``tests/test_prompt_generator.py`` checks it against an independent
    functional implementation.

    Args:
        out_channels: channels of the prompt features (N of the codec).
        width: channels of the first level.
        in_channels: image channels.
    """

    def __init__(self, out_channels: int, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.down1 = _ConvBNReLU(in_channels, width, 2)
        self.down2 = _ConvBNReLU(width, 2 * width, 2)
        self.down3 = _ConvBNReLU(2 * width, 4 * width, 2)
        self.maxpool = nn.MaxPool2d(2)
        self.up2 = _ConvBNReLU(4 * width + 2 * width, 2 * width, 3)
        self.up1 = _ConvBNReLU(2 * width + width, width, 3)
        self.classifier = nn.Sequential(nn.Conv2d(width, out_channels, 3, stride=2, padding=1))

    @staticmethod
    def _up(x: Tensor, like: Tensor) -> Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)

    def forward(self, x: Tensor) -> Tensor:
        d1 = self.down1(x)
        d2 = self.down2(self.maxpool(d1))
        d3 = self.down3(self.maxpool(d2))
        u2 = self.up2(torch.cat([d2, self._up(d3, d2)], dim=1))  # skip first, then upsampled
        u1 = self.up1(torch.cat([d1, self._up(u2, d1)], dim=1))
        return self.classifier(u1)
