"""Tasks from a manifest of media files: speech (`audio`, `text`) and captions (`image`, `captions`).

    speech:   .jsonl or .csv with `audio` (a WAV path, relative to the manifest) and `text` [, `split`]
    captions: .jsonl with `image` (a PNG/JPEG path, relative to the manifest) and `captions` (a list) [, `split`]

Every file is checked to exist when the task is built (errors name the manifest line); the audio itself is read
when a batch is made. Without a split column the examples are split deterministically (seeded, 80/10/10).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.tasks.base import Example, Task
from unforced.tasks.codecs import AudioCodec, ImageCodec
from unforced.tasks.files import by_split, check_split, json_record, read_lines, references_of
from unforced.tasks.tokenizers import train_tokenizer

KINDS = {"audio": ("text", "wer"), "image": ("captions", "cider_d")}  # media field -> (references field, metric)


def manifest_kind(path: str | Path) -> str | None:
    """"audio" or "image" when `path` is a manifest of that media (by its first record or header), else None."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".csv") or not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return None  # the pairs reader names the problem
    if path.suffix == ".csv":
        header = next(csv.reader([first]), [])
        return "audio" if "audio" in header else None
    try:
        import json

        record = json.loads(first)
    except ValueError:
        return None
    if isinstance(record, dict):
        return next((kind for kind in KINDS if kind in record and "source" not in record), None)
    return None


def read_manifest(path: str | Path) -> tuple[str, list[Example], list[str | None]]:
    """The media kind, the examples (absolute media paths) and their splits of a manifest."""
    path = Path(path)
    kind = manifest_kind(path)
    if kind is None:
        raise UnforcedError(f"{path}: not a speech or caption manifest (needs an 'audio' or 'image' field)")
    field, _ = KINDS[kind]
    lines = read_lines(path)
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO("\n".join(line for _, line in lines))))
        records = [(number, row) for (number, _), row in zip(lines[1:], rows, strict=False)]
    else:
        records = [(number, json_record(line, f"{path}:{number}")) for number, line in lines]
    examples, splits = [], []
    for number, record in records:
        where = f"{path}:{number}"
        missing = [key for key in (kind, field) if key not in record or record[key] in (None, "")]
        if missing:
            raise UnforcedError(f"{where}: missing field(s) {', '.join(missing)}")
        media = record[kind]
        if not isinstance(media, str):
            raise UnforcedError(f"{where}: {kind!r} must be a file path")
        located = (path.parent / media).resolve()
        if not located.is_file():
            raise UnforcedError(f"{where}: {kind} file {media} not found (paths are relative to the manifest)")
        split = record.get("split") or None
        check_split(split, where)
        examples.append(Example(str(located), references_of(record[field], where, field)))
        splits.append(split)
    if not examples:
        raise UnforcedError(f"{path}: no examples found (the file is empty)")
    return kind, examples, splits


def manifest_task(path: str | Path, tokenizer: str = "word", vocab_size: int | None = None, seed: int = 0,
                  metric: str | None = None, sample_rate: int = 16000, mels: int = 80,
                  image_size: int = 64) -> Task:
    """A speech or captioning task from a manifest (see the module docstring); metric WER or CIDEr-D by default."""
    kind, examples, splits = read_manifest(path)
    train, valid, test = by_split(path, examples, splits, seed)
    target = train_tokenizer([r for e in train for r in e.references], tokenizer, vocab_size)
    codec = AudioCodec(sample_rate=sample_rate, mels=mels) if kind == "audio" else ImageCodec(size=image_size)
    return Task(name=str(path), train=train, valid=valid, test=test, source_tokenizer=None, target_tokenizer=target,
                metric=metric or KINDS[kind][1], description=f"{'speech' if kind == 'audio' else 'captions'} "
                f"from {path}", source_codec=codec,
                settings={"path": str(path), "kind": kind, "tokenizer": tokenizer, "vocab_size": vocab_size,
                          "seed": seed})


__all__ = ["manifest_kind", "manifest_task", "read_manifest"]
