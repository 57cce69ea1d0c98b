"""TransTIC's instance-specific prompt generator: a small U-Net that turns the image into
the prompt features of the encoder stages."""

from __future__ import annotations

from typing import List, Optional, Tuple, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers.cache import DerivedValue

__all__ = ["ConvBNReLU", "PromptGenerator"]


class ConvBNReLU(nn.Sequential):
    """``repeats`` x (conv3x3, BatchNorm, ReLU); indices 0/1/2, 3/4/5, ...

    At inference (no autograd, every BatchNorm in eval mode with running statistics)
    each BatchNorm is a fixed per-channel affine map, folded into the convolution
    before it: one pass over the map instead of two, the same function up to float
    rounding. The folded weights are rebuilt when a weight or running statistic
    changes; forward hooks on the inner layers do not fire on that path.
    """

    #: fold the BatchNorms at inference; complexity counting turns it off on an instance
    #: to count the layers as built
    fold_batchnorm: bool = True

    def __init__(self, in_channels: int, out_channels: int, repeats: int) -> None:
        layers: List[nn.Module] = []
        for i in range(repeats):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)
        self._folded: DerivedValue[List[Tuple[Tensor, Tensor]]] = DerivedValue()

    def forward(self, x: Tensor) -> Tensor:
        pairs = self._foldable_pairs()
        if pairs is None:
            return super().forward(x)
        for (conv, _), (weight, bias) in zip(pairs, self._folded_layers(pairs)):
            x = F.relu_(conv._conv_forward(x, weight, bias))
        return x

    def _foldable_pairs(self) -> Optional[List[Tuple[nn.Conv2d, nn.BatchNorm2d]]]:
        """The (convolution, BatchNorm) pairs when this call may fold them, else None."""
        if torch.is_grad_enabled() or not self.fold_batchnorm:
            return None
        layers = list(self)
        pairs = list(zip(layers[0::3], layers[1::3]))
        kinds = all(type(r) is nn.ReLU for r in layers[2::3]) and len(layers) == 3 * len(pairs)
        if not kinds or not all(_foldable(conv, bn) for conv, bn in pairs):
            return None
        return cast(List[Tuple[nn.Conv2d, nn.BatchNorm2d]], pairs)

    def _folded_layers(self, pairs: List[Tuple[nn.Conv2d, nn.BatchNorm2d]]) -> List[Tuple[Tensor, Tensor]]:
        """``(weight, bias)`` of every convolution with its BatchNorm folded in.

        ``num_batches_tracked`` is part of the key: a BatchNorm updates its running
        statistics in training mode without bumping their version counters.
        """
        tensors = [
            t
            for conv, bn in pairs
            for t in (conv.weight, conv.bias, bn.weight, bn.bias)
            + (bn.running_mean, bn.running_var, bn.num_batches_tracked)
        ]
        return self._folded.get(tensors, lambda: [_fold(conv, bn) for conv, bn in pairs])


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
    )


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """A convolution followed by a BatchNorm in eval mode as one convolution's
    ``(weight, bias)``."""
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None  # _foldable checked it
    with torch.no_grad():
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, mean, var, bn.eps, bn.weight, bn.bias)
    return weight.detach(), bias.detach()


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
        self.down1 = ConvBNReLU(in_channels, width, 2)
        self.down2 = ConvBNReLU(width, 2 * width, 2)
        self.down3 = ConvBNReLU(2 * width, 4 * width, 2)
        self.maxpool = nn.MaxPool2d(2)
        self.up2 = ConvBNReLU(4 * width + 2 * width, 2 * width, 3)
        self.up1 = ConvBNReLU(2 * width + width, width, 3)
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
