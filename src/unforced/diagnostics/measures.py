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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

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


__all__ = ["PathSums"]
