"""detectron2 backend of the detection tasks: the authors' networks and preprocessing.

Used when a task is built with ``backend="detectron2"`` (CLI: ``--backend detectron2``).
The networks are detectron2 model-zoo ``COCO-Detection/faster_rcnn_R_50_FPN_3x`` and
``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x`` (weights: the zoo's ``.pkl``), fed
BGR images in 0..255 minus ``MODEL.PIXEL_MEAN`` (``PIXEL_STD`` is 1), padded to a
multiple of 32 by edge replication as in the authors' evaluation; the perceptual loss
uses the FPN outputs ``p2 .. p6``. Predicted classes (contiguous 0..79) are mapped back
to COCO category ids.

detectron2 cannot be installed from PyPI; everything here imports it lazily and
:func:`require_detectron2` explains what to do when it is missing.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .features import BGRPixelMean, FrozenFeatureExtractor
from .weights import DEFAULT_WEIGHTS, TaskWeightsUnavailableError, is_random

__all__ = [
    "DETECTRON2_CONFIGS",
    "build_detectron2_model",
    "detectron2_detect",
    "detectron2_feature_extractor",
    "require_detectron2",
]

logger = logging.getLogger(__name__)

#: model-zoo configuration of each task (the authors use the 3x schedule models)
DETECTRON2_CONFIGS = {
    "det": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
    "seg": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
}

_INSTALL_HINT = (
    "backend 'detectron2' needs detectron2, which is not installed (it is not on PyPI): "
    "install it following https://detectron2.readthedocs.io/en/latest/tutorials/install.html "
    "(e.g. pip install 'git+https://github.com/facebookresearch/detectron2.git'), or use the "
    "default torchvision backend (--backend torchvision)"
)


def require_detectron2() -> Any:
    """Import detectron2, or raise an ImportError that says how to get it."""
    try:
        import detectron2  # noqa: F401
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return detectron2


def build_detectron2_model(task: str, weights: Any, short_edge: int, max_size: Optional[int]) -> nn.Module:
    """Build the model-zoo network of a task and load its weights.

    Args:
        task: ``"det"`` or ``"seg"``.
        weights: ``"default"`` (the model zoo's ``.pkl``, downloaded to detectron2's
            cache), a path to a ``.pkl``/``.pth`` checkpoint, or ``"random"``.
        short_edge: ``INPUT.MIN_SIZE_TEST``.
        max_size: ``INPUT.MAX_SIZE_TEST``.
    """
    require_detectron2()
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    config_name = DETECTRON2_CONFIGS[task]
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config_name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TEST = short_edge
    cfg.INPUT.MAX_SIZE_TEST = max_size or 1333
    model = build_model(cfg)
    if is_random(weights):
        return model.eval()
    source = model_zoo.get_checkpoint_url(config_name) if weights == DEFAULT_WEIGHTS else str(weights)
    try:
        DetectionCheckpointer(model).load(source)
    except OSError as err:
        filename = source.rsplit("/", 1)[-1]
        raise TaskWeightsUnavailableError(
            f"detectron2 {config_name} weights", filename, source, None, str(err)
        ) from err
    return model.eval()


def detectron2_feature_extractor(model: Any) -> FrozenFeatureExtractor:
    """FPN features ``p2 .. p6`` of a detectron2 R-CNN on BGR, mean-subtracted input."""
    shapes = model.backbone.output_shape()
    names = ("p2", "p3", "p4", "p5", "p6")
    return FrozenFeatureExtractor(
        BGRPixelMean(model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist()),
        model.backbone,
        names=names,
        strides=tuple(shapes[n].stride for n in names),
        channels=tuple(shapes[n].channels for n in names),
    ).to(model.pixel_mean.device)


def _contiguous_to_coco_ids() -> List[int]:
    from detectron2.data import MetadataCatalog

    mapping = MetadataCatalog.get("coco_2017_val").thing_dataset_id_to_contiguous_id
    inverse = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
    return [inverse[i] for i in range(len(inverse))]


@torch.no_grad()
def detectron2_detect(model: Any, x: Tensor, original_size: Sequence[int]) -> Dict[str, Tensor]:
    """Detections of a detectron2 R-CNN on one image in [0, 1], at ``original_size``.

    Returns the same keys as the torchvision path: ``boxes`` (xyxy), ``scores``,
    ``labels`` (COCO category ids) and, with masks, ``masks`` (N, 1, H0, W0) in {0, 1}.
    """
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import ImageList

    x = x.to(model.pixel_mean.device)
    height, width = int(x.shape[-2]), int(x.shape[-1])
    pixels = (x.flip(1) * 255.0 - model.pixel_mean) / model.pixel_std
    div = int(model.backbone.size_divisibility) or 1
    pad_h, pad_w = (-height) % div, (-width) % div
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h), mode="replicate")
    images = ImageList(pixels, [(height, width)])
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    results, _ = model.roi_heads(images, features, proposals, None)
    instances = detector_postprocess(results[0], int(original_size[0]), int(original_size[1]))
    coco_ids = torch.tensor(_contiguous_to_coco_ids(), device=instances.pred_classes.device)
    out = {
        "boxes": instances.pred_boxes.tensor,
        "scores": instances.scores,
        "labels": coco_ids[instances.pred_classes],
    }
    if instances.has("pred_masks"):
        out["masks"] = instances.pred_masks[:, None].float()
    return out
