"""Multi-process training with DistributedDataParallel (gloo on CPU, nccl on CUDA).

Launch with ``torchrun --nproc-per-node N -m ssmcompile.cli.train ...`` (or ``ssmcompile
train``): the usual environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) is read here.

Reductions run on every rank in lock-step: DDP keeps parameters identical, and before an event
the buffers (BatchNorm statistics, which each rank updates from its own shard) are broadcast
from rank 0, so every rank runs the pipeline on the same model. Every rank therefore takes the
same decisions; the ranks then check that they agree on the new state dimensions (all-gather),
and rank 0's new parameters and buffers are broadcast so that a non-deterministic LAPACK call
cannot leave the ranks a rounding error apart. DDP is then wrapped around the new model. Only
rank 0 writes checkpoints, metrics and plots; the others wait at a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import SSMCompileError


class DistributedError(SSMCompileError, RuntimeError):
    """Ranks disagree (e.g. on the state dimensions after a reduction) or setup failed."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``world_size == 1`` means no process group.
    ``owns_group``: ``init_distributed`` created the group (a caller's own is left to it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sync_module(self, module: nn.Module, *, params: bool = True) -> None:
        """Broadcast rank 0's buffers (and parameters) into every rank's ``module``."""
        if not self.enabled:
            return
        with torch.no_grad():
            tensors = list(module.buffers()) + (list(module.parameters()) if params else [])
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def check_agree(self, values: list[int], what: str) -> None:
        """All ranks must hold the same ``values``; DistributedError otherwise."""
        if not self.enabled:
            return
        mine = torch.tensor(values, dtype=torch.int64, device=self.device)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            seen = [g.tolist() for g in gathered]
            raise DistributedError(f"ranks disagree on {what}: {seen}")

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (e.g. a run id drawn on rank 0)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return int(t)

    def all_mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world_size


def check_device(device: str) -> None:
    """``device`` exists here (ConfigError otherwise): checked before a run creates anything,
    because torch's own failure is an AssertionError deep inside the first ``.to``."""
    from .config import ConfigError

    if device == "cpu":
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: no CUDA device is available (this torch build "
                          f"{'has no CUDA' if torch.version.cuda is None else 'sees no GPU'}); "
                          "use --device cpu")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"device {device!r}: there are {count} CUDA device(s) (cuda:0.."
                          f"cuda:{count - 1})")


def init_distributed(device: str = "cpu") -> DistContext:
    """Join the job described by the torchrun environment, or a 1-process context without it.

    gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``). A process group the caller
    already initialised is used as it is, and ``shutdown`` leaves it to the caller.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device.startswith("cuda")
    if world <= 1:
        return DistContext(device=torch.device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if want_cuda else "gloo")
    return DistContext(rank=rank, world_size=dist.get_world_size(), local_rank=local, device=dev,
                       owns_group=owns)


def wrap_ddp(module: nn.Module, ctx: DistContext) -> nn.Module:
    """``module`` itself for one process, else a new DDP wrapper (call again after a swap)."""
    if not ctx.enabled:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group if ``init_distributed`` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["DistContext", "DistributedError", "init_distributed", "wrap_ddp", "shutdown",
           "check_device"]
