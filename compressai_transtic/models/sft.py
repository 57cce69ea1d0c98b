"""TIC+SFT: the frozen TIC steered to a machine task by spatial feature transforms.

The paper's first learned baseline (supplementary A1.3, Fig. A3). Where the paper
leaves a choice open, this module takes the reading documented in :class:`TICSFT`
(and in the README); every such choice is a field of :class:`SFTConfig` or stated
there, none is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence

import torch.nn as nn
from torch import Tensor

from ..adapter_files import MAX_ADAPTER_SIZE
from ..layers import conv, deconv
from ..state_dicts import CheckpointError, weight_channels, weight_keys
from .adapted import AdaptedCodec, ConfigDict
from .tic import channels_last

__all__ = ["SFTConfig", "SFTLayer", "TICSFT", "run_stages"]

#: slope of the LeakyReLU activations of the condition networks and SFT layers (as in
#: Wang et al.'s SFT-GAN)
LEAKY_SLOPE = 0.1


@dataclass(frozen=True)
class SFTConfig(ConfigDict):
    """Where TIC+SFT puts spatial feature transforms.

    Args:
        encoder: SFT after each Swin stage of ``g_a`` (``g_a1``, ``g_a3``, ``g_a5``,
            ``g_a7``), conditioned on the input image.
        hyper: SFT after each Swin stage of ``h_a`` (``h_a1``, ``h_a3``), conditioned on
            ``y`` (the input of ``h_a``).
        decoder: SFT after each Swin stage of ``g_s`` (``g_s0``, ``g_s2``, ``g_s4``,
            ``g_s6``), conditioned on the decoded latent ``y_hat`` (all the decoder has).
        width: channels of the condition networks and of the hidden layer of every SFT.
    """

    encoder: bool = True
    hyper: bool = True
    decoder: bool = True
    width: int = 64

    def __post_init__(self) -> None:
        self.check_types()
        if not (self.encoder or self.hyper or self.decoder):
            raise ValueError("this SFT configuration transforms nothing: use the 'tic' model instead")
        if int(self.width) < 1:
            raise ValueError(f"width must be positive (got {self.width})")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> "SFTConfig":
        """The configuration of TIC+SFT weights (full weights, or their adapter entries),
        read from their keys and shapes: a transform holds SFT layers when it has keys
        ``{g_a,h_a,g_s}_sft.*`` or ``..._sft_condition.*``, and the width is the output
        channels of each condition network's first convolution (they must agree).
        Every setting shows there, so nothing else is stored.

        Raises:
            CheckpointError: no SFT keys, a condition network's first convolution
                (``{part}_sft_condition.0.0.weight``) missing, not a tensor, not a
                convolution weight or of a width out of range (the message names the
                key), or widths that disagree.
        """
        keys = weight_keys(state_dict)
        present = {part: any(k.startswith((f"{part}_sft.", f"{part}_sft_condition.")) for k in keys) for part in _PARTS}
        if not any(present.values()):
            expected = ", ".join(f"{part}_sft" for part in _PARTS)
            raise CheckpointError(f"no TIC+SFT layers in these weights: expected keys starting with {expected}")
        widths = {
            key: weight_channels(state_dict, key, "first convolution of a condition network", MAX_ADAPTER_SIZE)
            for key in (f"{part}_sft_condition.0.0.weight" for part, ok in present.items() if ok)
        }
        if len(set(widths.values())) != 1:
            raise CheckpointError(f"the SFT condition networks disagree on the width: {widths}")
        try:
            return cls(encoder=present["g_a"], hyper=present["h_a"], decoder=present["g_s"], width=widths.popitem()[1])
        except ValueError as err:
            raise CheckpointError(f"the TIC+SFT settings of these weights are invalid: {err}") from None


#: the transforms that can hold SFT layers, in the order of :class:`SFTConfig`'s fields
_PARTS = ("g_a", "h_a", "g_s")


class SFTLayer(nn.Module):
    """Spatial feature transform (Wang, Yu, Dong, Loy, CVPR 2018): ``x * (1 + gamma) + beta``
    with ``gamma`` and ``beta`` made element-wise from a condition map by two small CNNs
    (3x3 conv, LeakyReLU, 3x3 conv; Song, Choi, Lee, ICCV 2021).

    The last convolution of both branches starts at zero, so a fresh layer is the
    identity and a fresh TIC+SFT codes exactly as its base codec.
    """

    def __init__(self, condition_channels: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.scale = self._branch(condition_channels, channels, hidden)
        self.shift = self._branch(condition_channels, channels, hidden)

    @staticmethod
    def _branch(condition_channels: int, channels: int, hidden: int) -> nn.Sequential:
        last = conv(hidden, channels, 3, 1)
        for p in last.parameters():
            nn.init.zeros_(p)
        return nn.Sequential(conv(condition_channels, hidden, 3, 1), nn.LeakyReLU(LEAKY_SLOPE), last)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        return x * (1 + self.scale(condition)) + self.shift(condition)


def _pyramid(in_channels: int, width: int, levels: int, upsample: bool) -> nn.ModuleList:
    """Condition network: one map per level, each a (transposed) convolution of stride 2
    of the previous one (the first of the input: stride 2 down, or stride 1 up) and a
    LeakyReLU."""

    def level(i: int) -> nn.Sequential:
        if upsample:
            layer = conv(in_channels, width, 3, 1) if i == 0 else deconv(width, width, 3, 2)
        else:
            layer = conv(in_channels if i == 0 else width, width, 3, 2)
        return nn.Sequential(layer, nn.LeakyReLU(LEAKY_SLOPE))

    return nn.ModuleList(level(i) for i in range(levels))


def _levels(pyramid: nn.ModuleList, x: Tensor) -> List[Tensor]:
    maps = []
    for level in pyramid:
        x = level(x)
        maps.append(x)
    return maps


def run_stages(
    x: Tensor, stages: Sequence[nn.Module], transforms: nn.ModuleList, conditions: Sequence[Tensor]
) -> Tensor:
    """Run a transform's stages, the output of each Swin stage (not of a (transposed)
    convolution) passed through the next of ``transforms`` with the next condition."""
    sft = 0
    for stage in stages:
        x = stage(x)
        if not isinstance(stage, (nn.Conv2d, nn.ConvTranspose2d)):
            x = transforms[sft](x, conditions[sft])
            sft += 1
    return x


class TICSFT(AdaptedCodec):
    r"""TIC+SFT: the frozen :class:`TIC` with spatial feature transform layers in ``g_a``,
    ``h_a`` and ``g_s`` (TransTIC supplementary A1.3, Fig. A3; SFT of Wang et al.,
    CVPR 2018, its affine parameters made by CNNs as in Song et al., ICCV 2021).

    Readings of what the paper leaves open (each a field of :class:`SFTConfig` or
    stated here):

    * an SFT layer follows every Swin stage (RSTB) of the three transforms, before the
      next convolution: 4 in ``g_a``, 2 in ``h_a``, 4 in ``g_s``;
    * the condition of the encoder's layers is the (padded) input image, turned into
      maps at 1/2, 1/4, 1/8 and 1/16 by a stack of stride-2 3x3 convolutions; the
      hyper-analysis is conditioned on ``y`` (maps at 1/32 and 1/64), and the decoder,
      which has neither the image nor ``y``, on ``y_hat`` (a 3x3 convolution at 1/16,
      then stride-2 transposed convolutions to 1/8, 1/4 and 1/2);
    * condition networks and SFT hidden layers are ``width`` channels wide (64);
      LeakyReLU(0.1) activations;
    * the SFT output is ``x * (1 + gamma) + beta`` with zero-initialised last
      convolutions: training starts from the base codec's exact behaviour.

    The trainable parts (every name holds ``sft``): ``g_a_sft_condition``, ``g_a_sft``,
    ``h_a_sft_condition``, ``h_a_sft``, ``g_s_sft_condition``, ``g_s_sft``. The
    hyper-synthesis and the entropy models are the base codec's, frozen.

    Args:
        config: where the SFT layers go and their width (default: everywhere, 64).
        N: channels of the transforms.
        M: channels of the latent.
        **kwargs: forwarded to :class:`TIC`.
    """

    arch = "tic-sft"
    config_class = SFTConfig

    def __init__(self, config: Optional[SFTConfig] = None, N: int = 128, M: int = 192, **kwargs: Any) -> None:
        super().__init__(config, N=N, M=M, **kwargs)
        w = self.config.width
        if self.config.encoder:
            self.g_a_sft_condition = _pyramid(3, w, 4, upsample=False)
            self.g_a_sft = nn.ModuleList(SFTLayer(w, c, w) for c in (N, N, N, M))
        if self.config.hyper:
            self.h_a_sft_condition = _pyramid(M, w, 2, upsample=False)
            self.h_a_sft = nn.ModuleList(SFTLayer(w, N, w) for _ in range(2))
        if self.config.decoder:
            self.g_s_sft_condition = _pyramid(M, w, 4, upsample=True)
            self.g_s_sft = nn.ModuleList(SFTLayer(w, c, w) for c in (M, N, N, N))
        self.freeze_base()

    def analysis(self, x: Tensor) -> Tensor:
        if not self.config.encoder:
            return super().analysis(x)
        stages = [getattr(self, f"g_a{i}") for i in range(8)]
        return run_stages(x, stages, self.g_a_sft, _levels(self.g_a_sft_condition, x))

    def h_a(self, y: Tensor) -> Tensor:
        if not self.config.hyper:
            return super().h_a(y)
        stages = [getattr(self, f"h_a{i}") for i in range(4)]
        return run_stages(y, stages, self.h_a_sft, _levels(self.h_a_sft_condition, y))

    def synthesis(self, y_hat: Tensor) -> Tensor:
        if not self.config.decoder:
            return super().synthesis(y_hat)
        y_hat = channels_last(y_hat)
        stages = [getattr(self, f"g_s{i}") for i in range(8)]
        return run_stages(y_hat, stages, self.g_s_sft, _levels(self.g_s_sft_condition, y_hat))
