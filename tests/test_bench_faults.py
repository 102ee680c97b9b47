"""benchmarks/faults.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_faults_quick(bench_quick):
    results = bench_quick("faults")
    assert results["runs_killed"] >= 1 and results["resumed_identical"] == results["trials"]
    assert results["nothing_lost"]
    assert results["corrupt_checkpoints_refused"] == results["corrupt_checkpoints_total"]
    assert results["bad_files_refused"] == results["bad_files_total"]
