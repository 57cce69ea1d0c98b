"""Image fidelity (PSNR, MS-SSIM) as an evaluation "task": the Kodak curves of the paper's Fig. A5a.

It has no recognition network: the "prediction" for a decoded image is its PSNR and
MS-SSIM against the prepared original, measured as CompressAI's ``eval_model`` measures
them (both images rounded to 8 bits, peak 255), and the metrics are their means over
the images. This task's ``psnr-rgb`` therefore replaces the evaluator's float PSNR in the
results (they differ by the 8-bit rounding of learned codecs' outputs).

Protocol: images are coded at their own size (the learned codecs pad internally), as
``eval_model`` does.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..imageio import DEFAULT_MAX_PIXELS
from ..jsonvalues import is_finite_number
from ..metrics import MS_SSIM_MAX, MS_SSIM_MIN_SIDE, fidelity_metrics
from ..protocol import CodingProtocol
from .base import DatasetKind, Task

__all__ = ["FidelityTask", "MS_SSIM_MIN_SIDE", "fidelity_metrics"]

logger = logging.getLogger(__name__)


class FidelityTask(Task):
    """PSNR and MS-SSIM of decoded images, as CompressAI's ``eval_model`` reports them.

    A task without a network: it evaluates codecs for human viewing on a plain image
    folder (Kodak), in the same result files as the recognition tasks, so that
    ``compare`` and ``plot`` work on them. It cannot train prompts (train the base codec
    with CompressAI's example script) and has no uncompressed reference.
    """

    name = "fidelity"
    title = "image fidelity (PSNR and MS-SSIM, RGB, 8 bits)"
    metric_names = ("psnr-rgb", "ms-ssim-rgb")
    metric_units = {"psnr-rgb": "dB", "ms-ssim-rgb": "1 (fraction)"}
    primary_metric = "psnr-rgb"
    dataset_kind = DatasetKind.IMAGES
    trainable = False
    has_reference = False
    has_network = False

    def __init__(self, *args: Any, max_pixels: int = DEFAULT_MAX_PIXELS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_pixels = int(max_pixels)

    @property
    def random_weights(self) -> bool:
        return False

    def describe_weights(self) -> str:
        return "no network"

    def feature_extractor(self, network: Any = None) -> Any:
        raise ValueError("the fidelity task has no network and no perceptual loss; it only evaluates")

    def protocol(self) -> CodingProtocol:
        return CodingProtocol()

    @torch.no_grad()
    def predict(self, x: Tensor, image: Any) -> Dict[str, Optional[float]]:
        """PSNR and MS-SSIM of a decoded image against the original file."""
        original = self.protocol().prepare(image.load(self.max_pixels))[None]
        return fidelity_metrics(original, x.detach().cpu())

    def prediction_problem(self, prediction: Any) -> Optional[str]:
        psnr = prediction.get("psnr-rgb") if isinstance(prediction, dict) else None
        if not (isinstance(psnr, (int, float)) and not isinstance(psnr, bool) and psnr >= 0.0):
            return "no 'psnr-rgb' of 0 dB or more (infinite for an exact copy)"
        similarity = prediction.get("ms-ssim-rgb")
        if similarity is not None and not (is_finite_number(similarity) and -1.0 <= similarity <= MS_SSIM_MAX):
            return "'ms-ssim-rgb' is not a number in [-1, 1] or null"
        return None

    def compute_metrics(self, predictions: Mapping[Any, Any], dataset: Sequence[Any]) -> Dict[str, float]:
        """Means over the images; MS-SSIM is NaN when an image is too small for it (a
        point's rate, PSNR and MS-SSIM average the same images). The evaluator names
        such images, once each (:class:`~compressai_transtic.evaluation.runner.Evaluation`)."""
        values = [predictions[item.image_id] for item in dataset]
        psnrs = [v["psnr-rgb"] for v in values]
        msssims = [v["ms-ssim-rgb"] for v in values]
        return {
            "psnr-rgb": sum(psnrs) / len(psnrs),
            "ms-ssim-rgb": math.nan if any(m is None for m in msssims) else sum(msssims) / len(msssims),
        }
