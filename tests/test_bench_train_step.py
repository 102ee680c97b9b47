"""benchmarks/train_step.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_train_step_quick(bench_quick):
    results = bench_quick("train_step")
    assert set(results["ms_per_step"]) == {"gru", "lstm", "transformer"}
    assert all(entry["median"] > 0 for entry in results["ms_per_step"].values())
