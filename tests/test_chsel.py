"""TIC+channel selection: a gate on the latent channels of the frozen TIC and a transform
to recognition features.

Promises checked here:

- a fresh model (every gate open) codes exactly as its base codec, and only the gate and
  the transform train;
- the rate counts only the coded channels: closing gates removes their bits from the
  likelihoods and their symbols from the stream, and the decoder fills them with the
  hyperprior's means, as ``forward`` does;
- round trip: the decoded image and features equal those of ``forward`` in eval mode;
- the gate's gradient passes the straight-through estimator;
- the features have the recognition network's ``res2`` layout and feed the classifier's
  and the detectors' later layers, in the loss and in prediction.
"""

from __future__ import annotations

import pytest
import torch
from codec_models import assert_codes_as_its_base, randomize_adapter, round_trip, sample_image, tiny_tic

from compressai_transtic.adapter_files import AdapterMismatchError, load_adapter, save_adapter
from compressai_transtic.checkpoint import detect_architecture, load_model
from compressai_transtic.models import TIC, TICSFT, ChannelSelectionConfig, SFTConfig, TICChannelSelection

SMALL = ChannelSelectionConfig(feature_channels=256, width=8)


@pytest.fixture(scope="module")
def base() -> TIC:
    return tiny_tic()


def with_gates(model: TICChannelSelection, closed) -> TICChannelSelection:
    with torch.no_grad():
        model.g_a_chsel_gate[list(closed)] = -1.0
    return model


def test_a_fresh_model_codes_every_channel_as_its_base(base):
    model = TICChannelSelection.from_base(base, SMALL)
    assert_codes_as_its_base(model, base, sample_image(70, 90))
    assert model.selected() == list(range(16))


def test_only_the_gate_and_the_transform_train(base):
    model = TICChannelSelection.from_base(base, SMALL)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_adapter_parameters()}
    assert "g_a_chsel_gate" in trainable and all("chsel" in n for n in trainable)


def test_closed_channels_cost_nothing_and_decode_to_the_means(base):
    model = with_gates(TICChannelSelection.from_base(base, SMALL).eval(), range(0, 16, 2))
    model.update(force=True)
    x = sample_image(64, 80)
    with torch.no_grad():
        out = model(x)
        enc = model.compress(x)
        full = base.compress(x)
    likelihoods = out["likelihoods"]["y"]
    assert bool((likelihoods[:, 0::2] == 1).all()) and bool((likelihoods[:, 1::2] < 1).any())
    assert len(enc["strings"][0][0]) < len(full["strings"][0][0])
    out, _, dec, (y_forward, y_decoded) = round_trip(model, x)
    assert torch.equal(y_forward, y_decoded)
    with torch.no_grad():
        scales, means = model.h_s(torch.round(model.h_a(model.analysis(model._pad(x)))))
    assert torch.equal(y_decoded[:, 0::2], means[:, 0::2])  # the hyperprior's prediction
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)
    torch.testing.assert_close(dec["features"]["res2"], out["features"]["res2"], rtol=0, atol=1e-4)
    assert dec["features"]["res2"].shape == (1, 256, 16, 20)


def test_no_coded_channel_at_all_still_round_trips(base):
    model = with_gates(TICChannelSelection.from_base(base, SMALL).eval(), range(16))
    model.update(force=True)
    x = sample_image(64, 64)
    out, enc, dec, _ = round_trip(model, x)
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)


def test_the_gate_learns_through_the_straight_through_estimator(base):
    model = TICChannelSelection.from_base(base, SMALL).train()
    x = sample_image(64, 64)
    out = model(x)
    bits = -torch.log2(out["likelihoods"]["y"]).sum()
    bits.backward()
    grad = model.g_a_chsel_gate.grad
    assert grad is not None and bool((grad > 0).all())  # closing any channel saves bits
    assert torch.equal(model.gate().detach(), torch.ones(16))


def test_weights_adapters_and_the_loader(base, tmp_path):
    model = with_gates(randomize_adapter(TICChannelSelection.from_base(base, SMALL)), [3, 5])
    assert detect_architecture(model.state_dict()) == "tic-chsel"
    torch.save({"state_dict": model.state_dict()}, tmp_path / "chsel.pth.tar")
    loaded = load_model(None, tmp_path / "chsel.pth.tar")
    assert type(loaded) is TICChannelSelection and loaded.config == SMALL
    assert loaded.selected() == model.selected()
    path = save_adapter(model, tmp_path / "chsel.pth")
    with pytest.raises(AdapterMismatchError, match="holds tic-chsel weights, not tic-sft"):
        load_adapter(TICSFT.from_base(base, SFTConfig(width=8)), path)


@pytest.mark.parametrize("task_name", ["cls", "det"])
def test_features_feed_the_later_layers_of_the_recognition_networks(base, task_name):
    from compressai_transtic.tasks import get_task

    task = get_task(task_name, weights="random", seed=0)
    x = sample_image(64, 96)
    extractor = task.feature_extractor()
    with torch.no_grad():
        direct = extractor(x)
        res2 = next(iter(direct.values())) if task_name == "cls" else None
        if task_name == "det":  # the body's layer1 output on the normalised image
            body = task.network.backbone.body
            res2 = body.layer1(body.maxpool(body.relu(body.bn1(body.conv1(extractor.preprocess(x))))))
        via = extractor.from_res2(res2)
    assert list(via) == list(direct)
    for name in direct:
        torch.testing.assert_close(via[name], direct[name], rtol=1e-5, atol=1e-5)


def test_predictions_from_the_networks_own_res2_equal_predictions_from_the_image():
    from types import SimpleNamespace

    from compressai_transtic.tasks import get_task

    x = sample_image(64, 96)
    cls = get_task("cls", weights="random", seed=0)
    res2 = next(iter(cls.feature_extractor()(x).values()))
    assert cls.predict_from_features(res2, (64, 96), [None]) == [cls.predict(x, None)]
    det = get_task("det", weights="random", seed=0)
    body = det.network.backbone.body
    with torch.no_grad():
        res2 = body.layer1(body.maxpool(body.relu(body.bn1(body.conv1(det.feature_extractor().preprocess(x))))))
    image = SimpleNamespace(height=128, width=192)
    expected = det.detect(x, (128, 192))
    got = det.detect_from_res2(res2, (64, 96), (128, 192))
    torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=1e-4, atol=1e-3)
    assert len(det.predict_from_features(res2, (64, 96), [image])[0]) == len(expected["boxes"])
