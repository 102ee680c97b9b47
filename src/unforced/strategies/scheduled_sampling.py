"""Scheduled sampling (Bengio et al. 2015): feed gold with probability = the teacher-forcing ratio, else own tokens.

The teacher-forcing ratio is P(feed gold) and decays over training as `schedule` says. The rollout is sequential:
each own token is chosen from the logits of the step before (`rollout` with a `Mix` feed), and the loss is the
token NLL of gold along that mixed path. Hard feeds are never differentiated, so a step loop without gradient
chooses them and one forced pass with gradient scores the inputs it chose (the same loss and gradient for a
deterministic model, at the cost of a no-grad decode plus a teacher-forced step); soft feeds differentiate
through every step. The parallel approximation (Duckworth et al. 2019) is its own strategy,
`parallel_scheduled_sampling`.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Any

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.rollout import rollout
from unforced.strategies.base import StepOutput
from unforced.strategies.ratio_schedule import RatioState, ScheduledFeedConfig, scheduled_loss

PREFIX = "scheduled_sampling"


@dataclass
class ScheduledSamplingConfig(ScheduledFeedConfig):
    """Parameters of scheduled sampling: those of `ScheduledFeedConfig` (documented there), no others.

    > Parameters of the teacher-forcing ratio, the feeds and the curriculum (see `ScheduledFeedConfig`)

    schedule (str, default "inverse_sigmoid"), schedule_params (dict, default {"k": 300.0}), min_ratio (float,
    default 0.0), per (str, default "token"), own (str, default "greedy"), temperature (float, default 1.0),
    soft (bool, default False: with soft feeds the gradient flows back through each earlier step's softmax),
    curriculum (dict | None, default None).

    > Options that moved

    mode: "parallel" is the strategy `parallel_scheduled_sampling`; this strategy is the sequential one, so the
        option is gone. tbptt: truncated backpropagation is `teacher_forcing.tbptt`. Either given raises an
        error that says where it went.
    """

    prefix = PREFIX
    mode: InitVar[Any] = None
    tbptt: InitVar[Any] = None

    def __post_init__(self, mode: Any = None, tbptt: Any = None):
        if mode is not None:
            raise UnforcedError(f"{PREFIX}.mode is gone: mode 'parallel' is now the strategy "
                                f"parallel_scheduled_sampling (with its passes), and {PREFIX} is always the "
                                f"sequential (exact) rollout; remove {PREFIX}.mode")
        if tbptt is not None:
            raise UnforcedError(f"{PREFIX}.tbptt is gone: truncated backpropagation through time is "
                                f"teacher_forcing.tbptt")
        super().__post_init__()


class ScheduledSampling:
    """Sequential scheduled sampling; every coin and sample draws from one `torch.Generator` seeded from `seed`."""

    name = PREFIX

    def __init__(self, config: ScheduledSamplingConfig | None = None, seed: int = 0):
        self.config = config or ScheduledSamplingConfig()
        self.ratio = RatioState(self.config, seed)
        self.schedule, self.curriculum = self.ratio.schedule, self.ratio.curriculum

    # ---- capabilities (strategies/base.py): Stateful, Observer, BatchFilter, each RatioState's ----------------
    def state_dict(self) -> dict:
        return self.ratio.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ratio.load_state_dict(state)

    def observe(self, figures: dict) -> None:
        self.ratio.observe(figures)

    def select(self, batch, step: int):
        return self.ratio.select(batch, step)

    def max_target_length(self, step: int) -> int | None:
        return self.ratio.max_target_length(step)

    # ---- loss --------------------------------------------------------------------------------------------------
    def loss(self, model, batch, step: int) -> StepOutput:
        return scheduled_loss(model, batch, self.ratio(step), self.mixed_logits)

    def mixed_logits(self, model, memory, batch, ratio: float) -> tuple[Tensor, Tensor]:
        """(logits (batch, time, vocab), gold_fed (batch, time)) along a rollout fed `Mix(ratio)`.

        Hard feeds: a step loop without gradient chooses the inputs (`rollout` keeping only its choices: each own
        token is the model's prediction given the mixed prefix before it), then one forced pass with gradient
        scores gold on them. For a deterministic model (eval mode, or dropout 0) the forced pass's logits are the
        step loop's (`forced` equals stepping, the model contract), so loss and gradients are those of
        differentiating through every step, at the cost of a no-grad decode plus one teacher-forced step with the
        fused RNN backward. With dropout on, the step loop and the forced pass draw independent dropout masks: the
        inputs are distributed as the step loop's, but the logits scored are not the ones that chose them.
        Soft feeds carry gradient through the steps, so their rollout keeps the graph.
        """
        config = self.config
        generator = self.ratio.generator_on(batch.gold.device)
        if config.soft:
            result = rollout(model, memory, config.mix(ratio), gold=batch.gold, soft=True,
                             soft_temperature=config.temperature, generator=generator, stop_at_eos=False,
                             keep_hidden=False)
            return result.logits, result.gold_fed
        with torch.no_grad():
            chosen = rollout(model, memory, config.mix(ratio), gold=batch.gold, generator=generator,
                             stop_at_eos=False, keep_hidden=False, keep_logits=False)
        return model.forced(memory, chosen.inputs).logits, chosen.gold_fed

__all__ = ["ScheduledSampling", "ScheduledSamplingConfig"]
