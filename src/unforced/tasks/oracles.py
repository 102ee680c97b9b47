"""Oracles: the best next tokens after any prefix, per prefix (`oracle(source, prefix) -> set[int]`, the Task
contract) and batched (`next_tokens`, what `dagger` calls once per step).

The edit-distance oracle is that of optimal completion distillation (Sabour, Chan and Norouzi 2019, "Optimal
Completion Distillation for Sequence Learning"). With D[i][j] the edit distance between the prefix y[:i] and the
reference r[:j], the least edit distance any completion of y[:i] can reach is m* = min_j D[i][j] (append r[j:]),
and the tokens that begin an optimal completion are exactly {r[j] : D[i][j] = m*, j < |r|}, plus <eos> when
D[i][|r|] = m*. With several references, the union over the references that reach the smallest m*. Each row of
D follows from the one before without a loop over j: the deletion and substitution moves give
c[j] = min(D[i-1][j] + 1, D[i-1][j-1] + [y_i != r_j]), and the insertion chain along the row is a cumulative
minimum, D[i][j] = j + cummin_k<=j (c[k] - k) (one vectorised pass per prefix position, over the whole batch).

Attaching the edit-distance oracle to a task is opt-in (`with_edit_distance_oracle`, or the task's `oracle`
option): `Task.oracle` feeds the oracle-excess measure of the diagnostics, so a task without an exact oracle
keeps its diagnostics as they were unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.vocab import EOS, PAD


@dataclass
class OracleLabels:
    """The oracle's best next tokens at every step: `tokens[b, t, k]` is among them where `valid[b, t, k]`."""

    tokens: Tensor  # (batch, time, candidates)
    valid: Tensor  # (batch, time, candidates)

    def mask(self, vocab: int) -> Tensor:
        """(batch, time, vocab) True on the oracle's tokens."""
        out = torch.zeros(*self.tokens.shape[:2], vocab + 1, dtype=torch.bool, device=self.tokens.device)
        index = torch.where(self.valid, self.tokens.clamp(0, vocab - 1), vocab)  # invalid ones to a spare column
        return out.scatter_(2, index, True)[..., :vocab]


@runtime_checkable
class BatchOracle(Protocol):
    """An oracle that labels every step of a batch at once."""

    def next_tokens(self, sources: list, references: list[list[list[int]]], prefixes: Tensor) -> OracleLabels: ...


def edit_distance_rows(prefixes: Tensor, references: Tensor, reference_lengths: Tensor) -> Tensor:
    """D[n, i, j] = edit distance between prefixes[n, :i] and references[n, :j]: (N, T+1, M+1) for prefixes
    (N, T) and references (N, M) (padding past reference_lengths is ignored by the caller)."""
    count, time = prefixes.shape
    width = references.shape[1]
    columns = torch.arange(width + 1, device=prefixes.device)
    row = columns.expand(count, width + 1).clone()
    rows = [row]
    for i in range(time):
        substitute = row[:, :-1] + (prefixes[:, i:i + 1] != references).long()  # (N, M)
        cost = torch.cat([row[:, :1] + 1, torch.minimum(row[:, 1:] + 1, substitute)], 1)  # (N, M+1)
        row = columns + torch.cummin(cost - columns, 1).values
        rows.append(row)
    return torch.stack(rows, 1)


def edit_distance_next_tokens(prefixes: Tensor, references: list[list[list[int]]]) -> OracleLabels:
    """The OCD oracle for every step t (the prefix prefixes[b, :t]) of every row, over all its references."""
    batch, time = prefixes.shape
    device = prefixes.device
    owner, flat = [], []
    for b, refs in enumerate(references):
        if not refs:
            raise UnforcedError(f"the edit-distance oracle needs at least one reference (row {b} has none)")
        for ref in refs:
            owner.append(b)
            flat.append(list(ref))
    width = max(len(r) for r in flat)
    refs_t = torch.full((len(flat), width), -1, dtype=torch.long, device=device)
    for n, ref in enumerate(flat):
        refs_t[n, :len(ref)] = torch.tensor(ref, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in flat], device=device)
    owner_t = torch.tensor(owner, device=device)
    table = edit_distance_rows(prefixes[owner_t], refs_t, lengths)[:, :time]  # (N, T, M+1)
    columns = torch.arange(width + 1, device=device)
    inside = columns[None, :] <= lengths[:, None]  # (N, M+1)
    table = table.masked_fill(~inside[:, None, :], 1 << 30)
    best_ref = table.min(2).values  # (N, T)
    best_row = torch.full((batch, time), 1 << 30, dtype=torch.long, device=device)
    best_row = best_row.scatter_reduce(0, owner_t[:, None].expand(-1, time), best_ref, "amin")
    optimal = (table == best_ref[:, :, None]) & (best_ref == best_row[owner_t])[:, :, None]  # (N, T, M+1)
    candidates = torch.cat([refs_t, torch.zeros(len(flat), 1, dtype=torch.long, device=device)], 1)
    candidates[torch.arange(len(flat), device=device), lengths] = EOS  # position |r|: end now
    # Gather each row's references side by side: (batch, T, R * (M+1)).
    per_row = max(owner.count(b) for b in range(batch))
    tokens = torch.full((batch, per_row, time, width + 1), PAD, dtype=torch.long, device=device)
    valid = torch.zeros((batch, per_row, time, width + 1), dtype=torch.bool, device=device)
    slot = torch.tensor([owner[:n].count(owner[n]) for n in range(len(owner))], device=device)
    tokens[owner_t, slot] = candidates[:, None, :].expand(-1, time, -1)
    valid[owner_t, slot] = optimal
    tokens = tokens.permute(0, 2, 1, 3).reshape(batch, time, -1)
    valid = valid.permute(0, 2, 1, 3).reshape(batch, time, -1)
    return OracleLabels(tokens=tokens, valid=valid)


