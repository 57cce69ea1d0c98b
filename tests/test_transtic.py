"""TransTIC: released layout, frozen base, every variant, adapters, unchanged base path."""

from __future__ import annotations

import pytest
import torch
from codec_models import calibrated_tic, calibrated_tic_state, describe, num_threads, read_tsv, sample_image

from compressai_transtic.layers import reference_attention
from compressai_transtic.models import TIC, TransTIC
from compressai_transtic.prompts import (
    VARIANTS,
    AdapterError,
    AdapterMismatchError,
    PromptConfig,
    base_codec_hash,
    load_adapter,
    save_adapter,
)


@pytest.fixture(scope="module")
def base() -> TIC:
    return calibrated_tic()


@pytest.fixture(scope="module")
def transtic(base) -> TransTIC:
    torch.manual_seed(1)
    model = TransTIC.from_base(base).eval()
    model.update(force=True)
    return model


def test_state_dict_has_the_keys_shapes_and_kinds_of_the_released_checkpoints():
    assert describe(TransTIC()) == read_tsv("transtic.tsv")


def test_released_layout_loads_strictly_and_the_config_is_inferred():
    source = TransTIC()
    source.update(force=True)
    rebuilt = TransTIC.from_state_dict(source.state_dict())
    assert rebuilt.config == PromptConfig()
    for key, value in source.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_base_codec_weights_load_and_only_prompts_remain(base):
    model = TransTIC()
    base_keys = set(base.state_dict())
    missing = set(model.state_dict()) - base_keys
    assert base_keys <= set(model.state_dict())
    assert missing and all("prompt" in k for k in missing)
    model.load_base_state_dict(base.state_dict())
    assert set(model.base_state_dict()) == base_keys
    for key, value in base.state_dict().items():
        assert torch.equal(model.base_state_dict()[key], value), key


def test_base_is_frozen_and_only_prompt_parameters_train(transtic):
    trainable = {n for n, p in transtic.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in transtic.named_prompt_parameters()}
    assert trainable and all("prompt" in n for n in trainable)
    assert not any(p.requires_grad for p in transtic.entropy_bottleneck.parameters())
    assert sum(p.numel() for p in transtic.prompt_parameters()) == 1_619_968


def test_prompt_training_step_leaves_the_base_bit_identical(base):
    model = TransTIC.from_base(base).train()
    before = {k: v.clone() for k, v in model.base_state_dict().items()}
    opt = torch.optim.Adam(model.prompt_parameters(), lr=1e-2)
    out = model(sample_image(64, 64))
    loss = sum(-lik.log2().sum() for lik in out["likelihoods"].values()) + out["x_hat"].square().mean()
    loss.backward()
    opt.step()
    after = model.base_state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert base_codec_hash(model) == base_codec_hash(base.state_dict())


def test_base_path_is_unchanged_without_prompts(base):
    """Decoder-only prompting leaves the bitstream of TIC untouched; encoder-only
    prompting decodes a TIC bitstream exactly as TIC does."""
    x = sample_image(64, 96)
    dec_only = TransTIC.from_base(base, PromptConfig.variant("dec-only")).eval()
    enc_only = TransTIC.from_base(base, PromptConfig.variant("enc-only")).eval()
    for m in (dec_only, enc_only):
        m.update(force=True)
    with torch.no_grad():
        tic_enc = base.compress(x)
        assert dec_only.compress(x)["strings"] == tic_enc["strings"]
        torch.testing.assert_close(
            enc_only.decompress(tic_enc["strings"], tic_enc["shape"])["x_hat"],
            base.decompress(tic_enc["strings"], tic_enc["shape"])["x_hat"],
            rtol=0,
            atol=0,
        )


def test_prompts_change_the_output(base, transtic):
    x = sample_image(64, 64)
    with torch.no_grad():
        assert (transtic(x)["x_hat"] - base(x)["x_hat"]).abs().max() > 1e-3


