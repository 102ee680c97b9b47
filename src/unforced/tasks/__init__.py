"""Tasks: a plain dict registry of names to builders, plus any local pairs file (`.tsv` / `.jsonl`), table with
named columns (`.csv`, or any of them given `source_column` / `target_column`), or manifest of audio or images
(`.jsonl` / `.csv` with an `audio` or `image` field)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.tasks.base import Batch, Example, Pair, Task, with_labelled_share
from unforced.tasks.bible import bible_task
from unforced.tasks.captions import captions_task
from unforced.tasks.files import file_task
from unforced.tasks.manifests import manifest_kind, manifest_task
from unforced.tasks.speech import speech_task
from unforced.tasks.synthetic import (
    addition_task,
    copy_task,
    noisy_copy_task,
    reverse_task,
    sort_task,
    toy_translation_task,
)
from unforced.tasks.tables import table_task

TASKS: dict[str, Callable[..., Task]] = {
    "bible-en-es": bible_task,
    "toy-translation": toy_translation_task,
    "copy": copy_task,
    "reverse": reverse_task,
    "sort": sort_task,
    "addition": addition_task,
    "noisy-copy": noisy_copy_task,
    "speech": speech_task,
    "captions": captions_task,
}

DEFAULT_TASK = "bible-en-es"
TABLE_COLUMNS = {"source_column", "target_column", "split_column"}


def task_options(name: str) -> dict[str, object]:
    """The options a task takes, with their defaults."""
    builder = TASKS[name]
    if name in ("copy", "reverse", "sort"):
        from unforced.tasks.synthetic import symbol_task as builder
    options = {key: p.default for key, p in inspect.signature(builder).parameters.items()
               if p.default is not inspect.Parameter.empty}
    return {**options, "labelled": 1.0}  # every task takes it (get_task)


def get_task(name: str, **options) -> Task:
    """Build the task `name` (a registered name or a path to a .tsv/.jsonl pairs file) with `options`.

    Every task also takes `labelled`, the share of its train split that keeps its references (default 1); the
    sources of the rest become `task.unlabelled` (`with_labelled_share`), for strategies that learn from them."""
    labelled = options.pop("labelled", 1.0)
    if isinstance(labelled, bool) or not isinstance(labelled, int | float) or not 0 < labelled <= 1:
        raise UnforcedError(f"task option labelled (the labelled share of the train split) is in (0, 1], "
                            f"got {labelled!r}")
    task = _build_task(name, **options)
    return with_labelled_share(task, float(labelled), seed=int(options.get("seed", 0)))


def _build_task(name: str, **options) -> Task:
    if name in TASKS:
        known = task_options(name)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UnforcedError(f"task {name!r} has no option(s) {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(known))}")
        for key, value in options.items():
            default = known[key]
            if isinstance(default, int) and not isinstance(default, bool) and (
                    isinstance(value, bool) or not isinstance(value, int)):
                raise UnforcedError(f"task option {key} must be an integer, got {value!r}")
            if isinstance(default, str) and not isinstance(value, str):
                raise UnforcedError(f"task option {key} must be a string, got {value!r}")
            if key in ("size", "length", "symbols") and isinstance(value, int) and value > 10_000_000:
                raise UnforcedError(f"task option {key} is too large ({value:,})")
        return TASKS[name](**options)
    if name.endswith((".tsv", ".jsonl", ".csv")) or Path(name).exists():
        if not Path(name).exists():
            raise UnforcedError(f"data file {name} does not exist")
        if manifest_kind(name):
            allowed = {"tokenizer", "vocab_size", "seed", "metric", "sample_rate", "mels", "image_size"}
            unknown = sorted(set(options) - allowed)
            if unknown:
                raise UnforcedError(f"a manifest task has no option(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(sorted(allowed))}")
            return manifest_task(name, **options)
        # A .csv, or any table given column names, has a header row of named columns; a plain .tsv/.jsonl is
        # the headerless pairs format.
        named = name.endswith(".csv") or bool(set(options) & TABLE_COLUMNS)
        allowed = {"tokenizer", "vocab_size", "seed", "metric"} | (TABLE_COLUMNS if named else set())
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise UnforcedError(f"a pairs file task has no option(s) {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(allowed))}")
        return table_task(name, **options) if named else file_task(name, **options)
    raise UnforcedError(f"unknown task {name!r}; known: {', '.join(TASKS)}, or a path to a .tsv/.jsonl/.csv "
                        f"file")


__all__ = ["TASKS", "DEFAULT_TASK", "Batch", "Example", "Pair", "Task", "get_task", "task_options",
           "with_labelled_share"]
