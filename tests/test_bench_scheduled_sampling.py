"""benchmarks/scheduled_sampling.py: its --quick smoke variant runs and prints the JSON it promises (structure, not
speed: the quick sizes are noise)."""

from __future__ import annotations

VARIANTS = {"teacher_forcing", "parallel", "exact", "step_loop", "naive"}
GOALS = {"exact/teacher_forcing": 1.5, "parallel/teacher_forcing": 1.3, "exact/naive": 0.8}


def test_scheduled_sampling_quick(bench_quick):
    results = bench_quick("scheduled_sampling")
    assert set(results["ms_per_step"]) == {"gru", "lstm"}
    assert results["repeats"] >= 5
    for entry in results["ms_per_step"].values():
        assert set(entry) == VARIANTS
        for figure in entry.values():
            assert len(figure["samples"]) == results["repeats"]
            assert 0 < figure["min"] <= figure["median"] <= figure["max"]
    for kind in ("gru", "lstm"):
        ratios = results["ratios"][kind]
        assert {"exact/step_loop", *GOALS} <= set(ratios)
        exact, floor = results["ms_per_step"][kind]["exact"], results["ms_per_step"][kind]["teacher_forcing"]
        assert ratios["exact/teacher_forcing"] == exact["median"] / floor["median"]
        assert results["ratios_of_min"][kind]["exact/teacher_forcing"] == exact["min"] / floor["min"]
        assert set(results["paired_ratios"][kind]) == set(ratios)
    assert set(results["goals"]) == {f"{kind} {name}" for kind in ("gru", "lstm") for name in GOALS}
    for name, entry in results["goals"].items():
        kind, ratio = name.split(" ")
        assert entry["goal"] == GOALS[ratio] and entry["value"] == results["ratios"][kind][ratio]
        assert entry["met"] == (entry["value"] <= entry["goal"])
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    assert "interleaved" in results["method"]
