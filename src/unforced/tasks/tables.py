"""Tasks from tables with named columns: a local `.csv`, `.tsv` (a header row first) or `.jsonl` file, or a Hugging
Face `datasets` object.

    table_task("pairs.csv", source_column="question", target_column="answer")
    table_task(datasets.load_dataset(...))        a DatasetDict (train / validation / test) or a single Dataset

`datasets` is not a dependency and is never imported: a dataset is read through its duck type. Accepted are
  - one split: any iterable of row mappings (column name -> value) with a `column_names` attribute (a
    `datasets.Dataset` is one); its rows are split deterministically (seeded shuffle, 80/10/10), or by
    `split_column` where given;
  - several splits: a mapping of split name -> one split as above (a `datasets.DatasetDict` is one), with "train"
    and "test" and one of "validation" / "valid" / "dev" (a missing validation split is cut from train).
Split names in a `split_column` may be train, valid, validation, dev or test.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.tasks.base import Pair, Task, deterministic_split
from unforced.tasks.tokenizers import train_tokenizer

SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
SUFFIXES = (".csv", ".tsv", ".jsonl")


def _pair(row: Mapping, where: str, source_column: str, target_column: str,
          split_column: str | None) -> tuple[Pair, str | None]:
    """One row -> (source, target) and its split name (None without a split column); errors say `where`."""
    columns = [source_column, target_column] + ([split_column] if split_column else [])
    missing = [name for name in columns if name not in row or row[name] is None]
    if missing:
        raise UnforcedError(f"{where}: missing column(s) {', '.join(repr(m) for m in missing)}")
    source, target = row[source_column], row[target_column]
    if not isinstance(source, str) or not isinstance(target, str):
        raise UnforcedError(f"{where}: columns {source_column!r} and {target_column!r} must hold text")
    source, target = source.strip(), target.strip()
    if not source or not target:
        raise UnforcedError(f"{where}: empty {source_column if not source else target_column!r}")
    split = None
    if split_column:
        name = str(row[split_column]).strip().lower()
        if name not in SPLIT_NAMES:
            raise UnforcedError(f"{where}: {split_column!r} must be one of {', '.join(SPLIT_NAMES)}, got "
                                f"{row[split_column]!r}")
        split = SPLIT_NAMES[name]
    return (source, target), split


def read_table(path: str | Path, source_column: str = "source", target_column: str = "target",
               split_column: str | None = None) -> tuple[list[Pair], list[str | None]]:
    """Pairs and their split names from a `.csv` / `.tsv` (header row) or `.jsonl` file; errors name file and line."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise UnforcedError(f"{path}: a table must end in {', '.join(SUFFIXES)}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise UnforcedError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UnforcedError(f"{path}: not valid UTF-8") from None
    pairs: list[Pair] = []
    splits: list[str | None] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UnforcedError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise UnforcedError(f"{path}:{number}: expected a JSON object with named fields")
            pair, split = _pair(row, f"{path}:{number}", source_column, target_column, split_column)
            pairs.append(pair)
            splits.append(split)
    else:
        reader = csv.DictReader(text.splitlines(keepends=True), delimiter="\t" if path.suffix == ".tsv" else ",")
        try:
            header = reader.fieldnames or []
            wanted = [source_column, target_column] + ([split_column] if split_column else [])
            absent = [name for name in wanted if name not in header]
            if absent:
                raise UnforcedError(f"{path}:1: no column(s) {', '.join(repr(a) for a in absent)} in the header "
                                    f"(found {', '.join(repr(h) for h in header) or 'none'})")
            for row in reader:
                if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                    continue  # a blank line
                pair, split = _pair(row, f"{path}:{reader.line_num}", source_column, target_column, split_column)
                pairs.append(pair)
                splits.append(split)
        except csv.Error as error:
            raise UnforcedError(f"{path}:{reader.line_num}: {error}") from None
    if not pairs:
        raise UnforcedError(f"{path}: no rows found")
    return pairs, splits


def _is_split(obj) -> bool:
    return hasattr(obj, "column_names") and isinstance(obj, Iterable) and not isinstance(obj, str | bytes | Mapping)


