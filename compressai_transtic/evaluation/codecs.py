"""Codec rate points of an evaluation: which model, which weights, and how to code.

A :class:`CodecSpec` names one rate point (a model at one quality with one source of
weights); :meth:`CodecSpec.load` builds it and :func:`code_image` codes an image with
real bitstreams.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import zoo
from ..checkpoint import load_model, model_from_adapter
from ..losses import likelihood_bits
from ..metrics import fidelity_metrics, psnr
from ..models.tic import coded_pixels
from ..protocol import CodingProtocol
from ..strenum import StrEnum, parse_choice
from .traditional import TRADITIONAL_CODECS, ExternalCodec, codec_version

__all__ = [
    "ARCHITECTURES",
    "CodecSpec",
    "CodingResult",
    "QualityMapSource",
    "WeightsSource",
    "code_batch",
    "code_image",
    "fingerprint",
    "count_bytes",
]

logger = logging.getLogger(__name__)

#: architectures the evaluator builds from the zoo
ARCHITECTURES = ("tic", "transtic")


class WeightsSource(StrEnum):
    """Where a rate point's codec comes from."""

    #: the released weights of the zoo
    PRETRAINED = "pretrained"
    #: seeded random initialisation (its results are meaningless)
    RANDOM = "random"
    #: a model file
    CHECKPOINT = "checkpoint"
    #: an adapter file (prompts or a baseline's layers) on a base codec
    ADAPTER = "adapter"
    #: a codec of :mod:`.traditional` (JPEG, VTM...): no weights
    TRADITIONAL = "traditional"

    @classmethod
    def zoo(cls, random_weights: bool) -> WeightsSource:
        """A zoo model's source: its released weights, or seeded random ones."""
        return cls.RANDOM if random_weights else cls.PRETRAINED


class QualityMapSource(StrEnum):
    """Where a TIC+ROI codec's quality map of each image comes from."""

    #: the task network's saliency (:meth:`~compressai_transtic.tasks.base.Task.saliency`)
    SALIENCY = "saliency"
    #: the annotated objects of a COCO dataset
    BOXES = "boxes"


#: the values of :class:`QualityMapSource` (``eval --roi-map``)
ROI_MAP_SOURCES = QualityMapSource.values()


