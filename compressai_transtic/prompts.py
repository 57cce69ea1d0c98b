"""TransTIC prompt configurations: every variant of the paper.

A :class:`PromptConfig` says where prompts go and how many there are; the named
presets of :data:`VARIANTS` are the rows of the paper's Table A1. The prompts of one
task are saved as an adapter file (:mod:`compressai_transtic.adapter_files`, whose
functions this module re-exports under their established names).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from .adapter_files import (
    ADAPTER_FORMAT,
    AdapterError,
    AdapterMismatchError,
    base_codec_hash,
    load_adapter,
    read_adapter,
    save_adapter,
)
from .jsonvalues import as_index

__all__ = [
    "MAX_ADAPTER_SIZE",
    "PromptConfig",
    "VARIANTS",
    "TABLE_A1_ROWS",
    "AdapterError",
    "AdapterMismatchError",
    "ADAPTER_FORMAT",
    "base_codec_hash",
    "save_adapter",
    "load_adapter",
    "read_adapter",
]

#: encoder prompt-map stride d relative to the prompted stage, per prompt count:
#: (8 / d)^2 prompt tokens per 8 x 8 window.
ENCODER_DOWNSAMPLE = {4: 4, 16: 2, 64: 1}

#: decoder STB numbering of the paper: STB-1 is g_s6 (nearest the image), STB-4 is g_s0
DECODER_STB_MODULES = {1: "g_s6", 2: "g_s4", 3: "g_s2", 4: "g_s0"}

#: the largest integer size (channels, prompts, levels) of an adapted codec's
#: configuration: 16 x TransTIC's default generator width, 2 x the largest default width
#: of the baselines; parameters and activations grow with its square. The trainer
#: bounds ``--adapter-option`` sizes by it too.
MAX_ADAPTER_SIZE = 512


def _check_stbs(name: str, value: Any) -> Tuple[int, ...]:
    """``value`` (a tuple or list of STB numbers) as sorted ``int``, or ``ValueError`` naming ``name``."""
    allowed = sorted(DECODER_STB_MODULES)
    numbers = [as_index(s) for s in value] if isinstance(value, (tuple, list)) else [None]
    if any(n is None for n in numbers):
        raise ValueError(
            f"PromptConfig.{name} must be a tuple or list of decoder STB numbers (ints from {allowed}), got {value!r}"
        )
    return tuple(sorted(n for n in numbers if n is not None))


def _check_field_types(config: "PromptConfig") -> None:
    """Refuse values of the wrong type by field name, before any value is interpreted;
    integers of any library (NumPy's...) become ``int``."""
    expected: Sequence[Tuple[str, type, str]] = (
        ("encoder_prompts", bool, "bool (True or False)"),
        ("num_prompts", int, "int, one of 4, 16, 64"),
        ("depth", str, "str, 'deep' or 'shallow'"),
        ("encoder_mask", str, "str, 'legacy' or 'aligned'"),
        ("generator_width", int, f"int, 1..{MAX_ADAPTER_SIZE}"),
    )
    for name, kind, what in expected:
        value = getattr(config, name)
        if kind is int and as_index(value) is not None:
            object.__setattr__(config, name, as_index(value))
        elif kind is int or not isinstance(value, kind):
            raise ValueError(f"PromptConfig.{name} must be of type {what}, got {value!r}")


@dataclass(frozen=True)
class PromptConfig:
    """Where TransTIC puts prompts.

    The defaults are the released model ("Deep", "Enc IP + Dec TP", 16 prompts,
    STB-1234).

    Args:
        encoder_prompts: instance-specific (IP-type) prompts, made from the image by a
            prompt generator, in the encoder stages g_a1 and g_a3.
        decoder_tp_stbs: decoder STBs (1 = g_s6 ... 4 = g_s0) with task-specific
            (TP-type) learned prompts.
        decoder_ip_stbs: decoder STBs with IP-type prompts made from the decoded
            latent; they must be consecutive. The first one gets a 3x3 convolution of
            its own input, each later one a stride-2 transposed convolution of the
            previous prompt map, and every block a 3x3 convolution of stride ``d``.
        num_prompts: prompts per 8 x 8 window: 4, 16 or 64 (encoder prompt-map stride
            4, 2, 1; decoder 4, 16, 64 learned tokens per block).
        depth: ``"deep"``: prompts given to every block as extra keys/values;
            ``"shallow"``: prompts enter the first block of an STB as full tokens and
            are carried (updated by attention and MLP) through the following blocks.
        encoder_mask: ``"legacy"`` reproduces the attention-mask layout that the
            released weights were trained with (mask columns misaligned with the
            prompt/image key order in shifted encoder blocks); ``"aligned"`` is the
            corrected layout, for new training. Legacy is undefined for 64 prompts.
        generator_width: channels of the first level of the prompt generator
            (1..:data:`MAX_ADAPTER_SIZE`).

    Raises:
        ValueError: a value of the wrong type (``encoder_prompts`` must be a ``bool``,
            the counts ``int`` and no ``bool``, the STB lists tuples or lists of ints:
            nothing is converted) or out of range, or an invalid combination; the
            message names the field.
    """

    encoder_prompts: bool = True
    decoder_tp_stbs: Tuple[int, ...] = (1, 2, 3, 4)
    decoder_ip_stbs: Tuple[int, ...] = ()
    num_prompts: int = 16
    depth: str = "deep"
    encoder_mask: str = "legacy"
    generator_width: int = 32

    def __post_init__(self) -> None:
        _check_field_types(self)
        for name in ("decoder_tp_stbs", "decoder_ip_stbs"):
            object.__setattr__(self, name, _check_stbs(name, getattr(self, name)))
        self.validate()

    # -- validation ------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending option for invalid combinations."""
        if self.num_prompts not in ENCODER_DOWNSAMPLE:
            raise ValueError(f"num_prompts must be one of 4, 16, 64 (got {self.num_prompts})")
        if self.depth not in ("deep", "shallow"):
            raise ValueError(f"depth must be 'deep' or 'shallow' (got {self.depth!r})")
        if self.encoder_mask not in ("legacy", "aligned"):
            raise ValueError(f"encoder_mask must be 'legacy' or 'aligned' (got {self.encoder_mask!r})")
        for name in ("decoder_tp_stbs", "decoder_ip_stbs"):
            stbs = getattr(self, name)
            bad = [s for s in stbs if s not in DECODER_STB_MODULES]
            if bad or len(set(stbs)) != len(stbs):
                raise ValueError(f"{name} must list distinct decoder STBs from 1 (g_s6) to 4 (g_s0), got {stbs}")
        both = set(self.decoder_tp_stbs) & set(self.decoder_ip_stbs)
        if both:
            raise ValueError(f"decoder STBs {sorted(both)} cannot take both TP- and IP-type prompts")
        ip = self.decoder_ip_stbs
        if ip and list(ip) != list(range(ip[0], ip[0] + len(ip))):
            raise ValueError(
                f"decoder_ip_stbs must be consecutive STBs (the prompt map is upsampled stage by stage), got {ip}"
            )
        if ip and self.depth == "shallow":
            raise ValueError("decoder IP-type prompts are only defined for depth='deep'")
        if not self.encoder_prompts and not self.decoder_tp_stbs and not self.decoder_ip_stbs:
            raise ValueError("this configuration has no prompts at all: use the 'tic' model instead")
        if self.encoder_prompts and self.encoder_mask == "legacy" and self.num_prompts == 64:
            raise ValueError(
                "the legacy encoder mask layout is undefined for 64 prompts (the released code's "
                "construction fails there); use encoder_mask='aligned'"
            )
        if not 1 <= self.generator_width <= MAX_ADAPTER_SIZE:
            raise ValueError(f"generator_width must be within 1..{MAX_ADAPTER_SIZE} (got {self.generator_width})")

    # -- derived ---------------------------------------------------------------------
    @property
    def encoder_downsample(self) -> int:
        """Stride ``d`` of the encoder prompt maps relative to the prompted stage."""
        return ENCODER_DOWNSAMPLE[self.num_prompts]

    @property
    def decoder_tp_modules(self) -> Tuple[str, ...]:
        return tuple(DECODER_STB_MODULES[s] for s in self.decoder_tp_stbs)

    @property
    def decoder_ip_modules(self) -> Tuple[str, ...]:
        """IP-prompted decoder stages in decoding order (g_s0 first)."""
        return tuple(DECODER_STB_MODULES[s] for s in sorted(self.decoder_ip_stbs, reverse=True))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["decoder_tp_stbs"] = list(self.decoder_tp_stbs)
        d["decoder_ip_stbs"] = list(self.decoder_ip_stbs)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PromptConfig options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def variant(cls, name: str) -> "PromptConfig":
        """The configuration of a named variant (see :data:`VARIANTS`)."""
        if not isinstance(name, str) or name not in VARIANTS:
            raise ValueError(f"unknown TransTIC variant {name!r}; choose from {sorted(VARIANTS)}")
        return VARIANTS[name]

    def replace(self, **changes: Any) -> "PromptConfig":
        return replace(self, **changes)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], num_prompts: Optional[int] = None) -> "PromptConfig":
        """Infer the configuration of TransTIC weights from their keys and shapes.

        The encoder prompt stride is not visible in the weights: without decoder
        prompt embeddings to read it from, ``num_prompts`` (default 16) is assumed.
        """
        keys = list(state_dict)
        encoder = any(k.startswith("g_a0_prompt.") for k in keys)
        tp, ip, counts = [], [], set()
        for stb, mod in DECODER_STB_MODULES.items():
            emb = state_dict.get(f"{mod}.residual_group.prompt_embeddings")
            if emb is not None:
                tp.append(stb)
                counts.add(int(emb.shape[1]))
            if any(k.startswith(f"{mod}_prompt_layers.") for k in keys):
                ip.append(stb)
        if len(counts) > 1:
            raise ValueError(f"decoder prompt embeddings disagree on the prompt count: {sorted(counts)}")
        if counts:
            inferred = counts.pop()
            if num_prompts is not None and num_prompts != inferred:
                raise ValueError(f"weights hold {inferred} decoder prompts, not {num_prompts}")
            num_prompts = inferred
        n_layers = len({k.split(".")[1] for k in keys if k.startswith("g_a0_prompt_layers.")})
        shallow = encoder and n_layers == 1
        if not encoder and tp:  # every decoder stage has more than one block
            shallow = state_dict[f"{DECODER_STB_MODULES[tp[0]]}.residual_group.prompt_embeddings"].shape[0] == 1
        width = state_dict.get("g_a0_prompt.down1.0.weight")
        return cls(
            generator_width=int(width.shape[0]) if width is not None else 32,
            encoder_prompts=encoder,
            decoder_tp_stbs=tuple(tp),
            decoder_ip_stbs=tuple(ip),
            num_prompts=num_prompts or 16,
            depth="shallow" if shallow else "deep",
            encoder_mask="aligned" if (num_prompts == 64) else "legacy",
        )


