"""Tokenizers: character, word, and BPE (trained with Hugging Face `tokenizers`).

Every tokenizer shares the same four special ids, so models and the rollout engine never ask which one they hold:
pad = 0, bos = 1, eos = 2, unk = 3.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from unforced.errors import UnforcedError
from unforced.vocab import BOS, EOS, PAD, SPECIALS, UNK, Tokenizer  # noqa: F401  (the tokenizers' own names)


def _strip(ids: Iterable[int]) -> list[int]:
    """Ids up to the first end-of-sequence, without specials."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i > UNK:
            out.append(i)
    return out


class VocabTokenizer:
    """A fixed vocabulary of symbols (characters or words); unknown symbols map to <unk>."""

    def __init__(self, symbols: list[str], kind: str):
        if kind not in ("char", "word"):
            raise UnforcedError(f"tokenizer kind must be 'char' or 'word', got {kind!r}")
        self.kind = kind
        self.itos = SPECIALS + [s for s in symbols if s not in SPECIALS]
        # Specials are not looked up from text: a literal "<eos>" in the data is an unknown symbol, not the end.
        self.stoi = {s: i for i, s in enumerate(self.itos) if i >= len(SPECIALS)}
        self.vocab_size = len(self.itos)

    @classmethod
    def train(cls, texts: Iterable[str], kind: str, max_size: int | None = None) -> VocabTokenizer:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text if kind == "char" else text.split())
        # Sorted by count, then symbol, so the vocabulary is the same on every machine.
        ranked = sorted(counts, key=lambda s: (-counts[s], s))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls(ranked, kind)

    def _symbols(self, text: str) -> list[str]:
        return list(text) if self.kind == "char" else text.split()

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(s, UNK) for s in self._symbols(text)]

    def decode(self, ids: Iterable[int]) -> str:
        symbols = [self.itos[i] for i in _strip(ids) if i < self.vocab_size]
        return ("" if self.kind == "char" else " ").join(symbols)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "symbols": self.itos[len(SPECIALS):]})


class BPETokenizer:
    """Byte-pair encoding trained with Hugging Face `tokenizers` (Sennrich et al. 2016), lossless on spacing."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self._tok.encode_special_tokens = True  # literal "<eos>" in the text is text, not the special id
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size <= len(SPECIALS):
            raise UnforcedError(f"bpe vocab_size must exceed {len(SPECIALS)}, got {vocab_size}")
        # Metaspace (SentencePiece-style) keeps spaces inside the tokens, so decoding gives back the text as
        # written ("God." stays "God."): a Whitespace pre-split would decode to "God ." and cost BLEU points.
        tok = HFTokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
        tok.train_from_iterator(list(texts), trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(" ".join(text.split())).ids  # runs of whitespace count as one space

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(_strip(ids))

    def to_json(self) -> str:
        return json.dumps({"kind": "bpe", "tokenizer": self._tok.to_str()})


CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # transformers' clean_up_tokenization, in order


class SavedHFTokenizer:
    """A Hugging Face model's fast tokenizer read back from its own JSON (HFTokenizerAdapter.to_json), in library
    ids: it encodes and decodes as the adapter does, without transformers or the model.

    encode: the tokenizer's ids without added specials, mapped through the inverse of `library_to_model`.
    decode: library ids up to the first <eos>, pad and bos dropped, mapped to the model's ids, decoded with the
    special tokens skipped and, where the adapter's tokenizer did, transformers' clean-up of spaces.
    """

    kind = "hf"

    def __init__(self, tokenizer, library_to_model: list[int] | None, vocab_size: int,
                 clean_up_tokenization_spaces: bool = False, name_or_path: str | None = None):
        self._tok = tokenizer
        self.vocab_size = vocab_size
        self.name_or_path = name_or_path
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._to_model = None if library_to_model is None else [int(i) for i in library_to_model]
        self._to_library = None
        if self._to_model is not None:
            self._to_library = [0] * len(self._to_model)
            for library_id, model_id in enumerate(self._to_model):
                self._to_library[model_id] = library_id

    def encode(self, text: str) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ids if self._to_library is None else [self._to_library[i] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        kept = []
        for i in ids:  # not _strip: library id 3 may be an ordinary token of this model
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS) and 0 <= i < self.vocab_size:
                kept.append(i)
        if self._to_model is not None:
            kept = [self._to_model[i] for i in kept]
        text = self._tok.decode(kept, skip_special_tokens=True)
        if self.clean_up_tokenization_spaces:
            for before, after in CLEAN_UP:
                text = text.replace(before, after)
        return text

    def to_json(self) -> str:
        return json.dumps({"kind": "hf", "name_or_path": self.name_or_path, "tokenizer": self._tok.to_str(),
                           "library_to_model": self._to_model, "vocab_size": self.vocab_size,
                           "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces})


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int | None = None) -> Tokenizer:
    """Train a tokenizer of `kind` ('char', 'word' or 'bpe') on `texts`."""
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size or 2000)
    if kind in ("char", "word"):
        return VocabTokenizer.train(texts, kind, vocab_size)
    raise UnforcedError(f"unknown tokenizer {kind!r}; known: char, word, bpe")


def tokenizer_from_json(text: str) -> Tokenizer:
    try:
        data = json.loads(text)
        if data["kind"] == "hf":
            if "tokenizer" not in data:
                raise UnforcedError(f"saved tokenizer of {data.get('name_or_path')!r} is a slow (Python) tokenizer "
                                    f"or from an older version: only a fast tokenizer's JSON is kept in a run; "
                                    f"train the run again with a fast tokenizer saved beside the model")
            from tokenizers import Tokenizer as HFTokenizer

            return SavedHFTokenizer(HFTokenizer.from_str(data["tokenizer"]), data.get("library_to_model"),
                                    int(data["vocab_size"]), bool(data.get("clean_up_tokenization_spaces")),
                                    data.get("name_or_path"))
        if data["kind"] == "bpe":
            from tokenizers import Tokenizer as HFTokenizer

            return BPETokenizer(HFTokenizer.from_str(data["tokenizer"]))
        return VocabTokenizer(list(data["symbols"]), data["kind"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, Exception) as error:
        if isinstance(error, UnforcedError):
            raise
        raise UnforcedError(f"saved tokenizer is damaged ({type(error).__name__}: {error})") from None