def fingerprint(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable description."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CodecSpec:
    """One rate point of a curve.

    Args:
        label: the curve's name (``tic``, ``transtic``, ``jpeg``... or a user name).
        architecture: ``"tic"`` or ``"transtic"`` (``None`` for a checkpoint whose
            architecture is read from its keys), or a traditional codec's name
            (``"jpeg"``, ``"vtm"``...) with ``source=WeightsSource.TRADITIONAL``.
        quality: quality level, or ``None`` when unknown (checkpoints); for
            traditional codecs their own quality parameter (JPEG quality, VTM QP...).
        task: for ``transtic`` from the zoo, the task whose prompts to load; ``None``:
            the point serves every evaluated task (a task-agnostic codec).
        source: a :class:`WeightsSource` (or its value).
        path: the checkpoint or adapter file.
        base_path: for adapters, a base codec checkpoint (default: the released
            ``base_codec_<quality>`` or, with ``random`` bases, a seeded random TIC).
        random_base: for adapters, use a seeded random base codec.
        seed: seed of random initialisation.
        options: for traditional codecs, ``(key, value)`` pairs of
            :func:`~.traditional.resolve_options` (programs, configuration files).
        roi_map: for TIC+ROI codecs, a :class:`QualityMapSource` (or its value);
            ``None``: full quality everywhere.
    """

    label: str
    architecture: Optional[str]
    quality: Optional[int]
    task: Optional[str] = None
    source: WeightsSource = WeightsSource.PRETRAINED
    path: Optional[str] = None
    base_path: Optional[str] = None
    random_base: bool = False
    seed: int = 0
    options: Tuple[Tuple[str, str], ...] = ()
    roi_map: Optional[QualityMapSource] = None

    def __post_init__(self) -> None:
        if self.roi_map is not None:
            object.__setattr__(self, "roi_map", parse_choice(QualityMapSource, self.roi_map, "quality-map source"))
        object.__setattr__(self, "source", parse_choice(WeightsSource, self.source, "weights source"))
        if self.source is WeightsSource.TRADITIONAL:
            if self.architecture not in TRADITIONAL_CODECS:
                raise ValueError(
                    f"unknown codec {self.architecture!r}; traditional codecs: {', '.join(TRADITIONAL_CODECS)}"
                )
            if self.quality is None:
                raise ValueError(f"{self.architecture} needs a quality parameter")
            TRADITIONAL_CODECS[self.architecture].check_quality(self.quality)
            return
        zoo_model = self.source in (WeightsSource.PRETRAINED, WeightsSource.RANDOM)
        if zoo_model and self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")
        if zoo_model and self.quality is None:
            raise ValueError("zoo models need a quality")
        if self.source in (WeightsSource.CHECKPOINT, WeightsSource.ADAPTER) and not self.path:
            raise ValueError(f"source {self.source.value!r} needs a path")

    @property
    def random_weights(self) -> bool:
        """Whether any part of the codec is randomly initialised."""
        return self.source is WeightsSource.RANDOM or (self.source is WeightsSource.ADAPTER and self.random_base)

    @property
    def traditional(self) -> bool:
        """Whether this point is a codec of :mod:`.traditional` (JPEG, VTM...)."""
        return self.source is WeightsSource.TRADITIONAL

    def key(self) -> str:
        """Fingerprint of everything that determines the codec's output."""
        if self.traditional:  # a library upgrade changes the output: new records
            return fingerprint({**asdict(self), "version": codec_version(self.architecture or "")})
        fields = asdict(self)
        if fields["roi_map"] is None:  # a codec without a map: fingerprinted without the field
            del fields["roi_map"]
        return fingerprint(fields)

    def describe(self) -> str:
        """One line for humans."""
        if self.traditional:
            info = TRADITIONAL_CODECS[self.architecture or ""]
            version = codec_version(info.name)
            return f"{info.title}, {info.parameter} {self.quality}" + (f" ({version})" if version else "")
        arch = self.architecture or "checkpoint"
        what = f"{arch}" + (f" ({self.task} prompts)" if self.task and arch == "transtic" else "")
        q = f" q{self.quality}" if self.quality is not None else ""
        if self.source is WeightsSource.PRETRAINED:
            return f"{what}{q}, released weights"
        if self.source is WeightsSource.RANDOM:
            return f"{what}{q}, RANDOM WEIGHTS (seed {self.seed})"
        if self.source is WeightsSource.CHECKPOINT:
            return f"{what}{q} from {self.path}{self._map_note()}"
        base = "RANDOM base codec" if self.random_base else (self.base_path or "released base codec")
        return f"{arch}{q}, adapter {self.path} on {base}{self._map_note()}"

    def _map_note(self) -> str:
        return f", quality maps from {self.roi_map}" if self.roi_map else ""

    @property
    def zoo_quality(self) -> int:
        """The quality of a zoo model (set for every pretrained rate point)."""
        if self.quality is None:
            raise ValueError(f"{self.describe()}: a zoo model needs a quality (1..4)")
        return self.quality

    def released_weights(self) -> List[zoo.Weights]:
        """The rows of the weights manifest whose files :meth:`load` reads."""
        if self.source is WeightsSource.PRETRAINED:
            task = None if self.architecture == "tic" else self.task or "cls"
            return [zoo.get_weights(self.architecture or "", self.zoo_quality, task)]
        if self.source is WeightsSource.ADAPTER and not self.base_path and not self.random_base:
            return [zoo.get_weights("tic", self.zoo_quality)]
        return []

    def load(self, device: Union[str, torch.device] = "cpu", progress: bool = True) -> Union[nn.Module, ExternalCodec]:
        """Build the codec in eval mode with its entropy tables ready.

        Traditional codecs give an :class:`~.traditional.ExternalCodec` (it codes on the
        CPU whatever ``device`` says).

        Raises:
            compressai_transtic.zoo.WeightsUnavailableError: released weights that are
                neither cached nor downloadable.
        """
        if self.traditional:
            return ExternalCodec(self.architecture or "", self.quality or 0, dict(self.options))
        if self.source is WeightsSource.PRETRAINED:
            if self.architecture == "tic":
                model = zoo.tic(self.zoo_quality, pretrained=True, progress=progress)
            else:
                model = zoo.transtic(self.zoo_quality, task=self.task or "cls", pretrained=True, progress=progress)
        elif self.source is WeightsSource.RANDOM:
            model = self._random(self.architecture or "tic")
        elif self.source is WeightsSource.CHECKPOINT:
            model = load_model(self.architecture, str(self.path), progress=progress)
        else:
            model = self._adapter_model(progress)
        return model.to(device).eval()

    def _random(self, architecture: str) -> nn.Module:
        model: Any
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + (self.quality or 0))
            if architecture == "tic":
                model = zoo.tic(self.quality or 1)
            else:
                model = zoo.transtic(self.quality or 1, task=self.task or "cls")
        model.update(force=True)
        return model

    def _adapter_model(self, progress: bool) -> nn.Module:
        if self.base_path:
            base: Any = load_model("tic", self.base_path, progress=progress)
        elif self.random_base:
            base = self._random("tic")
        else:
            base = zoo.tic(self.zoo_quality, pretrained=True, progress=progress)
        model = model_from_adapter(base, str(self.path))
        model.update(force=True)
        return model


