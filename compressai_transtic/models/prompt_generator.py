"""TransTIC's instance-specific prompt generator: a small U-Net that turns the image into
the prompt features of the encoder stages."""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers.cache import DerivedValue

__all__ = ["ConvBNReLU", "PromptGenerator", "STRIP_PIXELS"]

#: pixels per strip of rows on the prompt generator's way up at inference; read at
#: every call, so tests may change it. At width 32 a strip's concatenation then takes
#: about 24 MiB and its margin rows: it stays in a server CPU's last-level cache and,
#: for images up to about 2000 pixels wide, below the size above which glibc's
#: allocator hands every freed block back to the system, so that the next strip
#: reuses its pages instead of faulting in fresh ones
STRIP_PIXELS = 1 << 16


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

    def folded(self) -> Optional[List[Tuple[Tensor, Tensor]]]:
        """``(weight, bias)`` of every 3x3 convolution with its BatchNorm folded in (each
        followed by a ReLU), when this call would fold them (see the class), else None."""
        pairs = self._foldable_pairs()
        return None if pairs is None else self._folded_layers(pairs)

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

    At inference (no autograd, every BatchNorm in eval mode) the BatchNorms are folded
    into the convolutions (:class:`ConvBNReLU`) and the way up runs strip by strip of
    rows (:data:`STRIP_PIXELS`), in a fraction of the memory of whole maps; hooks on
    ``up2``, ``up1``, ``classifier`` and their layers do not fire on that path.

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
        levels = self._down(x)
        up2, up1 = self.up2.folded(), self.up1.folded()
        if up2 is not None and up1 is not None and self._convolutions_as_built():
            return self._merge_in_strips(levels, up2, up1)
        d1, d2, d3 = levels
        u2 = self.up2(torch.cat([d2, self._up(d3, d2)], dim=1))  # skip first, then upsampled
        u1 = self.up1(torch.cat([d1, self._up(u2, d1)], dim=1))
        return self.classifier(u1)

    def _down(self, x: Tensor) -> List[Tensor]:
        """The U-Net's three levels on the way down (full, 1/2 and 1/4 resolution)."""
        d1 = self.down1(x)
        d2 = self.down2(self.maxpool(d1))
        return [d1, d2, self.down3(self.maxpool(d2))]

    def _convolutions_as_built(self) -> bool:
        """Whether ``up2``, ``up1`` and ``classifier`` still hold the 3x3 zero-padded
        convolutions that the strips assume (a user may have swapped a layer)."""
        convs = list(self.up2)[0::3] + list(self.up1)[0::3] + list(self.classifier)
        strides = [1] * (len(convs) - 1) + [2]
        return len(self.classifier) == 1 and all(_is_3x3(conv, stride) for conv, stride in zip(convs, strides))

    def _merge_in_strips(
        self, levels: List[Tensor], up2: List[Tuple[Tensor, Tensor]], up1: List[Tuple[Tensor, Tensor]]
    ) -> Tensor:
        """Inference: the U-Net's way up strip by strip of rows, with the folded layers
        ``up2`` and ``up1``; ``levels`` (from :meth:`_down`) is emptied as they are used,
        so that each level is freed once merged.

        On the whole map, the concatenation, the upsampled map and the layers of ``up1``
        take seven maps of ``width`` channels at full resolution (900 bytes per pixel at
        width 32), those of ``up2`` six of twice the width at half resolution. A strip of
        about :data:`STRIP_PIXELS` pixels holds them for a few rows only. Each strip
        reads a margin of rows (one per 3x3 convolution), so it computes the same
        function as the whole map, up to float rounding.
        """
        d3, d2 = levels.pop(), levels.pop()
        u2 = _merge_level_in_strips(d2, d3, up2)
        del d2, d3  # the last references: the list gave them up
        return self._top_in_strips(levels.pop(), u2, up1)

    def _top_in_strips(self, d1: Tensor, u2: Tensor, up1: List[Tuple[Tensor, Tensor]]) -> Tensor:
        """``classifier(up1([d1, up(u2)]))`` strip by strip of output rows; output row
        ``o`` of the stride-2 classifier is centred on row ``2 o`` of its input."""
        conv = cast(nn.Conv2d, self.classifier[0])
        height, width = d1.shape[-2:]
        out = _empty_map(d1, conv.out_channels, (height - 1) // 2 + 1, (width - 1) // 2 + 1)
        step = max(1, STRIP_PIXELS // (2 * width))  # output rows per strip
        for start in range(0, out.shape[-2], step):
            rows = _RowSpan(start, min(out.shape[-2], start + step), out.shape[-2])
            source = _RowSpan(2 * rows.start - 2, 2 * rows.end, height).clipped()  # from an even row
            u1 = _merged_rows(d1, u2, up1, source)
            out[:, :, rows.start : rows.end] = _conv_rows(u1, source, conv.weight, conv.bias, 2, rows)
        return out


class _RowSpan(NamedTuple):
    """Rows ``start:end`` of a map ``height`` rows tall (possibly reaching past its edges)."""

    start: int
    end: int
    height: int

    def clipped(self) -> _RowSpan:
        return _RowSpan(max(0, self.start), min(self.height, self.end), self.height)

    def widened(self, margin: int) -> _RowSpan:
        """The rows within ``margin`` of these, inside the map."""
        return _RowSpan(self.start - margin, self.end + margin, self.height).clipped()


def _merge_level_in_strips(skip: Tensor, low: Tensor, layers: List[Tuple[Tensor, Tensor]]) -> Tensor:
    """``layers([skip, up(low)])`` on the whole map, computed strip by strip of rows."""
    height, width = skip.shape[-2:]
    out = _empty_map(skip, layers[-1][0].shape[0], height, width)
    step = max(1, STRIP_PIXELS // width)
    for start in range(0, height, step):
        rows = _RowSpan(start, min(height, start + step), height)
        out[:, :, rows.start : rows.end] = _merged_rows(skip, low, layers, rows)
    return out


def _merged_rows(skip: Tensor, low: Tensor, layers: List[Tuple[Tensor, Tensor]], rows: _RowSpan) -> Tensor:
    """Rows ``rows`` of ``layers([skip, up(low)])``: 3x3 convolutions ``(weight, bias)``,
    each followed by a ReLU, on the skip connection and the upsampled lower level."""
    spans = [rows.widened(len(layers) - i) for i in range(len(layers) + 1)]  # input rows of every layer
    first = spans[0]
    x = torch.cat([skip[:, :, first.start : first.end], _upsampled_rows(low, first, skip.shape[-1])], dim=1)
    for (weight, bias), source, target in zip(layers, spans, spans[1:]):
        x = F.relu_(_conv_rows(x, source, weight, bias, 1, target))
    return x


def _conv_rows(
    x: Tensor, source: _RowSpan, weight: Tensor, bias: Optional[Tensor], stride: int, target: _RowSpan
) -> Tensor:
    """Rows ``target`` of a 3x3 convolution (padding 1, ``stride``) of a map of which
    ``x`` holds rows ``source`` (each target row's three input rows, where the map has
    them; ``source.start`` a multiple of ``stride``).

    The convolution pads the strip itself with a zero row above and below: right at
    the map's edges, where the whole map's convolution pads too; elsewhere only rows
    outside ``target`` see the padding, and they are dropped.
    """
    out = F.conv2d(x, weight, bias, stride=stride, padding=1)
    first = target.start - source.start // stride
    return out[:, :, first : first + target.end - target.start]


def _upsampled_rows(x: Tensor, rows: _RowSpan, width: int) -> Tensor:
    """Rows ``rows`` of ``x`` resized to ``rows.height x width`` (bilinear, corners aligned).

    Height first: each output row mixes the two source rows it lies between, with
    the weights of PyTorch's ``upsample_bilinear2d`` (computed, as there, in float32
    for half-precision maps); then the width, by that function itself (the height
    unchanged, so it only resizes the rows). The same function as resizing both at
    once up to float rounding, at half the width for the first step.
    """
    in_height = x.shape[-2]
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    last = torch.tensor(in_height - 1, dtype=opmath, device=x.device)
    scale = last / (rows.height - 1) if rows.height > 1 else last * 0
    position = torch.arange(rows.start, rows.end, dtype=opmath, device=x.device) * scale
    below = position.long().clamp_(max=in_height - 1)
    above = (below + 1).clamp_(max=in_height - 1)
    weight_above = (position - below).view(-1, 1, 1)
    source = x.permute(0, 2, 3, 1)  # rows outermost: contiguous for channels-last maps
    mixed = source.index_select(1, below).to(opmath).mul_(1 - weight_above)
    mixed.add_(source.index_select(1, above).to(opmath).mul_(weight_above))
    tall = mixed.to(x.dtype).permute(0, 3, 1, 2)
    return F.interpolate(tall, size=(rows.end - rows.start, width), mode="bilinear", align_corners=True)


def _is_3x3(conv: nn.Module, stride: int) -> bool:
    """A plain 3x3 convolution with zero padding 1 and the given stride."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (stride, stride)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def _empty_map(like: Tensor, channels: int, height: int, width: int) -> Tensor:
    """An uninitialised ``(B, channels, height, width)`` map in ``like``'s dtype, device
    and memory format (channels last or not)."""
    channels_last = like.is_contiguous(memory_format=torch.channels_last)
    return torch.empty(
        (like.shape[0], channels, height, width),
        dtype=like.dtype,
        device=like.device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )
