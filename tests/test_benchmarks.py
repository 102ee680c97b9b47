"""benchmarks/common.py and compare_commits.py: provenance, goals, interleaved timing, two commits in one run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(name: str) -> dict:
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compare_commits_quick_runs_both_sides():
    # HEAD against itself: the structure and the provenance, not a speed (the quick sizes are noise).
    result = subprocess.run([sys.executable, str(BENCHMARKS / "compare_commits.py"), "--base", "HEAD", "--bench",
                             "train_step", "--rounds", "1", "--quick", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["provenance"]["commit"] == document["provenance"]["base"]
    assert set(document["figures"]) == {f"ms_per_step.{kind}" for kind in ("gru", "lstm", "transformer")}
    assert all(figure["ratio"] > 0 and len(figure["base_rounds"]) == 1 for figure in document["figures"].values())
    assert set(document["goals"]) and all("met" in goal for goal in document["goals"].values())



def _common():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
    finally:
        sys.path.remove(str(BENCHMARKS))
    return common


def test_goal_says_which_side_of_the_target_a_figure_is():
    common = _common()
    assert common.goal(1.2, 1.5)["met"] and not common.goal(1.6, 1.5)["met"]
    assert common.goal(12.0, 10.0, lower_is_better=False)["met"] and not common.goal(9.0, 10.0, False)["met"]
    assert common.goal(1.2, 1.5) == {"value": 1.2, "goal": 1.5, "met": True, "direction": "at most"}


def test_interleaved_rotates_the_order_and_drops_the_warmup():
    common = _common()
    calls: list[str] = []
    ticks = iter(range(1000))
    timing = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
                                 "c": lambda: calls.append("c")}, repeats=3, warmup=1,
                                clock=lambda: next(ticks) / 1000.0)
    assert calls == list("abc" "bca" "cab" "abc")
    assert all(len(entry["samples"]) == 3 and abs(entry["median"] - 1.0) < 1e-9 for entry in timing.values())


def test_provenance_names_the_machine_and_the_commit():
    provenance = _common().provenance(quick=True)
    assert {"commit", "cpu", "threads", "load", "date", "torch"} <= provenance.keys() and provenance["quick"]
    assert provenance["threads"] >= 1 and isinstance(provenance["cpu"], str)
