"""TIC+channel selection: the frozen TIC codes only the latent channels a task needs, and
a transform turns them into the features the recognition network consumes.

The paper's second learned baseline (supplementary, after Liu, Sun, Katto, "Improving
Multiple Machine Vision Tasks in the Compressed Domain", ICPR 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..adapter_files import MAX_ADAPTER_SIZE
from ..bitstream import BitstreamError
from ..layers import conv, deconv
from ..state_dicts import CheckpointError, weight_channels
from .adapted import AdaptedCodec, ConfigDict
from .tic import CodingTerms, channels_last, codes_in_eval_mode

__all__ = ["ChannelSelectionConfig", "TICChannelSelection", "FEATURE_ENTRY", "FEATURE_STRIDE"]

#: the recognition-network feature the transform makes: the output of ResNet50's layer1
#: (``res2``), the input of the later layers of the classifier and of the detectors' FPN
FEATURE_ENTRY = "res2"
#: its stride w.r.t. the image
FEATURE_STRIDE = 4
#: initial gate logit: every channel coded at the start (the base codec's behaviour)
INITIAL_LOGIT = 2.0


@dataclass(frozen=True)
class ChannelSelectionConfig(ConfigDict):
    """Settings of TIC+channel selection.

    Args:
        feature_channels: channels of the features the transform makes (256: ResNet50's
            ``res2``, for the classifier and the detectors alike).
        width: channels of the transform's hidden layers.
    """

    feature_channels: int = 256
    width: int = 192

    def __post_init__(self) -> None:
        self.check_types()
        if int(self.feature_channels) < 1 or int(self.width) < 1:
            raise ValueError(f"feature_channels and width must be positive (got {self})")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> "ChannelSelectionConfig":
        """The settings of TIC+channel-selection weights (full weights, or their adapter
        entries), read from the shapes of the transform's first and last convolutions;
        both settings show there, so nothing else is stored.

        Raises:
            CheckpointError: one of those weights is missing, not a tensor, not a
                convolution weight (4 dimensions) or of a width out of range; the message
                names the key.
        """
        channels = weight_channels(
            state_dict, "g_s_chsel_transform.6.weight", "last convolution of the transform", MAX_ADAPTER_SIZE
        )
        width = weight_channels(
            state_dict, "g_s_chsel_transform.0.weight", "first convolution of the transform", MAX_ADAPTER_SIZE
        )
        try:
            return cls(feature_channels=channels, width=width)
        except ValueError as err:
            raise CheckpointError(f"the TIC+channel-selection settings of these weights are invalid: {err}") from None


def _transform(M: int, width: int, channels: int) -> nn.Sequential:
    """Decoded latent (1/16) -> features at 1/4: 3x3 conv, two stride-2 transposed
    convolutions, 3x3 conv; ReLU between them."""
    return nn.Sequential(
        conv(M, width, 3, 1),
        nn.ReLU(),
        deconv(width, width, 3, 2),
        nn.ReLU(),
        deconv(width, width, 3, 2),
        nn.ReLU(),
        conv(width, channels, 3, 1),
    )


class TICChannelSelection(AdaptedCodec):
    r"""TIC+channel selection: a learned binary gate on the channels of the frozen TIC's
    latent ``y`` and a transform from the kept channels to recognition features (after
    Liu, Sun, Katto, ICPR 2022; TransTIC supplementary material).

    Readings of what the paper leaves open (stated here and in the README):

    * the gate: one logit per channel of ``y`` (``g_a_chsel_gate``); a channel is coded
      when its logit is positive; in training the binary value passes gradients as a
      sigmoid would (straight-through estimator). Logits start at 2: every channel is
      coded, as by the base codec;
    * the rate counts only the coded channels: ``forward`` gives the uncoded ones
      likelihood 1, ``compress`` writes only the kept channels of ``y``; the decoder,
      which knows the gate, puts the hyperprior's means where channels were dropped;
    * the transform (``g_s_chsel_transform``) turns the decoded latent into the output of
      ResNet50's ``layer1`` (``res2``: 256 channels at 1/4), which the classifier's later
      layers and the detectors' backbone and FPN consume (the recognition network is
      frozen; only gate and transform train). Its layout: 3x3 conv, two stride-2
      transposed convolutions, 3x3 conv, ReLUs, ``width`` channels;
    * outputs: ``features`` (``{"res2": ...}``, cropped to ``ceil(H / 4) x ceil(W / 4)``)
      for the machine, and ``x_hat`` from the frozen ``g_s`` for viewing;
    * the bitstream does not say which channels it holds: the decoder must have the
      encoder's gate (the same weights or adapter; ``.ttic`` files carry a fingerprint
      of the weights and refuse others).

    Args:
        config: transform settings.
        N: channels of the transforms.
        M: channels of the latent.
        **kwargs: forwarded to :class:`TIC`.
    """

    arch = "tic-chsel"
    config_class = ChannelSelectionConfig

    def __init__(
        self, config: Optional[ChannelSelectionConfig] = None, N: int = 128, M: int = 192, **kwargs: Any
    ) -> None:
        super().__init__(config, N=N, M=M, **kwargs)
        self.g_a_chsel_gate = nn.Parameter(torch.full((M,), INITIAL_LOGIT))
        self.g_s_chsel_transform = _transform(M, self.config.width, self.config.feature_channels)
        self.freeze_base()

    # ------------------------------------------------------------------------------
    # the gate
    # ------------------------------------------------------------------------------
    def gate(self) -> Tensor:
        """The binary channel mask ``(M,)``; in training its gradient is the sigmoid's."""
        hard = (self.g_a_chsel_gate > 0).to(self.g_a_chsel_gate.dtype)
        if not self.training:
            return hard
        soft = torch.sigmoid(self.g_a_chsel_gate)
        return hard + soft - soft.detach()

    def selected(self) -> List[int]:
        """The coded channels of ``y``, in order."""
        return [int(i) for i in torch.nonzero(self.g_a_chsel_gate.detach() > 0).flatten()]

    def _fill(self, y_kept: Tensor, means: Tensor) -> Tensor:
        """The decoder's latent: the kept channels decoded, the hyperprior's means elsewhere."""
        y_hat = means.clone()
        y_hat[:, self.selected()] = y_kept
        return y_hat

    def machine_features(self, y_hat: Tensor, size: Sequence[int]) -> Dict[str, Tensor]:
        """``{"res2": features}`` of a decoded latent, cropped to an image of ``size``."""
        features = self.g_s_chsel_transform(channels_last(y_hat))
        rows, cols = (math.ceil(int(s) / FEATURE_STRIDE) for s in size)
        return {FEATURE_ENTRY: features[..., :rows, :cols].contiguous()}

    # ------------------------------------------------------------------------------
    # CompressAI API
    # ------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Dict[str, Any]:
        """Code ``x`` with noise (train) or rounding (eval); the likelihoods of the
        uncoded channels are 1, ``features`` feed the recognition network."""
        self._check_input(x)
        size = x.shape[-2:]
        y = self.analysis(self._pad(x))
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.h_s(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        mask = self.gate().view(1, -1, 1, 1).to(y_hat.dtype)
        y_kept = mask * y_hat + (1 - mask) * means
        return {
            "x_hat": self._crop(self.synthesis(y_kept), size),
            "likelihoods": {"y": y_likelihoods**mask, "z": z_likelihoods},
            "features": self.machine_features(y_kept, size),
        }

    def _coding_terms(self, x: Tensor, side: Any) -> CodingTerms:
        """What :meth:`compress` codes: the kept channels of ``y`` only."""
        terms = super()._coding_terms(x, side)
        kept = self.selected()
        return terms._replace(y=terms.y[:, kept], means=terms.means[:, kept], indexes=terms.indexes[:, kept])

    def _decode_y(self, y_strings: List[bytes], scales: Tensor, means: Tensor) -> Tensor:
        kept = self.selected()
        if not kept:  # nothing was coded: the strings must be empty
            if any(y_strings):
                raise BitstreamError("y strings for a codec that codes no channel")
            return means.clone()
        return self._fill(super()._decode_y(y_strings, scales[:, kept], means[:, kept]), means)

    @codes_in_eval_mode
    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> Dict[str, Any]:
        """Decode to ``{"x_hat", "features"}`` (``x_hat`` clamped to [0, 1])."""
        y_strings, z_strings, size = self._check_strings(strings, shape)
        y_hat = self._decode_latents(y_strings, z_strings, shape)
        x_hat = self._crop(self.synthesis(y_hat), size).clamp_(0, 1)
        return {"x_hat": x_hat, "features": self.machine_features(y_hat, size)}
