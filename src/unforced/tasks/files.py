"""Tasks from a local file of pairs: `.tsv` (source TAB target [TAB split]) or `.jsonl` (`source`, `target`
[, `split`]; `target` a string or a list of references, the first one trained on). Without a split column the
pairs are split deterministically (seeded shuffle, 80/10/10)."""

from __future__ import annotations

import json
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.tasks.base import Example, Task, deterministic_split
from unforced.tasks.tokenizers import train_tokenizer

SPLITS = ("train", "valid", "test")
MAX_LINE_CHARS = 100_000  # a longer line is almost always two lines whose newline was lost


def read_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file with their numbers; errors name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UnforcedError(f"{path}: cannot read: {error.strerror or error}") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw[:nul].count(b"\n") + 1
        raise UnforcedError(f"{path}:{line}: NUL byte (a UTF-16 file? save it as UTF-8)")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is not part of the first source
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UnforcedError(f"{path}:{line}: not valid UTF-8") from None
    lines = []
    # Split on newlines only: str.splitlines also splits on U+2028, form feeds and the like, which may sit
    # inside a JSON string or a TSV field, and line numbers must agree with the UTF-8 error's.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip() and "\t" not in line:
            continue
        if len(line) > MAX_LINE_CHARS:
            raise UnforcedError(f"{path}:{number}: line of {len(line):,} characters, more than "
                                f"{MAX_LINE_CHARS:,}; is a newline missing?")
        lines.append((number, line))
    return lines


def json_record(line: str, where: str) -> dict:
    """One JSON object from one line of a .jsonl file; errors name the line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UnforcedError(f"{where}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise UnforcedError(f"{where}: JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise UnforcedError(f"{where}: expected a JSON object")
    return record


def references_of(value, where: str, field: str) -> list[str]:
    """A reference string or a non-empty list of them, stripped; errors name the line and field."""
    references = [value] if isinstance(value, str) else value
    if not isinstance(references, list) or not references or not all(isinstance(r, str) for r in references):
        raise UnforcedError(f"{where}: {field!r} must be a string or a non-empty list of strings")
    references = [r.strip() for r in references]
    if not all(references):
        raise UnforcedError(f"{where}: empty {field}")
    return references


def read_pairs(path: str | Path) -> tuple[list[Example], list[str | None]]:
    """Examples and their split names (None where the file gives none); errors name the file and line."""
    path = Path(path)
    if path.suffix not in (".tsv", ".jsonl"):
        raise UnforcedError(f"{path}: a pairs file must end in .tsv or .jsonl")
    pairs: list[Example] = []
    splits: list[str | None] = []
    for number, line in read_lines(path):
        where = f"{path}:{number}"
        if path.suffix == ".tsv":
            fields = line.split("\t")
            if len(fields) not in (2, 3):
                raise UnforcedError(f"{where}: expected 'source<TAB>target[<TAB>split]', found {len(fields)} "
                                    f"tab-separated field(s)")
            source, target, split = fields[0], fields[1], fields[2] if len(fields) == 3 else None
        else:
            record = json_record(line, where)
            missing = [key for key in ("source", "target") if key not in record]
            if missing:
                raise UnforcedError(f"{where}: missing field(s) {', '.join(missing)}")
            source, target, split = record["source"], record["target"], record.get("split")
            if not isinstance(source, str):
                raise UnforcedError(f"{where}: 'source' must be a string")
            if not isinstance(target, str | list):
                raise UnforcedError(f"{where}: 'target' must be a string or a list of reference strings")
        source = source.strip()
        if not source:
            raise UnforcedError(f"{where}: empty source")
        if isinstance(target, str) and not target.strip():
            raise UnforcedError(f"{where}: empty target")
        references = references_of(target, where, "target")
        check_split(split, where)
        pairs.append(Example(source, references))
        splits.append(split)
    if not pairs:
        raise UnforcedError(f"{path}: no pairs found (the file is empty)")
    if len(set(s is None for s in splits)) > 1:
        raise UnforcedError(f"{path}: some lines name a split and others do not; name it on every line or none")
    return pairs, splits


def check_split(split, where: str) -> None:
    if split is not None and split not in SPLITS:
        raise UnforcedError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")


def by_split(path, examples: list, splits: list[str | None], seed: int) -> tuple[list, list, list]:
    """Train, valid and test: as the file names them, or a seeded 80/10/10 split when it names none."""
    if len(set(s is None for s in splits)) > 1:
        raise UnforcedError(f"{path}: some lines name a split and others do not; name it on every line or none")
    if splits[0] is None:
        if len(examples) < 3:
            raise UnforcedError(f"{path}: need at least 3 examples to split into train/valid/test, found "
                                f"{len(examples)}")
        return deterministic_split(examples, seed)
    parts = tuple([e for e, s in zip(examples, splits, strict=True) if s == name] for name in SPLITS)
    for name, split in zip(SPLITS, parts, strict=True):
        if not split:
            raise UnforcedError(f"{path}: the {name} split is empty")
    return parts


def file_task(path: str | Path, tokenizer: str = "word", vocab_size: int | None = None, seed: int = 0,
              metric: str = "bleu") -> Task:
    pairs, splits = read_pairs(path)
    if len(pairs) < 3 and splits[0] is None:
        raise UnforcedError(f"{path}: need at least 3 pairs to split into train/valid/test, found {len(pairs)}")
    train, valid, test = by_split(path, pairs, splits, seed)
    source_tok = train_tokenizer([s for s, _ in train], tokenizer, vocab_size)
    target_tok = train_tokenizer([r for e in train for r in e.references], tokenizer, vocab_size)
    return Task(name=str(path), train=train, valid=valid, test=test, source_tokenizer=source_tok,
                target_tokenizer=target_tok, metric=metric, description=f"pairs from {path}",
                settings={"path": str(path), "tokenizer": tokenizer, "vocab_size": vocab_size, "seed": seed})
