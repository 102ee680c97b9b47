"""benchmarks/lab.py: its --quick smoke variant starts the lab in its own process, presses Train and prints the
JSON it promises."""

from __future__ import annotations


def test_lab_quick(bench_quick):
    results = bench_quick("lab")
    assert results["provenance"]["quick"] and results["goals"] == {}
    first = results["first_point_seconds"]
    assert len(first["samples"]) == 1 and 0 < first["median"] < 60
    events = results["event_interval_seconds"]
    assert events["count"] >= 2 and 0 < events["median"] <= events["max"]
    assert events["largest_after_first_step"] <= events["max"] and len(events["first_step"]) == 1
    memory = results["rss_mib"]
    assert memory["samples"] and memory["start"] > 50  # a Python process with torch loaded
