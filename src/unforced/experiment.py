"""The main job: train every requested strategy on one task with the same model, seed and budget, measure the
gap of each, and write the run directory.

    <out>/config.yaml                      everything that produced the numbers
    <out>/metrics.jsonl                    training and validation lines, each tagged with its strategy
    <out>/checkpoints/<strategy>/last.pt   one checkpoint per strategy (per phase of a chain)
    <out>/results.json                     the results contract (DESIGN.md)
    <out>/report.html, <out>/figures/*.png

A strategy entry is a registered name or a chain of phases (`a:2000>b:500`), each phase starting from the
previous one's weights. A strategy that declares a warm start (`warm_start = True`), named alone, starts from the
model of the strategy it names (strategies.WARM_START_FROM by default) trained in the same run; its results entry
records that name as `warm_start_from`. Nothing here knows a strategy by name: capabilities are tested with
`isinstance` against strategies/base.py's Protocols.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from unforced import __version__, distributed
from unforced.config import validate_config
from unforced.diagnostics import evaluate
from unforced.diagnostics.suite import clean_json, diagnose
from unforced.errors import UnforcedError
from unforced.lock import run_lock
from unforced.models import ModelConfig, build_model
from unforced.run_config import (  # noqa: F401  (re-exported: the run config belongs with the main job)
    DEFAULT_STRATEGIES,
    PRESETS,
    Phase,
    RunConfig,
    parse_entry,
    resolve,
    strategy_options,
)
from unforced.runfiles import atomic_write_text, claim_run_directory
from unforced.strategies import STRATEGIES, make_strategy, warm_start_source
from unforced.strategies.base import TaskBound
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer


def safe_name(entry: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", entry).strip("-")


def signature(train_config: TrainConfig | None = None) -> dict:
    """What produced the numbers, so two results can be compared (cf. sacrebleu's signatures): versions, threads,
    and the device and precision the training ran on."""
    import numpy

    train_config = train_config or TrainConfig()
    device = distributed.choose_device(train_config.device)
    return {"unforced": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "device": device.type if device.type == "cpu" else str(device), "precision": train_config.precision}


def run_experiment(config: RunConfig, out: Path, progress: Callable[[str, dict], None] | None = None,
                   resume: bool = False, overwrite: bool = False) -> dict:
    """Train and compare every strategy entry of `config` (see `_run_experiment`), holding the run lock.
    Under a distributed launch every process trains; the main one alone locks, writes and evaluates."""
    with run_lock(Path(out)) if distributed.is_main() else contextlib.nullcontext():
        return _run_experiment(config, Path(out), progress, resume, overwrite)


def _run_experiment(config: RunConfig, out: Path, progress: Callable[[str, dict], None] | None = None,
                    resume: bool = False, overwrite: bool = False) -> dict:
    """Train and compare every strategy entry of `config`; write the run directory; return results.json's dict.

    A directory that already holds a run is continued only with `resume` (and the same settings), replaced only
    with `overwrite`; otherwise it is refused, so nothing written before is lost."""
    for entry in config.strategies:
        parse_entry(entry, config.preset)
    if len(set(config.strategies)) != len(config.strategies):
        raise UnforcedError("a strategy entry is named twice")
    task_options, model_options, train_options = resolve(config)
    train_config = validate_config(TrainConfig, train_options, prefix="train")
    task = get_task(config.task, **{"seed": config.seed, **task_options})
    if model_options.get("kind") == "hf":  # the user's model brings its own tokenizer and vocabulary
        model_options = _adopt_hf_model(task, model_options)
    longest_source, longest_target = task.longest()
    model_options = {"max_source_len": longest_source, "max_target_len": longest_target, **model_options}
    for key, value in task.source_codec.model_options().items():  # the encoder front end the source needs
        model_options.setdefault(key, value)
    model_options.setdefault("target_vocab", task.target_tokenizer.vocab_size)
    model_config = validate_config(ModelConfig, model_options, prefix="model")
    limits = {"max_source_len": model_config.max_source_len, "max_target_len": model_config.max_target_len}
    out = Path(out)
    resolved = {"task": config.task, "task_options": task_options, "strategies": config.strategies,
                "phases": {entry: [f"{p.strategy}:{p.steps or 'default'}" for p in parse_entry(entry, config.preset)]
                           for entry in config.strategies},
                "strategy_options": {name: strategy_options(config, name) for name in STRATEGIES},
                "phase_train": {name: {**PRESETS[config.preset].get("phase_train", {}).get(name, {}),
                                       **(config.phase_train.get(name) or {})} for name in STRATEGIES},
                "model": dataclasses.asdict(model_config),
                "train": dataclasses.asdict(train_config), "preset": config.preset, "seed": config.seed,
                "test_limit": config.test_limit, "signature": signature(train_config)}
    main = distributed.is_main()
    if main:
        claim_run_directory(out, resolved, resume, overwrite, sections={"model": ModelConfig, "train": TrainConfig})
        atomic_write_text(yaml.safe_dump(resolved, sort_keys=False), out / "config.yaml")
        atomic_write_text(json.dumps({"source": task.source_tokenizer.to_json() if task.source_tokenizer else None,
                                      "target": task.target_tokenizer.to_json()}), out / "tokenizers.json")
    distributed.barrier()  # the others read checkpoints only after the main process has claimed the directory
    metrics_path = out / "metrics.jsonl"
    test_limit = config.test_limit

    def validation(model):
        figures = evaluate(model, task, "valid", limit=train_config.eval_limit, limits=limits)
        return {k: figures[k] for k in ("tf_nll", "fr_nll", "gap_pct", "tf_token_acc", "fr_token_acc", "metric")}

    context = _Context(task, config, train_config, model_config, out, metrics_path, limits, progress, validation,
                       resume)
    finished: dict[str, tuple[dict, float, int]] = {}  # weights, seconds and steps of each entry (warm starts)
    diagnostics = {"task": task.name, "split": "test", "limit": config.diagnostics_limit, "strategies": {}}
    results = {"task": task.name, "seed": config.seed, "task_settings": task.settings,
               "model": dataclasses.asdict(model_config), "signature": resolved["signature"], "strategies": {}}
    for entry in config.strategies:
        phases = parse_entry(entry, config.preset)
        torch.manual_seed(config.seed)
        model = build_model(model_config)
        seconds, steps_done = 0.0, 0
        source = warm_start_source(phases[0].strategy) if len(phases) == 1 else None
        warm_start = source is not None
        if warm_start:
            warm, seconds, steps_done = _warm_start(context, finished, source)
            model.load_state_dict(warm)
        alone = len(config.strategies) == 1 and len(phases) == 1 and not warm_start
        for index, phase in enumerate(phases):
            steps = phase.steps or (PRESETS[config.preset]["fine_tune_steps"] if warm_start else train_config.steps)
            tag = entry if len(phases) == 1 else f"{entry}#{index + 1}:{phase.strategy}"
            # A run of one plain strategy keeps the contract's <out>/checkpoints/last.pt; several get a folder each.
            checkpoint_dir = out / "checkpoints" if alone else out / "checkpoints" / safe_name(tag)
            seconds += _train_phase(context, model, phase.strategy, steps, checkpoint_dir, tag, steps_done)
            steps_done += steps
        finished[entry] = (copy.deepcopy(model.state_dict()), seconds, steps_done)
        if not main:
            continue
        if progress:
            progress(entry, {"phase": "evaluate"})
        figures = evaluate(model, task, "test", limit=test_limit, limits=limits)
        figures["train_seconds"] = seconds
        figures["warm_start_from"] = source
        figures["checkpoint"] = str((checkpoint_dir / "last.pt").relative_to(out))
        results["strategies"][entry] = figures
        atomic_write_text(json.dumps(results, indent=1), out / "results.json")
        if config.diagnostics_limit:
            if progress:
                progress(entry, {"phase": "diagnostics"})
            diagnostics["strategies"][entry] = clean_json({
                "per_position": figures["per_position"],
                "diagnostics": diagnose(model, task, "test", limit=config.diagnostics_limit, limits=limits,
                                        seed=config.seed, per_position=figures["per_position"])})
            atomic_write_text(json.dumps(diagnostics, indent=1), out / "diagnostics.json")
    return results


def _adopt_hf_model(task, model_options: dict) -> dict:
    """Give `task` the Hugging Face model's tokenizer (where it has one) and return the model options with its
    vocabulary: the model is loaded once here, and again (fresh) for every strategy."""
    from unforced.models.hf import load_hf_model

    validate_config(ModelConfig, {"kind": "hf", **model_options}, prefix="model")
    probe = load_hf_model(model_options.get("path"))  # lengths are checked once the task's are known
    if probe.tokenizer is not None:
        task.source_tokenizer = task.target_tokenizer = probe.tokenizer
    probe.check_task(task)
    vocab = probe.config.target_vocab
    return {"source_vocab": vocab, "target_vocab": vocab, **model_options}


@dataclass
class _Context:
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


def _train_phase(context: _Context, model, strategy_name: str, steps: int, checkpoint_dir: Path, tag: str,
                 step_offset: int) -> float:
    """Train `model` in place for `steps` steps of one strategy; returns the training seconds."""
    options = strategy_options(context.config, strategy_name)
    strategy = make_strategy(strategy_name, options, seed=context.config.seed)
    if isinstance(strategy, TaskBound):  # the task's decoder, its metric as a reward, its oracle
        strategy.bind(context.task)
    identity = {"model_config": dataclasses.asdict(context.model_config), "strategy": strategy_name,
                "task": context.task.name}
    progress = context.progress
    preset = PRESETS[context.config.preset].get("phase_train", {}).get(strategy_name, {})
    overrides = {**preset, **(context.config.phase_train.get(strategy_name) or {}), "steps": steps}
    train_config = validate_config(TrainConfig, {**dataclasses.asdict(context.train_config), **overrides},
                                   prefix=f"phase_train.{strategy_name}")
    trainer = Trainer(model, context.task, strategy, train_config,
                      checkpoint_dir, context.metrics_path, tag=tag, identity=identity, limits=context.limits,
                      evaluate=context.validation, step_offset=step_offset,
                      progress=(lambda record: progress(tag, record)) if progress else None)
    if context.resume:
        trainer.resume()
    return trainer.fit()["train_seconds"]


def _warm_start(context: _Context, finished: dict, source: str) -> tuple[dict, float, int]:
    """The weights of `source` trained alone in this run (trained now if no entry has trained them yet), with
    their seconds and steps: both count towards the entry fine-tuned from them."""
    if source not in finished:
        torch.manual_seed(context.config.seed)
        model = build_model(context.model_config)
        steps = context.train_config.steps
        seconds = _train_phase(context, model, source, steps, context.out / "checkpoints" / safe_name(source),
                               source, 0)
        finished[source] = (copy.deepcopy(model.state_dict()), seconds, steps)
    return finished[source]
