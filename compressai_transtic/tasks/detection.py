"""Object detection (Faster R-CNN R50-FPN) and instance segmentation (Mask R-CNN R50-FPN)."""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.misc import FrozenBatchNorm2d

from ..jsonvalues import is_finite_number, is_integer
from ..metrics import coco_evaluate, rle_encode
from ..protocol import CodingProtocol, detection_protocol
from .base import DatasetKind, Task
from .detectron2_backend import build_detectron2_model, detectron2_detect, detectron2_feature_extractor
from .features import FPNFromRes2, FrozenFeatureExtractor, ImageNetNormalize
from .weights import TorchvisionWeights, WeightsOption, resolve_torchvision_state_dict

__all__ = [
    "FASTER_RCNN_WEIGHTS",
    "FPN_LEVELS",
    "MASK_RCNN_WEIGHTS",
    "DetectionTask",
    "SegmentationTask",
]

logger = logging.getLogger(__name__)

#: torchvision's COCO Faster R-CNN R50-FPN weights (box AP 37.0 on val2017)
FASTER_RCNN_WEIGHTS = TorchvisionWeights(
    "Faster R-CNN R50-FPN COCO detector (torchvision COCO_V1)",
    "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
)
#: torchvision's COCO Mask R-CNN R50-FPN weights (box AP 37.9, mask AP 34.6 on val2017)
MASK_RCNN_WEIGHTS = TorchvisionWeights(
    "Mask R-CNN R50-FPN COCO instance segmenter (torchvision COCO_V1)",
    "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
)
#: FPN levels of the perceptual loss: name, torchvision key, stride
FPN_LEVELS = (("p2", "0", 4), ("p3", "1", 8), ("p4", "2", 16), ("p5", "3", 32), ("p6", "pool", 64))

_COCO_TRAINING_DEFAULTS = {
    "patch_size": 256,
    "batch_size": 8,
    "epochs": 40,
    "samples_per_epoch": None,  # the authors' COCO training list, whole
    "lr": 1e-4,
    "lr_milestones": (),  # the authors build MultiStepLR(milestones=[]): a constant rate
    "clip_max_norm": 1.0,
    "crop": "random",
}


