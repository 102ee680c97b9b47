"""benchmarks/parallel.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_parallel_quick(bench_quick):
    results = bench_quick("parallel")
    assert results["sequential_seconds"] > 0 and results["parallel_seconds"] > 0
    assert results["aggregates_largest_difference"] <= 1e-6
    kill = results["kill"]
    assert kill["exit"] == -9 and len(kill["finished_before_the_kill"]) == 2
    assert kill["finished_jobs_run_again"] == [] and kill["complete_after_rerun"]
    assert sorted(kill["ran_again"]) == sorted(set(f"seed-{s}/{e}" for s in (0, 1) for e in
                                                   ("teacher_forcing", "parallel_scheduled_sampling"))
                                               - set(kill["finished_before_the_kill"]))
    assert all(goal["met"] for goal in results["goals"].values())
    assert "threads" in results and results["provenance"]["quick"]
