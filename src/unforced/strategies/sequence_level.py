"""The pieces every sequence-level strategy shares (reinforce, mixer, minimum_risk, preference, spin,
self_training, cycle_consistency): their option checks, the baselines and advantages of REINFORCE, the summed
log-probability of a sampled sequence, the reward call over samples and greedy decode, the policy-gradient loss,
and the step that skips a batch whose reward failed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.rewards import REWARDS, get_reward, safe_reward
from unforced.strategies.base import StepOutput
from unforced.vocab import BOS, EOS, PAD

BASELINES = ("greedy", "mean", "leave_one_out", "none")


def check_sampling_options(config, prefix: str) -> None:
    """Check the sampling options that reinforce, mixer, preference and spin share (temperature, top_k, max_len,
    max_len_factor); errors name the field."""
    if not (config.temperature > 0 and math.isfinite(config.temperature)):
        raise UnforcedError(f"{prefix}.temperature must be a positive number, got {config.temperature}")
    if config.top_k is not None and config.top_k < 1:
        raise UnforcedError(f"{prefix}.top_k must be at least 1, got {config.top_k}")
    if config.max_len is not None and config.max_len < 1:
        raise UnforcedError(f"{prefix}.max_len must be at least 1, got {config.max_len}")
    if not (config.max_len_factor > 0 and math.isfinite(config.max_len_factor)):
        raise UnforcedError(f"{prefix}.max_len_factor must be a positive number, got {config.max_len_factor}")


def check_reward_name(reward: str | None, prefix: str) -> None:
    """A reward option names a registered reward, or is None (the task's metric); the error names the field."""
    if reward is not None:
        key = str(reward).strip().lower().replace("-", "_")
        if key not in REWARDS:
            raise UnforcedError(f"{prefix}.reward: unknown reward {reward!r}; known: {', '.join(sorted(REWARDS))}")


def check_policy_gradient_options(config, prefix: str) -> None:
    """Check the reward, baseline and sampling options that reinforce and mixer share; errors name the field."""
    check_reward_name(config.reward, prefix)
    if config.baseline not in BASELINES:
        raise UnforcedError(f"{prefix}.baseline must be one of {', '.join(BASELINES)}, got {config.baseline!r}")
    if config.samples < 1:
        raise UnforcedError(f"{prefix}.samples must be at least 1, got {config.samples}")
    if config.baseline in ("mean", "leave_one_out") and config.samples < 2:
        raise UnforcedError(f"{prefix}.samples must be at least 2 with baseline {config.baseline!r}, "
                            f"got {config.samples}")
    check_sampling_options(config, prefix)
    if not (config.entropy_bonus >= 0 and math.isfinite(config.entropy_bonus)):
        raise UnforcedError(f"{prefix}.entropy_bonus must be a non-negative number, got {config.entropy_bonus}")


def advantages(rewards: Tensor, baseline: str, greedy_rewards: Tensor | None = None,
               normalize: bool = False) -> tuple[Tensor, Tensor]:
    """(advantages, baselines), both (batch, K), from sample rewards (batch, K).

        greedy:         A_ik = r_ik - r_i^greedy
        mean:           A_ik = r_ik - 1/K sum_j r_ij
        leave_one_out:  A_ik = r_ik - 1/(K-1) sum_{j != k} r_ij
        none:           A_ik = r_ik

    With `normalize`, A / (std(A over the batch) + 1e-8).
    """
    samples = rewards.shape[1]
    if baseline == "greedy":
        if greedy_rewards is None:
            raise UnforcedError("the greedy baseline needs the greedy decode's rewards")
        base = greedy_rewards[:, None].expand_as(rewards)
    elif baseline == "mean":
        base = rewards.mean(1, keepdim=True).expand_as(rewards)
    elif baseline == "leave_one_out":
        if samples < 2:
            raise UnforcedError("the leave-one-out baseline needs at least 2 samples")
        base = (rewards.sum(1, keepdim=True) - rewards) / (samples - 1)
    elif baseline == "none":
        base = torch.zeros_like(rewards)
    else:
        raise UnforcedError(f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}")
    advantage = rewards - base
    if normalize and advantage.numel() > 1:
        advantage = advantage / (advantage.std() + 1e-8)
    return advantage, base


def sequence_log_probs(logits: Tensor, tokens: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """(batch,) sum over the masked steps of log softmax(logits / temperature) at `tokens`.

    The mask runs up to and including the first <eos>: the end of the sequence is a decision that is rewarded
    like any other (leaving it out rewards truncated outputs, a known SCST pitfall).
    """
    scaled = logits.float() if temperature == 1.0 else logits.float() / temperature  # (batch, time, vocab)
    # cross_entropy fuses log_softmax and the gather, forward and backward: no (batch, time, vocab) log-softmax kept.
    chosen = -torch.nn.functional.cross_entropy(scaled.flatten(0, 1), tokens.flatten(), reduction="none")
    return (chosen.view(tokens.shape) * mask).sum(1)


def decoder_and_reward(task, reward):
    """The task's decoder (target ids -> text) and `reward`, or the task's own metric as a reward when it is None
    (CIDEr's document frequencies from the task's training references). Shared by every sampling strategy."""
    tokenizer = task.target_tokenizer
    if reward is None:
        reward = get_reward(task.metric, references_corpus=task.references_corpus("train"))
    return (lambda rows: [tokenizer.decode(row) for row in rows]), reward


def decode_budget(config, model, gold_width: int) -> int:
    """Steps to sample: `config.max_len`, else gold width * `config.max_len_factor` + 5, capped at the model's
    longest target."""
    length = config.max_len or math.ceil(gold_width * config.max_len_factor) + 5
    limit = getattr(getattr(model, "config", None), "max_target_len", None)
    return min(length, limit) if limit else length


def shifted(tokens: Tensor) -> Tensor:
    """The inputs that feed `tokens` back: <bos>, y_1 .. y_(T-1)."""
    bos = torch.full((tokens.shape[0], 1), BOS, dtype=torch.long, device=tokens.device)
    return torch.cat([bos, tokens[:, :-1]], 1)


def skipped_batch(strategy, logs: dict, message: str) -> StepOutput:
    """The step of a batch whose reward failed: counted and logged, and a loss that moves no parameter.

    A leaf that needs grad and touches no parameter: backward runs, every .grad stays None, and the optimizer
    (even AdamW, whose momentum and weight decay would move parameters on a zero gradient) leaves the weights as
    they were.
    """
    strategy.skipped_batches += 1
    strategy.last_skip_message = message
    logs.update(skipped_batch=1.0, skip_message=message)
    return StepOutput(loss=torch.zeros((), requires_grad=True), logs=logs)


@dataclass
class Scores:
    """A batch's sample rewards, the baseline and the advantages (`advantages`), K samples per source."""

    rewards: Tensor  # (batch, K)
    greedy: Tensor | None  # (batch,) the greedy decode's rewards, or None
    advantage: Tensor  # (batch, K)
    baseline: Tensor  # (batch, K)

    def logs(self) -> dict[str, float]:
        logs = {"reward_mean": float(self.rewards.mean()), "baseline_mean": float(self.baseline.mean()),
                "beat_baseline": float((self.rewards > self.baseline).float().mean())}
        if self.greedy is not None:
            logs["greedy_reward_mean"] = float(self.greedy.mean())
        return logs


def score_samples(strategy, tokens: Tensor, greedy_tokens: Tensor | None,
                  references: list[list[str]]) -> tuple[Scores | None, str | None]:
    """(Scores, None), or (None, message) if the reward failed.

    tokens: (batch * K, time) the samples, K = `strategy.config.samples` consecutive rows per source;
    greedy_tokens: (batch, time) or None. One reward call scores both (reference caches pay off); `strategy` gives
    `decode`, `reward` and the config's `samples`, `baseline` and `normalize_advantage`.
    """
    config = strategy.config
    rows, samples = len(references), config.samples
    hypotheses = strategy.decode(tokens.tolist())
    every_reference = [refs for refs in references for _ in range(samples)]
    if greedy_tokens is not None:
        every_reference = every_reference + list(references)
        hypotheses = hypotheses + strategy.decode(greedy_tokens.tolist())
    values, message = safe_reward(strategy.reward, hypotheses, every_reference)
    if values is None:
        return None, message
    values_t = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    rewards = values_t[: rows * samples].view(rows, samples)
    greedy = values_t[rows * samples:] if greedy_tokens is not None else None
    advantage, base = advantages(rewards, config.baseline, greedy, config.normalize_advantage)
    return Scores(rewards=rewards, greedy=greedy, advantage=advantage, baseline=base), None


def words(tokens: Tensor, mask: Tensor) -> Tensor:
    """(N,) tokens before the first <eos>: the output's length in tokens, <eos> and padding not counted."""
    return (mask & (tokens != EOS) & (tokens != PAD)).sum(1)


def policy_gradient(logits: Tensor, tokens: Tensor, mask: Tensor, advantage: Tensor, temperature: float,
                    entropy_bonus: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """-1/N sum_n A_n * sum_{t in mask} log p(y_nt) (tempered), minus entropy_bonus * mean entropy; and its logs.

    logits: (N, time, vocab) of the forced pass over `tokens` (N, time), with gradient; advantage: (N,).
    """
    log_probs = sequence_log_probs(logits, tokens, mask, temperature)  # (N,)
    loss = -(advantage.reshape(-1).to(logits.device) * log_probs).mean()
    logs: dict[str, float] = {}
    if entropy_bonus:
        tempered = (logits.float() / temperature).log_softmax(-1)
        entropy = -(tempered.exp() * tempered).sum(-1)  # (N, time)
        mean_entropy = (entropy * mask).sum() / mask.sum().clamp(min=1)
        loss = loss - entropy_bonus * mean_entropy
        logs["entropy"] = float(mean_entropy.detach())
    return loss, logs


__all__ = ["BASELINES", "Scores", "advantages", "check_policy_gradient_options", "check_reward_name",
           "check_sampling_options", "decode_budget", "decoder_and_reward", "policy_gradient",
           "score_samples", "sequence_log_probs", "shifted", "skipped_batch", "words"]
