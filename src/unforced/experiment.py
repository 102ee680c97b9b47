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

Sharing first phases between entries (no work done twice): experiment_phases.py.
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
from pathlib import Path

import torch
import yaml

from unforced import __version__, distributed, fsdp
from unforced.config import validate_config
from unforced.diagnostics import evaluate
from unforced.diagnostics.suite import clean_json, diagnose
from unforced.errors import UnforcedError
from unforced.experiment_phases import (  # noqa: F401  (safe_name re-exported)
    PhaseContext,
    safe_name,
    shared_ends,
    train_first_phase,
    train_phase,
    warm_start_weights,
)
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
from unforced.runfiles import atomic_write_text, claim_run_directory
from unforced.strategies import STRATEGIES, make_strategy, strategy_class, warm_start_source
from unforced.switch import Patience, SwitchConfig
from unforced.tasks import get_task
from unforced.train import TrainConfig


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
    context = PhaseContext(task, config, train_config, model_config, out, metrics_path, limits, progress, validation,
                       resume, shared_ends=shared_ends(config, train_config), switch=switch)
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
            warm, seconds, steps_done = warm_start_weights(context, finished, source)
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
                seconds += train_phase(context, model, phase.strategy, steps, checkpoint_dir, tag, steps_done,
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
                phase_seconds, reused = train_first_phase(context, model, phase.strategy, steps, checkpoint_dir,
                                                           tag)
                seconds += phase_seconds
            else:
                seconds += train_phase(context, model, phase.strategy, steps, checkpoint_dir, tag, steps_done)
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
