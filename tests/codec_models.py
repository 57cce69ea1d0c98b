"""Small builders of codec models for the tests (no downloads)."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from compressai.models.base import get_scale_table

from compressai_transtic.models import TIC

DATA = Path(__file__).parent / "data"


def read_tsv(name: str) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """``{key: (shape, "param" | "buffer")}`` from a reference state-dict listing."""
    out = {}
    for line in (DATA / "state-dict" / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, kind = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        out[key] = (dims, kind)
    return out


def describe(model: torch.nn.Module) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """The model's state dict in the same form as :func:`read_tsv`."""
    params = dict(model.named_parameters())
    return {k: (tuple(v.shape), "param" if k in params else "buffer") for k, v in model.state_dict().items()}


def sample_image(height: int, width: int, which: str = "astronaut") -> torch.Tensor:
    """A CC0 photo shipped with scikit-image, resized to ``height x width``, in [0, 1]."""
    from skimage import data

    array = getattr(data, which)()
    t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


@functools.lru_cache(maxsize=1)
def calibrated_tic_state() -> Dict[str, torch.Tensor]:
    """Weights of a random TIC whose entropy models fit its latents.

    ``y`` is scaled to a standard deviation of 4, ``h_s`` predicts a constant scale that
    is an entry of the entropy coder's scale table (so coding and likelihood use the
    same Gaussian) and zero means, and the factorized prior of ``z`` is fitted to the
    ``z`` of a sample image. Real bitstream rates of such a model must match its
    likelihoods closely: what is left over is entropy-coder overhead.
    """
    torch.manual_seed(0)
    model = TIC().eval()
    x = sample_image(256, 256)
    with torch.no_grad():
        y = model.g_a(model._pad(x))
        gain = 4.0 / y.std()
        model.g_a6.weight.mul_(gain)
        model.g_a6.bias.mul_(gain)
        z = model.h_a(model.g_a(model._pad(x)))
        model.h_s3.weight.zero_()
        model.h_s3.bias[: model.M] = get_scale_table()[40]
        model.h_s3.bias[model.M :] = 0.0
    eb = model.entropy_bottleneck.train()
    density = [p for n, p in eb.named_parameters() if n != "quantiles"]
    opt = torch.optim.Adam(density, lr=1e-2)
    aux = torch.optim.Adam([eb.quantiles], lr=1e-1)
    for _ in range(300):
        _, likelihood = eb(z)
        loss = -likelihood.log2().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux.zero_grad()
        eb.loss().backward()
        aux.step()
    model.eval()
    model.update(force=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


def calibrated_tic() -> TIC:
    model = TIC()
    model.load_state_dict(calibrated_tic_state())
    return model.eval()


def save_tiny_base(path: Path) -> Path:
    """Write a random TIC with N=16, M=16 (entropy tables built) as a checkpoint."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = TIC(N=16, M=16)
    base.update(force=True)
    torch.save({"state_dict": base.state_dict()}, path)
    return path


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def synthesis_inputs(model: torch.nn.Module) -> Iterator[List[torch.Tensor]]:
    """Collect, while the context is open, every latent fed to the model's ``g_s``."""
    captured: List[torch.Tensor] = []
    handle = model.g_s0.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach().clone()))
    try:
        yield captured
    finally:
        handle.remove()


def round_trip(model: torch.nn.Module, x: torch.Tensor):
    """``forward``, ``compress`` and ``decompress`` of ``x``, without gradients.

    Returns ``(out, enc, dec, (y_forward, y_decoded))``: the latents that ``g_s`` got
    from ``forward`` and from ``decompress``.
    """
    with synthesis_inputs(model) as captured, torch.no_grad():
        out = model(x)
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])
    return out, enc, dec, tuple(captured)


def tiny_tic(seed: int = 0) -> TIC:
    """A random TIC with N=16, M=16, in eval mode, entropy tables built."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TIC(N=16, M=16).eval()
    model.update(force=True)
    return model


def randomize_adapter(model: torch.nn.Module, seed: int = 1, std: float = 0.05) -> torch.nn.Module:
    """Set every trainable part of an adapted codec to seeded random values, as after
    training (a fresh SFT or ROI layer is the identity); returns the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_adapter_parameters():
            p.copy_(std * torch.randn(p.shape, generator=generator))
    return model


def assert_codes_as_its_base(model: torch.nn.Module, base: TIC, x: torch.Tensor, **inputs: torch.Tensor) -> None:
    """A fresh adapted codec (``inputs``: e.g. a quality map) gives its base codec's
    image, y likelihoods and y / z / header strings exactly."""
    model.eval().update(force=True)
    with torch.no_grad():
        ours, theirs = model(x, **inputs), base(x)
        assert torch.equal(ours["x_hat"], theirs["x_hat"])
        assert torch.equal(ours["likelihoods"]["y"], theirs["likelihoods"]["y"])
        assert model.compress(x, **inputs)["strings"][:3] == base.compress(x)["strings"]
