"""The gap: teacher-forced against free-running figures of one model on one split.

Teacher-forced (tf_*) figures score each gold token after the gold prefix. Free-running (fr_*) figures score each
gold token after the model's own greedy prefix: the rollout runs the full gold length feeding its own argmax
(past its own <eos> too), so every gold position is scored along the model's own path. Both use the same
references. gap_nll = fr_nll - tf_nll and gap_pct = 100 * gap_nll / tf_nll.
The sequence metric decodes the teacher-forced argmax (tf) and a free greedy decode that stops at <eos> (fr).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unforced.rollout import Greedy, rollout
from unforced.tasks.base import Task


@dataclass
class _Sums:
    nll: np.ndarray
    errors: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, width: int):
        return cls(np.zeros(width), np.zeros(width), np.zeros(width))

    def add(self, nll, wrong, mask):
        t = nll.shape[1]
        self.nll[:t] += (nll * mask).sum(0).numpy()
        self.errors[:t] += (wrong * mask).sum(0).numpy()
        self.counts[:t] += mask.sum(0).numpy()


def corpus_metric(name: str, hypotheses: list[str], references: list[list[str]]) -> float:
    """The task's sequence metric over a corpus: BLEU and chrF as sacrebleu gives them (0-100), WER and CER as
    jiwer gives them (0-1, lower is better), exact match as a share (0-1)."""
    if name == "exact_match":
        return float(np.mean([h.split() == r[0].split() for h, r in zip(hypotheses, references, strict=True)]))
    if name in ("bleu", "chrf"):
        import sacrebleu

        score = sacrebleu.corpus_bleu if name == "bleu" else sacrebleu.corpus_chrf
        return float(score(hypotheses, [[r[0] for r in references]]).score)
    if name in ("wer", "cer"):
        import jiwer

        measure = jiwer.wer if name == "wer" else jiwer.cer
        return float(measure([r[0] for r in references], [h if h.strip() else "<empty>" for h in hypotheses]))
    from unforced.errors import UnforcedError

    raise UnforcedError(f"unknown metric {name!r}; known: exact_match, bleu, chrf, wer, cer")


def _decode(tokenizer, rows) -> list[str]:
    return [tokenizer.decode(row) for row in rows.tolist()]


@torch.no_grad()
def evaluate(model, task: Task, split: str = "test", batch_size: int = 64, limit: int | None = None,
             max_decode_len: int | None = None, limits: dict | None = None) -> dict:
    """Teacher-forced and free-running figures of `model` on `split`: the `results.json` entry of one strategy
    (without train_seconds)."""
    was_training = model.training
    model.eval()
    limits = limits or {}
    width = (limits.get("max_target_len") or max(len(task.target_tokenizer.encode(t)) + 1
                                                  for _, t in task.split(split)[:limit]))
    forced_sums, free_sums = _Sums.empty(width), _Sums.empty(width)
    tf_hyps, fr_hyps, refs = [], [], []
    for batch in task.batches(split, batch_size, limit=limit, **limits):
        memory = model.encode(batch.source, batch.source_mask)
        mask = batch.gold_mask.float()
        logits = model.forced(memory, batch.inputs).logits  # (batch, time, vocab)
        log_probs = logits.float().log_softmax(-1)
        nll = -log_probs.gather(2, batch.gold.unsqueeze(-1)).squeeze(-1)
        choice = logits.argmax(-1)
        forced_sums.add(nll, (choice != batch.gold).float(), mask)
        # One greedy rollout serves both: it runs past the gold width (and past <eos>) so the decoded hypothesis
        # is not cut short, and its first gold-width steps score the gold tokens along the model's own path.
        gold_width = batch.gold.shape[1]
        # Capped at the model's longest target (+1 for <eos>): Transformers have no positions past it.
        decode_len = max(min(max_decode_len or int(gold_width * 1.5 + 5), model.config.max_target_len + 1),
                         gold_width)
        free = rollout(model, memory, Greedy(), max_len=decode_len, batch_size=len(batch), stop_at_eos=False,
                       keep_hidden=False)
        free_log_probs = free.logits[:, :gold_width].float().log_softmax(-1)
        free_nll = -free_log_probs.gather(2, batch.gold.unsqueeze(-1)).squeeze(-1)
        free_sums.add(free_nll, (free.tokens[:, :gold_width] != batch.gold).float(), mask)
        tf_hyps += _decode(task.target_tokenizer, choice)
        fr_hyps += _decode(task.target_tokenizer, free.tokens)
        refs += batch.references
    model.train(was_training)
    counts = np.maximum(forced_sums.counts, 1)
    keep = forced_sums.counts > 0
    total = forced_sums.counts.sum()
    tf_nll = float(forced_sums.nll.sum() / total)
    fr_nll = float(free_sums.nll.sum() / total)
    return {
        "tf_nll": tf_nll,
        "fr_nll": fr_nll,
        "gap_nll": fr_nll - tf_nll,
        "gap_pct": 100.0 * (fr_nll - tf_nll) / tf_nll if tf_nll > 0 else float("nan"),
        "tf_token_acc": float(1 - forced_sums.errors.sum() / total),
        "fr_token_acc": float(1 - free_sums.errors.sum() / total),
        "metric": {"name": task.metric, "tf": corpus_metric(task.metric, tf_hyps, refs),
                   "fr": corpus_metric(task.metric, fr_hyps, refs)},
        "per_position": {
            "tf_nll": (forced_sums.nll / counts)[keep].tolist(),
            "fr_nll": (free_sums.nll / counts)[keep].tolist(),
            "tf_error": (forced_sums.errors / counts)[keep].tolist(),
            "fr_error": (free_sums.errors / counts)[keep].tolist(),
            "count": forced_sums.counts[keep].astype(int).tolist(),
        },
        "examples": [{"reference": r[0], "teacher_forced": t, "free_running": f}
                     for r, t, f in list(zip(refs, tf_hyps, fr_hyps, strict=True))[:5]],
    }

