"""The training phases of a run (experiment.py): each phase of an entry trained by its own Trainer, and the first
phases that several entries share trained once.

No work is done twice: entries whose first phase is the same strategy trained from scratch (same options, seed,
batches and learning rate: the Trainer's rate depends on the step and the warm-up only, never on the total steps)
share it. The first entry to train it stops at every step where another such phase ends (its checkpoint there is
kept as `step-N.pt`, and a stop then a resume replays exactly, train.py); a later entry starts from the longest
such checkpoint that does not pass its own step count, with the donor's metrics lines copied and marked
`reused_from`. A strategy that observes validation is shared only at evaluation steps (an extra evaluation at the
stop would change what it saw).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unforced import distributed
from unforced.config import validate_config
from unforced.models import ModelConfig, build_model
from unforced.run_config import PRESETS, RunConfig, entry_phases, strategy_options
from unforced.runfiles import append_metrics, atomic_save, keep_metrics, read_checkpoint_file, read_metrics
from unforced.strategies import make_strategy, warm_start_source
from unforced.strategies.base import Observer, TaskBound
from unforced.switch import Patience, SwitchConfig
from unforced.train import TrainConfig, Trainer


def safe_name(entry: str) -> str:
    """An entry's folder name (checkpoints, a sweep's job directory)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", entry).strip("-")


@dataclass
class PhaseContext:
    """What every training phase of one run shares."""

    task: object
    config: RunConfig
    train_config: TrainConfig
    model_config: ModelConfig
    out: Path
    metrics_path: Path
    limits: dict
    progress: Callable | None
    validation: Callable
    resume: bool
    shared_ends: dict[str, set[int]] = dataclasses.field(default_factory=dict)  # strategy -> first-phase ends
    switch: SwitchConfig | None = None  # a chain's phases (all but the last) end on a validation stall
    prefixes: dict[str, dict[int, tuple[Path, str]]] = dataclasses.field(default_factory=dict)
    # strategy -> {step: (checkpoint, tag of the entry that trained it)}, the first phases trained so far


def shared_ends(config: RunConfig, train_config: TrainConfig) -> dict[str, set[int]]:
    """Where each strategy's first phases trained from scratch end, for the strategies that begin two or more
    entries: a shared first phase stops there on the way (single process only: a stop then a resume reads the
    main process's checkpoint)."""
    if distributed.world_size() > 1:
        return {}
    ends: dict[str, list[int]] = {}
    for entry in config.strategies:
        phases = entry_phases(config, entry)
        if len(phases) == 1 and warm_start_source(phases[0].strategy) is not None:
            continue  # starts from another entry's weights, not from scratch
        if len(phases) > 1 and config.switch is not None:
            continue  # ends where its validation stalls, which no other entry's phase knows
        ends.setdefault(phases[0].strategy, []).append(phases[0].steps or train_config.steps)
    return {name: set(steps) for name, steps in ends.items() if len(steps) > 1}


def _phase_train_config(context: PhaseContext, strategy_name: str, steps: int) -> TrainConfig:
    preset = PRESETS[context.config.preset].get("phase_train", {}).get(strategy_name, {})
    overrides = {**preset, **(context.config.phase_train.get(strategy_name) or {}), "steps": steps}
    return validate_config(TrainConfig, {**dataclasses.asdict(context.train_config), **overrides},
                           prefix=f"phase_train.{strategy_name}")


def train_phase(context: PhaseContext, model, strategy_name: str, steps: int, checkpoint_dir: Path, tag: str,
                 step_offset: int, resume: bool | None = None, total: int | None = None,
                 patience: Patience | None = None) -> float:
    """Train `model` in place up to step `steps` of one strategy (continuing from the checkpoint in
    `checkpoint_dir` with `resume`, by default the run's --resume); returns the training seconds. `total` is the
    phase's full length where this is one stretch of it (progress shows the whole phase). With `patience` the
    phase ends early when validation stalls (switch.py)."""
    options = strategy_options(context.config, strategy_name)
    strategy = make_strategy(strategy_name, options, seed=context.config.seed)
    if isinstance(strategy, TaskBound):  # the task's decoder, its metric as a reward, its oracle
        strategy.bind(context.task)
    identity = {"model_config": dataclasses.asdict(context.model_config), "strategy": strategy_name,
                "task": context.task.name}
    progress = context.progress
    total = total or steps

    def report(record: dict) -> None:
        if "steps" in record and total != record["steps"]:
            speed = max(record.get("steps_per_second", 0.0), 1e-9)
            record = {**record, "steps": total, "eta_seconds": (total - record["step"]) / speed}
        progress(tag, record)

    trainer = Trainer(model, context.task, strategy, _phase_train_config(context, strategy_name, steps),
                      checkpoint_dir, context.metrics_path, tag=tag, identity=identity, limits=context.limits,
                      evaluate=context.validation, step_offset=step_offset,
                      progress=report if progress else None, patience=patience)
    if context.resume if resume is None else resume:
        trainer.resume()
    return trainer.fit()["train_seconds"]


