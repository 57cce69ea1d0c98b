"""TIC: the Swin-transformer hyperprior codec that TransTIC freezes."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Sequence, Tuple, TypeVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from compressai.models.base import get_scale_table
from torch import Tensor

from ..bitstream import BitstreamError, checksum, pack_header, unpack_header
from ..console import and_more
from ..entropy_models import BucketizedGaussianConditional, LegacyEntropyBottleneck, scale_table_problem
from ..integrity import tensor_problems
from ..jsonvalues import as_index
from ..layers import RSTB, ceil_to, conv, deconv, drop_path_rates
from ..state_dicts import (
    CheckpointError,
    check_architecture,
    checkpoint_filter_fn,
    fit_problems,
    needs_entropy_update,
    tic_channels,
)

__all__ = [
    "TIC",
    "CodingTerms",
    "PAD_MULTIPLE",
    "MAX_DECODE_PIXELS",
    "channels_last",
    "coded_pixels",
    "codes_in_eval_mode",
]

logger = logging.getLogger(__name__)

#: inputs are padded (bottom/right, replicate) to a multiple of this; it is the total
#: downsampling of the hyper-analysis, so every latent grid has an integer size.
PAD_MULTIPLE = 64
#: the released checkpoints were built for this input size (persistent masks, and the
#: windows of the 1/64 stages)
REFERENCE_SIZE = 256
#: default limit of ``decompress`` on the pixels it synthesises per call, counted as
#: :func:`coded_pixels` (twice a 3840 x 2160 image); set ``model.max_decode_pixels``
#: to change it
MAX_DECODE_PIXELS = 2**24

ENCODER_DEPTHS = (2, 4, 6, 2, 2, 2)
ENCODER_HEADS = (8, 8, 8, 16, 16, 16)


class CodingTerms(NamedTuple):
    """What :meth:`TIC.compress` codes (see :meth:`TIC.coding_terms`)."""

    y: Tensor
    means: Tensor
    indexes: Tensor  # scale-table entries of the Gaussian conditional
    z_strings: List[bytes]
    z_shape: torch.Size
    side_strings: Tuple[List[bytes], ...] = ()  # further per-image strings (an ROI codec's map)


def coded_pixels(height: int, width: int) -> int:
    """Pixels the transforms process for an image of ``height`` x ``width``: its size
    padded to multiples of :data:`PAD_MULTIPLE`. What a decoder's time and memory go
    by (a 1 x 8192 image is decoded as 64 x 8192)."""
    return ceil_to(height, PAD_MULTIPLE) * ceil_to(width, PAD_MULTIPLE)


Method = TypeVar("Method", bound=Callable[..., Any])


class _CodingCalls:
    """The coding calls running on one model, and the modes they found (restored
    when the last one ends, so calls nested or in other threads all run in eval mode)."""

    def __init__(self) -> None:
        self.running = 0
        self.modes: List[Tuple[nn.Module, bool]] = []


_coding_calls: "weakref.WeakKeyDictionary[nn.Module, _CodingCalls]" = weakref.WeakKeyDictionary()
_coding_lock = threading.Lock()


def _start_coding(model: nn.Module) -> None:
    with _coding_lock:
        calls = _coding_calls.setdefault(model, _CodingCalls())
        if calls.running == 0 and any(m.training for m in model.modules()):
            calls.modes = [(m, m.training) for m in model.modules()]
            model.eval()
        calls.running += 1


def _end_coding(model: nn.Module) -> None:
    with _coding_lock:
        calls = _coding_calls[model]
        calls.running -= 1
        if calls.running == 0:
            for module, training in calls.modes:
                module.training = training
            calls.modes = []


def codes_in_eval_mode(method: Method) -> Method:
    """Run a coding method with every module in eval mode, and restore the modes after.

    Coding is inference: in training mode stochastic depth would make the encoder's
    latents depend on chance (bitstreams that differ from run to run, which the
    decoder then reconstructs from other features), and the prompt generator's batch
    norm would use and update batch statistics. Models from the zoo are returned in
    training mode, as CompressAI's are, so coding does not depend on it. A model in
    eval mode is not touched; the modes of one in training mode are given back when
    its last coding call ends (nested calls and calls from other threads included).
    """

    @functools.wraps(method)
    def coded(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        _start_coding(self)
        try:
            return method(self, *args, **kwargs)
        finally:
            _end_coding(self)

    return coded  # type: ignore[return-value]


def channels_last(x: Tensor) -> Tensor:
    """``x`` in the channels-last memory format (the same tensor when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def _one_cpu_thread(x: Tensor) -> Iterator[None]:
    """Run the body with one intra-op thread when ``x`` is on the CPU.

    PyTorch keeps the thread count per Python thread once that thread has used it, so
    the count is set and restored in the calling thread alone, and Python threads
    coding at once each run their own section on one thread. (A Python thread that
    first uses PyTorch while another is inside starts from that one's count.)
    """
    threads = torch.get_num_threads()
    if x.device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _latent_shape(shape: Any) -> Tuple[int, int]:
    """``shape`` as the ``(h, w)`` of z: two positive integers (a sequence, 1-D array or
    tensor of integers of any library, :func:`~compressai_transtic.jsonvalues.as_index`),
    as :meth:`TIC.compress` returns (a ``torch.Size``)."""
    vector = isinstance(shape, (np.ndarray, Tensor)) and shape.ndim == 1
    values = [as_index(v) for v in shape] if vector or isinstance(shape, (tuple, list, torch.Size)) else []
    if len(values) != 2 or not all(v is not None and v >= 1 for v in values):
        raise BitstreamError(f"invalid latent shape {shape!r}; expected the (h, w) of z as two positive integers")
    return values[0], values[1]  # type: ignore[return-value]


class TIC(CompressionModel):
    r"""Transformer-based image codec with a hyperprior (the TransTIC base codec).

    Lu, Guo, Ma, Wang, "Transformer-based Image Compression", DCC 2022, in the
    hyperprior-only form used as the base codec of Chen, Weng, Liu, Peng, "TransTIC:
    Transferring Transformer-based Image Compression from Human Perception to Machine
    Perception", ICCV 2023.

    Analysis ``g_a``: conv 5x5/2, RSTB(2), conv 3x3/2, RSTB(4), conv 3x3/2, RSTB(6),
    conv 3x3/2 to ``M``, RSTB(2); hyper-analysis ``h_a``: two (conv 3x3/2, RSTB(2)) with
    4x4 windows; the synthesis transforms mirror them with transposed convolutions.
    ``z`` is coded with a factorized entropy bottleneck, ``y`` with a mean-scale
    Gaussian conditional whose parameters come from ``h_s`` (scales first, then means).

    Unlike the authors' code, any input size is accepted: the image is padded at the
    bottom/right (replicate) to a multiple of 64, Swin stages pad their maps to a
    multiple of the window with the padded keys masked out, and the output is cropped
    back. Rates are meant to be counted over the original pixels.

    At inference, the RSTBs that follow a convolution add their output into that
    convolution's output (``RSTB(inplace=True)``, like ``nn.ReLU(inplace=True)`` in
    torchvision's models): a forward hook that keeps such a convolution's output
    sees it updated.

    ``decompress`` takes everything from the bitstream and checks it before decoding:
    a header whose image takes more than ``max_decode_pixels`` pixels to synthesise
    (counted as :func:`coded_pixels`, padded to multiples of 64; default
    :data:`MAX_DECODE_PIXELS`, an instance attribute) is refused, and so is a call
    whose images together take more, so that no stream can make the decoder allocate
    without bound.

    ``compress`` and ``decompress`` run in eval mode whatever the model's mode
    (:func:`codes_in_eval_mode`); ``compress`` takes images of the model's dtype and
    device with values in [0, 1].

    Args:
        N: channels of the transforms.
        M: channels of the latent ``y``.
        drop_path_rate: stochastic depth, spread linearly over the 18 blocks of each side.
        mlp_ratio: MLP expansion of the Swin blocks.
    """

    max_decode_pixels: int = MAX_DECODE_PIXELS

    def __init__(self, N: int = 128, M: int = 192, drop_path_rate: float = 0.1, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.N = int(N)
        self.M = int(M)
        depths = ENCODER_DEPTHS
        heads = ENCODER_HEADS
        enc_dpr = drop_path_rates(depths, drop_path_rate)
        dec_dpr = drop_path_rates(depths[::-1], drop_path_rate)
        r = REFERENCE_SIZE

        def rstb(dim: int, i: int, window: int, scale: int, dpr: List[float], inplace: bool = True) -> RSTB:
            # in place (at inference) where the input is the preceding convolution's output
            return RSTB(
                dim,
                depths[i],
                heads[i],
                window,
                reference_resolution=(r // scale, r // scale),
                mlp_ratio=mlp_ratio,
                drop_path=dpr,
                inplace=inplace,
            )

        self.g_a0 = conv(3, N, 5, 2)
        self.g_a1 = rstb(N, 0, 8, 2, enc_dpr[0])
        self.g_a2 = conv(N, N, 3, 2)
        self.g_a3 = rstb(N, 1, 8, 4, enc_dpr[1])
        self.g_a4 = conv(N, N, 3, 2)
        self.g_a5 = rstb(N, 2, 8, 8, enc_dpr[2])
        self.g_a6 = conv(N, M, 3, 2)
        self.g_a7 = rstb(M, 3, 8, 16, enc_dpr[3])

        self.h_a0 = conv(M, N, 3, 2)
        self.h_a1 = rstb(N, 4, 4, 32, enc_dpr[4])
        self.h_a2 = conv(N, N, 3, 2)
        self.h_a3 = rstb(N, 5, 4, 64, enc_dpr[5])

        # decoder side: same settings, stages in reverse order
        self.h_s0 = rstb(N, 5, 4, 64, dec_dpr[0], inplace=False)  # input: z_hat
        self.h_s1 = deconv(N, N, 3, 2)
        self.h_s2 = rstb(N, 4, 4, 32, dec_dpr[1])
        self.h_s3 = deconv(N, 2 * M, 3, 2)

        self.g_s0 = rstb(M, 3, 8, 16, dec_dpr[2], inplace=False)  # input: y_hat
        self.g_s1 = deconv(M, N, 3, 2)
        self.g_s2 = rstb(N, 2, 8, 8, dec_dpr[3])
        self.g_s3 = deconv(N, N, 3, 2)
        self.g_s4 = rstb(N, 1, 8, 4, dec_dpr[4])
        self.g_s5 = deconv(N, N, 3, 2)
        self.g_s6 = rstb(N, 0, 8, 2, dec_dpr[5])
        self.g_s7 = deconv(N, 3, 5, 2, subpixel=True)  # to 3 channels: run as a sub-pixel convolution at CPU inference

        # typed loosely: its compress/decompress are CompressAI's EntropyBottleneck's (untyped)
        self.entropy_bottleneck: Any = LegacyEntropyBottleneck(N)
        self.gaussian_conditional = BucketizedGaussianConditional(None)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------
    # transforms
    # ------------------------------------------------------------------------------
    @property
    def downsampling_factor(self) -> int:
        return PAD_MULTIPLE

    def g_a(self, x: Tensor) -> Tensor:
        """Analysis transform: padded image -> ``y`` (1/16)."""
        x = self.g_a0(x)
        x = self.g_a1(x)
        x = self.g_a2(x)
        x = self.g_a3(x)
        x = self.g_a4(x)
        x = self.g_a5(x)
        x = self.g_a6(x)
        return self.g_a7(x)

    def h_a(self, y: Tensor) -> Tensor:
        """Hyper-analysis: ``y`` -> ``z`` (1/64)."""
        return self.h_a3(self.h_a2(self.h_a1(self.h_a0(y))))

    def h_s(self, z_hat: Tensor) -> Tuple[Tensor, Tensor]:
        """Hyper-synthesis: ``z_hat`` -> (scales, means) of ``y``.

        The decoder must pick exactly the scale-table entries the encoder picked,
        whatever the thread counts of the two, and PyTorch's CPU transposed
        convolutions on the smallest maps (a few pixels at 1/64) give results that
        depend on the thread count. So on the CPU this small transform runs on one
        intra-op thread (the thread count is restored afterwards).
        """
        with _one_cpu_thread(z_hat):
            params = self.h_s3(self.h_s2(self.h_s1(self.h_s0(channels_last(z_hat)))))
        scales, means = params.chunk(2, dim=1)
        return scales, means

    def g_s(self, y_hat: Tensor) -> Tensor:
        """Synthesis transform: ``y_hat`` -> padded reconstruction (not clamped)."""
        x = self.g_s0(channels_last(y_hat))
        x = self.g_s1(x)
        x = self.g_s2(x)
        x = self.g_s3(x)
        x = self.g_s4(x)
        x = self.g_s5(x)
        x = self.g_s6(x)
        return self.g_s7(x)

    # ------------------------------------------------------------------------------
    # padding
    # ------------------------------------------------------------------------------
    def update(self, scale_table: Any = None, force: bool = False, update_quantiles: bool = False) -> bool:
        """CompressAI's ``update``, after checking the scale table (see
        :meth:`~compressai_transtic.entropy_models.BucketizedGaussianConditional.checked_scale_table`)
        before any entropy model changes: a refused call leaves every table as it was."""
        table = get_scale_table() if scale_table is None else scale_table
        for module in self.modules():
            if isinstance(module, BucketizedGaussianConditional):
                table = module.checked_scale_table(table)
        return super().update(scale_table=table, force=force, update_quantiles=update_quantiles)

    def _check_tables(self) -> None:
        """Both entropy models have coding tables (``update()`` was called or loaded)."""
        self.entropy_bottleneck.coding_tables()
        self.gaussian_conditional.coding_tables()

    def _check_input(self, x: Tensor) -> None:
        """An image batch this model can take: ``(B, 3, H, W)``, not empty, of the
        weights' floating-point dtype and on their device."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {shape}")
        if x.shape[-1] < 1 or x.shape[-2] < 1 or x.shape[0] < 1:
            raise ValueError(f"empty image batch of shape {tuple(x.shape)}")
        weight = self.g_a0.weight
        if x.dtype != weight.dtype:
            hint = "divide 8-bit images by 255 and " if not x.is_floating_point() else ""
            raise TypeError(
                f"images of dtype {x.dtype} for a model of dtype {weight.dtype}; {hint}convert them with "
                f".to({weight.dtype}) (or the model with .to(dtype))"
            )
        if x.device != weight.device:
            raise ValueError(f"images on {x.device} for a model on {weight.device}; move one of them")

    @staticmethod
    def _check_pixel_range(x: Tensor) -> None:
        """Pixels to code are in [0, 1]: the range the codec was trained on (an image
        in 0..255 would code to a valid-looking stream that decodes clamped)."""
        low, high = (float(v) for v in torch.aminmax(x))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("cannot code non-finite pixel values (NaN or Inf in the image)")
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(
                f"pixel values must lie in [0, 1], got {low:.4g}..{high:.4g}; divide 8-bit images by 255 "
                "and clamp resampled ones"
            )

    def _pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        hp, wp = ceil_to(h, PAD_MULTIPLE), ceil_to(w, PAD_MULTIPLE)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
        return channels_last(x)

    @staticmethod
    def _crop(x: Tensor, size: Sequence[int]) -> Tensor:
        return x[..., : size[0], : size[1]].contiguous()

    # ------------------------------------------------------------------------------
    # CompressAI API
    # ------------------------------------------------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        """Padded input -> ``y``. Overridden by TransTIC to add encoder prompts."""
        return self.g_a(x)

    def synthesis(self, y_hat: Tensor) -> Tensor:
        """``y_hat`` -> padded reconstruction. Overridden by TransTIC (decoder prompts)."""
        return self.g_s(y_hat)

    def forward(self, x: Tensor) -> Dict[str, Any]:
        """Code ``x`` with quantization noise (train) or rounding (eval).

        Returns ``{"x_hat", "likelihoods": {"y", "z"}}``; ``x_hat`` has the size of ``x``,
        the likelihoods cover the padded latents, so ``-sum(log2 p) / (H * W)`` is the
        rate per original pixel.
        """
        return self._forward(x, ())

    def _forward(self, x: Tensor, side: Tuple[Tensor, ...]) -> Dict[str, Any]:
        """:meth:`forward` with extra inputs ``side`` of the three transforms (the quality
        map of an ROI codec; none for TIC)."""
        self._check_input(x)
        size = x.shape[-2:]
        y = self.analysis(self._pad(x), *side)
        z = self.h_a(y, *side)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.h_s(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        x_hat = self._crop(self.synthesis(y_hat, *side), size)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    @codes_in_eval_mode
    def compress(self, x: Tensor) -> Dict[str, Any]:
        """Entropy-code ``x`` (values in [0, 1]).

        Returns ``{"strings": [y_strings, z_strings, header_strings], "shape": z_size}``;
        every list has one ``bytes`` per image.
        """
        return self.compress_terms(self.coding_terms(x), x.shape[-2:])

    @codes_in_eval_mode
    def coding_terms(self, x: Tensor) -> CodingTerms:
        """What :meth:`compress` codes: ``y``, and the means and scale-table indexes it is
        coded with (from the decoded ``z``), and the z strings."""
        return self._coding_terms(x, ())

    def _coding_terms(self, x: Tensor, side: Tuple[Tensor, ...]) -> CodingTerms:
        self._check_input(x)
        self._check_pixel_range(x)
        y = self.analysis(self._pad(x), *side)
        z = self.h_a(y, *side)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales, means = self.h_s(z_hat)
        return CodingTerms(y, means, self.gaussian_conditional.build_indexes(scales), z_strings, z.size()[-2:])

    def compress_terms(self, terms: CodingTerms, size: Sequence[int]) -> Dict[str, Any]:
        """The output of :meth:`compress` from its :meth:`coding_terms` and the image size."""
        y_strings = self.gaussian_conditional.compress(terms.y, terms.indexes, means=terms.means)
        headers = [pack_header(size[0], size[1], zs, ys) for zs, ys in zip(terms.z_strings, y_strings)]
        return {"strings": [y_strings, terms.z_strings, headers, *terms.side_strings], "shape": terms.z_shape}

    @codes_in_eval_mode
    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> Dict[str, Tensor]:
        """Decode the output of :meth:`compress` to ``{"x_hat": (B, 3, H, W)}``, clamped
        to [0, 1] as in every CompressAI model (``forward`` leaves it unclamped, as
        released), so that it can be saved as an image directly.

        Raises:
            BitstreamError: truncated, modified or foreign bitstreams (checked through the
                header's CRC-32 before any entropy decoding).
        """
        y_strings, z_strings, size = self._check_strings(strings, shape)
        y_hat = self._decode_latents(y_strings, z_strings, shape)
        x_hat = self._crop(self.synthesis(y_hat), size).clamp_(0, 1)
        return {"x_hat": x_hat}

    def _decode_latents(self, y_strings: List[bytes], z_strings: List[bytes], shape: Sequence[int]) -> Tensor:
        """``y_hat`` of y and z strings that :meth:`_check_strings` accepted."""
        try:
            z_hat = self.entropy_bottleneck.decompress(z_strings, tuple(int(s) for s in shape))
        except BitstreamError as exc:
            raise BitstreamError(f"z string: {exc}") from exc
        scales, means = self.h_s(z_hat)
        try:
            y_hat = self._decode_y(y_strings, scales, means)
        except BitstreamError as exc:
            raise BitstreamError(f"y string: {exc}") from exc
        return y_hat

    def _decode_y(self, y_strings: List[bytes], scales: Tensor, means: Tensor) -> Tensor:
        """``y_hat`` from the y strings and the hyper-synthesis' scales and means."""
        indexes = self.gaussian_conditional.build_indexes(scales)
        return self.gaussian_conditional.decompress(y_strings, indexes, means=means)

    def _check_strings(
        self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]
    ) -> Tuple[List[bytes], List[bytes], Tuple[int, int]]:
        if not isinstance(strings, (list, tuple)) or len(strings) != 3:
            raise BitstreamError(
                "expected strings = [y_strings, z_strings, header_strings] as returned by "
                f"{type(self).__name__}.compress(); got {type(strings).__name__} of length "
                f"{len(strings) if hasattr(strings, '__len__') else '?'}"
            )
        if not all(isinstance(s, (list, tuple)) for s in strings):
            raise BitstreamError("y, z and header strings must each be a list of bytes (one per image)")
        y_strings, z_strings, headers = (list(s) for s in strings)
        if not (len(y_strings) == len(z_strings) == len(headers)) or not headers:
            raise BitstreamError("y, z and header string lists have different lengths (or are empty)")
        self._check_tables()
        shape = _latent_shape(shape)
        sizes = set()
        for i, (ys, zs, hs) in enumerate(zip(y_strings, z_strings, headers)):
            if not isinstance(ys, (bytes, bytearray)) or not isinstance(zs, (bytes, bytearray)):
                raise BitstreamError(f"image {i}: y/z strings must be bytes")
            header = unpack_header(hs)
            if coded_pixels(header.height, header.width) > self.max_decode_pixels:
                raise BitstreamError(
                    f"image {i}: the header declares {header.height}x{header.width} pixels, coded as "
                    f"{coded_pixels(header.height, header.width)} (padded to multiples of {PAD_MULTIPLE}), more "
                    f"than this decoder's limit of {self.max_decode_pixels}; raise model.max_decode_pixels to decode it"
                )
            if checksum(zs, ys) != header.crc:
                raise BitstreamError(f"image {i}: bitstream checksum mismatch: the data is truncated or was modified")
            sizes.add((header.height, header.width))
        if len(sizes) != 1:
            raise BitstreamError(f"images of one batch must share one size, headers give {sorted(sizes)}")
        (height, width) = sizes.pop()
        if len(headers) * coded_pixels(height, width) > self.max_decode_pixels:
            raise BitstreamError(
                f"{len(headers)} images of {height}x{width} pixels (each coded as {coded_pixels(height, width)}) "
                f"are more than this decoder's limit of {self.max_decode_pixels} pixels per call; decode fewer at "
                "once, or raise model.max_decode_pixels"
            )
        expected = (ceil_to(height, PAD_MULTIPLE) // PAD_MULTIPLE, ceil_to(width, PAD_MULTIPLE) // PAD_MULTIPLE)
        if shape != expected:
            raise BitstreamError(
                f"latent shape {tuple(shape)} does not match the image size {height}x{width} "
                f"in the header (expected {expected})"
            )
        return y_strings, z_strings, (height, width)

    # ------------------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], **kwargs: Any) -> "TIC":
        """Build the model that ``state_dict`` belongs to and load it (strict).

        ``N`` and ``M`` are read from the weights, which are checked against a model
        of that size before it is built (:meth:`built_for`). Foreign layouts
        (``module.`` prefixes, a prefix shared by every key, CompressAI 1.2's
        entropy-bottleneck names, missing entropy tables) are converted by
        :func:`compressai_transtic.state_dicts.checkpoint_filter_fn` (once); missing
        entropy tables are rebuilt (once). A checkpoint file's wrapper
        (``{"state_dict": ...}``) is read by :func:`compressai_transtic.checkpoint.load_model`.
        """
        state_dict = checkpoint_filter_fn(state_dict)
        check_architecture(state_dict, "tic")
        N, M = tic_channels(state_dict)
        net = cls.built_for(state_dict, N=N, M=M, **kwargs)
        net.load_state_dict(state_dict)
        if needs_entropy_update(state_dict):  # e.g. the released base_codec_4 lacks its tables
            logger.info("rebuilding the entropy-coder tables the weights lack (update())")
            net.update()
        return net

    @classmethod
    def built_for(cls, state_dict: Mapping[str, Any], **kwargs: Any) -> Any:
        """``cls(**kwargs)``, built only once the weights were found to fit a model built
        with ``kwargs`` on the ``meta`` device, which allocates nothing: a small file
        whose ``g_a0.weight`` declares thousands of channels is refused, not built.

        Raises:
            CheckpointError: the weights do not fit (see :meth:`check_state_dict`), or
                the sizes they declare are not ones this model can be built with.
        """
        try:
            with torch.device("meta"):
                probe = cls(**kwargs)
        except ValueError as err:  # e.g. channels not divisible by the attention heads
            sizes = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k in ("N", "M"))
            raise CheckpointError(f"weights declare a {cls.__name__} that cannot be built ({sizes}): {err}") from None
        probe.check_state_dict(state_dict)
        return cls(**kwargs)

    def _entropy_tables(self) -> List[Tuple[str, nn.Module, Tuple[str, ...]]]:
        """``(name, module, table buffers)`` of every entropy model: buffers whose size
        comes from the trained distributions, resized to the loaded weights'."""
        found: List[Tuple[str, nn.Module, Tuple[str, ...]]] = []
        for name, module in self.named_modules():
            if isinstance(module, EntropyBottleneck):
                found.append((name, module, ("_quantized_cdf", "_offset", "_cdf_length")))
            elif isinstance(module, GaussianConditional):
                found.append((name, module, ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")))
        return found

    def _scale_table_problems(self, state_dict: Mapping[str, Any]) -> List[str]:
        """The Gaussian conditionals' scale tables in ``state_dict`` that
        :func:`~compressai_transtic.entropy_models.scale_table_problem` refuses."""
        problems = []
        for name, module in self.named_modules():
            table = state_dict.get(f"{name}.scale_table")
            if isinstance(module, BucketizedGaussianConditional) and isinstance(table, Tensor) and table.numel():
                problem = scale_table_problem(table, module.tail_multiplier())
                if problem is not None:
                    problems.append(f"{name}.scale_table: {problem}")
        return problems

    def check_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Raise unless :meth:`load_state_dict` would take ``state_dict`` as it is: keys
        (``strict``), shapes (entropy tables of any size), values (no NaN, Inf, sparse or
        expanded views), scale tables, and relative position indices equal to the ones
        the window sizes define. Nothing changes.

        Raises:
            CheckpointError: naming every kind of problem found.
        """
        tables = self._entropy_tables()
        resizable = {f"{name}.{buffer}" for name, _, buffers in tables for buffer in buffers}
        problems = tensor_problems(state_dict) + fit_problems(self.state_dict(), state_dict, strict, resizable)
        if not problems:
            problems = self._scale_table_problems(state_dict) + self._position_index_problems(state_dict)
        if problems:
            raise CheckpointError(f"weights refused by {type(self).__name__}: {'; '.join(problems)}")

    def _position_index_problems(self, state_dict: Mapping[str, Any]) -> List[str]:
        """The ``relative_position_index`` buffers in ``state_dict`` that differ from the
        model's. They follow from the window size alone (every released file holds the
        standard Swin index), yet attention reads the stored ones: another index would
        index the bias table out of range, or permute the biases without a word."""
        wrong = []
        for key, own in self.state_dict().items():
            given = state_dict.get(key)
            if key.endswith("relative_position_index") and not own.is_meta and isinstance(given, Tensor):
                if not bool((given == own).all()):  # shapes are checked before
                    wrong.append(key)
        if not wrong:
            return []
        return [
            f"relative position indices that are not the ones of their window size: "
            f"{', '.join(wrong[:3])}{and_more(wrong, 3)} (the weights were changed, or not made by this architecture)"
        ]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load weights in the released layout (entropy tables of any size).

        Unlike :meth:`CompressionModel.load_state_dict`, entropy-bottleneck keys are not
        renamed to CompressAI's newer ``matrices.i`` layout: ours are ``_matrix{i}``.
        Use :func:`compressai_transtic.state_dicts.checkpoint_filter_fn` for foreign layouts.

        Every key, shape and value is checked before anything changes, so a refused
        load leaves the model as it was.

        Raises:
            CheckpointError: missing or unexpected keys (``strict``), tensors of other
                shapes, or unusable values (NaN, Inf, sparse, expanded views).
        """
        self.check_state_dict(state_dict, strict)
        for name, module, buffers in self._entropy_tables():  # sized as the weights' tables, larger or smaller
            for buffer in buffers:
                value = state_dict.get(f"{name}.{buffer}")
                if isinstance(value, Tensor):
                    old = getattr(module, buffer)
                    setattr(module, buffer, torch.empty(value.shape, dtype=old.dtype, device=old.device))
        return nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)
