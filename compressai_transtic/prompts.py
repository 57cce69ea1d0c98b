"""TransTIC prompt configurations: every variant of the paper.

A :class:`PromptConfig` says where prompts go and how many there are; the named
presets of :data:`VARIANTS` are the rows of the paper's Table A1. The prompts of one
task are saved as an adapter file (:mod:`compressai_transtic.adapter_files`, whose
functions this module re-exports under their established names).

Weights carry their configuration: most settings show in the keys and shapes, and a
TransTIC whose other settings differ from what those imply stores them in the
:data:`SETTINGS_KEY` buffer (see :meth:`PromptConfig.stored_settings`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .adapter_files import (
    ADAPTER_FORMAT,
    MAX_ADAPTER_SIZE,
    AdapterError,
    AdapterMismatchError,
    base_codec_hash,
    load_adapter,
    read_adapter,
    save_adapter,
)
from .jsonvalues import as_index
from .state_dicts import CheckpointError, weight_channels, weight_integers, weight_keys, weight_tensor
from .strenum import StrEnum

__all__ = [
    "MAX_ADAPTER_SIZE",
    "SETTINGS_KEY",
    "STORED_SETTINGS",
    "EncoderMask",
    "PromptConfig",
    "PromptDepth",
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

#: buffer of a TransTIC state dict holding the settings its keys and shapes cannot show
#: (present only where they differ from what the keys imply: see
#: :meth:`PromptConfig.stored_settings`). Its name holds TransTIC's adapter keyword
#: (``prompt``), so it belongs to the adapter, not to the base codec.
SETTINGS_KEY = "prompt_settings"

#: the settings :data:`SETTINGS_KEY` holds, in order, as integers (``encoder_mask`` as
#: its index in :data:`ENCODER_MASKS`)
STORED_SETTINGS = ("num_prompts", "encoder_mask", "generator_width")


class PromptDepth(StrEnum):
    """How prompts reach the blocks of a prompted Swin stage (Table A1, A3.1)."""

    #: every block gets the prompts as extra keys and values
    DEEP = "deep"
    #: the prompts enter the stage's first block as full tokens and are carried, updated
    #: by attention and MLP, through the following blocks
    SHALLOW = "shallow"


class EncoderMask(StrEnum):
    """The attention-mask layout of the shifted prompted encoder blocks."""

    #: the layout the released weights were trained with: mask columns misaligned with
    #: the prompt/image key order (undefined for 64 prompts)
    LEGACY = "legacy"
    #: the corrected layout, for new training
    ALIGNED = "aligned"


#: values of ``PromptConfig.encoder_mask``, by their code in :data:`SETTINGS_KEY`
ENCODER_MASKS = (EncoderMask.LEGACY, EncoderMask.ALIGNED)

#: prompt count and generator width of weights that show neither (no decoder prompt
#: embeddings, no prompt generator): the defaults
_DEFAULT_PROMPTS = 16
_DEFAULT_WIDTH = 32

# keys of the encoder prompt parts (generator and per-block convolutions)
_ENCODER_PART = re.compile(r"g_a[02]_prompt(_layers)?\.")
_WIDTH_KEY = "g_a0_prompt.down1.0.weight"


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
        depth: a :class:`PromptDepth` (or its value): ``deep`` (prompts given to
            every block as extra keys/values) or ``shallow`` (prompts enter the first
            block of an STB as full tokens and are carried through the following blocks).
        encoder_mask: an :class:`EncoderMask` (or its value): ``legacy`` reproduces
            the attention-mask layout that the released weights were trained with (mask
            columns misaligned with the prompt/image key order in shifted encoder
            blocks); ``aligned`` is the corrected layout, for new training. Legacy is
            undefined for 64 prompts.
        generator_width: channels of the first level of the prompt generator
            (1..:data:`MAX_ADAPTER_SIZE`).

    A TransTIC's weights carry its configuration: :meth:`from_state_dict` reads it from
    the keys and shapes, and from the :data:`SETTINGS_KEY` buffer for the settings they
    cannot show, which a model holds only where they differ from what its keys imply
    (see :meth:`stored_settings`).

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
    depth: PromptDepth = PromptDepth.DEEP
    encoder_mask: EncoderMask = EncoderMask.LEGACY
    generator_width: int = 32

    def __post_init__(self) -> None:
        _check_field_types(self)
        for name, kind in (("depth", PromptDepth), ("encoder_mask", EncoderMask)):
            if getattr(self, name) in kind.values():  # others are refused by validate()
                object.__setattr__(self, name, kind(getattr(self, name)))
        for name in ("decoder_tp_stbs", "decoder_ip_stbs"):
            object.__setattr__(self, name, _check_stbs(name, getattr(self, name)))
        self.validate()

    # -- validation ------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending option for invalid combinations."""
        if self.num_prompts not in ENCODER_DOWNSAMPLE:
            raise ValueError(f"num_prompts must be one of 4, 16, 64 (got {self.num_prompts})")
        if not isinstance(self.depth, PromptDepth):
            raise ValueError(f"depth must be 'deep' or 'shallow' (got {self.depth!r})")
        if not isinstance(self.encoder_mask, EncoderMask):
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
        if ip and self.depth is PromptDepth.SHALLOW:
            raise ValueError("decoder IP-type prompts are only defined for depth='deep'")
        if not self.encoder_prompts and not self.decoder_tp_stbs and not self.decoder_ip_stbs:
            raise ValueError("this configuration has no prompts at all: use the 'tic' model instead")
        if self.encoder_prompts and self.encoder_mask is EncoderMask.LEGACY and self.num_prompts == 64:
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
        """JSON and ``torch.load(weights_only=True)`` types: lists and plain strings."""
        d = asdict(self)
        d["decoder_tp_stbs"] = list(self.decoder_tp_stbs)
        d["decoder_ip_stbs"] = list(self.decoder_ip_stbs)
        d["depth"], d["encoder_mask"] = self.depth.value, self.encoder_mask.value
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

    # -- weights -------------------------------------------------------------------
    def stored_settings(self) -> Optional[Tensor]:
        """The :data:`SETTINGS_KEY` buffer of a TransTIC of this configuration, or
        ``None`` when its keys and shapes show every setting.

        The keys and shapes of TransTIC weights show where the prompts are, the depth,
        the prompt count when there are decoder prompt embeddings and the generator
        width when there is a generator. They cannot show the encoder mask layout, the
        prompt count of weights without decoder prompt embeddings (it is the stride of
        convolutions) or the width of an absent generator; :meth:`from_state_dict`
        takes those to be 16 prompts, the legacy mask (aligned for 64 prompts, where
        legacy is undefined) and width 32. A configuration that differs from that
        stores ``[num_prompts, encoder_mask (0: legacy, 1: aligned), generator_width]``
        (int64) in its weights, so that the weights alone (what CompressAI's
        ``eval_model`` and ``update_model`` see) rebuild exactly this configuration.
        The released layout and every preset of :data:`VARIANTS` store nothing: their
        keys stay the released ones.
        """
        implied = _implied_settings(
            self.num_prompts if self.decoder_tp_stbs else None, self.generator_width if self.encoder_prompts else None
        )
        if tuple(getattr(self, name) for name in STORED_SETTINGS) == implied:
            return None
        codes = [self.num_prompts, ENCODER_MASKS.index(self.encoder_mask), self.generator_width]
        return torch.tensor(codes, dtype=torch.int64)

    def fit_state_dict(self, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
        """``state_dict`` as a TransTIC of this configuration loads it: the settings it
        stores (:data:`SETTINGS_KEY`) must be this configuration's, and are dropped
        where this configuration stores none; weights that store none (no such entry, or
        keys that imply them) get this configuration's, so an explicit configuration
        still states what such weights cannot. Anything but a
        mapping is returned as it is (for the loader to refuse).

        Raises:
            CheckpointError: the stored settings are unreadable or contradict this
                configuration (the message names :data:`SETTINGS_KEY` and both).
        """
        if not isinstance(state_dict, Mapping):
            return state_dict
        own = self.stored_settings()
        if SETTINGS_KEY in state_dict:
            stored = _read_settings(state_dict)
            mine = {name: getattr(self, name) for name in STORED_SETTINGS}
            if stored != mine:
                raise CheckpointError(
                    f"{SETTINGS_KEY}: the weights were stored with {_describe(stored)}, but this model's configuration "
                    f"has {_describe(mine)}; build the model with the weights' settings (TransTIC.from_state_dict "
                    "without a configuration reads them)"
                )
            return state_dict if own is not None else {k: v for k, v in state_dict.items() if k != SETTINGS_KEY}
        if own is not None:
            return {**state_dict, SETTINGS_KEY: own}
        return state_dict

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], num_prompts: Optional[int] = None) -> "PromptConfig":
        """The configuration of TransTIC weights (full weights, or their prompt entries).

        Read from the keys and shapes: encoder prompts (``g_a0_prompt.*`` ...) and the
        generator width (``g_a0_prompt.down1.0.weight``); the decoder STBs with TP-type
        prompts (``g_s*.residual_group.prompt_embeddings``, of shape ``(blocks, P,
        dim)``: ``P`` is the prompt count) or IP-type prompts (``g_s*_prompt*``); the
        depth (one encoder prompt convolution, or one prompt set per decoder stage:
        shallow). The settings that no key shows come from the :data:`SETTINGS_KEY`
        buffer when the weights hold one, else they are implied as
        :meth:`stored_settings` says.

        Args:
            state_dict: the weights.
            num_prompts: the prompt count of weights that show none and store none
                (no :data:`SETTINGS_KEY` entry); refused if they show or store another.

        Raises:
            CheckpointError: an entry read is missing, not a tensor, of the wrong number
                of dimensions or holds values out of range (the message names the key),
                entries disagree, or the settings they give are no valid configuration.
        """
        keys = weight_keys(state_dict)
        tp, ip, counts, depths = _decoder_prompts(state_dict, keys)
        encoder = any(_ENCODER_PART.match(k) for k in keys)
        width = None
        if encoder:
            width, depths["g_a0_prompt_layers"] = _encoder_prompts(state_dict, keys)
        if len(set(depths.values())) > 1:
            raise CheckpointError(
                f"the prompt entries disagree on the depth (deep: prompts for every block, shallow: for the "
                f"first): {depths}"
            )
        settings = _weights_settings(state_dict, next(iter(counts.values()), None), width, num_prompts)
        try:
            return cls(
                encoder_prompts=encoder,
                decoder_tp_stbs=tuple(tp),
                decoder_ip_stbs=tuple(ip),
                depth=next(iter(depths.values()), PromptDepth.DEEP),
                **settings,
            )
        except ValueError as err:
            raise CheckpointError(f"the TransTIC settings of these weights are invalid: {err}") from None


