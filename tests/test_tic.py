"""TIC base codec: released weight layout, any input size, real bitstreams, determinism."""

from __future__ import annotations

import threading
from typing import Dict

import pytest
import torch
from codec_models import calibrated_tic, describe, num_threads, read_tsv, round_trip, sample_image, synthesis_inputs

from compressai_transtic.bitstream import BitstreamError, pack_header
from compressai_transtic.layers import reference_attention
from compressai_transtic.models import TIC


@pytest.fixture(scope="module")
def tic() -> TIC:
    return calibrated_tic()


def test_state_dict_has_the_keys_shapes_and_kinds_of_the_released_checkpoints():
    assert describe(TIC()) == read_tsv("tic.tsv")


def test_a_state_dict_in_the_released_layout_loads_strictly():
    reference = read_tsv("tic.tsv")
    generator = torch.Generator().manual_seed(0)
    fresh = TIC().state_dict()
    state = {}
    for key, (shape, _) in reference.items():
        if key.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
            state[key] = torch.zeros(shape, dtype=torch.int32)
        elif key.endswith(("relative_position_index", "attn_mask")) or key.startswith("entropy_bottleneck."):
            state[key] = fresh[key]
        else:
            state[key] = torch.randn(shape, generator=generator)
    model = TIC()
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.state_dict()["g_a0.weight"], state["g_a0.weight"])
    rebuilt = TIC.from_state_dict(state)
    assert torch.equal(rebuilt.state_dict()["h_s3.weight"], state["h_s3.weight"])


def test_every_parameter_is_trainable_for_compressai_training():
    model = TIC()
    assert all(p.requires_grad for p in model.parameters())
    assert any(n.endswith("quantiles") for n, _ in model.named_parameters())
    assert model.aux_loss().requires_grad


def _check_round_trip(model: TIC, height: int, width: int, check_rate: bool) -> None:
    x = sample_image(height, width, "coffee")
    out, enc, dec, (y_forward, y_decoded) = round_trip(model, x)
    assert out["x_hat"].shape == x.shape
    assert dec["x_hat"].shape == x.shape
    assert torch.equal(y_forward, y_decoded), "decoded latents differ from forward()'s"
    assert 0 <= dec["x_hat"].min() and dec["x_hat"].max() <= 1, "decompress() must clamp to [0, 1]"
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)
    if check_rate:
        pixels = height * width
        likelihood_bpp = sum(-lik.log2().sum().item() for lik in out["likelihoods"].values()) / pixels
        real_bpp = sum(len(s[0]) for s in enc["strings"]) * 8 / pixels
        assert abs(real_bpp / likelihood_bpp - 1) < 0.02, (real_bpp, likelihood_bpp)


@pytest.mark.parametrize("height,width", [(1, 1), (17, 23), (64, 64), (100, 37), (256, 256)])
def test_round_trip_any_size(tic, height, width):
    _check_round_trip(tic, height, width, check_rate=height * width >= 256 * 256)


@pytest.mark.slow
@pytest.mark.parametrize("height,width", [(512, 768), (1000, 667)])
def test_round_trip_large_sizes_and_real_rate_matches_likelihood(tic, height, width):
    _check_round_trip(tic, height, width, check_rate=True)


def test_rate_counts_the_original_pixels(tic):
    """Padding adds latents but the rate is per original pixel: a 1x1 image costs its whole bitstream."""
    from compressai_transtic.evaluation.codecs import code_image
    from compressai_transtic.protocol import CodingProtocol

    x = sample_image(1, 1)
    with torch.no_grad():
        enc = tic.compress(x)
    assert enc["shape"] == torch.Size([1, 1])  # one z position for the 64x64 the image is padded to
    whole_bitstream = sum(len(s[0]) for s in enc["strings"])
    result = code_image(tic, x, CodingProtocol(), likelihood=False)
    assert (result.num_bytes, result.pixels) == (whole_bitstream, 1)
    assert result.bpp == 8.0 * whole_bitstream


def test_batches_are_coded_per_image(tic):
    x = torch.cat([sample_image(48, 80, "coffee"), sample_image(48, 80, "chelsea")])
    with torch.no_grad():
        enc = tic.compress(x)
        dec = tic.decompress(enc["strings"], enc["shape"])
        single = tic.decompress([[s[1]] for s in enc["strings"]], enc["shape"])
    assert len(enc["strings"][0]) == 2
    torch.testing.assert_close(dec["x_hat"][1:], single["x_hat"], rtol=0, atol=1e-4)


