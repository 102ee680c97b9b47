"""benchmarks/control.py: its --quick smoke variant runs `unforced control` for the linear system at radius 1.1
and 0.9 and for CartPole, and prints the JSON it promises with its qualitative goals met (speed not asserted)."""

from __future__ import annotations


def test_control_quick(bench_quick):
    results = bench_quick("control")
    assert next(iter(results)) == "provenance" and results["provenance"]["quick"]
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    assert set(results["runs"]) == {"linear_radius_1.1", "linear_radius_0.9", "cartpole"}
    for run in results["runs"].values():
        assert run["seconds"] > 0 and run["command"].startswith("unforced control --env ")
        assert set(run["learners"]) == {"behaviour_cloning", "dagger"}
        for entry in run["learners"].values():
            assert {"growth_rate", "cost", "expert_labels", "growth_rate_by_seed"} <= set(entry)
    for name, entry in results["goals"].items():
        assert set(entry) == {"value", "goal", "met", "direction"} and isinstance(entry["met"], bool)
        if not name.startswith("seconds_"):
            assert entry["met"], name
    assert results["runs"]["cartpole"]["radius"] is None
