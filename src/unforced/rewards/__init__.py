"""Sequence rewards: one call scores a batch of hypotheses against their references.

A reward is any callable of the contract

    Reward = Callable[[list[str], list[list[str]]], np.ndarray]

hypotheses and, for each, a list of its references in; one float64 per hypothesis out; higher is better.
SCST (Rennie et al. 2017, "Self-critical sequence training for image captioning") maximises such a reward.

Values follow the reference implementations, and tests hold them equal: BLEU and chrF are sacrebleu's, WER and
CER jiwer's, CIDEr-D the COCO caption evaluation's (pycocoevalcap, and the SCST code's CiderD scorer when the
document frequencies come from a fixed training corpus).

Scales. `sentence_*` and `corpus_*` return each metric on its usual scale: BLEU and chrF 0-100, WER and CER as
rates (lower is better). The rewards (`bleu`, `chrf`, `neg_wer`, ...) are on one scale, higher is better:
BLEU and chrF divided by 100 (so in [0, 1]), WER, CER and edit distance negated. `METRIC_SCALE[name] * reward`
gives the usual metric back.
"""

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein  # rapidfuzz comes with jiwer, which computes WER with it

from unforced.errors import UnforcedError
from unforced.rewards.batch import check_batch as _check_batch
from unforced.rewards.cider import Cider, CiderD
from unforced.rewards.corpus import reference_streams

Reward = Callable[[list[str], list[list[str]]], np.ndarray]


# --- BLEU and chrF (sacrebleu) -------------------------------------------------------------------------------


