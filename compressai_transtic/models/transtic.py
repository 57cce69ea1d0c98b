"""TransTIC: the frozen TIC base codec steered to machine perception by prompts."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..layers import WindowPrompts, conv, deconv
from ..prompts import SETTINGS_KEY, VARIANTS, EncoderMask, PromptConfig, PromptDepth
from .adapted import AdaptedCodec
from .prompt_generator import PromptGenerator
from .tic import channels_last

__all__ = ["TransTIC"]

logger = logging.getLogger(__name__)


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


class TransTIC(AdaptedCodec):
    r"""TransTIC (Chen, Weng, Liu, Peng, "TransTIC: Transferring Transformer-based Image
    Compression from Human Perception to Machine Perception", ICCV 2023).

    A frozen :class:`TIC` base codec with

    * instance-specific (IP-type) prompts in the encoder: a U-Net-like prompt generator
      turns the image into a feature map at 1/2; per-block 3x3 convolutions of stride
      ``d`` make prompt maps whose co-located tokens join every window of the Swin
      blocks of ``g_a1`` and ``g_a3`` as extra keys and values;
    * task-specific (TP-type) learned prompts in the decoder: ``prompt_embeddings`` of
      shape ``(blocks, P, dim)`` in the STBs ``g_s0/2/4/6``, shared by every window;
    * optionally IP-type decoder prompts made from the decoded latent (see
      :class:`~compressai_transtic.prompts.PromptConfig`).

    Only the prompt parts are trainable; the base codec, its entropy models included,
    is frozen (``requires_grad=False``). ``base_state_dict()`` returns the base weights,
    ``prompt_state_dict()`` (= ``adapter_state_dict()``) the prompts.

    The weights carry the configuration: where a setting shows in no key or shape (the
    encoder mask layout; the prompt count without decoder prompt embeddings; the
    generator width without a generator) and differs from what
    :meth:`PromptConfig.from_state_dict` would take it to be, the model holds the int64
    buffer ``prompt_settings`` (:meth:`PromptConfig.stored_settings`), part of the
    adapter. The released model and the Table A1 presets hold none (their keys are the
    released ones). Loading refuses weights whose stored settings differ from the
    model's configuration, and gives weights that store none the model's.

    Args:
        config: prompt configuration (default: the released "Deep" model), or the name
            of a variant (a key of :data:`~compressai_transtic.prompts.VARIANTS`, e.g.
            ``"stb-12"``), which is resolved to its configuration. An unknown name
            raises ``ValueError`` and anything else (e.g. a dict) ``TypeError``, both
            listing the variant names.
        N: channels of the transforms.
        M: channels of the latent.
        **kwargs: forwarded to :class:`TIC`.
    """

    arch = "transtic"
    config_class = PromptConfig
    presets = VARIANTS

    def __init__(
        self, config: Union[PromptConfig, str, None] = None, N: int = 128, M: int = 192, **kwargs: Any
    ) -> None:
        super().__init__(config, N=N, M=M, **kwargs)
        cfg = self.config
        d = cfg.encoder_downsample
        deep = cfg.depth is PromptDepth.DEEP

        if cfg.encoder_prompts:
            self.g_a0_prompt = PromptGenerator(N, width=cfg.generator_width)
            n1 = len(self.g_a1.residual_group.blocks) if deep else 1
            n3 = len(self.g_a3.residual_group.blocks) if deep else 1
            self.g_a0_prompt_layers = nn.ModuleList([conv(N, N, 3, d) for _ in range(n1)])
            self.g_a2_prompt = conv(N, N, 3, 2)
            self.g_a2_prompt_layers = nn.ModuleList([conv(N, N, 3, d) for _ in range(n3)])

        for name in cfg.decoder_tp_modules:
            rstb = getattr(self, name)
            depth = len(rstb.residual_group.blocks) if deep else 1
            bound = math.sqrt(6.0 / (3 + rstb.dim))
            emb = torch.empty(depth, cfg.num_prompts, rstb.dim).uniform_(-bound, bound)
            rstb.residual_group.prompt_embeddings = nn.Parameter(emb)

        previous_dim: Optional[int] = None
        for name in cfg.decoder_ip_modules:
            rstb = getattr(self, name)
            dim = rstb.dim
            if previous_dim is None:  # first prompted stage: 3x3 conv of its own input
                setattr(self, f"{name}_prompt", conv(dim, dim, 3, 1))
            else:  # later stages: upsample the previous prompt map
                setattr(self, f"{name}_prompt", deconv(previous_dim, dim, 3, 2))
            blocks = len(rstb.residual_group.blocks)
            setattr(self, f"{name}_prompt_layers", nn.ModuleList([conv(dim, dim, 3, d) for _ in range(blocks)]))
            previous_dim = dim

        settings = cfg.stored_settings()
        if settings is not None:  # the settings its keys cannot show (see PromptConfig.stored_settings)
            self.register_buffer(SETTINGS_KEY, settings)
        self.freeze_base()

    # ------------------------------------------------------------------------------
    # loading: the stored settings must be the model's
    # ------------------------------------------------------------------------------
    def check_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """:meth:`TIC.check_state_dict` of the weights as this model loads them: the
        settings they store (``prompt_settings``) must be its configuration's, and
        weights that store none take its configuration's
        (:meth:`PromptConfig.fit_state_dict`)."""
        super().check_state_dict(self.config.fit_state_dict(state_dict), strict=strict)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """:meth:`TIC.load_state_dict`, refusing (with a ``CheckpointError``) weights that
        store other settings than the model's configuration (see :meth:`check_state_dict`)."""
        return super().load_state_dict(self.config.fit_state_dict(state_dict), strict=strict, assign=assign)

    def load_adapter_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """:meth:`AdaptedCodec.load_adapter_state_dict`, refusing prompts that store other
        settings than the model's configuration; prompts without a :data:`SETTINGS_KEY`
        entry take the model's."""
        super().load_adapter_state_dict(self.config.fit_state_dict(state_dict))

    # ------------------------------------------------------------------------------
    # TransTIC's names of the adapter methods
    # ------------------------------------------------------------------------------
    @classmethod
    def is_prompt_key(cls, name: str) -> bool:
        """Whether a parameter/buffer name belongs to the prompt parts."""
        return cls.is_adapter_key(name)

    def named_prompt_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """The trainable prompt parameters with their names."""
        return self.named_adapter_parameters()

    def prompt_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable prompt parameters (what an optimizer should get)."""
        return (p for _, p in self.named_adapter_parameters())

    def prompt_state_dict(self) -> Dict[str, Tensor]:
        """Prompt parameters and buffers (BatchNorm statistics of the generator)."""
        return self.adapter_state_dict()

    def load_prompt_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Replace the prompt parameters/buffers (see :meth:`load_adapter_state_dict`)."""
        self.load_adapter_state_dict(state_dict)

    # ------------------------------------------------------------------------------
    # prompted transforms
    # ------------------------------------------------------------------------------
    def _encoder_prompts(self, maps: List[Tensor]) -> List[Optional[WindowPrompts]]:
        cfg = self.config
        full = cfg.depth is PromptDepth.SHALLOW
        return [
            WindowPrompts(
                prompt_map=_nhwc(m),
                downsample=cfg.encoder_downsample,
                legacy_mask=cfg.encoder_mask is EncoderMask.LEGACY,
                full_tokens=full,
            )
            for m in maps
        ]

    def analysis(self, x: Tensor) -> Tensor:
        if not self.config.encoder_prompts:
            return self.g_a(x)
        feat = self.g_a0(x)
        p1 = self.g_a0_prompt(x)
        feat = self.g_a1(feat, self._encoder_prompts([layer(p1) for layer in self.g_a0_prompt_layers]))
        feat = self.g_a2(feat)
        p3 = self.g_a2_prompt(p1)
        feat = self.g_a3(feat, self._encoder_prompts([layer(p3) for layer in self.g_a2_prompt_layers]))
        feat = self.g_a4(feat)
        feat = self.g_a5(feat)
        feat = self.g_a6(feat)
        return self.g_a7(feat)

    def synthesis(self, y_hat: Tensor) -> Tensor:
        cfg = self.config
        x = channels_last(y_hat)
        ip_map: Optional[Tensor] = None
        stages = (("g_s0", self.g_s1), ("g_s2", self.g_s3), ("g_s4", self.g_s5), ("g_s6", self.g_s7))
        for name, upsample in stages:
            rstb = getattr(self, name)
            prompts: Optional[List[Optional[WindowPrompts]]] = None
            if name in cfg.decoder_tp_modules:
                emb = rstb.residual_group.prompt_embeddings.to(x.dtype)
                if cfg.depth is PromptDepth.DEEP:
                    prompts = [WindowPrompts(tokens=emb[i]) for i in range(emb.shape[0])]
                else:
                    prompts = [WindowPrompts(tokens=emb[0], full_tokens=True)]
            elif name in cfg.decoder_ip_modules:
                source = getattr(self, f"{name}_prompt")
                ip_map = source(x if ip_map is None else ip_map)
                layers = getattr(self, f"{name}_prompt_layers")
                prompts = [
                    WindowPrompts(prompt_map=_nhwc(layer(ip_map)), downsample=cfg.encoder_downsample)
                    for layer in layers
                ]
            x = rstb(x, prompts)
            x = upsample(x)
        return x
