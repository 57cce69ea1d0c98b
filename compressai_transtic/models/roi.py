"""TIC+ROI: spatially adaptive (quality-map) coding on the frozen TIC.

The paper's third learned baseline (supplementary, after Song, Choi, Lee, "Variable-
Rate Deep Image Compression through Spatially-Adaptive Feature Transform", ICCV
2021): a quality map marks the task-relevant regions, and spatial feature transforms
conditioned on it let the frozen codec spend bits there. The map travels in the
bitstream (:mod:`compressai_transtic.quality_maps`), so the decoder uses exactly the
map the encoder used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..adapter_files import MAX_ADAPTER_SIZE
from ..bitstream import BitstreamError
from ..layers import conv
from ..quality_maps import (
    CELL,
    QualityMapSampler,
    check_quality_map,
    grid_size,
    pack_map,
    quantize_map,
    unpack_map,
)
from ..state_dicts import CheckpointError, weight_channels, weight_integer, weight_number
from .adapted import AdaptedCodec, ConfigDict
from .sft import LEAKY_SLOPE, SFTLayer, run_stages
from .tic import PAD_MULTIPLE, CodingTerms, channels_last, codes_in_eval_mode

__all__ = ["ROIConfig", "TICROI"]


@dataclass(frozen=True)
class ROIConfig(ConfigDict):
    """Settings of TIC+ROI.

    Args:
        levels: quality levels of the coded map (2..255): a map value is rounded to
            ``0, 1/(levels-1), ..., 1``.
        width: channels of the condition networks and SFT hidden layers.
        min_weight: in training, the task distortion of a position of map value ``m``
            is weighted by ``min_weight ** (1 - m)``: 1 at full quality, ``min_weight``
            in the background (Song et al.'s exponential map of the quality level).
    """

    levels: int = 4
    width: int = 64
    min_weight: float = 0.01

    def __post_init__(self) -> None:
        self.check_types()
        if not 2 <= int(self.levels) <= 255:
            raise ValueError(f"levels must be within 2..255 (got {self.levels})")
        if int(self.width) < 1:
            raise ValueError(f"width must be positive (got {self.width})")
        if not (0 < float(self.min_weight) <= 1):
            raise ValueError(f"min_weight must be within (0, 1] (got {self.min_weight})")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> "ROIConfig":
        """The settings of TIC+ROI weights (full weights, or their adapter entries).

        All three are stored: ``width`` in the shapes (``g_a_roi_condition.0.0.weight``);
        ``levels`` and ``min_weight``, which no shape shows, in the buffers
        ``roi_levels`` (int64) and ``roi_min_weight`` (float64) that every TIC+ROI holds,
        so the weights alone rebuild the configuration exactly.

        Raises:
            CheckpointError: one of those entries is missing, not a tensor, of the wrong
                shape, not an integer (``roi_levels``), NaN or out of range; the message
                names the key.
        """
        levels = _stored_levels(state_dict)
        width = weight_channels(
            state_dict, "g_a_roi_condition.0.0.weight", "first convolution of a condition network", MAX_ADAPTER_SIZE
        )
        min_weight = _stored_min_weight(state_dict)
        if not 0 < min_weight <= 1:
            raise CheckpointError(
                f"roi_min_weight (training weight of the lowest map value) must be within (0, 1], got {min_weight}"
            )
        try:
            return cls(levels=levels, width=width, min_weight=min_weight)
        except ValueError as err:
            raise CheckpointError(f"the TIC+ROI settings of these weights are invalid: {err}") from None


def _stored_levels(state_dict: Mapping[str, Any]) -> int:
    """The map levels TIC+ROI weights store (``roi_levels``), checked."""
    return weight_integer(state_dict, "roi_levels", "quality levels of the coded map", 2, 255)


def _stored_min_weight(state_dict: Mapping[str, Any]) -> float:
    """The lowest map value's training weight TIC+ROI weights store (``roi_min_weight``)."""
    return weight_number(state_dict, "roi_min_weight", "training weight of the lowest map value")


def _condition(width: int) -> nn.Sequential:
    """Quality map (1 channel, at a stage's resolution) -> condition features."""
    return nn.Sequential(
        conv(1, width, 3, 1), nn.LeakyReLU(LEAKY_SLOPE), conv(width, width, 3, 1), nn.LeakyReLU(LEAKY_SLOPE)
    )


def _resized(grid_map: Tensor, size: Sequence[int]) -> Tensor:
    """The grid map at a stage's resolution: repeated cells above the grid's, cell
    averages below it."""
    h, w = int(size[0]), int(size[1])
    if h >= grid_map.shape[-2]:
        return F.interpolate(grid_map, size=(h, w), mode="nearest")
    return F.adaptive_avg_pool2d(grid_map, (h, w))


class TICROI(AdaptedCodec):
    r"""TIC+ROI: the frozen :class:`TIC` with quality-map-conditioned spatial feature
    transforms in ``g_a``, ``h_a`` and ``g_s`` (after Song, Choi, Lee, ICCV 2021), so
    that a map can steer where the bits go.

    Readings of what the paper leaves open (stated here and in the README):

    * the layout of :class:`~compressai_transtic.models.TICSFT` (an SFT layer after
      every Swin stage, zero-initialised: a fresh TIC+ROI codes as its base), with the
      condition of every layer made from the quality map alone (a 3x3 conv, LeakyReLU,
      3x3 conv, LeakyReLU of the map at the stage's resolution);
    * the map lives on the grid of ``y`` (one cell per 16 x 16 pixels), quantised to
      ``levels`` values; each image's cells are coded (zlib) as a fourth string list
      of ``compress``, so rates measured on the bitstream include them, and the decoder
      conditions ``g_s`` on exactly the encoder's map;
    * training: without a given map, every image draws a random map (uniform level,
      ramp or rectangles, as Song et al.), and the task distortion at each position is
      weighted by ``min_weight ** (1 - m)`` (the forward output's
      ``distortion_weight``, read by the perceptual losses);
    * at inference the map comes from the caller (``forward(x, quality_map)``,
      ``compress(x, quality_map)``: a user's map, one made from boxes or masks, or a
      task network's saliency); without one every cell is at full quality.

    Args:
        config: map levels, width, distortion weighting.
        N: channels of the transforms.
        M: channels of the latent.
        **kwargs: forwarded to :class:`TIC`.
    """

    arch = "tic-roi"
    config_class = ROIConfig
    roi_levels: Tensor
    roi_min_weight: Tensor

    def __init__(self, config: Optional[ROIConfig] = None, N: int = 128, M: int = 192, **kwargs: Any) -> None:
        super().__init__(config, N=N, M=M, **kwargs)
        w = self.config.width
        self.g_a_roi_condition = nn.ModuleList(_condition(w) for _ in range(4))
        self.g_a_roi = nn.ModuleList(SFTLayer(w, c, w) for c in (N, N, N, M))
        self.h_a_roi_condition = nn.ModuleList(_condition(w) for _ in range(2))
        self.h_a_roi = nn.ModuleList(SFTLayer(w, N, w) for _ in range(2))
        self.g_s_roi_condition = nn.ModuleList(_condition(w) for _ in range(4))
        self.g_s_roi = nn.ModuleList(SFTLayer(w, c, w) for c in (M, N, N, N))
        self.roi_sampler = QualityMapSampler()
        self.register_buffer("roi_levels", torch.tensor(int(self.config.levels)))
        self.register_buffer("roi_min_weight", torch.tensor(float(self.config.min_weight), dtype=torch.float64))
        self.freeze_base()

    # ------------------------------------------------------------------------------
    # loading: the stored settings must be the model's
    # ------------------------------------------------------------------------------
    def _fit_stored_settings(self, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
        """``state_dict`` with ``roi_levels`` and ``roi_min_weight`` of the model's
        configuration, after checking that the stored ones (where present) are its:
        ``roi_min_weight`` compared at the precision it was stored in (a float32 entry
        holds a rounded value), and never copied, so the buffer stays the
        configuration's float64 value.

        Raises:
            CheckpointError: stored settings that are unreadable (naming the key) or
                other than the configuration's.
        """
        if not isinstance(state_dict, Mapping):
            return state_dict
        wrong: Dict[str, float] = {}
        if "roi_levels" in state_dict:
            levels = _stored_levels(state_dict)
            if levels != self.config.levels:
                wrong["roi_levels"] = levels
        if "roi_min_weight" in state_dict:
            stored = state_dict["roi_min_weight"]
            weight = _stored_min_weight(state_dict)
            ours = float(self.config.min_weight)
            if stored.is_floating_point():
                ours = float(torch.tensor(ours, dtype=stored.dtype))
            if weight != ours:
                wrong["roi_min_weight"] = weight
        if wrong:
            raise CheckpointError(f"tic-roi weights with settings {wrong}, but this model has {self.config}")
        own = {
            "roi_levels": torch.tensor(int(self.config.levels)),
            "roi_min_weight": torch.tensor(float(self.config.min_weight), dtype=torch.float64),
        }
        return {k: own[k] if k in own else v for k, v in state_dict.items()}

    def check_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """:meth:`TIC.check_state_dict`, refusing weights stored with other map settings."""
        super().check_state_dict(self._fit_stored_settings(state_dict), strict=strict)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """:meth:`TIC.load_state_dict`, refusing weights stored with other map settings."""
        return super().load_state_dict(self._fit_stored_settings(state_dict), strict=strict, assign=assign)

    def load_adapter_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """:meth:`AdaptedCodec.load_adapter_state_dict`, refusing weights stored with other
        map settings; every check comes before any tensor changes."""
        self.check_adapter_state_dict(state_dict)
        self._copy_adapter(self._fit_stored_settings(state_dict))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "TICROI":
        """``nn.Module._apply`` (``to``, ``half``, ``double`` ...), keeping ``roi_min_weight``
        a float64 tensor of the configuration's value on the new device: a setting,
        which a cast to a lower precision would round (0.01 read back as 0.0099999998)."""
        super()._apply(fn, recurse)
        weight = self._buffers.get("roi_min_weight")
        if weight is not None and weight.dtype != torch.float64:
            self.roi_min_weight = torch.tensor(float(self.config.min_weight), dtype=torch.float64, device=weight.device)
        return self

    # ------------------------------------------------------------------------------
    # the map
    # ------------------------------------------------------------------------------
    def map_levels(self, x: Tensor, quality_map: Optional[Tensor]) -> Tensor:
        """The quantised map of a batch, ``(B, 1, gh, gw)`` level indexes: the caller's,
        else a random one per image in training, else full quality everywhere."""
        grid = grid_size(x.shape[-2], x.shape[-1], PAD_MULTIPLE)
        top = self.config.levels - 1
        if quality_map is not None:
            return quantize_map(check_quality_map(quality_map, x.shape[0]).to(x.device), x.shape[-2:], grid, top + 1)
        if self.training:
            return torch.round(self.roi_sampler(x.shape[0], grid) * top).to(device=x.device, dtype=torch.uint8)
        return torch.full((x.shape[0], 1, *grid), top, dtype=torch.uint8, device=x.device)

    def _grid_map(self, levels_index: Tensor, dtype: torch.dtype) -> Tensor:
        return levels_index.to(dtype) / (self.config.levels - 1)

    def _default_grid(self, like: Tensor, scale: int) -> Tensor:
        h, w = like.shape[-2] * scale // CELL, like.shape[-1] * scale // CELL
        return like.new_ones(like.shape[0], 1, h, w)

    def _conditions(self, nets: nn.ModuleList, grid_map: Tensor, sizes: List[Tuple[int, int]]) -> List[Tensor]:
        return [net(_resized(grid_map, size)) for net, size in zip(nets, sizes)]

    # ------------------------------------------------------------------------------
    # transforms
    # ------------------------------------------------------------------------------
    def analysis(self, x: Tensor, grid_map: Optional[Tensor] = None) -> Tensor:
        grid_map = self._default_grid(x, 1) if grid_map is None else grid_map
        h, w = x.shape[-2:]
        sizes = [(h // s, w // s) for s in (2, 4, 8, 16)]
        stages = [getattr(self, f"g_a{i}") for i in range(8)]
        return run_stages(x, stages, self.g_a_roi, self._conditions(self.g_a_roi_condition, grid_map, sizes))

    def h_a(self, y: Tensor, grid_map: Optional[Tensor] = None) -> Tensor:
        grid_map = self._default_grid(y, CELL) if grid_map is None else grid_map
        h, w = y.shape[-2:]
        sizes = [(h // 2, w // 2), (h // 4, w // 4)]
        stages = [getattr(self, f"h_a{i}") for i in range(4)]
        return run_stages(y, stages, self.h_a_roi, self._conditions(self.h_a_roi_condition, grid_map, sizes))

    def synthesis(self, y_hat: Tensor, grid_map: Optional[Tensor] = None) -> Tensor:
        y_hat = channels_last(y_hat)
        grid_map = self._default_grid(y_hat, CELL) if grid_map is None else grid_map
        h, w = y_hat.shape[-2:]
        sizes = [(h * s, w * s) for s in (1, 2, 4, 8)]
        stages = [getattr(self, f"g_s{i}") for i in range(8)]
        return run_stages(y_hat, stages, self.g_s_roi, self._conditions(self.g_s_roi_condition, grid_map, sizes))

    # ------------------------------------------------------------------------------
    # CompressAI API with a quality map
    # ------------------------------------------------------------------------------
    def forward(self, x: Tensor, quality_map: Optional[Tensor] = None) -> Dict[str, Any]:
        """:meth:`TIC.forward` under a quality map (see :meth:`map_levels`).

        The output adds ``quality_map`` (the quantised map on the latent grid) and
        ``distortion_weight`` (the training weight of each cell, cropped to the cells
        that cover the image).
        """
        self._check_input(x)
        grid_map = self._grid_map(self.map_levels(x, quality_map), x.dtype)
        out = self._forward(x, (grid_map,))
        cells = (math.ceil(x.shape[-2] / CELL), math.ceil(x.shape[-1] / CELL))
        weight = torch.pow(self.roi_min_weight.to(x.dtype), 1 - grid_map[..., : cells[0], : cells[1]])
        out.update(quality_map=grid_map, distortion_weight=weight)
        return out

    @codes_in_eval_mode
    def coding_terms(self, x: Tensor, quality_map: Optional[Tensor] = None) -> CodingTerms:
        """:meth:`TIC.coding_terms` under a quality map (see :meth:`map_levels`); the coded
        map of each image is their side string."""
        self._check_input(x)
        levels_index = self.map_levels(x, quality_map)
        terms = self._coding_terms(x, (self._grid_map(levels_index, x.dtype),))
        return terms._replace(side_strings=([pack_map(m, self.config.levels) for m in levels_index],))

    @codes_in_eval_mode
    def compress(self, x: Tensor, quality_map: Optional[Tensor] = None) -> Dict[str, Any]:
        """:meth:`TIC.compress` under a quality map; ``strings`` gains a fourth list: the
        coded map of each image."""
        return self.compress_terms(self.coding_terms(x, quality_map), x.shape[-2:])

    @codes_in_eval_mode
    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int]) -> Dict[str, Tensor]:
        """Decode ``[y, z, header, map]`` strings of :meth:`compress` (image clamped)."""
        if not isinstance(strings, (list, tuple)) or len(strings) != 4 or not isinstance(strings[3], (list, tuple)):
            raise BitstreamError(
                "expected strings = [y_strings, z_strings, header_strings, map_strings] as returned by "
                "TICROI.compress()"
            )
        y_strings, z_strings, size = self._check_strings(strings[:3], shape)
        if len(strings[3]) != len(y_strings):
            raise BitstreamError(f"{len(strings[3])} quality-map strings for {len(y_strings)} images")
        grid = grid_size(size[0], size[1], PAD_MULTIPLE)
        levels_index = torch.stack([unpack_map(s, grid, self.config.levels) for s in strings[3]])
        y_hat = self._decode_latents(y_strings, z_strings, shape)  # after the maps passed their checks
        grid_map = self._grid_map(levels_index.to(y_hat.device), y_hat.dtype)
        return {"x_hat": self._crop(self.synthesis(y_hat, grid_map), size).clamp_(0, 1)}
