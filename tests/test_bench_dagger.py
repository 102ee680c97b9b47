"""benchmarks/dagger.py: its --quick smoke variant runs and prints the JSON it promises (structure only)."""

from __future__ import annotations

import math


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
    for goal in results["goals"].values():
        assert set(goal) >= {"value", "goal", "met"}
    assert results["goals"]["dagger_step_over_teacher_forcing"]["value"] == results["speed"]["ratio"]
    bible = results["bible_professor_forcing"]  # `make test` builds the corpus (make data)
    assert "error" not in bible, bible
    assert math.isfinite(bible["last_nll"]) and bible["oracle_error"] is None  # no oracle on bible-en-es
