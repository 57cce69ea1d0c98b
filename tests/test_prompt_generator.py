"""TransTIC's prompt generator, checked against the facts page alone.

The oracle below is written from ``transtic-facts.md`` (prompt generator section) with
plain functional calls on the state dict; it shares no code with
:class:`compressai_transtic.models.prompt_generator.PromptGenerator`. Its two concatenations put the skip
connection first and the upsampled map second, as the released weights expect. The
other order loads with ``strict=True`` too, so only a test of values can catch it.
"""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from compressai_transtic.models import TransTIC, prompt_generator
from compressai_transtic.models.prompt_generator import PromptGenerator

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, as in the released model


def _stage(x: Tensor, sd: Dict[str, Tensor], name: str, repeats: int) -> Tensor:
    """``repeats`` x (conv3x3, BatchNorm in eval mode, ReLU); indices 0/1/2, 3/4/5, ..."""
    for i in range(repeats):
        conv, bn = f"{name}.{3 * i}", f"{name}.{3 * i + 1}"
        x = F.conv2d(x, sd[f"{conv}.weight"], sd[f"{conv}.bias"], padding=1)
        x = F.batch_norm(
            x,
            sd[f"{bn}.running_mean"],
            sd[f"{bn}.running_var"],
            sd[f"{bn}.weight"],
            sd[f"{bn}.bias"],
            training=False,
            eps=BN_EPS,
        )
        x = F.relu(x)
    return x


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def oracle(sd: Dict[str, Tensor], image: Tensor) -> Tensor:
    """The prompt generator as the facts page states it (input: a multiple of 4)."""
    down1 = _stage(image, sd, "down1", 2)
    down2 = _stage(F.max_pool2d(down1, 2), sd, "down2", 2)
    down3 = _stage(F.max_pool2d(down2, 2), sd, "down3", 2)
    up2 = _stage(torch.cat([down2, _upsample(down3)], dim=1), sd, "up2", 3)  # skip FIRST
    up1 = _stage(torch.cat([down1, _upsample(up2)], dim=1), sd, "up1", 3)  # skip FIRST
    return F.conv2d(up1, sd["classifier.0.weight"], sd["classifier.0.bias"], stride=2, padding=1)


def _generator_with_random_statistics(seed: int = 0) -> PromptGenerator:
    """A float64 generator whose BatchNorms are far from the identity (as trained ones are)."""
    g = torch.Generator().manual_seed(seed)
    gen = PromptGenerator(128).double().eval()
    with torch.no_grad():
        for module in gen.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
                module.weight.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
                module.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64) * 0.1)
    return gen


