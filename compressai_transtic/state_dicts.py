"""State-dict layout of TIC and TransTIC: what the keys say, and conversion of foreign layouts.

A leaf module (it imports no model): the models' ``from_state_dict`` and the
checkpoint loader above them (:mod:`compressai_transtic.checkpoint`) both use it.

- :func:`detect_architecture` / :func:`architecture_hints`: TIC, TransTIC or an
  adapter, and the variant, from the keys and shapes alone;
- :func:`weight_tensor`, :func:`weight_integer` ...: entries read as settings (an
  adapted codec's configuration), each refusal a :class:`CheckpointError` naming the key;
- :func:`checkpoint_filter_fn`: ``module.`` prefixes, a prefix shared by every key,
  entropy bottlenecks in CompressAI's newer layout (``matrices.0``), and the
  entropy-coder tables that some released files lack (``base_codec_4``),
  added empty so that strict loading works (:func:`needs_entropy_update` then says
  that ``update(force=True)`` must rebuild them).
"""

from __future__ import annotations

import logging
import math
import re
import reprlib
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .console import and_more
from .integrity import tensor_problems

logger = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_FORMAT_KEY",
    "ADAPTER_KEYWORDS",
    "ARCHITECTURES",
    "ArchitectureMismatchError",
    "CheckpointError",
    "WRAPPER_KEYS",
    "architecture_hints",
    "check_architecture",
    "checkpoint_filter_fn",
    "detect_architecture",
    "fit_problems",
    "tic_channels",
    "needs_entropy_update",
    "unknown_architecture_message",
    "weight_channels",
    "weight_integer",
    "weight_integers",
    "weight_keys",
    "weight_number",
    "weight_tensor",
]

StateDict = Dict[str, Tensor]

#: Keys under which checkpoints wrap the model weights, in the order they are tried.
WRAPPER_KEYS = ("network", "state_dict", "model_state_dict")

#: Key marking an adapter file written by :func:`compressai_transtic.prompts.save_adapter`.
ADAPTER_FORMAT_KEY = "adapter_format"

# Entropy-coder tables of CompressAI's entropy models: buffers whose size
# depends on the trained distributions and that ``update()`` (re)computes.
_BOTTLENECK_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")
_GAUSSIAN_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
_TABLE_DTYPES = {
    "_quantized_cdf": torch.int32,
    "_offset": torch.int32,
    "_cdf_length": torch.int32,
    "scale_table": torch.float32,
}

# Keys whose presence identifies the base codec (TIC): one per stage of each transform.
_TIC_MARKERS = (
    "g_a0.weight",
    "g_a1.residual_group.blocks.0.attn.qkv.weight",
    "g_a6.weight",
    "h_a0.weight",
    "h_s3.weight",
    "g_s0.residual_group.blocks.0.attn.qkv.weight",
    "g_s7.weight",
    "entropy_bottleneck.quantiles",
)

#: Adapted architectures (a frozen TIC plus trainable parts) -> the word that every
#: name of their trainable parameters and buffers holds, and no name of TIC does.
ADAPTER_KEYWORDS = {"transtic": "prompt", "tic-sft": "sft", "tic-chsel": "chsel", "tic-roi": "roi"}

#: the architectures a checkpoint can hold
ARCHITECTURES = ("tic",) + tuple(ADAPTER_KEYWORDS)


class CheckpointError(ValueError):
    """A file cannot be read as a checkpoint (the message names the file and the cause)."""


def fit_problems(
    own: Mapping[str, Tensor], given: Mapping[str, Any], strict: bool, resizable: Collection[str] = ()
) -> List[str]:
    """Why ``given`` cannot be loaded into a model whose state dict is ``own``, one line
    per kind of problem; empty when it fits.

    Args:
        own: the model's state dict.
        given: the weights to load.
        strict: missing and unexpected keys are problems (shapes always are).
        resizable: keys of buffers that loading resizes to any shape (the
            entropy-coder tables, empty until built).
    """
    problems = []
    if strict:
        missing = sorted(set(own) - set(given))
        unexpected = sorted(map(str, set(given) - set(own)))
        if missing:
            problems.append(f"missing keys {missing[:5]}{and_more(missing, 5)}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:5]}{and_more(unexpected, 5)}")
    shapes, others = [], []
    for key, value in given.items():
        if key not in own:
            continue
        if not isinstance(value, Tensor):
            others.append(f"{key} ({type(value).__name__})")
        elif key not in resizable and value.shape != own[key].shape:
            shapes.append(f"{key} {tuple(value.shape)} instead of {tuple(own[key].shape)}")
    if others:
        problems.append("values that are not tensors: " + ", ".join(others[:5]) + and_more(others, 5))
    if shapes:
        problems.append("tensors of other shapes: " + ", ".join(shapes[:5]) + and_more(shapes, 5))
    return problems


