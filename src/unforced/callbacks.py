"""Teacher-forced against free-running figures every N steps of the user's own training loop.

    from unforced.callbacks import GapCallback                      # transformers.Trainer (and TRL's trainers)
    trainer.add_callback(GapCallback(pairs, tokenizer, every=200, out="runs/mine", trainer=trainer))

    from unforced.callbacks import lightning_gap_callback           # PyTorch Lightning (the 'lightning' extra)
    pl.Trainer(callbacks=[lightning_gap_callback(pairs, tokenizer, every=200, out="runs/mine")])

Each call measures a fixed sample (the first `limit` pairs, 256 by default) under no_grad, with the model in eval
mode, and then puts back the model's training mode and every random state (Python, numpy, torch, CUDA), so the
training run goes on exactly as it would have without the callback. Its cost is one teacher-forced pass and one
greedy decode of the sample: docs/bring-your-own-model.md gives a measured figure. The figures go to the trainer's
own loggers (`Trainer.log` for transformers: log_history, TensorBoard, W&B; `LightningModule.log_dict` for
Lightning) under `unforced/...` names, and, with `out`, to `<out>/metrics.jsonl` as evaluation lines and, at the
end of training, `<out>/results.json`, so `unforced report <out>` draws them.
"""

from __future__ import annotations

import json
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.measurement import (
    ENTRY,
    as_library_model,
    measurement_limits,
    measurement_task,
    restore_rng_states,
    rng_states,
)

LOGGED = ("tf_nll", "fr_nll", "gap_pct", "tf_token_acc", "fr_token_acc")


class GapMonitor:
    """What both callbacks share: the fixed sample, one measurement, and the files it writes."""

    def __init__(self, data, tokenizer=None, every: int = 100, limit: int = 256, metric: str = "bleu",
                 out: str | Path | None = None, source_tokenizer=None, prefix: str = "unforced/"):
        if every < 1:
            raise UnforcedError(f"every must be at least 1, got {every}")
        if limit < 1:
            raise UnforcedError(f"limit must be at least 1, got {limit}")
        self.data = list(data)[:limit]
        self.tokenizer, self.source_tokenizer = tokenizer, source_tokenizer
        self.every, self.limit, self.metric, self.prefix = every, limit, metric, prefix
        self.out = Path(out) if out is not None else None
        self.last: dict | None = None
        self._task = None
        self._measured_step: int | None = None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            if (self.out / "results.json").exists():
                raise UnforcedError(f"{self.out}: already holds results.json; give the callback a new directory")

    def due(self, step: int) -> bool:
        """Every `every` steps, once per step (gradient accumulation calls a batch hook several times a step)."""
        return step > 0 and step % self.every == 0 and step != self._measured_step

    def measure(self, model, step: int) -> dict:
        """The gap figures of `model` on the sample at training step `step` (flat, for loggers)."""
        from unforced.diagnostics import evaluate

        training = model.training
        states = rng_states()
        try:
            wrapped, tokenizer = as_library_model(model, self.tokenizer)
            if self._task is None:
                source = tokenizer if tokenizer is not self.tokenizer else (self.source_tokenizer or tokenizer)
                self._task = measurement_task(self.data, source, tokenizer, self.metric, name="callback")
                self._limits = measurement_limits(self._task, wrapped)
            figures = evaluate(wrapped, self._task, "test", limits=self._limits)
        finally:
            model.train(training)
            restore_rng_states(states)
        self.last, self._measured_step = figures, step
        flat = {f"{self.prefix}{key}": float(figures[key]) for key in LOGGED}
        flat[f"{self.prefix}fr_{figures['metric']['name']}"] = float(figures["metric"]["fr"])
        flat[f"{self.prefix}on_path_nll"] = float(figures["measures"]["on_path_nll"])
        if self.out is not None:
            self._append(step, figures)
        return flat

    def _append(self, step: int, figures: dict) -> None:
        from unforced.runfiles import append_metrics, atomic_write_text

        if not (self.out / "config.yaml").exists():
            import yaml

            atomic_write_text(yaml.safe_dump({"task": "callback", "measured": {"every": self.every,
                                                                               "limit": self.limit}}),
                              self.out / "config.yaml")
        evaluation = {key: figures[key] for key in LOGGED}
        evaluation["metric"] = {"name": figures["metric"]["name"], "fr": figures["metric"]["fr"]}
        append_metrics(self.out / "metrics.jsonl", {"strategy": ENTRY, "step": step, "eval": evaluation})

    def finish(self, model, step: int) -> None:
        """At the end of training: a last measurement and results.json, so `unforced report` reads the folder."""
        if self.out is None:
            return
        from unforced.diagnostics.suite import clean_json
        from unforced.runfiles import atomic_write_text

        if self._measured_step != step:
            self.measure(model, step)
        results = {"task": "callback", "seed": 0, "strategies": {ENTRY: {**self.last, "train_seconds": 0.0}}}
        atomic_write_text(json.dumps(clean_json(results), indent=1), self.out / "results.json")


def _trainer_callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise UnforcedError("GapCallback needs transformers: pip install 'unforced[hf]'") from None
    return TrainerCallback


class GapCallback(_trainer_callback_base()):
    """A `transformers.TrainerCallback`: the gap figures every `every` optimiser steps (see the module docstring).
    Give it the trainer (`trainer=`) to log through `Trainer.log` (log_history and every reporting integration);
    without it the figures go to `state.log_history` only. Measures on the main process only."""

    def __init__(self, data, tokenizer=None, every: int = 100, limit: int = 256, metric: str = "bleu",
                 out: str | Path | None = None, trainer=None, source_tokenizer=None):
        self.monitor = GapMonitor(data, tokenizer, every, limit, metric, out, source_tokenizer)
        self.trainer = trainer

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or not state.is_world_process_zero or not self.monitor.due(state.global_step):
            return control
        logs = self.monitor.measure(model, state.global_step)
        if self.trainer is not None:
            self.trainer.log(logs)
        else:
            state.log_history.append({**logs, "step": state.global_step})
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None and state.is_world_process_zero:
            self.monitor.finish(model, state.global_step)
        return control


def lightning_gap_callback(data, tokenizer=None, every: int = 100, limit: int = 256, metric: str = "bleu",
                           out: str | Path | None = None, model_attribute: str | None = None,
                           source_tokenizer=None):
    """A PyTorch Lightning `Callback` doing what GapCallback does. The measured model is the LightningModule
    itself, or its attribute `model_attribute` (e.g. "model" for a module wrapping a transformers model)."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        raise UnforcedError("the Lightning callback needs lightning: pip install 'unforced[lightning]'") from None
    monitor = GapMonitor(data, tokenizer, every, limit, metric, out, source_tokenizer)

    def measured(module):
        return getattr(module, model_attribute) if model_attribute else module

    class LightningGapCallback(Callback):
        def __init__(self):
            self.monitor = monitor

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if not trainer.is_global_zero or not monitor.due(trainer.global_step):
                return
            logs = monitor.measure(measured(pl_module), trainer.global_step)
            pl_module.log_dict(logs, rank_zero_only=True)

        def on_train_end(self, trainer, pl_module):
            if trainer.is_global_zero:
                monitor.finish(measured(pl_module), trainer.global_step)

    return LightningGapCallback()


__all__ = ["GapCallback", "GapMonitor", "lightning_gap_callback"]
