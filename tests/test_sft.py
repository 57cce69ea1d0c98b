"""TIC+SFT, the spatial-feature-transform baseline on the frozen TIC.

Promises checked here:

- a fresh TIC+SFT codes exactly as its base codec (the transforms start as the
  identity), and only the SFT parts are trainable;
- with trained (here: random non-zero) SFT layers, compress/decompress decode the
  latents of ``forward`` and the clamped ``forward`` image;
- the layout is the documented one: one SFT after every Swin stage of g_a, h_a and g_s,
  conditioned on the image, on y and on y_hat;
- weights, adapters and the loader: the architecture is recognised from the keys, the
  configuration read back, and adapters of TIC+SFT and TransTIC refuse each other
  without changing the model.
"""

from __future__ import annotations

import pytest
import torch
from codec_models import assert_codes_as_its_base, randomize_adapter, round_trip, sample_image, tiny_tic

from compressai_transtic.adapter_files import AdapterMismatchError, load_adapter, save_adapter
from compressai_transtic.checkpoint import detect_architecture, load_model, model_from_adapter
from compressai_transtic.models import TIC, TICSFT, ChannelSelectionConfig, ROIConfig, SFTConfig, TransTIC
from compressai_transtic.prompts import PromptConfig

SMALL = SFTConfig(width=8)


@pytest.fixture(scope="module")
def base() -> TIC:
    return tiny_tic()


def trained(model: TICSFT) -> TICSFT:
    return randomize_adapter(model)


def test_a_fresh_sft_codec_codes_exactly_as_its_base(base):
    assert_codes_as_its_base(TICSFT.from_base(base, SMALL), base, sample_image(70, 90))


def test_only_the_sft_parts_train(base):
    model = TICSFT.from_base(base, SMALL)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_adapter_parameters()}
    assert trainable and all("_sft" in n for n in trainable)
    assert not any(n.startswith(("entropy_bottleneck", "gaussian_conditional")) for n in trainable)
    assert model.base_state_dict().keys() == base.state_dict().keys()


def test_one_transform_after_every_swin_stage_with_the_documented_conditions(base):
    model = trained(TICSFT.from_base(base, SMALL)).eval()
    seen = []
    for part in ("g_a_sft", "h_a_sft", "g_s_sft"):
        for i, layer in enumerate(getattr(model, part)):
            layer.register_forward_hook(lambda m, args, out, name=f"{part}{i}": seen.append((name, args[0], args[1])))
    stage_outputs = {}
    for name in ("g_a1", "g_a3", "g_a5", "g_a7", "h_a1", "h_a3", "g_s0", "g_s2", "g_s4", "g_s6"):
        getattr(model, name).register_forward_hook(lambda m, a, out, name=name: stage_outputs.setdefault(name, out))
    x = sample_image(128, 128)
    with torch.no_grad():
        model(x)
    order = ["g_a_sft0", "g_a_sft1", "g_a_sft2", "g_a_sft3", "h_a_sft0", "h_a_sft1"]
    order += ["g_s_sft0", "g_s_sft1", "g_s_sft2", "g_s_sft3"]
    assert [name for name, _, _ in seen] == order
    stages = ["g_a1", "g_a3", "g_a5", "g_a7", "h_a1", "h_a3", "g_s0", "g_s2", "g_s4", "g_s6"]
    scales = [2, 4, 8, 16, 32, 64, 16, 8, 4, 2]
    for (name, features, condition), stage, scale in zip(seen, stages, scales):
        assert features is stage_outputs[stage], name  # applied to the stage's output
        assert condition.shape == (1, SMALL.width, 128 // scale, 128 // scale), name


def test_the_conditions_come_from_the_image_y_and_y_hat(base):
    """Changing the input of a condition network changes the transform; the decoder's
    depends on nothing but y_hat (decoding needs nothing else)."""
    model = trained(TICSFT.from_base(base, SMALL)).eval()
    x = sample_image(64, 64)
    with torch.no_grad():
        y = model.analysis(model._pad(x))
        y_hat = torch.round(y)
        first = model.synthesis(y_hat)
        again = model.synthesis(y_hat.clone())
        assert torch.equal(first, again)
        other = model.synthesis(y_hat + 1)
        assert not torch.allclose(first, other)
        plain = TIC.synthesis(model, y_hat)  # the base synthesis, no SFT
        assert not torch.allclose(first, plain)


@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
def test_round_trip_decodes_the_latents_and_image_of_forward(base, size):
    model = trained(TICSFT.from_base(base, SMALL)).eval()
    model.update(force=True)
    x = sample_image(*size, "coffee")
    out, enc, dec, (y_forward, y_decoded) = round_trip(model, x)
    assert torch.equal(y_forward, y_decoded)
    assert dec["x_hat"].shape == x.shape
    assert dec["x_hat"].min() >= 0 and dec["x_hat"].max() <= 1
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)


