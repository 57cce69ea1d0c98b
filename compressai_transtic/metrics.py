"""Metrics: PSNR, MS-SSIM, top-k accuracy and COCO average precision (pycocotools).

The functions here return fractions (pycocotools' native scale, e.g. AP = 1.0 for
perfect detections); the evaluator reports percentages.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "COCO_STAT_NAMES",
    "MS_SSIM_MAX",
    "MS_SSIM_MIN_SIDE",
    "coco_evaluate",
    "fidelity_metrics",
    "ms_ssim_size_problem",
    "psnr",
    "rle_encode",
    "topk_accuracy",
]

logger = logging.getLogger(__name__)

#: names of the first six entries of ``COCOeval.stats``
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")

Label = Union[int, Sequence[int]]


def psnr(a: "torch.Tensor", b: "torch.Tensor", data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two tensors of the same shape.

    Args:
        a: first tensor.
        b: second tensor.
        data_range: peak value (1.0 for images in [0, 1]).

    Returns:
        ``10 log10(data_range^2 / MSE)``; ``inf`` for identical tensors.
    """
    if a.shape != b.shape:
        raise ValueError(f"PSNR of tensors of different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    mse = float(((a.double() - b.double()) ** 2).mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


#: MS-SSIM needs both sides above this many pixels: pytorch_msssim (which CompressAI's
#: eval_model calls) refuses a shorter side of ``(11 - 1) * 2**4 = 160`` pixels or less
#: for its 5 scales (4 halvings) of an 11x11 window; 161 is the smallest side it takes
MS_SSIM_MIN_SIDE = 160
#: the largest MS-SSIM accepted in stored records and predictions: float32 arithmetic
#: gives values a few ulps above 1 for images almost identical to their originals
MS_SSIM_MAX = 1.0 + 1e-5


def ms_ssim_size_problem(height: int, width: int) -> Optional[str]:
    """Why an image of this size has no MS-SSIM, or ``None`` when it has one."""
    if min(height, width) > MS_SSIM_MIN_SIDE:
        return None
    return (
        f"at {width}x{height} pixels its shorter side is {min(height, width)}; MS-SSIM (5 scales of an "
        f"11x11 window) needs {MS_SSIM_MIN_SIDE + 1} pixels or more on each side"
    )


def fidelity_metrics(original: "torch.Tensor", decoded: "torch.Tensor") -> Dict[str, Optional[float]]:
    """PSNR (dB) and MS-SSIM of two (1, 3, H, W) images in [0, 1], on their 8-bit values.

    MS-SSIM is ``None`` for images with a side of :data:`MS_SSIM_MIN_SIDE` pixels or
    less, which five scales cannot analyse (:func:`ms_ssim_size_problem`).
    """
    from pytorch_msssim import ms_ssim  # imported on use: only the fidelity metrics need it

    if original.shape != decoded.shape:
        raise ValueError(f"images of different shapes {tuple(original.shape)} and {tuple(decoded.shape)}")
    a = (original.double() * 255).clamp(0, 255).round()
    b = (decoded.double() * 255).clamp(0, 255).round()
    mse = float(((a - b) ** 2).mean())
    psnr = math.inf if mse == 0 else 20 * math.log10(255.0) - 10 * math.log10(mse)
    msssim = None
    if ms_ssim_size_problem(*a.shape[-2:]) is None:
        msssim = float(ms_ssim(a.float(), b.float(), data_range=255))
    return {"psnr-rgb": psnr, "ms-ssim-rgb": msssim}


def _accepted(label: Label) -> set:
    if isinstance(label, int):
        return {label}
    return {int(v) for v in label}


def topk_accuracy(ranked: Sequence[Sequence[int]], labels: Sequence[Label], k: int) -> float:
    """Fraction of samples whose label is among the first ``k`` ranked predictions.

    Args:
        ranked: per sample, class indices sorted by decreasing score (at least ``k``).
        labels: per sample, the class index, or a set of accepted class indices (a
            sample counts as correct if any accepted class is in the top ``k``).
        k: 1 for top-1, 5 for top-5.
    """
    if len(ranked) != len(labels):
        raise ValueError(f"{len(ranked)} predictions for {len(labels)} labels")
    if not ranked:
        raise ValueError("top-k accuracy of an empty set")
    correct = 0
    for preds, label in zip(ranked, labels):
        if len(preds) < k:
            raise ValueError(f"top-{k} accuracy needs {k} ranked predictions per sample, got {len(preds)}")
        correct += bool(_accepted(label) & {int(p) for p in preds[:k]})
    return correct / len(ranked)


def rle_encode(mask: np.ndarray) -> Dict[str, Any]:
    """COCO run-length encoding of a binary (H, W) mask, JSON-serialisable."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _empty_results(coco_gt: Any) -> Any:
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def coco_evaluate(
    coco_gt: Any,
    detections: Iterable[Mapping[str, Any]],
    iou_type: str = "bbox",
    img_ids: Optional[Sequence[int]] = None,
) -> Dict[str, float]:
    """COCO average precision of detections with pycocotools' ``COCOeval``.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` ground-truth object.
        detections: COCO results-format dicts (``image_id``, ``category_id``, ``score``,
            ``bbox`` as ``[x, y, w, h]`` and, for ``"segm"``, an RLE ``segmentation``).
        iou_type: ``"bbox"`` (box AP) or ``"segm"`` (mask AP).
        img_ids: restrict the evaluation to these images (e.g. the ones that were
            processed); default: all images of ``coco_gt``.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` as fractions; ``nan`` where the
        ground truth has no object of that size range (pycocotools' -1).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    dets: List[Dict[str, Any]] = []
    for det in detections:
        d = dict(det)
        if iou_type == "segm":
            if "segmentation" not in d:
                raise ValueError("mask AP needs a 'segmentation' (RLE) in every detection")
            d.pop("bbox", None)  # let pycocotools derive area and box from the mask
        else:
            d.pop("segmentation", None)
            d["bbox"] = [float(v) for v in d["bbox"]]
        dets.append(d)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):  # pycocotools prints its progress
        coco_dt = coco_gt.loadRes(dets) if dets else _empty_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in img_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("pycocotools (%s):\n%s", iou_type, buffer.getvalue())
    return {
        name: (float(value) if value >= 0 else math.nan)
        for name, value in zip(COCO_STAT_NAMES, evaluator.stats[: len(COCO_STAT_NAMES)])
    }
