"""Table A1: our counts reproduce the paper's complexity and size figures."""

from __future__ import annotations

import pytest
import torch

from compressai_transtic.complexity import TABLE_A1, count_macs, format_table, main, table_a1
from compressai_transtic.models.prompt_generator import PromptGenerator

# Shallow is not expressible in the released code: its reading (see PromptConfig and
# docs) is held to 3%, every other row to 0.5% (in practice they match to the printed
# precision).
LOOSE = {"Shallow"}


@pytest.fixture(scope="module")
def rows():
    return table_a1(256, 256)


@pytest.mark.slow
def test_every_table_a1_row_is_reproduced(rows):
    table = [r for r in rows if r.paper is not None]
    assert [(r.section, r.variant) for r in table] == [(p["section"], p["variant"]) for p in TABLE_A1]
    for row in rows:
        tolerance = 0.03 if row.variant in LOOSE else 0.005
        for key, diff in row.differences().items():
            assert abs(diff) <= tolerance, f"{row.variant} {key}: {getattr(row, key):.3f} vs paper {row.paper[key]}"


@pytest.mark.slow
def test_tic_and_default_transtic_match_to_the_printed_precision(rows):
    for row in rows:
        if row.variant not in ("TIC", "Deep"):
            continue
        for key, unit in (
            ("enc_kmacs_per_px", 0.01),
            ("dec_kmacs_per_px", 0.01),
            ("enc_params_m", 0.01),
            ("dec_params_m", 0.01),
        ):
            assert abs(getattr(row, key) - row.paper[key]) <= unit / 2, (row.variant, key, getattr(row, key))


@pytest.mark.slow
def test_true_counting_corrects_the_transposed_convolutions(rows):
    tic = next(r for r in rows if r.variant == "TIC")
    assert tic.enc_kmacs_per_px_true == pytest.approx(tic.enc_kmacs_per_px, rel=0.01)
    assert tic.dec_kmacs_per_px_true == pytest.approx(142.5, rel=0.01)
    assert "TIC" in format_table(rows)


def test_counter_counts_scaled_dot_product_attention_and_biases():
    q = torch.randn(2, 4, 64, 16)
    k = torch.randn(2, 4, 80, 16)
    v = torch.randn(2, 4, 80, 16)
    macs = count_macs(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), "true")
    assert macs == 2 * 4 * 64 * 80 * 16 * 2
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(10, 8)
    assert count_macs(lambda: lin(x), "true") == 10 * 8 * 4 + 10 * 4
    assert count_macs(lambda: lin(x), "paper") == 10 * 8 * 4


def test_deconvolutions_are_counted_on_their_output_grid_under_the_paper_convention():
    deconv = torch.nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, bias=False)
    x = torch.randn(1, 8, 5, 5)
    true = count_macs(lambda: deconv(x), "true")
    paper = count_macs(lambda: deconv(x), "paper")
    assert true == 5 * 5 * 8 * 4 * 9
    assert paper == 10 * 10 * 8 * 4 * 9 == 4 * true


def test_batchnorms_folded_at_inference_are_counted_as_layers_when_the_model_is_given():
    """2 MACs per element of every BatchNorm's input (as the paper counts), which
    inference folds into the convolutions; without the model, what runs is counted."""
    gen = PromptGenerator(8, width=4).eval()
    x = torch.rand(1, 3, 8, 8)
    folded = count_macs(lambda: gen(x), "true")
    bn_inputs = sum(4 * 8 * 8 for _ in range(2)) + sum(8 * 4 * 4 for _ in range(2))  # down1 (8x8), down2 (4x4)
    bn_inputs += 16 * 2 * 2 * 2 + 8 * 4 * 4 * 3 + 4 * 8 * 8 * 3  # down3 (2x2), up2 (4x4), up1 (8x8)
    assert count_macs(lambda: gen(x), "true", gen) == folded + 2 * bn_inputs
    gen.down1.fold_batchnorm = False  # the user's setting survives a count
    count_macs(lambda: gen(x), "paper", gen)
    assert gen.down1.fold_batchnorm is False


@pytest.mark.slow
def test_command_line_report_prints_every_row(rows, tmp_path, capsys, monkeypatch):
    import compressai_transtic.complexity as complexity

    monkeypatch.setattr(complexity, "table_a1", lambda h, w, progress=False, variants=None: rows)
    assert main(["--json", str(tmp_path / "a1.json"), "--csv", str(tmp_path / "a1.csv")]) == 0
    out = capsys.readouterr().out
    for paper in TABLE_A1:
        assert paper["variant"] in out
    assert (tmp_path / "a1.json").exists() and (tmp_path / "a1.csv").exists()


