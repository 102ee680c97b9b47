import math
import random
from collections import defaultdict

import jiwer
import numpy as np
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from unforced.errors import UnforcedError
from unforced.rewards import (
    METRIC_SCALE,
    REWARDS,
    Cider,
    CiderD,
    bleu,
    chrf,
    corpus_bleu,
    corpus_cer,
    corpus_chrf,
    corpus_wer,
    exact_match,
    get_reward,
    neg_cer,
    neg_edit_distance,
    neg_wer,
    safe_reward,
    sentence_bleu,
    sentence_cer,
    sentence_chrf,
    sentence_wer,
    validate_rewards,
)

# --- A test-only reference port of the CIDEr-D scorer that SCST code uses ----------------------------------------
# No package on PyPI ships it (pyciderevalcap, ciderD: none; "cider" is an unrelated tool), so this is a port of
# ruotianluo/cider `pyciderevalcap/ciderD/ciderD_scorer.py` (vrama91/cider's scorer with the document
# frequencies loaded from a corpus), kept loop for loop: dict counts, each reference re-vectorised for each
# hypothesis. `test_reference_port_equals_pycocoevalcap` holds the port to the installed COCO code.


def _reference_precook(sentence, n):
    words = sentence.split()
    counts = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _reference_document_frequency(crefs):
    frequency = defaultdict(float)
    for refs in crefs:
        for ngram in {ngram for ref in refs for ngram in ref}:
            frequency[ngram] += 1
    return frequency


class ReferenceCiderD:
    """The SCST CiderD scorer: `compute_score(gts, res)` with gts {image_id: [refs]}, res [{image_id, caption}].

    `document_corpus` stands for its df pickle (prepro_ngrams.py: df over the training items, ref_len their
    number); None is its df_mode="corpus" (df from the scored set, as pycocoevalcap). clipped=False gives the
    plain CIDEr scorer of vrama91/cider (`pyciderevalcap/cider`: no clipping, no length penalty).
    """

    def __init__(self, document_corpus=None, n=4, sigma=6.0, clipped=True):
        self.n, self.sigma, self.clipped = n, sigma, clipped
        self.document_frequency, self.ref_len = None, None
        if document_corpus is not None:
            crefs = [[_reference_precook(r, n) for r in refs] for refs in document_corpus]
            self.document_frequency = _reference_document_frequency(crefs)
            self.ref_len = np.log(float(len(document_corpus)))

    def _counts2vec(self, counts, document_frequency, ref_len):
        vec = [defaultdict(float) for _ in range(self.n)]
        norm = [0.0 for _ in range(self.n)]
        length = 0
        for ngram, term_freq in counts.items():
            df = np.log(max(1.0, document_frequency[ngram]))
            k = len(ngram) - 1
            vec[k][ngram] = float(term_freq) * (ref_len - df)
            norm[k] += pow(vec[k][ngram], 2)
            if k == 1:
                length += term_freq
        return vec, [np.sqrt(x) for x in norm], length

    def _sim(self, vec_hyp, vec_ref, norm_hyp, norm_ref, length_hyp, length_ref):
        delta = float(length_hyp - length_ref)
        val = np.array([0.0 for _ in range(self.n)])
        for k in range(self.n):
            for ngram in vec_hyp[k]:
                if self.clipped:
                    val[k] += min(vec_hyp[k][ngram], vec_ref[k][ngram]) * vec_ref[k][ngram]
                else:
                    val[k] += vec_hyp[k][ngram] * vec_ref[k][ngram]
            if (norm_hyp[k] != 0) and (norm_ref[k] != 0):
                val[k] /= norm_hyp[k] * norm_ref[k]
            assert not math.isnan(val[k])
            if self.clipped:
                val[k] *= np.e ** (-(delta**2) / (2 * self.sigma**2))
        return val

    def compute_score(self, gts, res):
        crefs, ctest = [], []
        for item in res:
            hypo, refs = item["caption"], gts[item["image_id"]]
            assert type(hypo) is list and len(hypo) == 1 and len(refs) > 0
            crefs.append([_reference_precook(r, self.n) for r in refs])
            ctest.append(_reference_precook(hypo[0], self.n))
        if self.document_frequency is None:
            document_frequency = _reference_document_frequency(crefs)
            ref_len = np.log(float(len(crefs)))
        else:
            document_frequency = defaultdict(float, self.document_frequency)
            ref_len = self.ref_len
        scores = []
        for test, refs in zip(ctest, crefs, strict=True):
            vec, norm, length = self._counts2vec(test, document_frequency, ref_len)
            score = np.array([0.0 for _ in range(self.n)])
            for ref in refs:
                vec_ref, norm_ref, length_ref = self._counts2vec(ref, document_frequency, ref_len)
                score += self._sim(vec, vec_ref, norm, norm_ref, length, length_ref)
            scores.append(np.mean(score) / len(refs) * 10.0)
        return np.mean(np.array(scores)), np.array(scores)


