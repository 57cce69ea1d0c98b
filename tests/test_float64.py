"""Every model runs in float64, and there the fast path agrees with the reference path
to rounding error.

Fidelity is judged in float64: a faithful reordering of sums changes the result by a
few ulps (about 1e-15), where float32 outputs of two faithful implementations differ
far more, because a few rounded latents flip. 128 x 96 inputs put 3072 tokens into the
first stage, so the CPU path works through more than one chunk of windows.
"""

from __future__ import annotations

import pytest
import torch
from codec_models import sample_image

from compressai_transtic.layers import reference_attention, set_cpu_attention
from compressai_transtic.models import TIC, TICSFT, TransTIC
from compressai_transtic.prompts import VARIANTS, PromptConfig

MODELS = ["tic", "tic-sft"] + [f"transtic:{name}" for name in sorted(VARIANTS)]
FLOAT64_TOLERANCE = 1e-12


def _build(name: str) -> TIC:
    torch.manual_seed(0)
    if name == "tic":
        model = TIC()
    elif name == "tic-sft":
        model = TICSFT()
        for _, p in model.named_adapter_parameters():  # not the identity of a fresh SFT
            torch.nn.init.normal_(p, std=0.02)
    else:
        model = TransTIC(PromptConfig.variant(name.split(":", 1)[1]))
    model = model.double().eval()
    model.update(force=True)
    return model


@pytest.fixture(params=["packed", "sdpa"])
def cpu_attention(request):
    set_cpu_attention(request.param)
    yield request.param
    set_cpu_attention(None)


@pytest.mark.parametrize("name", MODELS)
def test_float64_fast_path_equals_the_reference_path(name, cpu_attention):
    model = _build(name)
    x = sample_image(128, 96).double()
    with torch.no_grad():
        fast = model(x)
        with reference_attention():
            ref = model(x)
    assert fast["x_hat"].dtype == torch.float64
    torch.testing.assert_close(fast["x_hat"], ref["x_hat"], rtol=0, atol=FLOAT64_TOLERANCE)
    for key in ("y", "z"):
        assert fast["likelihoods"][key].dtype == torch.float64
        torch.testing.assert_close(fast["likelihoods"][key], ref["likelihoods"][key], rtol=0, atol=FLOAT64_TOLERANCE)


@pytest.mark.parametrize("name", MODELS)
def test_float64_round_trip_decodes_the_clamped_forward_output(name):
    model = _build(name)
    x = sample_image(80, 112, "chelsea").double()
    with torch.no_grad():
        expected = model(x)["x_hat"].clamp(0, 1)
        enc = model.compress(x)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert x_hat.dtype == torch.float64
    torch.testing.assert_close(x_hat, expected, rtol=0, atol=FLOAT64_TOLERANCE)
