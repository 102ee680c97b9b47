"""The embedded default task `bible-en-es`: English (King James) to Spanish (Reina-Valera 1909), verse by verse.

Both translations are public domain and ship as Debian packages (`sword-text-kjv`, `sword-text-sparv`); see
`sword.py` and DATA.md for how they are obtained and read. Whole books are held out, so that test verses share
no chapter with training verses (random verses would leak near-duplicate parallel passages into test):
valid = Acts; test = John, Esther, James, Jude. Everything else trains. John rather than a synoptic gospel, whose
verses have near twins in Matthew and Luke.
"""

from __future__ import annotations

from unforced.errors import UnforcedError
from unforced.tasks.base import Task
from unforced.tasks.tokenizers import train_tokenizer

VALID_BOOKS = ("Acts",)
TEST_BOOKS = ("John", "Esth", "Jas", "Jude")


def bible_task(max_words: int = 30, min_words: int = 1, vocab_size: int = 2000, size: int | None = None,
               tokenizer: str = "bpe", seed: int = 0, cache_dir: str | None = None) -> Task:
    """Verse pairs with at most `max_words` whitespace words on each side; `size` caps the training pairs
    (the first `size` in canonical order after a seeded shuffle), and valid/test are capped at 1000 each."""
    from unforced.tasks.sword import bible_pairs

    if max_words < 1 or min_words < 1 or min_words > max_words:
        raise UnforcedError(f"task options need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    verses = bible_pairs(cache_dir)
    known = {v.book for v in verses}
    missing = [b for b in VALID_BOOKS + TEST_BOOKS if b not in known]
    if missing:
        raise UnforcedError(f"bible-en-es: books {', '.join(missing)} not found in the corpus cache")
    train, valid, test = [], [], []
    for verse in verses:
        lengths = len(verse.english.split()), len(verse.spanish.split())
        if not all(min_words <= n <= max_words for n in lengths):
            continue
        pair = (verse.english, verse.spanish)
        (valid if verse.book in VALID_BOOKS else test if verse.book in TEST_BOOKS else train).append(pair)
    import random

    random.Random(seed).shuffle(train)
    if size is not None:
        train = train[:size]
    valid, test = valid[:1000], test[:1000]
    source_tok = train_tokenizer([s for s, _ in train], tokenizer, vocab_size)
    target_tok = train_tokenizer([t for _, t in train], tokenizer, vocab_size)
    return Task(name="bible-en-es", train=train, valid=valid, test=test, source_tokenizer=source_tok,
                target_tokenizer=target_tok, metric="bleu",
                description="English (KJV) to Spanish (Reina-Valera 1909), whole books held out",
                settings={"max_words": max_words, "min_words": min_words, "vocab_size": vocab_size, "size": size,
                          "tokenizer": tokenizer, "seed": seed, "valid_books": list(VALID_BOOKS),
                          "test_books": list(TEST_BOOKS)})
