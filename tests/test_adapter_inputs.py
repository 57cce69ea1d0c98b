"""Bad inputs of the adapted codecs are refused by name, before anything changes.

Promises checked here:

- ``load_adapter_state_dict`` (and TransTIC's ``load_prompt_state_dict``) refuses a
  state dict with a tensor on the ``meta`` device, NaN / Inf, complex or sparse values,
  an expanded view, a value that is no tensor or a float for an integer buffer, with a
  ``ValueError`` / ``TypeError`` naming the entry, and leaves every parameter and buffer
  of the model as it was;
- the configurations convert nothing: a ``bool`` option must be a ``bool``, counts and
  sizes ``int`` (no ``bool``, no float, no string), STB lists tuples or lists of ints;
  sizes are bounded by the trainer's bound (512), and the message names the field;
- an adapted codec's ``config`` may be a variant name (TransTIC's ``VARIANTS``), which
  is resolved; anything else that is no configuration is a ``TypeError`` listing the
  variant names.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict

import numpy as np
import pytest
import torch

from compressai_transtic.models import (
    TICROI,
    TICSFT,
    ChannelSelectionConfig,
    ROIConfig,
    SFTConfig,
    TICChannelSelection,
    TransTIC,
)
from compressai_transtic.prompts import VARIANTS, PromptConfig
from compressai_transtic.zoo import transtic

CONFIGS: Dict[str, Any] = {
    "transtic": (TransTIC, PromptConfig(generator_width=4)),
    "tic-sft": (TICSFT, SFTConfig(width=4)),
    "tic-chsel": (TICChannelSelection, ChannelSelectionConfig(feature_channels=8, width=4)),
    "tic-roi": (TICROI, ROIConfig(width=4)),
}


@pytest.fixture(scope="module")
def models() -> Dict[str, Any]:
    """One small random model of each adapted architecture (tests take copies)."""
    torch.manual_seed(0)
    return {arch: codec(config, N=16, M=16) for arch, (codec, config) in CONFIGS.items()}


def snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: Dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k, v in before.items() if v.dtype != after[k].dtype or not torch.equal(v, after[k])]
    assert changed == []


def payload_with_bad_last(model: Any, make_bad: Callable[[torch.Tensor], Any]) -> Dict[str, Any]:
    """The model's adapter with every parameter changed and, as its last entry, the bad
    value made from the last real tensor of more than one value (a loader that copies as
    it goes would have changed the others when it reaches it)."""
    trainable = {k for k, _ in model.named_adapter_parameters()}
    adapter = {k: v + 0.5 if k in trainable else v.clone() for k, v in model.adapter_state_dict().items()}
    target = sorted(k for k, v in adapter.items() if v.is_floating_point() and v.numel() > 1)[-1]
    payload = {k: v.detach() for k, v in adapter.items() if k != target}
    payload[target] = make_bad(adapter[target].detach())
    return payload


BAD_VALUES = {
    "meta": (lambda t: torch.empty(t.shape, device="meta"), ValueError, "on the meta device"),
    "nan": (lambda t: torch.full_like(t, float("nan")), ValueError, "NaN or Inf"),
    "inf": (lambda t: torch.full_like(t, float("inf")), ValueError, "NaN or Inf"),
    "complex": (lambda t: torch.ones(t.shape, dtype=torch.complex64), ValueError, "complex"),
    "sparse": (lambda t: torch.ones_like(t).to_sparse(), ValueError, "not dense"),
    "expanded": (lambda t: torch.ones(1).expand(t.shape), ValueError, "expanded views"),
    "number": (lambda t: 5.0, TypeError, r"must be tensors; \['.+ \(float\)'\]"),
    "none": (lambda t: None, TypeError, r"must be tensors; \['.+ \(NoneType\)'\]"),
    "list": (lambda t: t.tolist(), TypeError, r"must be tensors; \['.+ \(list\)'\]"),
    "ndarray": (lambda t: t.numpy(), TypeError, r"must be tensors; \['.+ \(ndarray\)'\]"),
}


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_a_refused_adapter_entry_is_named_and_changes_nothing(models, arch, bad):
    make_bad, error, message = BAD_VALUES[bad]
    model = copy.deepcopy(models[arch])
    payload = payload_with_bad_last(model, make_bad)
    before = snapshot(model)
    with pytest.raises(error, match=message):
        model.load_adapter_state_dict(payload)
    assert_unchanged(model, before)


def test_transtic_prompt_loading_refuses_a_meta_tensor_and_changes_nothing(models):
    model = copy.deepcopy(models["transtic"])
    payload = payload_with_bad_last(model, lambda t: torch.empty(t.shape, device="meta"))
    before = snapshot(model)
    with pytest.raises(ValueError, match="on the meta device"):
        model.load_prompt_state_dict(payload)
    assert_unchanged(model, before)


def test_a_float_for_an_integer_buffer_is_refused_not_truncated(models):
    model = copy.deepcopy(models["transtic"])
    payload: Dict[str, Any] = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    key = sorted(k for k, v in payload.items() if not v.is_floating_point())[-1]
    payload[key] = torch.tensor(1.5)
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"adapter tensor {key}: dtype torch.float32 does not convert"):
        model.load_adapter_state_dict(payload)
    assert_unchanged(model, before)


def test_adapter_weights_that_are_no_mapping_of_names_are_a_type_error(models):
    model = copy.deepcopy(models["tic-sft"])
    before = snapshot(model)
    items = list(model.adapter_state_dict().items())
    with pytest.raises(TypeError, match="adapter weights must be a mapping"):
        model.load_adapter_state_dict(items)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be keyed by names \(str\); other keys: 7$"):
        model.load_adapter_state_dict({**dict(items[1:]), 7: items[0][1]})  # type: ignore[dict-item]
    assert_unchanged(model, before)


# ----------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, message",
    [
        ({"encoder_prompts": "no"}, r"PromptConfig\.encoder_prompts must be of type bool .*got 'no'"),
        ({"encoder_prompts": None}, r"PromptConfig\.encoder_prompts must be of type bool .*got None"),
        ({"encoder_prompts": 1}, r"PromptConfig\.encoder_prompts must be of type bool"),
        ({"num_prompts": 16.0}, r"PromptConfig\.num_prompts must be of type int, one of 4, 16, 64, got 16\.0"),
        ({"num_prompts": True}, r"PromptConfig\.num_prompts must be of type int"),
        ({"num_prompts": "16"}, r"PromptConfig\.num_prompts must be of type int"),
        ({"generator_width": 2.5}, r"PromptConfig\.generator_width must be of type int, 1\.\.512, got 2\.5"),
        ({"generator_width": True}, r"PromptConfig\.generator_width must be of type int"),
        ({"generator_width": "32"}, r"PromptConfig\.generator_width must be of type int"),
        ({"depth": ["deep"]}, r"PromptConfig\.depth must be of type str"),
        ({"encoder_mask": None}, r"PromptConfig\.encoder_mask must be of type str"),
        ({"decoder_tp_stbs": (1.7,)}, r"PromptConfig\.decoder_tp_stbs must be a tuple or list of decoder STB numbers"),
        ({"decoder_tp_stbs": "12"}, r"PromptConfig\.decoder_tp_stbs must be a tuple or list .*got '12'"),
        ({"decoder_tp_stbs": 3}, r"PromptConfig\.decoder_tp_stbs must be a tuple or list .*\[1, 2, 3, 4\]"),
        ({"decoder_tp_stbs": None}, r"PromptConfig\.decoder_tp_stbs must be a tuple or list"),
        ({"decoder_tp_stbs": (True,)}, r"PromptConfig\.decoder_tp_stbs must be a tuple or list"),
        ({"decoder_ip_stbs": ("1",)}, r"PromptConfig\.decoder_ip_stbs must be a tuple or list"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_prompt_options_of_the_wrong_type_are_refused_not_converted(options, message):
    with pytest.raises(ValueError, match=message):
        PromptConfig(**options)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda size: PromptConfig(generator_width=size), r"generator_width must be within 1\.\.512"),
        (lambda size: SFTConfig(width=size), r"SFTConfig\.width must be at most 512"),
        (lambda size: ROIConfig(width=size), r"ROIConfig\.width must be at most 512"),
        (lambda size: ChannelSelectionConfig(width=size), r"ChannelSelectionConfig\.width must be at most 512"),
        (
            lambda size: ChannelSelectionConfig(feature_channels=size),
            r"ChannelSelectionConfig\.feature_channels must be at most 512",
        ),
    ],
    ids=["prompt-generator", "sft", "roi", "chsel-width", "chsel-features"],
)
def test_sizes_above_the_trainers_bound_are_refused(build, message):
    from compressai_transtic.prompts import MAX_ADAPTER_SIZE
    from compressai_transtic.training.adapters import MAX_ADAPTER_SIZE as TRAINER_BOUND

    assert MAX_ADAPTER_SIZE == TRAINER_BOUND == 512
    build(512)  # the bound itself is allowed
    for size in (513, 10**6):
        with pytest.raises(ValueError, match=message):
            build(size)


# ----------------------------------------------------------------------------------
# variant names as configurations
# ----------------------------------------------------------------------------------
def test_a_variant_name_is_resolved_to_its_configuration(models):
    model = TransTIC("stb-12", N=16, M=16)
    assert model.config == VARIANTS["stb-12"]
    prompted = {n.split(".")[0] for n, _ in model.named_prompt_parameters() if "prompt_embeddings" in n}
    assert prompted == {"g_s6", "g_s4"}
    assert transtic(quality=1, config="dec-only").config == VARIANTS["dec-only"]
    assert TransTIC.from_base(models["tic-sft"], "shallow").config == VARIANTS["shallow"]
    loaded = TransTIC.from_state_dict(model.state_dict(), config="stb-12")
    assert loaded.config == VARIANTS["stb-12"]


@pytest.mark.parametrize(
    "build, error, message",
    [
        (
            lambda: TransTIC("deeper", N=16, M=16),
            ValueError,
            r"unknown transtic variant 'deeper'; choose from \[.*'stb-12'",
        ),
        (
            lambda: TransTIC({"num_prompts": 4}, N=16, M=16),
            TypeError,
            r"variant name \(.*stb-12.*PromptConfig.from_dict",
        ),
        (lambda: TransTIC(16, N=16, M=16), TypeError, r"TransTIC config must be None or of type PromptConfig"),
        (lambda: TICSFT("deep", N=16, M=16), TypeError, r"TICSFT config .*SFTConfig \(it has no named variants\)"),
        (lambda: TICROI(SFTConfig(), N=16, M=16), TypeError, r"TICROI config must be None or of type ROIConfig"),
        (lambda: TICChannelSelection("x", N=16, M=16), TypeError, "ChannelSelectionConfig"),
    ],
    ids=["unknown-name", "dict", "number", "sft-name", "roi-other-config", "chsel-name"],
)
def test_configurations_that_are_no_configuration_are_refused_by_name(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_a_variant_lookup_by_something_else_than_a_name_lists_the_names():
    for name in (None, ["deep"]):
        with pytest.raises(ValueError, match="choose from"):
            PromptConfig.variant(name)  # type: ignore[arg-type]


def test_integers_of_numpy_are_taken_as_python_integers():
    config = PromptConfig(generator_width=np.int64(4), num_prompts=np.int32(16), decoder_tp_stbs=(np.int64(2), 1))
    assert config == PromptConfig(generator_width=4, num_prompts=16, decoder_tp_stbs=(1, 2))
    assert type(config.generator_width) is int and all(type(s) is int for s in config.decoder_tp_stbs)