def reference_scores(scorer, hypotheses, references):
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = [{"image_id": i, "caption": [h]} for i, h in enumerate(hypotheses)]
    return scorer.compute_score(gts, res)[1]


# --- Data -----------------------------------------------------------------------------------------------------

FIXED_REFERENCES = [
    [
        "a man is riding a horse on the beach",
        "a person rides a brown horse along the shore",
        "a man on a horse near the ocean",
        "someone riding a horse by the sea",
        "a rider and his horse on sand",
    ],
    [
        "two dogs play with a red ball in the grass",
        "dogs chasing a ball on a lawn",
        "two brown dogs running after a ball",
        "a pair of dogs playing in a park",
        "two dogs and a red ball",
    ],
    [
        "a plate of food with broccoli and rice",
        "rice and broccoli on a white plate",
        "a meal of chicken rice and vegetables",
        "a white plate with a healthy meal",
        "food on a plate",
    ],
    [
        "a city street with cars and a red bus",
        "a red double decker bus on a busy street",
        "traffic on a city road",
        "a bus driving down the street",
        "cars and a bus in a city",
    ],
    [
        "a cat sleeping on a laptop keyboard",
        "a cat lying on a computer",
        "a grey cat asleep on a laptop",
        "cat on the keyboard",
        "a kitten resting on an open laptop",
    ],
    [
        "a kitchen with white cabinets and a stove",
        "an empty kitchen",
        "a clean kitchen with a window",
        "white cabinets in a small kitchen",
        "a stove and a sink in a kitchen",
    ],
    [
        "a man is riding a horse on the beach",
        "a horse",
        "the beach at sunset with a horse",
        "a man a man a man",
        "riding",
    ],
    ["a", "a a", "a a a", "b", "a b a b"],
]
FIXED_HYPOTHESES = [
    "a man riding a horse on the beach",
    "two dogs playing with a ball",
    "a plate of food",
    "a red bus on a city street with cars and a red bus",
    "a cat a cat a cat a cat",
    "",
    "a man is riding a horse on the beach",
    "a b",
]


def random_captions(rng, items, vocabulary=60, max_words=14, min_refs=1, max_refs=5):
    # Zipf-like word choice so that n-grams repeat across items, as in real captions.
    words = [f"w{i}" for i in range(vocabulary)]
    weights = [1.0 / (i + 1) for i in range(vocabulary)]

    def sentence():
        return " ".join(rng.choices(words, weights, k=rng.randint(0, max_words)))

    references = [[sentence() for _ in range(rng.randint(min_refs, max_refs))] for _ in range(items)]
    hypotheses = [sentence() if rng.random() < 0.5 else refs[0] for refs in references]
    return hypotheses, references


def pycocoevalcap_cider(hypotheses, references):
    from pycocoevalcap.cider.cider import Cider as CocoCider  # a dev dependency: missing must fail, not skip

    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    return CocoCider().compute_score(gts, res)[1]


# --- CIDEr-D --------------------------------------------------------------------------------------------------


def test_cider_d_equals_pycocoevalcap_on_fixed_captions():
    ours = CiderD()(FIXED_HYPOTHESES, FIXED_REFERENCES)
    expected = pycocoevalcap_cider(FIXED_HYPOTHESES, FIXED_REFERENCES)
    assert ours.dtype == np.float64 and ours.shape == (len(FIXED_HYPOTHESES),)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    assert ours[6] > ours[0] > 0 and ours[5] == 0.0  # the exact caption beats a near one; empty scores 0


def test_cider_d_equals_pycocoevalcap_on_random_captions():
    hypotheses, references = random_captions(random.Random(0), 300)
    np.testing.assert_allclose(
        CiderD()(hypotheses, references), pycocoevalcap_cider(hypotheses, references), rtol=0, atol=1e-6
    )


def test_reference_port_equals_pycocoevalcap():
    hypotheses, references = random_captions(random.Random(1), 80)
    np.testing.assert_allclose(
        reference_scores(ReferenceCiderD(), hypotheses, references),
        pycocoevalcap_cider(hypotheses, references),
        rtol=0,
        atol=1e-9,
    )