def test_compress_is_deterministic_and_independent_of_thread_count(tic):
    x = sample_image(128, 192)
    with num_threads(2), torch.no_grad():
        first = tic.compress(x)
        second = tic.compress(x)
        dec_two = tic.decompress(first["strings"], first["shape"])["x_hat"]
    with num_threads(1), torch.no_grad():
        one_thread = tic.compress(x)
        dec_one = tic.decompress(first["strings"], first["shape"])["x_hat"]
    assert first["strings"] == second["strings"]
    assert first["strings"] == one_thread["strings"]
    assert torch.equal(dec_one, dec_two)  # h_s runs on one thread: identical scale indexes and y_hat


def test_h_s_runs_on_one_thread_in_each_of_two_python_threads_coding_at_once(tic, monkeypatch):
    """PyTorch keeps the intra-op thread count per Python thread once that thread has
    used it: each encoder's hyper-synthesis sets one thread in its own thread, whatever
    the other one does (else that encoder would pick other scale-table entries than the
    decoder, which runs h_s on one thread). Here both are inside h_s at once, and the
    first leaves while the second is still inside."""
    x = sample_image(64, 64)
    second_initialised, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()
    seen: Dict[str, int] = {}
    inner_first, inner_last = tic.h_s0.forward, tic.h_s3.forward

    def entering(z):  # the first layer of h_s
        if threading.current_thread().name == "second":
            second_inside.set()
        return inner_first(z)

    def leaving(z):  # the last layer of h_s
        name = threading.current_thread().name
        if name == "first":
            assert second_inside.wait(timeout=60)
        else:
            assert first_done.wait(timeout=60)
        seen[name] = torch.get_num_threads()
        return inner_last(z)

    def run(name: str) -> None:
        if name == "second":
            assert torch.get_num_threads() == 2  # this thread's own count, set on first use
            second_initialised.set()
        with torch.no_grad():
            tic.compress(x)
        if name == "first":
            first_done.set()

    monkeypatch.setattr(tic.h_s0, "forward", entering)
    monkeypatch.setattr(tic.h_s3, "forward", leaving)
    with num_threads(2):
        second = threading.Thread(target=run, args=("second",), name="second")
        first = threading.Thread(target=run, args=("first",), name="first")
        second.start()
        assert second_initialised.wait(timeout=60)
        first.start()
        for worker in (first, second):
            worker.join(timeout=120)
    assert seen == {"first": 1, "second": 1}


def test_fast_path_equals_reference_path(tic):
    x = sample_image(96, 160)
    with torch.no_grad():
        fast = tic(x)["x_hat"]
        with reference_attention():
            ref = tic(x)["x_hat"]
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-4)


def test_transforms_leave_their_inputs_untouched(tic):
    """Stages that add into a convolution's output in place never touch the caller's tensors."""
    x = sample_image(64, 96)
    with torch.no_grad():
        y = tic.g_a(tic._pad(x))
        z_hat = torch.round(tic.h_a(y))
        y_hat = torch.round(y)
        inputs = [t.clone() for t in (x, y_hat, z_hat)]
        tic.g_a(tic._pad(x))
        tic.h_a(y_hat)
        tic.h_s(z_hat)
        tic.g_s(y_hat)
    for before, after in zip(inputs, (x, y_hat, z_hat)):
        assert torch.equal(before, after)


def test_eval_forward_rounds_around_the_predicted_means(tic):
    x = sample_image(64, 64)
    with synthesis_inputs(tic) as captured, torch.no_grad():
        tic(x)
        y = tic.g_a(tic._pad(x))
        scales, means = tic.h_s(tic.entropy_bottleneck(tic.h_a(y))[0])
    torch.testing.assert_close(captured[0], torch.round(y - means) + means)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda s: [[s[0][0][:-5]], s[1], s[2]], id="truncated-y"),
        pytest.param(lambda s: [s[0], [s[1][0][:1]], s[2]], id="truncated-z"),
        pytest.param(lambda s: [[bytes([s[0][0][0] ^ 0x10]) + s[0][0][1:]], s[1], s[2]], id="bit-flip-y"),
        pytest.param(lambda s: [s[0], [s[1][0][:-1] + bytes([s[1][0][-1] ^ 1])], s[2]], id="bit-flip-z"),
        pytest.param(lambda s: [s[0], s[1], [b"\x00" + s[2][0][1:]]], id="bad-magic"),
        pytest.param(lambda s: [s[0], s[1], [s[2][0][:3]]], id="truncated-header"),
        pytest.param(lambda s: [s[0], s[1]], id="missing-header"),
        pytest.param(lambda s: [s[0], [b""], s[2]], id="empty-z"),
    ],
)
def test_corrupted_bitstreams_raise_a_clear_error(tic, corrupt):
    x = sample_image(64, 96)
    with torch.no_grad():
        enc = tic.compress(x)
        with pytest.raises(BitstreamError):
            tic.decompress(corrupt(enc["strings"]), enc["shape"])


