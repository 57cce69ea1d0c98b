"""Known-answer tests of the metrics: PSNR, MS-SSIM's size limit, top-k accuracy, COCO box and mask AP."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from compressai_transtic.metrics import COCO_STAT_NAMES, coco_evaluate, psnr, rle_encode, topk_accuracy

IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]


def load_coco(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def box_iou(a, b):
    """IoU of two [x, y, w, h] boxes (COCO convention, no +1)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def coco_ap_one_gt_per_image(ious, scores):
    """Independent COCO AP (101-point interpolation, averaged over IoU 0.50:0.95) for the
    case of one category, one ground truth and one detection per image."""
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    aps = []
    for t in IOU_THRESHOLDS:
        tp = np.array([ious[i] >= t for i in order], dtype=float)
        fp = 1.0 - tp
        tp_sum, fp_sum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_sum / len(ious)
        precision = tp_sum / (tp_sum + fp_sum)
        for i in range(len(precision) - 2, -1, -1):  # make precision non-increasing
            precision[i] = max(precision[i], precision[i + 1])
        sampled = []
        for r in np.linspace(0, 1, 101):
            idx = np.searchsorted(recall, r, side="left")
            sampled.append(precision[idx] if idx < len(precision) else 0.0)
        aps.append(np.mean(sampled))
    return float(np.mean(aps))


# ---------------------------------------------------------------------------- PSNR / top-k
def test_psnr_of_a_constant_error_of_one_eighth_is_10_log10_64_db():
    a = torch.zeros(1, 3, 8, 8)
    assert psnr(a, a + 0.125) == pytest.approx(10 * math.log10(64), abs=1e-12)
    assert psnr(a, a) == math.inf


def test_ms_ssim_is_given_exactly_for_the_sizes_pytorch_msssim_accepts():
    from pytorch_msssim import ms_ssim  # what CompressAI's eval_model calls

    from compressai_transtic.metrics import MS_SSIM_MIN_SIDE, fidelity_metrics, ms_ssim_size_problem

    torch.manual_seed(0)
    for height, width in ((161, 161), (400, 161), (160, 400), (128, 192)):
        x = torch.rand(1, 3, height, width)
        y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
        ours = fidelity_metrics(x, y)["ms-ssim-rgb"]
        if min(height, width) > MS_SSIM_MIN_SIDE:
            assert ours == pytest.approx(float(ms_ssim(x * 255, y * 255, data_range=255)), abs=1e-3)
            assert ms_ssim_size_problem(height, width) is None
        else:
            assert ours is None
            with pytest.raises(AssertionError, match="larger than 160"):
                ms_ssim(x * 255, y * 255, data_range=255)
    assert ms_ssim_size_problem(128, 192) == (
        "at 192x128 pixels its shorter side is 128; MS-SSIM (5 scales of an 11x11 window) needs 161 pixels or "
        "more on each side"
    )


def test_topk_accuracy_on_a_constructed_case():
    ranked = [[3, 1, 2, 0, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 0, 2, 3, 4]]
    labels = [3, 2, 7, (5, 1)]  # hit at rank 1, hit at rank 3, miss, accepted set hit at rank 1
    assert topk_accuracy(ranked, labels, 1) == pytest.approx(2 / 4)
    assert topk_accuracy(ranked, labels, 5) == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        topk_accuracy([[1, 2]], [1], 5)


# ---------------------------------------------------------------------------- COCO AP
@pytest.fixture(scope="module")
def square_gt(make_coco):
    """Three 100x100 images with one 40x40 'person' box each (medium objects)."""
    images = [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)]
    objects = []
    for i in (1, 2, 3):
        mask = np.zeros((100, 100), dtype=bool)
        mask[20:60, 20:60] = True
        objects.append({"image_id": i, "category_id": 1, "bbox": [20, 20, 40, 40], "mask": mask})
    return load_coco(make_coco(images, objects)), objects


def test_perfect_detections_give_box_ap_1(square_gt):
    coco, objects = square_gt
    dets = [{"image_id": o["image_id"], "category_id": 1, "bbox": o["bbox"], "score": 0.9} for o in objects]
    stats = coco_evaluate(coco, dets, "bbox")
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == pytest.approx(1.0)
    assert stats["APm"] == pytest.approx(1.0)
    assert math.isnan(stats["APs"]) and math.isnan(stats["APl"])  # no small/large objects
    assert list(stats) == list(COCO_STAT_NAMES)


def test_perfect_masks_give_mask_ap_1(square_gt):
    coco, objects = square_gt
    dets = [
        {
            "image_id": o["image_id"],
            "category_id": 1,
            "score": 0.8,
            "bbox": o["bbox"],
            "segmentation": rle_encode(o["mask"]),
        }
        for o in objects
    ]
    assert coco_evaluate(coco, dets, "segm")["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [2, 6, 9, 14])
def test_shifted_boxes_give_the_fraction_of_iou_thresholds_passed(square_gt, shift):
    coco, objects = square_gt
    gt = [20, 20, 40, 40]
    det_box = [20 + shift, 20, 40, 40]
    iou = box_iou(gt, det_box)
    assert all(abs(iou - t) > 1e-6 for t in IOU_THRESHOLDS)  # no tie with a threshold
    expected = sum(iou >= t for t in IOU_THRESHOLDS) / len(IOU_THRESHOLDS)
    dets = [{"image_id": o["image_id"], "category_id": 1, "bbox": det_box, "score": 0.7} for o in objects]
    stats = coco_evaluate(coco, dets, "bbox")
    assert stats["AP"] == pytest.approx(expected, abs=1e-12)
    assert stats["AP50"] == pytest.approx(float(iou >= 0.5))
    assert stats["AP75"] == pytest.approx(float(iou >= 0.75))


def test_mixed_shifts_match_an_independent_101_point_ap(square_gt):
    coco, objects = square_gt
    shifts, scores = [3, 8, 12], [0.5, 0.9, 0.7]
    dets, ious = [], []
    for o, s, score in zip(objects, shifts, scores):
        box = [20 + s, 20 + s / 2, 40, 40]
        ious.append(box_iou(o["bbox"], box))
        dets.append({"image_id": o["image_id"], "category_id": 1, "bbox": box, "score": score})
    expected = coco_ap_one_gt_per_image(ious, scores)
    assert 0.0 < expected < 1.0
    assert coco_evaluate(coco, dets, "bbox")["AP"] == pytest.approx(expected, abs=1e-12)


def test_no_detections_give_ap_0(square_gt):
    coco, _ = square_gt
    assert coco_evaluate(coco, [], "bbox")["AP"] == 0.0
    assert coco_evaluate(coco, [], "segm")["AP"] == 0.0


def test_evaluation_is_restricted_to_the_given_images(square_gt):
    coco, objects = square_gt
    # perfect on image 1 only; images 2 and 3 have no detections
    dets = [{"image_id": 1, "category_id": 1, "bbox": objects[0]["bbox"], "score": 0.9}]
    assert coco_evaluate(coco, dets, "bbox", img_ids=[1])["AP"] == pytest.approx(1.0)
    assert coco_evaluate(coco, dets, "bbox")["AP"] < 0.5


def test_coco_evaluation_prints_nothing_to_stdout(square_gt, capsys):
    coco, objects = square_gt
    coco_evaluate(coco, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.1}], "bbox")
    assert capsys.readouterr().out == ""