def test_float64_round_trip(base):
    model = trained(TICSFT.from_base(base, SMALL)).double().eval()
    model.update(force=True)
    x = sample_image(64, 80).double()
    out, _, dec, _ = round_trip(model, x)
    assert dec["x_hat"].dtype == torch.float64
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "config", [SFTConfig(width=8), SFTConfig(encoder=False, width=4), SFTConfig(hyper=False, decoder=False, width=8)]
)
def test_weights_name_their_architecture_and_configuration(base, config, tmp_path):
    model = trained(TICSFT.from_base(base, config))
    model.update(force=True)
    assert detect_architecture(model.state_dict()) == "tic-sft"
    torch.save({"state_dict": model.state_dict()}, tmp_path / "sft.pth.tar")
    loaded = load_model(None, tmp_path / "sft.pth.tar")
    assert type(loaded) is TICSFT and loaded.config == config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: SFTConfig(width=1.5), "SFTConfig.width"),
        (lambda: SFTConfig(encoder=1), "SFTConfig.encoder"),
        (lambda: ROIConfig(levels=True), "ROIConfig.levels"),
        (lambda: ROIConfig(min_weight="0.1"), "ROIConfig.min_weight"),
        (lambda: ChannelSelectionConfig(width="8"), "ChannelSelectionConfig.width"),
    ],
)
def test_baseline_settings_of_the_wrong_type_are_refused_by_name(build, field):
    with pytest.raises(ValueError, match=f"{field} must be of type"):
        build()


def test_configurations_that_transform_nothing_are_refused():
    with pytest.raises(ValueError, match="transforms nothing"):
        SFTConfig(encoder=False, hyper=False, decoder=False)
    with pytest.raises(ValueError, match="width"):
        SFTConfig(width=0)


def test_adapters_restore_the_sft_parts_on_the_same_base(base, tmp_path):
    model = trained(TICSFT.from_base(base, SMALL))
    path = save_adapter(model, tmp_path / "sft.pth", task="cls")
    rebuilt = model_from_adapter(base, path)
    assert type(rebuilt) is TICSFT and rebuilt.config == SMALL
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_an_adapter_goes_onto_the_base_of_another_adapted_codec(base, tmp_path):
    path = save_adapter(trained(TICSFT.from_base(base, SMALL)), tmp_path / "sft.pth")
    prompted = TransTIC.from_base(base, PromptConfig(generator_width=4))
    rebuilt = model_from_adapter(prompted, path)  # the TransTIC's base codec, not its prompts
    assert type(rebuilt) is TICSFT and rebuilt.base_state_dict().keys() == base.state_dict().keys()


def test_adapters_of_sft_and_transtic_refuse_each_other_and_change_nothing(base, tmp_path):
    sft = trained(TICSFT.from_base(base, SMALL))
    transtic = TransTIC.from_base(base, PromptConfig(generator_width=4))
    sft_file = save_adapter(sft, tmp_path / "sft.pth")
    transtic_file = save_adapter(transtic, tmp_path / "prompts.pth")
    for model, foreign, word in ((transtic, sft_file, "tic-sft"), (sft, transtic_file, "transtic")):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(AdapterMismatchError, match=f"holds {word} weights"):
            load_adapter(model, foreign)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_adapters_of_another_configuration_or_base_are_refused(base, tmp_path):
    path = save_adapter(trained(TICSFT.from_base(base, SMALL)), tmp_path / "sft.pth")
    with pytest.raises(AdapterMismatchError, match="tic-sft configuration"):
        load_adapter(TICSFT.from_base(base, SFTConfig(width=4)), path)
    torch.manual_seed(3)
    other = TIC(N=16, M=16)
    with pytest.raises(AdapterMismatchError, match="another base codec"):
        load_adapter(TICSFT.from_base(other, SMALL), path)
