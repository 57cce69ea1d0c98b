"""Sample-keyed randomness: training results independent of process count and restarts.

In training mode the frozen base codec still draws random numbers: uniform
quantization noise in its entropy models and stochastic depth (drop path) in its Swin
blocks. Drawn from the global generator, those numbers depend on how the global batch
is split over processes and on everything drawn before, so a distributed run could
not reproduce a single-process one, nor a resumed run an uninterrupted one.

:class:`SampleKeyedRandomness` replaces those draws by numbers that are a function of
``(sample key, module, call)`` only, where the sample key is made from ``(seed, epoch,
dataset index)`` (:func:`sample_key`). The distributions are unchanged (uniform noise
in [-0.5, 0.5), Bernoulli keep masks scaled by 1 / keep probability); the noise is
drawn on the CPU in float32, so it is also the same on every device.

Supported modules: CompressAI's entropy models (``EntropyBottleneck`` and the Gaussian
conditionals), timm's ``DropPath`` and the random training maps of the ROI codec
(:class:`~compressai_transtic.quality_maps.QualityMapSampler`). A model with other sources of randomness in
training mode (e.g. ``nn.Dropout`` with ``p > 0``) is refused.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, EntropyModel
from timm.layers import DropPath
from torch import Tensor

from ..quality_maps import QualityMapSampler

__all__ = ["SampleKeyedRandomness", "mix_seed", "sample_key", "uniform01"]

logger = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seed(*values: int) -> int:
    """A 63-bit seed that depends on every value and their order."""
    h = 0x2545F4914F6CDD1D
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def uniform01(*values: int) -> float:
    """A number in [0, 1) determined by ``values``."""
    return (mix_seed(*values) >> 10) / float(1 << 53)


def sample_key(seed: int, epoch: int, index: int) -> int:
    """The key of one training sample: every random draw made for it derives from this."""
    return mix_seed(seed, epoch, index)


def _noise(keys: Sequence[int], slot: int, call: int, shape: Tuple[int, ...]) -> List[Tensor]:
    out = []
    for key in keys:
        g = torch.Generator()
        g.manual_seed(mix_seed(key, slot, call))
        out.append(torch.rand(shape, generator=g, dtype=torch.float32) - 0.5)
    return out


class SampleKeyedRandomness:
    """Make a model's training-mode random draws a function of the sample keys.

    Install once on the (unwrapped) model, then run every training forward inside
    :meth:`batch` with the keys of the batch's samples, in batch order::

        rng = SampleKeyedRandomness(model)
        with rng.batch(keys):
            out = model(x)

    Args:
        model: the model; its entropy models and ``DropPath`` modules are patched
            (instance attributes, undone by :meth:`remove`).

    Raises:
        ValueError: the model holds random modules this class cannot key
            (``nn.Dropout`` with ``p > 0`` ...).
    """

    def __init__(self, model: nn.Module) -> None:
        self._keys: Optional[List[int]] = None
        self._calls: Dict[int, int] = {}
        self._patched: List[Tuple[nn.Module, str]] = []
        unsupported = []
        for slot, (name, module) in enumerate(model.named_modules()):
            if isinstance(module, EntropyBottleneck):
                self._patch(module, "quantize", self._quantize_fn(module, slot, batch_dim=-1))
            elif isinstance(module, EntropyModel):
                self._patch(module, "quantize", self._quantize_fn(module, slot, batch_dim=0))
            elif isinstance(module, DropPath):
                self._patch(module, "forward", self._drop_path_fn(module, slot))
            elif isinstance(module, QualityMapSampler):
                self._patch(module, "generators", self._generators_fn(slot))
            elif isinstance(module, (nn.modules.dropout._DropoutNd,)) and module.p > 0:
                unsupported.append(f"{name} ({type(module).__name__}, p={module.p})")
        if unsupported:
            self.remove()
            raise ValueError(
                "the model draws random numbers in modules that sample-keyed training does not "
                f"support: {unsupported[:5]}"
            )

    # ------------------------------------------------------------------ control
    @contextlib.contextmanager
    def batch(self, keys: Sequence[int]) -> Iterator[None]:
        """Key the random draws of one forward pass (``keys``: one int per sample)."""
        if self._keys is not None:
            raise RuntimeError("SampleKeyedRandomness.batch() contexts cannot be nested")
        self._keys = [int(k) for k in keys]
        self._calls = {}
        try:
            yield
        finally:
            self._keys = None

    def remove(self) -> None:
        """Undo the patches."""
        for module, attr in self._patched:
            module.__dict__.pop(attr, None)
        self._patched = []

    # ------------------------------------------------------------------ internals
    def _patch(self, module: nn.Module, attr: str, fn: Callable[..., Any]) -> None:
        setattr(module, attr, fn)
        self._patched.append((module, attr))

    def _require_keys(self, where: str) -> List[int]:
        if self._keys is None:
            raise RuntimeError(
                f"{where} drew random numbers outside SampleKeyedRandomness.batch(): run training "
                "forwards inside `with rng.batch(keys):`"
            )
        return self._keys

    def _next(self, slot: int, batch: int, where: str) -> Tuple[List[int], int]:
        keys = self._require_keys(where)
        if batch != len(keys):
            raise RuntimeError(f"{where}: batch of {batch} samples but {len(keys)} sample keys")
        call = self._calls.get(slot, 0)
        self._calls[slot] = call + 1
        return keys, call

    def _quantize_fn(self, module: nn.Module, slot: int, batch_dim: int) -> Callable[..., Tensor]:
        entropy_model: Any = type(module)
        original = entropy_model.quantize.__get__(module)  # the class's method, not a patched one
        where = type(module).__name__

        def quantize(inputs: Tensor, mode: str, means: Optional[Tensor] = None) -> Tensor:
            if mode != "noise":
                return original(inputs, mode, means)
            if batch_dim == 0:
                keys, call = self._next(slot, inputs.shape[0], where)
                noise = torch.stack(_noise(keys, slot, call, tuple(inputs.shape[1:])))
            else:
                # EntropyBottleneck quantizes values laid out as (C, 1, B * H * W)
                n = len(self._require_keys(where))
                if inputs.dim() != 3 or n == 0 or inputs.shape[-1] % n:
                    raise RuntimeError(f"{where}: unexpected layout {tuple(inputs.shape)} for {n} samples")
                keys, call = self._next(slot, n, where)
                per = (inputs.shape[0], inputs.shape[1], inputs.shape[-1] // n)
                noise = torch.cat(_noise(keys, slot, call, per), dim=-1)
            return inputs + noise.to(device=inputs.device, dtype=inputs.dtype, non_blocking=True)

        return quantize

    def _generators_fn(self, slot: int) -> Callable[[int], List[Optional[torch.Generator]]]:
        def generators(batch: int) -> List[Optional[torch.Generator]]:
            keys, call = self._next(slot, batch, "QualityMapSampler")
            return [torch.Generator().manual_seed(mix_seed(key, slot, call)) for key in keys]

        return generators

    def _drop_path_fn(self, module: Any, slot: int) -> Callable[[Tensor], Tensor]:
        def forward(x: Tensor) -> Tensor:
            p = float(module.drop_prob)
            if p == 0.0 or not module.training:
                return x
            keys, call = self._next(slot, x.shape[0], "DropPath")
            keep = 1.0 - p
            mask = torch.tensor([1.0 if uniform01(k, slot, call) < keep else 0.0 for k in keys])
            if keep > 0.0 and getattr(module, "scale_by_keep", True):
                mask = mask / keep
            mask = mask.view((x.shape[0],) + (1,) * (x.dim() - 1))
            return x * mask.to(device=x.device, dtype=x.dtype, non_blocking=True)

        return forward
