"""DistributedDataParallel plumbing for the training loop (``torchrun``).

Every rank draws the same global batch and trains on its slice; only rank 0
logs and saves. Collectives use tensors on the process group's device (the
rank's GPU with NCCL, the CPU with gloo).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    """This process's place in a DDP run; its collectives use tensors on ``device``
    (the GPU of a NCCL group, the CPU of a gloo group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Element-wise sum (or max, or min) of ``values`` over the ranks."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                                    "min": dist.ReduceOp.MIN}[op])
        return tensor.tolist()

    def any(self, *flags: bool) -> list[bool]:
        """Each flag true on any rank (one collective for all of them)."""
        return [value > 0 for value in self.all_reduce([float(f) for f in flags], "max")]


def setup_distributed(device_name: str) -> Distributed:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Distributed(rank, world_size, local_rank, device)


def teardown_distributed(ddp: Distributed) -> None:
    if ddp.enabled and dist.is_initialized():
        # DistributedDataParallel sits in reference cycles, so its process group
        # would otherwise be freed only at interpreter exit, where gloo aborts
        # ("terminate called without an active exception") if the other rank
        # is still in the barrier. Collect it first, then wait for every rank.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def rank_parameter_spread(model: nn.Module, ddp: Distributed) -> float:
    """Largest difference of any parameter between DDP ranks (0 when in step)."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]).to(ddp.device)
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max())
