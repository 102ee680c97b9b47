"""Small probes of why teacher forcing falls short: where its gradient never reaches, how far the model's own
prefixes stray from the data, and when the free-running metric dips during training.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch
from torch import Tensor, nn

from unforced.errors import UnforcedError
from unforced.models.base import Forced
from unforced.rollout import Mix, Sample, rollout
from unforced.tasks.base import Task
from unforced.vocab import BOS, EOS


class BigramModel(nn.Module):
    """A tabular bigram decoder keeping the Model contract: logits = table[previous token], no source, no state.

    The smallest model where "which contexts does the loss ever see" is exact: row v of the table is the model's
    whole behaviour after token v.
    """

    def __init__(self, vocab: int, scale: float = 0.1, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(scale * torch.randn(vocab, vocab, generator=generator))  # (previous, next)

    def encode(self, source: Tensor, source_mask: Tensor) -> None:
        return None

    def forced(self, memory, inputs: Tensor, embeddings: Tensor | None = None) -> Forced:
        logits = self.table[inputs]  # (batch, time, vocab)
        return Forced(logits=logits, hidden=logits)

    def start(self, memory, batch_size: int) -> None:
        return None

    def step(self, memory, state, tokens: Tensor):
        logits = self.table[tokens]  # (batch, vocab)
        return logits, logits, None

    def embed(self, tokens: Tensor) -> Tensor:
        return self.table[tokens]

    def output_embedding(self) -> Tensor:
        return self.table


def zero_gradient_probe(symbols: int = 3, extra_tokens: int = 3, size: int = 60, length: int = 5,
                        gold_ratio: float = 0.5, seed: int = 0) -> dict:
    """Teacher forcing gives exactly zero gradient to contexts off the gold path; scheduled sampling does not.

    A bigram table over the copy task's vocabulary plus `extra_tokens` ids that no gold sequence holds. The
    off-gold-path rows are the tokens never fed as a gold input at a scored position. Three losses on the same
    training batch, each the gold-token NLL over the gold mask unless said otherwise:
        teacher forcing       forced pass on the gold inputs;
        scheduled sampling    a Mix(gold_ratio, Sample()) rollout (the teacher-forcing ratio is the gold share);
        reinforce             a Sample() rollout, loss = -reward * sum log p(own tokens), reward = share of own
                              tokens equal to gold (no baseline: the probe asks where gradient lands).
    Returns the number of off-path rows and, per loss, the largest |gradient| on them.
    """
    from unforced.tasks import get_task

    task = get_task("copy", size=size, length=length, symbols=symbols, seed=seed)
    vocab = task.target_tokenizer.vocab_size + extra_tokens
    model = BigramModel(vocab, seed=seed)
    batch = task.collate(task.train)
    mask = batch.gold_mask.float()  # (batch, time)
    on_path = torch.zeros(vocab, dtype=torch.bool)
    on_path[batch.inputs[batch.gold_mask].unique()] = True
    off_path = ~on_path
    generator = torch.Generator().manual_seed(seed)

    def off_path_gradient(loss: Tensor) -> float:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return float(model.table.grad[off_path].abs().max())

    def gold_nll(logits: Tensor) -> Tensor:
        nll = -logits.log_softmax(-1).gather(2, batch.gold.unsqueeze(-1)).squeeze(-1)
        return (nll * mask).sum() / mask.sum()

    teacher_forced = off_path_gradient(gold_nll(model.forced(None, batch.inputs).logits))
    mixed = rollout(model, None, Mix(gold_ratio, Sample(), per="token"), gold=batch.gold, generator=generator,
                    stop_at_eos=False, keep_hidden=False)
    scheduled = off_path_gradient(gold_nll(mixed.logits))
    sampled = rollout(model, None, Sample(), max_len=batch.gold.shape[1], batch_size=len(batch),
                      generator=generator, stop_at_eos=False, keep_hidden=False)
    own_log_probs = sampled.logits.log_softmax(-1).gather(2, sampled.tokens.unsqueeze(-1)).squeeze(-1)
    reward = ((sampled.tokens == batch.gold).float() * mask).sum(1) / mask.sum(1)  # (batch,)
    reinforce = off_path_gradient(-(reward.detach() * (own_log_probs * mask).sum(1)).mean())
    return {
        "vocab": vocab,
        "off_path_rows": int(off_path.sum()),
        "max_abs_grad_off_path": {"teacher_forcing": teacher_forced, "scheduled_sampling": scheduled,
                                  "reinforce": reinforce},
    }


class NgramModel:
    """An order-n model of token sequences with add-k smoothing, contexts padded with <bos>.

    p(w | c) = (count(c, w) + k) / (count(c) + k * V) over a vocabulary of V ids.
    """

    def __init__(self, sequences: list[list[int]], order: int, vocab: int, add_k: float):
        if order < 1:
            raise UnforcedError(f"order must be at least 1, got {order}")
        if add_k <= 0:
            raise UnforcedError(f"add_k must be positive, got {add_k}")
        self.order, self.vocab, self.add_k = order, vocab, add_k
        self.joint: Counter = Counter()
        self.context: Counter = Counter()
        for sequence in sequences:
            padded = [BOS] * (order - 1) + list(sequence)
            for i in range(order - 1, len(padded)):
                context = tuple(padded[i - order + 1:i])
                self.joint[context + (padded[i],)] += 1
                self.context[context] += 1

    def log_prob(self, context: tuple[int, ...], token: int) -> float:
        context = context[len(context) - self.order + 1:] if self.order > 1 else ()
        return math.log((self.joint[context + (token,)] + self.add_k)
                        / (self.context[context] + self.add_k * self.vocab))

    def prefix_log_probs(self, sequence: list[int]) -> list[float]:
        """Cumulative log p(x_1..L) for L = 1..len(sequence)."""
        history = [BOS] * (self.order - 1)
        total, out = 0.0, []
        for token in sequence:
            total += self.log_prob(tuple(history), token)
            out.append(total)
            history.append(token)
        return out


@torch.no_grad()
def prefix_divergence(model, task: Task, split: str = "test", max_len: int = 10, n_samples: int = 64,
                      order: int = 2, seed: int = 0, add_k: float = 0.1, batch_size: int = 64) -> dict:
    """Monte Carlo estimate of KL(p_model(prefix) || p_data(prefix)) for prefix lengths L = 1..max_len.

    Estimator: draw x ~ p_model(. | source) (a Sample() rollout, temperature 1) for n_samples sources taken in
    turn from the split, and average
        KL_L ~ mean_x [ log p_model(x_1..L | source) - log q(x_1..L) ],
    with log p_model exact (the rollout's log-probs of its own tokens) and q an order-`order` n-gram of the split's
    target sequences (with <eos>) smoothed by add-k. A sample that ends (<eos>) before L counts as its whole
    sequence: both models give the padding after <eos> probability 1.
    Bias: q stands in for p_data, so this is KL to the smoothed n-gram, not to the data. Smoothing moves mass to
    unseen n-grams (it understates how far off-data the model's prefixes go, more so with a large add_k); a low
    order forgets long-range structure (data-like prefixes look improbable, overstating the divergence); q is
    unconditional while the model is conditioned on the source, so the estimate also holds the information the
    source gives about the target (it is not zero for a perfect model). Read it as a comparison between models
    or strategies on the same task, not as an absolute value.
    """
    if max_len < 1 or n_samples < 1:
        raise UnforcedError(f"max_len and n_samples must be at least 1, got {max_len} and {n_samples}")
    pairs = task.split(split)
    if not pairs:
        raise UnforcedError(f"split {split!r} is empty")
    targets = [task.target_tokenizer.encode(target) + [EOS] for _, target in pairs]
    ngram = NgramModel(targets, order, task.target_tokenizer.vocab_size, add_k)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    chosen = [pairs[i % len(pairs)] for i in range(n_samples)]
    model_sums, ngram_sums = np.zeros(max_len), np.zeros(max_len)
    try:
        for start in range(0, n_samples, batch_size):
            batch = task.collate(chosen[start:start + batch_size]).to(device)
            memory = model.encode(batch.source, batch.source_mask)
            sampled = rollout(model, memory, Sample(), max_len=max_len, batch_size=len(batch),
                              generator=generator, stop_at_eos=True, keep_hidden=False)
            own = (sampled.log_probs.float() * sampled.mask).cumsum(1).cpu().numpy()  # (batch, time)
            for row, tokens in enumerate(sampled.tokens.cpu().tolist()):
                length = int(sampled.lengths[row])
                model_curve = np.full(max_len, own[row, length - 1])
                model_curve[:length] = own[row, :length]
                ngram_curve = np.full(max_len, 0.0)
                cumulative = ngram.prefix_log_probs(tokens[:length])
                ngram_curve[:length] = cumulative
                ngram_curve[length:] = cumulative[-1]
                model_sums += model_curve
                ngram_sums += ngram_curve
    finally:
        model.train(was_training)
    model_mean, ngram_mean = model_sums / n_samples, ngram_sums / n_samples
    return {
        "lengths": list(range(1, max_len + 1)),
        "kl": (model_mean - ngram_mean).tolist(),
        "model_log_prob": model_mean.tolist(),
        "ngram_log_prob": ngram_mean.tolist(),
        "n_samples": n_samples,
        "order": order,
        "add_k": add_k,
    }


LOWER_IS_BETTER = ("wer", "cer")


def mid_training_dips(metrics: list[dict], key: str = "fr", threshold: float = 0.1,
                      absolute: bool = False) -> list[dict]:
    """Evaluations where the validation metric `key` falls from its running best while training goes on.

    `metrics` are metrics.jsonl records; evaluation records hold {"step", "eval": {"metric": {"name", key}}}.
    A drop is best-so-far minus the value (sign flipped for WER/CER, where lower is better); it is a dip when it
    exceeds `threshold` (a share of |best-so-far| by default, an absolute amount with `absolute=True`) and a later
    record shows training continued. One entry per dip episode (consecutive dipped evaluations) at its deepest
    evaluation: {"step", "drop", "value", "best", "strategy" (when records carry one), and
    "gold_ratio": the teacher-forcing ratio (a training record's "teacher_forcing_ratio") of the latest training
    record at or before that step where one logs it}.
    Records of different strategies are read separately.
    """
    by_strategy: dict = {}
    for record in metrics:
        by_strategy.setdefault(record.get("strategy"), []).append(record)
    dips: list[dict] = []
    for strategy, records in by_strategy.items():
        evaluations = [r for r in records if isinstance(r.get("eval"), dict)
                       and isinstance(r["eval"].get("metric"), dict) and r["eval"]["metric"].get(key) is not None]
        evaluations.sort(key=lambda r: r.get("step", 0))
        last_step = max((r.get("step", 0) for r in records), default=0)
        training = sorted((r for r in records if "eval" not in r), key=lambda r: r.get("step", 0))
        best, episode = None, None
        for record in evaluations:
            sign = -1.0 if record["eval"]["metric"].get("name") in LOWER_IS_BETTER else 1.0
            value = float(record["eval"]["metric"][key])
            if best is None or sign * value > sign * best:
                best = value
            drop = sign * (best - value)
            limit = threshold if absolute else threshold * abs(best)
            continues = record.get("step", 0) < last_step
            if drop > limit and continues:
                if episode is None or drop > episode["drop"]:
                    episode = {"step": record.get("step"), "drop": drop, "value": value, "best": best}
                    if strategy is not None:
                        episode["strategy"] = strategy
                    ratio = _ratio_near(training, record.get("step", 0))
                    if ratio is not None:
                        episode["gold_ratio"] = ratio
            elif episode is not None:
                dips.append(episode)
                episode = None
        if episode is not None:
            dips.append(episode)
    return dips


def _ratio_near(training: list[dict], step: int) -> float | None:
    ratio = None
    for record in training:
        if record.get("step", 0) > step:
            break
        if record.get("teacher_forcing_ratio") is not None:
            ratio = float(record["teacher_forcing_ratio"])
    return ratio


__all__ = ["BigramModel", "NgramModel", "mid_training_dips", "prefix_divergence",
           "zero_gradient_probe"]
