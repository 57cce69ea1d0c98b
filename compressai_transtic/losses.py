"""Perceptual rate-distortion losses of TransTIC, registered in ``compressai.registry``.

Importing this module registers (idempotently) three criteria in
``compressai.registry.CRITERIONS``:

- ``transtic-cls-perceptual`` (:class:`ClassificationPerceptualLoss`):
  ``d = mean over l = 1..4 of MSE(F_l(x), F_l(clamp(x_hat, 0, 1)))`` with ``F_l`` the
  output of ResNet50's ``layer{l}`` on ImageNet-normalised inputs;
  ``loss = 1000 * lambda * d + bpp``.
- ``transtic-det-perceptual`` / ``transtic-seg-perceptual``
  (:class:`DetectionPerceptualLoss` / :class:`SegmentationPerceptualLoss`):
  ``d = 0.2 * sum over P2..P6 of MSE(P_l(x), P_l(clamp(x_hat, 0, 1)))`` on the FPN of
  Faster R-CNN / Mask R-CNN; ``loss = d + lambda * bpp``.

``bpp = -sum(log2 likelihoods) / (B * H * W)`` over the input's pixels. Each MSE is the
mean over all elements of a feature map; when the codec output holds a
``distortion_weight`` map (the ROI codec in training), the squared errors are weighted
by it first; when it holds ``features`` (a channel-selection codec), the network runs
from those instead of from ``x_hat``. The recognition network is frozen and in eval
mode; the loss is differentiable w.r.t. ``x_hat`` and the likelihoods. The target's
features are computed without gradient.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.registry import CRITERIONS, register_criterion
from torch import Tensor

__all__ = [
    "CRITERION_NAMES",
    "ClassificationPerceptualLoss",
    "DetectionPerceptualLoss",
    "SegmentationPerceptualLoss",
    "TaskPerceptualLoss",
    "bpp_from_likelihoods",
    "likelihood_bits",
    "register_criteria",
]


def likelihood_bits(likelihoods: Mapping[str, Tensor]) -> Tensor:
    """Bits each image costs under the entropy models, ``-sum(log2 p)`` over all
    likelihood tensors: shape ``(B,)``.

    Args:
        likelihoods: the ``"likelihoods"`` dict of a codec's forward output.
    """
    if not likelihoods:
        raise ValueError("the codec output has no likelihoods")
    return -torch.stack([torch.log2(lik).flatten(1).sum(1) for lik in likelihoods.values()]).sum(0)


def bpp_from_likelihoods(likelihoods: Mapping[str, Tensor], num_pixels: int) -> Tensor:
    """Rate estimate ``-sum(log2 p) / num_pixels`` over all likelihood tensors.

    Args:
        likelihoods: the ``"likelihoods"`` dict of a codec's forward output.
        num_pixels: ``B * H * W`` of the input batch.
    """
    return likelihood_bits(likelihoods).sum() / num_pixels


def _weighted_mse(a: Tensor, b: Tensor, weight: Tensor) -> Tensor:
    w = F.interpolate(weight.to(a.dtype), size=a.shape[-2:], mode="bilinear", align_corners=False)
    return (w * (a - b) ** 2).mean()


class TaskPerceptualLoss(nn.Module):
    """Base of the perceptual losses: rate term plus a feature distortion.

    Build one with ``Task.criterion(lmbda=..., quality=...)`` (it supplies the task's
    feature extractor and the paper's lambda for a quality), or directly from a
    feature extractor, e.g. ``CRITERIONS["transtic-cls-perceptual"](lmbda=0.0018,
    features=task.feature_extractor())``.

    Args:
        lmbda: the trade-off weight.
        features: a frozen feature extractor (from ``Task.feature_extractor()``).
    """

    def __init__(self, lmbda: float, features: nn.Module) -> None:
        super().__init__()
        if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not math.isfinite(lmbda) or lmbda < 0:
            raise ValueError(f"{type(self).__name__}: lmbda must be a finite number >= 0, got {lmbda!r}")
        self.lmbda = float(lmbda)
        self.features = features
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.features.eval()

    def train(self, mode: bool = True) -> "TaskPerceptualLoss":
        """Switch the module's mode; the recognition network always stays in eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def feature_mse(
        self, x_hat: Tensor, target: Tensor, weight: Optional[Tensor] = None, res2: Optional[Tensor] = None
    ) -> Dict[str, Tensor]:
        """Per-level MSE between the features of ``clamp(x_hat)`` and of ``target``.

        Args:
            weight: optional ``(B, 1, h, w)`` weights over the image (an ROI codec's
                ``distortion_weight``), resized to each feature map (bilinear): the MSE
                becomes the mean of the weighted squared errors.
            res2: features a channel-selection codec made for the network (its
                ``layer1`` output): the network then runs from them instead of ``x_hat``.
        """
        with torch.no_grad():
            ref = self.features(target)
        if res2 is None:
            out = self.features(x_hat.clamp(0.0, 1.0))
        else:
            rows, cols = next(iter(ref.values())).shape[-2:]
            extractor: Any = self.features  # a FrozenFeatureExtractor
            out = extractor.from_res2(res2[..., :rows, :cols])
        if weight is None:
            return {name: F.mse_loss(out[name], ref[name]) for name in ref}
        return {name: _weighted_mse(out[name], ref[name], weight) for name in ref}

    def distortion(self, mse: Dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def combine(self, distortion: Tensor, bpp: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, output: Mapping[str, Any], target: Tensor) -> Dict[str, Tensor]:
        """Loss of a codec output against its input.

        Args:
            output: the codec's forward dict (``x_hat``, ``likelihoods``).
            target: the input batch in [0, 1].

        Returns:
            ``loss``, ``bpp_loss``, ``task_loss`` (the perceptual distortion ``d``), one
            ``task_loss_<level>`` per feature level, and ``mse_loss`` (pixel MSE,
            detached, for monitoring).
        """
        n, _, h, w = target.shape
        bpp = bpp_from_likelihoods(output["likelihoods"], n * h * w)
        res2 = output.get("features", {}).get("res2")
        mse = self.feature_mse(output["x_hat"], target, output.get("distortion_weight"), res2)
        d = self.distortion(mse)
        out = {"loss": self.combine(d, bpp), "bpp_loss": bpp, "task_loss": d}
        out.update({f"task_loss_{name}": v.detach() for name, v in mse.items()})
        out["mse_loss"] = F.mse_loss(output["x_hat"].detach(), target)
        return out

    def extra_repr(self) -> str:
        return f"lmbda={self.lmbda}"


class ClassificationPerceptualLoss(TaskPerceptualLoss):
    """``1000 * lambda * mean_l MSE(F_l(x), F_l(x_hat)) + bpp`` on ResNet50 layer1..4.

    See :class:`TaskPerceptualLoss` for the arguments and
    :class:`compressai_transtic.tasks.classification.ClassificationTask` for how the
    default lambdas were derived.
    """

    def distortion(self, mse: Dict[str, Tensor]) -> Tensor:
        return torch.stack(list(mse.values())).mean()

    def combine(self, distortion: Tensor, bpp: Tensor) -> Tensor:
        return 1000.0 * self.lmbda * distortion + bpp


class DetectionPerceptualLoss(TaskPerceptualLoss):
    """``0.2 * sum_l MSE(P_l(x), P_l(x_hat)) + lambda * bpp`` on Faster R-CNN's P2..P6.

    See :class:`TaskPerceptualLoss` for the arguments.
    """

    def distortion(self, mse: Dict[str, Tensor]) -> Tensor:
        return 0.2 * torch.stack(list(mse.values())).sum()

    def combine(self, distortion: Tensor, bpp: Tensor) -> Tensor:
        return distortion + self.lmbda * bpp


class SegmentationPerceptualLoss(DetectionPerceptualLoss):
    """As :class:`DetectionPerceptualLoss` on Mask R-CNN's P2..P6."""


#: registry name -> class
CRITERION_NAMES = {
    "transtic-cls-perceptual": ClassificationPerceptualLoss,
    "transtic-det-perceptual": DetectionPerceptualLoss,
    "transtic-seg-perceptual": SegmentationPerceptualLoss,
}


def register_criteria() -> None:
    """Register the criteria in ``compressai.registry`` (idempotent).

    Re-registering the same class (or a reloaded copy of this module) is a no-op
    replacement; a name taken by another class raises.
    """
    for name, cls in CRITERION_NAMES.items():
        existing = CRITERIONS.get(name)
        if existing is not None and existing is not cls:
            same = (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
            if not same:
                raise RuntimeError(
                    f"the criterion name {name!r} is already registered in compressai.registry by "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
        register_criterion(name)(cls)


register_criteria()
