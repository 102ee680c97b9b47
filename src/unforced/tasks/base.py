"""Task, Example and Batch: splits of examples (a source of any modality and every reference), a source codec, a
target tokenizer, a default metric, an optional oracle.

    Example(source, references, difficulty)    source: text, a WAV path or samples, an image path or pixels
    Task.collate(examples) -> Batch            the codec's (features, mask), gold decoder inputs and outputs of
                                               the first reference, and all references for the metrics
    Task.unlabelled                            sources without references (self-training, the ASR-TTS cycle);
                                               `with_labelled_share(task, share)` makes them from the train split
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.tasks.codecs import SourceCodec, TextCodec
from unforced.vocab import BOS, EOS, PAD, Tokenizer

Pair = tuple[str, str]
# oracle(source, prefix of target token ids) -> the set of best next target token ids
Oracle = Callable[[Any, list[int]], set[int]]


class Example(tuple):
    """One source and all its references; the first reference is the one teacher forcing trains on.

    An Example is the (source, target) pair of a text task, with the rest attached: it unpacks, compares, hashes
    and sorts as that pair (so `for source, target in task.train` reads as it always did), and carries
    `references` (every reference, the target first) and `difficulty`, which orders a curriculum from easy to
    hard (None: the target's length in tokens; a synthetic task may give its own, e.g. digits or clauses).
    """

    def __new__(cls, source: Any, references: str | tuple[str, ...] | list[str],
                difficulty: float | None = None) -> Example:
        references = (references,) if isinstance(references, str) else tuple(references)
        if not references or not all(isinstance(r, str) for r in references):
            raise UnforcedError(f"an example needs at least one reference string, got {references!r}")
        example = super().__new__(cls, (source, references[0]))
        example.references = references
        example.difficulty = difficulty
        return example

    def __getnewargs__(self):
        return self.source, self.references, self.difficulty

    @property
    def source(self) -> Any:
        return self[0]

    @property
    def target(self) -> str:
        return self[1]

    def __repr__(self) -> str:
        return f"Example({self.source!r}, {self.references!r}, difficulty={self.difficulty!r})"


def as_example(item) -> Example:
    """An Example from an Example, a (source, target) pair or a (source, [references]) pair."""
    if isinstance(item, Example):
        return item
    if isinstance(item, tuple | list) and len(item) == 2:
        return Example(item[0], item[1])
    raise UnforcedError(f"a task example is an Example or a (source, target) pair, got {item!r}")


@dataclass
class Batch:
    source: Tensor  # (batch, source) token ids | (batch, frames, mels) log-mel | (batch, 3, H, W) pixels
    source_mask: Tensor  # (batch, source) True on real positions
    inputs: Tensor  # (batch, time) <bos>, y_1 .. y_(T-1): the gold decoder inputs
    gold: Tensor  # (batch, time) y_1 .. y_T, <eos>: the gold outputs, padded
    gold_mask: Tensor  # (batch, time) True on real outputs (including <eos>)
    sources: list[Any]
    references: list[list[str]]  # every reference of each row, the first one the gold
    difficulty: Tensor | None = None  # (batch,) each example's difficulty (target length when it gives none)

    def to(self, device) -> Batch:
        return Batch(self.source.to(device), self.source_mask.to(device), self.inputs.to(device),
                     self.gold.to(device), self.gold_mask.to(device), self.sources, self.references,
                     None if self.difficulty is None else self.difficulty.to(device))

    def __len__(self) -> int:
        return self.source.shape[0]

    def select(self, rows: Tensor) -> Batch:
        """The rows whose indices `rows` (a 1-D long tensor) holds, padding columns cut to the longest kept
        target."""
        index = rows.tolist()
        width = max(1, int(self.gold_mask[rows].sum(1).max())) if len(index) else 1
        return Batch(self.source[rows], self.source_mask[rows], self.inputs[rows, :width], self.gold[rows, :width],
                     self.gold_mask[rows, :width], [self.sources[i] for i in index],
                     [self.references[i] for i in index],
                     None if self.difficulty is None else self.difficulty[rows])

    def slice(self, rows: slice) -> Batch:
        """The rows `rows` of this batch (padding columns kept)."""
        return Batch(self.source[rows], self.source_mask[rows], self.inputs[rows], self.gold[rows],
                     self.gold_mask[rows], self.sources[rows], self.references[rows],
                     None if self.difficulty is None else self.difficulty[rows])


@dataclass
class Task:
    """A sequence task: splits of examples, a source codec, a target tokenizer, its metric, an optional oracle.

    `metric` names a corpus metric of `unforced.rewards.corpus` ("exact_match", "bleu", "chrf", "wer", "cer",
    "cider_d"), scored against every reference. `unlabelled` holds sources without references (a strategy that
    learns from them, e.g. `self_training`, reads them; nothing else does). `oracle`, where the task has one, returns the set of best next
    tokens after any prefix, including one with mistakes in it. `source_codec` turns sources into features; a
    text task may give only `source_tokenizer` (the codec is then text through it).
    """

    name: str
    train: list[Example]
    valid: list[Example]
    test: list[Example]
    source_tokenizer: Tokenizer | None
    target_tokenizer: Tokenizer
    metric: str = "bleu"
    oracle: Oracle | None = None
    description: str = ""
    settings: dict = field(default_factory=dict)
    source_codec: SourceCodec | None = None
    unlabelled: list[Any] = field(default_factory=list)

    def __post_init__(self):
        self.train, self.valid, self.test = ([as_example(item) for item in split]
                                             for split in (self.train, self.valid, self.test))
        if self.source_codec is None:
            if self.source_tokenizer is None:
                raise UnforcedError(f"task {self.name!r} needs a source codec or a source tokenizer")
            self.source_codec = TextCodec(self.source_tokenizer)

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        # A text task's codec reads its source tokenizer: swapping the tokenizer (a saved run's, an HF model's)
        # swaps what the codec encodes with.
        if name == "source_tokenizer" and value is not None and isinstance(getattr(self, "source_codec", None),
                                                                          TextCodec):
            super().__setattr__("source_codec", TextCodec(value))

    def split(self, name: str) -> list[Example]:
        if name not in ("train", "valid", "test"):
            raise UnforcedError(f"unknown split {name!r}; known: train, valid, test")
        return getattr(self, name)

    def longest(self) -> tuple[int, int]:
        """Longest source (in the codec's positions, unlabelled sources too) and target (in tokens, with <eos>)
        over all splits.
        Every reference counts: any of them may be the one a reward or a later split trains on."""
        examples = self.train + self.valid + self.test
        sources = [e.source for e in examples] + list(self.unlabelled)  # a strategy may decode those too
        source = max((self.source_codec.length(s) for s in sources), default=1)
        target = max((len(self.target_tokenizer.encode(r)) + 1 for e in examples for r in e.references),
                     default=1)
        return max(source, 1), target

    def references_corpus(self, split: str = "train") -> list[list[str]]:
        """Every reference list of a split (CIDEr's document frequencies come from the training one)."""
        return [list(e.references) for e in self.split(split)]

    def collate(self, examples: list, max_source_len: int | None = None,
                max_target_len: int | None = None) -> Batch:
        examples = [as_example(item) for item in examples]
        source, source_mask = self.source_codec.encode([e.source for e in examples], max_source_len)
        targets = [self.target_tokenizer.encode(e.target) + [EOS] for e in examples]
        if max_target_len is not None:
            for example, target in zip(examples, targets, strict=True):
                if len(target) > max_target_len:
                    shown = example.source[:60] if isinstance(example.source, str) else example.target[:60]
                    raise UnforcedError(f"target of {len(target)} tokens is longer than the model allows "
                                        f"({max_target_len}): {shown!r}")
        width_t = max((len(t) for t in targets), default=1)
        gold = torch.full((len(examples), width_t), PAD, dtype=torch.long)
        for i, t in enumerate(targets):
            gold[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        inputs = torch.cat([torch.full((len(examples), 1), BOS, dtype=torch.long), gold[:, :-1]], 1)
        inputs = inputs.masked_fill(inputs == EOS, PAD)
        difficulty = torch.tensor([float(len(t)) if e.difficulty is None else float(e.difficulty)
                                   for e, t in zip(examples, targets, strict=True)])
        return Batch(source=source, source_mask=source_mask, inputs=inputs, gold=gold, gold_mask=gold != PAD,
                     sources=[e.source for e in examples], references=[list(e.references) for e in examples],
                     difficulty=difficulty)

    def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
                limit: int | None = None, **limits) -> Iterator[Batch]:
        examples = self.split(split)[:limit] if limit else self.split(split)
        order = list(range(len(examples)))
        if shuffle:
            order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
        for start in range(0, len(order), batch_size):
            yield self.collate([examples[i] for i in order[start:start + batch_size]], **limits)


def deterministic_split(pairs: list, seed: int = 0, valid: float = 0.1,
                        test: float = 0.1) -> tuple[list, list, list]:
    """Shuffle with a fixed seed, then cut into train / valid / test (at least one of each where possible)."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, round(len(pairs) * test)) if len(pairs) >= 3 else 0
    n_valid = max(1, round(len(pairs) * valid)) if len(pairs) >= 3 else 0
    shuffled = [pairs[i] for i in order]
    return (shuffled[n_test + n_valid:], shuffled[n_test:n_test + n_valid], shuffled[:n_test])


def with_labelled_share(task: Task, share: float, seed: int = 0) -> Task:
    """`task` with only `share` of its train split labelled (a seeded choice, at least one example): the sources
    of the rest join `task.unlabelled`, their references dropped. Valid and test are untouched. Changes `task` in
    place and returns it; `share` 1 leaves it as it is."""
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 < share <= 1:
        raise UnforcedError(f"the labelled share of the train split is in (0, 1], got {share!r}")
    if share == 1:
        return task
    if not task.train:
        raise UnforcedError(f"task {task.name!r} has no train split to hold labels out of")
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    kept = max(1, round(len(task.train) * share))
    task.unlabelled = [*task.unlabelled, *(task.train[i].source for i in sorted(order[kept:]))]
    task.train = [task.train[i] for i in sorted(order[:kept])]
    task.settings = {**task.settings, "labelled_share": share}
    return task
