"""benchmarks/train_step.py: its --quick smoke variant runs and prints the JSON it promises (structure, not speed:
the quick sizes are noise)."""

from __future__ import annotations

import subprocess
import sys

from conftest import BENCHMARKS


def test_train_step_quick(bench_quick):
    results = bench_quick("train_step")
    assert set(results["ms_per_step"]) == {"gru", "lstm", "transformer"}
    for entry in results["ms_per_step"].values():
        assert entry["repeats"] >= 5 and len(entry["samples"]) == entry["repeats"]
        assert 0 < entry["min"] <= entry["median"] <= entry["max"]
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    assert isinstance(results["goals"], dict) and results["goals_note"]
    assert "interleaved" in results["method"]


def test_train_step_refuses_fewer_than_five_repeats():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "train_step.py"), "--quick", "--json", "--repeats", "3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--repeats must be at least 5" in done.stderr
