"""benchmarks/faults.py: its --quick smoke variant runs and prints the JSON it promises, and its comparison of a
resumed run with the reference finds what differs."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_faults():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("faults")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_faults_quick(bench_quick):
    results = bench_quick("faults")
    assert results["runs_killed"] >= 1 and results["resumed_identical"] == results["trials"]
    assert results["nothing_lost"]
    assert results["corrupt_checkpoints_refused"] == results["corrupt_checkpoints_total"]
    assert results["bad_files_refused"] == results["bad_files_total"]
    landings = ("killed_mid_training", "killed_before_first_checkpoint", "killed_after_training",
                "finished_before_kill")
    assert sum(results[key] for key in landings) == results["trials"]
    assert results["killed_mid_training"] >= 1 and results["mid_training_identical"] == results["killed_mid_training"]
    assert all(0 < step < 300 for step in results["mid_training_steps_at_kill"])
    assert [k["landed"] for k in results["kills"]].count("mid_training") == results["killed_mid_training"]
    assert {"commit", "cpu", "threads", "load", "date"} <= results["provenance"].keys()
    goals = results["goals"]
    assert goals["mid_training_kills"]["goal"] == 20
    assert all(goals[name]["met"] for name in ("resumed_identical", "mid_training_identical", "nothing_lost"))
    identical = results["identical_means"]
    assert identical["excluded_wall_clock"]["metrics"] == ["steps_per_second"]
    assert identical["per_run"]["checkpoint_entries"] > 100 and identical["per_run"]["evaluation_lines"] == 3


def test_compare_finds_every_difference_but_the_skipped_ones():
    compare = load_faults().compare
    checkpoint = {"model": {"w": torch.ones(2, 2)}, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}},
                                                                    "param_groups": [{"lr": 0.002}]},
                  "torch_rng": torch.arange(4, dtype=torch.uint8), "strategy_state": {"generator": torch.ones(2)},
                  "step": 300, "train_seconds": 3.5, "grad_norm": math.nan}
    same = {**checkpoint, "train_seconds": 9.0, "model": {"w": torch.ones(2, 2)}}
    skip = frozenset({"c.train_seconds"})
    assert compare(checkpoint, same, "c", skip) == []
    assert compare(checkpoint, same, "c") == ["c.train_seconds: 9.0 instead of 3.5"]
    altered = {**checkpoint, "optimizer": {"state": {0: {"exp_avg": torch.tensor([0.0, 0.0, 1e-9])}},
                                           "param_groups": [{"lr": 0.002}]},
               "strategy_state": {"generator": torch.ones(2, dtype=torch.float64)}, "step": 290}
    assert sorted(compare(checkpoint, altered, "c", skip)) == [
        "c.optimizer.state.0.exp_avg: tensor values differ",
        "c.step: 290 instead of 300",
        "c.strategy_state.generator: torch.float64(2,) instead of torch.float32(2,)"]
    lines = [{"step": 10, "loss": 2.5, "steps_per_second": 60.0}, {"step": 20, "eval": {"fr_nll": 1.0}}]
    assert compare(lines, [{**lines[0], "steps_per_second": 1.0}, lines[1]], "m", frozenset({"m[0].steps_per_second"})) == []
    assert compare(lines, [lines[0], {"step": 20, "eval": {"fr_nll": 1.5}}], "m") == \
        ["m[1].eval.fr_nll: 1.5 instead of 1.0"]
    assert compare(lines, lines[:1], "m") == ["m: 1 items instead of 2"]
    results = {"strategies": {"a": {"train_seconds": 1.0, "fr_nll": 2.0}}, "signature": {"commit": "x"}}
    moved = {"strategies": {"a": {"train_seconds": 5.0, "fr_nll": 2.0}}, "signature": {"commit": "y"}}
    assert compare(results, moved, "r", frozenset({"r.strategies.*.train_seconds", "r.signature.commit"})) == []
