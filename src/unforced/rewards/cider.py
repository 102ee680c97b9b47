"""CIDEr and CIDEr-D (Vedantam et al. 2015) with the document frequencies of a reference corpus computed once.

CIDEr-D, as SCST (Rennie et al. 2017) uses it, clips hypothesis n-gram counts to the reference's, applies a
Gaussian length penalty (sigma 6) and scales by 10. Values equal pycocoevalcap's `Cider` (which computes CIDEr-D,
with document frequencies from the batch) and the SCST code's `CiderD` scorer (document frequencies from a fixed
corpus); tests hold them equal. Text is split on whitespace: the COCO evaluation's PTB tokenizer is not applied.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from unforced.errors import UnforcedError
from unforced.rewards.batch import check_batch


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
        check_batch(hypotheses, references)
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
