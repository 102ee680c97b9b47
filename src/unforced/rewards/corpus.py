"""Corpus metrics over every reference, each with a signature of what changes its value (cf. sacrebleu).

    corpus_score(name, hypotheses, references) -> CorpusScore(value, signature)

BLEU and chrF are sacrebleu's corpus scores (0-100) with sacrebleu's own signature (`nrefs:...|case:...`);
WER and CER jiwer's corpus rates (0-1, lower is better) against the first reference (jiwer scores one reference
per hypothesis; the signature says so); CIDEr-D the COCO caption evaluation's (pycocoevalcap's `Cider`: document
frequencies from the scored set, one document per hypothesis, the mean over the set, 0-10); exact match the share
of hypotheses equal to any of their references.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

from unforced.errors import UnforcedError
from unforced.rewards.batch import check_batch


@dataclass(frozen=True)
class CorpusScore:
    value: float
    signature: str  # e.g. "BLEU|nrefs:5|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu wants one stream per reference position; None pads hypotheses that have fewer references."""
    width = max((len(refs) for refs in references), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def _nrefs(references: list[list[str]]) -> str:
    counts = sorted({len(refs) for refs in references})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _sacrebleu(metric_class, label: str) -> Callable[[list[str], list[list[str]]], CorpusScore]:
    def score(hypotheses: list[str], references: list[list[str]]) -> CorpusScore:
        metric = metric_class()
        value = metric.corpus_score(hypotheses, reference_streams(references)).score
        # sacrebleu's signature counts the reference streams; with None padding that is the largest count.
        return CorpusScore(float(value), f"{label}|{metric.get_signature()}")

    return score


def _bleu(hypotheses, references) -> CorpusScore:
    import sacrebleu

    return _sacrebleu(sacrebleu.BLEU, "BLEU")(hypotheses, references)


def _chrf(hypotheses, references) -> CorpusScore:
    import sacrebleu

    return _sacrebleu(sacrebleu.CHRF, "chrF")(hypotheses, references)


def _jiwer(name: str) -> Callable[[list[str], list[list[str]]], CorpusScore]:
    def score(hypotheses: list[str], references: list[list[str]]) -> CorpusScore:
        import jiwer

        measure = jiwer.wer if name == "wer" else jiwer.cer
        # jiwer refuses an empty hypothesis string only when the reference is empty too; a placeholder keeps an
        # empty output counted as all deletions rather than an error.
        value = measure([refs[0] for refs in references], [h if h.strip() else "<empty>" for h in hypotheses])
        return CorpusScore(float(value), f"{name.upper()}|nrefs:1 (first of {_nrefs(references)})|"
                                         f"jiwer:{version('jiwer')}")

    return score


def _cider_d(hypotheses, references) -> CorpusScore:
    from unforced.rewards.cider import CiderD

    value = float(np.mean(CiderD(None)(hypotheses, references))) if hypotheses else 0.0
    return CorpusScore(value, f"CIDEr-D|nrefs:{_nrefs(references)}|df:scored-set|n:4|sigma:6")


def _exact_match(hypotheses, references) -> CorpusScore:
    from unforced.rewards import exact_match

    value = float(np.mean(exact_match(hypotheses, references))) if hypotheses else 0.0
    return CorpusScore(value, f"exact_match|nrefs:{_nrefs(references)}|any-reference|whitespace-collapsed")


CORPUS_METRICS: dict[str, Callable[[list[str], list[list[str]]], CorpusScore]] = {
    "bleu": _bleu,
    "chrf": _chrf,
    "wer": _jiwer("wer"),
    "cer": _jiwer("cer"),
    "cider_d": _cider_d,
    "exact_match": _exact_match,
}

# Whether a larger value is better (WER and CER are error rates).
HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "wer": False, "cer": False, "cider_d": True, "exact_match": True}


def corpus_score(name: str, hypotheses: list[str], references: list[list[str]]) -> CorpusScore:
    """The corpus metric `name` of `hypotheses` against all their `references`, with its signature."""
    if name not in CORPUS_METRICS:
        raise UnforcedError(f"unknown metric {name!r}; known: {', '.join(CORPUS_METRICS)}")
    check_batch(hypotheses, references)
    return CORPUS_METRICS[name](list(hypotheses), [list(refs) for refs in references])


def short_references_warning(name: str, references: list[list[str]], order: int = 4) -> str | None:
    """A warning when corpus BLEU is computed on references too short for its n-gram order: with most
    references under `order` words, one matched 4-gram flips corpus BLEU between 0 and a high score."""
    if name != "bleu" or not references:
        return None
    short = sum(max(len(r.split()) for r in refs) < order for refs in references)
    if short * 2 < len(references):
        return None
    return (f"{short} of {len(references)} items have no reference of {order} words or more: corpus BLEU-{order} "
            f"is 0 unless some hypothesis matches a {order}-gram, so it jumps between 0 and high values; "
            f"read chrF or token accuracy instead")


__all__ = ["CORPUS_METRICS", "HIGHER_IS_BETTER", "CorpusScore", "corpus_score", "reference_streams",
           "short_references_warning"]
