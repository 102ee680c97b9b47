"""The Strategy contract: a strategy is a small config dataclass plus one class with `loss`.

    class Strategy(Protocol):
        name: str
        def loss(self, model, batch, step: int) -> StepOutput

The Trainer knows no strategy by name; it calls `loss`, steps the optimizer, and logs what `logs` holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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


def token_nll(logits: Tensor, gold: Tensor, mask: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean negative log-likelihood of `gold` under `logits` over the positions where `mask` is True."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), gold.flatten(), reduction="none",
                           label_smoothing=label_smoothing).view_as(gold)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def generator_for(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
