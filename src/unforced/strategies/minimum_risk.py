"""Minimum-risk training over an N-best list: minimum word error rate training (Prabhavalkar et al. 2018,
"Minimum Word Error Rate Training for Attention-based Sequence-to-Sequence Models") and minimum risk training
(Shen et al. 2016, "Minimum Risk Training for Neural Machine Translation") on any sequence reward.

For each source, the N hypotheses of a beam search of width N (or N samples) form the list; their probabilities,
renormalised over the list (P^(y_i) = P(y_i | x)^alpha / sum_j P(y_j | x)^alpha), weigh each one's risk
(the negated reward: WER for speech) less the list's mean risk:

    loss = sum_i P^(y_i) * (risk_i - mean_j risk_j) + lambda * CE(gold)

The mean subtraction lowers the variance and leaves the gradient's expectation unchanged (Prabhavalkar et al.
2018, section 2.2); lambda interpolates gold cross-entropy (0.01 there) so that training stays anchored. Unlike
REINFORCE, the gradient reaches every hypothesis of the list through the renormalised distribution, and the
beam needs no sampling. Decoding runs without gradient; one forced pass over the N hypotheses carries it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unforced.errors import UnforcedError
from unforced.models import repeat_rows
from unforced.rewards import REWARDS, get_reward, safe_reward
from unforced.rollout import Sample, beam_nbest, rollout
from unforced.strategies.base import StepOutput, generator_for, token_nll
from unforced.strategies.sequence_level import decode_budget, decoder_and_reward, sequence_log_probs, shifted
from unforced.vocab import EOS, PAD

CANDIDATES = ("beam", "sample")


@dataclass
class MinimumRiskConfig:
    """Parameters of minimum-risk (minimum-WER) training.

    reward (str or None, default None): a name in `unforced.rewards.REWARDS`; None: the task's metric (WER for
        speech: the risk is then the word error rate). The risk of a hypothesis is minus its reward.
    nbest (int, default 4): N, hypotheses per source (Prabhavalkar et al. 2018 use 4 from a beam of 4).
    candidates (str, default "beam"): "beam" (the final beam of a beam search of width N) or "sample"
        (N samples at `temperature`).
    temperature (float, default 1.0): the sampling temperature of "sample".
    alpha (float, default 1.0): sharpness of the renormalised distribution (P^alpha; Shen et al. 2016 use 5e-3
        over 100 samples, the MWER paper 1 over a 4-best beam).
    cross_entropy_weight (float, default 0.01): lambda, the weight of gold cross-entropy added to the risk.
    max_len (int or None, default None), max_len_factor (float, default 1.5): the decoding budget, as reinforce's.
    """

    reward: str | None = None
    nbest: int = 4
    candidates: str = "beam"
    temperature: float = 1.0
    alpha: float = 1.0
    cross_entropy_weight: float = 0.01
    max_len: int | None = None
    max_len_factor: float = 1.5

    def __post_init__(self):
        if self.reward is not None and self.reward not in REWARDS:
            raise UnforcedError(f"minimum_risk.reward: unknown reward {self.reward!r}; known: {', '.join(REWARDS)}")
        if self.nbest < 2:
            raise UnforcedError(f"minimum_risk.nbest must be at least 2 (the risk is relative to the list), got "
                                f"{self.nbest}")
        if self.candidates not in CANDIDATES:
            raise UnforcedError(f"minimum_risk.candidates must be one of {', '.join(CANDIDATES)}, got "
                                f"{self.candidates!r}")
        for name in ("temperature", "alpha", "max_len_factor"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise UnforcedError(f"minimum_risk.{name} must be a positive number, got {value}")
        if not (self.cross_entropy_weight >= 0 and math.isfinite(self.cross_entropy_weight)):
            raise UnforcedError(f"minimum_risk.cross_entropy_weight must be a non-negative number, got "
                                f"{self.cross_entropy_weight}")
        if self.max_len is not None and self.max_len < 1:
            raise UnforcedError(f"minimum_risk.max_len must be at least 1, got {self.max_len}")


class MinimumRisk:
    """Minimum-risk training over each source's N-best list (module docstring). Fine-tunes a trained model:
    named alone in a run, it starts from the run's teacher-forced weights."""

    name = "minimum_risk"
    warm_start = True

    def __init__(self, config: MinimumRiskConfig | None = None, seed: int = 0):
        self.config = config or MinimumRiskConfig()
        self.seed = seed
        self.generator = generator_for(seed)
        self.decode = None
        self.reward = get_reward(self.config.reward) if self.config.reward else None

    def bind(self, task) -> MinimumRisk:
        """The decoder from `task.target_tokenizer`, and the task's metric as the reward if none was set."""
        self.decode, self.reward = decoder_and_reward(task, self.reward)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def candidates(self, model, memory, rows: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows * N, time) hypotheses, N consecutive rows per source, and a (rows, N) mask of the real ones."""
        config = self.config
        with torch.no_grad():
            if config.candidates == "beam":
                sequences, scores = beam_nbest(model, memory, config.nbest, max_len, rows)
                real = torch.isfinite(scores)
                return sequences.reshape(rows * config.nbest, -1), real
            drawn = rollout(model, repeat_rows(memory, config.nbest), Sample(config.temperature), max_len=max_len,
                            batch_size=rows * config.nbest, generator=self.generator, keep_hidden=False,
                            keep_logits=False)
            return drawn.tokens, torch.ones(rows, config.nbest, dtype=torch.bool, device=drawn.tokens.device)

    def loss(self, model, batch, step: int) -> StepOutput:
        config = self.config
        if self.decode is None or self.reward is None:
            raise UnforcedError("minimum_risk needs a decoder and a reward: call strategy.bind(task) before "
                                "training")
        memory = model.encode(batch.source, batch.source_mask)
        rows, n = len(batch), config.nbest
        tokens, real = self.candidates(model, memory, rows, decode_budget(config, model, batch.gold.shape[1]))
        hypotheses = self.decode(tokens.tolist())
        references = [refs for refs in batch.references for _ in range(n)]
        values, message = safe_reward(self.reward, hypotheses, references)
        logs: dict[str, float] = {}
        if values is None:  # the reward failed: train on gold alone this step, and say so
            loss = token_nll(model.forced(memory, batch.inputs).logits, batch.gold, batch.gold_mask)
            return StepOutput(loss=loss, logs={"skipped_batch": 1.0, "nll": float(loss.detach())})
        device = tokens.device
        risk = -torch.as_tensor(np.asarray(values), dtype=torch.float32, device=device).view(rows, n)
        real = real.to(device)
        count = real.sum(1, keepdim=True).clamp(min=1)
        mean_risk = (risk * real).sum(1, keepdim=True) / count
        # Through the first <eos>: the tokens that make the hypothesis (a beam slot pads after it).
        seen_eos = (tokens == EOS).long().cumsum(1)
        mask = ((seen_eos == 0) | ((seen_eos == 1) & (tokens == EOS))) & (tokens != PAD)
        forced = model.forced(repeat_rows(memory, n), shifted(tokens)).logits
        log_probs = sequence_log_probs(forced, tokens, mask).view(rows, n)
        weights = (config.alpha * log_probs).masked_fill(~real, float("-inf")).softmax(1)
        risk_term = (weights * (risk - mean_risk).masked_fill(~real, 0.0)).sum(1).mean()
        loss = risk_term
        if config.cross_entropy_weight:
            nll = token_nll(model.forced(memory, batch.inputs).logits, batch.gold, batch.gold_mask)
            loss = loss + config.cross_entropy_weight * nll
            logs["nll"] = float(nll.detach())
        logs.update(risk=float((risk * real).sum() / real.sum().clamp(min=1)),
                    expected_risk=float((weights.detach() * risk.masked_fill(~real, 0.0)).sum(1).mean()),
                    nbest_size=float(real.sum(1).float().mean()))
        return StepOutput(loss=loss, logs=logs)


__all__ = ["MinimumRisk", "MinimumRiskConfig"]
