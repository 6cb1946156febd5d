"""The DDP group as the training loop sees it: this rank, the world size, and the two all-reduces its metrics need;
one process without a group is rank 0 of 1."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(values: torch.Tensor) -> None:
    if rank_and_world()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)  # gloo reduces CPU tensors; float64 avoids drift


def all_reduce_max(value: float) -> float:
    if rank_and_world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0])
