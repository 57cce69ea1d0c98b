"""Distributed data parallel through ``torchrun``: process group, helpers, synced BatchNorm.

Launch as usual with ``torchrun`` (``python -m torch.distributed.run``); the
environment variables it sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` ...) are read by :func:`init_distributed`. The backend is NCCL when
training runs on CUDA devices and gloo on the CPU.

The trainer keeps a distributed run equivalent to a single-process run with the same
global batch: each process gets a contiguous slice of every global batch, the
gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`, and the
BatchNorm layers of the prompt generator compute their statistics over the global
batch (:class:`GlobalBatchNorm2d`; PyTorch's ``SyncBatchNorm`` does not run on CPU).
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from .config import option_ref

__all__ = [
    "DistributedContext",
    "PeerSetupError",
    "GlobalBatchNorm2d",
    "convert_batchnorm",
    "init_distributed",
    "resolve_device",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _attempt(fn: Callable[[], T]) -> Tuple[Optional[T], Optional[Exception]]:
    """``(fn(), None)``, or ``(None, error)`` when ``fn`` raises."""
    try:
        return fn(), None
    except Exception as exc:
        return None, exc


class PeerSetupError(RuntimeError):
    """Another process of the job failed a check before training (the message quotes it)."""


def resolve_device(option: str, local_rank: int = 0) -> torch.device:
    """The device of this process: ``auto`` picks ``cuda:<local rank>`` when available.

    Raises:
        ValueError: CUDA requested but not available.
    """
    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(option)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{option_ref('device', option)}: CUDA is not available on this machine "
                f"(use {option_ref('device', 'cpu')})"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


@dataclass
class DistributedContext:
    """Where this process stands in the job.

    Args:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine.
        device: this process's device.
        initialized_here: whether :func:`init_distributed` created the process group
            (and :meth:`shutdown` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum over processes (in place, returned for convenience)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> List[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.distributed:
            return [obj]
        gathered: List[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def raise_if_any(self, error: Optional[BaseException]) -> None:
        """Collective: if any process failed a check, every process raises.

        The failing process re-raises its own exception; the others raise a
        :class:`PeerSetupError` quoting it, so no process is left waiting in a collective.
        """
        if not self.distributed:
            if error is not None:
                raise error
            return
        messages = self.gather_objects(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        for rank, message in enumerate(messages):
            if message is not None:
                raise PeerSetupError(f"process {rank} failed before training: {message}")

    def collective(self, fn: Callable[[], T], main_first: bool = False) -> T:
        """Run a setup step on every process; if any fails, all raise (no process hangs).

        Args:
            fn: the step.
            main_first: rank 0 runs it before the others (e.g. it downloads a file
                that the others then read from the cache).
        """
        if main_first and self.distributed:
            result, error = _attempt(fn) if self.is_main else (None, None)
            self.raise_if_any(error)
            if not self.is_main:
                result, error = _attempt(fn)
        else:
            result, error = _attempt(fn)
        self.raise_if_any(error)
        return result  # type: ignore[return-value]  # fn returned: no error

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run a setup step on rank 0 only and hand its result to every process."""
        result, error = _attempt(fn) if self.is_main else (None, None)
        self.raise_if_any(error)
        return self.broadcast_object(result)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that trains: ``model`` itself in one process; in a job, ``model``
        with its BatchNorm layers synchronised, inside ``DistributedDataParallel``."""
        if not self.distributed:
            return model
        convert_batchnorm(model)
        # buffers (base codec tables, synced BatchNorm statistics) are equal on every
        # process: no need to broadcast them before each forward
        parameters = inspect.signature(DistributedDataParallel.__init__).parameters
        no_sync = (
            {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=False,
            **no_sync,  # type: ignore[arg-type]
        )

    def shutdown(self) -> None:
        """Destroy the process group if this context created it."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized_here = False


def init_distributed(device_option: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the ``torchrun`` job described by the environment (or run alone).

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) no process group is created.

    Args:
        device_option: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        timeout_minutes: timeout of collective operations.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_option, local_rank)
    if world_size <= 1:
        return DistributedContext(device=device)
    if dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device, False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: Dict[str, Any] = {}
    if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = device  # binds NCCL to this GPU (PyTorch >= 2.3)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    logger.info("process %d of %d joined the %s process group on %s", rank, world_size, backend, device)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device, True)


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced (summed) output gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _SumOverProcesses.apply(grad)


def sum_over_processes(tensor: Tensor) -> Tensor:
    """Differentiable sum of ``tensor`` over every process of the default group."""
    return _SumOverProcesses.apply(tensor)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the global batch of all processes.

    Same parameters, buffers and state-dict keys as :class:`torch.nn.BatchNorm2d`; in
    training mode inside a process group of more than one process, the mean and the
    (biased) variance are computed over every process's samples (two all-reduces,
    differentiable), exactly as one process would compute them over the whole batch.
    Elsewhere it is a plain ``BatchNorm2d``. Unlike ``torch.nn.SyncBatchNorm`` it also
    runs on the CPU (gloo).
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x if x.dtype == torch.float64 else x.float()
        count = torch.tensor([xf.numel() // c], dtype=torch.float32, device=x.device)
        sums = sum_over_processes(torch.cat([xf.sum(dim=(0, 2, 3)), count]))
        n = sums[c].detach()
        mean = sums[:c] / n
        centred = xf - mean.view(1, c, 1, 1)
        var = sum_over_processes(centred.pow(2).sum(dim=(0, 2, 3))) / n
        tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
        if self.track_running_stats and tracked is not None and running_mean is not None and running_var is not None:
            with torch.no_grad():
                tracked.add_(1)
                momentum = (1.0 / float(tracked)) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / (n - 1)) if n > 1 else var.detach()
                running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by :class:`GlobalBatchNorm2d` in place.

    Parameters and buffers are moved over as they are (same objects), so optimizers
    built before or after the conversion see the same tensors.

    Returns:
        ``module``.
    """
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean = child.running_mean
                new.running_var = child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module
