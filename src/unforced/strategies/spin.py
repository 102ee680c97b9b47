"""Self-play fine-tuning (SPIN, Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models to Strong
Language Models"): the DPO loss with the gold reference as the chosen sequence and the model's own sample as the
rejected one, against the previous iterate as the reference policy.

    margin_i = beta * ((log pi(y_i|x_i) - log pi_t(y_i|x_i)) - (log pi(y'_i|x_i) - log pi_t(y'_i|x_i)))
    loss     = -1/P sum_i log sigmoid(margin_i)            y_i the gold, y'_i ~ pi(.|x_i) the model's own

over the P sources whose sample differs from the gold. pi_t, the reference, is the model as it was at the start
of the current iteration: a frozen copy taken at the first step and replaced by the live model every
`iteration_steps` steps (SPIN's iterations; the paper trains each iteration to convergence on freshly generated
data, here the samples are drawn fresh every step, online). No reward is needed: the gold is always the chosen.
The loss function is preference training's (`preference.dpo_loss`); the pairing and the moving reference are
what SPIN adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.models import select_rows
from unforced.rollout import Sample, rollout
from unforced.strategies.base import StepOutput, generator_for
from unforced.strategies.preference import dpo_loss, dropout_off, frozen_copy
from unforced.strategies.sequence_level import (
    check_sampling_options,
    decode_budget,
    sequence_log_probs,
    shifted,
)
from unforced.vocab import PAD


@dataclass
class SpinConfig:
    """Parameters of self-play fine-tuning.

    beta (float, default 0.1): the DPO temperature (Chen et al. 2024 use 0.1).
    iteration_steps (int, default 200): steps per iteration; the reference is the model as it was at the start
        of the iteration (at step 0, then every `iteration_steps` steps).
    temperature (float, default 1.0): the model's own (rejected) sequence is sampled from softmax(logits / T).
    top_k (int or None, default None): sample only among the k most probable tokens.
    max_len (int or None, default None), max_len_factor (float, default 1.5): the sampling budget, as reinforce.
    """

    beta: float = 0.1
    iteration_steps: int = 200
    temperature: float = 1.0
    top_k: int | None = None
    max_len: int | None = None
    max_len_factor: float = 1.5

    def __post_init__(self):
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise UnforcedError(f"spin.beta must be a positive number, got {self.beta}")
        if isinstance(self.iteration_steps, bool) or not isinstance(self.iteration_steps, int) \
                or self.iteration_steps < 1:
            raise UnforcedError(f"spin.iteration_steps must be an integer >= 1, got {self.iteration_steps!r}")
        check_sampling_options(self, "spin")


def _pad(tokens: Tensor, mask: Tensor, width: int) -> tuple[Tensor, Tensor]:
    extra = width - tokens.shape[1]
    if extra <= 0:
        return tokens[:, :width], mask[:, :width]
    return (torch.cat([tokens, tokens.new_full((tokens.shape[0], extra), PAD)], 1),
            torch.cat([mask, mask.new_zeros((mask.shape[0], extra))], 1))


class Spin:
    """SPIN against the previous iterate; see `SpinConfig`.

    The reference is a deep copy of the model (eval mode, no gradient) taken at the start of each iteration;
    `state_dict` carries its weights and the step it was taken at, so a resumed run compares with the same
    reference and refreshes it at the same steps (the checkpoint holds the weights twice, as preference's does).
    """

    name = "spin"
    warm_start = True  # fine-tunes a trained model (SPIN starts from the supervised model)

    def __init__(self, config: SpinConfig | None = None, seed: int = 0):
        self.config = config or SpinConfig()
        self.generator = generator_for(seed)
        self.reference = None
        self.reference_step: int | None = None
        self._reference_weights: dict | None = None  # loaded before the model is known; used at the next loss

    def state_dict(self) -> dict:
        weights = self.reference.state_dict() if self.reference is not None else self._reference_weights
        return {"generator": self.generator.get_state(), "reference": weights,
                "reference_step": self.reference_step}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.reference_step = state.get("reference_step")
        self._reference_weights = state.get("reference")
        self.reference = None  # rebuilt from the weights at the next loss, on the live model's architecture

    def _take_reference(self, model, step: int) -> None:
        if self._reference_weights is None:  # a new reference, not the checkpoint's
            self.reference_step = step
        self.reference = frozen_copy(model, self._reference_weights)
        self._reference_weights = None

    def loss(self, model, batch, step: int) -> StepOutput:
        with dropout_off(model):  # as the frozen reference: no dropout bias in the margins
            return self._loss(model, batch, step)

    def _loss(self, model, batch, step: int) -> StepOutput:
        config = self.config
        if self.reference is None:  # the first step, or the first after a resume (the checkpoint's weights)
            self._take_reference(model, step)
        if step - self.reference_step >= config.iteration_steps:  # a new iteration: the model as it is now
            self._take_reference(model, step)
        memory = model.encode(batch.source, batch.source_mask)
        rows = len(batch)
        with torch.no_grad():
            drawn = rollout(model, memory, Sample(config.temperature, config.top_k),
                            max_len=decode_budget(config, model, batch.gold.shape[1]), batch_size=rows,
                            generator=self.generator, keep_hidden=False)
        width = max(batch.gold.shape[1], drawn.tokens.shape[1])
        gold, gold_mask = _pad(batch.gold, batch.gold_mask, width)
        own, own_mask = _pad(drawn.tokens, drawn.mask, width)
        same = ((gold.masked_fill(~gold_mask, PAD) == own.masked_fill(~own_mask, PAD)).all(1))
        sources = torch.nonzero(~same).squeeze(1)  # rows whose own sequence differs from the gold
        pairs = len(sources)
        logs = {"pairs_used": float(pairs), "own_equals_gold": float(same.float().mean()),
                "sample_length": float(drawn.mask.sum(1).float().mean()),
                "reference_age": float(step - self.reference_step)}
        if pairs == 0:  # every sample is the gold: no pair, and no parameter moves
            return StepOutput(loss=torch.zeros((), requires_grad=True), logs=logs)
        tokens = torch.cat([gold[sources], own[sources]])  # (2P, width) chosen rows first, then rejected
        mask = torch.cat([gold_mask[sources], own_mask[sources]])
        inputs = shifted(tokens)
        source_rows = torch.cat([sources, sources])
        policy = sequence_log_probs(model.forced(select_rows(memory, source_rows), inputs).logits, tokens, mask)
        with torch.no_grad():
            reference_memory = self.reference.encode(batch.source, batch.source_mask)
            reference = sequence_log_probs(
                self.reference.forced(select_rows(reference_memory, source_rows), inputs).logits, tokens, mask)
        loss, margins = dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:], config.beta)
        logs.update(dpo=float(loss.detach()), dpo_margin=float(margins.detach().mean()),
                    accuracy=float((margins > 0).float().mean()))
        return StepOutput(loss=loss, logs=logs)


__all__ = ["Spin", "SpinConfig"]
