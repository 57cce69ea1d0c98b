"""The configuration of an adapted codec travels with its weights.

CompressAI's ``eval_model`` and ``update_model`` see a state dict and nothing else, so
``cls.from_state_dict(model.state_dict())`` must rebuild the model's configuration
exactly. Promises checked here:

- every TransTIC configuration comes back from its state dict (full weights or the
  prompt entries alone), and the rebuilt model codes as the original;
- the TransTIC settings that no key or shape shows (the encoder mask layout, the
  prompt count without decoder prompt embeddings, the width of an absent prompt
  generator) are stored in the int64 buffer ``prompt_settings``, part of the adapter,
  and only where they differ from what the keys imply: the released layout and every
  Table A1 preset keep their keys;
- an explicit configuration that contradicts the stored settings is refused; weights
  that store none (written before settings were stored) still load with the
  configuration given, as full weights, adapter files and trainer checkpoints;
- TIC+ROI, TIC+SFT and TIC+channel selection configurations come back too, also from
  a model cast to another precision;
- malformed settings are refused with a ``CheckpointError`` naming the key and what is
  wrong with it (not a ``KeyError``, ``IndexError`` ...), and ``load_model`` names the
  file as well.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import pytest
import torch
from codec_models import sample_image, tiny_tic

from compressai_transtic.adapter_files import AdapterMismatchError, load_adapter, save_adapter
from compressai_transtic.checkpoint import load_model, model_from_adapter
from compressai_transtic.models import (
    TIC,
    TICROI,
    TICSFT,
    ChannelSelectionConfig,
    ROIConfig,
    SFTConfig,
    TICChannelSelection,
    TransTIC,
)
from compressai_transtic.prompts import VARIANTS, PromptConfig
from compressai_transtic.state_dicts import CheckpointError, detect_architecture
from compressai_transtic.training.adapters import get_adapter_kind

#: the buffer of TransTIC weights that holds the settings no key shows
SETTINGS_KEY = "prompt_settings"

#: TransTIC configurations whose keys and shapes do not show every setting
HIDDEN = {
    "aligned-mask": PromptConfig(encoder_mask="aligned"),
    "enc-only-4-prompts": PromptConfig(decoder_tp_stbs=(), num_prompts=4),
    "enc-only-64-prompts": PromptConfig(decoder_tp_stbs=(), num_prompts=64, encoder_mask="aligned"),
    "enc-only-aligned": PromptConfig(decoder_tp_stbs=(), encoder_mask="aligned"),
    "4-prompts-aligned": PromptConfig(num_prompts=4, encoder_mask="aligned"),
    "shallow-aligned": PromptConfig(depth="shallow", encoder_mask="aligned"),
    "dec-only-64-prompts-legacy": PromptConfig(encoder_prompts=False, num_prompts=64),
    "dec-only-aligned": PromptConfig(encoder_prompts=False, encoder_mask="aligned"),
    "dec-only-width-8": PromptConfig(encoder_prompts=False, generator_width=8),
    "enc-ip-only-4-prompts": PromptConfig(decoder_tp_stbs=(), decoder_ip_stbs=(1, 2), num_prompts=4),
    "dec-ip-only-64-prompts": PromptConfig(
        encoder_prompts=False, decoder_tp_stbs=(), decoder_ip_stbs=(1, 2, 3, 4), num_prompts=64
    ),
    "ip-tp-aligned": PromptConfig(decoder_tp_stbs=(3, 4), decoder_ip_stbs=(1, 2), encoder_mask="aligned"),
}

#: TransTIC configurations whose keys and shapes show every setting
SHOWN = {
    **{f"preset-{name}": config for name, config in VARIANTS.items()},
    "width-8": PromptConfig(generator_width=8),
    "4-prompts-stb-1": PromptConfig(num_prompts=4, decoder_tp_stbs=(1,)),
    "64-prompts-dec-only": PromptConfig(encoder_prompts=False, num_prompts=64, encoder_mask="aligned"),
}


def small(cls: Any, config: Any) -> Any:
    """A model of ``config`` with N = M = 16 (seeded)."""
    torch.manual_seed(0)
    return cls(config, N=16, M=16)


@pytest.fixture(scope="module")
def base() -> TIC:
    return tiny_tic()


# ----------------------------------------------------------------------------------
# TransTIC: round trips and the stored settings
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("config", list({**HIDDEN, **SHOWN}.values()), ids=list({**HIDDEN, **SHOWN}))
def test_every_transtic_configuration_comes_back_from_its_state_dict(config):
    model = small(TransTIC, config)
    rebuilt = TransTIC.from_state_dict(model.state_dict())
    assert rebuilt.config == config
    assert PromptConfig.from_state_dict(model.prompt_state_dict()) == config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize("config", list(HIDDEN.values()), ids=list(HIDDEN))
def test_settings_no_key_shows_are_stored_in_an_adapter_buffer(config):
    model = small(TransTIC, config)
    stored = model.state_dict()[SETTINGS_KEY]
    mask = ("legacy", "aligned").index(config.encoder_mask)
    assert stored.dtype == torch.int64
    assert stored.tolist() == [config.num_prompts, mask, config.generator_width]
    assert TransTIC.is_adapter_key(SETTINGS_KEY)
    assert SETTINGS_KEY in model.prompt_state_dict() and SETTINGS_KEY not in model.base_state_dict()
    assert detect_architecture(model.state_dict()) == "transtic"


@pytest.mark.parametrize("config", list(SHOWN.values()), ids=list(SHOWN))
def test_layouts_that_show_every_setting_keep_their_keys(config):
    model = small(TransTIC, config)
    assert SETTINGS_KEY not in model.state_dict()
    assert all("settings" not in key for key in model.state_dict())


def test_the_settings_key_is_the_one_the_library_names():
    from compressai_transtic.prompts import SETTINGS_KEY as LIBRARY_KEY

    assert LIBRARY_KEY == SETTINGS_KEY


@pytest.mark.parametrize(
    "config, other",
    [
        (PromptConfig(encoder_mask="aligned"), PromptConfig(encoder_mask="legacy")),
        (PromptConfig(decoder_tp_stbs=(), num_prompts=4), PromptConfig(decoder_tp_stbs=(), num_prompts=16)),
    ],
    ids=["aligned-mask", "enc-only-4-prompts"],
)
def test_the_rebuilt_model_codes_as_the_original(config, other):
    model = small(TransTIC, config).eval()
    rebuilt = TransTIC.from_state_dict(model.state_dict()).eval()
    misread = TransTIC.from_state_dict({k: v for k, v in model.state_dict().items() if k != SETTINGS_KEY}).eval()
    assert misread.config == other  # what the keys alone say: the settings matter
    x = sample_image(64, 64)
    with torch.no_grad():
        y = model.analysis(x)
        assert torch.equal(rebuilt.analysis(x), y)
        assert not torch.equal(misread.analysis(x), y)


# ----------------------------------------------------------------------------------
# TransTIC: explicit configurations, old weights, adapters, trainer checkpoints
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config, other",
    [
        (PromptConfig(encoder_mask="aligned"), PromptConfig()),
        (PromptConfig(), PromptConfig(encoder_mask="aligned")),
        (
            PromptConfig(decoder_tp_stbs=(), num_prompts=4),
            PromptConfig(decoder_tp_stbs=(), num_prompts=64, encoder_mask="aligned"),
        ),
    ],
    ids=["stored-vs-implied", "implied-vs-stored", "stored-vs-stored"],
)
def test_an_explicit_configuration_that_contradicts_the_stored_settings_is_refused(config, other):
    source = small(TransTIC, config)
    if SETTINGS_KEY not in source.state_dict():  # weights that imply their settings, stored anyway
        source.register_buffer(SETTINGS_KEY, torch.tensor([16, 0, 32]))
    weights = source.state_dict()
    stored = r"num_prompts=\d+, encoder_mask='(legacy|aligned)', generator_width=32"
    with pytest.raises(
        CheckpointError, match=rf"{SETTINGS_KEY}: the weights were stored with {stored}, but .* has {stored};"
    ):
        TransTIC.from_state_dict(weights, config=other)
    model = small(TransTIC, other)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=SETTINGS_KEY):
        model.load_state_dict(weights)
    with pytest.raises(ValueError, match=SETTINGS_KEY):
        model.load_adapter_state_dict(source.prompt_state_dict())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_stored_settings_that_agree_with_an_explicit_configuration_load():
    config = PromptConfig(encoder_mask="aligned")
    weights = small(TransTIC, config).state_dict()
    loaded = TransTIC.from_state_dict(weights, config=config)
    assert loaded.config == config and loaded.state_dict().keys() == weights.keys()


def test_weights_written_before_settings_were_stored_load_with_the_configuration_given(base, tmp_path):
    config = PromptConfig(encoder_mask="aligned")
    model = TransTIC.from_base(base, config)
    old = {k: v for k, v in model.state_dict().items() if k != SETTINGS_KEY}
    loaded = TransTIC.from_state_dict(old, config=config)
    assert loaded.config == config and loaded.state_dict()[SETTINGS_KEY].tolist() == [16, 1, 32]
    # an adapter file and a trainer checkpoint of that time
    path = save_adapter(model, tmp_path / "aligned.pth")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"][SETTINGS_KEY]
    torch.save(payload, path)
    fresh = TransTIC.from_base(base, config)
    load_adapter(fresh, path)
    kind = get_adapter_kind("transtic")
    kind.load_state_dict(fresh, {k: v for k, v in kind.state_dict(model).items() if k != SETTINGS_KEY})
    assert fresh.config == config


def test_adapter_files_and_trainer_checkpoints_carry_the_stored_settings(base, tmp_path):
    config = PromptConfig(decoder_tp_stbs=(), num_prompts=4)
    model = TransTIC.from_base(base, config)
    path = save_adapter(model, tmp_path / "enc-only-4.pth")
    rebuilt = model_from_adapter(base, path)
    assert rebuilt.config == config
    assert torch.equal(rebuilt.state_dict()[SETTINGS_KEY], model.state_dict()[SETTINGS_KEY])
    with pytest.raises(AdapterMismatchError, match="configuration"):
        load_adapter(TransTIC.from_base(base, "enc-only"), path)
    kind = get_adapter_kind("transtic")
    checkpoint = kind.state_dict(model)
    assert SETTINGS_KEY in checkpoint
    fresh = kind.build(base, None, {"decoder_tp_stbs": (), "num_prompts": 4})
    kind.load_state_dict(fresh, checkpoint)
    with pytest.raises(ValueError, match=SETTINGS_KEY):
        kind.load_state_dict(kind.build(base, "enc-only", {}), checkpoint)


def test_a_float64_model_keeps_its_settings():
    config = PromptConfig(encoder_mask="aligned", decoder_tp_stbs=(1,))
    model = small(TransTIC, config).double()
    weights = model.state_dict()
    assert weights[SETTINGS_KEY].dtype == torch.int64
    assert weights["g_s6.residual_group.prompt_embeddings"].dtype == torch.float64
    assert PromptConfig.from_state_dict(weights) == config
    assert TransTIC.from_state_dict(weights).config == config


def test_the_prompt_count_of_old_weights_can_still_be_given():
    config = PromptConfig(decoder_tp_stbs=(), num_prompts=4)
    old = {k: v for k, v in small(TransTIC, config).state_dict().items() if k != SETTINGS_KEY}
    assert PromptConfig.from_state_dict(old, num_prompts=4) == config
    with pytest.raises(CheckpointError, match="hold 4 prompts per window, not 16"):
        PromptConfig.from_state_dict(small(TransTIC, config).state_dict(), num_prompts=16)


# ----------------------------------------------------------------------------------
# the baselines
# ----------------------------------------------------------------------------------
BASELINES = [
    (TICROI, ROIConfig(levels=2, width=4, min_weight=0.37)),
    (TICROI, ROIConfig(levels=255, width=8, min_weight=1.0)),
    (TICROI, ROIConfig(levels=7, width=4, min_weight=0.0123456789)),
    (TICSFT, SFTConfig(encoder=True, hyper=False, decoder=False, width=4)),
    (TICSFT, SFTConfig(encoder=False, hyper=True, decoder=False, width=8)),
    (TICSFT, SFTConfig(encoder=False, hyper=False, decoder=True, width=4)),
    (TICSFT, SFTConfig(width=6)),
    (TICChannelSelection, ChannelSelectionConfig(feature_channels=32, width=8)),
    (TICChannelSelection, ChannelSelectionConfig(feature_channels=256, width=4)),
]


@pytest.mark.parametrize("cls, config", BASELINES, ids=[f"{cls.arch}-{i}" for i, (cls, _) in enumerate(BASELINES)])
def test_every_baseline_configuration_comes_back_from_its_state_dict(cls, config):
    model = small(cls, config)
    assert cls.from_state_dict(model.state_dict()).config == config
    assert cls.config_class.from_state_dict(model.adapter_state_dict()) == config


@pytest.mark.parametrize("cast", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_roi_settings_survive_a_cast_of_the_model(cast):
    config = ROIConfig(levels=5, width=4, min_weight=0.0123456789)
    model = small(TICROI, config).to(cast)
    weights = model.state_dict()
    assert weights["roi_min_weight"].dtype == torch.float64
    assert ROIConfig.from_state_dict(weights) == config
    assert TICROI.from_state_dict(weights).config == config


def test_roi_weights_cast_by_an_earlier_version_still_load():
    config = ROIConfig(levels=5, width=4, min_weight=0.01)
    weights = dict(small(TICROI, config).state_dict())
    weights["roi_min_weight"] = weights["roi_min_weight"].half()  # as nn.Module.half() used to store it
    model = small(TICROI, config)
    model.load_state_dict(weights)
    assert model.roi_min_weight.dtype == torch.float64 and float(model.roi_min_weight) == 0.01


def test_an_explicit_roi_configuration_that_contradicts_the_stored_settings_is_refused():
    weights = small(TICROI, ROIConfig(levels=5, width=4, min_weight=0.5)).state_dict()
    with pytest.raises(CheckpointError, match="'roi_min_weight': 0.5"):
        TICROI.from_state_dict(weights, config=ROIConfig(levels=5, width=4, min_weight=0.25))
    with pytest.raises(CheckpointError, match="'roi_levels': 5"):
        TICROI.from_state_dict(weights, config=ROIConfig(levels=4, width=4, min_weight=0.5))


# ----------------------------------------------------------------------------------
# malformed settings
# ----------------------------------------------------------------------------------
Mutation = Callable[[Dict[str, Any]], None]


def setting(key: str, value: Any) -> Mutation:
    def mutate(weights: Dict[str, Any]) -> None:
        weights[key] = value

    return mutate


def delete(key: str) -> Mutation:
    def mutate(weights: Dict[str, Any]) -> None:
        del weights[key]

    return mutate


def delete_prefix(prefix: str) -> Mutation:
    def mutate(weights: Dict[str, Any]) -> None:
        for key in [k for k in weights if k.startswith(prefix)]:
            del weights[key]

    return mutate


ALIGNED = PromptConfig(encoder_mask="aligned")
EMBEDDINGS = "g_s0.residual_group.prompt_embeddings"
CONDITION = "g_a_roi_condition.0.0.weight"
MALFORMED = {
    # TransTIC
    "transtic-1d-embeddings": (TransTIC, None, setting(EMBEDDINGS, torch.zeros(16)), rf"{EMBEDDINGS} .*3 dimensions"),
    "transtic-embeddings-not-a-tensor": (
        TransTIC,
        None,
        setting(EMBEDDINGS, [0.0]),
        rf"{EMBEDDINGS} .*must be a tensor",
    ),
    "transtic-8-prompts": (
        TransTIC,
        None,
        setting(EMBEDDINGS, torch.zeros(2, 8, 16)),
        rf"{EMBEDDINGS} holds 8 prompts",
    ),
    "transtic-prompt-counts-disagree": (
        TransTIC,
        None,
        setting(EMBEDDINGS, torch.zeros(2, 4, 16)),
        "disagree on the prompt count",
    ),
    "transtic-depths-disagree": (
        TransTIC,
        None,
        delete_prefix("g_a0_prompt_layers.1."),
        "disagree on the depth.*g_a0_prompt_layers",
    ),
    "transtic-generator-missing": (
        TransTIC,
        None,
        delete("g_a0_prompt.down1.0.weight"),
        r"g_a0_prompt.down1.0.weight .*is missing",
    ),
    "transtic-generator-1d": (
        TransTIC,
        None,
        setting("g_a0_prompt.down1.0.weight", torch.zeros(32)),
        r"g_a0_prompt.down1.0.weight .*4 dimensions",
    ),
    "settings-not-a-tensor": (TransTIC, ALIGNED, setting(SETTINGS_KEY, [16, 1, 32]), rf"{SETTINGS_KEY} .*a tensor"),
    "settings-2-values": (
        TransTIC,
        ALIGNED,
        setting(SETTINGS_KEY, torch.tensor([16, 1])),
        rf"{SETTINGS_KEY} .*3 integers",
    ),
    "settings-0d": (TransTIC, ALIGNED, setting(SETTINGS_KEY, torch.tensor(16)), rf"{SETTINGS_KEY} .*1 dimension"),
    "settings-floats": (
        TransTIC,
        ALIGNED,
        setting(SETTINGS_KEY, torch.tensor([16.0, 1.0, 32.5])),
        rf"{SETTINGS_KEY} .*integer dtype",
    ),
    "settings-nan": (
        TransTIC,
        ALIGNED,
        setting(SETTINGS_KEY, torch.tensor([16.0, float("nan"), 32.0])),
        rf"{SETTINGS_KEY} .*is NaN",
    ),
    "settings-8-prompts": (
        TransTIC,
        ALIGNED,
        setting(SETTINGS_KEY, torch.tensor([8, 1, 32])),
        rf"{SETTINGS_KEY}\[0\] \(num_prompts\) must be 4, 16 or 64, got 8",
    ),
    "settings-mask-2": (
        TransTIC,
        ALIGNED,
        setting(SETTINGS_KEY, torch.tensor([16, 2, 32])),
        rf"{SETTINGS_KEY}\[1\] \(encoder_mask.*got 2",
    ),
    "settings-width-huge": (
        TransTIC,
        PromptConfig(encoder_prompts=False, generator_width=8),
        setting(SETTINGS_KEY, torch.tensor([16, 0, 10**9])),
        rf"{SETTINGS_KEY}\[2\] \(generator_width\).*got 1000000000",
    ),
    "settings-contradict-shapes": (
        TransTIC,
        ALIGNED,
        setting(SETTINGS_KEY, torch.tensor([4, 1, 32])),
        rf"{SETTINGS_KEY} stores num_prompts=4, but the weights' shapes show 16",
    ),
    # TIC+ROI
    "roi-levels-missing": (TICROI, ROIConfig(width=4), delete("roi_levels"), r"roi_levels .*is missing"),
    "roi-levels-two": (
        TICROI,
        ROIConfig(width=4),
        setting("roi_levels", torch.tensor([1, 2])),
        r"roi_levels .*one integer.*shape \(2,\)",
    ),
    "roi-levels-1": (TICROI, ROIConfig(width=4), setting("roi_levels", torch.tensor(1)), r"roi_levels .*2..255, got 1"),
    "roi-levels-float": (
        TICROI,
        ROIConfig(width=4),
        setting("roi_levels", torch.tensor(4.5)),
        r"roi_levels .*integer dtype",
    ),
    "roi-levels-nan": (
        TICROI,
        ROIConfig(width=4),
        setting("roi_levels", torch.tensor(float("nan"))),
        r"roi_levels .*is NaN",
    ),
    "roi-levels-not-a-tensor": (TICROI, ROIConfig(width=4), setting("roi_levels", 4), r"roi_levels .*must be a tensor"),
    "roi-min-weight-nan": (
        TICROI,
        ROIConfig(width=4),
        setting("roi_min_weight", torch.tensor(float("nan"), dtype=torch.float64)),
        r"roi_min_weight .*is NaN",
    ),
    "roi-min-weight-zero": (
        TICROI,
        ROIConfig(width=4),
        setting("roi_min_weight", torch.tensor(0.0, dtype=torch.float64)),
        r"roi_min_weight .*within \(0, 1\], got 0.0",
    ),
    "roi-min-weight-inf": (
        TICROI,
        ROIConfig(width=4),
        setting("roi_min_weight", torch.tensor(float("inf"), dtype=torch.float64)),
        r"roi_min_weight .*finite",
    ),
    "roi-min-weight-1d": (
        TICROI,
        ROIConfig(width=4),
        setting("roi_min_weight", torch.ones(2, dtype=torch.float64)),
        r"roi_min_weight .*one number",
    ),
    "roi-condition-missing": (TICROI, ROIConfig(width=4), delete(CONDITION), rf"{CONDITION} .*is missing"),
    # TIC+channel selection
    "chsel-last-missing": (
        TICChannelSelection,
        ChannelSelectionConfig(width=8),
        delete("g_s_chsel_transform.6.weight"),
        r"g_s_chsel_transform.6.weight .*is missing",
    ),
    "chsel-first-1d": (
        TICChannelSelection,
        ChannelSelectionConfig(width=8),
        setting("g_s_chsel_transform.0.weight", torch.zeros(8)),
        r"g_s_chsel_transform.0.weight .*4 dimensions",
    ),
    "chsel-too-wide": (
        TICChannelSelection,
        ChannelSelectionConfig(width=8),
        setting("g_s_chsel_transform.6.weight", torch.zeros(600, 8, 3, 3)),
        r"g_s_chsel_transform.6.weight .*600 output channels",
    ),
    # TIC+SFT
    "sft-condition-missing": (
        TICSFT,
        SFTConfig(width=4),
        delete("g_s_sft_condition.0.0.weight"),
        r"g_s_sft_condition.0.0.weight .*is missing",
    ),
    "sft-widths-disagree": (
        TICSFT,
        SFTConfig(width=4),
        setting("h_a_sft_condition.0.0.weight", torch.zeros(8, 16, 3, 3)),
        r"disagree on the width.*h_a_sft_condition.0.0.weight",
    ),
}


@pytest.fixture(scope="module")
def weights() -> Callable[[Any, Any], Dict[str, Any]]:
    """The state dict of a small model of ``cls`` and ``config`` (built once each)."""
    cache: Dict[Any, Dict[str, Any]] = {}

    def get(cls: Any, config: Any) -> Dict[str, Any]:
        if (cls, config) not in cache:
            cache[cls, config] = small(cls, config).state_dict()
        return dict(cache[cls, config])

    return get


@pytest.mark.parametrize("cls, config, mutate, message", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_settings_are_a_checkpoint_error_naming_the_key(weights, cls, config, mutate, message):
    state = weights(cls, config)
    mutate(state)
    with pytest.raises(CheckpointError, match=message):
        cls.config_class.from_state_dict(state)
    with pytest.raises(CheckpointError, match=message):
        cls.from_state_dict(state)


@pytest.mark.parametrize(
    "case",
    ["transtic-1d-embeddings", "settings-mask-2", "roi-levels-missing", "roi-levels-two", "chsel-last-missing"],
)
def test_load_model_names_the_file_and_the_key(weights, tmp_path, case):
    cls, config, mutate, message = MALFORMED[case]
    state = weights(cls, config)
    mutate(state)
    path = tmp_path / f"{case}.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=rf"{case}\.pth\.tar: .*{message}"):
        load_model(None, path)


@pytest.mark.parametrize("config_class", [PromptConfig, ROIConfig, SFTConfig, ChannelSelectionConfig])
def test_what_is_no_state_dict_is_a_checkpoint_error(config_class):
    with pytest.raises(CheckpointError, match="not a state dict"):
        config_class.from_state_dict([("g_a0.weight", torch.zeros(1))])


def test_weights_without_any_sft_layer_are_named_as_such(base):
    with pytest.raises(CheckpointError, match="no TIC\\+SFT layers.*g_a_sft, h_a_sft, g_s_sft"):
        SFTConfig.from_state_dict(base.state_dict())