def _read_split(rows, name: str, source_column: str, target_column: str,
                split_column: str | None) -> tuple[list[Pair], list[str | None]]:
    columns = list(rows.column_names)
    wanted = [source_column, target_column] + ([split_column] if split_column else [])
    absent = [c for c in wanted if c not in columns]
    if absent:
        raise UnforcedError(f"dataset {name}: no column(s) {', '.join(repr(a) for a in absent)} (found "
                            f"{', '.join(repr(c) for c in columns) or 'none'})")
    pairs, splits = [], []
    for index, row in enumerate(rows):
        pair, split = _pair(row, f"dataset {name} row {index}", source_column, target_column, split_column)
        pairs.append(pair)
        splits.append(split)
    return pairs, splits


def _by_split(pairs: list[Pair], splits: list[str | None], where: str, seed: int):
    if splits and splits[0] is None:
        if len(pairs) < 3:
            raise UnforcedError(f"{where}: need at least 3 rows to split into train/valid/test, found {len(pairs)}")
        return deterministic_split(pairs, seed)
    parts = tuple([p for p, s in zip(pairs, splits, strict=True) if s == name] for name in ("train", "valid", "test"))
    for name, part in zip(("train", "valid", "test"), parts, strict=True):
        if not part:
            raise UnforcedError(f"{where}: the {name} split is empty")
    return parts


def table_task(path_or_dataset, source_column: str = "source", target_column: str = "target",
               split_column: str | None = None, tokenizer: str = "word", vocab_size: int | None = None,
               seed: int = 0, metric: str = "bleu") -> Task:
    """A task from a table with named columns (see the module docstring for what is accepted).

    Without `split_column` (and for a single split) the rows are shuffled with `seed` and cut 80/10/10.
    Tokenizers of `tokenizer` kind ("word", "char", "bpe") are trained on the training split only.
    """
    if isinstance(path_or_dataset, str | Path):
        where = str(path_or_dataset)
        pairs, splits = read_table(path_or_dataset, source_column, target_column, split_column)
        train, valid, test = _by_split(pairs, splits, where, seed)
        name = where
    elif isinstance(path_or_dataset, Mapping):
        where = name = f"dataset ({', '.join(map(str, path_or_dataset))})"
        found = {SPLIT_NAMES.get(str(key).lower()): key for key in path_or_dataset}
        found.pop(None, None)
        if "train" not in found:
            raise UnforcedError(f"{where}: no 'train' split (found {', '.join(map(str, path_or_dataset))})")
        parts = {}
        for split_name, key in found.items():
            if not _is_split(path_or_dataset[key]):
                raise UnforcedError(f"{where}: split {key!r} is not a table (iterable rows with column_names)")
            parts[split_name], _ = _read_split(path_or_dataset[key], str(key), source_column, target_column, None)
        train = parts["train"]
        if "test" not in parts or "valid" not in parts:
            if len(train) < 3:
                raise UnforcedError(f"{where}: need at least 3 training rows to cut missing splits from")
            rest, cut_valid, cut_test = deterministic_split(train, seed)
            train = rest
            parts.setdefault("valid", cut_valid)
            parts.setdefault("test", cut_test)
        valid, test = parts["valid"], parts["test"]
    elif _is_split(path_or_dataset):
        where = name = "dataset"
        pairs, splits = _read_split(path_or_dataset, "dataset", source_column, target_column, split_column)
        if not pairs:
            raise UnforcedError("dataset: no rows")
        train, valid, test = _by_split(pairs, splits, where, seed)
    else:
        raise UnforcedError(f"table_task takes a path to a {'/'.join(SUFFIXES)} file, a Hugging Face Dataset or "
                            f"DatasetDict, got {type(path_or_dataset).__name__}")
    source_tok = train_tokenizer([s for s, _ in train], tokenizer, vocab_size)
    target_tok = train_tokenizer([t for _, t in train], tokenizer, vocab_size)
    return Task(name=name, train=train, valid=valid, test=test, source_tokenizer=source_tok,
                target_tokenizer=target_tok, metric=metric, description=f"table {where}",
                settings={"source_column": source_column, "target_column": target_column,
                          "split_column": split_column, "tokenizer": tokenizer, "vocab_size": vocab_size,
                          "seed": seed, **({"path": where} if isinstance(path_or_dataset, str | Path) else {})})
