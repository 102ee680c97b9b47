"""benchmarks/scheduled_sampling.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_scheduled_sampling_quick(bench_quick):
    results = bench_quick("scheduled_sampling")
    assert set(results["ms_per_step"]) == {"gru", "lstm"}
    assert all(v["median"] > 0 for entry in results["ms_per_step"].values() for v in entry.values())
