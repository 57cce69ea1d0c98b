"""Entropy models: the same tables as CompressAI's, coded memory-safely at the same rate;
the bottleneck's likelihood is the one the released weights were trained with."""

from __future__ import annotations

import copy

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.base import get_scale_table

from compressai_transtic.entropy_models import BucketizedGaussianConditional, LegacyEntropyBottleneck


def test_bucketized_indexes_equal_compressais_for_every_kind_of_scale():
    table = get_scale_table()
    ours, theirs = BucketizedGaussianConditional(None), GaussianConditional(None)
    ours.update_scale_table(table)
    theirs.update_scale_table(table)
    generator = torch.Generator().manual_seed(0)
    scales = torch.cat(
        [
            torch.rand(4096, generator=generator) * 100,  # inside and beyond the table
            table,  # exactly on every entry
            table * (1 + 1e-7),
            table * (1 - 1e-7),  # next to them
            torch.tensor([0.0, -1.0, 1e-9, 1e9, float("inf")]),
        ]
    ).view(1, 1, -1)
    assert torch.equal(ours.build_indexes(scales), theirs.build_indexes(scales))
    assert ours.build_indexes(scales).dtype == torch.int32


def _pair(table=None):
    table = get_scale_table() if table is None else table
    ours, theirs = BucketizedGaussianConditional(None), GaussianConditional(None)
    for model in (ours, theirs):
        model.update_scale_table(table)
        model.update()
    return ours, theirs


def _latent(seed: int, batch: int = 2):
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(batch, 8, 16, 16, generator=generator) * 20
    means = torch.randn(batch, 8, 16, 16, generator=generator) * 3
    y = means + torch.randn(batch, 8, 16, 16, generator=generator) * scales
    return y, scales, means


def test_decoded_latents_equal_compressais_at_the_same_rate():
    ours, theirs = _pair()
    y, scales, means = _latent(1)
    indexes = ours.build_indexes(scales)
    for m in (None, means):
        strings = ours.compress(y, indexes, means=m)
        reference = theirs.compress(y, theirs.build_indexes(scales), means=m)
        decoded = ours.decompress(strings, indexes, means=m)
        assert torch.equal(decoded, theirs.decompress(reference, indexes, means=m))
        assert torch.equal(decoded, y.round() if m is None else (y - m).round() + m)
        for string, theirs_string in zip(strings, reference):  # same tables: same rate, up to 1% + 8 bytes
            assert abs(len(string) - len(theirs_string)) <= 0.01 * len(theirs_string) + 8


def test_new_scale_tables_are_picked_up_by_the_coder():
    ours, _ = _pair()
    y, scales, _ = _latent(2, batch=1)
    fine = ours.compress(y, ours.build_indexes(scales))  # caches the coding tables
    coarse = get_scale_table(min=0.5, max=64, levels=16)
    ours.update_scale_table(coarse, force=True)
    strings = ours.compress(y, ours.build_indexes(scales))
    assert strings != fine
    assert torch.equal(ours.decompress(strings, ours.build_indexes(scales)), y.round())


def test_stored_tables_that_are_not_cdfs_are_refused_with_the_table_named():
    ours, _ = _pair()
    y, scales, _ = _latent(4, batch=1)
    indexes = ours.build_indexes(scales)
    with torch.no_grad():
        ours._quantized_cdf[5, 3] = ours._quantized_cdf[5, 2]  # no longer rising
    with pytest.raises(ValueError, match="CDF table 5 is not a valid CDF"):
        ours.compress(y, indexes)
    ours.update()
    with torch.no_grad():
        ours._cdf_length[7] = -3
    with pytest.raises(ValueError, match="CDF table 7: length -3"):
        ours.compress(y, indexes)
    ours.update()
    with torch.no_grad():
        ours._offset[0] = -(2**30)
    with pytest.raises(ValueError, match="offsets must lie within"):
        ours.decompress([b"\0" * 8], indexes)