def _decoder_prompts(
    state_dict: Mapping[str, Any], keys: Sequence[str]
) -> Tuple[List[int], List[int], Dict[str, int], Dict[str, PromptDepth]]:
    """The decoder STBs with TP- and with IP-type prompts, and the prompt count and
    depth that each TP prompt embedding shows (by key); refuses counts that disagree."""
    tp, ip = [], []
    counts: Dict[str, int] = {}
    depths: Dict[str, PromptDepth] = {}
    for stb, mod in DECODER_STB_MODULES.items():
        key = f"{mod}.residual_group.prompt_embeddings"
        if key in state_dict:
            emb = weight_tensor(state_dict, key, "decoder task prompts: blocks x prompts x channels", dims=3)
            if int(emb.shape[1]) not in ENCODER_DOWNSAMPLE:
                raise CheckpointError(f"{key} holds {int(emb.shape[1])} prompts per block; TransTIC has 4, 16 or 64")
            tp.append(stb)
            counts[key] = int(emb.shape[1])
            depths[key] = PromptDepth.SHALLOW if emb.shape[0] == 1 else PromptDepth.DEEP
        if any(k.startswith((f"{mod}_prompt.", f"{mod}_prompt_layers.")) for k in keys):
            ip.append(stb)
    if len(set(counts.values())) > 1:
        raise CheckpointError(f"the decoder prompt embeddings disagree on the prompt count: {counts}")
    return tp, ip, counts, depths


