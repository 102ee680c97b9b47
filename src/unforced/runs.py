"""Finished runs: a model rebuilt from a run directory, every diagnostic measured again, and a comparison
repeated over seeds with its mean and spread."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from unforced import distributed
from unforced.diagnostics import evaluate
from unforced.diagnostics.suite import clean_json, diagnose
from unforced.errors import UnforcedError
from unforced.experiment import run_experiment
from unforced.lock import run_lock
from unforced.models import ModelConfig, build_model
from unforced.run_config import RunConfig
from unforced.runfiles import atomic_write_text, claim_run_directory, load_checkpoint, read_run
from unforced.tasks import get_task


def load_run_model(run_dir: Path, entry: str | None = None, device: str = "auto"):
    """(model, task, limits, entry name) of a finished run, rebuilt from its files and checkpoint; the checkpoint
    is read onto the CPU and the model moved to `device` (auto: CUDA where available)."""
    from unforced.tasks.tokenizers import tokenizer_from_json

    target = distributed.choose_device(device)
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
    model.to(target).eval()
    limits = {"max_source_len": model_config.max_source_len, "max_target_len": model_config.max_target_len}
    return model, task, limits, entry


def diagnose_run(run_dir: Path, split: str = "test", limit: int | None = 200, only: str | None = None,
                 device: str = "auto") -> dict:
    """Every diagnostic of each strategy of a finished run, on `device`; also written to RUN_DIR/diagnostics.json."""
    run_dir = Path(run_dir)
    _, results, _ = read_run(run_dir)
    names = [only] if only else list(results["strategies"])
    output = {"task": results["task"], "split": split, "limit": limit, "strategies": {}}
    for name in names:
        model, task, limits, _ = load_run_model(run_dir, name, device)
        task.split(split)
        figures = evaluate(model, task, split, limit=limit, limits=limits)
        figures["train_seconds"] = results["strategies"][name].get("train_seconds", 0.0)
        figures["diagnostics"] = diagnose(model, task, split, limit=limit, limits=limits,
                                          seed=results.get("seed", 0), per_position=figures["per_position"])
        output["strategies"][name] = clean_json(figures)
    atomic_write_text(json.dumps(output, indent=1), run_dir / "diagnostics.json")
    return output


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
            claim_run_directory(out, {}, resume=False, overwrite=overwrite)
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
        for side in ("fr", "fr_beam"):
            if any(f["metric"].get(side) is None for f in all_figures):
                continue
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
