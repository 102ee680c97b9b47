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


def _ngram_counts(words: list[str], n: int, sizes: list[int] | None = None) -> Counter[tuple[str, ...]]:
    """Counts of the 1..n-grams of `words`, in order of n; `sizes` gets the number of distinct ones per n."""
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        # zip of k shifted copies yields the k-grams as tuples, and Counter counts them in C.
        counts.update(zip(*[words[i:] for i in range(k)], strict=False))
        if sizes is not None:
            sizes.append(len(counts))
    return counts


class _Vectors(NamedTuple):
    """The tf-idf vectors of several sentences, sparse and flat: one entry per distinct n-gram of a sentence."""

    ids: np.ndarray  # (entries,) n-gram ids; -1 for a hypothesis n-gram that no reference has
    weights: np.ndarray  # (entries,) tf * idf
    orders: np.ndarray  # (entries,) n-gram length - 1
    owners: np.ndarray  # (entries,) which sentence
    norms: np.ndarray  # (sentences, n) one Euclidean norm per order
    lengths: np.ndarray  # (sentences,) the reference code's length: bigrams (words - 1), see CiderD


def _grow(array: np.ndarray, used: int, values: np.ndarray) -> np.ndarray:
    """`array` with `values` written after its first `used` rows, doubling its capacity when full."""
    needed = used + len(values)
    if needed > len(array):
        bigger = np.empty((max(needed, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
        bigger[:used] = array[:used]
        array = bigger
    array[used:needed] = values
    return array


class _DocumentFrequencies:
    """Document frequencies of one reference corpus, and the tf-idf vectors of its references once computed.

    df(g) = the number of items (images) whose references contain n-gram g; log_size = log(number of items);
    idf(g) = log_size - log(max(1, df(g))), so an n-gram the corpus lacks weighs log_size.
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
            frequency.update({g for ref in refs for g in _ngram_counts(ref.split(), n)})
        self.n = n
        self.log_size = math.log(len(corpus))
        # Every corpus n-gram gets an id now; n-grams of references outside the corpus get theirs later.
        self.ngram_ids: dict[tuple[str, ...], int] = {g: i for i, g in enumerate(frequency)}
        self._idf = [self.log_size - math.log(df) for df in frequency.values()]
        self._idf_array = np.asarray([*self._idf, self.log_size], dtype=np.float64)
        # The references' vectors, flat (CSR-like) so that a batch gathers them with one index: entries of
        # reference r are rows starts[r] : starts[r] + sizes[r], sorted by n-gram id.
        self.reference_rows: dict[str, int] = {}
        self._ids = np.empty(0, dtype=np.int32)
        self._weights = np.empty(0, dtype=np.float64)
        self._orders = np.empty(0, dtype=np.int16)
        self._entries = 0
        self._starts = np.empty(0, dtype=np.int64)
        self._sizes = np.empty(0, dtype=np.int64)
        self._norms = np.empty((0, n), dtype=np.float64)
        self._lengths = np.empty(0, dtype=np.int64)

    def vectors(self, texts: Sequence[str], register: bool) -> _Vectors:
        n, ngram_ids = self.n, self.ngram_ids
        ids: list[int] = []
        term_frequencies: list[int] = []
        sizes: list[int] = []  # cumulative distinct n-gram counts, n per sentence
        lengths: list[int] = []
        for text in texts:
            words = text.split()
            counts = _ngram_counts(words, n, sizes)
            if register:
                for g in counts:
                    if g not in ngram_ids:
                        ngram_ids[g] = len(ngram_ids)
                        self._idf.append(self.log_size)
                ids.extend([ngram_ids[g] for g in counts])
            else:
                # A hypothesis n-gram that no reference has can never match: no id, no growth of the table.
                ids.extend([ngram_ids.get(g, -1) for g in counts])
            term_frequencies.extend(counts.values())
            lengths.append(len(words) - 1 if n >= 2 and len(words) >= 2 else 0)
        if len(self._idf_array) != len(self._idf) + 1:
            # The extra last entry is what id -1 (an n-gram of no reference, df = 0) reads: log_size.
            self._idf_array = np.asarray([*self._idf, self.log_size], dtype=np.float64)
        ids_array = np.asarray(ids, dtype=np.int64)
        per_order = np.diff(np.asarray(sizes, dtype=np.int64).reshape(len(texts), n), axis=1, prepend=0)
        orders_array = np.repeat(np.tile(np.arange(n), len(texts)), per_order.ravel())
        owners_array = np.repeat(np.arange(len(texts)), per_order.sum(axis=1))
        weights = np.asarray(term_frequencies, dtype=np.float64) * self._idf_array[ids_array]
        squares = np.bincount(owners_array * n + orders_array, weights=weights**2, minlength=len(texts) * n)
        norms = np.sqrt(squares.astype(np.float64)).reshape(len(texts), n)  # astype: no entries gives ints
        return _Vectors(ids_array, weights, orders_array, owners_array, norms, np.asarray(lengths))

    def _store(self, texts: list[str]) -> None:
        new = self.vectors(texts, register=True)
        order = np.lexsort((new.ids, new.owners))  # by reference, then by id
        sizes = np.bincount(new.owners, minlength=len(texts))
        count = len(self.reference_rows)
        self._starts = _grow(self._starts, count, self._entries + np.cumsum(sizes) - sizes)
        self._sizes = _grow(self._sizes, count, sizes)
        self._norms = _grow(self._norms, count, new.norms)
        self._lengths = _grow(self._lengths, count, new.lengths)
        self._ids = _grow(self._ids, self._entries, new.ids[order])
        self._weights = _grow(self._weights, self._entries, new.weights[order])
        self._orders = _grow(self._orders, self._entries, new.orders[order])
        self._entries += len(order)
        self.reference_rows.update(zip(texts, range(count, count + len(texts)), strict=True))

    def references(self, texts: list[str]) -> _Vectors:
        """The vectors of `texts` (computed once, then kept), each one's entries sorted by n-gram id."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.reference_rows]
        if missing:
            self._store(missing)
        rows = np.fromiter((self.reference_rows[t] for t in texts), dtype=np.int64, count=len(texts))
        sizes = self._sizes[rows]
        gather = np.repeat(self._starts[rows] - (np.cumsum(sizes) - sizes), sizes) + np.arange(sizes.sum())
        owners = np.repeat(np.arange(len(texts)), sizes)
        return _Vectors(
            self._ids[gather].astype(np.int64),
            self._weights[gather],
            self._orders[gather].astype(np.int64),
            owners,
            self._norms[rows],
            self._lengths[rows],
        )


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

    Equal to the COCO caption evaluation code: pycocoevalcap's `Cider`, which despite its name computes this
    clipped, length-penalised form, and the CiderD scorer of the SCST code (Rennie et al. 2017 train on it).
    As in that code, l(s) is the number of bigrams of s (words - 1), not of words, and a cosine whose norms
    include a zero is 0.

    `references_corpus` (one list of references per item, e.g. the training captions) fixes the document
    frequencies, as the SCST code does: they are computed once per corpus (cached by its content, so that
    another `CiderD` on the same corpus reuses them), each reference's tf-idf vector and norms once when it is
    first scored, and a batch then only vectorises its hypotheses. The references scored need not be in the
    corpus. The kept vectors grow with the distinct references scored: at most the corpus, if drawn from it.
    With None, each call takes the document frequencies from the references it is given (one document per
    hypothesis), exactly as pycocoevalcap scores a set.

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
        reference = statistics.references([r for refs in references for r in refs])  # pair order
        hypothesis = statistics.vectors(hypotheses, register=False)
        counts = np.array([len(refs) for refs in references], dtype=np.int64)  # (batch,)
        pair_hypothesis = np.repeat(np.arange(len(hypotheses)), counts)  # (pairs,) hypothesis of each pair
        pairs = len(pair_hypothesis)
        width = len(statistics.ngram_ids) + 1  # key = pair * width + id orders entries by pair, then id

        # Reference side, already sorted because each vector's ids are sorted and pairs come in order.
        reference_keys = reference.owners * width + reference.ids
        dot = np.zeros(pairs * n, dtype=np.float64)
        known = hypothesis.ids >= 0
        if reference_keys.size and known.any():
            # Hypothesis side: each hypothesis's known n-grams, once per reference of that hypothesis.
            ids, weights, owners = hypothesis.ids[known], hypothesis.weights[known], hypothesis.owners[known]
            repeats = counts[owners]  # (known entries,)
            entry = np.repeat(np.arange(len(ids)), repeats)
            within = np.arange(len(entry)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
            pair = (np.cumsum(counts) - counts)[owners[entry]] + within
            hypothesis_keys = pair * width + ids[entry]
            position = np.minimum(np.searchsorted(reference_keys, hypothesis_keys), len(reference_keys) - 1)
            hit = reference_keys[position] == hypothesis_keys
            position = position[hit]
            own, theirs = weights[entry[hit]], reference.weights[position]
            # CIDEr-D clips the candidate's weight to the reference's, so repeating an n-gram cannot pay.
            products = np.minimum(own, theirs) * theirs if self._clip_and_penalise else own * theirs
            slot = pair[hit] * n + reference.orders[position]
            dot = np.bincount(slot, weights=products, minlength=pairs * n).astype(np.float64)
        dot = dot.reshape(pairs, n)

        hypothesis_norms = hypothesis.norms[pair_hypothesis]  # (pairs, n)
        denominator = hypothesis_norms * reference.norms
        cosine = np.divide(dot, denominator, out=dot.copy(), where=denominator != 0)
        if self._clip_and_penalise:
            delta = hypothesis.lengths[pair_hypothesis] - reference.lengths
            cosine *= np.exp(-(delta.astype(np.float64) ** 2) / (2.0 * self.sigma**2))[:, None]
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
