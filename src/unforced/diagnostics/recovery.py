"""Recovery probe: does the model get back on track after a few wrong tokens in its prefix?

Replace the gold decoder inputs at positions t .. t+k-1 with random wrong symbols, run one teacher-forced pass on
the corrupted inputs, and compare token accuracy on the positions after the injection (>= t+k) with the clean
teacher-forced pass on the same positions. recovery = corrupted accuracy / clean accuracy: 1 for a model whose
predictions after the injection do not depend on it (an oracle of a positional task), lower for one that is
thrown off by its own mistakes (the compounding of exposure bias).
"""

from __future__ import annotations

import numpy as np
import torch

from unforced.errors import UnforcedError
from unforced.tasks.base import Task
from unforced.vocab import UNK

FIRST_SYMBOL = UNK + 1  # ids below are <pad>, <bos>, <eos>, <unk>


def corrupt_inputs(inputs: torch.Tensor, position: int, k: int, vocab: int,
                   generator: torch.Generator) -> torch.Tensor:
    """`inputs` with positions position .. position+k-1 replaced by a uniformly drawn different symbol."""
    corrupted = inputs.clone()
    span = corrupted[:, position:position + k]  # (batch, k)
    # A draw from the symbols other than the original: draw among vocab - FIRST_SYMBOL - 1 and skip the original.
    draw = torch.randint(FIRST_SYMBOL, vocab - 1, span.shape, generator=generator).to(span.device)
    draw = draw + (draw >= span).long()
    corrupted[:, position:position + k] = draw
    return corrupted


@torch.no_grad()
def recovery_probe(model, task: Task, split: str = "test", position: int = 1, k: int = 1,
                   limit: int | None = None, limits: dict | None = None, seed: int = 0,
                   batch_size: int = 64) -> dict:
    """Token accuracy after k wrong input tokens at `position`, against the clean teacher-forced accuracy.

    Only sequences with at least one gold output after the injection (gold position >= position + k) count, so
    every corrupted input replaces a real symbol. Returns {"position", "k", "sequences", "clean_acc_after",
    "corrupted_acc_after", "recovery" (corrupted / clean, NaN when clean is 0), "curve": {"offset", "clean", "corrupted", "count"}}
    where curve offset j is gold position position + k + j.
    """
    if position < 1:
        raise UnforcedError(f"position must be at least 1 (input 0 is <bos>), got {position}")
    if k < 1:
        raise UnforcedError(f"k must be at least 1, got {k}")
    vocab = task.target_tokenizer.vocab_size
    if vocab - FIRST_SYMBOL < 2:
        raise UnforcedError("the recovery probe needs at least two target symbols to draw a wrong one")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    limits = limits or {}
    generator = torch.Generator().manual_seed(seed)
    start = position + k
    clean_right, corrupted_right, counts = [], [], []
    try:
        for batch in task.batches(split, batch_size, limit=limit, **limits):
            if batch.gold.shape[1] <= start:
                continue
            batch = batch.to(device)
            rows = batch.gold_mask[:, start]
            if not bool(rows.any()):
                continue
            memory = model.encode(batch.source, batch.source_mask)
            corrupted = corrupt_inputs(batch.inputs, position, k, vocab, generator)
            clean_choice = model.forced(memory, batch.inputs).logits.argmax(-1)  # (batch, time)
            corrupted_choice = model.forced(memory, corrupted).logits.argmax(-1)
            mask = (batch.gold_mask & rows[:, None])[:, start:].float()  # (batch, time after)
            gold = batch.gold[:, start:]
            clean_right.append(((clean_choice[:, start:] == gold).float() * mask).sum(0).cpu().numpy())
            corrupted_right.append(((corrupted_choice[:, start:] == gold).float() * mask).sum(0).cpu().numpy())
            counts.append(mask.sum(0).cpu().numpy())
    finally:
        model.train(was_training)
    if not counts:
        raise UnforcedError(f"no sequence of split {split!r} has a gold token after position {start - 1}")
    width = max(c.size for c in counts)

    def total(parts):
        out = np.zeros(width)
        for part in parts:
            out[: part.size] += part
        return out

    clean, corrupted_sum, count = total(clean_right), total(corrupted_right), total(counts)
    keep = count > 0
    clean_acc = float(clean.sum() / count.sum())
    corrupted_acc = float(corrupted_sum.sum() / count.sum())
    return {
        "position": position,
        "k": k,
        "sequences": int(count[0]),
        "clean_acc_after": clean_acc,
        "corrupted_acc_after": corrupted_acc,
        "recovery": corrupted_acc / clean_acc if clean_acc > 0 else float("nan"),
        "curve": {
            "offset": np.flatnonzero(keep).tolist(),
            "clean": (clean[keep] / count[keep]).tolist(),
            "corrupted": (corrupted_sum[keep] / count[keep]).tolist(),
            "count": count[keep].astype(int).tolist(),
        },
    }
