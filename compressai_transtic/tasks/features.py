"""Frozen feature extractors of recognition networks (inputs of the perceptual losses)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "DETECTRON2_PIXEL_MEAN_BGR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BGRPixelMean",
    "FPNFromRes2",
    "FrozenFeatureExtractor",
    "ImageNetNormalize",
    "ResNetStages",
    "freeze",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: detectron2's PIXEL_MEAN for its ImageNet-pretrained (MSRA) R50 models, BGR, 0..255
DETECTRON2_PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter and switch to eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class ImageNetNormalize(nn.Module):
    """RGB in [0, 1] -> ``(x - mean) / std`` with ImageNet statistics (torchvision models)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    mean: Tensor
    std: Tensor

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class BGRPixelMean(nn.Module):
    """RGB in [0, 1] -> BGR in [0, 255] minus detectron2's pixel mean (no std), as the authors."""

    def __init__(
        self,
        pixel_mean_bgr: Sequence[float] = DETECTRON2_PIXEL_MEAN_BGR,
        pixel_std_bgr: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(pixel_mean_bgr, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(pixel_std_bgr, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    mean: Tensor
    std: Tensor

    def forward(self, x: Tensor) -> Tensor:
        return (x.flip(1) * 255.0 - self.mean) / self.std


class ResNetStages(nn.Module):
    """Runs a torchvision ResNet up to ``layer4`` and returns the outputs of layer1..layer4."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.resnet = resnet

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        r: Any = self.resnet
        return self.from_res2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))

    def from_res2(self, res2: Tensor) -> Dict[str, Tensor]:
        """The outputs of layer1..layer4 when layer1's output (``res2``) is given."""
        out: Dict[str, Tensor] = OrderedDict(layer1=res2)
        x = res2
        for name in ("layer2", "layer3", "layer4"):
            x = getattr(self.resnet, name)(x)
            out[name] = x
        return out


class FPNFromRes2(nn.Module):
    """A torchvision ResNet-FPN backbone run from its body's ``layer1`` output: layer2..4,
    then the FPN; the output is the backbone's (``"0"`` .. ``"3"``, ``"pool"``)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, res2: Tensor) -> Dict[str, Tensor]:
        backbone: Any = self.backbone
        levels = [res2]
        for name in ("layer2", "layer3", "layer4"):
            levels.append(getattr(backbone.body, name)(levels[-1]))
        return backbone.fpn(OrderedDict((str(i), t) for i, t in enumerate(levels)))


class FrozenFeatureExtractor(nn.Module):
    """Images in [0, 1] -> named feature maps of a frozen recognition network.

    The wrapped network's parameters never require gradients and the module stays in
    eval mode even when a parent calls ``.train()`` (batch-norm statistics are never
    updated); gradients still flow to the input, which is what the perceptual losses
    differentiate.

    Args:
        preprocess: input normalisation of the network (e.g. :class:`ImageNetNormalize`).
        body: module mapping the normalised input to a mapping of feature maps.
        names: the output names, in order (e.g. ``p2 .. p6``).
        source_keys: the keys of ``body``'s output for each name (default: ``names``).
        strides: stride of each feature map w.r.t. the input.
        channels: channels of each feature map.
        tail: optional module mapping the network's ``res2`` features (the output of
            ResNet's layer1) to ``body``'s output: what channel-selection codecs feed
            (:meth:`from_res2`).
    """

    def __init__(
        self,
        preprocess: nn.Module,
        body: nn.Module,
        names: Sequence[str],
        strides: Sequence[int],
        channels: Sequence[int],
        source_keys: Sequence[str] = (),
        tail: Optional[Callable[[Tensor], Mapping[str, Tensor]]] = None,
    ) -> None:
        super().__init__()
        self.tail = tail
        if not (len(names) == len(strides) == len(channels)):
            raise ValueError("names, strides and channels must have the same length")
        self.preprocess = preprocess
        self.body = body
        self.names: Tuple[str, ...] = tuple(names)
        self.source_keys: Tuple[str, ...] = tuple(source_keys) if source_keys else self.names
        self.strides: Tuple[int, ...] = tuple(strides)
        self.channels: Tuple[int, ...] = tuple(channels)
        freeze(self)

    def train(self, mode: bool = True) -> "FrozenFeatureExtractor":
        """Always eval: the recognition network is frozen."""
        return super().train(False)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        return self._named(self.body(self.preprocess(x)))

    def from_res2(self, res2: Tensor) -> Dict[str, Tensor]:
        """The named feature maps when the network's ``res2`` features are given instead
        of an image (channel-selection codecs make them).

        Raises:
            ValueError: this network has no such entry point.
        """
        if self.tail is None:
            raise ValueError("this recognition network cannot start from res2 features (no tail)")
        return self._named(self.tail(res2))

    def _named(self, feats: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        return OrderedDict((name, feats[key]) for name, key in zip(self.names, self.source_keys))
