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
    assert lines[-1] == f"[RANDOM WEIGHTS] wrote {out}, {tmp_path / 'map.tic.npy'} and {tmp_path / 'map.transtic.npy'}"
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > png.height
    for name in ("tic", "transtic"):
        raw = np.load(tmp_path / f"map.{name}.npy")  # 120 x 160 pixels: 8 x 10 positions (coded as 8 x 12)
        assert raw.shape == (2, 8, 10) and np.isfinite(raw).all() and (raw >= 0).all()
    before = out.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"3 outputs exist: {out}, {tmp_path / 'map.tic.npy'}, {tmp_path / 'map.transtic.npy'}; pass --force" in err
    assert out.read_bytes() == before
    assert main(["bitmap", str(tmp_path / "cat.png"), "--random-weights", "-o", str(tmp_path / "map.jpg")]) == 2
    assert "must be a .png file" in capsys.readouterr().err


def test_an_roi_adapter_gets_its_quality_map_drawn_as_the_last_panel(tmp_path, capsys):
    from compressai_transtic.adapter_files import save_adapter
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.models import TICROI, ROIConfig

    Image.fromarray(data.chelsea()[:120, :160]).save(tmp_path / "cat.png")
    roi = np.zeros((120, 160), np.uint8)
    roi[:60, :80] = 255
    Image.fromarray(roi).save(tmp_path / "roi.png")
    base = CodecSpec("tic", "tic", 1, None, "random").load()
    adapter = save_adapter(TICROI.from_base(base, ROIConfig(width=8)), tmp_path / "roi.adapter")
    out = tmp_path / "map.png"
    argv = ["bitmap", str(tmp_path / "cat.png"), "--random-weights", "--models", "tic", "-o", str(out), "--npy"]
    assert main(argv + ["--adapter", str(adapter), "--roi-map", str(tmp_path / "roi.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "roi.adapter (tic-roi)" in lines[1]
    with Image.open(out) as png:  # three panels: tic, the ROI codec, its quality map
        assert png.width > 2.5 * png.height
    maps = bit_maps(TICROI.from_base(base, ROIConfig(width=8)).eval(), torch.rand(1, 3, 64, 64), torch.zeros(64, 64))
    assert maps.quality_map is not None and maps.quality_map.shape == (4, 4) and (maps.quality_map == 0).all()
    assert main(argv + ["--roi-map", str(tmp_path / "roi.png"), "--force"]) == 2
    assert "--roi-map is for a tic-roi --adapter" in capsys.readouterr().err


def test_no_output_replaces_an_input_or_an_existing_file_without_force(tmp_path, capsys):
    photo = np.asarray(data.chelsea()[:40, :48])
    Image.fromarray(photo).save(tmp_path / "in.png")
    (tmp_path / "o.tic.npy").write_bytes((tmp_path / "in.png").read_bytes())  # an image named like a maps file
    base = ["--random-weights", "--models", "tic"]
    cases = [
        (
            ["bitmap", str(tmp_path / "o.tic.npy"), "-o", str(tmp_path / "o.png"), "--npy", "--force"],
            "is one of the inputs",
        ),
        (["bitmap", str(tmp_path / "in.png"), "-o", str(tmp_path / "in.png"), "--force"], "is one of the inputs"),
        (
            ["bitmap", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), "--npy"],
            "o.tic.npy exists; pass --force",
        ),
    ]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for argv, problem in cases:
        assert main([*argv, *base]) == 2
        assert problem in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_image_too_elongated_to_draw_is_refused_before_coding(tmp_path, capsys):
    Image.new("RGB", (1000, 20), (90, 60, 30)).save(tmp_path / "strip.png")
    argv = ["bitmap", str(tmp_path / "strip.png"), "-o", str(tmp_path / "o.png"), "--random-weights", "--models", "tic"]
    assert main(argv) == 2
    assert f"{tmp_path / 'strip.png'}: a 1000x20 image is more elongated than 16:1" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_max_pixels_counts_the_image_as_encode_does_padded_to_multiples_of_64(tmp_path, capsys):
    Image.new("RGB", (65, 64), (90, 60, 30)).save(tmp_path / "in.png")  # 4160 pixels, coded as 128 x 64
    argv = ["bitmap", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), "--random-weights", "--models", "tic"]
    assert main([*argv, "--max-pixels", "8191"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'in.png'}: 65x64 pixels are coded as 8192" in err and "--max-pixels 8191" in err
    assert not (tmp_path / "o.png").exists()
    assert main(["encode", str(tmp_path / "in.png"), "-o", str(tmp_path), "--max-pixels", "8191"]) != 0
    assert "coded as 8192" in capsys.readouterr().err
    assert main([*argv, "--max-pixels", "8192"]) == 0
    capsys.readouterr()
    for command in (argv, ["encode", str(tmp_path / "in.png"), "-o", str(tmp_path)]):
        with pytest.raises(SystemExit):
            main([*command, "--max-pixels", "0"])
        assert "argument --max-pixels: 0 is no pixel count: give a positive number" in capsys.readouterr().err


def test_every_missing_weights_file_is_named_in_one_error(tmp_path, offline_cache, capsys):
    Image.fromarray(np.asarray(data.chelsea()[:40, :48])).save(tmp_path / "in.png")
    assert main(["bitmap", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), "--classify", "-q", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "3 weights file(s)" in err
    for filename in ("base_codec_3.pth.tar", "cls_3.pth.tar", "resnet50-0676ba61.pth"):
        assert f"-> {offline_cache / filename}" in err, filename
    assert not (tmp_path / "o.png").exists()


def test_a_seed_beyond_2_53_is_refused_naming_the_option(tmp_path, capsys):
    Image.fromarray(np.asarray(data.chelsea()[:40, :48])).save(tmp_path / "in.png")
    argv = ["bitmap", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), "--random-weights"]
    with pytest.raises(SystemExit):
        main([*argv, "--seed", "99999999999999999999999"])
    assert "argument --seed: 99999999999999999999999 is beyond 2^53 either way" in capsys.readouterr().err


def test_the_raw_maps_cover_the_image_positions_as_the_figure_does(tmp_path, capsys):
    from compressai_transtic.evaluation.codecs import CodecSpec

    photo = np.asarray(data.chelsea()[:80, :100])  # coded as 128 x 128: 8 x 8 positions, 5 x 7 over the image
    Image.fromarray(photo).save(tmp_path / "in.png")
    out = tmp_path / "o.png"
    argv = ["bitmap", str(tmp_path / "in.png"), "-o", str(out), "--random-weights", "--models", "tic", "--npy"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f"wrote {out} and {tmp_path / 'o.tic.npy'}")
    raw = np.load(tmp_path / "o.tic.npy")
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1).float()[None] / 255
    maps = bit_maps(CodecSpec("tic", "tic", 1, None, "random").load(), x)
    assert maps.stream.shape == (8, 8) and raw.shape == (2, 5, 7)
    np.testing.assert_allclose(raw[0], maps.likelihood[:5, :7], rtol=1e-5)
    np.testing.assert_allclose(raw[1], maps.stream[:5, :7], rtol=1e-5)


def test_an_adapter_trained_on_ones_own_base_codec_is_drawn_with_base_checkpoint(tmp_path, capsys):
    from compressai_transtic.adapter_files import save_adapter
    from compressai_transtic.evaluation.codecs import CodecSpec
    from compressai_transtic.models import TICSFT

    Image.fromarray(np.asarray(data.chelsea()[:64, :64])).save(tmp_path / "in.png")
    base = CodecSpec("tic", "tic", 1, None, "random", seed=7).load()
    torch.save(base.state_dict(), tmp_path / "my_tic.pth.tar")
    adapter = save_adapter(TICSFT.from_base(base), tmp_path / "sft.adapter")
    argv = ["bitmap", str(tmp_path / "in.png"), "--random-weights", "--models", "tic", "--adapter", str(adapter)]
    assert main([*argv, "-o", str(tmp_path / "refused.png")]) == 2  # on the random base codec
    err = capsys.readouterr().err
    assert f"adapter {adapter} was trained on another base codec than the random base codec" in err
    assert "with --base-checkpoint" in err and not (tmp_path / "refused.png").exists()
    out = tmp_path / "o.png"
    assert main([*argv, "-o", str(out), "--base-checkpoint", str(tmp_path / "my_tic.pth.tar")]) == 0
    assert "sft.adapter (tic-sft)" in capsys.readouterr().out and out.is_file()
    argv = ["bitmap", str(tmp_path / "in.png"), "--random-weights", "--models", "tic", "-o", str(tmp_path / "x.png")]
    assert main([*argv, "--base-checkpoint", str(tmp_path / "my_tic.pth.tar")]) == 2
    assert "--base-checkpoint goes with --adapter" in capsys.readouterr().err