def _sft_macs(side: int, N: int = 128, M: int = 192, w: int = 64) -> tuple:
    """TIC+SFT's added MACs (encoder, decoder) at side x side, the paper's convention,
    counted by hand from the documented layout: 3x3 convolutions with bias (MACs per
    output element: cin * 9 + 1), LeakyReLU 1 per element, transposed convolutions on
    their output grid."""

    def conv(size, cin, cout):
        return size * size * cout * (cin * 9 + 1)

    def sft(size, c):  # two branches: conv w->w, LeakyReLU, conv w->c
        return 2 * (conv(size, w, w) + size * size * w + conv(size, w, c))

    def level(size, cin):  # a condition level: (de)conv to w channels, LeakyReLU
        return conv(size, cin, w) + size * size * w

    enc_sizes = [side // 2, side // 4, side // 8, side // 16]
    encoder = sum(level(s, 3 if i == 0 else w) for i, s in enumerate(enc_sizes))
    encoder += sum(sft(s, c) for s, c in zip(enc_sizes, (N, N, N, M)))
    encoder += level(side // 32, M) + level(side // 64, w) + sft(side // 32, N) + sft(side // 64, N)
    dec_sizes = [side // 16, side // 8, side // 4, side // 2]
    decoder = sum(level(s, M if i == 0 else w) for i, s in enumerate(dec_sizes))
    decoder += sum(sft(s, c) for s, c in zip(dec_sizes, (M, N, N, N)))
    return encoder, decoder


def _roi_macs(side: int, N: int = 128, M: int = 192, w: int = 64) -> tuple:
    """TIC+ROI's added MACs (encoder, decoder), as :func:`_sft_macs`: per stage a
    condition (conv 1->w, LeakyReLU, conv w->w, LeakyReLU) of the map and an SFT layer."""

    def conv(size, cin, cout):
        return size * size * cout * (cin * 9 + 1)

    def stage(size, c):
        condition = conv(size, 1, w) + conv(size, w, w) + 2 * size * size * w
        return condition + 2 * (conv(size, w, w) + size * size * w + conv(size, w, c))

    encoder = sum(stage(side // s, c) for s, c in ((2, N), (4, N), (8, N), (16, M), (32, N), (64, N)))
    decoder = sum(stage(side // s, c) for s, c in ((16, M), (8, N), (4, N), (2, N)))
    return encoder, decoder


def _chsel_macs(side: int, M: int = 192, w: int = 192, c: int = 256) -> tuple:
    """TIC+channel selection's added MACs (encoder, decoder): nothing in the encoder (the
    gate's product is element-wise); the transform in the decoder: conv M->w at 1/16,
    two stride-2 transposed convolutions (counted on their output grid) to 1/4, conv w->c;
    a ReLU after each of the first three."""

    def conv(size, cin, cout):
        return size * size * cout * (cin * 9 + 1)

    sizes = (side // 16, side // 8, side // 4)
    decoder = conv(sizes[0], M, w) + conv(sizes[1], w, w) + conv(sizes[2], w, w) + conv(sizes[2], w, c)
    decoder += sum(s * s * w for s in sizes)
    return 0, decoder


@pytest.mark.slow
@pytest.mark.parametrize(
    "label, arch, count",
    [("TIC+SFT", "tic-sft", _sft_macs), ("TIC+ChSel", "tic-chsel", _chsel_macs), ("TIC+ROI", "tic-roi", _roi_macs)],
)
def test_the_baselines_are_listed_with_their_added_layers_counted(rows, label, arch, count):
    from compressai_transtic.models import ADAPTED_CODECS

    tic = next(r for r in rows if r.variant == "TIC")
    row = next(r for r in rows if r.variant == label)
    assert row.section == "baseline" and row.paper is None
    enc, dec = count(256)
    assert row.enc_kmacs_per_px - tic.enc_kmacs_per_px == pytest.approx(enc / 256**2 / 1e3, rel=1e-9)
    assert row.dec_kmacs_per_px - tic.dec_kmacs_per_px == pytest.approx(dec / 256**2 / 1e3, rel=1e-9)
    model = ADAPTED_CODECS[arch]()
    added = {n: p.numel() for n, p in model.named_adapter_parameters()}
    encoder_side = sum(v for n, v in added.items() if n.startswith(("g_a", "h_a")))
    assert row.enc_params_m - tic.enc_params_m == pytest.approx(encoder_side / 1e6, abs=1e-9)
    assert row.dec_params_m - tic.dec_params_m == pytest.approx((sum(added.values()) - encoder_side) / 1e6, abs=1e-9)
    assert label in format_table(rows)
