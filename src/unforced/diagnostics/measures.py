"""Gap measures not inflated by misalignment, gathered batch by batch from the rollouts `evaluate` already runs.

Positional `fr_nll` scores gold token t after the model's own prefix: one inserted word misaligns every later
position, and an early <eos> leaves the model fed <eos>, an input teacher forcing never trains. The measures here
say what that figure cannot (docs/measures.md gives each one's formula, source and blind spot):

    first divergence   d = the first step where the greedy decode leaves gold (its distribution, and d / length)
    on-path NLL        the NLL of gold at steps t <= d: scored where the model's own prefix still equals gold,
                       so the prefix is the teacher's and nothing is misaligned
    length ratio       free-running length / gold length (a model that stops early or runs on)
    oracle excess      Arora et al. 2022, "Why exposure bias matters": with an oracle naming the best next
                       tokens after any prefix, e_own(t) = [own token at t not among the oracle's best after the
                       model's own prefix], e_gold(t) = [teacher-forced argmax not among them after the gold
                       prefix]; AccErr = sum_t e_own(t), l * eps = sum_t e_gold(t) over each row's gold length, and
                       excess % = 100 (AccErr - l eps) / (l eps): the error that compounds beyond what the model
                       makes with a perfect prefix, i.e. what is attributable to exposure bias
    prefix swap        in the spirit of He et al. 2019, "Quantifying Exposure Bias for Open-ended Language
                       Generation": continue greedily after the first k gold tokens, and after the model's own
                       first k tokens; score both continuations against the reference's tokens after k with the
                       task's metric. own / gold below 1 is the quality lost to the model's own prefix
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from unforced.rewards.corpus import HIGHER_IS_BETTER, corpus_score
from unforced.rollout import Greedy, Prefix, rollout
from unforced.vocab import EOS


@dataclass
class PathSums:
    """Running sums of the path measures over the batches of one split."""

    width: int
    divergence: list[int] = field(default_factory=list)  # first divergence step per row (= length if none)
    lengths: list[int] = field(default_factory=list)  # gold length per row (with <eos>)
    free_lengths: list[int] = field(default_factory=list)  # free-running length per row (with <eos>)
    on_path_nll: float = 0.0
    on_path_count: int = 0
    own_errors: np.ndarray | None = None  # (width,) oracle errors along the model's own prefix, per position
    gold_errors: np.ndarray | None = None  # (width,) oracle errors of the teacher-forced argmax, per position
    judged: np.ndarray | None = None  # (width,) rows judged at each position

    def add(self, free_tokens: Tensor, gold: Tensor, gold_mask: Tensor, forced_nll: Tensor) -> None:
        """free_tokens (batch, >= time) greedy decode; gold, gold_mask, forced_nll (batch, time)."""
        time = gold.shape[1]
        own = free_tokens[:, :time]
        lengths = gold_mask.sum(1)
        wrong = (own != gold) & gold_mask
        never = ~wrong.any(1)
        first = torch.where(never, lengths, wrong.float().argmax(1))  # (batch,)
        steps = torch.arange(time, device=gold.device)[None, :]
        on_path = (steps <= first[:, None]) & gold_mask
        self.on_path_nll += float((forced_nll * on_path).sum())
        self.on_path_count += int(on_path.sum())
        is_eos = free_tokens == EOS
        free_length = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1,
                                  torch.full_like(lengths, free_tokens.shape[1]))
        self.divergence += first.cpu().tolist()
        self.lengths += lengths.cpu().tolist()
        self.free_lengths += free_length.cpu().tolist()

    def add_oracle(self, oracle, sources: list, free_tokens: Tensor, forced_choice: Tensor, gold: Tensor,
                   gold_mask: Tensor) -> None:
        """Judge every step of each row's gold length with the task's oracle, along both prefixes."""
        if self.own_errors is None:
            self.own_errors, self.gold_errors, self.judged = (np.zeros(self.width) for _ in range(3))
        own_rows, forced_rows, gold_rows = (x.cpu().tolist() for x in (free_tokens, forced_choice, gold))
        for source, own, forced, reference, length in zip(sources, own_rows, forced_rows, gold_rows,
                                                          gold_mask.sum(1).tolist(), strict=True):
            for t in range(min(int(length), self.width)):
                self.own_errors[t] += own[t] not in oracle(source, own[:t])
                self.gold_errors[t] += forced[t] not in oracle(source, reference[:t])
                self.judged[t] += 1

    def result(self) -> dict:
        lengths = np.maximum(np.array(self.lengths, dtype=float), 1)
        divergence = np.array(self.divergence, dtype=float)
        stayed = divergence >= lengths
        histogram = np.bincount(np.minimum(divergence, self.width).astype(int), minlength=self.width + 1)
        out = {
            "on_path_nll": self.on_path_nll / max(self.on_path_count, 1),
            "first_divergence": {
                "mean": float(divergence[~stayed].mean()) if (~stayed).any() else None,
                "mean_fraction": float(np.minimum(divergence / lengths, 1.0).mean()) if len(lengths) else None,
                "never": float(stayed.mean()) if len(lengths) else None,
                "histogram": histogram[: self.width].tolist(),  # rows whose first divergence is at each step
            },
            "length_ratio": float(np.mean(np.array(self.free_lengths) / lengths)) if len(lengths) else None,
        }
        if self.own_errors is not None:
            own, gold = float(self.own_errors.sum()), float(self.gold_errors.sum())
            judged = np.maximum(self.judged, 1)
            out["oracle"] = {
                "accumulated_error": own / max(len(self.lengths), 1),  # AccErr per sequence, own prefix
                "gold_prefix_error": gold / max(len(self.lengths), 1),  # l * eps per sequence
                "excess_pct": 100.0 * (own - gold) / gold if gold > 0 else None,
                "excess_share": (own - gold) / own if own > 0 else 0.0,
                "own_error": (self.own_errors / judged)[self.judged > 0].tolist(),
                "gold_error": (self.gold_errors / judged)[self.judged > 0].tolist(),
            }
        return out


def _suffixes(tokenizer, rows: list[list[int]], k: int) -> list[str]:
    return [tokenizer.decode(row[k:]) for row in rows]


@torch.no_grad()
def prefix_swap(model, task, split: str = "test", positions: tuple[int, ...] | None = None,
                limit: int | None = 200, limits: dict | None = None, batch_size: int = 64) -> dict:
    """The task's metric of greedy continuations after k gold tokens and after the model's own k tokens, each
    against the reference's tokens after k, for each k of `positions` (default: 1, a quarter and half of the
    longest reference, among those at least two tokens short of it). Rows shorter than k + 2 are left out."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    examples = task.split(split)[:limit] if limit else task.split(split)
    longest = max(len(task.target_tokenizer.encode(e.target)) + 1 for e in examples)
    if positions is None:
        positions = tuple(sorted({k for k in (1, longest // 4, longest // 2) if 1 <= k <= longest - 2}))
    budget = model.config.max_target_len
    rows: dict[int, dict[str, list[str]]] = {k: {"gold": [], "own": [], "ref": []} for k in positions}
    for batch in task.batches(split, batch_size, limit=limit, **(limits or {})):
        batch = batch.to(device)
        memory = model.encode(batch.source, batch.source_mask)
        width = max(budget, batch.gold.shape[1])
        own = rollout(model, memory, Greedy(), max_len=width, batch_size=len(batch), stop_at_eos=False,
                      keep_hidden=False).tokens.cpu().tolist()
        gold_rows = batch.gold.cpu().tolist()
        lengths = batch.gold_mask.sum(1).cpu()
        gold_padded = torch.nn.functional.pad(batch.gold, (0, width - batch.gold.shape[1]))
        for k in positions:
            keep = (lengths >= k + 2).tolist()
            if not any(keep):
                continue
            swapped = rollout(model, memory, Prefix(torch.full((len(batch),), k, dtype=torch.long)),
                              gold=gold_padded, max_len=width, stop_at_eos=False, keep_hidden=False)
            after_gold = swapped.tokens.cpu().tolist()
            pick = [i for i, kept in enumerate(keep) if kept]
            rows[k]["gold"] += _suffixes(task.target_tokenizer, [after_gold[i] for i in pick], k)
            rows[k]["own"] += _suffixes(task.target_tokenizer, [own[i] for i in pick], k)
            rows[k]["ref"] += _suffixes(task.target_tokenizer, [gold_rows[i] for i in pick], k)
    model.train(was_training)
    out = {"metric": task.metric, "positions": []}
    for k in positions:
        if not rows[k]["ref"]:
            continue
        references = [[r] for r in rows[k]["ref"]]
        after_gold = corpus_score(task.metric, rows[k]["gold"], references).value
        after_own = corpus_score(task.metric, rows[k]["own"], references).value
        # A quality ratio, below 1 when the model's own prefix hurts: own / gold, or gold / own for error rates.
        top, bottom = (after_own, after_gold) if HIGHER_IS_BETTER[task.metric] else (after_gold, after_own)
        out["positions"].append({"k": k, "rows": len(references), "after_gold": after_gold, "after_own": after_own,
                                 "own_over_gold": top / bottom if bottom else None})
    return out


__all__ = ["PathSums", "prefix_swap"]