#: Table A1 variants of the supplementary material, by name.
VARIANTS: Dict[str, PromptConfig] = {
    "deep": PromptConfig(),
    "shallow": PromptConfig(depth="shallow"),
    "enc-ip-dec-ip": PromptConfig(decoder_tp_stbs=(3, 4), decoder_ip_stbs=(1, 2)),
    "prompts-4": PromptConfig(num_prompts=4),
    "prompts-64": PromptConfig(num_prompts=64, encoder_mask="aligned"),
    "stb-12": PromptConfig(decoder_tp_stbs=(1, 2)),
    "stb-34": PromptConfig(decoder_tp_stbs=(3, 4)),
    "enc-only": PromptConfig(decoder_tp_stbs=()),
    "dec-only": PromptConfig(encoder_prompts=False),
}

#: (section, Table A1 row label) -> variant name ("TIC" is the base codec)
TABLE_A1_ROWS: Dict[Tuple[str, str], Optional[str]] = {
    ("base", "TIC"): None,
    ("A3.1", "Shallow"): "shallow",
    ("A3.1", "Deep"): "deep",
    ("A3.2", "Enc IP + Dec IP"): "enc-ip-dec-ip",
    ("A3.2", "Enc IP + Dec TP"): "deep",
    ("A3.3", "4 prompts"): "prompts-4",
    ("A3.3", "16 prompts"): "deep",
    ("A3.3", "64 prompts"): "prompts-64",
    ("A3.4", "STB-1234"): "deep",
    ("A3.4", "STB-12"): "stb-12",
    ("A3.4", "STB-34"): "stb-34",
    ("A3.5", "Enc IP + Dec none"): "enc-only",
    ("A3.5", "Enc none + Dec TP"): "dec-only",
}
