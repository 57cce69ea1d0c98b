"""The convolutions between the Swin stages: the sub-pixel form of a transposed
convolution is PyTorch's transposed convolution, checked against
``torch.nn.functional.conv_transpose2d``."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressai_transtic.complexity import count_macs
from compressai_transtic.layers import SubPixelConvTranspose2d, deconv
from compressai_transtic.models import TIC


def _transposed(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv_transpose2d(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.output_padding).detach()


@pytest.fixture
def transposed_calls(monkeypatch):
    """How often PyTorch's transposed convolution runs."""
    calls = []
    original = F.conv_transpose2d

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "conv_transpose2d", counting)
    return calls


@pytest.mark.parametrize("kernel,stride", [(5, 2), (7, 3), (3, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_inference_is_the_transposed_convolution(kernel, stride, channels_last, transposed_calls):
    torch.manual_seed(0)
    layer = deconv(16, 3, kernel, stride, subpixel=True).double()
    x = torch.randn(2, 16, 7, 10, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = layer(x)
    assert not transposed_calls  # the sub-pixel form ran
    assert got.shape == (2, 3, 7 * stride, 10 * stride)
    torch.testing.assert_close(got, _transposed(layer, x), rtol=0, atol=1e-12)


def test_subpixel_form_follows_weights_changed_in_place_and_stays_out_of_autograd():
    torch.manual_seed(0)
    layer = deconv(8, 3, 5, 2, subpixel=True).double()
    x = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(-2)
        torch.testing.assert_close(layer(x), _transposed(layer, x), rtol=0, atol=1e-12)
    out = layer(x)
    assert out.grad_fn is not None and "ConvolutionBackward" in type(out.grad_fn).__name__
    torch.testing.assert_close(out.detach(), _transposed(layer, x), rtol=0, atol=1e-12)


def test_the_layer_runs_as_a_transposed_convolution_when_asked_or_reshaped(transposed_calls):
    torch.manual_seed(0)
    layer = deconv(8, 3, 5, 2, subpixel=True).double()
    x = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        layer(x, output_size=[12, 10])
        layer.subpixel = False
        layer(x)
        layer.subpixel = True
        layer.padding = (1, 1)  # a geometry the phases were not derived for
        got = layer(x)
    assert len(transposed_calls) == 3
    torch.testing.assert_close(got, _transposed(layer, x), rtol=0, atol=0)


def test_tic_reconstructs_through_the_subpixel_layer_as_through_the_transposed_convolution():
    torch.manual_seed(0)
    model = TIC().eval()
    assert isinstance(model.g_s7, SubPixelConvTranspose2d)
    y_hat = torch.randn(1, model.M, 2, 3)
    with torch.no_grad():
        fast = model.g_s(y_hat)
        model.g_s7.subpixel = False
        plain = model.g_s(y_hat)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)


def test_subpixel_layer_keeps_the_state_dict_of_a_transposed_convolution():
    layer = deconv(8, 3, 5, 2, subpixel=True)
    plain = deconv(8, 3, 5, 2)
    assert isinstance(layer, nn.ConvTranspose2d)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    layer.load_state_dict(plain.state_dict(), strict=True)


@pytest.mark.parametrize("kernel,stride", [(3, 2), (4, 2)])
def test_kernels_without_a_symmetric_reach_are_refused(kernel, stride):
    with pytest.raises(ValueError, match="sub-pixel"):
        SubPixelConvTranspose2d(4, 4, kernel, stride, kernel // 2, stride - 1)


def test_complexity_counts_the_subpixel_layer_as_the_transposed_convolution_it_is():
    layer = deconv(8, 3, 5, 2, subpixel=True)
    x = torch.randn(1, 8, 6, 5)
    bias = 12 * 10 * 3  # one add per output element
    assert count_macs(lambda: layer(x), "true", layer) == 6 * 5 * 8 * 3 * 5 * 5 + bias
    assert count_macs(lambda: layer(x), "true") == 6 * 5 * 8 * (3 * 4) * 3 * 3 + bias  # what runs: the sub-pixel form
    layer.subpixel = False  # the user's setting survives a count
    count_macs(lambda: layer(x), "paper", layer)
    assert layer.subpixel is False
