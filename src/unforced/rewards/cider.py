"""CIDEr and CIDEr-D (Vedantam et al. 2015) with the document frequencies of a reference corpus computed once.

CIDEr-D, as SCST (Rennie et al. 2017) uses it, clips hypothesis n-gram counts to the reference's, applies a
Gaussian length penalty (sigma 6) and scales by 10. Values equal pycocoevalcap's `Cider` (which computes CIDEr-D,
with document frequencies from the batch) and the SCST code's `CiderD` scorer (document frequencies from a fixed
corpus); tests hold them equal. Text is split on whitespace: the COCO evaluation's PTB tokenizer is not applied.
"""

from __future__ import annotations

import hashlib
import itertools
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
                ids.extend(map(ngram_ids.get, counts, itertools.repeat(-1)))
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


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `keys`, sorted, and how often each occurs, as `np.unique(keys, return_counts=True)`.

    Measured on 5,000 x 5 captions (numpy 2.4, a loaded 2-core machine): on the 1.1 million (sentence, n-gram)
    keys np.unique with counts took 101 ms, this 21 ms; on the (item, n-gram) keys np.unique without counts
    (which hashes) took 825 ms against this sort's ~20 ms.
    """
    keys = np.sort(keys)
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if keys.size else keys
    return keys[first], np.diff(first, append=len(keys))


def _set_vectors(
    hypotheses: list[str], references: list[list[str]], n: int
) -> tuple[_Vectors, _Vectors, int]:
    """Hypothesis and reference vectors with df from `references` itself (one document per hypothesis), as
    pycocoevalcap scores a set; and the number of n-gram ids (the width of a pair's keys in `CiderD._score`).

    Everything after splitting into words is numpy: a k-gram is numbered by the rank of (its (k-1)-gram's
    number, its last word's) among the set's k-grams, so that equal n-grams get equal ids with no tuple built
    and hashed.
    """
    flat = [r for refs in references for r in refs]
    split = [text.split() for text in itertools.chain(flat, hypotheses)]
    sentences = len(split)
    sentence_lengths = np.fromiter(map(len, split), dtype=np.int64, count=sentences)
    words = list(itertools.chain.from_iterable(split))
    vocabulary = dict(zip(dict.fromkeys(words), itertools.count()))
    word_ids = np.fromiter(map(vocabulary.__getitem__, words), dtype=np.int64, count=len(words))  # (tokens,)
    sentence_of = np.repeat(np.arange(sentences), sentence_lengths)  # (tokens,)
    ends = np.cumsum(sentence_lengths)
    remaining = np.repeat(ends, sentence_lengths) - np.arange(len(words))  # words from this one to the end

    owner_parts, gram_parts = [sentence_of], [word_ids]
    codes, order_sizes = word_ids, [len(vocabulary)]
    for k in range(2, n + 1):
        starts = np.flatnonzero(remaining >= k)  # tokens that begin a k-gram
        # < tokens * vocabulary: no overflow below ~3e9 words.
        pairs = codes[starts] * max(len(vocabulary), 1) + word_ids[starts + k - 1]
        unique, inverse = np.unique(pairs, return_inverse=True)
        codes = np.zeros(len(words), dtype=np.int64)
        codes[starts] = inverse  # read next round only where remaining >= k + 1, a subset of `starts`
        owner_parts.append(sentence_of[starts])
        gram_parts.append(sum(order_sizes) + inverse)
        order_sizes.append(len(unique))
    grams = max(sum(order_sizes), 1)
    # One key per (sentence, distinct n-gram), sorted by sentence then n-gram, with its count.
    keys, term_frequencies = _distinct(np.concatenate(owner_parts) * grams + np.concatenate(gram_parts))
    owners = keys // grams
    ids = keys - owners * grams
    orders = np.repeat(np.arange(n), order_sizes)[ids]

    # References are sentences 0..R-1 and keys are sorted by sentence: their entries come first.
    split_at = int(np.searchsorted(owners, len(flat)))
    item_of_reference = np.repeat(np.arange(len(references)), [len(refs) for refs in references])
    documents, _ = _distinct(item_of_reference[owners[:split_at]] * grams + ids[:split_at])
    document_frequency = np.bincount(documents % grams, minlength=grams)  # (grams,)
    log_size = math.log(len(references))
    idf = log_size - np.log(np.maximum(document_frequency, 1))
    weights = term_frequencies * idf[ids]
    squares = np.bincount(owners * n + orders, weights=weights**2, minlength=sentences * n)
    norms = np.sqrt(squares.astype(np.float64)).reshape(sentences, n)
    lengths = np.maximum(sentence_lengths - 1, 0) if n >= 2 else np.zeros(sentences, dtype=np.int64)

    reference = _Vectors(ids[:split_at], weights[:split_at], orders[:split_at], owners[:split_at],
                         norms[: len(flat)], lengths[: len(flat)])
    hypothesis_ids = ids[split_at:]
    # An n-gram of no reference (df 0) can never match: -1, as `_DocumentFrequencies.vectors` marks it.
    hypothesis_ids = np.where(document_frequency[hypothesis_ids] > 0, hypothesis_ids, -1)
    hypothesis = _Vectors(hypothesis_ids, weights[split_at:], orders[split_at:], owners[split_at:] - len(flat),
                          norms[len(flat):], lengths[len(flat):])
    return hypothesis, reference, grams + 1


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
    hypothesis), exactly as pycocoevalcap scores a set; n-grams are then counted with numpy over the whole set
    at once (`_set_vectors`), so that one call scores a test set of thousands of captions.

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
        if not hypotheses:
            return np.zeros(0, dtype=np.float64)
        if self.statistics is None:
            hypothesis, reference, width = _set_vectors(hypotheses, references, self.n)
        else:
            # References first: they register the n-gram ids that hypothesis n-grams are looked up against.
            reference = self.statistics.references([r for refs in references for r in refs])  # pair order
            hypothesis = self.statistics.vectors(hypotheses, register=False)
            width = len(self.statistics.ngram_ids) + 1
        return self._score(hypothesis, reference, [len(refs) for refs in references], width)

    def _score(
        self, hypothesis: _Vectors, reference: _Vectors, reference_counts: list[int], width: int
    ) -> np.ndarray:
        """Scores from the vectors: references in pair order (those of hypothesis 0, then of 1, ...); n-gram
        ids below `width`, distinct within each sentence."""
        n = self.n
        counts = np.array(reference_counts, dtype=np.int64)  # (batch,)
        pair_hypothesis = np.repeat(np.arange(len(counts)), counts)  # (pairs,) hypothesis of each pair
        pairs = len(pair_hypothesis)
        dot = np.zeros(pairs * n, dtype=np.float64)
        known = hypothesis.ids >= 0
        if reference.ids.size and known.any():
            # Each reference entry looks its n-gram up in its hypothesis's vector, keyed hypothesis * width + id:
            # only n-grams of both count, since g_k(s_j) = 0 zeroes the rest.
            hypothesis_keys = hypothesis.owners[known] * width + hypothesis.ids[known]
            order = np.argsort(hypothesis_keys)
            hypothesis_keys, hypothesis_weights = hypothesis_keys[order], hypothesis.weights[known][order]
            query = pair_hypothesis[reference.owners] * width + reference.ids  # (reference entries,)
            position = np.minimum(np.searchsorted(hypothesis_keys, query), len(hypothesis_keys) - 1)
            hit = hypothesis_keys[position] == query
            own, theirs = hypothesis_weights[position[hit]], reference.weights[hit]
            # CIDEr-D clips the candidate's weight to the reference's, so repeating an n-gram cannot pay.
            products = np.minimum(own, theirs) * theirs if self._clip_and_penalise else own * theirs
            slot = reference.owners[hit] * n + reference.orders[hit]
            dot = np.bincount(slot, weights=products, minlength=pairs * n).astype(np.float64)
        dot = dot.reshape(pairs, n)

        hypothesis_norms = hypothesis.norms[pair_hypothesis]  # (pairs, n)
        denominator = hypothesis_norms * reference.norms
        cosine = np.divide(dot, denominator, out=dot.copy(), where=denominator != 0)
        if self._clip_and_penalise:
            delta = hypothesis.lengths[pair_hypothesis] - reference.lengths
            cosine *= np.exp(-(delta.astype(np.float64) ** 2) / (2.0 * self.sigma**2))[:, None]
        per_hypothesis = np.bincount(pair_hypothesis, weights=cosine.mean(axis=1), minlength=len(counts))
        return 10.0 * per_hypothesis / counts


class Cider(CiderD):
    """CIDEr without the -D changes: no clipping, no length penalty (Vedantam et al. 2015, eq. 2-3).

        CIDEr_n(c, S) = 10/m * sum_j g^n(c) . g^n(s_j) / (|g^n(c)| |g^n(s_j)|),   CIDEr = mean_n CIDEr_n

    The x10 follows the authors' code (vrama91/cider, `pyciderevalcap/cider`). Everything else as `CiderD`.
    """

    _clip_and_penalise = False

    def __init__(self, references_corpus: list[list[str]] | None = None, n: int = 4) -> None:
        super().__init__(references_corpus, n=n)
