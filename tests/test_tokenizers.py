"""Tokenizers: round trips, unknown symbols, BPE training, JSON round trips, decoding stops at <eos>."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unforced.errors import UnforcedError
from unforced.tasks.tokenizers import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    BPETokenizer,
    VocabTokenizer,
    tokenizer_from_json,
    train_tokenizer,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60)

CHARS = "abcdefgh ijk.,'-éß中"
WORDS = ["the", "dog", "sees", "a", "cat", "perro", "gato", "ve", "el", "la", "casa", "über", "naïve", "x"]
CORPUS = [
    "the dog sees a cat", "el perro ve la casa", "a cat sees the dog", "über naïve x", "la casa ve el gato",
    "the the dog dog", "perro gato casa", "x x x sees",
]

# A corpus over eight letters: its alphabet (letters, and letters ending a word) and the four specials take 20
# ids, and it has enough distinct words that BPE can merge up to 120 before it runs out of pairs.
_rng = random.Random(0)
_LETTER_WORDS = ["".join(_rng.choice("abcdefgh") for _ in range(_rng.randint(1, 7))) for _ in range(60)]
LETTER_CORPUS = [" ".join(_rng.choice(_LETTER_WORDS) for _ in range(8)) for _ in range(100)]

char_text = st.text(alphabet=CHARS, max_size=30)
spaces = st.sampled_from([" ", "  ", "\t", "\n", " \t "])
word_text = st.tuples(st.lists(st.sampled_from(WORDS), max_size=12), st.lists(spaces, min_size=13, max_size=13),
                      spaces, spaces).map(
    lambda parts: parts[2] + "".join(w + s for w, s in zip(parts[0], parts[1], strict=False)) + parts[3])


@pytest.fixture(scope="module")
def char_tokenizer():
    return VocabTokenizer.train([CHARS], "char")


@pytest.fixture(scope="module")
def word_tokenizer():
    return VocabTokenizer.train(CORPUS, "word")


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return BPETokenizer.train(CORPUS * 3, 60)


def normalised(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------- char / word


@given(text=char_text)
@SETTINGS
def test_char_round_trip(text, char_tokenizer):
    ids = char_tokenizer.encode(text)
    assert len(ids) == len(text)
    assert all(UNK < i < char_tokenizer.vocab_size for i in ids)
    assert char_tokenizer.decode(ids) == text


@given(text=word_text)
@SETTINGS
def test_word_round_trip_normalises_whitespace(text, word_tokenizer):
    ids = word_tokenizer.encode(text)
    assert len(ids) == len(text.split())
    assert all(UNK < i < word_tokenizer.vocab_size for i in ids)
    assert word_tokenizer.decode(ids) == normalised(text)


@given(known=st.lists(st.sampled_from(WORDS), max_size=6),
       unknown=st.lists(st.sampled_from(["zebra", "Dog", "dog.", "ü", "<bos>x", "42"]), min_size=1, max_size=4),
       seed=st.randoms(use_true_random=False))
@SETTINGS
def test_unknown_words_map_to_unk(known, unknown, seed, word_tokenizer):
    words = known + unknown
    seed.shuffle(words)
    ids = word_tokenizer.encode(" ".join(words))
    assert [i == UNK for i in ids] == [w not in WORDS for w in words]
    # <unk> is a special: decoding leaves it out.
    assert word_tokenizer.decode(ids) == " ".join(w for w in words if w in WORDS)


@given(text=st.text(alphabet=CHARS + "XYZ\u00e0", max_size=20))
@SETTINGS
def test_unknown_chars_map_to_unk(text, char_tokenizer):
    ids = char_tokenizer.encode(text)
    assert [i == UNK for i in ids] == [c not in CHARS for c in text]


def test_specials_take_the_first_four_ids(word_tokenizer, char_tokenizer):
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    for tokenizer in (word_tokenizer, char_tokenizer):
        assert tokenizer.itos[:4] == SPECIALS
        assert tokenizer.vocab_size == len(tokenizer.itos)


def test_word_vocabulary_is_ranked_by_count_then_symbol_and_capped():
    tokenizer = VocabTokenizer.train(["b a c b", "c b d"], "word")
    assert tokenizer.itos[4:] == ["b", "c", "a", "d"]
    capped = VocabTokenizer.train(["b a c b", "c b d"], "word", max_size=6)
    assert capped.vocab_size == 6
    assert capped.itos[4:] == ["b", "c"]
    assert capped.encode("a b") == [UNK, 4]
    assert train_tokenizer(["b a c b"], "word", 5).vocab_size == 5


# ---------------------------------------------------------------------------------------------- BPE


@pytest.mark.parametrize("vocab_size", [21, 30, 64, 120])
def test_bpe_trains_at_the_given_vocabulary_size(vocab_size):
    tokenizer = BPETokenizer.train(LETTER_CORPUS, vocab_size)
    assert tokenizer.vocab_size == vocab_size
    assert tokenizer.kind == "bpe"
    vocabulary = tokenizer._tok.get_vocab()
    assert len(vocabulary) == vocab_size
    assert [vocabulary[s] for s in SPECIALS] == [PAD, BOS, EOS, UNK]
    assert train_tokenizer(LETTER_CORPUS, "bpe", vocab_size).vocab_size == vocab_size
    text = " ".join(LETTER_CORPUS[:5])
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_bpe_on_a_small_corpus_never_has_more_than_it_can_learn():
    """With few words the merges run out before the requested size: the vocabulary is smaller, not padded."""
    tokenizer = BPETokenizer.train(LETTER_CORPUS, 1000)
    assert 20 < tokenizer.vocab_size < 1000


def test_bpe_merges_frequent_words():
    """A larger vocabulary gives fewer tokens for the training text (merges happened)."""
    small, large = BPETokenizer.train(LETTER_CORPUS, 25), BPETokenizer.train(LETTER_CORPUS, 80)
    text = " ".join(LETTER_CORPUS)
    assert len(large.encode(text)) < len(small.encode(text))


@given(text=word_text)
@SETTINGS
def test_bpe_round_trip_of_whitespace_normalised_text(text, bpe_tokenizer):
    ids = bpe_tokenizer.encode(text)
    assert all(UNK < i < bpe_tokenizer.vocab_size for i in ids)
    assert bpe_tokenizer.decode(ids) == normalised(text)


def test_bpe_vocab_size_must_exceed_the_specials():
    with pytest.raises(UnforcedError, match="vocab_size"):
        BPETokenizer.train(CORPUS, 4)


def test_unknown_tokenizer_kinds_are_errors():
    with pytest.raises(UnforcedError, match="sentencepiece"):
        train_tokenizer(CORPUS, "sentencepiece")
    with pytest.raises(UnforcedError, match="bpe"):
        VocabTokenizer(["a"], "bpe")


# ---------------------------------------------------------------------------------------------- JSON, <eos>


@pytest.fixture(scope="module")
def tokenizers(char_tokenizer, word_tokenizer, bpe_tokenizer):
    return {"char": char_tokenizer, "word": word_tokenizer, "bpe": bpe_tokenizer}


@given(kind=st.sampled_from(["char", "word", "bpe"]),
       text=st.one_of(word_text, char_text, st.text(alphabet=CHARS + "QZ!?\u00e0", max_size=25)))
@SETTINGS
def test_json_round_trip_gives_identical_encodings(kind, text, tokenizers):
    tokenizer = tokenizers[kind]
    restored = tokenizer_from_json(tokenizer.to_json())
    assert restored.kind == tokenizer.kind
    assert restored.vocab_size == tokenizer.vocab_size
    assert restored.encode(text) == tokenizer.encode(text)
    ids = tokenizer.encode(text)
    assert restored.decode(ids) == tokenizer.decode(ids)
    assert json.loads(restored.to_json()) == json.loads(tokenizer.to_json())


@given(kind=st.sampled_from(["char", "word", "bpe"]), text=word_text,
       tail=st.lists(st.integers(0, 20), max_size=5))
@SETTINGS
def test_decode_stops_at_eos_and_skips_specials(kind, text, tail, tokenizers):
    tokenizer = tokenizers[kind]
    ids = tokenizer.encode(text)
    tail = [i % tokenizer.vocab_size for i in tail]
    assert tokenizer.decode(ids + [EOS] + tail) == tokenizer.decode(ids)
    assert tokenizer.decode([BOS, *ids, EOS, PAD, PAD]) == tokenizer.decode(ids)
    assert tokenizer.decode([EOS, *ids]) == ""
    padded = [token for i in ids for token in (i, PAD)]
    assert tokenizer.decode(padded) == tokenizer.decode(ids)


def test_decode_accepts_tensors(word_tokenizer):
    import torch

    ids = word_tokenizer.encode("the dog sees a cat")
    assert word_tokenizer.decode(torch.tensor([*ids, EOS, 5, 6])) == "the dog sees a cat"