def _encoder_prompts(state_dict: Mapping[str, Any], keys: Sequence[str]) -> Tuple[int, PromptDepth]:
    """The generator width and the depth (one prompt convolution: shallow) that the
    encoder prompt entries show."""
    width = weight_channels(state_dict, _WIDTH_KEY, "first convolution of the prompt generator", MAX_ADAPTER_SIZE)
    layers = {k.split(".")[1] for k in keys if k.startswith("g_a0_prompt_layers.")}
    return width, PromptDepth.SHALLOW if len(layers) == 1 else PromptDepth.DEEP


def _weights_settings(
    state_dict: Mapping[str, Any], shown: Optional[int], width: Optional[int], num_prompts: Optional[int]
) -> Dict[str, Any]:
    """The :data:`STORED_SETTINGS` of weights whose shapes show the prompt count
    ``shown`` and generator width ``width`` (``None``: not shown): those stored under
    :data:`SETTINGS_KEY`, else those implied; refuses stored or given (``num_prompts``)
    settings that contradict the shapes."""
    settings: Dict[str, Any] = dict(
        zip(STORED_SETTINGS, _implied_settings(shown if shown is not None else num_prompts, width))
    )
    if SETTINGS_KEY in state_dict:
        settings = _read_settings(state_dict)
        for name, value in (("num_prompts", shown), ("generator_width", width)):
            if value is not None and settings[name] != value:
                raise CheckpointError(
                    f"{SETTINGS_KEY} stores {name}={settings[name]}, but the weights' shapes show {value}"
                )
    if num_prompts is not None and settings["num_prompts"] != num_prompts:
        raise CheckpointError(f"the weights hold {settings['num_prompts']} prompts per window, not {num_prompts}")
    return settings