def test_cider_d_with_a_corpus_equals_the_scst_reference():
    rng = random.Random(2)
    _, corpus = random_captions(rng, 400)
    # A batch drawn from the corpus (each item twice, as SCST samples several captions per image) plus items
    # whose references the corpus has never seen.
    items = rng.sample(range(len(corpus)), 24)
    references = [corpus[i] for i in items for _ in range(2)]
    extra_hypotheses, extra_references = random_captions(rng, 16)
    references += extra_references
    hypotheses = random_captions(rng, len(references))[0][: len(references) - 16] + extra_hypotheses
    hypotheses[0] = references[0][0]
    scorer = CiderD(corpus)
    ours = scorer(hypotheses, references)
    expected = reference_scores(ReferenceCiderD(corpus), hypotheses, references)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        scorer(hypotheses, references), ours, rtol=0, atol=0
    )  # warm caches, same values
    # The corpus statistics differ from the batch's own, so the two modes must disagree somewhere.
    assert not np.allclose(ours, CiderD()(hypotheses, references))


def test_cider_d_stays_equal_over_many_batches_as_its_caches_grow():
    rng = random.Random(8)
    _, corpus = random_captions(rng, 100)
    scorer, reference = CiderD(corpus), ReferenceCiderD(corpus)
    for _ in range(12):
        hypotheses, outside = random_captions(rng, 10)
        references = [corpus[rng.randrange(len(corpus))] if i % 3 else refs for i, refs in enumerate(outside)]
        np.testing.assert_allclose(
            scorer(hypotheses, references), reference_scores(reference, hypotheses, references), atol=1e-6
        )


def test_cider_d_on_its_own_corpus_equals_pycocoevalcap():
    hypotheses, references = random_captions(random.Random(3), 120)
    np.testing.assert_allclose(
        CiderD(references)(hypotheses, references), pycocoevalcap_cider(hypotheses, references), atol=1e-6
    )


def test_cider_d_document_frequencies_are_computed_once_per_corpus():
    _, corpus = random_captions(random.Random(4), 50)
    first = CiderD(corpus)
    second = CiderD([list(refs) for refs in corpus])  # same content, new lists: same cache entry
    assert first.statistics is second.statistics
    assert CiderD(corpus, n=3).statistics is not first.statistics
    first(["w0 w1 w2"], [corpus[0]])
    assert set(corpus[0]) <= set(
        second.statistics.reference_rows
    )  # reference vectors kept for the next batch


def test_plain_cider_equals_reference():
    hypotheses, references = random_captions(random.Random(5), 100)
    hypotheses[0] = "w0 w0 w0 w0 w0 w0 w0 w0 w0 w0"  # clipping and the length penalty both matter here
    _, corpus = random_captions(random.Random(6), 200)
    for documents in (None, corpus):
        np.testing.assert_allclose(
            Cider(documents)(hypotheses, references),
            reference_scores(ReferenceCiderD(documents, clipped=False), hypotheses, references),
            atol=1e-6,
        )
    assert not np.allclose(Cider()(hypotheses, references), CiderD()(hypotheses, references))


caption_word = st.sampled_from(["a", "b", "c", "dog", "the"])
caption = st.lists(caption_word, max_size=8).map(" ".join)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    batch=st.lists(st.tuples(caption, st.lists(caption, min_size=1, max_size=4)), min_size=1, max_size=6),
    n=st.integers(1, 4),
)
def test_cider_d_property_equals_reference(batch, n):
    hypotheses = [h for h, _ in batch]
    references = [refs for _, refs in batch]
    corpus = references + [["a b c", "the dog"], ["dog dog"]]
    for documents in (None, corpus):
        np.testing.assert_allclose(
            CiderD(documents, n=n)(hypotheses, references),
            reference_scores(ReferenceCiderD(documents, n=n), hypotheses, references),
            rtol=0,
            atol=1e-6,
        )


# --- BLEU, chrF, WER, CER -------------------------------------------------------------------------------------

