"""Measure the user's own model where it lives: no run directory, no training.

    report = unforced.measure(model, data, tokenizer=tok, metric="bleu")
    report.figures["gap_pct"], report.figures["metric"]["fr"], report.to_json(), report.save_report("out/")

`model` is a model of the library's contract (`encode`, `forced`, `start`, `step`, `.config.max_target_len`) or a
`transformers` model (wrapped with `models.hf.wrap_hf_model`, sharing its parameters; never changed). `data` is a
Task or an iterable of (source, references) pairs, references a string or a list of strings. Tokenizers follow
the library's Tokenizer protocol (`encode`, `decode`, `vocab_size`, specials at ids 0-3); a `transformers`
tokenizer is adapted to it together with its model. The figures are those of one strategy's entry in
results.json (`diagnostics.gap.evaluate`), the diagnostics those of diagnostics.json (`diagnostics.suite`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unforced.errors import UnforcedError
from unforced.tasks.base import Example, Task

ENTRY = "model"  # the one entry of a measured model's results.json


def is_hf_model(model) -> bool:
    return hasattr(model, "get_output_embeddings") and hasattr(getattr(model, "config", None), "to_dict")


def as_library_model(model, tokenizer=None, max_source_len: int | None = None, max_target_len: int | None = None):
    """(model behind the library's contract, tokenizer in library ids or None): a transformers model wrapped,
    sharing its parameters, its training mode left as it was; a library model as it is."""
    if not is_hf_model(model):
        if not all(hasattr(model, name) for name in ("encode", "forced", "start", "step")):
            raise UnforcedError(f"{type(model).__name__}: not a model of the library's contract (encode, forced, "
                                f"start, step) nor a transformers model")
        return model, tokenizer
    from unforced.models.hf import wrap_hf_model

    training = model.training
    wrapped = wrap_hf_model(model, tokenizer if _is_hf_tokenizer(tokenizer) else None, max_source_len,
                            max_target_len, name_or_path=getattr(model.config, "name_or_path", None) or None)
    model.train(training)
    return wrapped, (wrapped.tokenizer if _is_hf_tokenizer(tokenizer) else tokenizer)


def _is_hf_tokenizer(tokenizer) -> bool:
    return tokenizer is not None and hasattr(tokenizer, "convert_tokens_to_ids")


def examples_of(data: Iterable, where: str = "data") -> list[Example]:
    """(source, references) pairs as Examples, each checked: a non-empty source and at least one reference."""
    examples = []
    for index, item in enumerate(data):
        if not isinstance(item, tuple | list | Example) or len(item) != 2:
            raise UnforcedError(f"{where}[{index}]: expected a (source, references) pair, got {item!r:.80}")
        source, references = item
        references = [references] if isinstance(references, str) else list(references)
        if not references or not all(isinstance(r, str) for r in references):
            raise UnforcedError(f"{where}[{index}]: references must be a string or a non-empty list of strings")
        if isinstance(source, str) and not source.strip():
            raise UnforcedError(f"{where}[{index}]: empty source")
        examples.append(Example(source, references))
    if not examples:
        raise UnforcedError(f"{where}: no examples")
    return examples


def measurement_task(data, source_tokenizer, target_tokenizer, metric: str = "bleu", name: str = "measured",
                     source_codec=None) -> Task:
    """A Task whose test split is `data` (a Task is returned as it is)."""
    if isinstance(data, Task):
        return data
    if target_tokenizer is None:
        raise UnforcedError("measure needs a tokenizer (tokenizer= or target_tokenizer=) to score text")
    from unforced.rewards.corpus import HIGHER_IS_BETTER

    if metric not in HIGHER_IS_BETTER:
        raise UnforcedError(f"unknown metric {metric!r}; known: {', '.join(HIGHER_IS_BETTER)}")
    return Task(name, [], [], examples_of(data), source_tokenizer, target_tokenizer, metric=metric,
                source_codec=source_codec)


def measurement_limits(task: Task, model) -> dict:
    """Truncation limits for measuring `model` on `task`: the task's longest source and target (`Task.longest`,
    as a training run sets them), within what the model accepts."""
    source, target = task.longest()
    return {"max_source_len": min(source, model.config.max_source_len),
            "max_target_len": min(target, model.config.max_target_len)}


def rng_states() -> dict:
    """Every random state a measurement could advance: Python's, numpy's global one, torch's (and CUDA's)."""
    import random

    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng_states(states: dict) -> None:
    import random

    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["torch"])
    if states["cuda"] is not None:
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class GapReport:
    """The figures of one model on one split (results.json's entry), its diagnostics (diagnostics.json's), and
    what produced them."""

    task: str
    split: str
    figures: dict
    diagnostics: dict | None = None
    signature: dict = field(default_factory=dict)

    def results(self) -> dict:
        """The results.json document of this measurement (one entry, `model`)."""
        return {"task": self.task, "seed": 0, "signature": self.signature, "split": self.split,
                "strategies": {ENTRY: self.figures}}

    def to_json(self) -> str:
        from unforced.diagnostics.suite import clean_json

        return json.dumps(clean_json({**self.results(), "diagnostics": self.diagnostics}))

    def save_report(self, directory: str | Path) -> Path:
        """results.json, diagnostics.json and report.html (with its figures) in `directory`; returns the report's
        path. A directory that holds another run's files is refused rather than overwritten."""
        import yaml

        from unforced.diagnostics.suite import clean_json
        from unforced.report import build_report
        from unforced.runfiles import atomic_write_text

        directory = Path(directory)
        if directory.exists() and (directory / "metrics.jsonl").exists():
            raise UnforcedError(f"{directory}: holds a training run; save the measurement elsewhere")
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(yaml.safe_dump({"task": self.task, "measured": {"split": self.split}}, sort_keys=False),
                          directory / "config.yaml")
        atomic_write_text(json.dumps(clean_json(self.results()), indent=1), directory / "results.json")
        if self.diagnostics is not None:
            document = {"task": self.task, "split": self.split, "limit": None,
                        "strategies": {ENTRY: {**self.figures, "diagnostics": self.diagnostics}}}
            atomic_write_text(json.dumps(clean_json(document), indent=1), directory / "diagnostics.json")
        return build_report(directory)


