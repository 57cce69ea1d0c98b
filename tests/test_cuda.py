"""The same promises on a CUDA device (skipped where there is none, as in CI).

- TIC and TransTIC code and decode on the GPU: the decoded latents are those of
  ``forward`` and ``x_hat`` matches within 1e-4;
- the GPU's fused attention (scaled-dot-product kernels) equals the reference path,
  with shift and padding masks and with prompts, and computes what the independent
  reference of ``tests/swin_oracle.py`` says, in float32 and float64;
- GPU and CPU transforms agree (TF32 convolutions allowed: relative error < 1e-2);
- prompt training runs with bf16 and fp16 autocast: finite losses, prompts change,
  the base codec stays bit-identical;
- the rate-accuracy evaluation runs with ``--device cuda``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import pytest
import torch
from codec_models import calibrated_tic, round_trip, sample_image, save_tiny_base
from PIL import Image
from swin_cases import TOLERANCE, block_input, make_block, make_prompts, reference_in_float64

from compressai_transtic.layers import SwinBlock, WindowPrompts, reference_attention
from compressai_transtic.models import TransTIC

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("height,width", [(64, 64), (100, 140), (512, 768)])
def test_tic_codes_and_decodes_on_the_gpu(height, width):
    model = calibrated_tic().to(CUDA)
    x = sample_image(height, width, "coffee").to(CUDA)
    out, enc, dec, (y_forward, y_decoded) = round_trip(model, x)
    assert dec["x_hat"].is_cuda and dec["x_hat"].shape == x.shape
    assert torch.equal(y_forward, y_decoded)
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)


def test_transtic_codes_and_decodes_on_the_gpu():
    torch.manual_seed(0)
    model = TransTIC().eval()
    model.update(force=True)
    model.to(CUDA)
    x = sample_image(128, 192, "chelsea").to(CUDA)
    out, enc, dec, (y_forward, y_decoded) = round_trip(model, x)
    assert torch.equal(y_forward, y_decoded)
    torch.testing.assert_close(dec["x_hat"], out["x_hat"].clamp(0, 1), rtol=0, atol=1e-4)


@pytest.mark.parametrize("prompts", [None, "shared", "window", "full"])
@pytest.mark.parametrize("shift,h,w", [(0, 16, 24), (4, 16, 24), (4, 25, 41)])
def test_fused_gpu_attention_equals_the_reference(prompts, shift, h, w):
    if prompts == "window" and (h % 8 or w % 8):
        pytest.skip("per-window prompts need a map that is a multiple of the window")
    torch.manual_seed(0)
    block = SwinBlock(32, 4, 8, shift, mask_resolution=(16, 16)).eval().to(CUDA)
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1)
    x = torch.randn(2, h, w, 32, device=CUDA)
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    given = {
        None: None,
        "shared": WindowPrompts(tokens=torch.randn(16, 32, device=CUDA)),
        "window": WindowPrompts(prompt_map=torch.randn(2, hp // 2, wp // 2, 32, device=CUDA), downsample=2),
        "full": WindowPrompts(tokens=torch.randn(16, 32, device=CUDA), full_tokens=True),
    }[prompts]
    with torch.no_grad():
        fast = block(x, given)
        with reference_attention():
            ref = block(x, given)
    for a, r in zip(fast if isinstance(fast, tuple) else (fast,), ref if isinstance(ref, tuple) else (ref,)):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-4)


def block_against_the_oracle(kind: Optional[str], shift: int, h: int, w: int, dtype: torch.dtype, device) -> None:
    """A Swin block with random parameters and ``kind`` prompts, run on ``device`` at
    inference, against the independent reference (``tests/swin_oracle.py``) computed
    in float64 on the CPU, to the tolerance of ``dtype`` (1e-4 float32, 1e-12 float64)."""
    block = make_block(8, shift, dtype).eval()
    x = block_input(2, h, w, dtype)
    prompts, kwargs, _, _ = make_prompts(kind, 2, h, w, 8, dtype, False)
    wanted = reference_in_float64(block, x, kwargs, 8, shift)
    if prompts is not None:
        moved = {f: getattr(prompts, f) for f in ("tokens", "prompt_map")}
        prompts = dataclasses.replace(prompts, **{f: t.to(device) for f, t in moved.items() if t is not None})
    with torch.no_grad():
        out = block.to(device)(x.to(device), prompts)
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(wanted)
    for a, e in zip(outs, wanted):
        assert a.device.type == torch.device(device).type and a.dtype == dtype
        torch.testing.assert_close(a.cpu(), e.to(dtype), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", [None, "tp-16", "tp-4", "ip-legacy-d2", "ip-aligned-d2", "full-map-d2", "full-tp-16"])
@pytest.mark.parametrize("shift,h,w", [(0, 16, 24), (4, 16, 24), (4, 25, 41)])
def test_gpu_block_matches_the_independent_reference(kind, shift, h, w, dtype):
    """The GPU's fused attention, with shift and padding masks and every prompt kind,
    computes what the independent reference says (not only what the package's own
    reference path says)."""
    if kind is not None and kind.startswith("ip") and (h % 8 or w % 8):
        pytest.skip("per-window prompts need a map that is a multiple of the window")
    block_against_the_oracle(kind, shift, h, w, dtype, CUDA)


def test_gpu_and_cpu_transforms_agree():
    model = calibrated_tic()
    x = sample_image(128, 192, "astronaut")
    with torch.no_grad():
        y_cpu = model.g_a(x)
        x_cpu = model.g_s(y_cpu.round())
        model.to(CUDA)
        y_gpu = model.g_a(x.to(CUDA)).cpu()
        x_gpu = model.g_s(y_cpu.round().to(CUDA)).cpu()
    assert _relative_error(y_gpu, y_cpu) < 1e-2
    assert _relative_error(x_gpu, x_cpu) < 1e-2


@pytest.fixture(scope="module")
def training_files(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("cuda_training")
    images = root / "images" / "a"
    images.mkdir(parents=True)
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).resize((96, 80)).save(images / f"{name}.png")
    return root, save_tiny_base(root / "base.pth.tar")


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_prompt_training_with_mixed_precision(training_files, amp):
    from compressai_transtic.training.config import TrainConfig
    from compressai_transtic.training.metrics_log import read_metrics_csv
    from compressai_transtic.training.trainer import Trainer, train

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    root, base = training_files
    config = TrainConfig(
        task="cls",
        task_weights="random",
        base=str(base),
        dataset=str(root / "images"),
        output=str(root / f"run-{amp}"),
        patch_size=64,
        batch_size=4,
        crop="random",
        epochs=2,
        lr=1e-2,
        prompt_options={"generator_width": 4},
        workers=0,
        log_every=1,
        progress=False,
        tensorboard=False,
        seed=7,
        device="cuda",
        amp=amp,
    )
    result = train(config)
    rows = read_metrics_csv(result.output / "metrics.csv")
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)

    final = torch.load(result.final_model, map_location="cpu", weights_only=True)["state_dict"]
    before = torch.load(base, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], final[k]) for k in before)
    initial = Trainer(dataclasses.replace(config, output=str(root / f"initial-{amp}")))
    start = initial.model.prompt_state_dict()
    trained = torch.load(result.final_adapter, map_location="cpu", weights_only=True)["state_dict"]
    assert any(not torch.equal(trained[k], start[k].cpu()) for k in start)


@pytest.mark.slow
def test_classification_evaluation_on_the_gpu(classification_set, tmp_path, capsys):
    from compressai_transtic.cli import main

    out = tmp_path / "out"
    argv = [
        "eval",
        str(classification_set),
        "-a",
        "tic",
        "transtic",
        "-q",
        "1",
        "--random-weights",
        "--crop",
        "64",
        "--device",
        "cuda",
        "-o",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("[RANDOM WEIGHTS]") for line in lines)
    assert (out / "results.csv").is_file() and Path(out / "tic-cls.json").is_file()