@pytest.mark.parametrize("autograd", [False, True], ids=["inference", "autograd"])
@pytest.mark.parametrize("height,width", [(64, 64), (128, 192), (36, 20)])
def test_prompt_generator_matches_the_facts_page_in_float64(height, width, autograd):
    """Inference folds each BatchNorm into its convolution; with autograd every layer
    runs as it is. Both compute the facts page's function."""
    gen = _generator_with_random_statistics()
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.set_grad_enabled(autograd):
        got = gen(x)
    expected = oracle(gen.state_dict(), x)
    assert got.shape == (2, 128, height // 2, width // 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("height,width", [(64, 48), (36, 20)])
@pytest.mark.parametrize("strip_pixels", [1, 150])
def test_inference_in_strips_of_rows_matches_the_facts_page(monkeypatch, height, width, strip_pixels):
    """At inference the full-resolution top level runs in strips of rows (one output
    row per strip with ``strip_pixels=1``); the strips' margins make it the same function."""
    monkeypatch.setattr(prompt_generator, "STRIP_PIXELS", strip_pixels)
    gen = _generator_with_random_statistics()
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = gen(x)
    torch.testing.assert_close(got, oracle(gen.state_dict(), x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("height,width", [(30, 22), (33, 17), (5, 9)])
def test_strips_match_the_whole_map_on_sizes_the_pooling_does_not_halve_evenly(monkeypatch, height, width):
    """Odd sizes (outside the facts page, whose input is a multiple of 4): the strips
    against the layers run on whole maps with autograd, in float64 and in float32."""
    monkeypatch.setattr(prompt_generator, "STRIP_PIXELS", 40)
    gen = _generator_with_random_statistics()
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        gen = gen.to(dtype)
        x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1), dtype=dtype)
        with torch.no_grad():
            got = gen(x)
        torch.testing.assert_close(got, gen(x).detach(), rtol=0, atol=atol)


def test_inference_on_a_channels_last_image_in_float32_matches_the_facts_page(monkeypatch):
    """What TransTIC feeds the generator: a channels-last float32 image, here in strips
    of two output rows; the output keeps the memory format."""
    monkeypatch.setattr(prompt_generator, "STRIP_PIXELS", 2 * 2 * 40)
    gen = _generator_with_random_statistics().float()
    x = torch.rand(1, 3, 64, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = gen(x.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last)
    sd = {k: v.double() for k, v in gen.state_dict().items()}
    torch.testing.assert_close(got.double(), oracle(sd, x.double()), rtol=0, atol=1e-5)


def test_a_generator_with_swapped_layers_runs_them_on_whole_maps(monkeypatch):
    """The strips assume 3x3 convolutions; a classifier of another kind runs as built."""
    monkeypatch.setattr(prompt_generator, "STRIP_PIXELS", 1)
    gen = _generator_with_random_statistics()
    gen.classifier = torch.nn.Sequential(torch.nn.Conv2d(32, 128, 5, stride=2, padding=2).double())
    x = torch.rand(1, 3, 32, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = gen(x)
    torch.testing.assert_close(got, gen(x).detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rows_upsampled_in_half_precision_take_pytorchs_float32_weights(dtype):
    """Positions past 256 rows are not representable in bfloat16; the row weights are
    computed in float32, as in PyTorch's own bilinear resize."""
    x = torch.rand(1, 4, 300, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    whole = F.interpolate(x.float(), size=(599, 16), mode="bilinear", align_corners=True)
    rows = prompt_generator._RowSpan(520, 599, 599)
    got = prompt_generator._upsampled_rows(x, rows, 16)
    assert got.dtype == dtype
    tolerance = {torch.bfloat16: 2e-2, torch.float16: 2e-3, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(got.float(), whole[:, :, 520:599], rtol=0, atol=tolerance)


def test_inference_never_holds_the_way_up_of_the_whole_map(monkeypatch):
    """Every convolution of ``up2``, ``up1`` and the classifier sees a strip of a few rows."""
    monkeypatch.setattr(prompt_generator, "STRIP_PIXELS", 64 * 8)
    heights: Dict[int, List[int]] = {64: [], 32: []}  # by width: full and half resolution
    conv2d = F.conv2d

    def recording_conv2d(x, *args, **kwargs):
        heights.get(x.shape[-1], []).append(x.shape[-2])
        return conv2d(x, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", recording_conv2d)
    gen = _generator_with_random_statistics()
    with torch.no_grad():
        gen(torch.rand(1, 3, 96, 64, dtype=torch.float64))
    full, half = heights[64], heights[32]
    assert full[:2] == [96, 96] and half[:2] == [48, 48]  # down1 and down2 run on whole maps
    # up2: 16 rows per strip, 3 rows of margin each way
    assert len(half[2:]) == 3 * (48 // 16) and max(half[2:]) <= 16 + 2 * 3
    # classifier: 4 output rows per strip from 10 input rows at most; up1: 3 rows of margin each way
    assert len(full[2:]) == 4 * (48 // 4) and max(full[2:]) <= 10 + 2 * 3


def test_inference_follows_weights_and_statistics_changed_in_place():
    """The folded convolutions are rebuilt when a loaded state dict (or an optimiser
    step) changes a weight or a running statistic in place."""
    gen = _generator_with_random_statistics(seed=0)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        gen(x)
        gen.load_state_dict(_generator_with_random_statistics(seed=2).state_dict())
        got = gen(x)
    torch.testing.assert_close(got, oracle(gen.state_dict(), x), rtol=0, atol=1e-12)


def _batch_norm_ran(gen: PromptGenerator, x: Tensor) -> bool:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        gen(x)
    return any("batch_norm" in event.key for event in prof.key_averages())


def test_inference_folds_the_batchnorms_and_training_does_not():
    """Seen from the operators PyTorch runs: no BatchNorm at inference; with autograd,
    in training mode, or with one BatchNorm put back in training mode, every
    BatchNorm runs (on its batch statistics where it is training)."""
    gen = _generator_with_random_statistics()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert not _batch_norm_ran(gen, x)
    assert _batch_norm_ran(gen, x)  # autograd
    gen.down2[4].train()
    with torch.no_grad():
        assert _batch_norm_ran(gen, x)


def test_inference_follows_statistics_updated_by_a_training_pass():
    """A training-mode pass updates the running statistics without bumping their
    version counters; the next inference still uses the new statistics."""
    gen = _generator_with_random_statistics()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        gen(x)
        gen.train()
        gen(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
        gen.eval()
        got = gen(x)
    torch.testing.assert_close(got, oracle(gen.state_dict(), x), rtol=0, atol=1e-12)


def test_skip_connections_come_first_in_both_concatenations():
    gen = _generator_with_random_statistics()
    seen: Dict[str, Tensor] = {}

    def keep(name):
        return lambda module, args, *out: seen.__setitem__(name, (out[0] if out else args[0]).clone())

    gen.down1.register_forward_hook(keep("down1"))
    gen.down2.register_forward_hook(keep("down2"))
    gen.up2.register_forward_pre_hook(keep("up2_input"))
    gen.up1.register_forward_pre_hook(keep("up1_input"))
    gen(torch.rand(1, 3, 32, 32, dtype=torch.float64))  # with autograd: inference runs up1 in strips
    assert seen["up2_input"].shape[1] == 64 + 128
    assert seen["up1_input"].shape[1] == 32 + 64
    assert torch.equal(seen["up2_input"][:, :64], seen["down2"])
    assert torch.equal(seen["up1_input"][:, :32], seen["down1"])


def test_transtic_encoder_uses_the_generator_on_the_padded_image():
    torch.manual_seed(0)
    model = TransTIC().double().eval()
    captured = []
    model.g_a0_prompt.register_forward_hook(lambda m, args, out: captured.append((args[0], out)))
    with torch.no_grad():
        model.analysis(model._pad(torch.rand(1, 3, 64, 64, dtype=torch.float64)))
    ((inputs, output),) = captured
    sd = {k: v for k, v in model.g_a0_prompt.state_dict().items()}
    torch.testing.assert_close(output, oracle(sd, inputs), rtol=0, atol=1e-12)