mt_word = st.sampled_from(["the", "cat", "sat", "on", "mat", "a", "dog", ".", ",", "isn't", "Cat", "42"])
mt_sentence = st.lists(mt_word, max_size=12).map(" ".join)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(mt_sentence, st.lists(mt_sentence, min_size=1, max_size=4)), min_size=1, max_size=8)
)
def test_sentence_bleu_and_chrf_equal_sacrebleu(batch):
    hypotheses = [h for h, _ in batch]
    references = [refs for _, refs in batch]
    expected_bleu = [sacrebleu.sentence_bleu(h, refs).score for h, refs in batch]
    expected_chrf = [sacrebleu.sentence_chrf(h, refs).score for h, refs in batch]
    for _ in range(2):  # the second pass reads the cached reference n-grams
        np.testing.assert_allclose(sentence_bleu(hypotheses, references), expected_bleu, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sentence_chrf(hypotheses, references), expected_chrf, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bleu(hypotheses, references) * METRIC_SCALE["bleu"], expected_bleu, atol=1e-9)
    np.testing.assert_allclose(chrf(hypotheses, references) * METRIC_SCALE["chrf"], expected_chrf, atol=1e-9)


def test_corpus_bleu_and_chrf_equal_sacrebleu():
    rng = random.Random(7)
    words = ["the", "cat", "sat", "on", "mat", "a", "dog", "."]
    hypotheses = [" ".join(rng.choices(words, k=rng.randint(1, 10))) for _ in range(30)]
    references = [[" ".join(rng.choices(words, k=rng.randint(1, 10))) for _ in range(2)] for _ in range(30)]
    streams = [[refs[k] for refs in references] for k in range(2)]
    assert corpus_bleu(hypotheses, references) == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, streams).score
    )
    assert corpus_chrf(hypotheses, references) == pytest.approx(
        sacrebleu.corpus_chrf(hypotheses, streams).score
    )
    ragged = [refs[:1] if i % 2 else refs for i, refs in enumerate(references)]
    assert 0.0 <= corpus_bleu(hypotheses, ragged) <= 100.0


asr_text = st.lists(st.sampled_from(["a", "b", "ab", " ", "  ", "\t", "\n", "c"]), max_size=12).map("".join)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(asr_text, asr_text, asr_text), min_size=1, max_size=6))
def test_wer_and_cer_equal_jiwer_against_the_first_reference(batch):
    hypotheses = [h for h, _, _ in batch]
    references = [[first, second] for _, first, second in batch]
    expected_wer = [jiwer.wer(first, h) for h, first, _ in batch]
    expected_cer = [jiwer.cer(first, h) for h, first, _ in batch]
    np.testing.assert_allclose(sentence_wer(hypotheses, references), expected_wer, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sentence_cer(hypotheses, references), expected_cer, rtol=0, atol=1e-12)
    np.testing.assert_allclose(neg_wer(hypotheses, references), -np.array(expected_wer), atol=1e-12)
    np.testing.assert_allclose(neg_cer(hypotheses, references), -np.array(expected_cer), atol=1e-12)


def test_corpus_wer_and_cer_equal_jiwer():
    hypotheses = ["the cat sat", "a dog", "hello  world"]
    references = [["the cat sat down", "ignored"], ["a big dog"], ["hello world"]]
    firsts = [refs[0] for refs in references]
    assert corpus_wer(hypotheses, references) == pytest.approx(jiwer.wer(firsts, hypotheses))
    assert corpus_cer(hypotheses, references) == pytest.approx(jiwer.cer(firsts, hypotheses))
    assert corpus_wer(hypotheses, references) == pytest.approx(2 / 9)


# --- Exact match, edit distance -------------------------------------------------------------------------------


def test_exact_match_and_negative_edit_distance():
    hypotheses = ["the  cat sat ", "the cat", "", "kitten"]
    references = [["a dog", "the cat sat"], ["the cat sat"], [""], ["sitting", "kitchen"]]
    np.testing.assert_array_equal(exact_match(hypotheses, references), [1.0, 0.0, 1.0, 0.0])
    # Raw characters; the closest reference: "kitten" -> "kitchen" is 2 edits, -> "sitting" 3.
    np.testing.assert_array_equal(neg_edit_distance(hypotheses, references), [-2.0, -4.0, -0.0, -2.0])


# --- Registry, validation, safe rewards -----------------------------------------------------------------------


def test_every_registered_reward_scores_a_batch():
    hypotheses = ["a man riding a horse", "two dogs"]
    references = [FIXED_REFERENCES[0], FIXED_REFERENCES[1]]
    assert set(METRIC_SCALE) == set(REWARDS)
    for name in REWARDS:
        values = get_reward(name, references_corpus=FIXED_REFERENCES)(hypotheses, references)
        assert values.dtype == np.float64 and values.shape == (2,), name
        assert np.isfinite(values).all(), name
    assert (
        get_reward("CIDEr-D")(hypotheses, references)[0]
        > get_reward("cider_d")(hypotheses[::-1], references)[0]
    )
    assert get_reward("wer") is neg_wer


