"""Parallel scheduled sampling (Duckworth et al. 2019): scheduled sampling without a loop over time steps.

Coins are drawn as in scheduled sampling (gold with probability = the teacher-forcing ratio). Then `passes - 1`
teacher-forced passes without gradient each propose the model's own token for every position at once, and the
own positions of the inputs take the proposals of the pass before; a last forced pass with gradient scores gold
on the mixed inputs. With greedy feeds and passes = time + 1 this is the sequential rollout; Duckworth et al.
found 2 passes close to it. Only `forced` is used, so it runs on every model at the cost of `passes` forced passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.rollout import embedding_table, gold_coins, sample_tokens, soft_embedding
from unforced.strategies.base import StepOutput
from unforced.strategies.ratio_schedule import RatioState, ScheduledFeedConfig, scheduled_loss

PREFIX = "parallel_scheduled_sampling"


@dataclass
class ParallelScheduledSamplingConfig(ScheduledFeedConfig):
    """Parameters of parallel scheduled sampling: those of `ScheduledFeedConfig` (documented there) and `passes`.

    > Parameters of the teacher-forcing ratio, the feeds and the curriculum (see `ScheduledFeedConfig`)

    schedule (str, default "inverse_sigmoid"), schedule_params (dict, default {"k": 300.0}), min_ratio (float,
    default 0.0), per (str, default "token"), own (str, default "greedy"), temperature (float, default 1.0),
    soft (bool, default False: the last mixture of soft inputs keeps the embedding table's gradient, so every
    candidate's embedding learns from the loss), curriculum (dict | None, default None).

    > Parameters that control the passes

    passes (int, default 2): >= 2; `passes - 1` forced passes without gradient propose own tokens, then one with
        gradient scores gold. Duckworth et al. 2019 found 2 passes close to the sequential result; each further
        pass costs one more forced pass without gradient.
    """

    prefix = PREFIX
    passes: int = 2

    def __post_init__(self):
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 2:
            raise UnforcedError(f"{PREFIX}.passes must be an integer >= 2, got {self.passes!r}")
        super().__post_init__()


class ParallelScheduledSampling:
    """Parallel scheduled sampling; every coin and sample draws from one `torch.Generator` seeded from `seed`."""

    name = PREFIX

    def __init__(self, config: ParallelScheduledSamplingConfig | None = None, seed: int = 0):
        self.config = config or ParallelScheduledSamplingConfig()
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

    def _own_tokens(self, logits: Tensor) -> Tensor:
        """logits (..., vocab) -> own tokens (...), greedy or sampled, never differentiated."""
        if self.config.own == "greedy":
            return logits.argmax(-1)
        flat = logits.reshape(-1, logits.shape[-1])
        generator = self.ratio.generator_on(logits.device)
        return sample_tokens(flat, self.config.temperature, generator=generator).view(logits.shape[:-1])

    def mixed_logits(self, model, memory, batch, ratio: float) -> tuple[Tensor, Tensor]:
        """(logits of the last pass (batch, time, vocab), coins (batch, time), True where gold is fed).

        The coins are drawn once and kept across passes, so each pass refreshes the same own positions with the
        predictions of the pass before.
        """
        config = self.config
        gold_inputs = batch.inputs
        b, t = batch.gold.shape
        device = gold_inputs.device
        coins = gold_coins(config.mix(ratio), b, t, self.ratio.generator_on(device), device).clone()
        coins[:, 0] = True  # the first input is always <bos>
        if config.soft:
            table = embedding_table(model, device)  # (vocab, embedding)
            gold_embedded = model.embed(gold_inputs)  # (batch, time, embedding), scaled as the model scales
            embedded = gold_embedded
            for index in range(config.passes - 1):
                last = index == config.passes - 2
                with torch.no_grad():
                    logits = model.forced(memory, gold_inputs, embeddings=embedded).logits
                # The last mixture keeps the table's gradient: every candidate's embedding learns from the loss.
                with torch.set_grad_enabled(last and torch.is_grad_enabled()):
                    own = soft_embedding(logits[:, :-1], table, config.temperature)
                    embedded = torch.cat([gold_embedded[:, :1],
                                          torch.where(coins[:, 1:, None], gold_embedded[:, 1:], own)], 1)
            return model.forced(memory, gold_inputs, embeddings=embedded).logits, coins
        inputs = gold_inputs
        with torch.no_grad():
            for _ in range(config.passes - 1):
                logits = model.forced(memory, inputs).logits  # (batch, time, vocab)
                own = self._own_tokens(logits[:, :-1])  # own token of step t-1 is the candidate input at t
                inputs = torch.cat([gold_inputs[:, :1], torch.where(coins[:, 1:], gold_inputs[:, 1:], own)], 1)
        return model.forced(memory, inputs).logits, coins


__all__ = ["ParallelScheduledSampling", "ParallelScheduledSamplingConfig"]
