"""REINFORCE on a sequence reward (Williams 1992), as self-critical sequence training (Rennie et al. 2017).

Sample K outputs per source from the model's own softmax, score them with a sequence reward, and raise the
log-probability of the samples that beat a baseline:

    loss_RL = -1/(B K) sum_i sum_k (r_ik - b_ik) * sum_{t <= first <eos>} log p(y_ikt | y_ik<t, x_i)

The baseline b is the reward of the model's own greedy decode ("greedy": self-critical, Rennie et al. 2017), the
mean of the K samples' rewards ("mean"), the mean of the other K - 1 ("leave_one_out": RLOO, Kool et al. 2019),
or 0 ("none"). Sampling and the greedy decode run without gradient; one `forced` pass over the samples carries
it. MIXER (Ranzato et al. 2016) trains the first T - delta tokens with cross-entropy on gold and the rest on
the reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.models import repeat_rows
from unforced.rewards import REWARDS, Reward, get_reward, safe_reward
from unforced.rollout import Greedy, Sample, rollout, sample_tokens
from unforced.schedules import make_schedule
from unforced.strategies.base import StepOutput, generator_for, token_nll
from unforced.vocab import BOS, EOS, PAD

BASELINES = ("greedy", "mean", "leave_one_out", "none")


@dataclass
class ReinforceConfig:
    """Parameters of REINFORCE / self-critical sequence training.

    > Parameters that control the reward

    reward (str, default "bleu"): a name in `unforced.rewards.REWARDS` ("bleu", "chrf", "cider_d", "exact_match",
        "neg_wer", ...). The strategy never sees the task, so the default cannot be "the task's metric"; the
        experiment passes the task metric through `Reinforce.bind(task)` when the user gave no reward (`None`).
    baseline (str, default "greedy"): what is subtracted from each sample's reward. "greedy": the reward of the
        model's greedy decode of the same source (self-critical, Rennie et al. 2017); "mean": the mean reward of
        the K samples; "leave_one_out": the mean reward of the other K - 1 samples (RLOO, Kool et al. 2019,
        unbiased); "none": no baseline (plain REINFORCE, Williams 1992; high variance).
    normalize_advantage (bool, default False): divide the advantages by their standard deviation over the batch
        (plus 1e-8), as PPO-style trainers do; SCST leaves them raw.

    > Parameters that control generation

    samples (int, default 5): K, samples drawn per source (Rennie et al. 2017 use 1 with the greedy baseline;
        Kool et al. 2019 use 4 with leave-one-out; "mean" and "leave_one_out" need at least 2).
    temperature (float, default 1.0): samples come from softmax(logits / temperature); the log-probabilities
        that are reinforced are those of this tempered distribution (the policy that sampled).
    top_k (int or None, default None): sample only among the k most probable tokens (the gradient still uses
        the full tempered softmax: a small bias, as in most SCST code).
    max_len (int or None, default None): decode at most this many tokens; None means
        ceil(gold width * max_len_factor) + 5, capped at the model's `max_target_len`. A sample that never
        emits <eos> within it is scored as it is.
    max_len_factor (float, default 1.5): see `max_len`.

    > Parameters that control the loss

    rl_weight (float in [0, 1], default 1.0): w in loss = (1 - w) * CE(gold) + w * RL. 1 is pure reward
        training, 0 is teacher forcing (Paulus et al. 2018 mix with w = 0.9984 on summarisation).
    rl_weight_schedule (dict or None, default None): {"name": <a name in `unforced.schedules.SCHEDULES`>,
        **parameters}; replaces `rl_weight` by schedule(step). Those schedules are documented as
        teacher-forcing ratios; here the same shapes give w, the weight of the reward term (e.g.
        {"name": "linear", "start": 0.0, "end": 1.0, "steps": 1000} moves from cross-entropy to reward).
    entropy_bonus (float, default 0.0): beta in loss_RL - beta * H, H the mean entropy of the model's tempered
        distribution over the sampled positions; a small value (1e-3) delays collapse to one output.
    mixer_delta (int or None, default None): MIXER (Ranzato et al. 2016): each sample is fed the gold tokens for
        its first T - delta steps (T its gold length with <eos>) and samples the rest; those first tokens get
        cross-entropy, the sampled rest the reward of the whole sequence, and the greedy baseline continues
        from the same gold prefix. The loss is then (1 - w) * CE(gold) + w * (CE(prefix) + RL(suffix)).
    mixer_delta_growth (int or None, default None): steps after which delta grows by 1 (Ranzato et al. grow
        it every few epochs until the whole sequence is sampled); None keeps delta fixed.
    """

    reward: str | None = "bleu"
    baseline: str = "greedy"
    normalize_advantage: bool = False
    samples: int = 5
    temperature: float = 1.0
    top_k: int | None = None
    max_len: int | None = None
    max_len_factor: float = 1.5
    rl_weight: float = 1.0
    rl_weight_schedule: dict[str, Any] | None = field(default=None)
    entropy_bonus: float = 0.0
    mixer_delta: int | None = None
    mixer_delta_growth: int | None = None

    def __post_init__(self):
        if self.reward is not None:
            key = str(self.reward).strip().lower().replace("-", "_")
            if key not in REWARDS:
                raise UnforcedError(f"reinforce.reward: unknown reward {self.reward!r}; known: "
                                    f"{', '.join(sorted(REWARDS))}")
        if self.baseline not in BASELINES:
            raise UnforcedError(f"reinforce.baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.samples < 1:
            raise UnforcedError(f"reinforce.samples must be at least 1, got {self.samples}")
        if self.baseline in ("mean", "leave_one_out") and self.samples < 2:
            raise UnforcedError(f"reinforce.samples must be at least 2 with baseline {self.baseline!r}, "
                                f"got {self.samples}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UnforcedError(f"reinforce.temperature must be a positive number, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise UnforcedError(f"reinforce.top_k must be at least 1, got {self.top_k}")
        if self.max_len is not None and self.max_len < 1:
            raise UnforcedError(f"reinforce.max_len must be at least 1, got {self.max_len}")
        if not (self.max_len_factor > 0 and math.isfinite(self.max_len_factor)):
            raise UnforcedError(f"reinforce.max_len_factor must be a positive number, got {self.max_len_factor}")
        if not 0.0 <= self.rl_weight <= 1.0:
            raise UnforcedError(f"reinforce.rl_weight must be in [0, 1], got {self.rl_weight}")
        if self.rl_weight_schedule is not None:
            options = dict(self.rl_weight_schedule)
            name = options.pop("name", None)
            if not isinstance(name, str):
                raise UnforcedError("reinforce.rl_weight_schedule needs a 'name' string (e.g. 'linear')")
            try:
                make_schedule(name, **options)
            except (UnforcedError, TypeError, ValueError) as error:
                raise UnforcedError(f"reinforce.rl_weight_schedule: {error}") from None
        if not (self.entropy_bonus >= 0 and math.isfinite(self.entropy_bonus)):
            raise UnforcedError(f"reinforce.entropy_bonus must be a non-negative number, got {self.entropy_bonus}")
        if self.mixer_delta is not None and self.mixer_delta < 0:
            raise UnforcedError(f"reinforce.mixer_delta must not be negative, got {self.mixer_delta}")
        if self.mixer_delta_growth is not None:
            if self.mixer_delta is None:
                raise UnforcedError("reinforce.mixer_delta_growth needs reinforce.mixer_delta")
            if self.mixer_delta_growth < 1:
                raise UnforcedError(f"reinforce.mixer_delta_growth must be at least 1, got {self.mixer_delta_growth}")


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
    log_softmax = (logits.float() / temperature).log_softmax(-1)  # (batch, time, vocab)
    chosen = log_softmax.gather(2, tokens.unsqueeze(-1)).squeeze(-1)  # (batch, time)
    return (chosen * mask).sum(1)


def decoder_and_reward(task, reward):
    """The task's decoder (target ids -> text) and `reward`, or the task's own metric as a reward when it is None
    (CIDEr's document frequencies from the task's training references). Shared by every sampling strategy."""
    tokenizer = task.target_tokenizer
    if reward is None:
        reward = get_reward(task.metric, references_corpus=[[target] for _, target in task.train])
    return (lambda rows: [tokenizer.decode(row) for row in rows]), reward


def decode_budget(config, model, gold_width: int) -> int:
    """Steps to sample: `config.max_len`, else gold width * `config.max_len_factor` + 5, capped at the model's
    longest target."""
    length = config.max_len or math.ceil(gold_width * config.max_len_factor) + 5
    limit = getattr(getattr(model, "config", None), "max_target_len", None)
    return min(length, limit) if limit else length


class Reinforce:
    """Self-critical sequence training and its REINFORCE relatives; see `ReinforceConfig`.

    Call `bind(task)` before training (the experiment does): it sets the decoder from token ids to text (the
    task's target tokenizer) and, when `config.reward` is None, the reward from the task's metric. Without it,
    set `decode` (ids -> strings) and, if needed, `reward` by hand.
    """

    name = "reinforce"

    def __init__(self, config: ReinforceConfig | None = None, seed: int = 0):
        self.config = config or ReinforceConfig()
        self.generator = generator_for(seed)
        self.decode: Callable[[list[list[int]]], list[str]] | None = None
        self.reward: Reward | None = get_reward(self.config.reward) if self.config.reward is not None else None
        self.schedule = None
        if self.config.rl_weight_schedule is not None:
            options = dict(self.config.rl_weight_schedule)
            self.schedule = make_schedule(options.pop("name"), **options)
        self.skipped_batches = 0
        self.last_skip_message: str | None = None

    def bind(self, task) -> Reinforce:
        """Take the decoder from `task.target_tokenizer`, and the reward from `task.metric` if none was set.

        CIDEr's document frequencies come from the task's training references.
        """
        self.decode, self.reward = decoder_and_reward(task, self.reward)
        return self

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "skipped_batches": self.skipped_batches}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.skipped_batches = state.get("skipped_batches", 0)

    def rl_weight(self, step: int) -> float:
        """w at `step`: the schedule's value if there is one, else `config.rl_weight`."""
        return float(self.schedule(step)) if self.schedule is not None else self.config.rl_weight

    def mixer_delta(self, step: int) -> int | None:
        """Tokens sampled at the end of each sequence under MIXER at `step` (None without MIXER)."""
        config = self.config
        if config.mixer_delta is None:
            return None
        return config.mixer_delta + (step // config.mixer_delta_growth if config.mixer_delta_growth else 0)

    def _max_len(self, model, gold_width: int) -> int:
        return decode_budget(self.config, model, gold_width)

    def loss(self, model, batch, step: int) -> StepOutput:
        config = self.config
        weight = self.rl_weight(step)
        memory = model.encode(batch.source, batch.source_mask)
        logs: dict[str, float] = {"rl_weight": weight, "skipped_batch": 0.0}
        cross_entropy = None
        if weight < 1.0:
            logits = model.forced(memory, batch.inputs).logits  # (batch, time, vocab)
            cross_entropy = token_nll(logits, batch.gold, batch.gold_mask)
            logs["nll"] = float(cross_entropy.detach())
            if weight == 0.0:
                return StepOutput(loss=cross_entropy, logs=logs)
        if self.decode is None or self.reward is None:
            raise UnforcedError("reinforce needs a decoder and a reward: call strategy.bind(task) before training")

        rows, samples = len(batch), config.samples
        memory_k = repeat_rows(memory, samples)  # (batch * K, ...), keeps the graph to the encoder
        max_len = self._max_len(model, batch.gold.shape[1])
        sample_feed = Sample(config.temperature, config.top_k)
        delta = self.mixer_delta(step)
        with torch.no_grad():
            if delta is None:
                prefix_k = None
                drawn = rollout(model, memory_k, sample_feed, max_len=max_len, batch_size=rows * samples,
                                generator=self.generator, keep_hidden=False)
                tokens, mask = drawn.tokens, drawn.mask  # (batch * K, time)
                greedy_tokens = None
                if config.baseline == "greedy":
                    greedy_tokens = rollout(model, memory, Greedy(), max_len=max_len, batch_size=rows,
                                            keep_hidden=False).tokens
            else:
                prefix = ((batch.gold != PAD).sum(1) - delta).clamp(min=0)  # (batch,) gold tokens fed first
                prefix_k = prefix.repeat_interleave(samples)
                gold_k = batch.gold.repeat_interleave(samples, 0)
                tokens = _continue(model, memory_k, gold_k, prefix_k, sample_feed, max_len, self.generator)
                mask = _through_first_eos(tokens)
                greedy_tokens = None
                if config.baseline == "greedy":
                    greedy_tokens = _continue(model, memory, batch.gold, prefix, Greedy(), max_len, None)

        references = [refs for refs in batch.references for _ in range(samples)]
        hypotheses = self.decode(tokens.tolist())
        if greedy_tokens is not None:
            references = references + list(batch.references)
            hypotheses = hypotheses + self.decode(greedy_tokens.tolist())
        values, message = safe_reward(self.reward, hypotheses, references)  # one call: reference caches pay
        if values is None:
            # A leaf that needs grad and touches no parameter: backward runs, every .grad stays None, and the
            # optimizer (even AdamW, whose momentum and weight decay would move parameters on a zero gradient)
            # leaves the weights as they were.
            self.skipped_batches += 1
            self.last_skip_message = message
            logs.update(skipped_batch=1.0, skip_message=message)
            return StepOutput(loss=torch.zeros((), requires_grad=True), logs=logs)

        values_t = torch.as_tensor(np.asarray(values), dtype=torch.float32)
        rewards = values_t[: rows * samples].view(rows, samples)  # (batch, K)
        greedy_rewards = values_t[rows * samples:] if greedy_tokens is not None else None
        advantage, base = advantages(rewards, config.baseline, greedy_rewards, config.normalize_advantage)

        # The one pass with gradient: the samples fed back as inputs (<bos>, y_1 .. y_(T-1)).
        device = tokens.device
        inputs = torch.cat([torch.full((tokens.shape[0], 1), BOS, dtype=torch.long, device=device),
                            tokens[:, :-1]], 1)
        forced_logits = model.forced(memory_k, inputs).logits  # (batch * K, time, vocab)
        sampled_mask = mask
        prefix_nll = None
        if prefix_k is not None:
            positions = torch.arange(tokens.shape[1], device=device)[None, :]
            gold_part = mask & (positions < prefix_k[:, None])
            sampled_mask = mask & ~gold_part
            if bool(gold_part.any()):
                prefix_nll = token_nll(forced_logits, tokens, gold_part)
        log_probs = sequence_log_probs(forced_logits, tokens, sampled_mask, config.temperature)  # (batch * K,)
        reinforce = -(advantage.reshape(-1).to(device) * log_probs).mean()
        if config.entropy_bonus:
            tempered = (forced_logits.float() / config.temperature).log_softmax(-1)
            entropy = -(tempered.exp() * tempered).sum(-1)  # (batch * K, time)
            mean_entropy = (entropy * sampled_mask).sum() / sampled_mask.sum().clamp(min=1)
            reinforce = reinforce - config.entropy_bonus * mean_entropy
            logs["entropy"] = float(mean_entropy.detach())
        if prefix_nll is not None:
            reinforce = reinforce + prefix_nll
            logs["prefix_nll"] = float(prefix_nll.detach())
            logs["mixer_delta"] = float(delta)
        loss = reinforce if cross_entropy is None else (1.0 - weight) * cross_entropy + weight * reinforce
        logs.update(reward_mean=float(rewards.mean()), baseline_mean=float(base.mean()),
                    beat_baseline=float((rewards > base).float().mean()),
                    sample_length=float(mask.sum(1).float().mean()))
        if greedy_rewards is not None:
            logs["greedy_reward_mean"] = float(greedy_rewards.mean())
        return StepOutput(loss=loss, logs=logs)


def _continue(model, memory, gold: Tensor, prefix: Tensor, own: Greedy | Sample, max_len: int,
              generator: torch.Generator | None) -> Tensor:
    """(batch, time) tokens: gold for each row's first `prefix` steps, then the model's own choices (MIXER).

    A small loop beside `rollout` because the rollout's `Mix` draws its gold coins at random, and MIXER needs
    them fixed by position. Runs to `max_len` (at least past the longest prefix) or until every row ended.
    """
    rows = gold.shape[0]
    steps = max(max_len, int(prefix.max()) + 1)
    gold = torch.cat([gold, torch.full((rows, max(0, steps - gold.shape[1])), PAD, dtype=gold.dtype,
                                       device=gold.device)], 1)
    state = model.start(memory, rows)
    fed = torch.full((rows,), BOS, dtype=torch.long, device=gold.device)
    done = torch.zeros(rows, dtype=torch.bool, device=gold.device)
    tokens = []
    for t in range(steps):
        logits, _, state = model.step(memory, state, fed)
        choice = sample_tokens(logits, own.temperature, own.top_k, generator) if isinstance(own, Sample) \
            else logits.argmax(-1)
        token = torch.where(t < prefix, gold[:, t], choice)
        tokens.append(token)
        done = done | (token == EOS)
        fed = token
        if bool(done.all()):
            break
    return torch.stack(tokens, 1)


def _through_first_eos(tokens: Tensor) -> Tensor:
    """(batch, time) True up to and including each row's first <eos> (everywhere in a row without one)."""
    is_eos = (tokens == EOS).long()
    before = is_eos.cumsum(1) - is_eos  # <eos> seen strictly before this step
    return before == 0
