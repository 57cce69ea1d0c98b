"""TransTIC: the frozen TIC base codec steered to machine perception by prompts."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..layers import PromptGenerator, WindowPrompts, conv, deconv
from ..prompts import PromptConfig
from ..state_dicts import check_architecture, checkpoint_filter_fn, needs_entropy_update
from .tic import TIC, _channels_last

__all__ = ["TransTIC", "PROMPT_KEYWORD"]

logger = logging.getLogger(__name__)

#: every prompt parameter and buffer has this in its name; nothing of the base codec does
PROMPT_KEYWORD = "prompt"


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


class TransTIC(TIC):
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
    is frozen (``requires_grad=False``). ``base_state_dict()`` returns the base weights.

    Args:
        config: prompt configuration (default: the released "Deep" model).
        N: channels of the transforms.
        M: channels of the latent.
        **kwargs: forwarded to :class:`TIC`.
    """

    def __init__(self, config: Optional[PromptConfig] = None, N: int = 128, M: int = 192, **kwargs: Any) -> None:
        super().__init__(N=N, M=M, **kwargs)
        self.config = config if config is not None else PromptConfig()
        cfg = self.config
        d = cfg.encoder_downsample
        deep = cfg.depth == "deep"

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

        self.freeze_base()

    # ------------------------------------------------------------------------------
    # parameter groups
    # ------------------------------------------------------------------------------
    @staticmethod
    def is_prompt_key(name: str) -> bool:
        """Whether a parameter/buffer name belongs to the prompt parts."""
        return PROMPT_KEYWORD in name

    def freeze_base(self) -> None:
        """Set ``requires_grad=False`` on every base-codec parameter (entropy models too)."""
        for name, p in self.named_parameters():
            p.requires_grad_(self.is_prompt_key(name))

    def named_prompt_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """The trainable prompt parameters with their names."""
        for name, p in self.named_parameters():
            if self.is_prompt_key(name):
                yield name, p

    def prompt_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable prompt parameters (what an optimizer should get)."""
        for _, p in self.named_prompt_parameters():
            yield p

    def prompt_state_dict(self) -> Dict[str, Tensor]:
        """Prompt parameters and buffers (BatchNorm statistics of the generator)."""
        return {k: v for k, v in self.state_dict().items() if self.is_prompt_key(k)}

    def base_state_dict(self) -> Dict[str, Tensor]:
        """The base codec's weights, keyed exactly as a :class:`TIC` state dict."""
        return {k: v for k, v in self.state_dict().items() if not self.is_prompt_key(k)}

    def load_prompt_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Replace the prompt parameters/buffers; keys and shapes must match exactly,
        and are all checked before any tensor is changed."""
        expected = set(self.prompt_state_dict())
        given = set(state_dict)
        if expected != given:
            missing, unexpected = sorted(expected - given), sorted(given - expected)
            raise KeyError(f"prompt weights do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        own = self.state_dict(keep_vars=True)
        for key, value in state_dict.items():  # check everything before changing anything
            if own[key].shape != value.shape:
                raise ValueError(f"prompt tensor {key}: shape {tuple(value.shape)} != model's {tuple(own[key].shape)}")
        with torch.no_grad():
            for key, value in state_dict.items():
                own[key].copy_(value)

    def load_base_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load TIC weights into the base codec; prompts are left as they are."""
        full = dict(self.prompt_state_dict())
        full.update(state_dict)
        self.load_state_dict(full, strict=True)

    # ------------------------------------------------------------------------------
    # prompted transforms
    # ------------------------------------------------------------------------------
    def _encoder_prompts(self, maps: List[Tensor]) -> List[Optional[WindowPrompts]]:
        cfg = self.config
        full = cfg.depth == "shallow"
        return [
            WindowPrompts(
                prompt_map=_nhwc(m),
                downsample=cfg.encoder_downsample,
                legacy_mask=cfg.encoder_mask == "legacy",
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
        x = _channels_last(y_hat)
        ip_map: Optional[Tensor] = None
        stages = (("g_s0", self.g_s1), ("g_s2", self.g_s3), ("g_s4", self.g_s5), ("g_s6", self.g_s7))
        for name, upsample in stages:
            rstb = getattr(self, name)
            prompts: Optional[List[Optional[WindowPrompts]]] = None
            if name in cfg.decoder_tp_modules:
                emb = rstb.residual_group.prompt_embeddings.to(x.dtype)
                if cfg.depth == "deep":
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

    # ------------------------------------------------------------------------------
    # construction from weights
    # ------------------------------------------------------------------------------
    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, Tensor], config: Optional[PromptConfig] = None, **kwargs: Any
    ) -> "TransTIC":
        """Build the TransTIC that ``state_dict`` belongs to (config inferred from the
        keys unless given) and load it strictly."""
        state_dict = checkpoint_filter_fn(state_dict)
        check_architecture(state_dict, "transtic")
        N = state_dict["g_a0.weight"].size(0)
        M = state_dict["g_a6.weight"].size(0)
        config = config if config is not None else PromptConfig.from_state_dict(state_dict)
        net = cls(config=config, N=N, M=M, **kwargs)
        net.load_state_dict(state_dict)
        if needs_entropy_update(state_dict):  # e.g. the released base_codec_4 lacks its tables
            logger.info("rebuilding the entropy-coder tables the weights lack (update())")
            net.update()
        return net

    @classmethod
    def from_base(
        cls, base: Union[TIC, Mapping[str, Tensor]], config: Optional[PromptConfig] = None, **kwargs: Any
    ) -> "TransTIC":
        """A TransTIC with freshly initialised prompts on the weights of a base codec.

        Args:
            base: a :class:`TIC` model or its state dict.
            config: prompt configuration (default: the released "Deep" model).
        """
        sd = base.state_dict() if isinstance(base, nn.Module) else dict(base)
        N = sd["g_a0.weight"].size(0)
        M = sd["g_a6.weight"].size(0)
        net = cls(config=config, N=N, M=M, **kwargs)
        net.load_base_state_dict(sd)
        return net