def test_a_wrong_latent_shape_is_refused(tic):
    x = sample_image(64, 96)
    with torch.no_grad():
        enc = tic.compress(x)
        with pytest.raises(BitstreamError, match="does not match the image size"):
            tic.decompress(enc["strings"], (2, 2))


@pytest.mark.parametrize("bad", [torch.rand(3, 32, 32), torch.rand(1, 1, 32, 32), torch.rand(1, 3, 0, 5)])
def test_bad_input_tensors_are_refused(bad):
    with pytest.raises(ValueError, match="expected an image batch|empty image batch"):
        TIC()(bad)


@pytest.mark.parametrize(
    "strings, shape, message",
    [
        (lambda s: [s[0], None, s[2]], (1, 2), "must each be a list"),
        (lambda s: s, (float("nan"), 2), "invalid latent shape"),
        (lambda s: s, ("1", "x"), "invalid latent shape"),
        (lambda s: [s[0], s[1], [pack_header(100000, 100000, s[1][0], s[0][0])]], (1563, 1563), "decoder's limit"),
        (lambda s: [[bytes(64)], s[1], [pack_header(64, 96, s[1][0], bytes(64))]], (1, 2), "y string"),
        (lambda s: [s[0], [bytes(8)], [pack_header(64, 96, bytes(8), s[0][0])]], (1, 2), "z string"),
    ],
    ids=["none-strings", "nan-shape", "text-shape", "huge-header", "forged-y", "forged-z"],
)
def test_forged_inputs_to_decompress_fail_cleanly_before_any_large_allocation(tic, strings, shape, message):
    x = sample_image(64, 96)
    with torch.no_grad():
        enc = tic.compress(x)
        with pytest.raises(BitstreamError, match=message):
            tic.decompress(strings(enc["strings"]), shape)


def test_the_pixel_limit_is_a_setting_of_the_model_and_counts_padded_pixels(tic, monkeypatch):
    x = sample_image(64, 96)  # synthesised as 64 x 128: the padded size is what costs time and memory
    with torch.no_grad():
        enc = tic.compress(x)
        monkeypatch.setattr(tic, "max_decode_pixels", 64 * 128 - 1)
        with pytest.raises(BitstreamError, match="64x96 pixels, coded as 8192 .* limit of 8191"):
            tic.decompress(enc["strings"], enc["shape"])
        monkeypatch.setattr(tic, "max_decode_pixels", 64 * 128)
        assert tic.decompress(enc["strings"], enc["shape"])["x_hat"].shape == x.shape


def test_a_one_pixel_tall_strip_counts_as_the_64_rows_it_is_decoded_as(tic, monkeypatch):
    x = sample_image(1, 128)
    with torch.no_grad():
        enc = tic.compress(x)
        monkeypatch.setattr(tic, "max_decode_pixels", 4 * 128)  # four times its 128 declared pixels
        with pytest.raises(BitstreamError, match="1x128 pixels, coded as 8192"):
            tic.decompress(enc["strings"], enc["shape"])
        repeated = [[s[0]] * 2 for s in enc["strings"]]
        monkeypatch.setattr(tic, "max_decode_pixels", 64 * 128 * 2 - 1)
        with pytest.raises(BitstreamError, match="2 images of 1x128 pixels .each coded as 8192"):
            tic.decompress(repeated, enc["shape"])


@pytest.mark.parametrize("where", ["image", "weights"])
def test_non_finite_values_are_refused_by_compress_instead_of_hanging(where):
    torch.manual_seed(0)
    model = TIC(N=16, M=16).eval()
    model.update(force=True)
    x = sample_image(64, 64)
    if where == "image":
        x[0, 0, 5, 5] = float("nan")
    else:
        with torch.no_grad():
            model.g_a2.weight[0, 0, 0, 0] = float("inf")
    with torch.no_grad(), pytest.raises(ValueError, match="non-finite"):
        model.compress(x)
