"""The main job: train every requested strategy on one task with the same model, seed and budget, measure the
gap of each, and write the run directory.

    <out>/config.yaml                      everything that produced the numbers
    <out>/metrics.jsonl                    training and validation lines, each tagged with its strategy
    <out>/checkpoints/<strategy>/last.pt   one checkpoint per strategy (per phase of a chain)
    <out>/results.json                     the results contract (DESIGN.md)
    <out>/report.html, <out>/figures/*.png

A strategy entry is a name (`teacher_forcing`) or a chain of phases (`teacher_forcing:2000>reinforce:500`),
each phase starting from the previous one's weights. A strategy that needs a warm start, named alone, starts
from the teacher-forced model of the same run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
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
from unforced.strategies import NEEDS_WARM_START, STRATEGIES, make_strategy
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer, atomic_write_text

DEFAULT_STRATEGIES = ["teacher_forcing", "scheduled_sampling", "reinforce", "recommended"]

# Presets: sizes that keep `--quick` under 3 minutes on 2 CPU cores (measured: a teacher-forcing step ~140 ms,
# scheduled sampling ~160 ms, an SCST step ~1.1 s at the quick size), a default under 20 minutes, and a large
# one for better numbers. `fine_tune_steps` is the budget of a warm-started strategy named alone (reinforce);
# `recommended` is the usual practice as a chain: teacher forcing, then a decaying forcing ratio, then a reward
# fine-tune. The inverse-sigmoid k of scheduled sampling is set so the ratio falls to ~0.3 by the end of the
# budget (k ln(2.33 k) ~ steps). The reward fine-tune samples at temperature 0.5 with a learning rate of 3e-4:
# measured on the default task from the teacher-forced checkpoint (valid BLEU 6.7 teacher-forced, 5.5 free), at
# temperature 1 and 2e-3 the samples rarely beat the greedy baseline (22% of them) and free-running BLEU fell; at
# 0.5 and 3e-4 it rose to 5.9. `phase_train` overrides train settings for the phases of one strategy.
PRESETS: dict[str, dict] = {
    "quick": {
        "task": {"bible-en-es": {"max_words": 16, "vocab_size": 1500},
                 "toy-translation": {"size": 3000}},
        "model": {"kind": "gru", "embedding": 96, "hidden": 192, "dropout": 0.1},
        "train": {"steps": 200, "batch_size": 64, "eval_every": 100, "checkpoint_every": 100, "eval_limit": 100},
        "strategy_options": {"scheduled_sampling": {"schedule_params": {"k": 40.0}},
                             "reinforce": {"temperature": 0.5}},
        "phase_train": {"reinforce": {"learning_rate": 3e-4, "warmup": 0}},
        "fine_tune_steps": 20,
        "recommended": "teacher_forcing:100>scheduled_sampling:60>reinforce:12",
        "test_limit": 300,
    },
    "default": {
        "task": {"bible-en-es": {"max_words": 20, "vocab_size": 2000}},
        "model": {"kind": "gru", "embedding": 128, "hidden": 256, "dropout": 0.2},
        "train": {"steps": 1200, "batch_size": 64, "eval_every": 200, "checkpoint_every": 200},
        "strategy_options": {"scheduled_sampling": {"schedule_params": {"k": 180.0}},
                             "reinforce": {"temperature": 0.5}},
        "phase_train": {"reinforce": {"learning_rate": 3e-4, "warmup": 0}},
        "fine_tune_steps": 80,
        "recommended": "teacher_forcing:600>scheduled_sampling:400>reinforce:50",
        "test_limit": 1000,
    },
    "large": {
        "task": {"bible-en-es": {"max_words": 30, "vocab_size": 4000}},
        "model": {"kind": "gru", "embedding": 256, "hidden": 512, "dropout": 0.2},
        "train": {"steps": 12000, "batch_size": 64, "eval_every": 1000, "checkpoint_every": 500},
        "strategy_options": {"scheduled_sampling": {"schedule_params": {"k": 1100.0}},
                             "reinforce": {"temperature": 0.5}},
        "phase_train": {"reinforce": {"learning_rate": 3e-4, "warmup": 0}},
        "fine_tune_steps": 1000,
        "recommended": "teacher_forcing:6000>scheduled_sampling:4000>reinforce:1000",
        "test_limit": 2000,
    },
}


@dataclass
class RunConfig:
    """Everything a run needs; built from a preset, a YAML config file and command-line flags, in that order."""

    task: str = "bible-en-es"
    task_options: dict = field(default_factory=dict)
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    strategy_options: dict = field(default_factory=dict)
    phase_train: dict = field(default_factory=dict)  # strategy -> train overrides for its phases
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    preset: str = "default"
    seed: int = 0
    test_limit: int | None = None
    diagnostics_limit: int = 100  # test pairs for the diagnostics written beside the results; 0 skips them

    def __post_init__(self):
        if not 0 <= self.seed < 2**32:
            raise UnforcedError(f"config.seed must be in [0, 2**32), got {self.seed}")
        if self.test_limit is not None and self.test_limit < 1:
            raise UnforcedError(f"config.test_limit must be at least 1 (or left out), got {self.test_limit}")
        if self.diagnostics_limit < 0:
            raise UnforcedError(f"config.diagnostics_limit must not be negative, got {self.diagnostics_limit}")
        if not self.strategies:
            raise UnforcedError("config.strategies names no strategy")
        for name, options in self.phase_train.items():
            if name not in STRATEGIES:
                raise UnforcedError(f"config.phase_train.{name}: no such strategy; known: {', '.join(STRATEGIES)}")
            if options is not None and not isinstance(options, dict):
                raise UnforcedError(f"config.phase_train.{name} must be a mapping of train settings, got "
                                    f"{type(options).__name__}")
        for name, options in self.strategy_options.items():
            if name not in STRATEGIES:
                raise UnforcedError(f"config.strategy_options.{name}: no such strategy; known: "
                                    f"{', '.join(STRATEGIES)}")
            if options is not None and not isinstance(options, dict):
                raise UnforcedError(f"config.strategy_options.{name} must be a mapping of options, got "
                                    f"{type(options).__name__}")


@dataclass(frozen=True)
class Phase:
    strategy: str
    steps: int | None


def parse_entry(entry: str, preset: str = "default") -> list[Phase]:
    """`name`, `recommended`, or `name:steps>name:steps>...` -> phases (a step count is required in a chain)."""
    if entry == "recommended":
        if preset not in PRESETS:
            raise UnforcedError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        entry = PRESETS[preset]["recommended"]
    parts = [p.strip() for p in entry.split(">")]
    phases = []
    for part in parts:
        match = re.fullmatch(r"([a-z_]+)(?::(\d+))?", part)
        if not match:
            raise UnforcedError(f"cannot read strategy entry {entry!r}: expected name or name:steps>name:steps")
        name, steps = match.group(1), match.group(2)
        if name not in STRATEGIES:
            raise UnforcedError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}, recommended")
        if steps is not None and int(steps) < 1:
            raise UnforcedError(f"strategy entry {entry!r}: steps must be at least 1")
        phases.append(Phase(name, int(steps) if steps else None))
    if len(phases) > 1 and any(p.steps is None for p in phases):
        raise UnforcedError(f"strategy chain {entry!r}: give every phase a step count (name:steps)")
    return phases


def resolve(config: RunConfig) -> tuple[dict, dict, dict]:
    """Task options, model options and train options after the preset, then the user's own values."""
    if config.preset not in PRESETS:
        raise UnforcedError(f"unknown preset {config.preset!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[config.preset]
    task_options = {**preset["task"].get(config.task, {}), **config.task_options}
    model = {**preset["model"], **config.model}
    train = {**preset["train"], "seed": config.seed, **config.train}
    return task_options, model, train


def strategy_options(config: RunConfig, name: str) -> dict:
    """A strategy's options: the preset's, then the user's."""
    preset = PRESETS.get(config.preset, {}).get("strategy_options", {}).get(name, {})
    return {**preset, **(config.strategy_options.get(name) or {})}


def safe_name(entry: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", entry).strip("-")


def signature() -> dict:
    """What produced the numbers, so two results can be compared (cf. sacrebleu's signatures)."""
    import numpy

    return {"unforced": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": platform.python_version(), "threads": torch.get_num_threads()}


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
    model_options.setdefault("source_vocab", task.source_tokenizer.vocab_size)
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
                "test_limit": config.test_limit, "signature": signature()}
    main = distributed.is_main()
    if main:
        _claim(out, resolved, resume, overwrite)
        atomic_write_text(yaml.safe_dump(resolved, sort_keys=False), out / "config.yaml")
        atomic_write_text(json.dumps({"source": task.source_tokenizer.to_json(),
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
        warm_start = len(phases) == 1 and phases[0].strategy in NEEDS_WARM_START
        if warm_start:
            warm, seconds, steps_done = _teacher_forced(context, finished)
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


def _same_settings(before, now, key: str) -> bool:
    """Settings equal, where a field that a newer version added counts as equal when it holds its default."""
    if before == now:
        return True
    defaults = {"model": ModelConfig, "train": TrainConfig}.get(key)
    if defaults is None or not isinstance(before, dict) or not isinstance(now, dict):
        return False
    fields = {f.name: f.default for f in dataclasses.fields(defaults)}
    return all(before.get(name, fields.get(name)) == value for name, value in now.items()) and \
        set(before) <= set(now)


def _claim(out: Path, resolved: dict, resume: bool, overwrite: bool) -> None:
    """Refuse to write over an earlier run unless told to resume it (with the same settings) or replace it."""
    if out.exists() and not out.is_dir():
        raise UnforcedError(f"{out}: exists and is not a directory")
    holds_run = (out / "results.json").exists() or (out / "checkpoints").exists() or (out / "config.yaml").exists()
    if holds_run and resume and (out / "config.yaml").exists():
        before = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
        changed = [key for key in resolved if key != "signature"
                   and not _same_settings(before.get(key), resolved[key], key)]
        if changed:
            raise UnforcedError(f"{out}: cannot resume with other settings ({', '.join(changed)} differ from the "
                                f"run's config.yaml)")
    elif holds_run and not resume:
        if not overwrite:
            raise UnforcedError(f"{out} already holds a run: pass --resume to continue it, --overwrite to replace "
                                f"it, or choose another --out")
        import shutil

        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for name in ("results.json", "metrics.jsonl", "report.html"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def load_run_model(run_dir: Path, entry: str | None = None):
    """(model, task, limits, entry name) of a finished run, rebuilt from its files and checkpoint."""
    from unforced.report import read_run
    from unforced.tasks.tokenizers import tokenizer_from_json
    from unforced.train import load_checkpoint

    run_dir = Path(run_dir)
    config, results, _ = read_run(run_dir)
    names = list(results.get("strategies", {}))
    if not names:
        raise UnforcedError(f"{run_dir}/results.json: no strategies in it")
    entry = entry or names[0]
    if entry not in results["strategies"]:
        raise UnforcedError(f"{run_dir}: no strategy {entry!r}; found: {', '.join(names)}")
    try:
        task = get_task(config["task"], **{"seed": config.get("seed", 0), **config.get("task_options", {})})
        tokenizers = json.loads((run_dir / "tokenizers.json").read_text(encoding="utf-8"))
        model_config = ModelConfig(**config["model"])
    except (KeyError, OSError, json.JSONDecodeError, TypeError) as error:
        raise UnforcedError(f"{run_dir}: run files incomplete or damaged ({error})") from None
    task.source_tokenizer = tokenizer_from_json(tokenizers["source"])
    task.target_tokenizer = tokenizer_from_json(tokenizers["target"])
    checkpoint_path = run_dir / results["strategies"][entry].get("checkpoint", "checkpoints/last.pt")
    checkpoint = load_checkpoint(checkpoint_path, {"model_config": dataclasses.asdict(model_config)})
    model = build_model(model_config)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    limits = {"max_source_len": model_config.max_source_len, "max_target_len": model_config.max_target_len}
    return model, task, limits, entry


def diagnose_run(run_dir: Path, split: str = "test", limit: int | None = 200, only: str | None = None) -> dict:
    """Every diagnostic of each strategy of a finished run; also written to RUN_DIR/diagnostics.json."""
    from unforced.report import read_run

    run_dir = Path(run_dir)
    _, results, _ = read_run(run_dir)
    names = [only] if only else list(results["strategies"])
    output = {"task": results["task"], "split": split, "limit": limit, "strategies": {}}
    for name in names:
        model, task, limits, _ = load_run_model(run_dir, name)
        task.split(split)
        figures = evaluate(model, task, split, limit=limit, limits=limits)
        figures["train_seconds"] = results["strategies"][name].get("train_seconds", 0.0)
        figures["diagnostics"] = diagnose(model, task, split, limit=limit, limits=limits,
                                          seed=results.get("seed", 0), per_position=figures["per_position"])
        output["strategies"][name] = clean_json(figures)
    atomic_write_text(json.dumps(output, indent=1), run_dir / "diagnostics.json")
    return output


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
    if strategy_name == "reinforce":
        options = {"reward": None, **options}  # None: reward the task's own metric (bound below)
    strategy = make_strategy(strategy_name, options, seed=context.config.seed)
    if hasattr(strategy, "bind"):
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


def _teacher_forced(context: _Context, finished: dict) -> tuple[dict, float, int]:
    """The teacher-forced weights of this run (trained now if no entry has trained them yet), with their
    seconds and steps: both count towards the entry fine-tuned from them."""
    if "teacher_forcing" not in finished:
        torch.manual_seed(context.config.seed)
        model = build_model(context.model_config)
        steps = context.train_config.steps
        seconds = _train_phase(context, model, "teacher_forcing", steps,
                               context.out / "checkpoints" / "teacher_forcing", "teacher_forcing", 0)
        finished["teacher_forcing"] = (copy.deepcopy(model.state_dict()), seconds, steps)
    return finished["teacher_forcing"]


SPREAD_KEYS = ("tf_nll", "fr_nll", "gap_nll", "gap_pct", "tf_token_acc", "fr_token_acc", "train_seconds")


def run_seeds(config: RunConfig, out: Path, seeds: int, progress: Callable[[str, dict], None] | None = None,
              resume: bool = False, overwrite: bool = False) -> dict:
    """Repeat the whole comparison over `seeds` seeds (config.seed, config.seed + 1, ...), each in
    <out>/seed-<s>/, and write <out>/results.json with the mean over seeds of every figure, plus its spread."""
    if seeds < 1:
        raise UnforcedError(f"--seeds must be at least 1, got {seeds}")
    out = Path(out)
    with run_lock(out):
        if resume:
            out.mkdir(parents=True, exist_ok=True)
        else:
            _claim(out, {}, resume=False, overwrite=overwrite)
        runs = []
        for offset in range(seeds):
            seed = config.seed + offset
            seeded = dataclasses.replace(config, seed=seed)
            report = (lambda tag, record, seed=seed: progress(f"seed {seed} {tag}", record)) if progress else None
            runs.append(run_experiment(seeded, out / f"seed-{seed}", report, resume, overwrite))
        results = aggregate_seeds(runs)
        first = out / f"seed-{config.seed}"
        for name in ("config.yaml", "tokenizers.json", "metrics.jsonl", "diagnostics.json"):
            if (first / name).exists():
                atomic_write_text((first / name).read_text(encoding="utf-8"), out / name)
        for entry in results["strategies"].values():
            entry["checkpoint"] = f"seed-{config.seed}/{entry['checkpoint']}"
        atomic_write_text(json.dumps(results, indent=1), out / "results.json")
    return results


def aggregate_seeds(runs: list[dict]) -> dict:
    """Mean over seeds of each figure (and each per-position curve), with {"mean", "std", "values"} spreads."""
    import numpy as np

    first = runs[0]
    results = {**{k: v for k, v in first.items() if k != "strategies"}, "seeds": [r["seed"] for r in runs],
               "strategies": {}}
    for entry, figures in first["strategies"].items():
        all_figures = [r["strategies"][entry] for r in runs]
        merged = copy.deepcopy(figures)
        spread = {}
        for key in SPREAD_KEYS:
            values = [float(f[key]) for f in all_figures]
            merged[key] = float(np.mean(values))
            spread[key] = {"mean": merged[key], "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                           "values": values}
        for side in ("tf", "fr"):
            values = [float(f["metric"][side]) for f in all_figures]
            merged["metric"][side] = float(np.mean(values))
            spread[f"metric_{side}"] = {"mean": merged["metric"][side],
                                        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                        "values": values}
        for curve in figures["per_position"]:
            width = min(len(f["per_position"][curve]) for f in all_figures)
            stacked = np.array([f["per_position"][curve][:width] for f in all_figures], dtype=float)
            merged["per_position"][curve] = stacked.mean(0).tolist()
        merged["spread"] = spread
        results["strategies"][entry] = merged
    return results
