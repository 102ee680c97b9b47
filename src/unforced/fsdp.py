"""Sharded data parallel training (FSDP2, `torch.distributed.fsdp.fully_shard`) of a model driven through
`encode`, `forced`, `start` and `step`.

Opt in with `train.fsdp: true` (`--fsdp`), or launch with `accelerate launch --use_fsdp` (which sets
ACCELERATE_USE_FSDP=true); it takes effect under a launch of two or more processes. The global-batch semantics
are the data-parallel path's (distributed.py): each process trains its slice of the same batch with its loss
weighted by its share of the gold tokens; FSDP's reduce-scatter averages the gradients, so the flat all-reduce is
skipped.

The Trainer shards a copy of the model (`shard`); the caller's model stays whole and unsharded, and receives the
trained weights at the end (`gather_into`). Between steps each process holds 1/N of the weights, gradients and
AdamW states. The whole model is one FSDP unit, gathered at a step's first call and reduce-scattered once after
backward: a free-running rollout stops when its rows have emitted <eos>, so processes decoding different rows call
`step` a different number of times, and per-layer units, which gather at every call, would then wait on each other
forever. So the peak memory of a step still holds the whole weights and gradients; the saving is the sharded
optimizer states and gradients between steps (Adam's two states: 4 model sizes per device under DDP, 2 + 2/N here).

Validation runs on every process in lock step (the same rows, the same gathered weights), so all join the gather;
the main process's figures count. Checkpoints hold the full (gathered) weights and optimizer state, keyed as an
unsharded model's and optimizer's are, so they load into a plain model.
"""

from __future__ import annotations

import copy
import os
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from unforced import distributed
from unforced.errors import UnforcedError

# Everything the strategies, the rollout engine and the diagnostics call on a model; each gathers the weights.
MODEL_METHODS = ("encode", "forced", "start", "step", "embed", "output_embedding")


def requested(flag: bool = False) -> bool:
    """FSDP was asked for: the train config's `fsdp`, or `accelerate launch --use_fsdp`."""
    return bool(flag) or os.environ.get("ACCELERATE_USE_FSDP", "").strip().lower() in ("1", "true", "yes")


def active(flag: bool = False) -> bool:
    """FSDP asked for under a launch of two or more processes (one process holds the whole model anyway)."""
    return requested(flag) and distributed.world_size() > 1


@runtime_checkable
class KeepsModelCopy(Protocol):
    """A strategy that holds a second copy of the model as `reference` (preference training's frozen reference):
    under FSDP that copy would be neither sharded nor gathered."""

    reference: object


def check_strategy(strategy) -> None:
    """Refuse a strategy that cannot train sharded, naming it and why."""
    if isinstance(strategy, KeepsModelCopy):
        raise UnforcedError(f"strategy {getattr(strategy, 'name', type(strategy).__name__)!r} cannot train under "
                            f"FSDP: it keeps a second, frozen copy of the model as its reference, and a copy of a "
                            f"sharded model is neither whole nor gathered by FSDP; train it without --fsdp (data "
                            f"parallel) or in one process")


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """A sharded copy of `model` over every process (one FSDP unit; see the module docstring), with each of
    MODEL_METHODS it has gathering the weights around its call."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    if device.type == "cuda":
        torch.cuda.set_device(device)
    sharded = copy.deepcopy(model)
    mesh = init_device_mesh(device.type, (distributed.world_size(),))
    fully_shard(sharded, mesh=mesh)
    for name in MODEL_METHODS:
        if callable(getattr(sharded, name, None)):
            register_fsdp_forward_method(sharded, name)
    return sharded


def _full(value):
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_model_state(sharded: nn.Module) -> dict:
    """The whole state dict of a sharded model on every process (a collective: all processes call it), on the
    CPU, keyed as the unsharded model's."""
    return {name: _full(value).detach().cpu() for name, value in sharded.state_dict().items()}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state with every sharded tensor gathered (a collective), keyed as an unsharded optimizer's
    state_dict is (parameter ids in the order of its parameter groups)."""
    state = optimizer.state_dict()
    return {"state": {index: {key: _full(value).detach().cpu() if torch.is_tensor(value) else value
                              for key, value in values.items()} for index, values in state["state"].items()},
            "param_groups": state["param_groups"]}


def _local(value: torch.Tensor, like):
    """`value` (whole) as `like` holds it: this process's shard where `like` is a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor):
        return distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements,
                                 src_data_rank=None)  # every process holds the whole value: each cuts its shard
    return value.to(like.device) if torch.is_tensor(like) else value


def load_full_model_state(sharded: nn.Module, state: dict) -> None:
    """Load a whole (unsharded) state dict into a sharded model; raises RuntimeError when it does not fit."""
    own = sharded.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise RuntimeError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, value in state.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise RuntimeError(f"{name}: shape {tuple(value.shape)}, the model's {tuple(own[name].shape)}")
    sharded.load_state_dict({name: _local(value, own[name]) for name, value in state.items()})


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load an unsharded optimizer's state_dict (as `full_optimizer_state` writes it) into the optimizer of a
    sharded model: each state tensor of a parameter's shape becomes this process's shard."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    loaded = {}
    for index, values in state["state"].items():
        parameter = parameters[int(index)]
        loaded[index] = {key: _local(value, parameter) if torch.is_tensor(value)
                         and tuple(value.shape) == tuple(parameter.shape) else value
                         for key, value in values.items()}
    optimizer.load_state_dict({"state": loaded, "param_groups": state["param_groups"]})


def gather_into(model: nn.Module, sharded: nn.Module) -> nn.Module:
    """Copy the sharded model's trained weights into the whole `model` (a collective); returns `model`."""
    model.load_state_dict(full_model_state(sharded))
    return model
