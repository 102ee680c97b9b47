"""The gap: teacher-forced against free-running figures of one model on one split.

Teacher-forced (tf_*) figures score each gold token after the gold prefix. Free-running (fr_*) figures score each
gold token after the model's own greedy prefix: the rollout runs the full gold length feeding its own argmax
(past its own <eos> too), so every gold position is scored along the model's own path. Both use the same
references. gap_nll = fr_nll - tf_nll and gap_pct = 100 * gap_nll / tf_nll.
The sequence metric scores free decodes that stop at <eos>: greedy (fr) and, with `beam_size`, beam (fr_beam).
There is no teacher-forced sequence metric (see `evaluate`); the examples still show the teacher-forced argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unforced.diagnostics.measures import PathSums
from unforced.rewards.corpus import corpus_score, short_references_warning
from unforced.rollout import Greedy, beam_search, rollout
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
        self.nll[:t] += (nll * mask).sum(0).cpu().numpy()
        self.errors[:t] += (wrong * mask).sum(0).cpu().numpy()
        self.counts[:t] += mask.sum(0).cpu().numpy()


# Reported beside each task metric: a continuous one for BLEU, the other error rate for WER and CER.
COMPANION_METRICS = {"bleu": ("chrf",), "chrf": ("bleu",), "wer": ("cer",), "cer": ("wer",),
                     "cider_d": ("bleu", "chrf")}


def corpus_metric(name: str, hypotheses: list[str], references: list[list[str]]) -> float:
    """The task's sequence metric over a corpus, against every reference (`unforced.rewards.corpus`): BLEU and
    chrF as sacrebleu gives them (0-100), WER and CER as jiwer gives them (0-1, lower is better), CIDEr-D as the
    COCO evaluation gives it, exact match as a share (0-1)."""
    return corpus_score(name, hypotheses, references).value


def _decode(tokenizer, rows) -> list[str]:
    return [tokenizer.decode(row) for row in rows.cpu().tolist()]


@torch.no_grad()
def evaluate(model, task: Task, split: str = "test", batch_size: int = 64, limit: int | None = None,
             max_decode_len: int | None = None, limits: dict | None = None, beam_size: int = 0) -> dict:
    """Teacher-forced and free-running figures of `model` on `split`: the `results.json` entry of one strategy
    (without train_seconds). Every metric scores against all of each example's references. With `beam_size`,
    the free-running metric of a beam search of that width too (`metric.fr_beam`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    limits = limits or {}
    width = (limits.get("max_target_len") or max(len(task.target_tokenizer.encode(t)) + 1
                                                  for _, t in task.split(split)[:limit]))
    forced_sums, free_sums = _Sums.empty(width), _Sums.empty(width)
    paths = PathSums(width)
    budget = max_decode_len or model.config.max_target_len
    tf_hyps, fr_hyps, beam_hyps, refs, sources = [], [], [], [], []
    for batch in task.batches(split, batch_size, limit=limit, **limits):
        batch = batch.to(device)
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
        # The budget is the model's (its longest target, <eos> included), never the batch's: a budget taken from
        # the gold width would leak the reference length into the free-running metric.
        decode_len = max(budget, gold_width)
        free = rollout(model, memory, Greedy(), max_len=decode_len, batch_size=len(batch), stop_at_eos=False,
                       keep_hidden=False)
        free_log_probs = free.logits[:, :gold_width].float().log_softmax(-1)
        free_nll = -free_log_probs.gather(2, batch.gold.unsqueeze(-1)).squeeze(-1)
        free_sums.add(free_nll, (free.tokens[:, :gold_width] != batch.gold).float(), mask)
        paths.add(free.tokens, batch.gold, batch.gold_mask, nll)
        if task.oracle is not None:
            paths.add_oracle(task.oracle, batch.sources, free.tokens, choice, batch.gold, batch.gold_mask)
        if beam_size:
            beam, _ = beam_search(model, memory, beam_size, decode_len, len(batch))
            beam_hyps += _decode(task.target_tokenizer, beam)
        tf_hyps += _decode(task.target_tokenizer, choice)
        fr_hyps += _decode(task.target_tokenizer, free.tokens)
        refs += batch.references
        sources += list(batch.sources[:max(0, 5 - len(sources))])
    model.train(was_training)
    counts = np.maximum(forced_sums.counts, 1)
    keep = forced_sums.counts > 0
    total = forced_sums.counts.sum()
    tf_nll = float(forced_sums.nll.sum() / total)
    fr_nll = float(free_sums.nll.sum() / total)
    free_score = corpus_score(task.metric, fr_hyps, refs)
    # No teacher-forced sequence metric: the argmax under the gold prefix reproduces gold exactly when greedy decoding
    # does, so for exact match it equals `fr` by construction and it is no gap measure (docs/measures.md).
    metric = {"name": task.metric, "fr": free_score.value,
              "signature": free_score.signature, "nrefs": max((len(r) for r in refs), default=0),
              "decode": f"greedy,budget={budget}"}
    if beam_size:
        metric["fr_beam"] = corpus_metric(task.metric, beam_hyps, refs)
        metric["beam_size"] = beam_size
    # Companion metrics beside the task's own, greedy and beam alike: chrF is continuous where BLEU-4 is not.
    companions = {}
    for name in COMPANION_METRICS.get(task.metric, ()):
        companions[name] = {"fr": corpus_metric(name, fr_hyps, refs)}
        if beam_size:
            companions[name]["fr_beam"] = corpus_metric(name, beam_hyps, refs)
    if companions:
        metric["companions"] = companions
    warning = short_references_warning(task.metric, refs)
    if warning:
        metric["warning"] = warning
    return {
        "tf_nll": tf_nll,
        "fr_nll": fr_nll,
        "gap_nll": fr_nll - tf_nll,
        "gap_pct": 100.0 * (fr_nll - tf_nll) / tf_nll if tf_nll > 0 else float("nan"),
        "tf_token_acc": float(1 - forced_sums.errors.sum() / total),
        "fr_token_acc": float(1 - free_sums.errors.sum() / total),
        "metric": metric,
        "per_position": {
            "tf_nll": (forced_sums.nll / counts)[keep].tolist(),
            "fr_nll": (free_sums.nll / counts)[keep].tolist(),
            "tf_error": (forced_sums.errors / counts)[keep].tolist(),
            "fr_error": (free_sums.errors / counts)[keep].tolist(),
            "count": forced_sums.counts[keep].astype(int).tolist(),
        },
        "measures": paths.result(),
        "examples": [{"source": s if isinstance(s, str) else None, "reference": r[0], "references": len(r),
                      "teacher_forced": t, "free_running": f}
                     for s, r, t, f in zip(sources, refs, tf_hyps, fr_hyps, strict=False)],
    }