class ArchitectureMismatchError(ValueError):
    """A checkpoint holds another architecture than the one asked for.

    Args:
        found: architecture detected in the checkpoint.
        expected: architecture that was asked for.
        source: where the checkpoint came from (file name or description).
    """

    def __init__(self, found: str, expected: str, source: str = "") -> None:
        self.found = found
        self.expected = expected
        self.source = source
        where = f" ({source})" if source else ""
        advice = _MISMATCH_ADVICE.get((found, expected), _MISMATCH_ADVICE.get((found, None), ""))
        super().__init__(f"this checkpoint is {found}, not {expected}{where}.{advice}")


# Extra advice in ArchitectureMismatchError, by (found, expected); (found, None) for any expected.
_MISMATCH_ADVICE = {
    ("transtic", "tic"): (
        " Load it with compressai_transtic.checkpoint.load_model('transtic', path) or "
        "load_model(None, path); TransTIC.base_state_dict() gives its base codec."
    ),
    ("tic", "transtic"): (
        " It holds only the base codec: build a TransTIC around it with "
        "TransTIC.from_base(state_dict) and train or load prompts."
    ),
    ("adapter", None): (
        " An adapter holds prompt weights only: load it with "
        "compressai_transtic.prompts.load_adapter(model, path) on a TransTIC "
        "built from its base codec."
    ),
}