@pytest.mark.parametrize("height,width", [(1, 1), (17, 23), (64, 64), (100, 37), (256, 256)])
def test_round_trip_any_size(transtic, height, width):
    x = sample_image(height, width, "chelsea")
    with torch.no_grad():
        out = transtic(x)
        enc = transtic.compress(x)
        again = transtic.compress(x)
        dec = transtic.decompress(enc["strings"], enc["shape"])
    assert enc["strings"] == again["strings"]
    assert dec["x_hat"].shape == x.shape
    assert 0 <= dec["x_hat"].min() and dec["x_hat"].max() <= 1, "decompress() must clamp to [0, 1]"
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)


def test_decoding_is_independent_of_thread_count(transtic):
    x = sample_image(128, 128)
    with num_threads(2), torch.no_grad():
        enc = transtic.compress(x)
        two = transtic.decompress(enc["strings"], enc["shape"])["x_hat"]
    with num_threads(1), torch.no_grad():
        one = transtic.decompress(enc["strings"], enc["shape"])["x_hat"]
        assert transtic.compress(x)["strings"] == enc["strings"]
    assert torch.equal(one, two)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_codes_and_matches_the_reference_path(base, name):
    torch.manual_seed(0)
    model = TransTIC.from_base(base, PromptConfig.variant(name)).eval()
    model.update(force=True)
    x = sample_image(64, 64)
    with torch.no_grad():
        fast = model(x)["x_hat"]
        with reference_attention():
            ref = model(x)["x_hat"]
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(dec, fast.clamp(0, 1), rtol=0, atol=1e-4)
    assert PromptConfig.from_state_dict(model.state_dict(), num_prompts=model.config.num_prompts) == model.config


@pytest.mark.parametrize(
    "options,message",
    [
        ({"num_prompts": 8}, "num_prompts must be one of"),
        ({"depth": "medium"}, "depth must be"),
        ({"encoder_mask": "wrong"}, "encoder_mask must be"),
        ({"decoder_tp_stbs": (5,)}, "from 1 \\(g_s6\\) to 4"),
        ({"decoder_tp_stbs": (1, 2), "decoder_ip_stbs": (2,)}, "cannot take both"),
        ({"decoder_tp_stbs": (), "decoder_ip_stbs": (1, 3)}, "consecutive"),
        ({"depth": "shallow", "decoder_tp_stbs": (), "decoder_ip_stbs": (1,)}, "only defined for depth='deep'"),
        ({"encoder_prompts": False, "decoder_tp_stbs": ()}, "no prompts at all"),
        ({"num_prompts": 64}, "legacy encoder mask layout is undefined for 64 prompts"),
    ],
)
def test_invalid_configurations_are_rejected_with_a_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        PromptConfig(**options)


def test_unknown_variant_names_list_the_known_ones():
    with pytest.raises(ValueError, match="choose from"):
        PromptConfig.variant("deeper")


def _perturbed(model: TransTIC, seed: int) -> TransTIC:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_adapters_swap_at_run_time_and_match_freshly_loaded_models(base, tmp_path):
    task_a = _perturbed(TransTIC.from_base(base), 1).eval()
    task_b = _perturbed(TransTIC.from_base(base), 2).eval()
    path_a = save_adapter(task_a, tmp_path / "a.pt", task="cls", metadata={"lmbda": 0.1})
    path_b = save_adapter(task_b, tmp_path / "b.pt", task="det")
    assert path_a.stat().st_size < 10e6

    x = sample_image(64, 64)
    with torch.no_grad():
        expected_a, expected_b = task_a(x)["x_hat"], task_b(x)["x_hat"]

    served = TransTIC.from_base(base).eval()
    for path, expected in ((path_a, expected_a), (path_b, expected_b), (path_a, expected_a)):
        header = load_adapter(served, path)
        with torch.no_grad():
            assert torch.equal(served(x)["x_hat"], expected)
    assert header["task"] == "cls" and header["metadata"] == {"lmbda": 0.1}
    assert base_codec_hash(served) == base_codec_hash(base.state_dict())