def measure(model, data, tokenizer=None, *, source_tokenizer=None, target_tokenizer=None, metric: str = "bleu",
            split: str = "test", limit: int | None = None, beam_size: int = 0, diagnostics: bool = True,
            diagnostics_limit: int | None = 200, batch_size: int = 64, device: str | None = None,
            seed: int = 0) -> GapReport:
    """Every measure of the gap report on `model` over `data` (see the module docstring).

    `tokenizer` serves both sides unless `source_tokenizer` / `target_tokenizer` say otherwise. `limit` caps the
    examples measured; `beam_size` adds a beam decode's metric; `diagnostics=False` leaves out the ratio sweep,
    hidden-state divergence, recovery, compounding fit, prefix divergence and prefix swap. `device` moves the
    model there for the measurement and back after; by default it is measured where it is."""
    from unforced import distributed
    from unforced.diagnostics import evaluate
    from unforced.diagnostics.suite import clean_json, diagnose

    source_tokenizer = source_tokenizer or tokenizer
    target_tokenizer = target_tokenizer or tokenizer
    training = model.training  # the user's model: left in its mode, on its device, with the RNG state as it was
    wrapped, adapted = as_library_model(model, target_tokenizer)
    if adapted is not target_tokenizer:  # a transformers tokenizer: adapted with the model, one vocabulary
        source_tokenizer = target_tokenizer = adapted
    task = measurement_task(data, source_tokenizer, target_tokenizer, metric)
    examples = task.split(split)
    if not examples:
        raise UnforcedError(f"{task.name}: the {split!r} split is empty")
    limits = measurement_limits(task, wrapped)
    before = next(wrapped.parameters()).device
    target = distributed.choose_device(device) if device else before
    wrapped.to(target)
    states = rng_states()
    try:
        figures = evaluate(wrapped, task, split, batch_size=batch_size, limit=limit, limits=limits,
                           beam_size=beam_size)
        figures["train_seconds"] = 0.0
        details = None
        if diagnostics:
            details = diagnose(wrapped, task, split, limit=diagnostics_limit, limits=limits, seed=seed,
                               per_position=figures["per_position"])
    finally:
        restore_rng_states(states)
        wrapped.to(before)
        model.train(training)
    from unforced.experiment import results_signature, signature

    base = {**signature(), "device": target.type if target.type == "cpu" else str(target), "precision": "fp32"}
    return GapReport(task.name, split, clean_json(figures), clean_json(details) if details is not None else None,
                     results_signature(base, task, figures["metric"], [seed]))


__all__ = ["GapReport", "as_library_model", "examples_of", "measure", "measurement_limits", "measurement_task",
           "restore_rng_states", "rng_states"]
