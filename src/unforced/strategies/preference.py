"""Online preference optimisation: DPO (Rafailov et al. 2023) on pairs the model samples and a reward ranks.

Sample K outputs per source from the model, rank them with a sequence reward, and take the best and the worst
as (chosen y_c, rejected y_r), as online AI feedback does (Guo et al. 2024; SPIN, Chen et al. 2024, plays the
gold against the model's own). The DPO loss raises the chosen sequence's log-probability relative to a frozen
reference policy (the model at the first step) and lowers the rejected one's:

    margin_i = beta * ((log pi(y_ic|x_i) - log pi_ref(y_ic|x_i)) - (log pi(y_ir|x_i) - log pi_ref(y_ir|x_i)))
    loss_DPO = -1/P sum_i log sigmoid(margin_i)

over the P sources whose best and worst rewards differ. beta * log pi/pi_ref is the implicit reward; at the
start (pi = pi_ref) every pair's loss is log 2.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.models import repeat_rows, select_rows
from unforced.rewards import Reward, get_reward, safe_reward
from unforced.rollout import Sample, rollout
from unforced.strategies.base import StepOutput, generator_for, token_nll
from unforced.strategies.sequence_level import (
    check_reward_name,
    check_sampling_options,
    decode_budget,
    decoder_and_reward,
    sequence_log_probs,
    shifted,
    skipped_batch,
)

PAIRINGS = ("best_worst",)


@dataclass
class PreferenceConfig:
    """Parameters of online DPO on sampled, reward-ranked pairs.

    > Parameters that control the reward

    reward (str or None, default None): a name in `unforced.rewards.REWARDS` ("bleu", "chrf", "exact_match",
        "neg_wer", ...) that ranks the samples. None: the task's metric, set by `Preference.bind(task)`.
    pairs (str, default "best_worst"): how pairs are made from the K ranked samples. "best_worst": per source,
        the highest-reward sample is chosen and the lowest rejected (Guo et al. 2024 rank two; more samples
        widen the gap); a source whose best and worst rewards tie gives no pair.

    > Parameters that control generation

    samples (int, default 4): K >= 2, samples drawn per source from the model's own softmax.
    temperature (float, default 1.0): samples come from softmax(logits / temperature). Only the sampling is
        tempered: the log-probabilities in the loss are the untempered model's and reference's, as in DPO.
    top_k (int or None, default None): sample only among the k most probable tokens.
    max_len (int or None, default None): decode at most this many tokens; None means
        ceil(gold width * max_len_factor) + 5, capped at the model's `max_target_len` (as reinforce).
    max_len_factor (float, default 1.5): see `max_len`.

    > Parameters that control the loss

    beta (float, default 0.1): the DPO temperature, the strength of the implicit KL pull to the reference
        (Rafailov et al. 2023 use 0.1 to 0.5; smaller lets the policy drift further).
    ce_weight (float in [0, 1), default 0.0): w in loss = (1 - w) * DPO + w * CE(gold); a little cross-entropy
        on the gold keeps the chosen sequences' likelihood from falling with the rejected ones'
        (Pang et al. 2024 add an NLL term for this).
    """

    reward: str | None = None
    pairs: str = "best_worst"
    samples: int = 4
    temperature: float = 1.0
    top_k: int | None = None
    max_len: int | None = None
    max_len_factor: float = 1.5
    beta: float = 0.1
    ce_weight: float = 0.0

    def __post_init__(self):
        check_reward_name(self.reward, "preference")
        if self.pairs not in PAIRINGS:
            raise UnforcedError(f"preference.pairs must be one of {', '.join(PAIRINGS)}, got {self.pairs!r}")
        if self.samples < 2:
            raise UnforcedError(f"preference.samples must be at least 2 (a pair), got {self.samples}")
        check_sampling_options(self, "preference")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise UnforcedError(f"preference.beta must be a positive number, got {self.beta}")
        if not 0.0 <= self.ce_weight < 1.0:
            raise UnforcedError(f"preference.ce_weight must be in [0, 1), got {self.ce_weight}")


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor,
             beta: float) -> tuple[Tensor, Tensor]:
    """(mean loss, margins (pairs,)) of DPO on sequence log-probs, each (pairs,).

        margin_i = beta * ((pi_c - ref_c) - (pi_r - ref_r)),   loss = -mean_i log sigmoid(margin_i)
    """
    margins = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margins).mean(), margins


@contextlib.contextmanager
def dropout_off(model) -> Iterator[None]:
    """The policy's passes without dropout (its mode restored after), as TRL's DPO trainer does by default
    (`disable_dropout`): the frozen reference runs in eval mode, so a policy with dropout would score its own
    weights below the reference's and every margin would start biased below 0. Gradients flow as in training."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def frozen_copy(model, weights: dict | None = None):
    """A deep copy of `model` in eval mode with no gradient (a reference policy), holding `weights` if given
    (a checkpoint's reference), else the model's own."""
    reference = copy.deepcopy(model)
    if weights is not None:
        reference.load_state_dict(weights)
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    return reference