def _implied_settings(num_prompts: Optional[int], generator_width: Optional[int]) -> Tuple[int, EncoderMask, int]:
    """The :data:`STORED_SETTINGS` that weights which store none are read with, given the
    prompt count and generator width their shapes show (``None``: not shown)."""
    count = _DEFAULT_PROMPTS if num_prompts is None else num_prompts
    mask = EncoderMask.ALIGNED if count == 64 else EncoderMask.LEGACY  # legacy is undefined for 64 prompts
    return count, mask, _DEFAULT_WIDTH if generator_width is None else generator_width


def _read_settings(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings stored under :data:`SETTINGS_KEY`, by name.

    Raises:
        CheckpointError: not 3 integers, or a value out of range (the message names
            the key and the setting).
    """
    what = "TransTIC settings: " + ", ".join(STORED_SETTINGS)
    count, mask, width = weight_integers(state_dict, SETTINGS_KEY, what, len(STORED_SETTINGS))
    if count not in ENCODER_DOWNSAMPLE:
        raise CheckpointError(f"{SETTINGS_KEY}[0] (num_prompts) must be 4, 16 or 64, got {count}")
    if not 0 <= mask < len(ENCODER_MASKS):
        raise CheckpointError(f"{SETTINGS_KEY}[1] (encoder_mask: 0 legacy, 1 aligned) must be 0 or 1, got {mask}")
    if not 1 <= width <= MAX_ADAPTER_SIZE:
        raise CheckpointError(f"{SETTINGS_KEY}[2] (generator_width) must be within 1..{MAX_ADAPTER_SIZE}, got {width}")
    return {"num_prompts": count, "encoder_mask": ENCODER_MASKS[mask], "generator_width": width}


def _describe(settings: Mapping[str, Any]) -> str:
    values = {name: settings[name] for name in STORED_SETTINGS}
    return ", ".join(f"{name}={v.value if isinstance(v, StrEnum) else v!r}" for name, v in values.items())


#: Table A1 variants of the supplementary material, by name.
VARIANTS: Dict[str, PromptConfig] = {
    "deep": PromptConfig(),
    "shallow": PromptConfig(depth=PromptDepth.SHALLOW),
    "enc-ip-dec-ip": PromptConfig(decoder_tp_stbs=(3, 4), decoder_ip_stbs=(1, 2)),
    "prompts-4": PromptConfig(num_prompts=4),
    "prompts-64": PromptConfig(num_prompts=64, encoder_mask=EncoderMask.ALIGNED),
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
