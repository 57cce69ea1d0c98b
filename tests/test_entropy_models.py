"""Entropy models: our variants code exactly as CompressAI's."""

from __future__ import annotations

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


def test_bitstreams_equal_compressais():
    table = get_scale_table()
    ours, theirs = BucketizedGaussianConditional(None), GaussianConditional(None)
    ours.update_scale_table(table)
    theirs.update_scale_table(table)
    ours.update()
    theirs.update()
    generator = torch.Generator().manual_seed(1)
    scales = torch.rand(1, 8, 16, 16, generator=generator) * 20
    y = torch.randn(1, 8, 16, 16, generator=generator) * scales
    strings = ours.compress(y, ours.build_indexes(scales))
    assert strings == theirs.compress(y, theirs.build_indexes(scales))
    assert torch.equal(ours.decompress(strings, ours.build_indexes(scales)), y.round())
