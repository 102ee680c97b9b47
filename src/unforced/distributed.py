"""Data-parallel training across processes, launched by `accelerate launch` or `torchrun`.

Every process builds the same global batch (batches are a pure function of seed and step), takes its own slice,
and weights its loss by its share of the batch's gold tokens, so that after gradients are summed across
processes and divided by their number, the update equals one process training on the whole batch. Gradients
are averaged with one all-reduce of a flat buffer after `backward`: models here are driven through `encode`,
`forced` and `step`, not `forward`, so DistributedDataParallel's forward hooks would never run.
Only the main process writes checkpoints, metrics, results and progress.
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup() -> None:
    """Join the process group that the launcher described (gloo on CPU, nccl on GPU), once."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def shard(rows: int) -> slice:
    """This process's contiguous slice of a batch of `rows` rows."""
    world, me = world_size(), rank()
    per = -(-rows // world)
    return slice(min(me * per, rows), min((me + 1) * per, rows))


def all_sum(value: float) -> float:
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor)


def average_gradients(parameters) -> None:
    """Sum every gradient across processes and divide by their number (one all-reduce of a flat buffer)."""
    if world_size() == 1:
        return
    parameters = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for parameter in parameters:
        count = parameter.numel()
        parameter.grad = flat[offset:offset + count].view_as(parameter).clone()
        offset += count


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