class _SentenceScorer:
    """Per-sentence sacrebleu scores that extract each reference set's n-grams once.

    sacrebleu's `sentence_score` re-extracts the references' n-grams on every call, and with five references
    they are most of the work; in SCST the same references come back for every sample and every epoch. We run
    the steps `sentence_score` runs (preprocess, reference n-grams, segment statistics, aggregate), so the
    value is identical; those are private sacrebleu methods, and the equality tests are what guards them.
    Reusing one metric object instead of calling `sacrebleu.sentence_bleu` (which builds a BLEU each call)
    saves only a few per cent; the cache pays when references repeat (several samples per item, the greedy
    baseline, a corpus smaller than the cache). It holds the `cache_size` most recent reference sets, about
    25 KB each for five captions (~50 MB full).
    """

    def __init__(self, metric: Any, cache_size: int = 2048) -> None:
        self.metric = metric
        self.cache_size = cache_size
        self._references: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    def _reference_info(self, references: Sequence[str]) -> Any:
        key = tuple(references)
        info = self._references.get(key)
        if info is None:
            info = self.metric._extract_reference_info([self.metric._preprocess_segment(r) for r in key])
            self._references[key] = info
            if len(self._references) > self.cache_size:
                self._references.popitem(last=False)
        else:
            self._references.move_to_end(key)
        return info

    def __call__(self, hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
        _check_batch(hypotheses, references)
        metric = self.metric
        scores = np.empty(len(hypotheses), dtype=np.float64)
        for i, (hypothesis, refs) in enumerate(zip(hypotheses, references, strict=True)):
            statistics = metric._compute_segment_statistics(
                metric._preprocess_segment(hypothesis), self._reference_info(refs)
            )
            scores[i] = metric._aggregate_and_compute([statistics]).score
        return scores


_SCORERS: dict[str, _SentenceScorer] = {}


def _scorer(name: str) -> _SentenceScorer:
    # Imported on first use: sacrebleu costs ~90 ms to import and most commands never score BLEU.
    if name not in _SCORERS:
        from sacrebleu.metrics import BLEU, CHRF

        # The settings of sacrebleu.sentence_bleu / sentence_chrf: 13a tokenizer, exp smoothing, effective order.
        _SCORERS[name] = _SentenceScorer(BLEU(effective_order=True) if name == "bleu" else CHRF())
    return _SCORERS[name]


def sentence_bleu(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Per-sentence BLEU (Papineni et al. 2002), equal to `sacrebleu.sentence_bleu`, on sacrebleu's 0-100 scale.

    BLEU = BP * exp(mean_n log p_n), p_n the clipped n-gram precisions (n <= 4, orders without a match left
    out: effective order), BP = min(1, exp(1 - r / c)) with r the closest reference length; exp smoothing.
    """
    return _scorer("bleu")(hypotheses, references)


def sentence_chrf(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Per-sentence chrF (Popovic 2015; beta = 2, character 6-grams), equal to `sacrebleu.sentence_chrf`, 0-100."""
    return _scorer("chrf")(hypotheses, references)


def bleu(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """BLEU reward in [0, 1]: `sentence_bleu / 100`."""
    return sentence_bleu(hypotheses, references) / 100.0


def chrf(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """chrF reward in [0, 1]: `sentence_chrf / 100`."""
    return sentence_chrf(hypotheses, references) / 100.0


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU, `sacrebleu.corpus_bleu` (statistics summed over the corpus before the geometric mean), 0-100."""
    import sacrebleu

    _check_batch(hypotheses, references)
    return float(sacrebleu.corpus_bleu(hypotheses, reference_streams(references)).score)


def corpus_chrf(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus chrF, `sacrebleu.corpus_chrf`, 0-100."""
    import sacrebleu

    _check_batch(hypotheses, references)
    return float(sacrebleu.corpus_chrf(hypotheses, reference_streams(references)).score)


# --- WER, CER, edit distance, exact match --------------------------------------------------------------------

_WHITESPACE_RUN = re.compile(r"\s\s+")


def _jiwer_words(text: str) -> list[str]:
    # jiwer's default WER transform: runs of whitespace -> one space, strip, split on " " only.
    return [word for word in _WHITESPACE_RUN.sub(" ", text).strip().split(" ") if word]


def _error_rate(reference: Sequence[Any], hypothesis: Sequence[Any]) -> float:
    # jiwer: (S + D + I) / (H + S + D) = Levenshtein / len(reference); an empty reference gives the insertions.
    if not reference:
        return float(len(hypothesis))
    return Levenshtein.distance(reference, hypothesis) / len(reference)


def sentence_wer(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Word error rate of each hypothesis against its **first** reference, equal to `jiwer.wer` on that pair.

    WER = (S + D + I) / N, the word-level Levenshtein distance over the reference length N (jiwer takes one
    reference per hypothesis, so further references are ignored). Lower is better; `neg_wer` is the reward.
    """
    _check_batch(hypotheses, references)
    scores = np.empty(len(hypotheses), dtype=np.float64)
    for i, (hypothesis, refs) in enumerate(zip(hypotheses, references, strict=True)):
        # Words to integers, as jiwer does, so that Levenshtein compares exact words and never hashes.
        ids: dict[str, int] = {}
        reference_ids = [ids.setdefault(w, len(ids)) for w in _jiwer_words(refs[0])]
        hypothesis_ids = [ids.setdefault(w, len(ids)) for w in _jiwer_words(hypothesis)]
        scores[i] = _error_rate(reference_ids, hypothesis_ids)
    return scores


def sentence_cer(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Character error rate of each hypothesis against its **first** reference, equal to `jiwer.cer` on that pair.

    CER = character-level Levenshtein distance / reference length, both stripped of outer whitespace.
    """
    _check_batch(hypotheses, references)
    return np.array(
        [_error_rate(refs[0].strip(), h.strip()) for h, refs in zip(hypotheses, references, strict=True)],
        dtype=np.float64,
    )


def neg_wer(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Reward -WER (first reference), so that higher is better."""
    return -sentence_wer(hypotheses, references)


def neg_cer(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Reward -CER (first reference), so that higher is better."""
    return -sentence_cer(hypotheses, references)


def corpus_wer(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus WER, `jiwer.wer` over all pairs (errors summed, then divided by all reference words); first references."""
    import jiwer

    _check_batch(hypotheses, references)
    return float(jiwer.wer([refs[0] for refs in references], list(hypotheses)))


def corpus_cer(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus CER, `jiwer.cer` over all pairs; first references."""
    import jiwer

    _check_batch(hypotheses, references)
    return float(jiwer.cer([refs[0] for refs in references], list(hypotheses)))


def neg_edit_distance(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Reward -min_j Levenshtein(hypothesis, reference_j): characters, raw text, the closest reference."""
    _check_batch(hypotheses, references)
    return -np.array(
        [
            min(Levenshtein.distance(h, r) for r in refs)
            for h, refs in zip(hypotheses, references, strict=True)
        ],
        dtype=np.float64,
    )


def exact_match(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """Reward 1.0 when the hypothesis equals any reference once whitespace runs are collapsed and stripped."""
    _check_batch(hypotheses, references)
    return np.array(
        [
            float(" ".join(h.split()) in {" ".join(r.split()) for r in refs})
            for h, refs in zip(hypotheses, references, strict=True)
        ],
        dtype=np.float64,
    )


# --- Registry and guards ------------------------------------------------------------------------------------

# Every factory takes the reference corpus (used by CIDEr's document frequencies, ignored by the others).
REWARDS: dict[str, Callable[..., Reward]] = {
    "bleu": lambda references_corpus=None: bleu,
    "chrf": lambda references_corpus=None: chrf,
    "wer": lambda references_corpus=None: neg_wer,
    "neg_wer": lambda references_corpus=None: neg_wer,
    "cer": lambda references_corpus=None: neg_cer,
    "neg_cer": lambda references_corpus=None: neg_cer,
    "cider_d": lambda references_corpus=None: CiderD(references_corpus),
    "cider": lambda references_corpus=None: Cider(references_corpus),
    "exact_match": lambda references_corpus=None: exact_match,
    "neg_edit_distance": lambda references_corpus=None: neg_edit_distance,
}

# The usual value of each metric is METRIC_SCALE[name] * reward (e.g. BLEU 0-100, WER as a positive rate).
METRIC_SCALE: dict[str, float] = {
    "bleu": 100.0,
    "chrf": 100.0,
    "wer": -1.0,
    "neg_wer": -1.0,
    "cer": -1.0,
    "neg_cer": -1.0,
    "cider_d": 1.0,
    "cider": 1.0,
    "exact_match": 1.0,
    "neg_edit_distance": -1.0,
}


def get_reward(name_or_callable: str | Reward, references_corpus: list[list[str]] | None = None) -> Reward:
    """The reward registered under a name (`REWARDS`; "wer" and "cer" give -WER and -CER), or the callable itself.

    `references_corpus` fixes CIDEr's document frequencies (see `CiderD`); the other rewards ignore it.
    """
    if callable(name_or_callable):
        return name_or_callable
    if not isinstance(name_or_callable, str):
        raise UnforcedError(f"a reward is a name or a callable, not a {type(name_or_callable).__name__}")
    key = name_or_callable.strip().lower().replace("-", "_")
    if key not in REWARDS:
        raise UnforcedError(
            f"unknown reward {name_or_callable!r}; known rewards: {', '.join(sorted(REWARDS))} "
            "(or pass a callable (hypotheses, references) -> one float per hypothesis)"
        )
    return REWARDS[key](references_corpus=references_corpus)


def validate_rewards(values: Any, n: int) -> np.ndarray:
    """A reward's output as a float64 array of shape (n,); UnforcedError when it is not numbers of that shape.

    NaN and inf pass: what to do with them is the caller's choice (`safe_reward` reports them).
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise UnforcedError(
            f"a reward must return {n} numbers, one per hypothesis; got a {type(values).__name__}: {error}"
        ) from None
    if array.shape != (n,):
        raise UnforcedError(
            f"a reward must return one number per hypothesis, shape ({n},); got shape {array.shape}"
        )
    return array


def safe_reward(
    reward: Reward, hypotheses: list[str], references: list[list[str]]
) -> tuple[np.ndarray | None, str | None]:
    """(values, None), or (None, message) when the reward raised or returned NaN or inf.

    The training step skips such a batch and logs the message. A wrong shape is not skipped: it would recur on
    every batch, so `validate_rewards` raises UnforcedError.
    """
    try:
        values = reward(hypotheses, references)
    except Exception as error:  # a user's reward may raise anything; one bad batch must not end training
        return None, f"reward raised {type(error).__name__}: {error}"
    array = validate_rewards(values, len(hypotheses))
    bad = ~np.isfinite(array)
    if bad.any():
        return None, (
            f"reward returned {int(bad.sum())} non-finite value(s) (NaN or inf) of {len(array)}, "
            f"first at hypothesis {int(np.argmax(bad))}"
        )
    return array, None
