"""The main job: train every requested strategy on one task with the same model, seed and budget, measure the
gap of each, and write the run directory.

    <out>/config.yaml                      everything that produced the numbers
    <out>/metrics.jsonl                    training and validation lines, each tagged with its strategy
    <out>/checkpoints/<strategy>/last.pt   one checkpoint per strategy (per phase of a chain)
    <out>/checkpoints/<strategy>/step-N.pt a snapshot at step N where another entry's first phase ends there
    <out>/results.json                     the results contract (DESIGN.md)
    <out>/report.html, <out>/figures/*.png

A strategy entry is a registered name or a chain of phases (`a:2000>b:500`), each phase starting from the
previous one's weights (with `switch` in the config, each phase but the last ends where validation stalls and
hands on its best weights: switch.py). A strategy that declares a warm start (`warm_start = True`), named alone, starts from the
model of the strategy it names (strategies.WARM_START_FROM by default) trained in the same run; its results entry
records that name as `warm_start_from`. Nothing here knows a strategy by name: capabilities are tested with
`isinstance` against strategies/base.py's Protocols.

No work is done twice: entries whose first phase is the same strategy trained from scratch (same options, seed,
batches and learning rate: the Trainer's rate depends on the step and the warm-up only, never on the total steps)
share it. The first entry to train it stops at every step where another such phase ends (its checkpoint there is
kept as `step-N.pt`, and a stop then a resume replays exactly, train.py); a later entry starts from the longest
such checkpoint that does not pass its own step count, with the donor's metrics lines copied and marked
`reused_from`. A strategy that observes validation is shared only at evaluation steps (an extra evaluation at the
stop would change what it saw).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import platform
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from unforced import __version__, distributed, fsdp
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
    entry_phases,
    parse_entry,
    resolve,
    strategy_options,
)
from unforced.runfiles import (
    append_metrics,
    atomic_save,
    atomic_write_text,
    claim_run_directory,
    keep_metrics,
    read_checkpoint_file,
    read_metrics,
)
from unforced.strategies import STRATEGIES, make_strategy, strategy_class, warm_start_source
from unforced.strategies.base import Observer, TaskBound
from unforced.switch import Patience, SwitchConfig
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
            "device": device.type if device.type == "cpu" else str(device), "precision": train_config.precision,
            "commit": source_commit()}


TEST_BEAM_SIZE = 4  # the final test evaluation decodes greedy and with a beam of this width; validation greedy only


def source_commit() -> str | None:
    """`git rev-parse HEAD` of the checkout the package runs from, if it is one; None otherwise (never fails)."""
    folder = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _tokenizer_signature(tokenizer) -> dict | None:
    return None if tokenizer is None else {"kind": getattr(tokenizer, "kind", type(tokenizer).__name__),
                                           "vocab_size": tokenizer.vocab_size}


def results_signature(base: dict, task, metric: dict, seeds: list[int]) -> dict:
    """The run's signature (versions, device, commit) with what produced the test numbers: the metric's own
    signature, the reference count, the decoding rules and budget, the tokenizers and the seed(s)."""
    decode = metric.get("decode", "")
    if metric.get("beam_size"):
        decode = f"{decode}; beam={metric['beam_size']}"
    return {**base, "metric": metric.get("signature"), "nrefs": metric.get("nrefs"), "decode": decode,
            "tokenizer": {"source": _tokenizer_signature(task.source_tokenizer),
                          "target": _tokenizer_signature(task.target_tokenizer)},
            "seeds": seeds}


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
        entry_phases(config, entry)
    if len(set(config.strategies)) != len(config.strategies):
        raise UnforcedError("a strategy entry is named twice")
    task_options, model_options, train_options = resolve(config)
    train_config = validate_config(TrainConfig, train_options, prefix="train")
    if fsdp.active(train_config.fsdp):  # refuse before any phase trains, not when the refused one begins
        for entry in config.strategies:
            for phase in entry_phases(config, entry):
                fsdp.check_strategy(make_strategy(phase.strategy, strategy_options(config, phase.strategy),
                                                  seed=config.seed))
    task = get_task(config.task, **{"seed": config.seed, **task_options})
    for entry in config.strategies:  # a strategy that learns from unlabelled sources needs some, before any training
        for phase in entry_phases(config, entry):
            if getattr(strategy_class(phase.strategy), "needs_unlabelled", False) and not task.unlabelled:
                raise UnforcedError(f"strategy {phase.strategy!r} learns from unlabelled sources and task "
                                    f"{task.name!r} has none: give the task option labelled (the labelled share "
                                    "of its train split, below 1), e.g. task_options: {labelled: 0.1}")
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
                "phases": {entry: [f"{p.strategy}:{p.steps or 'default'}" for p in entry_phases(config, entry)]
                           for entry in config.strategies},
                "strategy_options": {name: strategy_options(config, name) for name in STRATEGIES},
                "phase_train": {name: {**PRESETS[config.preset].get("phase_train", {}).get(name, {}),
                                       **(config.phase_train.get(name) or {})} for name in STRATEGIES},
                "model": dataclasses.asdict(model_config),
                "train": dataclasses.asdict(train_config), "preset": config.preset, "seed": config.seed,
                "test_limit": config.test_limit, "switch": config.switch, "signature": signature(train_config)}
    main = distributed.is_main()
    if main:
        claim_run_directory(out, resolved, resume, overwrite, sections={"model": ModelConfig, "train": TrainConfig})
        # A resumed run keeps the files that describe how it began (a refused resume changes nothing on disk);
        # results.json carries the signature of the code that finished it.
        if not (resume and (out / "config.yaml").exists()):
            atomic_write_text(yaml.safe_dump(resolved, sort_keys=False), out / "config.yaml")
        if not (resume and (out / "tokenizers.json").exists()):
            atomic_write_text(json.dumps({"source": task.source_tokenizer.to_json() if task.source_tokenizer
                                          else None, "target": task.target_tokenizer.to_json()}),
                              out / "tokenizers.json")
    distributed.barrier()  # the others read checkpoints only after the main process has claimed the directory
    metrics_path = out / "metrics.jsonl"
    test_limit = config.test_limit

    def validation(model):
        figures = evaluate(model, task, "valid", limit=train_config.eval_limit, limits=limits)
        return {k: figures[k] for k in ("tf_nll", "fr_nll", "gap_pct", "tf_token_acc", "fr_token_acc", "metric")}

    switch = validate_config(SwitchConfig, dict(config.switch), prefix="switch") if config.switch else None
    if switch is not None:
        switch.check_task(task)
    context = _Context(task, config, train_config, model_config, out, metrics_path, limits, progress, validation,
                       resume, shared_ends=_shared_ends(config, train_config), switch=switch)
    finished: dict[str, tuple[dict, float, int]] = {}  # weights, seconds and steps of each entry (warm starts)
    diagnostics = {"task": task.name, "split": "test", "limit": config.diagnostics_limit, "strategies": {}}
    results = {"task": task.name, "seed": config.seed, "task_settings": task.settings,
               "model": dataclasses.asdict(model_config), "signature": resolved["signature"], "strategies": {}}
    for entry in config.strategies:
        phases = entry_phases(config, entry)
        torch.manual_seed(config.seed)
        model = build_model(model_config)
        seconds, steps_done = 0.0, 0
        source = warm_start_source(phases[0].strategy) if len(phases) == 1 else None
        warm_start = source is not None
        if warm_start:
            warm, seconds, steps_done = _warm_start(context, finished, source)
            model.load_state_dict(warm)
        alone = len(config.strategies) == 1 and len(phases) == 1 and not warm_start
        reused, switches = None, []
        for index, phase in enumerate(phases):
            fine_tune = warm_start or index > 0
            steps = phase.steps or (PRESETS[config.preset]["fine_tune_steps"] if fine_tune else train_config.steps)
            tag = entry if len(phases) == 1 else f"{entry}#{index + 1}:{phase.strategy}"
            # A run of one plain strategy keeps the contract's <out>/checkpoints/last.pt; several get a folder each.
            checkpoint_dir = out / "checkpoints" if alone else out / "checkpoints" / safe_name(tag)
            if context.switch is not None and index < len(phases) - 1:  # ends on a validation stall: not shared
                patience = Patience(context.switch, checkpoint_dir / "best.pt")
                seconds += _train_phase(context, model, phase.strategy, steps, checkpoint_dir, tag, steps_done,
                                        patience=patience)
                best = patience.best_weights()
                if best is not None:  # the next phase starts from the best evaluation's weights
                    model.load_state_dict(best)
                switches.append({"phase": tag, "global_step": steps_done + (patience.stopped_at or steps),
                                 "best_global_step": steps_done + patience.best_step if patience.best_step else None,
                                 **patience.summary()})
                steps_done += patience.stopped_at or steps
                continue
            if index == 0 and not warm_start:  # from scratch: shared with other entries that start the same way
                phase_seconds, reused = _train_first_phase(context, model, phase.strategy, steps, checkpoint_dir,
                                                           tag)
                seconds += phase_seconds
            else:
                seconds += _train_phase(context, model, phase.strategy, steps, checkpoint_dir, tag, steps_done)
            steps_done += steps
        finished[entry] = (copy.deepcopy(model.state_dict()), seconds, steps_done)
        if not main:
            continue
        if progress:
            progress(entry, {"phase": "evaluate"})
        figures = evaluate(model, task, "test", limit=test_limit, limits=limits, beam_size=TEST_BEAM_SIZE)
        figures["train_seconds"] = seconds
        figures["warm_start_from"] = source
        figures["reused_prefix"] = reused
        if context.switch is not None and len(phases) > 1:
            figures["switches"] = switches
        results["signature"] = results_signature(resolved["signature"], task, figures["metric"], [config.seed])
        figures["checkpoint"] = str((checkpoint_dir / "last.pt").relative_to(out))
        if main:
            _sample_images(task, figures["examples"], out, entry)
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


def _sample_images(task, examples: list[dict], out: Path, entry: str, count: int = 3) -> None:
    """For an image task, the first test images copied into <out>/figures/samples/ as PNG, each example naming
    its copy (`image`, relative to <out>): the report shows them beside their captions and reads the run
    directory only."""
    if getattr(task.source_codec, "kind", "text") != "image":
        return
    from PIL import Image, UnidentifiedImageError

    folder = out / "figures" / "samples"
    for index, example in enumerate(examples[:count]):
        source = example.get("source")
        if not source or not Path(source).is_file():
            continue
        target = folder / f"{safe_name(entry)}-{index}.png"
        try:
            with Image.open(source) as image:
                folder.mkdir(parents=True, exist_ok=True)
                image.convert("RGB").save(target.with_suffix(".tmp.png"))
        except (OSError, UnidentifiedImageError):
            continue  # the codec read it for the metric; a sample that cannot be copied is left out
        target.with_suffix(".tmp.png").replace(target)
        example["image"] = str(target.relative_to(out))


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
    shared_ends: dict[str, set[int]] = dataclasses.field(default_factory=dict)  # strategy -> first-phase ends
    switch: SwitchConfig | None = None  # a chain's phases (all but the last) end on a validation stall
    prefixes: dict[str, dict[int, tuple[Path, str]]] = dataclasses.field(default_factory=dict)
    # strategy -> {step: (checkpoint, tag of the entry that trained it)}, the first phases trained so far


def _shared_ends(config: RunConfig, train_config: TrainConfig) -> dict[str, set[int]]:
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


def _phase_train_config(context: _Context, strategy_name: str, steps: int) -> TrainConfig:
    preset = PRESETS[context.config.preset].get("phase_train", {}).get(strategy_name, {})
    overrides = {**preset, **(context.config.phase_train.get(strategy_name) or {}), "steps": steps}
    return validate_config(TrainConfig, {**dataclasses.asdict(context.train_config), **overrides},
                           prefix=f"phase_train.{strategy_name}")


def _train_phase(context: _Context, model, strategy_name: str, steps: int, checkpoint_dir: Path, tag: str,
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


def _train_first_phase(context: _Context, model, strategy_name: str, steps: int, checkpoint_dir: Path,
                       tag: str) -> tuple[float, dict | None]:
    """Train the first phase of an entry from scratch, starting from the longest identical phase another entry
    trained already (see the module docstring) and stopping on the way where others end; returns the seconds
    (those of a reused stretch included) and what was reused ({"from": tag, "steps": N}) or None."""
    ends = context.shared_ends.get(strategy_name, set())
    if not ends:
        return _train_phase(context, model, strategy_name, steps, checkpoint_dir, tag, 0), None
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
        seconds = _train_phase(context, model, strategy_name, stop, checkpoint_dir, tag, 0,
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


def _copy_metrics(context: _Context, source_tag: str, tag: str, step: int) -> None:
    """The donor's metrics lines up to `step`, written again under `tag` and marked `reused_from`."""
    if not distributed.is_main():
        return
    records = read_metrics(context.metrics_path)
    keep_metrics(context.metrics_path, lambda record: record.get("strategy") != tag)
    for record in records:
        if record.get("strategy") == source_tag and record.get("step", 0) <= step:
            append_metrics(context.metrics_path, {**record, "strategy": tag,
                                                  "reused_from": record.get("reused_from", source_tag)})


def _validate_reused(context: _Context, model, tag: str, step: int) -> None:
    """A phase taken whole from another entry gets the validation line its own end would have written."""
    if not (distributed.is_main() and context.train_config.eval_every):
        return
    if any(r.get("strategy") == tag and r.get("step") == step and "eval" in r
           for r in read_metrics(context.metrics_path)):
        return
    figures = context.validation(model)
    model.train()
    append_metrics(context.metrics_path, {"strategy": tag, "step": step, "eval": figures, "global_step": step})


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
