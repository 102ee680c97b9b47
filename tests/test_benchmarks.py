"""Every benchmark's --quick smoke variant runs and prints the JSON it promises."""

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


def test_train_step_quick():
    results = run_quick("train_step")
    assert set(results["ms_per_step"]) == {"gru", "lstm", "transformer"}
    assert all(entry["median"] > 0 for entry in results["ms_per_step"].values())


def test_rewards_speed_quick():
    results = run_quick("rewards_speed")
    assert results["cider_d_max_abs_difference"]["vs_pycocoevalcap"] < 1e-6


def test_scheduled_sampling_quick():
    results = run_quick("scheduled_sampling")
    assert set(results["ms_per_step"]) == {"gru", "lstm"}
    assert all(v["median"] > 0 for entry in results["ms_per_step"].values() for v in entry.values())


def test_faults_quick():
    results = run_quick("faults")
    assert results["runs_killed"] >= 1 and results["resumed_identical"] == results["trials"]
    assert results["nothing_lost"]
    assert results["corrupt_checkpoints_refused"] == results["corrupt_checkpoints_total"]
    assert results["bad_files_refused"] == results["bad_files_total"]


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