def test_adapters_of_another_variant_or_base_are_refused(base, tmp_path):
    path = save_adapter(TransTIC.from_base(base), tmp_path / "deep.pt", task="cls")
    with pytest.raises(AdapterMismatchError, match="transtic configuration"):
        load_adapter(TransTIC.from_base(base, PromptConfig.variant("stb-12")), path)
    other_base = TransTIC()  # random base weights
    with pytest.raises(AdapterMismatchError, match="another base codec"):
        load_adapter(other_base, path)


def test_a_refused_adapter_changes_nothing(base, tmp_path):
    source = _perturbed(TransTIC.from_base(base), 3)
    payload = {k: v.clone() for k, v in source.prompt_state_dict().items()}
    last = sorted(payload)[-1]
    payload[last] = torch.zeros(*payload[last].shape, 2)  # wrong shape in the last tensor
    model = TransTIC.from_base(base)
    before = {k: v.clone() for k, v in model.prompt_state_dict().items()}
    with pytest.raises(ValueError, match=f"adapter tensor {last}: shape"):
        model.load_prompt_state_dict(payload)
    assert all(torch.equal(model.prompt_state_dict()[k], v) for k, v in before.items())


def test_adapters_with_nan_are_refused_before_loading(base, tmp_path):
    model = TransTIC.from_base(base)
    path = save_adapter(model, tmp_path / "a.pt", task="cls")
    payload = torch.load(path, weights_only=True)
    key = sorted(payload["state_dict"])[0]
    payload["state_dict"][key].view(-1)[0] = float("nan")
    torch.save(payload, path)
    before = {k: v.clone() for k, v in model.prompt_state_dict().items()}
    with pytest.raises(AdapterError, match=f"holds NaN or Inf values in \\['{key}'\\]"):
        load_adapter(model, path)
    assert all(torch.equal(model.prompt_state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize(
    "mangle, error, problem",
    [
        (
            lambda p: p["state_dict"].pop(sorted(p["state_dict"])[0]),
            AdapterMismatchError,
            "do not fit this model: missing",
        ),
        (
            lambda p: p["state_dict"].update({7: torch.zeros(1)}),
            AdapterError,
            "'state_dict' entry is not a dict of tensors",
        ),
        (lambda p: p.update(base_sha256=5), AdapterError, "'base_sha256' or 'task' entry is not text"),
        (lambda p: p.update(task=5), AdapterError, "'base_sha256' or 'task' entry is not text"),
    ],
    ids=["missing-key", "number-key", "number-hash", "number-task"],
)
def test_malformed_adapters_are_refused_naming_the_file_before_loading(base, tmp_path, mangle, error, problem):
    model = TransTIC.from_base(base)
    path = save_adapter(model, tmp_path / "a.pt", task="cls")
    payload = torch.load(path, weights_only=True)
    mangle(payload)
    torch.save(payload, path)
    before = {k: v.clone() for k, v in model.prompt_state_dict().items()}
    with pytest.raises(error, match=problem) as info:
        load_adapter(model, path)
    assert str(path) in str(info.value)
    assert all(torch.equal(model.prompt_state_dict()[k], v) for k, v in before.items())


def test_non_adapter_files_are_refused(tmp_path):
    bogus = tmp_path / "bogus.pt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(AdapterError, match="not an adapter file"):
        load_adapter(TransTIC(), bogus)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AdapterError, match="notes.txt: not a PyTorch checkpoint"):
        load_adapter(TransTIC(), text)
    with pytest.raises(AdapterError, match="missing.pt: no such file"):
        load_adapter(TransTIC(), tmp_path / "missing.pt")


def test_calibrated_state_is_reused(base):
    assert calibrated_tic_state() is calibrated_tic_state()
