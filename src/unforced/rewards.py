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

import hashlib
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from rapidfuzz.distance import Levenshtein  # rapidfuzz comes with jiwer, which computes WER with it

from unforced.errors import UnforcedError

Reward = Callable[[list[str], list[list[str]]], np.ndarray]


def _check_batch(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise UnforcedError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference lists: "
            "give one list of references per hypothesis"
        )
    for i, (hypothesis, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if not isinstance(hypothesis, str):
            raise UnforcedError(f"hypothesis {i} is a {type(hypothesis).__name__}, not a string")
        if isinstance(refs, str):
            raise UnforcedError(
                f"references[{i}] is a string: each hypothesis takes a list of reference strings"
            )
        if len(refs) == 0:
            raise UnforcedError(f"hypothesis {i} has no reference")


# --- BLEU and chrF (sacrebleu) -------------------------------------------------------------------------------


class _SentenceScorer:
    """Per-sentence sacrebleu scores that extract each reference set's n-grams once.

    sacrebleu's `sentence_score` re-extracts the references' n-grams on every call, and with five references
    they are most of the work; in SCST the same references come back for every sample and every epoch. We run
    the steps `sentence_score` runs (preprocess, reference n-grams, segment statistics, aggregate), so the
    value is identical; those are private sacrebleu methods, and the equality tests are what guards them.
    Reusing one metric object instead of calling `sacrebleu.sentence_bleu` (which builds a BLEU each call)
    saves only ~4% here; the cache of references is what pays.
    """

    def __init__(self, metric: Any, cache_size: int = 65_536) -> None:
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


def _reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    # sacrebleu wants one stream per reference position; None pads hypotheses that have fewer references.
    width = max((len(refs) for refs in references), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU, `sacrebleu.corpus_bleu` (statistics summed over the corpus before the geometric mean), 0-100."""
    import sacrebleu

    _check_batch(hypotheses, references)
    return float(sacrebleu.corpus_bleu(hypotheses, _reference_streams(references)).score)


def corpus_chrf(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus chrF, `sacrebleu.corpus_chrf`, 0-100."""
    import sacrebleu

    _check_batch(hypotheses, references)
    return float(sacrebleu.corpus_chrf(hypotheses, _reference_streams(references)).score)


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


# --- CIDEr and CIDEr-D ---------------------------------------------------------------------------------------


def _ngram_counts(text: str, n: int) -> Counter[tuple[str, ...]]:
    words = text.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class _Vector(NamedTuple):
    """A sentence's tf-idf vector, sparse: one entry per distinct n-gram."""

    ids: np.ndarray  # (entries,) n-gram ids, sorted; -1 for a hypothesis n-gram no reference has
    weights: np.ndarray  # (entries,) tf * idf
    orders: np.ndarray  # (entries,) n-gram length - 1
    norms: np.ndarray  # (n,) one Euclidean norm per order
    length: int  # the reference code's length: the number of bigrams (words - 1), see CiderD


class _DocumentFrequencies:
    """Document frequencies of one reference corpus, and the tf-idf vectors of its references once computed.

    df(g) = the number of items (images) whose references contain n-gram g; log_size = log(number of items).
    """

    def __init__(self, corpus: Sequence[Sequence[str]], n: int) -> None:
        if len(corpus) == 0:
            raise UnforcedError("the reference corpus for CIDEr is empty")
        frequency: Counter[tuple[str, ...]] = Counter()
        for refs in corpus:
            if isinstance(refs, str):
                raise UnforcedError(
                    "the reference corpus must be a list of lists of references, not of strings"
                )
            frequency.update({g for ref in refs for g in _ngram_counts(ref, n)})
        self.n = n
        self.frequency = dict(frequency)
        self.log_size = math.log(len(corpus))
        self.ngram_ids: dict[tuple[str, ...], int] = {}
        self.references: dict[str, _Vector] = {}

    def _vector(self, text: str, register: bool) -> _Vector:
        counts = _ngram_counts(text, self.n)
        if register:
            ids = [self.ngram_ids.setdefault(g, len(self.ngram_ids)) for g in counts]
        else:
            # A hypothesis n-gram unseen in every reference can never match: no id, no growth of the id table.
            ids = [self.ngram_ids.get(g, -1) for g in counts]
        # idf = log(|corpus|) - log(max(1, df)): an n-gram absent from the corpus counts as df = 1.
        weights = [
            tf * (self.log_size - math.log(max(1.0, self.frequency.get(g, 0.0)))) for g, tf in counts.items()
        ]
        orders = [len(g) - 1 for g in counts]
        order = np.argsort(ids, kind="stable")  # sorted ids let a batch match n-grams with one searchsorted
        ids_array = np.asarray(ids, dtype=np.int64)[order]
        weights_array = np.asarray(weights, dtype=np.float64)[order]
        orders_array = np.asarray(orders, dtype=np.int64)[order]
        # astype: bincount of no entries returns integers
        squares = np.bincount(orders_array, weights=weights_array**2, minlength=self.n).astype(np.float64)
        norms = np.sqrt(squares)
        words = len(text.split())
        length = words - 1 if self.n >= 2 and words >= 2 else 0
        return _Vector(ids_array, weights_array, orders_array, norms, length)

    def reference(self, text: str) -> _Vector:
        vector = self.references.get(text)
        if vector is None:
            vector = self.references[text] = self._vector(text, register=True)
        return vector

    def hypothesis(self, text: str) -> _Vector:
        return self._vector(text, register=False)


_CORPUS_CACHE: OrderedDict[tuple[str, int], _DocumentFrequencies] = OrderedDict()
_CORPUS_CACHE_SIZE = 4


def _corpus_digest(corpus: Sequence[Sequence[str]]) -> str:
    # Keyed by content, not identity: a corpus rebuilt from the same data (a new list) hits the cache too.
    text = "\x1d".join("\x1e".join(refs) for refs in corpus)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _document_frequencies(corpus: Sequence[Sequence[str]], n: int) -> _DocumentFrequencies:
    key = (_corpus_digest(corpus), n)
    statistics = _CORPUS_CACHE.get(key)
    if statistics is None:
        statistics = _CORPUS_CACHE[key] = _DocumentFrequencies(corpus, n)
        if len(_CORPUS_CACHE) > _CORPUS_CACHE_SIZE:
            _CORPUS_CACHE.popitem(last=False)
    else:
        _CORPUS_CACHE.move_to_end(key)
    return statistics


class CiderD:
    """CIDEr-D (Vedantam et al. 2015, "CIDEr: Consensus-based image description evaluation"), the SCST reward.

    With g_k(s) = tf_k(s) * log(|D| / max(1, df_k)) the tf-idf weight of n-gram k in sentence s (tf the raw
    count, df over the items of the reference corpus D), for a candidate c with references S = {s_1..s_m}:

        CIDEr-D_n(c, S) = 10/m * sum_j exp(-(l(c) - l(s_j))^2 / (2 sigma^2))
                                 * sum_k min(g_k(c), g_k(s_j)) g_k(s_j) / (|g^n(c)| |g^n(s_j)|)
        CIDEr-D(c, S) = 1/N * sum_{n=1..N} CIDEr-D_n(c, S)          (N = n = 4, sigma = 6)

    Equal to the COCO caption evaluation code (pycocoevalcap's `Cider`, which despite its name computes this
    clipped, length-penalised form; Rennie et al. 2017 train on it as CIDEr-D). As in that code, l(s) is the
    number of bigrams of s (words - 1), not the number of words, and a cosine with a zero norm is left unscaled.

    `references_corpus` (one list of references per item) fixes the document frequencies, as the SCST code
    does with the training references: they and the references' tf-idf vectors and norms are computed once,
    cached by the corpus's content, and each batch only vectorises its hypotheses. With None, each call takes
    the document frequencies from the references it is given, exactly as pycocoevalcap scores a set.

    Text is split on whitespace as given. The COCO evaluation first runs the Java PTB tokenizer (lowercasing,
    splitting punctuation off); we do not: pass text already tokenized that way.
    """

    _clip_and_penalise = True

    def __init__(
        self, references_corpus: list[list[str]] | None = None, n: int = 4, sigma: float = 6.0
    ) -> None:
        if n < 1:
            raise UnforcedError(f"CIDEr needs n >= 1, got {n}")
        self.n = n
        self.sigma = sigma
        self.statistics = None if references_corpus is None else _document_frequencies(references_corpus, n)

    def __call__(self, hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
        _check_batch(hypotheses, references)
        statistics = (
            self.statistics if self.statistics is not None else _DocumentFrequencies(references, self.n)
        )
        n = self.n
        # References first: they register the n-gram ids that hypothesis n-grams are looked up against.
        reference_vectors = [statistics.reference(r) for refs in references for r in refs]
        hypothesis_vectors = [statistics.hypothesis(h) for h in hypotheses]
        counts = np.array([len(refs) for refs in references], dtype=np.int64)  # (batch,)
        pair_hypothesis = np.repeat(np.arange(len(hypotheses)), counts)  # (pairs,) hypothesis of each pair
        pairs = len(pair_hypothesis)
        width = len(statistics.ngram_ids) + 1  # key = pair * width + id orders entries by pair, then id

        # Reference side, already sorted because each vector's ids are sorted and pairs come in order.
        reference_sizes = np.array([len(v.ids) for v in reference_vectors], dtype=np.int64)
        reference_keys = np.repeat(np.arange(pairs), reference_sizes) * width
        if reference_keys.size:
            reference_keys += np.concatenate([v.ids for v in reference_vectors])
            reference_weights = np.concatenate([v.weights for v in reference_vectors])
            reference_orders = np.concatenate([v.orders for v in reference_vectors])

        # Hypothesis side: each hypothesis's known n-grams, repeated once per reference of it.
        known = [v.ids >= 0 for v in hypothesis_vectors]
        hypothesis_sizes = np.array([k.sum() for k in known], dtype=np.int64)  # (batch,)
        repeats = np.repeat(counts, hypothesis_sizes)  # per known entry: how many pairs it appears in
        dot = np.zeros(pairs * n, dtype=np.float64)
        if repeats.size and reference_keys.size:
            ids = np.concatenate([v.ids[k] for v, k in zip(hypothesis_vectors, known, strict=True)])
            weights = np.concatenate([v.weights[k] for v, k in zip(hypothesis_vectors, known, strict=True)])
            entry = np.repeat(np.arange(len(ids)), repeats)
            first_pair = np.repeat(np.cumsum(counts) - counts, hypothesis_sizes)[entry]
            within = np.arange(len(entry)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
            hypothesis_keys = (first_pair + within) * width + ids[entry]
            position = np.minimum(np.searchsorted(reference_keys, hypothesis_keys), len(reference_keys) - 1)
            hit = reference_keys[position] == hypothesis_keys
            position = position[hit]
            own, theirs = weights[entry[hit]], reference_weights[position]
            # CIDEr-D clips the candidate's weight to the reference's, so repeating an n-gram cannot pay.
            products = np.minimum(own, theirs) * theirs if self._clip_and_penalise else own * theirs
            slot = (hypothesis_keys[hit] // width) * n + reference_orders[position]
            dot = np.bincount(slot, weights=products, minlength=pairs * n).astype(np.float64)
        dot = dot.reshape(pairs, n)

        hypothesis_norms = np.stack([v.norms for v in hypothesis_vectors])[pair_hypothesis]  # (pairs, n)
        reference_norms = np.stack([v.norms for v in reference_vectors])  # (pairs, n)
        denominator = hypothesis_norms * reference_norms
        cosine = np.divide(dot, denominator, out=dot.copy(), where=denominator != 0)
        if self._clip_and_penalise:
            lengths = np.array([v.length for v in hypothesis_vectors], dtype=np.float64)[pair_hypothesis]
            delta = lengths - np.array([v.length for v in reference_vectors], dtype=np.float64)
            cosine *= np.exp(-(delta**2) / (2.0 * self.sigma**2))[:, None]
        per_hypothesis = np.bincount(pair_hypothesis, weights=cosine.mean(axis=1), minlength=len(hypotheses))
        return 10.0 * per_hypothesis / counts


class Cider(CiderD):
    """CIDEr without the -D changes: no clipping, no length penalty (Vedantam et al. 2015, eq. 2-3).

        CIDEr_n(c, S) = 10/m * sum_j g^n(c) . g^n(s_j) / (|g^n(c)| |g^n(s_j)|),   CIDEr = mean_n CIDEr_n

    The x10 follows the authors' code (vrama91/cider, `pyciderevalcap/cider`). Everything else as `CiderD`.
    """

    _clip_and_penalise = False

    def __init__(self, references_corpus: list[list[str]] | None = None, n: int = 4) -> None:
        super().__init__(references_corpus, n=n)


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
