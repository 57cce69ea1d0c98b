"""``compressai-transtic bitmap``: per-position bits of y, from the likelihoods and from
the real stream, drawn side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_models import calibrated_tic, sample_image
from PIL import Image
from skimage import data

from compressai_transtic.bitmap import bit_maps
from compressai_transtic.cli import main


def test_stream_bits_add_up_to_the_y_string_and_likelihood_bits_to_forward():
    model = calibrated_tic()
    x = sample_image(128, 192)
    maps = bit_maps(model, x)
    with torch.no_grad():
        enc = model.compress(x)
        likelihood = -torch.log2(model(x)["likelihoods"]["y"]).sum().item()
    y_bits = 8 * len(enc["strings"][0][0])
    assert maps.stream.shape == maps.likelihood.shape == (8, 12)
    assert abs(maps.stream.sum() - y_bits) <= 0.01 * y_bits + 64
    assert maps.likelihood.sum() == pytest.approx(likelihood, rel=1e-5)
    assert maps.x_hat.shape == x.shape and 0 <= maps.x_hat.min() and maps.x_hat.max() <= 1


def test_the_command_draws_every_codec_and_saves_the_raw_maps(tmp_path, capsys):
    Image.fromarray(data.chelsea()[:120, :160]).save(tmp_path / "cat.png")
    out = tmp_path / "map.png"
    argv = ["bitmap", str(tmp_path / "cat.png"), "--random-weights", "-o", str(out), "--npy"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("[RANDOM WEIGHTS] ") for line in lines)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > png.height
    for name in ("tic", "transtic"):
        raw = np.load(tmp_path / f"map.{name}.npy")
        assert raw.shape == (2, 8, 12) and np.isfinite(raw).all() and (raw >= 0).all()
    before = out.read_bytes()
    assert main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["bitmap", str(tmp_path / "cat.png"), "--random-weights", "-o", str(tmp_path / "map.jpg")]) == 2
    assert "must be a .png file" in capsys.readouterr().err