class DetectionTask(Task):
    """COCO object detection by Faster R-CNN R50-FPN.

    Backends: ``torchvision`` (default; its COCO_V1 weights, RGB input normalised with
    ImageNet mean/std) or ``detectron2`` (the authors' setup: model-zoo
    ``faster_rcnn_R_50_FPN_3x`` weights, BGR 0..255 input minus the pixel mean).

    Perceptual loss (registered as ``transtic-det-perceptual``):
    ``d = 0.2 * sum over P2..P6 of MSE(P_l(x), P_l(x_hat))`` on the FPN outputs (strides
    4..64, 256 channels; P6 is the max-pool of P5), ``x_hat`` clamped to [0, 1] as in the
    authors' code; ``loss = d + lambda * bpp`` with the paper's lambdas
    {1: 2.0, 2: 1.0, 3: 0.5, 4: 0.2}.

    Test protocol: shortest edge ``short_edge`` (max ``max_size``), coded at the next
    multiple of ``code_multiple``, resized back, detections reported at the original
    size. Metrics: COCO box AP, AP50, AP75, APs, APm, APl (%). The network's class
    labels are COCO category ids (torchvision) or mapped to them (detectron2), so the
    annotation file must use COCO's category ids.

    Args:
        short_edge: shortest edge of the prepared image (800 in the paper).
        max_size: bound of its longest edge (1333).
        code_multiple: coding size multiple (256 in the paper).
        weights, backend, device, progress, seed: see :class:`~.base.Task`.
    """

    name = "det"
    title = "object detection (Faster R-CNN R50-FPN, COCO box AP)"
    metric_names: ClassVar[Tuple[str, ...]] = ("bbox-AP", "bbox-AP50", "bbox-AP75", "bbox-APs", "bbox-APm", "bbox-APl")
    primary_metric = "bbox-AP"
    default_lambdas = {1: 2.0, 2: 1.0, 3: 0.5, 4: 0.2}
    training_defaults = dict(_COCO_TRAINING_DEFAULTS)
    backends = ("torchvision", "detectron2")
    dataset_kind = DatasetKind.COCO
    criterion_name = "transtic-det-perceptual"
    #: torchvision weights of the network
    torchvision_weights = FASTER_RCNN_WEIGHTS
    #: whether the network predicts masks
    with_masks = False

    def __init__(
        self,
        weights: WeightsOption = "default",
        backend: str = "torchvision",
        device: Union[str, torch.device] = "cpu",
        progress: bool = True,
        seed: int = 0,
        short_edge: int = 800,
        max_size: Optional[int] = 1333,
        code_multiple: Optional[int] = 256,
    ) -> None:
        super().__init__(weights=weights, backend=backend, device=device, progress=progress, seed=seed)
        self.short_edge = int(short_edge)
        self.max_size = None if max_size is None else int(max_size)
        self.code_multiple = None if code_multiple is None else int(code_multiple)

    # ------------------------------------------------------------------ network
    def _build(self, weights: Any) -> nn.Module:
        if self.backend == "detectron2":
            return build_detectron2_model(self.name, weights, self.short_edge, self.max_size)
        # the structure of torchvision's pretrained detectors (frozen batch norm), also
        # for random initialisation, so that both load the same state dicts
        backbone = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=0
        )
        cls = MaskRCNN if self.with_masks else FasterRCNN
        net = cls(backbone, num_classes=91, min_size=self.short_edge, max_size=self.max_size or 1333)
        state_dict = resolve_torchvision_state_dict(self.torchvision_weights, weights, progress=self.progress)
        if state_dict is not None:
            net.load_state_dict(state_dict, strict=True)
        return net

    def feature_extractor(self, network: Optional[nn.Module] = None) -> FrozenFeatureExtractor:
        net: Any = self.network if network is None else network  # a torchvision or detectron2 R-CNN
        if self.backend == "detectron2":
            return detectron2_feature_extractor(net)
        return FrozenFeatureExtractor(
            ImageNetNormalize(net.transform.image_mean, net.transform.image_std),
            net.backbone,
            names=tuple(name for name, _, _ in FPN_LEVELS),
            source_keys=tuple(key for _, key, _ in FPN_LEVELS),
            strides=tuple(stride for _, _, stride in FPN_LEVELS),
            channels=(net.backbone.out_channels,) * len(FPN_LEVELS),
            tail=FPNFromRes2(net.backbone),
        ).to(next(net.parameters()).device)

    # ------------------------------------------------------------------ evaluation
    def protocol(self) -> CodingProtocol:
        return detection_protocol(self.short_edge, self.max_size, self.code_multiple)

    @torch.no_grad()
    def detect(self, x: Tensor, original_size: Sequence[int]) -> Dict[str, Tensor]:
        """Detections of the network on one image, in the coordinates of ``original_size``.

        The image is used at its size (it has already been resized by the protocol): it
        is normalised and padded to a multiple of 32, as torchvision's own transform
        does, without a second resize.

        Args:
            x: (1, 3, H, W) in [0, 1].
            original_size: (height, width) to report boxes and masks at.

        Returns:
            ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,) COCO category ids and,
            for segmentation, ``masks`` (N, 1, H0, W0) probabilities.
        """
        if self.backend == "detectron2":
            return detectron2_detect(self.network, x, original_size)
        net: Any = self.network
        x = x.to(next(net.parameters()).device)
        images = [net.transform.normalize(img) for img in x]
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch = net.transform.batch_images(images, size_divisible=net.transform.size_divisible)
        image_list = ImageList(batch, sizes)
        return self._heads(image_list, net.backbone(image_list.tensors), original_size)

    def _heads(
        self, image_list: Any, features: Mapping[str, Tensor], original_size: Sequence[int]
    ) -> Dict[str, Tensor]:
        """RPN, ROI heads and the rescaling to ``original_size`` of one image's features."""
        net: Any = self.network
        proposals, _ = net.rpn(image_list, features)
        detections, _ = net.roi_heads(features, proposals, image_list.image_sizes)
        detections = net.transform.postprocess(detections, image_list.image_sizes, [tuple(original_size)])
        return detections[0]

    @torch.no_grad()
    def detect_from_res2(self, res2: Tensor, size: Sequence[int], original_size: Sequence[int]) -> Dict[str, Tensor]:
        """:meth:`detect` when a channel-selection codec gives the backbone's ``res2``
        features ``(1, 256, ceil(H / 4), ceil(W / 4))`` of an image of ``size`` (H, W): they
        are zero-padded to the grid of the image padded to a multiple of 32 (an
        approximation: the network's own features of the padded border are not zero)
        and run through layer2..4, the FPN and the heads."""
        if self.backend == "detectron2":
            raise ValueError("detection from channel-selection features needs the torchvision backend")
        net: Any = self.network
        res2 = res2.to(next(net.parameters()).device)
        divisible = int(net.transform.size_divisible)
        padded = [math.ceil(int(s) / divisible) * divisible for s in size]
        res2 = F.pad(res2, (0, padded[1] // 4 - res2.shape[-1], 0, padded[0] // 4 - res2.shape[-2]))
        image_list = ImageList(res2.new_zeros(1, 3, *padded), [(int(size[0]), int(size[1]))])
        return self._heads(image_list, FPNFromRes2(net.backbone)(res2), original_size)

    def predict_from_features(self, res2: Tensor, size: Sequence[int], images: Sequence[Any]) -> List[Any]:
        return [
            self._records(self.detect_from_res2(res2[i : i + 1], size, (image.height, image.width)))
            for i, image in enumerate(images)
        ]

    @torch.no_grad()
    def predict(self, x: Tensor, image: Any) -> List[Dict[str, Any]]:
        """COCO results-format detections of one image (without ``image_id``)."""
        return self._records(self.detect(x, (image.height, image.width)))

    def _records(self, det: Mapping[str, Tensor]) -> List[Dict[str, Any]]:
        boxes = det["boxes"].cpu().double()
        scores = det["scores"].cpu().tolist()
        labels = det["labels"].cpu().tolist()
        masks = (det["masks"][:, 0] > 0.5).cpu().numpy() if self.with_masks else None
        out = []
        for i, (box, score, label) in enumerate(zip(boxes.tolist(), scores, labels)):
            x0, y0, x1, y1 = box
            record: Dict[str, Any] = {
                "category_id": int(label),
                "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                "score": round(float(score), 5),
            }
            if masks is not None:
                record["segmentation"] = rle_encode(masks[i])
            out.append(record)
        return out

    def prediction_problem(self, prediction: Any) -> Optional[str]:
        if not isinstance(prediction, list):
            return "not a list of detections"
        for i, det in enumerate(prediction):
            problem = self._detection_problem(det)
            if problem:
                return f"detection {i}: {problem}"
        return None

    def _detection_problem(self, det: Any) -> Optional[str]:
        if not isinstance(det, dict):
            return "not an object"
        if not is_integer(det.get("category_id")):
            return "'category_id' is not an integer"
        box = det.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)):
            return "'bbox' is not 4 finite numbers"
        if not is_finite_number(det.get("score")):
            return "'score' is not a finite number"
        rle = det.get("segmentation")
        if self.with_masks and not (
            isinstance(rle, dict)
            and isinstance(rle.get("counts"), str)
            and isinstance(rle.get("size"), list)
            and len(rle["size"]) == 2
            and all(is_integer(v) and v >= 0 for v in rle["size"])
        ):
            return "'segmentation' is not a run-length mask {'size': [h, w], 'counts': '...'}"
        return None

    def _detections(self, predictions: Mapping[Any, Any], dataset: Sequence[Any]) -> List[Dict[str, Any]]:
        dets = []
        for item in dataset:
            for det in predictions[item.image_id]:
                dets.append({"image_id": int(item.image_id), **det})
        return dets

    def _coco(self, dataset: Sequence[Any]) -> Any:
        coco = getattr(dataset, "coco", None)
        if coco is None:
            raise TypeError(f"task {self.name!r} is evaluated on a COCO-format dataset (CocoImages)")
        return coco

    def compute_metrics(self, predictions: Mapping[Any, Any], dataset: Sequence[Any]) -> Dict[str, float]:
        ids = [int(item.image_id) for item in dataset]
        stats = coco_evaluate(self._coco(dataset), self._detections(predictions, dataset), "bbox", img_ids=ids)
        return {f"bbox-{k}": 100.0 * v for k, v in stats.items()}


