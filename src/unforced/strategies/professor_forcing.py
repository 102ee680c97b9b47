"""Professor forcing (Lamb et al. 2016, "Professor Forcing: A New Algorithm for Training Recurrent Networks").

A discriminator (a bidirectional GRU over a hidden-state sequence, then an MLP) learns to tell the decoder's
teacher-forced hidden sequence (`forced`) from its free-running one (a greedy `rollout`); the model is trained
with its NLL plus a generator term that makes the free-running sequence look teacher-forced (and, with
`reverse`, the teacher-forced look free-running, as in the paper). As the paper's stabiliser, the generator term is
off while the discriminator's running accuracy is below `min_accuracy` or above `max_accuracy`. The
discriminator has its own AdamW (`extra_optimizers`, checkpointed by the Trainer) and its weights and running
accuracy are in `state_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, rollout
from unforced.strategies.base import StepOutput, token_nll


@dataclass
class ProfessorForcingConfig:
    """Parameters of professor forcing.

    weight (float, default 0.1): weight of the generator term beside the NLL. At 1.0 it diverged on `sort` (3 seeds
        of 5) and on a seed of `noisy-copy` at 16 symbols (the NLL climbing from ~0.6 back to ~1.7 once the term
        switched on); at 0.1 none of 20 runs on reverse, sort, noisy-copy and toy-translation did (docs/dagger.md).
    reverse (bool, default False): also push the teacher-forced sequence towards free-running (the paper's
        optional second term).
    discriminator_hidden (int, default 64): GRU width of the discriminator (each direction) and its MLP.
    discriminator_learning_rate (float, default 1e-3): its own AdamW's learning rate.
    min_accuracy (float, default 0.75), max_accuracy (float, default 0.99): the generator term is on only while
        the discriminator's running accuracy is inside [min_accuracy, max_accuracy] (Lamb et al. use 75%-99%).
    accuracy_decay (float, default 0.9): decay of the running accuracy (exponential moving average).
    """

    weight: float = 0.1
    reverse: bool = False
    discriminator_hidden: int = 64
    discriminator_learning_rate: float = 1e-3
    min_accuracy: float = 0.75
    max_accuracy: float = 0.99
    accuracy_decay: float = 0.9

    def __post_init__(self):
        if not self.weight >= 0:
            raise UnforcedError(f"professor_forcing.weight must not be negative, got {self.weight}")
        if self.discriminator_hidden < 1:
            raise UnforcedError(f"professor_forcing.discriminator_hidden must be at least 1, got "
                                f"{self.discriminator_hidden}")
        if not self.discriminator_learning_rate > 0:
            raise UnforcedError("professor_forcing.discriminator_learning_rate must be positive")
        if not 0.0 <= self.min_accuracy <= self.max_accuracy <= 1.0:
            raise UnforcedError(f"professor_forcing needs 0 <= min_accuracy <= max_accuracy <= 1, got "
                                f"{self.min_accuracy}, {self.max_accuracy}")
        if not 0.0 <= self.accuracy_decay < 1.0:
            raise UnforcedError(f"professor_forcing.accuracy_decay must be in [0, 1), got {self.accuracy_decay}")


class Discriminator(nn.Module):
    """Bidirectional GRU over (batch, time, hidden), masked mean over time, MLP -> one logit per row
    (positive: teacher-forced)."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.gru = nn.GRU(hidden, width, batch_first=True, bidirectional=True)
        self.mlp = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(states)  # (batch, time, 2 * width)
        weights = mask.float().unsqueeze(-1)
        pooled = (out * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.mlp(pooled).squeeze(-1)  # (batch,)


class ProfessorForcing:
    name = "professor_forcing"

    def __init__(self, config: ProfessorForcingConfig | None = None, seed: int = 0):
        self.config = config or ProfessorForcingConfig()
        self.seed = seed
        self.discriminator: Discriminator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.accuracy = 0.5
        self.pending: dict | None = None

    def _build(self, hidden: int, device) -> None:
        if self.discriminator is not None:
            return
        generator_state = torch.get_rng_state()
        torch.manual_seed(self.seed + 7919)  # the discriminator's initial weights depend on the seed alone
        self.discriminator = Discriminator(hidden, self.config.discriminator_hidden)
        torch.set_rng_state(generator_state)
        self.discriminator.to(device)
        self.optimizer = torch.optim.AdamW(self.discriminator.parameters(),
                                           lr=self.config.discriminator_learning_rate)
        if self.pending is not None:
            self.discriminator.load_state_dict(self.pending["weights"])
            if self.pending.get("optimizer") is not None:
                self.optimizer.load_state_dict(self.pending["optimizer"])
            self.pending = None

    # ---- capabilities (strategies/base.py): OwnOptimizers, Stateful, TaskBound ---------------------------------
    def bind(self, task) -> ProfessorForcing:
        return self

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"discriminator": self.optimizer} if self.optimizer is not None else {}

    def state_dict(self) -> dict:
        # The optimizer's state is kept here too: the discriminator (and its optimizer) is built at the first
        # step, once the hidden width is known, so a resumed Trainer may ask for extra_optimizers before it exists.
        if self.discriminator is None:
            return {"discriminator": self.pending, "accuracy": self.accuracy}
        return {"discriminator": {"weights": self.discriminator.state_dict(),
                                  "optimizer": self.optimizer.state_dict()}, "accuracy": self.accuracy}

    def load_state_dict(self, state: dict) -> None:
        self.accuracy = float(state["accuracy"])
        saved = state.get("discriminator")
        if saved is not None:
            if self.discriminator is not None:
                self.discriminator.load_state_dict(saved["weights"])
                self.optimizer.load_state_dict(saved["optimizer"])
            else:
                self.pending = saved

    # ---- loss --------------------------------------------------------------------------------------------------
    def loss(self, model, batch, step: int) -> StepOutput:
        config = self.config
        memory = model.encode(batch.source, batch.source_mask)
        forced = model.forced(memory, batch.inputs)
        nll = token_nll(forced.logits, batch.gold, batch.gold_mask)
        free = rollout(model, memory, Greedy(), gold=batch.gold, stop_at_eos=False, keep_logits=False)
        teacher, own = forced.hidden, free.hidden  # (batch, time, hidden) each
        self._build(teacher.shape[-1], teacher.device)
        mask = batch.gold_mask
        ones, zeros = torch.ones(len(batch), device=teacher.device), torch.zeros(len(batch), device=teacher.device)
        # The discriminator's step, on detached sequences.
        real, fake = self.discriminator(teacher.detach(), mask), self.discriminator(own.detach(), mask)
        discriminator_loss = (F.binary_cross_entropy_with_logits(real, ones)
                              + F.binary_cross_entropy_with_logits(fake, zeros))
        self.optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self.optimizer.step()
        accuracy = float(((real > 0).float().mean() + (fake <= 0).float().mean()) / 2)
        self.accuracy = config.accuracy_decay * self.accuracy + (1 - config.accuracy_decay) * accuracy
        on = config.min_accuracy <= self.accuracy <= config.max_accuracy and config.weight > 0
        loss = nll
        generator = torch.zeros((), device=teacher.device)
        if on:
            for parameter in self.discriminator.parameters():
                parameter.requires_grad_(False)  # the generator term moves the model only
            generator = F.binary_cross_entropy_with_logits(self.discriminator(own, mask), ones)
            if config.reverse:
                generator = generator + F.binary_cross_entropy_with_logits(self.discriminator(teacher, mask), zeros)
            for parameter in self.discriminator.parameters():
                parameter.requires_grad_(True)
            loss = nll + config.weight * generator
        return StepOutput(loss=loss, logs={"nll": float(nll.detach()), "generator": float(generator.detach()),
                                           "discriminator_loss": float(discriminator_loss.detach()),
                                           "discriminator_accuracy": accuracy,
                                           "discriminator_accuracy_running": self.accuracy,
                                           "generator_on": float(on)})


__all__ = ["Discriminator", "ProfessorForcing", "ProfessorForcingConfig"]
