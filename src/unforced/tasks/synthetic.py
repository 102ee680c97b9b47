"""Synthetic tasks with exact oracles: copy, reverse, sort, addition, a toy translation grammar, and noisy-copy
(whose oracle is the edit-distance one of tasks/oracles.py).

Each example carries a difficulty for the easy-to-hard curriculum: the number of source symbols (copy, reverse,
sort), the digits of the longer operand (addition), the words of the source sentence (toy translation).

Each algorithmic task has a length knob (`length`: the longest source, `min_length`: the shortest) and an oracle
that names the best next tokens after any prefix, mistakes included:
- copy, reverse, addition: the reference token at the prefix's position (optimal under a per-position cost);
- sort: the smallest source symbol not yet emitted (as a multiset), which repairs a prefix that skipped one.
"""

from __future__ import annotations

import random
from collections import Counter

from unforced.errors import UnforcedError
from unforced.tasks.base import Example, Pair, Task, deterministic_split
from unforced.tasks.oracles import EditDistanceOracle, PositionalOracle, with_edit_distance_oracle
from unforced.tasks.tokenizers import EOS, VocabTokenizer

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _check(length: int, min_length: int, size: int, symbols: int | None = None):
    if length < 1:
        raise UnforcedError(f"task option length must be at least 1, got {length}")
    if not 1 <= min_length <= length:
        raise UnforcedError(f"task option min_length must be in [1, length={length}], got {min_length}")
    if size < 3:
        raise UnforcedError(f"task option size must be at least 3, got {size}")
    if symbols is not None and not 2 <= symbols <= len(LETTERS):
        raise UnforcedError(f"task option symbols must be in [2, {len(LETTERS)}], got {symbols}")


def _unique_pairs(make, size: int, rng: random.Random) -> list[Pair]:
    seen: dict[str, str] = {}
    attempts = 0
    while len(seen) < size and attempts < size * 20:
        source, target = make(rng)
        seen.setdefault(source, target)
        attempts += 1
    if len(seen) < 3:
        raise UnforcedError(f"these task options allow only {len(seen)} distinct pair(s); at least 3 are needed "
                            f"for train/valid/test (raise length or symbols)")
    return list(seen.items())


def _positional_oracle(task: Task, solve):
    return PositionalOracle(task.target_tokenizer, solve)


def symbol_task(name: str, solve, description: str, length: int = 10, min_length: int = 2, symbols: int = 10,
                 size: int = 5000, seed: int = 0) -> Task:
    _check(length, min_length, size, symbols)
    alphabet = LETTERS[:symbols]

    def make(rng: random.Random) -> Pair:
        source = " ".join(rng.choice(alphabet) for _ in range(rng.randint(min_length, length)))
        return source, solve(source)

    pairs = [Example(s, t, difficulty=len(s.split())) for s, t in _unique_pairs(make, size, random.Random(seed))]
    train, valid, test = deterministic_split(pairs, seed)
    tokenizer = VocabTokenizer(list(alphabet), "word")
    task = Task(name=name, train=train, valid=valid, test=test, source_tokenizer=tokenizer,
                target_tokenizer=tokenizer, metric="exact_match", description=description,
                settings={"length": length, "min_length": min_length, "symbols": symbols, "size": size,
                          "seed": seed})
    task.oracle = _positional_oracle(task, solve)
    return task


def copy_task(**options) -> Task:
    return symbol_task("copy", lambda s: s, "repeat the source symbols", **options)


def reverse_task(**options) -> Task:
    return symbol_task("reverse", lambda s: " ".join(reversed(s.split())), "the source symbols reversed",
                        **options)


def sort_task(**options) -> Task:
    task = symbol_task("sort", lambda s: " ".join(sorted(s.split())), "the source symbols sorted", **options)
    tokenizer = task.target_tokenizer

    def oracle(source: str, prefix: list[int]) -> set[int]:
        left = Counter(tokenizer.encode(source)) - Counter(prefix)
        return {min(left)} if left else {EOS}

    task.oracle = oracle
    return task


def addition_task(length: int = 5, min_length: int = 1, size: int = 5000, seed: int = 0) -> Task:
    """Sum of two numbers of up to `length` digits, digits separated by spaces (`1 2 + 3 4` -> `4 6`)."""
    _check(length, min_length, size)

    def solve(source: str) -> str:
        a, b = source.replace(" ", "").split("+")
        return " ".join(str(int(a) + int(b)))

    def make(rng: random.Random) -> Pair:
        def number() -> str:
            digits = rng.randint(min_length, length)
            return str(rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1))

        source = " ".join(number()) + " + " + " ".join(number())
        return source, solve(source)

    pairs = [Example(s, t, difficulty=max(len(side.split()) for side in s.split(" + ")))
             for s, t in _unique_pairs(make, size, random.Random(seed))]
    train, valid, test = deterministic_split(pairs, seed)
    tokenizer = VocabTokenizer(list("0123456789+"), "word")
    task = Task(name="addition", train=train, valid=valid, test=test, source_tokenizer=tokenizer,
                target_tokenizer=tokenizer, metric="exact_match", description="add two numbers, digit by digit",
                settings={"length": length, "min_length": min_length, "size": size, "seed": seed})
    task.oracle = _positional_oracle(task, solve)
    return task


# A toy translation grammar: English SVO with adjectives before nouns, to a target language that is SOV, puts
# adjectives after nouns, and inflects determiners and adjectives for gender and number and verbs for number.
NOUNS = {"dog": ("perro", "m"), "cat": ("gato", "m"), "boy": ("chico", "m"), "bird": ("pajaro", "m"),
         "house": ("casa", "f"), "girl": ("chica", "f"), "tree": ("arbola", "f"), "river": ("ria", "f"),
         "king": ("rey", "m"), "horse": ("caballo", "m"), "city": ("ciudada", "f"), "song": ("cancion", "f")}
