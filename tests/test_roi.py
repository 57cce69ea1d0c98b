"""TIC+ROI, quality-map coding on the frozen TIC, and its quality maps.

Promises checked here:

- a fresh TIC+ROI codes exactly as its base codec under any map (its transforms start
  as the identity), and only the ROI parts train;
- the map is quantised on the latent grid (16 x 16 pixels per cell) to the configured
  levels, travels in the bitstream as a fourth string list, and the decoder uses
  exactly the encoder's map: decoded latents and image equal those of ``forward``;
- with trained (here: random non-zero) layers another map decodes another image;
- bad map strings (truncated, foreign, a zlib bomb, levels out of range) are refused
  with a BitstreamError, and bad user maps with a ValueError;
- training draws random maps (keyed per sample), and the forward output's distortion
  weight is ``min_weight ** (1 - m)``.
"""

from __future__ import annotations

import struct
import zlib

import pytest
import torch
from codec_models import assert_codes_as_its_base, randomize_adapter, round_trip, sample_image, tiny_tic

from compressai_transtic.adapter_files import AdapterMismatchError, load_adapter, save_adapter
from compressai_transtic.bitstream import BitstreamError
from compressai_transtic.checkpoint import detect_architecture, load_model
from compressai_transtic.models import TIC, TICROI, TICSFT, ROIConfig, SFTConfig
from compressai_transtic.quality_maps import pack_map, quantize_map, random_quality_map, unpack_map
from compressai_transtic.training.randomness import SampleKeyedRandomness

SMALL = ROIConfig(width=8)


@pytest.fixture(scope="module")
def base() -> TIC:
    return tiny_tic()


def trained(model: TICROI) -> TICROI:
    return randomize_adapter(model, std=0.1).eval()


def box_map(height: int, width: int) -> torch.Tensor:
    m = torch.zeros(height, width)
    m[height // 4 : height // 2, width // 3 : 2 * width // 3] = 1.0
    return m


def test_a_fresh_roi_codec_codes_exactly_as_its_base_under_any_map(base):
    x = sample_image(70, 90)
    assert_codes_as_its_base(TICROI.from_base(base, SMALL), base, x, quality_map=box_map(70, 90))


def test_only_the_roi_parts_train(base):
    model = TICROI.from_base(base, SMALL)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_adapter_parameters()}
    assert trainable and all("_roi" in n for n in trainable)
    assert model.base_state_dict().keys() == base.state_dict().keys()


def test_maps_are_quantised_on_the_latent_grid():
    # a 40 x 56 image pads to 64 x 64: a 4 x 4 grid of 16 x 16 cells
    m = torch.zeros(1, 1, 40, 56)
    m[..., :16, :16] = 1.0  # one full cell
    m[..., :16, 16:24] = 1.0  # half a cell
    levels = quantize_map(m, (40, 56), (4, 4), 4)
    expected = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    expected[..., 0, 0] = 3  # mean 1 -> level 3
    expected[..., 0, 1] = 2  # mean 0.5 -> round(1.5) = 2
    assert torch.equal(levels, expected)
    # the padded rows and columns repeat the last image row / column (replicate)
    m = torch.zeros(1, 1, 40, 56)
    m[..., 39, :] = 1.0
    assert quantize_map(m, (40, 56), (4, 4), 2)[0, 0, 3].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
def test_the_decoder_uses_the_encoders_map(base, size):
    model = trained(TICROI.from_base(base, SMALL))
    model.update(force=True)
    x = sample_image(*size, "coffee")
    m = box_map(*size)
    with torch.no_grad():
        out = model(x, m)
        enc = model.compress(x, m)
        dec = model.decompress(enc["strings"], enc["shape"])
    assert len(enc["strings"]) == 4
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)
    assert dec["x_hat"].min() >= 0 and dec["x_hat"].max() <= 1
    # without a map: full quality everywhere, in forward and compress alike
    out, _, dec, (y_forward, y_decoded) = round_trip(model, x)
    assert torch.equal(y_forward, y_decoded)
    assert bool((out["quality_map"] == 1).all())
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)


def test_another_map_decodes_another_image(base):
    model = trained(TICROI.from_base(base, SMALL))
    model.update(force=True)
    x = sample_image(64, 64)
    with torch.no_grad():
        enc = model.compress(x, box_map(64, 64))
        other = model.compress(x, torch.ones(64, 64))
        swapped = enc["strings"][:3] + [other["strings"][3]]
        a = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        b = model.decompress(swapped, enc["shape"])["x_hat"]
    assert not torch.allclose(a, b)