def count_bytes(strings: Any) -> int:
    """Total length of the (nested lists of) byte strings returned by ``compress()``."""
    if isinstance(strings, (bytes, bytearray)):
        return len(strings)
    if isinstance(strings, Iterable):
        return sum(count_bytes(s) for s in strings)
    raise TypeError(f"unexpected {type(strings).__name__} in compress() strings")


@dataclass
class CodingResult:
    """Outcome of coding one image.

    Args:
        num_bytes: size of the bitstream (or of the coded file).
        pixels: pixels of the prepared image, the rate's denominator.
        bpp_likelihood: ``-sum(log2 p) / pixels`` from ``forward()`` in eval mode (NaN
            when not computed, and for traditional codecs).
        psnr: PSNR (dB) of the decoded image (resized back, clamped) vs the prepared one.
        x_hat: the decoded image, (1, 3, H, W) in [0, 1].
        ms_ssim: MS-SSIM of the 8-bit images, as CompressAI's ``eval_model`` measures it
            (``None`` for images too small for five scales).
        encoding_time: seconds spent encoding (``compress()``, or the codec's encoder).
        decoding_time: seconds spent decoding.
        features: for a channel-selection codec, the decoded recognition features
            (``res2``, ``(1, C, ceil(H / 4), ceil(W / 4))`` of the prepared image); the
            task predicts from them instead of from ``x_hat``.
    """

    num_bytes: int
    pixels: int
    bpp_likelihood: float
    psnr: float
    x_hat: Tensor
    ms_ssim: Optional[float] = None
    encoding_time: float = math.nan
    decoding_time: float = math.nan
    features: Optional[Tensor] = None

    @property
    def bpp(self) -> float:
        """Real bits per pixel of the prepared image."""
        return 8.0 * self.num_bytes / self.pixels


