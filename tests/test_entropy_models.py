"""Entropy models: our variants code exactly as CompressAI's."""

from __future__ import annotations

import pytest
import torch
from compressai.entropy_models import GaussianConditional
from compressai.models.base import get_scale_table

from compressai_transtic.entropy_models import BucketizedGaussianConditional


def test_bucketized_indexes_equal_compressais_for_every_kind_of_scale():
    table = get_scale_table()
    ours, theirs = BucketizedGaussianConditional(None), GaussianConditional(None)
    ours.update_scale_table(table)
    theirs.update_scale_table(table)
    generator = torch.Generator().manual_seed(0)
    scales = torch.cat([
        torch.rand(4096, generator=generator) * 100,  # inside and beyond the table
        table,  # exactly on every entry
        table * (1 + 1e-7), table * (1 - 1e-7),  # next to them
        torch.tensor([0.0, -1.0, 1e-9, 1e9, float("inf")]),
    ]).view(1, 1, -1)
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


def test_bitstreams_and_decoded_latents_equal_compressais():
    ours, theirs = _pair()
    y, scales, means = _latent(1)
    indexes = ours.build_indexes(scales)
    for m in (None, means):
        strings = ours.compress(y, indexes, means=m)
        assert strings == theirs.compress(y, theirs.build_indexes(scales), means=m)
        decoded = ours.decompress(strings, indexes, means=m)
        assert torch.equal(decoded, theirs.decompress(strings, indexes, means=m))
        assert torch.equal(decoded, y.round() if m is None else (y - m).round() + m)


def test_new_scale_tables_are_picked_up_by_the_coder():
    ours, theirs = _pair()
    y, scales, _ = _latent(2, batch=1)
    ours.compress(y, ours.build_indexes(scales))  # caches the coding tables
    coarse = get_scale_table(min=0.5, max=64, levels=16)
    for model in (ours, theirs):
        model.update_scale_table(coarse, force=True)
    strings = ours.compress(y, ours.build_indexes(scales))
    assert strings == theirs.compress(y, theirs.build_indexes(scales))
    assert torch.equal(ours.decompress(strings, ours.build_indexes(scales)), y.round())


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