def test_unknown_reward_name_lists_the_known_ones():
    with pytest.raises(UnforcedError, match="unknown reward 'meteor'.*bleu.*cider_d.*exact_match"):
        get_reward("meteor")
    with pytest.raises(UnforcedError):
        get_reward(3)  # type: ignore[arg-type]


def test_user_callable_is_returned_and_its_shape_checked():
    def length_reward(hypotheses, references):
        return [float(len(h)) for h in hypotheses]

    assert get_reward(length_reward) is length_reward
    values = validate_rewards(length_reward(["ab", "c"], [["x"], ["y"]]), 2)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [2.0, 1.0])
    with pytest.raises(UnforcedError, match=r"shape \(3,\).*\(2,\)"):
        validate_rewards([1.0, 2.0], 3)
    with pytest.raises(UnforcedError, match="shape"):
        validate_rewards(np.zeros((3, 1)), 3)
    with pytest.raises(UnforcedError, match="numbers"):
        validate_rewards(["good", "bad"], 2)
    assert np.isnan(validate_rewards([np.nan, 1.0], 2)[0])  # NaN is the caller's business


def test_safe_reward_reports_nan_and_exceptions():
    hypotheses, references = ["a", "b", "c"], [["a"], ["b"], ["c"]]
    values, message = safe_reward(exact_match, hypotheses, references)
    assert message is None
    np.testing.assert_array_equal(values, [1.0, 1.0, 1.0])

    values, message = safe_reward(lambda h, r: np.array([1.0, np.nan, np.inf]), hypotheses, references)
    assert values is None and "2 non-finite" in message and "hypothesis 1" in message

    def broken(hypotheses, references):
        raise ZeroDivisionError("no words")

    values, message = safe_reward(broken, hypotheses, references)
    assert values is None and "ZeroDivisionError: no words" in message

    with pytest.raises(UnforcedError, match="shape"):
        safe_reward(lambda h, r: np.zeros(2), hypotheses, references)


def test_malformed_batches_raise_user_errors():
    with pytest.raises(UnforcedError, match="2 hypotheses but 1"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(UnforcedError, match="list of reference strings"):
        CiderD()(["a"], ["a"])  # type: ignore[list-item]
    with pytest.raises(UnforcedError, match="no reference"):
        sentence_wer(["a"], [[]])
    with pytest.raises(UnforcedError, match="empty"):
        CiderD([])


# --- corpus metrics in results (every reference) -----------------------------------------------------------


@pytest.mark.parametrize("nrefs", [1, 2, 3, 4, 5])
def test_results_corpus_metrics_equal_sacrebleu_and_pycocoevalcap_with_every_reference(nrefs):
    from unforced.rewards.corpus import corpus_score

    hypotheses, references = random_captions(random.Random(nrefs), 80, min_refs=nrefs, max_refs=nrefs)
    streams = [[refs[k] for refs in references] for k in range(nrefs)]
    bleu = corpus_score("bleu", hypotheses, references)
    assert bleu.value == pytest.approx(sacrebleu.corpus_bleu(hypotheses, streams).score, abs=1e-9)
    assert f"nrefs:{nrefs}" in bleu.signature and bleu.signature.startswith("BLEU|")
    assert corpus_score("chrf", hypotheses, references).value == pytest.approx(
        sacrebleu.corpus_chrf(hypotheses, streams).score, abs=1e-9)
    cider = corpus_score("cider_d", hypotheses, references)
    assert cider.value == pytest.approx(float(np.mean(pycocoevalcap_cider(hypotheses, references))), abs=1e-6)
    assert f"nrefs:{nrefs}" in cider.signature


def test_a_corpus_score_uses_the_later_references_too():
    from unforced.rewards.corpus import corpus_score

    hypotheses = ["the cat sat on the mat today", "a dog ran in the park at noon"]
    first_only = [["one two three four five six"], ["seven eight nine ten eleven"]]
    with_match = [refs + [h] for refs, h in zip(first_only, hypotheses, strict=True)]
    for name in ("bleu", "chrf", "cider_d", "exact_match"):
        assert corpus_score(name, hypotheses, with_match).value > corpus_score(name, hypotheses, first_only).value


def test_short_references_warn_for_corpus_bleu():
    from unforced.rewards.corpus import short_references_warning

    assert short_references_warning("bleu", [["uno dos"], ["tres"], ["a b c d e"]]) is not None
    assert short_references_warning("bleu", [["a b c d e"], ["f g h i j"], ["x"]]) is None
    assert short_references_warning("chrf", [["uno"]]) is None
