"""MIXER (Ranzato et al. 2016, "Sequence Level Training with Recurrent Neural Networks"): cross-entropy on a gold
prefix, REINFORCE on the model's own continuation, the boundary moving towards the start as training goes.

Each of K samples per source is fed the gold tokens for its first T - delta steps (T its gold length with <eos>)
and samples the rest from the model (`rollout` with a `Prefix` feed); the sequence is scored by a sequence
reward. The loss is cross-entropy on the prefix tokens plus the REINFORCE term on the sampled ones:

    loss = CE(y_1 .. y_(T-delta)) - 1/(B K) sum_ik (r_ik - b_ik) * sum_{t > T-delta, t <= first <eos>} log p(y_ikt)

with the baseline b as in `reinforce` (the greedy continuation of the same gold prefix by default). delta grows
by one every `delta_growth` steps, so the model learns to continue from ever shorter gold prefixes until it
generates whole sequences (Ranzato et al. grow it every few epochs). Sampling runs without gradient; one forced
pass over the sequences carries it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from unforced.errors import UnforcedError
from unforced.models import repeat_rows
from unforced.rewards import Reward, get_reward
from unforced.rollout import Greedy, Prefix, Sample, rollout
from unforced.strategies.base import StepOutput, generator_for, token_nll
from unforced.strategies.sequence_level import (
    check_policy_gradient_options,
    decode_budget,
    decoder_and_reward,
    policy_gradient,
    score_samples,
    shifted,
    skipped_batch,
)
from unforced.vocab import PAD

PREFIX = "mixer"


@dataclass
class MixerConfig:
    """Parameters of MIXER.

    > Parameters that control the gold prefix

    delta (int, default 2): >= 0, the tokens sampled at the end of each sequence at step 0; the first T - delta
        are fed gold and trained with cross-entropy (Ranzato et al. 2016 start from a small delta after a
        cross-entropy warm start and move it by a step of 2 or 3 at a time). 0 is teacher forcing on gold.
    delta_growth (int or None, default None): >= 1, steps after which delta grows by 1 (delta at step s is
        delta + s // delta_growth); None keeps delta fixed.

    > Parameters that control the reward

    reward (str or None, default None): a name in `unforced.rewards.REWARDS` ("bleu", "chrf", "cider_d",
        "exact_match", "neg_wer", ...) of the whole sequence, prefix included. None: the task's metric, set by
        `Mixer.bind(task)`.
    baseline (str, default "greedy"): subtracted from each sample's reward, as in `reinforce`: "greedy" (the
        greedy continuation of the same gold prefix, self-critical), "mean", "leave_one_out" or "none".
        Ranzato et al. learn a linear regressor of the reward instead; the greedy continuation needs no training.
    normalize_advantage (bool, default False): divide the advantages by their standard deviation over the batch.

    > Parameters that control generation

    samples (int, default 5): K, continuations sampled per source ("mean" and "leave_one_out" need at least 2).
    temperature (float, default 1.0): continuations come from softmax(logits / temperature); the reinforced
        log-probabilities are those of this tempered distribution.
    top_k (int or None, default None): sample only among the k most probable tokens.
    max_len (int or None, default None): decode at most this many tokens (at least one past the longest prefix);
        None means ceil(gold width * max_len_factor) + 5, capped at the model's `max_target_len`.
    max_len_factor (float, default 1.5): see `max_len`.

    > Parameters that control the loss

    entropy_bonus (float, default 0.0): beta in loss - beta * H, H the mean tempered entropy over the sampled
        positions; a small value (1e-3) delays collapse to one output.
    """

    delta: int = 2
    delta_growth: int | None = None
    reward: str | None = None
    baseline: str = "greedy"
    normalize_advantage: bool = False
    samples: int = 5
    temperature: float = 1.0
    top_k: int | None = None
    max_len: int | None = None
    max_len_factor: float = 1.5
    entropy_bonus: float = 0.0

    def __post_init__(self):
        if isinstance(self.delta, bool) or not isinstance(self.delta, int) or self.delta < 0:
            raise UnforcedError(f"{PREFIX}.delta must be an integer >= 0, got {self.delta!r}")
        if self.delta_growth is not None and (isinstance(self.delta_growth, bool)
                                              or not isinstance(self.delta_growth, int) or self.delta_growth < 1):
            raise UnforcedError(f"{PREFIX}.delta_growth must be None or an integer >= 1, got {self.delta_growth!r}")
        check_policy_gradient_options(self, PREFIX)


class Mixer:
    """MIXER; see `MixerConfig`. Call `bind(task)` before training (the experiment does), as for reinforce."""

    name = PREFIX
    warm_start = True  # Ranzato et al. start from a cross-entropy model: named alone, it starts from teacher forcing

    def __init__(self, config: MixerConfig | None = None, seed: int = 0):
        self.config = config or MixerConfig()
        self.generator = generator_for(seed)
        self.decode: Callable[[list[list[int]]], list[str]] | None = None
        self.reward: Reward | None = get_reward(self.config.reward) if self.config.reward is not None else None
        self.skipped_batches = 0
        self.last_skip_message: str | None = None

    def bind(self, task) -> Mixer:
        """Take the decoder from `task.target_tokenizer`, and the reward from `task.metric` if none was set."""
        self.decode, self.reward = decoder_and_reward(task, self.reward)
        return self

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "skipped_batches": self.skipped_batches}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.skipped_batches = state.get("skipped_batches", 0)

    def delta(self, step: int) -> int:
        """Tokens sampled at the end of each sequence at `step`."""
        growth = self.config.delta_growth
        return self.config.delta + (step // growth if growth else 0)

    def loss(self, model, batch, step: int) -> StepOutput:
        config = self.config
        if self.decode is None or self.reward is None:
            raise UnforcedError("mixer needs a decoder and a reward: call strategy.bind(task) before training")
        delta = self.delta(step)
        logs: dict[str, float] = {"delta": float(delta), "skipped_batch": 0.0}
        memory = model.encode(batch.source, batch.source_mask)
        samples = config.samples
        prefix = ((batch.gold != PAD).sum(1) - delta).clamp(min=0)  # (batch,) gold tokens fed first
        prefix_k = prefix.repeat_interleave(samples)  # (batch * K,)
        memory_k = repeat_rows(memory, samples)  # (batch * K, ...), keeps the graph to the encoder
        max_len = max(decode_budget(config, model, batch.gold.shape[1]), int(prefix.max()) + 1)
        with torch.no_grad():
            drawn = rollout(model, memory_k, Prefix(prefix_k, Sample(config.temperature, config.top_k)),
                            gold=batch.gold.repeat_interleave(samples, 0), max_len=max_len,
                            generator=self.generator, keep_hidden=False, keep_logits=False)
            tokens, mask = drawn.tokens, drawn.mask  # (batch * K, time): gold prefix, then samples, to <eos>
            greedy_tokens = None
            if config.baseline == "greedy":
                greedy_tokens = rollout(model, memory, Prefix(prefix, Greedy()), gold=batch.gold, max_len=max_len,
                                        keep_hidden=False, keep_logits=False).tokens
        scores, message = score_samples(self, tokens, greedy_tokens, batch.references)
        if scores is None:
            return skipped_batch(self, logs, message)

        forced_logits = model.forced(memory_k, shifted(tokens)).logits  # (batch * K, time, vocab)
        positions = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        gold_part = mask & (positions < prefix_k[:, None].to(tokens.device))
        sampled_part = mask & ~gold_part
        loss, extra = policy_gradient(forced_logits, tokens, sampled_part, scores.advantage, config.temperature,
                                      config.entropy_bonus)
        logs.update(extra)
        if bool(gold_part.any()):
            prefix_nll = token_nll(forced_logits, tokens, gold_part)
            loss = loss + prefix_nll
            logs["prefix_nll"] = float(prefix_nll.detach())
        logs.update(scores.logs(), sample_length=float(mask.sum(1).float().mean()),
                    sampled_share=float(sampled_part.sum() / mask.sum().clamp(min=1)))
        return StepOutput(loss=loss, logs=logs)


__all__ = ["Mixer", "MixerConfig"]