def _seconds(device: torch.device, started: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


@torch.no_grad()
def code_image(
    model: Union[Any, ExternalCodec],
    x: Tensor,
    protocol: CodingProtocol,
    likelihood: bool = True,
    quality_map: Optional[Tensor] = None,
) -> CodingResult:
    """Code one prepared image with real bitstreams (or real files) and decode it.

    The image is resized to the protocol's coding size, compressed, decompressed,
    resized back and clamped. Rates are normalised by the pixels of ``x`` (the image
    given to the pipeline), as in the authors' evaluation.

    Args:
        model: a CompressAI-style codec in eval mode (``forward``, ``compress``,
            ``decompress``) accepting any input size, or a traditional codec (its rate
            is the size of the file it wrote).
        x: (1, 3, H, W) in [0, 1].
        protocol: the task's coding protocol.
        likelihood: also run ``forward()`` for the likelihood rate (otherwise
            ``bpp_likelihood`` is NaN); it costs one more pass through the codec.
        quality_map: for an ROI codec, the map of ``x`` (``(1, 1, H, W)`` in [0, 1]),
            given to ``forward`` and ``compress``.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    num_pixels = int(x.shape[0]) * height * width
    if isinstance(model, ExternalCodec):
        coded = model.code(protocol.to_codec(x))
        x_hat = protocol.from_codec(coded.x_hat, (height, width))
        return _result(coded.num_bytes, num_pixels, math.nan, x, x_hat, coded.encoding_time, coded.decoding_time)
    device = next(model.parameters()).device
    x = x.to(device)
    x_code = protocol.to_codec(x)
    extra = _map_argument(quality_map, device)
    bpp_likelihood = math.nan
    if likelihood:
        out = model(x_code, **extra)
        bpp_likelihood = float(likelihood_bits(out["likelihoods"]).sum()) / num_pixels
    started = time.perf_counter()
    enc = model.compress(x_code, **extra)
    encoding_time = _seconds(device, started)
    started = time.perf_counter()
    dec = model.decompress(enc["strings"], enc["shape"])
    decoding_time = _seconds(device, started)
    x_hat = protocol.from_codec(dec["x_hat"], (height, width))
    result = _result(count_bytes(enc["strings"]), num_pixels, bpp_likelihood, x, x_hat, encoding_time, decoding_time)
    result.features = _prepared_features(dec, (height, width))
    return result


def _decompress_in_parts(model: Any, strings: List[List[bytes]], shape: Any, pixels: int) -> Dict[str, Any]:
    """``model.decompress`` of a batch, in parts of as many images as one call may
    decode (``max_decode_pixels``, which bounds what a stream can make the decoder
    allocate; ``pixels`` per image as :func:`~..models.tic.coded_pixels` counts them);
    the outputs' tensors joined along the batch."""
    count = len(strings[0])
    step = max(1, int(getattr(model, "max_decode_pixels", count * pixels)) // pixels)
    parts = [model.decompress([s[i : i + step] for s in strings], shape) for i in range(0, count, step)]
    return parts[0] if len(parts) == 1 else _joined(parts)


def _joined(parts: List[Any]) -> Any:
    """Tensors joined along the batch, dictionaries of them key by key."""
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    if isinstance(parts[0], dict):
        return {k: _joined([p[k] for p in parts]) for k in parts[0]}
    return parts[0]


@torch.no_grad()
def code_batch(
    model: Union[Any, ExternalCodec],
    x: Tensor,
    protocol: CodingProtocol,
    likelihood: bool = True,
    quality_map: Optional[Tensor] = None,
) -> List[CodingResult]:
    """:func:`code_image` for a batch of equal-size prepared images, in one pass.

    Each image gets its own bitstream (its bytes are what ``compress()`` returns for it,
    the same bitstream as coded alone) and its own rate, PSNR and MS-SSIM; the coding
    times are the batch's, shared equally. Traditional codecs code one image at a time.

    Args:
        model: as :func:`code_image`.
        x: (B, 3, H, W) in [0, 1].
        protocol: the task's coding protocol.
        likelihood: also run ``forward()`` for the likelihood rates.
        quality_map: for an ROI codec, the maps of ``x`` (``(B, 1, H, W)``).
    """
    if isinstance(model, ExternalCodec) or x.shape[0] == 1:
        maps = [None] * x.shape[0] if quality_map is None else list(quality_map.split(1))
        return [code_image(model, x[i : i + 1], protocol, likelihood, maps[i]) for i in range(x.shape[0])]
    batch, height, width = int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1])
    device = next(model.parameters()).device
    x = x.to(device)
    x_code = protocol.to_codec(x)
    extra = _map_argument(quality_map, device)
    bits = [math.nan] * batch
    if likelihood:
        out = model(x_code, **extra)
        bits = [float(b) for b in likelihood_bits(out["likelihoods"])]
    started = time.perf_counter()
    enc = model.compress(x_code, **extra)
    encoding_time = _seconds(device, started) / batch
    started = time.perf_counter()
    dec = _decompress_in_parts(model, enc["strings"], enc["shape"], coded_pixels(*x_code.shape[-2:]))
    decoding_time = _seconds(device, started) / batch
    x_hat = protocol.from_codec(dec["x_hat"], (height, width))
    features = _prepared_features(dec, (height, width))
    pixels = height * width
    results = []
    for i in range(batch):
        num_bytes = sum(len(s[i]) for s in enc["strings"])
        result = _result(
            num_bytes, pixels, bits[i] / pixels, x[i : i + 1], x_hat[i : i + 1], encoding_time, decoding_time
        )
        result.features = None if features is None else features[i : i + 1]
        results.append(result)
    return results


def _prepared_features(decoded: Dict[str, Any], size: Tuple[int, int]) -> Optional[Tensor]:
    """A channel-selection codec's ``res2`` features, resized (bilinear) from the coding
    size to the prepared image's, as the protocol resizes decoded images; ``None`` for
    other codecs."""
    if "features" not in decoded:
        return None
    res2 = decoded["features"]["res2"]
    target = (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    if tuple(res2.shape[-2:]) != target:
        res2 = F.interpolate(res2, size=target, mode="bilinear", align_corners=False)
    return res2


def _map_argument(quality_map: Optional[Tensor], device: torch.device) -> Dict[str, Tensor]:
    """The keyword argument that gives an ROI codec its map (none for other codecs)."""
    return {} if quality_map is None else {"quality_map": quality_map.to(device)}


def _result(
    num_bytes: int,
    pixels: int,
    bpp_likelihood: float,
    x: Tensor,
    x_hat: Tensor,
    encoding_time: float,
    decoding_time: float,
) -> CodingResult:
    quality = fidelity_metrics(x, x_hat)
    return CodingResult(
        num_bytes,
        pixels,
        bpp_likelihood,
        psnr=psnr(x_hat, x),
        x_hat=x_hat,
        ms_ssim=quality["ms-ssim-rgb"],
        encoding_time=encoding_time,
        decoding_time=decoding_time,
    )