class EditDistanceOracle:
    """The OCD oracle over each source's references: `oracle(source, prefix)` and `next_tokens(...)`."""

    def __init__(self, tokenizer, references: dict | None = None):
        self.tokenizer = tokenizer
        self.references = references or {}  # source -> list of reference strings

    @classmethod
    def from_task(cls, task) -> EditDistanceOracle:
        references = {}
        for example in task.train + task.valid + task.test:
            try:
                references.setdefault(example.source, []).extend(example.references)
            except TypeError:
                raise UnforcedError(f"task {task.name!r}: the edit-distance oracle looks references up by "
                                    f"source, and its sources are not hashable") from None
        return cls(task.target_tokenizer, references)

    def __call__(self, source, prefix: list[int]) -> set[int]:
        if source not in self.references:
            raise UnforcedError(f"the edit-distance oracle has no reference for source {str(source)[:60]!r}")
        refs = [[self.tokenizer.encode(r) for r in self.references[source]]]
        labels = edit_distance_next_tokens(torch.tensor([list(prefix) + [PAD]], dtype=torch.long), refs)
        last = len(prefix)
        return set(labels.tokens[0, last][labels.valid[0, last]].tolist())

    def next_tokens(self, sources: list, references: list[list[list[int]]], prefixes: Tensor) -> OracleLabels:
        return edit_distance_next_tokens(prefixes, references)


class PositionalOracle:
    """The answer's token at the prefix's position, <eos> past its end (optimal under a per-position cost)."""

    def __init__(self, tokenizer, solve):
        self.tokenizer, self.solve = tokenizer, solve

    def __call__(self, source, prefix: list[int]) -> set[int]:
        answer = self.tokenizer.encode(self.solve(source))
        return {answer[len(prefix)]} if len(prefix) < len(answer) else {EOS}

    def next_tokens(self, sources: list, references, prefixes: Tensor) -> OracleLabels:
        batch, time = prefixes.shape
        tokens = torch.full((batch, time, 1), EOS, dtype=torch.long, device=prefixes.device)
        for b, source in enumerate(sources):
            answer = self.tokenizer.encode(self.solve(source))[:time]
            tokens[b, :len(answer), 0] = torch.tensor(answer, dtype=torch.long)
        return OracleLabels(tokens=tokens, valid=torch.ones_like(tokens, dtype=torch.bool))


def batched_labels(oracle, sources: list, references: list[list[list[int]]], prefixes: Tensor) -> OracleLabels:
    """Any oracle's labels for every step: its own `next_tokens` where it has one, else one call per prefix."""
    if isinstance(oracle, BatchOracle):
        return oracle.next_tokens(sources, references, prefixes)
    rows = prefixes.tolist()
    sets = [[sorted(oracle(source, row[:t])) for t in range(len(row))] for source, row in zip(sources, rows,
                                                                                             strict=True)]
    width = max(1, max(len(s) for row in sets for s in row))
    tokens = torch.full((*prefixes.shape, width), PAD, dtype=torch.long)
    valid = torch.zeros_like(tokens, dtype=torch.bool)
    for b, row in enumerate(sets):
        for t, chosen in enumerate(row):
            tokens[b, t, :len(chosen)] = torch.tensor(chosen, dtype=torch.long)
            valid[b, t, :len(chosen)] = True
    return OracleLabels(tokens=tokens.to(prefixes.device), valid=valid.to(prefixes.device))


def with_edit_distance_oracle(task):
    """`task` with the edit-distance oracle attached where it has no oracle of its own (opt-in)."""
    if task.oracle is None:
        task.oracle = EditDistanceOracle.from_task(task)
    return task


__all__ = ["BatchOracle", "EditDistanceOracle", "OracleLabels", "PositionalOracle", "batched_labels",
           "edit_distance_next_tokens", "edit_distance_rows", "with_edit_distance_oracle"]
