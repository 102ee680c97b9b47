"""Task and Batch: splits of (source, target) text, tokenizers, a default metric, an optional oracle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.vocab import BOS, EOS, PAD, Tokenizer

Pair = tuple[str, str]
# oracle(source, prefix of target token ids) -> the set of best next target token ids
Oracle = Callable[[str, list[int]], set[int]]


@dataclass
class Batch:
    source: Tensor  # (batch, source) token ids, right-padded
    source_mask: Tensor  # (batch, source) True on real tokens
    inputs: Tensor  # (batch, time) <bos>, y_1 .. y_(T-1): the gold decoder inputs
    gold: Tensor  # (batch, time) y_1 .. y_T, <eos>: the gold outputs, padded
    gold_mask: Tensor  # (batch, time) True on real outputs (including <eos>)
    sources: list[str]
    references: list[list[str]]

    def to(self, device) -> Batch:
        return Batch(self.source.to(device), self.source_mask.to(device), self.inputs.to(device),
                     self.gold.to(device), self.gold_mask.to(device), self.sources, self.references)

    def __len__(self) -> int:
        return self.source.shape[0]

    def select(self, rows: Tensor) -> Batch:
        """The rows whose indices `rows` (a 1-D long tensor) holds, padding columns cut to the longest kept
        target."""
        index = rows.tolist()
        width = max(1, int(self.gold_mask[rows].sum(1).max())) if len(index) else 1
        return Batch(self.source[rows], self.source_mask[rows], self.inputs[rows, :width], self.gold[rows, :width],
                     self.gold_mask[rows, :width], [self.sources[i] for i in index],
                     [self.references[i] for i in index])

    def slice(self, rows: slice) -> Batch:
        """The rows `rows` of this batch (padding columns kept)."""
        return Batch(self.source[rows], self.source_mask[rows], self.inputs[rows], self.gold[rows],
                     self.gold_mask[rows], self.sources[rows], self.references[rows])


@dataclass
class Task:
    """A sequence-to-sequence task: text splits, tokenizers, the metric it is judged on, an optional oracle.

    `metric` names a sequence metric ("exact_match", "bleu", "chrf", "wer", "cer"). `oracle`, where the task has
    one, returns the set of best next tokens after any prefix, including one with mistakes in it.
    """

    name: str
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    metric: str = "bleu"
    oracle: Oracle | None = None
    description: str = ""
    settings: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Pair]:
        if name not in ("train", "valid", "test"):
            raise UnforcedError(f"unknown split {name!r}; known: train, valid, test")
        return getattr(self, name)

    def longest(self) -> tuple[int, int]:
        """Longest source and target (in tokens, target with <eos>) over all splits."""
        pairs = self.train + self.valid + self.test
        source = max((len(self.source_tokenizer.encode(s)) for s, _ in pairs), default=1)
        target = max((len(self.target_tokenizer.encode(t)) + 1 for _, t in pairs), default=1)
        return max(source, 1), target

    def collate(self, pairs: list[Pair], max_source_len: int | None = None,
                max_target_len: int | None = None) -> Batch:
        sources = [self.source_tokenizer.encode(s) for s, _ in pairs]
        targets = [self.target_tokenizer.encode(t) + [EOS] for _, t in pairs]
        for kind, seqs, limit in (("source", sources, max_source_len), ("target", targets, max_target_len)):
            if limit is None:
                continue
            for (source_text, _), seq in zip(pairs, seqs, strict=True):
                if len(seq) > limit:
                    raise UnforcedError(
                        f"{kind} of {len(seq)} tokens is longer than the model allows ({limit}): "
                        f"{source_text[:60]!r}")
        width_s = max(1, max(len(s) for s in sources))
        width_t = max(len(t) for t in targets)
        source = torch.full((len(pairs), width_s), PAD, dtype=torch.long)
        gold = torch.full((len(pairs), width_t), PAD, dtype=torch.long)
        for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
            source[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            gold[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        inputs = torch.cat([torch.full((len(pairs), 1), BOS, dtype=torch.long), gold[:, :-1]], 1)
        inputs = inputs.masked_fill(inputs == EOS, PAD)
        return Batch(source=source, source_mask=source != PAD, inputs=inputs, gold=gold, gold_mask=gold != PAD,
                     sources=[s for s, _ in pairs], references=[[t] for _, t in pairs])

    def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
                limit: int | None = None, **limits) -> Iterator[Batch]:
        pairs = self.split(split)[:limit] if limit else self.split(split)
        order = list(range(len(pairs)))
        if shuffle:
            order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
        for start in range(0, len(order), batch_size):
            yield self.collate([pairs[i] for i in order[start:start + batch_size]], **limits)


def deterministic_split(pairs: list[Pair], seed: int = 0, valid: float = 0.1,
                        test: float = 0.1) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Shuffle with a fixed seed, then cut into train / valid / test (at least one of each where possible)."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, round(len(pairs) * test)) if len(pairs) >= 3 else 0
    n_valid = max(1, round(len(pairs) * valid)) if len(pairs) >= 3 else 0
    shuffled = [pairs[i] for i in order]
    return (shuffled[n_test + n_valid:], shuffled[n_test:n_test + n_valid], shuffled[:n_test])
