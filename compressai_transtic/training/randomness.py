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

What remains drawn from the global generators (Python's, NumPy's and torch's) is kept
in a training checkpoint: :func:`rng_state` gives their states, :func:`restore_rng_state`
sets them again, and :func:`rng_state_problems` says why a state read from a file
cannot be set.

Supported modules: CompressAI's entropy models (``EntropyBottleneck`` and the Gaussian
conditionals), timm's ``DropPath`` and the random training maps of the ROI codec
(:class:`~compressai_transtic.quality_maps.QualityMapSampler`). A model with other sources of randomness in
training mode (e.g. ``nn.Dropout`` with ``p > 0``) is refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import reprlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, EntropyModel
from timm.layers import DropPath
from torch import Tensor

from ..jsonvalues import is_integer
from ..quality_maps import QualityMapSampler

__all__ = [
    "SampleKeyedRandomness",
    "mix_seed",
    "restore_rng_state",
    "rng_state",
    "rng_state_problems",
    "sample_key",
    "uniform01",
]

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


# ---------------------------------------------------------------------- global generators

#: words of the Mersenne Twister state of NumPy's legacy generator
_MT_WORDS = 624


def rng_state() -> Dict[str, Any]:
    """States of Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    np_state: Any = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`, for a state without :func:`rng_state_problems`.

    The CUDA states are set only where they fit this machine's devices (a run may
    continue on another machine; nothing the trainer draws comes from them).
    """
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        live = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        if [s.shape for s in states] == [s.shape for s in live]:
            torch.cuda.set_rng_state_all(states)
        else:
            logger.warning(
                "the %d saved CUDA generator states do not fit this machine's GPUs: not restored", len(states)
            )


def rng_state_problems(state: Mapping[str, Any]) -> List[str]:
    """Why :func:`restore_rng_state` cannot set ``state`` (read from a file): one line per
    generator, ``"<generator>[.<field>] <what>"``, empty when it can. Python's and
    torch's states are tried on generators of their own, never on the global ones."""
    checks = {"python": _python_problem, "numpy": _numpy_problem, "torch": _torch_problem, "cuda": _cuda_problem}
    problems = []
    for name, check in checks.items():
        if name in state:
            problem = check(state[name])
            problems += [f"{name}{problem}"] if problem else []
        elif name != "cuda":  # saved only by a run that used a GPU
            problems.append(f"{name} is missing")
    return problems


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def _python_problem(state: Any) -> Optional[str]:
    if not isinstance(state, (tuple, list)):
        return f" is {reprlib.repr(state)}, not a tuple"
    try:
        random.Random().setstate(_as_tuple(state))
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        return f" is not a state of Python's generator ({exc})"
    return None


def _numpy_problem(state: Any) -> Optional[str]:
    if not isinstance(state, Mapping):
        return f" is {reprlib.repr(state)}, not a mapping"
    keys = state.get("keys")
    if not (isinstance(keys, Tensor) and keys.dtype == torch.int64 and tuple(keys.shape) == (_MT_WORDS,)):
        return f".keys is not a tensor of {_MT_WORDS} int64 values"
    if not bool(((keys >= 0) & (keys < 2**32)).all()):
        return ".keys holds values outside 0..2**32-1"
    fields = {
        "name": lambda v: v == "MT19937",
        "pos": lambda v: is_integer(v) and 0 <= v <= _MT_WORDS,
        "has_gauss": lambda v: is_integer(v) and v in (0, 1),
        "cached_gaussian": lambda v: isinstance(v, float) and math.isfinite(v),
    }
    wrong = [name for name, ok in fields.items() if not ok(state.get(name))]
    return (
        f".{wrong[0]} is {reprlib.repr(state.get(wrong[0]))}, not a valid {wrong[0]} of NumPy's MT19937 generator"
        if wrong
        else None
    )


def _torch_problem(state: Any) -> Optional[str]:
    size = torch.get_rng_state().numel()
    if not (isinstance(state, Tensor) and state.dtype == torch.uint8 and tuple(state.shape) == (size,)):
        return f" is not a tensor of the {size} bytes of torch's CPU generator"
    try:
        torch.Generator().set_state(state)
    except RuntimeError as exc:
        return f" is not a state of torch's CPU generator ({exc})"
    return None


def _cuda_problem(states: Any) -> Optional[str]:
    ok = isinstance(states, (list, tuple)) and all(
        isinstance(s, Tensor) and s.dtype == torch.uint8 and s.dim() == 1 for s in states
    )
    return None if ok else f" is {reprlib.repr(states)}, not a list of byte tensors"