ADJECTIVES = {"big": "grand", "small": "pequen", "red": "roj", "old": "viej", "new": "nuev", "black": "negr",
              "white": "blanc", "happy": "feliz"}
VERBS = {"sees": "ve", "likes": "gusta", "finds": "encuentra", "follows": "sigue", "calls": "llama",
         "hears": "oye"}
ADVERBS = {"today": "hoy", "again": "otra-vez", "quietly": "callado"}


def _phrase(rng: random.Random) -> tuple[str, str, bool]:
    noun = rng.choice(sorted(NOUNS))
    word, gender = NOUNS[noun]
    plural = rng.random() < 0.4
    definite = rng.random() < 0.6
    adjectives = rng.sample(sorted(ADJECTIVES), rng.choice([0, 0, 1, 1, 2]))
    english = ["the" if definite else ("some" if plural else "a")] + adjectives + [noun + ("s" if plural else "")]
    det = {("m", False, True): "el", ("f", False, True): "la", ("m", True, True): "los", ("f", True, True): "las",
           ("m", False, False): "un", ("f", False, False): "una", ("m", True, False): "unos",
           ("f", True, False): "unas"}[(gender, plural, definite)]
    ending = ("o" if gender == "m" else "a") + ("s" if plural else "")
    inflected = [ADJECTIVES[a] + (ending if not ADJECTIVES[a].endswith("z") else ("es" if plural else ""))
                 for a in adjectives]
    target = [det, word + ("s" if plural else "")] + inflected
    return " ".join(english), " ".join(target), plural


def toy_translation_task(size: int = 8000, seed: int = 0, oracle: str = "none") -> Task:
    """A generated compositional grammar with reordering (SVO -> SOV, adjective after noun) and agreement.

    oracle: "none" (default: no oracle, the diagnostics as before) or "edit_distance" (the OCD oracle over the
    references, opt-in)."""
    if oracle not in ("none", "edit_distance"):
        raise UnforcedError(f"task option oracle must be 'none' or 'edit_distance', got {oracle!r}")
    if size < 3:
        raise UnforcedError(f"task option size must be at least 3, got {size}")

    def make(rng: random.Random) -> Pair:
        subject_en, subject_es, plural = _phrase(rng)
        object_en, object_es, _ = _phrase(rng)
        verb = rng.choice(sorted(VERBS))
        english_verb = verb[:-1] if plural else verb
        target_verb = VERBS[verb] + ("n" if plural else "")
        adverb = rng.choice([None, None, *sorted(ADVERBS)])
        source = f"{subject_en} {english_verb} {object_en}" + (f" {adverb}" if adverb else "")
        target = (f"{ADVERBS[adverb]} " if adverb else "") + f"{subject_es} {object_es} {target_verb}"
        return source, target

    pairs = [Example(s, t, difficulty=len(s.split())) for s, t in _unique_pairs(make, size, random.Random(seed))]
    train, valid, test = deterministic_split(pairs, seed)
    source_tok = VocabTokenizer.train([s for s, _ in pairs], "word")
    target_tok = VocabTokenizer.train([t for _, t in pairs], "word")
    task = Task(name="toy-translation", train=train, valid=valid, test=test, source_tokenizer=source_tok,
                target_tokenizer=target_tok, metric="bleu",
                description="generated grammar: reordering and agreement, no data needed",
                settings={"size": size, "seed": seed, "oracle": oracle})
    return with_edit_distance_oracle(task) if oracle == "edit_distance" else task


NOISE = "0123456789"


def noisy_copy_task(length: int = 10, min_length: int = 2, symbols: int = 10, noise: float = 0.3,
                    size: int = 5000, seed: int = 0) -> Task:
    """Copy the letters of a noisy source: noise digits are dropped and stuttered letters collapsed.

    The target has no two equal neighbours; the source repeats each letter 2-3 times with probability `noise`
    and inserts a noise digit after a letter with probability `noise`, so target positions move against source
    positions. The metric is WER over symbols and the oracle the edit-distance one (optimal under that metric):
    after a skipped or doubled letter it names the tokens that realign, not the letter at the same position.
    """
    _check(length, min_length, size, symbols)
    if not 0.0 <= noise <= 1.0:
        raise UnforcedError(f"task option noise must be in [0, 1], got {noise}")
    alphabet = LETTERS[:symbols]

    def make(rng: random.Random) -> Pair:
        target: list[str] = []
        for _ in range(rng.randint(min_length, length)):
            target.append(rng.choice([c for c in alphabet if not target or c != target[-1]]))
        source: list[str] = []
        for letter in target:
            source += [letter] * (rng.randint(2, 3) if rng.random() < noise else 1)
            if rng.random() < noise:
                source.append(rng.choice(NOISE))
        return " ".join(source), " ".join(target)

    pairs = [Example(s, t, difficulty=len(t.split())) for s, t in _unique_pairs(make, size, random.Random(seed))]
    train, valid, test = deterministic_split(pairs, seed)
    source_tok = VocabTokenizer(list(alphabet) + list(NOISE), "word")
    target_tok = VocabTokenizer(list(alphabet), "word")
    task = Task(name="noisy-copy", train=train, valid=valid, test=test, source_tokenizer=source_tok,
                target_tokenizer=target_tok, metric="wer",
                description="copy the letters of a noisy source (stutters collapsed, noise digits dropped)",
                settings={"length": length, "min_length": min_length, "symbols": symbols, "noise": noise,
                          "size": size, "seed": seed})
    task.oracle = EditDistanceOracle.from_task(task)
    return task
