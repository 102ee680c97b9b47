"""benchmarks/dagger.py: its --quick smoke variant runs and prints the JSON it promises (structure only)."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_dagger_quick(bench_quick):
    results = bench_quick("dagger")
    assert {"provenance", "speed", "evidence", "goals"} <= set(results)
    assert set(results["speed"]["ms"]) == {"teacher_forcing", "dagger"}
    assert set(results["evidence"]) == {"reverse", "sort", "noisy-copy", "toy-translation"}
    for entry in results["evidence"].values():
        for name in ("teacher_forcing", "dagger", "professor_forcing"):
            assert 0.0 <= entry[name]["exact_match"]["mean"] <= 1.0
            assert len(entry[name]["exact_match"]["values"]) == results["settings"]["seeds"]
            judged = entry[name]["oracle_error"]["values"]
            assert all(error >= 0.0 for error in judged)
        assert set(entry["dagger_beats_teacher_forcing"]) == {"exact_match", "oracle_error"}
        assert entry["professor_forcing_no_divergence"] == (not any(entry["professor_forcing"]["diverged"]["values"]))
        paired = entry["dagger_minus_teacher_forcing_per_seed"]["exact_match"]
        assert len(paired["values"]) == results["settings"]["seeds"]
    for goal in results["goals"].values():
        assert set(goal) >= {"value", "goal", "met"}
    assert results["goals"]["dagger_step_over_teacher_forcing"]["value"] == results["speed"]["ratio"]
    bible = results["bible_professor_forcing"]  # `make test` builds the corpus (make data)
    assert "error" not in bible, bible
    assert math.isfinite(bible["last_nll"]) and bible["oracle_error"] is None  # no oracle on bible-en-es


def test_divergence_is_a_loss_that_rose_back_or_never_fell():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        diverged = importlib.import_module("dagger").diverged
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert not diverged(2.6, 0.02, 0.015)  # learnt, ends near its lowest
    assert not diverged(2.6, 0.08, 0.03)  # above twice its lowest but within 0.1 nat: noise at a tiny loss
    assert diverged(2.6, 1.9, 0.5)  # learnt to 0.5, then lost it (professor forcing on sort at 16 symbols)
    assert diverged(2.6, 2.7, 2.5)  # never fell below its start
    assert diverged(2.6, math.nan, 0.5)