def best_worst_pairs(rewards: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sources, chosen, rejected), each (pairs,): per row of rewards (batch, K), its argmax and argmin sample.

    Rows whose best and worst rewards tie are left out; ties within a row go to the first sample.
    """
    chosen, rejected = rewards.argmax(1), rewards.argmin(1)
    rows = torch.arange(rewards.shape[0])
    keep = rewards[rows, chosen] > rewards[rows, rejected]
    return rows[keep], chosen[keep], rejected[keep]


class Preference:
    """Online DPO against a frozen reference; see `PreferenceConfig`.

    The reference is a deep copy of the model taken at the first `loss` call (eval mode, no gradient): the
    starting model of this phase, so a warm start or an earlier phase sets it. `state_dict` carries its weights,
    so a resumed run compares with the same reference (the checkpoint holds the weights twice); `load_state_dict`
    keeps them until the next `loss`, which copies the live model's architecture and loads them into it.
    The reference runs in eval mode; with dropout the training policy differs from it even at the first step,
    so the first loss is log 2 only without dropout.

    Call `bind(task)` before training (the experiment does): it sets the decoder and, when `config.reward` is
    None, the reward from the task's metric, as for reinforce.
    """

    name = "preference"
    warm_start = True  # fine-tunes a trained model: named alone in a run, it starts from teacher forcing's

    def __init__(self, config: PreferenceConfig | None = None, seed: int = 0):
        self.config = config or PreferenceConfig()
        self.generator = generator_for(seed)
        self.decode: Callable[[list[list[int]]], list[str]] | None = None
        self.reward: Reward | None = get_reward(self.config.reward) if self.config.reward is not None else None
        self.reference = None
        self._reference_weights: dict | None = None  # loaded before the model is known; used at the next loss
        self.skipped_batches = 0
        self.last_skip_message: str | None = None

    def bind(self, task) -> Preference:
        """Take the decoder from `task.target_tokenizer`, and the reward from `task.metric` if none was set."""
        self.decode, self.reward = decoder_and_reward(task, self.reward)
        return self

    def state_dict(self) -> dict:
        reference = self.reference.state_dict() if self.reference is not None else self._reference_weights
        return {"generator": self.generator.get_state(), "skipped_batches": self.skipped_batches,
                "reference": reference}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.skipped_batches = state.get("skipped_batches", 0)
        weights = state.get("reference")
        if weights is not None and self.reference is not None:
            self.reference.load_state_dict(weights)
        else:
            self._reference_weights = weights

    def _freeze_reference(self, model) -> None:
        self.reference = frozen_copy(model, self._reference_weights)
        self._reference_weights = None

    def loss(self, model, batch, step: int) -> StepOutput:
        with dropout_off(model):
            return self._loss(model, batch, step)

    def _loss(self, model, batch, step: int) -> StepOutput:
        config = self.config
        if self.decode is None or self.reward is None:
            raise UnforcedError("preference needs a decoder and a reward: call strategy.bind(task) before "
                                "training")
        if self.reference is None:
            self._freeze_reference(model)
        logs: dict[str, float] = {"skipped_batch": 0.0}
        memory = model.encode(batch.source, batch.source_mask)
        cross_entropy = None
        if config.ce_weight > 0:
            cross_entropy = token_nll(model.forced(memory, batch.inputs).logits, batch.gold, batch.gold_mask)
            logs["nll"] = float(cross_entropy.detach())

        rows, samples = len(batch), config.samples
        max_len = decode_budget(self.config, model, batch.gold.shape[1])
        with torch.no_grad():
            drawn = rollout(model, repeat_rows(memory, samples), Sample(config.temperature, config.top_k),
                            max_len=max_len, batch_size=rows * samples, generator=self.generator,
                            keep_hidden=False)
        tokens, mask = drawn.tokens, drawn.mask  # (batch * K, time), mask through the first <eos>
        references = [refs for refs in batch.references for _ in range(samples)]
        values, message = safe_reward(self.reward, self.decode(tokens.tolist()), references)
        if values is None:  # as reinforce: a leaf touching no parameter leaves every weight (and AdamW) as it was
            return skipped_batch(self, logs, message)
        rewards = torch.as_tensor(np.asarray(values), dtype=torch.float32).view(rows, samples)  # (batch, K)
        sources, chosen, rejected = best_worst_pairs(rewards)
        pairs = len(sources)
        logs.update(reward_mean=float(rewards.mean()), pairs_used=float(pairs),
                    sample_length=float(mask.sum(1).float().mean()))
        if pairs == 0:
            no_pair = torch.zeros((), requires_grad=True)  # as a skipped batch: no parameter moves
            loss = no_pair if cross_entropy is None else config.ce_weight * cross_entropy
            return StepOutput(loss=loss, logs=logs)

        # Chosen rows first, then rejected: one forced pass each for the policy (with gradient) and the reference.
        device = tokens.device
        picked = torch.cat([sources * samples + chosen, sources * samples + rejected]).to(device)  # (2P,)
        pair_tokens, pair_mask = tokens[picked], mask[picked]  # (2P, time)
        inputs = shifted(pair_tokens)
        source_rows = torch.cat([sources, sources]).to(device)
        policy_logits = model.forced(select_rows(memory, source_rows), inputs).logits  # (2P, time, vocab)
        policy = sequence_log_probs(policy_logits, pair_tokens, pair_mask)  # (2P,)
        with torch.no_grad():
            reference_memory = self.reference.encode(batch.source, batch.source_mask)
            reference_logits = self.reference.forced(select_rows(reference_memory, source_rows), inputs).logits
            reference = sequence_log_probs(reference_logits, pair_tokens, pair_mask)
        dpo, margins = dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:], config.beta)
        loss = dpo if cross_entropy is None else (1.0 - config.ce_weight) * dpo + config.ce_weight * cross_entropy
        logs.update(dpo=float(dpo.detach()), dpo_margin=float(margins.detach().mean()),
                    accuracy=float((margins > 0).float().mean()),
                    reward_chosen=float(rewards[sources, chosen].mean()),
                    reward_rejected=float(rewards[sources, rejected].mean()))
        return StepOutput(loss=loss, logs=logs)