def train_first_phase(context: PhaseContext, model, strategy_name: str, steps: int, checkpoint_dir: Path,
                       tag: str) -> tuple[float, dict | None]:
    """Train the first phase of an entry from scratch, starting from the longest identical phase another entry
    trained already (see the module docstring) and stopping on the way where others end; returns the seconds
    (those of a reused stretch included) and what was reused ({"from": tag, "steps": N}) or None."""
    ends = context.shared_ends.get(strategy_name, set())
    if not ends:
        return train_phase(context, model, strategy_name, steps, checkpoint_dir, tag, 0), None
    train_config = _phase_train_config(context, strategy_name, steps)
    observes = isinstance(make_strategy(strategy_name, strategy_options(context.config, strategy_name),
                                        seed=context.config.seed), Observer)

    def shareable(step: int) -> bool:  # an observer's extra evaluation at the stop would change its course
        every = train_config.eval_every
        return not observes or not every or step % every == 0

    known = context.prefixes.setdefault(strategy_name, {})
    last = checkpoint_dir / "last.pt"
    reused, start = None, 0
    candidates = [step for step in known if step <= steps]
    if candidates and not (context.resume and last.exists()):
        start = max(candidates)
        source_path, source_tag = known[start]
        # The metrics lines first, then the checkpoint: a run stopped in between finds no checkpoint on --resume
        # and copies both again; one stopped after finds the lines that say what it reused.
        _copy_metrics(context, source_tag, tag, start)
        atomic_save(read_checkpoint_file(source_path), last)
        reused = {"from": source_tag, "steps": start}
        if context.progress:
            context.progress(tag, {"phase": "reused", "from": source_tag, "step": start})
    elif candidates and context.resume:  # resumed after an earlier run had reused a stretch: say so again
        start = max(candidates)
        marked = [r for r in read_metrics(context.metrics_path) if r.get("strategy") == tag and "reused_from" in r]
        if marked:
            reused = {"from": marked[0]["reused_from"], "steps": start}
    stops = sorted(step for step in ends if start < step < steps and shareable(step)) + [steps]
    seconds = 0.0
    for stop in stops:
        seconds = train_phase(context, model, strategy_name, stop, checkpoint_dir, tag, 0,
                               resume=context.resume or reused is not None or stop != stops[0], total=steps)
        if stop < steps:
            snapshot = checkpoint_dir / f"step-{stop}.pt"
            state = read_checkpoint_file(last)
            if state.get("step") == stop:
                atomic_save(state, snapshot)
            if snapshot.exists():
                known.setdefault(stop, (snapshot, tag))
    if reused is not None and reused["steps"] == steps:
        _validate_reused(context, model, tag, steps)
    known.setdefault(steps, (last, tag))
    return seconds, reused


def _copy_metrics(context: PhaseContext, source_tag: str, tag: str, step: int) -> None:
    """The donor's metrics lines up to `step`, written again under `tag` and marked `reused_from`."""
    if not distributed.is_main():
        return
    records = read_metrics(context.metrics_path)
    keep_metrics(context.metrics_path, lambda record: record.get("strategy") != tag)
    for record in records:
        if record.get("strategy") == source_tag and record.get("step", 0) <= step:
            append_metrics(context.metrics_path, {**record, "strategy": tag,
                                                  "reused_from": record.get("reused_from", source_tag)})


def _validate_reused(context: PhaseContext, model, tag: str, step: int) -> None:
    """A phase taken whole from another entry gets the validation line its own end would have written."""
    if not (distributed.is_main() and context.train_config.eval_every):
        return
    if any(r.get("strategy") == tag and r.get("step") == step and "eval" in r
           for r in read_metrics(context.metrics_path)):
        return
    figures = context.validation(model)
    model.train()
    append_metrics(context.metrics_path, {"strategy": tag, "step": step, "eval": figures, "global_step": step})


def warm_start_weights(context: PhaseContext, finished: dict, source: str) -> tuple[dict, float, int]:
    """The weights of `source` trained alone in this run (trained now if no entry has trained them yet), with
    their seconds and steps: both count towards the entry fine-tuned from them."""
    if source not in finished:
        torch.manual_seed(context.config.seed)
        model = build_model(context.model_config)
        steps = context.train_config.steps
        seconds = train_phase(context, model, source, steps, context.out / "checkpoints" / safe_name(source),
                               source, 0)
        finished[source] = (copy.deepcopy(model.state_dict()), seconds, steps)
    return finished[source]


__all__ = ["PhaseContext", "safe_name", "shared_ends", "train_first_phase", "train_phase", "warm_start_weights"]