def test_float64_round_trip(base):
    model = trained(TICROI.from_base(base, SMALL)).double()
    model.update(force=True)
    x = sample_image(64, 80).double()
    m = box_map(64, 80).double()
    with torch.no_grad():
        expected = model(x, m)["x_hat"].clamp(0, 1)
        enc = model.compress(x, m)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert x_hat.dtype == torch.float64
    torch.testing.assert_close(x_hat, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda s: s[:5], "truncated"),
        (lambda s: b"XX" + s[2:], "not a quality-map string"),
        (lambda s: s[:2] + struct.pack(">HHB", 9, 9, 4) + s[7:], "expected 4x4"),
        (lambda s: s[:-3], "does not hold exactly one map"),
        (lambda s: s[:7] + zlib.compress(bytes(10**6)), "does not hold exactly one map"),
        (lambda s: s[:7] + zlib.compress(bytes([9] * 16)), "levels above 3"),
        (lambda s: s[:7] + b"not zlib at all", "corrupt"),
        (lambda s: s + b"more", "does not hold exactly one map"),
    ],
)
def test_bad_map_strings_are_refused(base, corrupt, message):
    model = TICROI.from_base(base, SMALL).eval()
    model.update(force=True)
    x = sample_image(64, 64)
    with torch.no_grad():
        enc = model.compress(x)
        strings = enc["strings"][:3] + [[corrupt(enc["strings"][3][0])]]
        with pytest.raises(BitstreamError, match=message):
            model.decompress(strings, enc["shape"])
        with pytest.raises(BitstreamError, match="map_strings"):
            model.decompress(enc["strings"][:3], enc["shape"])


@pytest.mark.parametrize("bad", [torch.full((8, 8), 2.0), torch.full((8, 8), float("nan")), torch.ones(2, 3, 8, 8)])
def test_bad_user_maps_are_refused(base, bad):
    model = TICROI.from_base(base, SMALL).eval()
    with pytest.raises(ValueError, match="quality map"):
        model(sample_image(32, 32), bad)


def test_map_strings_round_trip():
    cells = torch.randint(0, 8, (1, 5, 7), dtype=torch.uint8)
    assert torch.equal(unpack_map(pack_map(cells, 8), (5, 7), 8), cells)


def test_training_draws_random_maps_keyed_per_sample(base):
    model = TICROI.from_base(base, SMALL).train()
    x = sample_image(64, 64).expand(2, -1, -1, -1)
    rng = SampleKeyedRandomness(model)
    with rng.batch([11, 12]):
        first = model(x)["quality_map"]
    with rng.batch([12]):
        alone = model(x[:1])["quality_map"]
    assert torch.equal(first[1], alone[0])  # the map of sample 12 does not depend on its batch
    assert set((first * 3).unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    with rng.batch([11, 12]):
        out = model(x[..., :40, :56])  # 40 x 56 pixels: 3 x 4 cells of the 4 x 4 grid
    assert out["distortion_weight"].shape == (2, 1, 3, 4)
    torch.testing.assert_close(out["distortion_weight"], 0.01 ** (1 - out["quality_map"][..., :3, :4]))


def test_random_maps_are_in_range_and_vary():
    g = torch.Generator().manual_seed(0)
    maps = [random_quality_map((6, 9), g) for _ in range(30)]
    assert all(m.shape == (1, 6, 9) and m.min() >= 0 and m.max() <= 1 for m in maps)
    assert len({round(float(m.mean()), 6) for m in maps}) > 10


def test_weights_adapters_and_the_loader(base, tmp_path):
    config = ROIConfig(levels=8, width=4, min_weight=0.1)
    model = trained(TICROI.from_base(base, config))
    assert detect_architecture(model.state_dict()) == "tic-roi"
    torch.save({"state_dict": model.state_dict()}, tmp_path / "roi.pth.tar")
    loaded = load_model(None, tmp_path / "roi.pth.tar")
    assert type(loaded) is TICROI and loaded.config == config
    path = save_adapter(model, tmp_path / "roi.pth")
    sft = TICSFT.from_base(base, SFTConfig(width=8))
    with pytest.raises(AdapterMismatchError, match="holds tic-roi weights, not tic-sft"):
        load_adapter(sft, path)
    with pytest.raises(AdapterMismatchError, match="tic-roi configuration"):
        load_adapter(TICROI.from_base(base, SMALL), path)


def test_weights_stored_with_other_map_settings_are_refused_before_loading(base):
    stored = TICROI.from_base(base, ROIConfig(levels=5, width=4))
    model = TICROI.from_base(base, ROIConfig(levels=4, width=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="'roi_levels': 5"):
        model.load_adapter_state_dict(stored.adapter_state_dict())
    with pytest.raises(ValueError, match="'roi_levels': 5"):
        TICROI.from_state_dict(stored.state_dict(), config=ROIConfig(levels=4, width=4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_maps_too_large_to_code_are_a_clear_error():
    with pytest.raises(ValueError, match="too large to code"):
        pack_map(torch.zeros(1, 2, 70000, dtype=torch.uint8), 4)
