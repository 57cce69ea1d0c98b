"""Image classification with torchvision's ResNet50 (ImageNet top-1 / top-5)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models import resnet50

from ..console import shorten
from ..jsonvalues import is_integer
from ..metrics import topk_accuracy
from ..protocol import CodingProtocol, classification_protocol
from .base import DatasetKind, Task
from .features import FrozenFeatureExtractor, ImageNetNormalize, ResNetStages
from .weights import TorchvisionWeights, WeightsOption, resolve_torchvision_state_dict

__all__ = ["RESNET50_WEIGHTS", "ClassificationTask"]

#: torchvision's ResNet50 ImageNet weights "V1" (top-1 76.13), the paper's classifier
RESNET50_WEIGHTS = TorchvisionWeights(
    "ResNet50 ImageNet classifier (torchvision IMAGENET1K_V1)",
    "https://download.pytorch.org/models/resnet50-0676ba61.pth",
)


class ClassificationTask(Task):
    """ImageNet classification by ResNet50 (torchvision weights V1).

    Perceptual loss (registered as ``transtic-cls-perceptual``):
    ``d = mean over l = 1..4 of MSE(F_l(x), F_l(x_hat))`` with ``F_l`` the output of
    ``layer1 .. layer4`` on ImageNet-normalised inputs, ``x_hat`` clamped to [0, 1];
    ``loss = 1000 * lambda * d + bpp``.

    Default lambdas: the authors' release does not list the classification lambdas;
    their classification configuration sets ``VPT_lmbda: 0.0018`` next to
    ``quality_level: 1`` and ``lmbda: 0.0018``, i.e. quality 1 uses the base codec's
    lambda. We assume the same correspondence for qualities 2..4 (the base codec
    lambdas 0.0035, 0.0067, 0.013); this is an inference, not a published value: pass
    ``lmbda`` explicitly to use another.

    Test protocol: ``Resize(crop)`` + ``CenterCrop(crop)`` (256), the crop is coded and
    classified as is. Metrics: top-1 and top-5 accuracy (%).

    Args:
        crop: side of the coded crop (256 in the paper).
        weights, backend, device, progress, seed: see :class:`~.base.Task`.
    """

    name = "cls"
    title = "image classification (ResNet50, ImageNet top-1)"
    metric_names = ("top1", "top5")
    primary_metric = "top1"
    default_lambdas = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013}
    training_defaults = {
        "patch_size": 256,
        "batch_size": 16,
        "epochs": 400,
        "samples_per_epoch": 40000,  # the authors draw a 40k-image subset of ImageNet train per epoch
        "lr": 1e-4,
        "lr_milestones": (30, 60),
        "lr_gamma": 0.5,
        "clip_max_norm": 1.0,
        "crop": "center",
    }
    backends = ("torchvision",)
    dataset_kind = DatasetKind.CLASSIFICATION
    criterion_name = "transtic-cls-perceptual"

    def __init__(
        self,
        weights: WeightsOption = "default",
        backend: str = "torchvision",
        device: Union[str, torch.device] = "cpu",
        progress: bool = True,
        seed: int = 0,
        crop: int = 256,
    ) -> None:
        super().__init__(weights=weights, backend=backend, device=device, progress=progress, seed=seed)
        self.crop = int(crop)

    def _build(self, weights: Any) -> nn.Module:
        net = resnet50(weights=None)
        state_dict = resolve_torchvision_state_dict(RESNET50_WEIGHTS, weights, progress=self.progress)
        if state_dict is not None:
            net.load_state_dict(state_dict, strict=True)
        return net

    def feature_extractor(self, network: Optional[nn.Module] = None) -> FrozenFeatureExtractor:
        net = self.network if network is None else network
        stages = ResNetStages(net)
        return FrozenFeatureExtractor(
            ImageNetNormalize(),
            stages,
            names=("layer1", "layer2", "layer3", "layer4"),
            strides=(4, 8, 16, 32),
            channels=(256, 512, 1024, 2048),
            tail=stages.from_res2,
        ).to(next(net.parameters()).device)

    def protocol(self) -> CodingProtocol:
        return classification_protocol(self.crop)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Class scores of images in [0, 1] (ImageNet normalisation applied here)."""
        net = self.network
        normalize = ImageNetNormalize().to(x.device)
        return net(normalize(x.to(next(net.parameters()).device)))

    @torch.no_grad()
    def predict_from_features(self, res2: Tensor, size: Sequence[int], images: Sequence[Any]) -> List[Any]:
        """The five best classes when ResNet50's ``layer1`` output is given (a
        channel-selection codec's features): layer2..4, pooling and the classifier."""
        net: Any = self.network
        x = res2.to(next(net.parameters()).device)
        for name in ("layer2", "layer3", "layer4"):
            x = getattr(net, name)(x)
        logits = net.fc(torch.flatten(net.avgpool(x), 1))
        return [{"top5": [int(i) for i in row]} for row in logits.topk(5, dim=1).indices]

    @torch.no_grad()
    def predict(self, x: Tensor, image: Any) -> Dict[str, Any]:
        """The five best classes of one image: ``{"top5": [...]}``."""
        top5 = self.logits(x).topk(5, dim=1).indices[0]
        return {"top5": [int(i) for i in top5]}

    @torch.no_grad()
    def predict_batch(self, x: Tensor, images: Sequence[Any]) -> List[Dict[str, Any]]:
        """The five best classes of each image of a batch, in one pass of the network."""
        return [{"top5": [int(i) for i in row]} for row in self.logits(x).topk(5, dim=1).indices]

    def prediction_problem(self, prediction: Any) -> Optional[str]:
        top5 = prediction.get("top5") if isinstance(prediction, dict) else None
        if not isinstance(top5, list) or not 1 <= len(top5) <= 5:
            return "not {'top5': [up to 5 class indices]}"
        if not all(is_integer(c) and c >= 0 for c in top5):
            return f"'top5' is {shorten(str(top5), 60)}, not class indices"
        return None

    def compute_metrics(self, predictions: Mapping[Any, Any], dataset: Sequence[Any]) -> Dict[str, float]:
        ranked, labels = [], []
        for item in dataset:
            ranked.append(predictions[item.image_id]["top5"])
            labels.append(item.label)
        return {
            "top1": 100.0 * topk_accuracy(ranked, labels, 1),
            "top5": 100.0 * topk_accuracy(ranked, labels, 5),
        }
