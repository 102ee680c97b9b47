"""The Strategy contract: a strategy is a small config dataclass plus one class with `loss`.

    class Strategy(Protocol):
        name: str
        def loss(self, model, batch, step: int) -> StepOutput

What a strategy may do beyond `loss` is declared by the small runtime-checkable Protocols below; the Trainer and
the experiment test them with `isinstance`, never a strategy's name:

    Stateful        state_dict() / load_state_dict(state): random generators, schedules; kept in checkpoints
    TaskBound       bind(task) -> self: takes the task's decoder, metric or oracle before training
    Observer        observe(figures): sees every validation evaluation (on every rank, the same figures)
    BatchFilter     select(batch, step) -> Batch: the rows to train on at `step` (a curriculum)
    WarmStarted     warm_start = True: named alone in a run, starts from the run's teacher-forced model
    OwnOptimizers   extra_optimizers(): optimizers the strategy steps itself (a discriminator's), checkpointed

The Trainer knows no strategy by name; it calls `loss`, steps the optimizer, and logs what `logs` holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class StepOutput:
    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Strategy(Protocol):
    name: str

    def loss(self, model, batch, step: int) -> StepOutput: ...


@runtime_checkable
class Stateful(Protocol):
    """Keeps state that a resumed run must restore (generators, adaptive schedules, counters)."""

    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class TaskBound(Protocol):
    """Binds to the task before training: its target decoder, its metric as the reward, its oracle."""

    def bind(self, task) -> TaskBound: ...


@runtime_checkable
class Observer(Protocol):
    """Observes each validation evaluation (the dict of `diagnostics.evaluate`'s figures)."""

    def observe(self, figures: dict) -> None: ...


@runtime_checkable
class BatchFilter(Protocol):
    """Chooses the rows of each training batch to train on (a curriculum over difficulty)."""

    def select(self, batch, step: int): ...


@runtime_checkable
class WarmStarted(Protocol):
    """Fine-tunes a trained model: named alone in a run, it starts from the run's teacher-forced weights."""

    warm_start: ClassVar[bool]


@runtime_checkable
class OwnOptimizers(Protocol):
    """Steps optimizers of its own inside `loss` (a discriminator's); the Trainer checkpoints them."""

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]: ...


def needs_warm_start(strategy_or_class) -> bool:
    """Whether a strategy (instance or class) declares `warm_start = True`."""
    return bool(getattr(strategy_or_class, "warm_start", False))


def token_nll(logits: Tensor, gold: Tensor, mask: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean negative log-likelihood of `gold` under `logits` over the positions where `mask` is True."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), gold.flatten(), reduction="none",
                           label_smoothing=label_smoothing).view_as(gold)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def generator_for(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class SourceWalk:
    """A seeded walk over a pool of sources (`task.unlabelled`): pass p is the permutation drawn from
    `seed + p`, taken in order, a draw crossing into the next pass where one runs out. Where it stands (pass,
    position) is its state, so a resumed strategy draws what an uninterrupted one would have."""

    def __init__(self, seed: int):
        self.seed = seed
        self.epoch, self.position = 0, 0
        self._order: tuple[int, list[int]] | None = None  # (pass, permutation) of the current pass

    def reset(self) -> None:
        """Forget the cached permutation (the pool changed: a strategy bound to another task)."""
        self._order = None

    def _permutation(self, epoch: int, count: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(count, generator=generator_for(self.seed + epoch)).tolist())
        return self._order[1]

    def take(self, pool: list, rows: int) -> list:
        """The next `rows` items of `pool` on the walk."""
        chosen: list[int] = []
        while len(chosen) < rows:
            order = self._permutation(self.epoch, len(pool))
            taken = order[self.position:self.position + rows - len(chosen)]
            chosen += taken
            self.position += len(taken)
            if self.position >= len(order):
                self.epoch, self.position = self.epoch + 1, 0
        return [pool[i] for i in chosen]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
