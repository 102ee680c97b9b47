"""Data-parallel training across processes, launched by `accelerate launch` or `torchrun`.

Every process builds the same global batch (batches are a pure function of seed and step), takes its own slice,
and weights its loss by its share of the batch's gold tokens, so that after gradients are summed across
processes and divided by their number, the update equals one process training on the whole batch. Gradients
are averaged with one all-reduce of a flat buffer after `backward`: models here are driven through `encode`,
`forced` and `step`, not `forward`, so DistributedDataParallel's forward hooks would never run.
Only the main process writes checkpoints, metrics, results and progress; it alone evaluates, and broadcasts the
figures so that every process's strategy observes the same values. Sharded training (fsdp.py) keeps these
batch semantics and replaces the all-reduce with FSDP's reduce-scatter.

Devices: "auto" is CUDA where it is available, else the CPU; under a launch with CUDA each process takes the GPU
of its LOCAL_RANK ("cuda" alone means that one too, "cuda:N" names one GPU for every process).
"""

from __future__ import annotations

import os
import re

import torch

from unforced.errors import UnforcedError

DEVICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "bf16")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def check_device(name: str, field: str = "device") -> str:
    """`name` if it is a device this machine has (auto, cpu, cuda, cuda:N); an UnforcedError naming `field`
    otherwise."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name.strip().lower()):
        raise UnforcedError(f"{field} must be one of {DEVICES}, got {name!r}")
    name = name.strip().lower()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UnforcedError(f"{field} is {name!r} but CUDA is not available here (torch "
                                f"{torch.__version__}, cuda build {torch.version.cuda}): use cpu or auto")
        count = torch.cuda.device_count()
        if ":" in name and int(name.split(":")[1]) >= count:
            raise UnforcedError(f"{field} is {name!r} but this machine has {count} CUDA device(s)")
    return name


def choose_device(name: str = "auto") -> torch.device:
    """The torch device for `name` (see `check_device`): auto = CUDA if available else CPU; a bare "cuda" under a
    distributed launch is this process's LOCAL_RANK GPU."""
    name = check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        index = local_rank() if world_size() > 1 else torch.cuda.current_device()
        return torch.device("cuda", index % max(1, torch.cuda.device_count()))
    return torch.device(name)


def check_precision(precision: str, device: str, field: str = "precision") -> str:
    """fp32 anywhere; bf16 (autocast) on CUDA only, refused on the CPU rather than silently run in fp32."""
    if precision not in PRECISIONS:
        raise UnforcedError(f"{field} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and choose_device(device).type != "cuda":
        raise UnforcedError(f"{field} bf16 runs on CUDA only, and the device here is "
                            f"{choose_device(device).type}: use fp32")
    return precision


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


def collective_device() -> torch.device:
    """Where a tensor sent between processes must live: this process's GPU under nccl, else the CPU."""
    if torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(value: float) -> float:
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=collective_device())
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


def broadcast_object(value):
    """The main process's `value` on every process (each passes its own; only the main one's counts)."""
    if world_size() == 1 or not torch.distributed.is_initialized():
        return value
    holder = [value if is_main() else None]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