def test_models_without_tables_say_to_call_update():
    model = BucketizedGaussianConditional(None)
    with pytest.raises(ValueError, match="call update"):
        model.compress(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 3e9])
def test_latents_that_cannot_be_coded_are_refused_up_front(bad):
    ours, _ = _pair()
    y, scales, _ = _latent(5, batch=1)
    y[0, 1, 2, 3] = bad
    with pytest.raises(ValueError, match="non-finite|beyond the entropy coder's range"):
        ours.compress(y, ours.build_indexes(scales))


def test_mismatched_coding_arguments_are_refused():
    ours, _ = _pair()
    y, scales, means = _latent(3)
    indexes = ours.build_indexes(scales)
    strings = ours.compress(y, indexes)
    with pytest.raises(ValueError, match="differ in shape"):
        ours.compress(y, indexes[:1])
    with pytest.raises(ValueError, match="2 strings for a batch of 1"):
        ours.decompress(strings, indexes[:1])
    with pytest.raises(ValueError, match="do not broadcast"):
        ours.decompress(strings, indexes, means=means[:, :, :2])


class _CompressAIFormula(LegacyEntropyBottleneck):
    """The same density with CompressAI 1.2.8's likelihood, sigmoid(upper) - sigmoid(lower)."""

    _likelihood = EntropyBottleneck._likelihood


def _bottleneck_pair(quantile_range: float):
    """Ours and one with CompressAI's formula, on identical parameters whose quantiles
    span +-``quantile_range`` (so that update() tabulates the tails)."""
    torch.manual_seed(0)
    ours = LegacyEntropyBottleneck(4).eval()
    with torch.no_grad():
        ours.quantiles.copy_(torch.tensor([-quantile_range, 0.0, quantile_range]).expand_as(ours.quantiles))
    theirs = _CompressAIFormula(4).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def test_bottleneck_likelihood_keeps_the_upper_tail_in_float32():
    ours, theirs = _bottleneck_pair(10.0)
    x = torch.arange(-150.0, 151.0).repeat(4, 1)[:, None, :]
    with torch.no_grad():
        exact = copy.deepcopy(theirs).double()._likelihood(x.double())[0]  # float64: no cancellation
        ours32 = ours._likelihood(x)[0]
        theirs32 = theirs._likelihood(x)[0]
    tail = x[0, 0] >= 60  # sigmoid(upper) and sigmoid(lower) both round to 1 in float32
    assert exact[..., tail].min() > 1e-8
    relative = lambda v: ((v.double() - exact) / exact).abs()  # noqa: E731
    assert relative(ours32).max() < 1e-4
    assert relative(theirs32)[..., tail].max() > 0.5  # CompressAI 1.2.8 in float32: cancelled
    assert relative(theirs32)[..., ~tail].max() < 1e-3


def test_bottleneck_forward_rates_the_upper_tail_as_float64_does():
    ours, theirs = _bottleneck_pair(10.0)
    z = torch.tensor([-40.0, -3.0, 0.0, 3.0, 40.0, 90.0]).view(1, 1, 6, 1).expand(1, 4, 6, 1).contiguous()
    with torch.no_grad():
        _, got = ours(z, training=False)
        _, exact = copy.deepcopy(theirs).double()(z.double(), training=False)
        _, cancelled = theirs(z, training=False)
    torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=0)
    assert not torch.allclose(cancelled.double(), exact, rtol=1e-2, atol=0)


def test_bottleneck_tables_rebuilt_in_float32_equal_the_float64_ones():
    ours, theirs = _bottleneck_pair(150.0)
    exact = copy.deepcopy(theirs).double()
    for model in (ours, theirs, exact):
        model.update(force=True)
    assert torch.equal(ours._quantized_cdf, exact._quantized_cdf)
    assert torch.equal(ours._cdf_length, exact._cdf_length) and torch.equal(ours._offset, exact._offset)
    assert not torch.equal(theirs._quantized_cdf, exact._quantized_cdf)  # CompressAI 1.2.8 in float32
