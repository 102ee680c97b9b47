"""REINFORCE on a sequence reward (Williams 1992), as self-critical sequence training (Rennie et al. 2017).

Sample K outputs per source from the model's own softmax, score them with a sequence reward, and raise the
log-probability of the samples that beat a baseline:

    loss_RL = -1/(B K) sum_i sum_k (r_ik - b_ik) * sum_{t <= first <eos>} log p(y_ikt | y_ik<t, x_i)

The baseline b is the reward of the model's own greedy decode ("greedy": self-critical, Rennie et al. 2017), the
mean of the K samples' rewards ("mean"), the mean of the other K - 1 ("leave_one_out": RLOO, Kool et al. 2019),
or 0 ("none"). Sampling and the greedy decode run without gradient; one `forced` pass over the samples carries
it. MIXER (Ranzato et al. 2016), which feeds a gold prefix first, is its own strategy (`mixer`) built on the
pieces of sequence_level.py: `score_samples` and `policy_gradient`.

Collapse guard. SCST's users report training that collapses to empty or one-word outputs (an early <eos> that the
baseline stops penalising once greedy is empty too). Each step measures the share of outputs (samples and the
greedy decode) with at most one word, over the sources whose gold has at least two; past `collapse_threshold` the
step is marked (`collapse` in its logs, a warning logged once) and guarded: short outputs get no positive advantage,
and gold cross-entropy is mixed in with weight `collapse_cross_entropy`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.models import repeat_rows
from unforced.rewards import Reward, get_reward
from unforced.rollout import Greedy, Sample, rollout
from unforced.schedules import make_schedule
from unforced.strategies.base import StepOutput, generator_for, token_nll
from unforced.strategies.sequence_level import (
    check_policy_gradient_options,
    decode_budget,
    decoder_and_reward,
    policy_gradient,
    score_samples,
    shifted,
    skipped_batch,
    words,
)

logger = logging.getLogger(__name__)


@dataclass
class ReinforceConfig:
    """Parameters of REINFORCE / self-critical sequence training.

    > Parameters that control the reward

    reward (str or None, default None): a name in `unforced.rewards.REWARDS` ("bleu", "chrf", "cider_d",
        "exact_match", "neg_wer", ...). None: the task's metric, set by `Reinforce.bind(task)` (CIDEr's document
        frequencies from the task's training references).
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

    > Parameters that guard against collapse

    collapse_threshold (float in (0, 1] or None, default 0.5): a step counts as collapsed when at least this share
        of its outputs (the K samples and the greedy decode) have at most one word, counted over the sources whose
        gold has at least two words. It is logged (`collapse` 1.0 in the step's logs, `short_share` always; a
        warning through `logging` the first time) and guarded. None: neither measured nor guarded.
    collapse_cross_entropy (float in [0, 1], default 0.5): c; while collapsed, loss = (1 - c') CE(gold) + c' RL
        with c' = min(w, 1 - c), so gold cross-entropy weighs at least c (Paulus et al. 2018 mix cross-entropy in
        throughout). Short outputs also get no positive advantage while collapsed (min(A, 0)), so the empty output
        is never rewarded. 0: only the advantage cap.
    """

    reward: str | None = None
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
    collapse_threshold: float | None = 0.5
    collapse_cross_entropy: float = 0.5

    def __post_init__(self):
        check_policy_gradient_options(self, "reinforce")
        if self.collapse_threshold is not None and not 0.0 < self.collapse_threshold <= 1.0:
            raise UnforcedError(f"reinforce.collapse_threshold must be in (0, 1] or None, "
                                f"got {self.collapse_threshold}")
        if not 0.0 <= self.collapse_cross_entropy <= 1.0:
            raise UnforcedError(f"reinforce.collapse_cross_entropy must be in [0, 1], "
                                f"got {self.collapse_cross_entropy}")
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


class Reinforce:
    """Self-critical sequence training and its REINFORCE relatives; see `ReinforceConfig`.

    Call `bind(task)` before training (the experiment does): it sets the decoder from token ids to text (the
    task's target tokenizer) and, when `config.reward` is None, the reward from the task's metric. Without it,
    set `decode` (ids -> strings) and, if needed, `reward` by hand.
    """

    name = "reinforce"
    warm_start = True  # fine-tunes a trained model: named alone in a run, it starts from teacher forcing's

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
        self.collapsed_steps = 0  # steps past config.collapse_threshold; the warning is logged at the first

    def bind(self, task) -> Reinforce:
        """Take the decoder from `task.target_tokenizer`, and the reward from `task.metric` if none was set.

        CIDEr's document frequencies come from the task's training references.
        """
        self.decode, self.reward = decoder_and_reward(task, self.reward)
        return self

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "skipped_batches": self.skipped_batches,
                "collapsed_steps": self.collapsed_steps}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.skipped_batches = state.get("skipped_batches", 0)
        self.collapsed_steps = state.get("collapsed_steps", 0)

    def short_share(self, batch, outputs: list[tuple[Tensor, Tensor, int]]) -> float | None:
        """The share of outputs with at most one word over the sources whose gold has two or more; None without
        such sources. outputs: (tokens (batch * k, time), mask, k) with k consecutive rows per source."""
        long_gold = words(batch.gold, batch.gold_mask.bool()) >= 2  # (batch,)
        if not bool(long_gold.any()):
            return None
        short, counted = 0, 0
        for tokens, mask, per_source in outputs:
            eligible = long_gold.to(tokens.device).repeat_interleave(per_source)  # (batch * k,)
            short += int(((words(tokens, mask) <= 1) & eligible).sum())
            counted += int(eligible.sum())
        return short / counted

    def collapse_check(self, batch, outputs, step: int, logs: dict) -> bool:
        """Measure the short-output share into `logs`; True (and a warning the first time) past the threshold."""
        threshold = self.config.collapse_threshold
        if threshold is None:
            return False
        share = self.short_share(batch, outputs)
        collapsed = share is not None and share >= threshold
        logs.update(short_share=share if share is not None else 0.0, collapse=float(collapsed))
        if collapsed:
            if self.collapsed_steps == 0:
                logger.warning("reinforce: collapse at step %d: %.0f%% of outputs are empty or one word long "
                               "(collapse_threshold %.2f); guarding: no positive advantage for them, gold "
                               "cross-entropy weight %.2f; logged as 'collapse' in the metrics from now on",
                               step, 100 * share, threshold, self.config.collapse_cross_entropy)
            self.collapsed_steps += 1
        return collapsed

    def rl_weight(self, step: int) -> float:
        """w at `step`: the schedule's value if there is one, else `config.rl_weight`."""
        return float(self.schedule(step)) if self.schedule is not None else self.config.rl_weight

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
        max_len = decode_budget(config, model, batch.gold.shape[1])
        with torch.no_grad():
            drawn = rollout(model, memory_k, Sample(config.temperature, config.top_k), max_len=max_len,
                            batch_size=rows * samples, generator=self.generator, keep_hidden=False,
                            keep_logits=False)
            tokens, mask = drawn.tokens, drawn.mask  # (batch * K, time), mask through the first <eos>
            outputs = [(tokens, mask, samples)]
            greedy_tokens = None
            if config.baseline == "greedy":
                greedy = rollout(model, memory, Greedy(), max_len=max_len, batch_size=rows, keep_hidden=False,
                                 keep_logits=False)
                greedy_tokens = greedy.tokens
                outputs.append((greedy.tokens, greedy.mask, 1))
        scores, message = score_samples(self, tokens, greedy_tokens, batch.references)
        if scores is None:
            return skipped_batch(self, logs, message)
        advantage = scores.advantage
        if self.collapse_check(batch, outputs, step, logs):
            # No positive advantage for an output of at most one word, and at least c of gold cross-entropy.
            short = (words(tokens, mask) <= 1).view(rows, samples)
            advantage = torch.where(short, advantage.clamp(max=0.0), advantage)
            if config.collapse_cross_entropy > 0.0:
                weight = min(weight, 1.0 - config.collapse_cross_entropy)
                logs["rl_weight"] = weight
                if cross_entropy is None:
                    logits = model.forced(memory, batch.inputs).logits  # (batch, time, vocab)
                    cross_entropy = token_nll(logits, batch.gold, batch.gold_mask)
                    logs["nll"] = float(cross_entropy.detach())

        # The one pass with gradient: the samples fed back as inputs (<bos>, y_1 .. y_(T-1)).
        forced_logits = model.forced(memory_k, shifted(tokens)).logits  # (batch * K, time, vocab)
        reinforce, extra = policy_gradient(forced_logits, tokens, mask, advantage, config.temperature,
                                           config.entropy_bonus)
        logs.update(extra)
        loss = reinforce if cross_entropy is None else (1.0 - weight) * cross_entropy + weight * reinforce
        logs.update(scores.logs(), sample_length=float(mask.sum(1).float().mean()))
        return StepOutput(loss=loss, logs=logs)
