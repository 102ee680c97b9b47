"""Every diagnostic of one trained model, gathered into one JSON-ready dict (what `unforced gap` prints and the
report draws): the gap, the ratio sweep, hidden-state divergence with its drift fit, the recovery probe, the
compounding-error fit, the prefix-distribution divergence, and the prefix swap (the task's metric after k gold
tokens against after the model's own k; docs/measures.md)."""

from __future__ import annotations

import math

import numpy as np

from unforced.diagnostics.attention import attention_maps
from unforced.diagnostics.divergence import hidden_divergence
from unforced.diagnostics.measures import prefix_swap
from unforced.diagnostics.probes import prefix_divergence
from unforced.diagnostics.recovery import recovery_probe
from unforced.diagnostics.sweep import ratio_sweep
from unforced.errors import UnforcedError
from unforced.tasks.base import Task
from unforced.theory import fit_compounding

SWEEP_RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)


def clean_json(value):
    """NaN and inf become None, numpy becomes plain Python: results stay valid JSON."""
    if isinstance(value, dict):
        return {key: clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def compounding(per_position: dict) -> dict | None:
    """The absorbing-error chain (theory.fit_compounding) fitted to measured per-position NLL curves."""
    try:
        fit = fit_compounding(per_position["tf_nll"], per_position["fr_nll"])
    except UnforcedError:
        return None
    return {"c": fit.c, "d": fit.d, "e": fit.e, "predicted_excess": fit.predicted_excess,
            "measured_excess": fit.measured_excess, "predicted_curve": fit.predicted_curve}


def diagnose(model, task: Task, split: str = "test", limit: int | None = 200, limits: dict | None = None,
             seed: int = 0, ratios=SWEEP_RATIOS, per_position: dict | None = None) -> dict:
    """All diagnostics of `model` on at most `limit` pairs of `split`."""
    limits = limits or {}
    pairs = task.split(split)[:limit] if limit else task.split(split)
    longest = max(len(task.target_tokenizer.encode(t)) + 1 for _, t in pairs)
    recoveries = []
    for position in sorted({1, max(1, longest // 4), max(1, longest // 2)}):
        if position + 1 < longest:
            probe = recovery_probe(model, task, split, position=position, k=1, limit=limit, limits=limits,
                                   seed=seed)
            recoveries.append(probe)
    output = {
        "sweep": ratio_sweep(model, task, split, ratios=ratios, limit=limit, limits=limits, seed=seed),
        "divergence": hidden_divergence(model, task, split, limit=limit, limits=limits),
        "recovery": recoveries,
        "prefix_divergence": prefix_divergence(model, task, split, max_len=min(longest, 20),
                                               n_samples=min(len(pairs), 128), seed=seed),
        "prefix_swap": prefix_swap(model, task, split, limit=limit, limits=limits),
    }
    if per_position is not None:
        output["compounding"] = compounding(per_position)
    maps = attention_maps(model, task, split, 0, limits)
    if maps is not None:  # attention models only: the same source decoded both ways
        output["attention"] = maps
    return clean_json(output)