def _strip_prefix(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def detect_architecture(state_dict: Mapping[str, Any]) -> str:
    """Tell which architecture a state dict (or adapter dict) belongs to.

    Args:
        state_dict: a state dict as returned by :func:`load_state_dict`.

    Returns:
        ``"adapter"`` for an adapter file; ``"tic"`` for the base codec alone; an
        adapted architecture (``"transtic"``, ``"tic-sft"``, ``"tic-chsel"``, ``"tic-roi"``) when the base codec's
        keys come with keys holding that architecture's keyword
        (:data:`ADAPTER_KEYWORDS`: ``g_a0_prompt.*``, ``g_a_sft.*`` ...); ``"unknown"``
        otherwise, also for keys of two adapted architectures at once.
    """
    if ADAPTER_FORMAT_KEY in state_dict:
        return "adapter"
    keys = {_strip_prefix(k) for k in state_dict}
    if not all(marker in keys for marker in _TIC_MARKERS):
        return "unknown"
    adapted = [arch for arch, word in ADAPTER_KEYWORDS.items() if any(word in k for k in keys)]
    if not adapted:
        return "tic"
    return adapted[0] if len(adapted) == 1 else "unknown"


def _blocks_per_stage(keys: Iterable[str]) -> Dict[str, int]:
    counts: Dict[str, set] = {}
    for key in keys:
        match = re.match(r"^(\w+)\.residual_group\.blocks\.(\d+)\.", key)
        if match:
            counts.setdefault(match.group(1), set()).add(int(match.group(2)))
    return {stage: len(blocks) for stage, blocks in counts.items()}


def architecture_hints(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """Describe the variant of a checkpoint from its keys and shapes.

    Args:
        state_dict: a state dict as returned by :func:`load_state_dict`.

    Returns:
        A dict with ``"architecture"`` and, for TIC and TransTIC, ``N`` and
        ``M`` (channel widths). For TransTIC also: ``encoder_prompt_stages``
        (g_a stages receiving instance-specific prompts, e.g. ``["g_a1",
        "g_a3"]``), ``decoder_prompt_stages`` (g_s stages holding task prompts
        ``prompt_embeddings``), ``decoder_prompt_tokens`` (prompts per block),
        ``decoder_prompt_mode`` (``"deep"``: one prompt set per block,
        ``"shallow"``: one per stage) and ``decoder_instance_prompts`` (decoder
        prompt generators made from y_hat are present).
    """
    arch = detect_architecture(state_dict)
    hints: Dict[str, Any] = {"architecture": arch}
    if arch not in ARCHITECTURES:
        return hints
    sd = {_strip_prefix(k): v for k, v in state_dict.items()}
    hints["N"] = int(sd["g_a0.weight"].shape[0])
    hints["M"] = int(sd["g_a6.weight"].shape[0])
    if arch != "transtic":
        return hints
    heads = {k.split(".")[0] for k in sd}
    # g_a{k}_prompt_layers feed the blocks of stage g_a{k+1}.
    hints["encoder_prompt_stages"] = sorted(
        f"g_a{int(h[3 : -len('_prompt_layers')]) + 1}" for h in heads if re.fullmatch(r"g_a\d+_prompt_layers", h)
    )
    embeddings = {k.split(".")[0]: v for k, v in sd.items() if k.endswith(".residual_group.prompt_embeddings")}
    hints["decoder_prompt_stages"] = sorted(embeddings)
    if embeddings:
        blocks = _blocks_per_stage(sd)
        hints["decoder_prompt_tokens"] = int(next(iter(embeddings.values())).shape[1])
        if all(v.shape[0] == blocks.get(stage) for stage, v in embeddings.items()):
            hints["decoder_prompt_mode"] = "deep"
        elif all(v.shape[0] == 1 for v in embeddings.values()):
            hints["decoder_prompt_mode"] = "shallow"
        else:
            hints["decoder_prompt_mode"] = "mixed"
    hints["decoder_instance_prompts"] = any(re.fullmatch(r"g_s\d+_prompt(_layers)?", h) for h in heads)
    return hints


def check_architecture(state_dict: Mapping[str, Any], expected: str, source: str = "") -> None:
    """Raise :class:`ArchitectureMismatchError` unless ``state_dict`` is ``expected``.

    Args:
        state_dict: a state dict as returned by :func:`load_state_dict`.
        expected: ``"tic"`` or ``"transtic"``.
        source: file name used in the message.
    """
    found = detect_architecture(state_dict)
    if found == "unknown":
        raise CheckpointError(unknown_architecture_message(state_dict, source))
    if found != expected:
        raise ArchitectureMismatchError(found, expected, source)


def tic_channels(state_dict: Mapping[str, Any]) -> Tuple[int, int]:
    """``(N, M)`` of the TIC whose weights (or whose base codec's) ``state_dict`` holds,
    read from ``g_a0.weight`` and ``g_a6.weight``: what a model is built with before
    it loads them, so the weights are checked first.

    Raises:
        CheckpointError: unusable tensors (NaN, Inf, sparse, more values declared than
            stored: a small file must not build a huge model), or those two weights
            missing or not convolution weights.
    """
    problems = tensor_problems(state_dict)
    if problems:
        raise CheckpointError(f"weights refused: {'; '.join(problems)}")
    channels = []
    for key in ("g_a0.weight", "g_a6.weight"):
        weight = state_dict.get(key)
        if not (isinstance(weight, Tensor) and weight.dim() == 4 and weight.size(0) > 0):
            raise CheckpointError(f"{key} must be a convolution weight (4 dimensions)")
        channels.append(int(weight.size(0)))
    return channels[0], channels[1]


# ----------------------------------------------------------------------------------
# values read from weights: every adapted codec's configuration (settings that the keys
# and shapes show); each refusal names the key
# ----------------------------------------------------------------------------------
def weight_keys(state_dict: Any) -> List[str]:
    """The keys of a state dict, refused with a ``CheckpointError`` unless it is a mapping."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"not a state dict (a mapping of parameter names to tensors): {type(state_dict).__name__}"
        )
    return [k for k in state_dict if isinstance(k, str)]


def weight_tensor(state_dict: Mapping[str, Any], key: str, what: str, dims: Optional[int] = None) -> Tensor:
    """``state_dict[key]``, checked to be a tensor (of ``dims`` dimensions if given).

    Args:
        state_dict: the weights.
        key: the entry to read.
        what: what the entry is, for the messages (e.g. ``"TIC+ROI map levels"``).
        dims: the number of dimensions it must have.

    Raises:
        CheckpointError: the entry is missing, not a tensor, or of another number of
            dimensions; the message names ``key``. ``state_dict`` that is no mapping.
    """
    weight_keys(state_dict)
    if key not in state_dict:
        raise CheckpointError(f"{key} ({what}) is missing")
    value = state_dict[key]
    if not isinstance(value, Tensor):
        raise CheckpointError(f"{key} ({what}) must be a tensor, got {type(value).__name__}")
    if dims is not None and value.dim() != dims:
        raise CheckpointError(
            f"{key} ({what}) must have {dims} dimension{'' if dims == 1 else 's'}, got shape {tuple(value.shape)}"
        )
    return value


def _real_values(key: str, what: str, value: Tensor) -> Tensor:
    """The values of a small tensor, on the CPU, refused unless real and in memory."""
    if value.is_meta:
        raise CheckpointError(f"{key} ({what}) holds no values (a tensor on the meta device)")
    if value.layout != torch.strided:
        raise CheckpointError(f"{key} ({what}) must be a dense tensor, got layout {value.layout}")
    if value.is_complex() or value.dtype == torch.bool:
        raise CheckpointError(f"{key} ({what}) must hold real numbers, got dtype {value.dtype}")
    if value.is_floating_point() and bool(torch.isnan(value).any()):
        raise CheckpointError(f"{key} ({what}) is NaN")
    return value.detach().cpu()


def weight_integers(state_dict: Mapping[str, Any], key: str, what: str, length: int) -> List[int]:
    """The ``length`` integers of a 1-dimensional integer tensor ``state_dict[key]``.

    Raises:
        CheckpointError: missing, not a tensor, another shape, NaN, or not an integer
            dtype; the message names ``key``.
    """
    value = weight_tensor(state_dict, key, what, dims=1)
    if value.shape[0] != length:
        raise CheckpointError(f"{key} ({what}) must hold {length} integers, got shape {tuple(value.shape)}")
    values = _real_values(key, what, value)
    if values.is_floating_point():
        raise CheckpointError(f"{key} ({what}) must hold integers (an integer dtype), got {values.dtype}")
    return [int(v) for v in values.tolist()]


def weight_integer(state_dict: Mapping[str, Any], key: str, what: str, low: int, high: int) -> int:
    """The integer that the 0-dimensional tensor ``state_dict[key]`` holds, within ``low..high``.

    Raises:
        CheckpointError: missing, not a tensor, not one value (shape ``()``), NaN, not an
            integer dtype, or out of range; the message names ``key``.
    """
    value = weight_tensor(state_dict, key, what)
    if value.dim() != 0:
        raise CheckpointError(f"{key} ({what}) must hold one integer (shape ()), got shape {tuple(value.shape)}")
    values = _real_values(key, what, value)
    if values.is_floating_point():
        raise CheckpointError(f"{key} ({what}) must hold an integer (an integer dtype), got {values.dtype}")
    number = int(values.item())
    if not low <= number <= high:
        raise CheckpointError(f"{key} ({what}) must be within {low}..{high}, got {number}")
    return number


def weight_number(state_dict: Mapping[str, Any], key: str, what: str) -> float:
    """The finite number that the 0-dimensional tensor ``state_dict[key]`` holds (the
    caller checks its range).

    Raises:
        CheckpointError: missing, not a tensor, not one value (shape ``()``), complex or
            boolean, NaN or infinite; the message names ``key``.
    """
    value = weight_tensor(state_dict, key, what)
    if value.dim() != 0:
        raise CheckpointError(f"{key} ({what}) must hold one number (shape ()), got shape {tuple(value.shape)}")
    number = float(_real_values(key, what, value).item())
    if not math.isfinite(number):
        raise CheckpointError(f"{key} ({what}) must be finite, got {number}")
    return number


def weight_channels(state_dict: Mapping[str, Any], key: str, what: str, high: int, dims: int = 4) -> int:
    """The output channels (first dimension) of the weight ``state_dict[key]``, within
    ``1..high``.

    Raises:
        CheckpointError: missing, not a tensor, not of ``dims`` dimensions (4: a
            convolution), or a channel count out of range; the message names ``key``.
    """
    value = weight_tensor(state_dict, key, what, dims=dims)
    channels = int(value.shape[0])
    if not 1 <= channels <= high:
        raise CheckpointError(f"{key} ({what}) has {channels} output channels; expected 1..{high}")
    return channels


def unknown_architecture_message(state_dict: Mapping[str, Any], source: str) -> str:
    keys = list(state_dict)
    where = f"{source}: " if source else ""
    return (
        f"{where}cannot tell the architecture of this checkpoint: its {len(keys)} keys "
        f"(e.g. {keys[:5]}) match neither TIC (g_a0.weight, h_s3.weight, "
        "entropy_bottleneck.quantiles, ...) nor TransTIC (TIC keys plus g_a0_prompt.* "
        "or *.residual_group.prompt_embeddings)."
    )


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: Optional[nn.Module] = None) -> StateDict:
    """Convert a foreign state dict to the layout of this project's models.

    - strips ``module.`` prefixes, and one leading component shared by every key
      (``model.``, ``net.`` ...) when that makes the keys match the model's (or,
      without ``model``, TIC's own keys);
    - names entropy-bottleneck parameters as the released files do: CompressAI 1.2's
      ``matrices.i`` / ``biases.i`` / ``factors.i`` become ``_matrixi`` / ``_biasi`` /
      ``_factori`` (as CompressAI's own models accept both layouts);
    - adds the entropy-coder tables that some released files lack
      (``base_codec_4`` has no ``entropy_bottleneck._quantized_cdf``,
      ``_offset``, ``_cdf_length``) as empty tensors, so strict loading works;
      :func:`needs_entropy_update` is then true and the caller must run
      ``model.update(force=True)``.

    ``attn_mask`` buffers sized for 256x256 inputs are kept as they are: the
    models register theirs at that size and rebuild masks for other sizes.

    Args:
        state_dict: flat state dict.
        model: optional target model, used to recognise a wrapper prefix.

    Returns:
        A new state dict.

    Raises:
        CheckpointError: ``state_dict`` is not a mapping of text keys (e.g. a list, or
            numbers as keys), as CompressAI's tools may pass whatever a file held.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"not a state dict (a mapping of parameter names to tensors): {reprlib.repr(state_dict)}")
    sd: StateDict = {_strip_prefix(k): v for k, v in state_dict.items()}
    sd = _strip_common_prefix(sd, set(model.state_dict()) if model is not None else set(_TIC_MARKERS))
    sd = _legacy_bottleneck_names(sd)
    bottlenecks = {k[: -len("._matrix0")] for k in sd if k.endswith("._matrix0")}
    gaussians = {k[: -len(".scale_bound")] for k in sd if k.endswith(".scale_bound")}
    added = []
    for prefix, tables in [(p, _BOTTLENECK_TABLES) for p in sorted(bottlenecks)] + [
        (p, _GAUSSIAN_TABLES) for p in sorted(gaussians)
    ]:
        for table in tables:
            key = f"{prefix}.{table}"
            if key not in sd:
                sd[key] = torch.empty(0, dtype=_TABLE_DTYPES[table])
                added.append(key)
    if added:
        logger.info(
            "checkpoint lacks entropy-coder tables %s: they must be rebuilt with update(force=True)",
            added,
        )
    return sd


#: an entropy-bottleneck parameter in CompressAI 1.2's layout: prefix, list, index
_LIST_PARAMETER = re.compile(r"(?P<prefix>.+)\.(?P<list>matrices|biases|factors)\.(?P<index>[0-9]+)")
_LEGACY_NAMES = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}


def _legacy_bottleneck_names(sd: StateDict) -> StateDict:
    """``x.matrices.0`` -> ``x._matrix0`` (biases, factors likewise) for every ``x`` that
    is an entropy bottleneck (has ``x.quantiles``); other keys as they are."""
    renamed: StateDict = {}
    for key, value in sd.items():
        match = _LIST_PARAMETER.fullmatch(key)
        if match and f"{match['prefix']}.quantiles" in sd:
            key = f"{match['prefix']}.{_LEGACY_NAMES[match['list']]}{match['index']}"
        renamed[key] = value
    return renamed


def _strip_common_prefix(sd: StateDict, model_keys: set) -> StateDict:
    if not sd or set(sd) & model_keys:
        return sd
    first = {k.split(".", 1)[0] for k in sd}
    if len(first) != 1 or not all("." in k for k in sd):
        return sd
    stripped = {k.split(".", 1)[1]: v for k, v in sd.items()}
    if set(stripped) & model_keys:
        logger.info("stripping the prefix %r shared by every checkpoint key", next(iter(first)) + ".")
        return stripped
    return sd


def needs_entropy_update(state_dict: Mapping[str, Tensor]) -> bool:
    """True when the entropy-coder tables of a state dict are empty or missing.

    A model loaded from such weights cannot ``compress()`` before
    ``model.update(force=True)``.

    Args:
        state_dict: a state dict (after :func:`checkpoint_filter_fn`).
    """
    for key, value in state_dict.items():
        if key.endswith("._quantized_cdf") and value.numel() == 0:
            return True
    bottlenecks = [k for k in state_dict if k.endswith("._matrix0")]
    return any(k[: -len("_matrix0")] + "_quantized_cdf" not in state_dict for k in bottlenecks)