class SegmentationTask(DetectionTask):
    """COCO instance segmentation by Mask R-CNN R50-FPN.

    As :class:`DetectionTask` with Mask R-CNN (torchvision COCO_V1 weights, or
    detectron2's ``mask_rcnn_R_50_FPN_3x``); the loss (``transtic-seg-perceptual``) uses
    Mask R-CNN's FPN. Metrics: mask AP (``segm-*``, the paper's metric) and box AP
    (``bbox-*``) (%). Masks are pasted at the original image size and thresholded at 0.5.
    """

    name = "seg"
    title = "instance segmentation (Mask R-CNN R50-FPN, COCO mask AP)"
    metric_names = tuple(f"segm-{k}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")) + DetectionTask.metric_names
    primary_metric = "segm-AP"
    criterion_name = "transtic-seg-perceptual"
    torchvision_weights = MASK_RCNN_WEIGHTS
    with_masks = True

    def compute_metrics(self, predictions: Mapping[Any, Any], dataset: Sequence[Any]) -> Dict[str, float]:
        coco = self._coco(dataset)
        ids = [int(item.image_id) for item in dataset]
        dets = self._detections(predictions, dataset)
        segm = coco_evaluate(coco, dets, "segm", img_ids=ids)
        bbox = coco_evaluate(coco, dets, "bbox", img_ids=ids)
        out = {f"segm-{k}": 100.0 * v for k, v in segm.items()}
        out.update({f"bbox-{k}": 100.0 * v for k, v in bbox.items()})
        return out
