"""benchmarks/scst.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_scst_quick(bench_quick):
    results = bench_quick("scst")
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    step = results["scst_step"]
    for side in ("scst", "teacher_forcing"):
        timing = step["ms_per_step"][side]
        assert 0 < timing["min"] <= timing["median"] and timing["repeats"] == 2
    assert step["scst_over_teacher_forcing"]["median"] > 0
    assert set(step["share_of_step"]) == {"sampling", "decode", "reward", "forced_backward_optimizer"}
    assert abs(sum(step["share_of_step"].values()) - 1.0) < 0.05  # medians of shares: close to, not exactly, 1
    assert step["decoded_length"] > 0
    assert set(results["goals"]) == {"reward_share_of_scst_step", "cider_d_speedup_over_pycocoevalcap"}
    for entry in results["goals"].values():
        assert set(entry) >= {"value", "goal", "met"} and isinstance(entry["met"], bool)
