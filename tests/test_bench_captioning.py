"""benchmarks/captioning.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_captioning_quick(bench_quick):
    results = bench_quick("captioning")
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    speed = results["cider_d_speed"]
    assert speed["candidates"] == 500 and speed["references_per_candidate"] == 5
    assert 0 < speed["cached_call_ms"]["min"] <= speed["cached_call_ms"]["median"] and speed["mean_cider_d"] > 0
    assert len(results["runs"]) == 2 and results["task"]["name"] == "captions"
    for run in results["runs"]:
        assert set(run["test_cider_d"]) == {"cross_entropy_start", "cross_entropy_more", "scst_greedy",
                                            "scst_leave_one_out", "scheduled_sampling"}
        for scores in run["test_scores"].values():
            assert set(scores) == {"cider_d", "cider_d_beam", "bleu", "bleu_beam", "chrf", "chrf_beam"}
        # cross-entropy stopped on the validation switch (patience 1 at the quick size) or at its ceiling
        switch = run["switch"]
        assert switch["metric"] == "cider_d" and 1 <= switch["steps_trained"] <= results["size"]["cross_entropy_steps"]
        assert switch["stalled"] or switch["steps_trained"] == results["size"]["cross_entropy_steps"]
        assert switch["best_step"] is not None and switch["best_step"] <= switch["steps_trained"]
        start = run["per_position_error"]["cross_entropy_start"]
        assert len(start["tf_error"]) == len(start["fr_error"]) > 0
        assert all(0 < share < 1 for share in run["reward_share_of_scst_steps"].values())
    assert results["anchors"]["rennie2017_att2all"]["relative_gain"] == 0.161
    assert set(results["goals"]) == {"cider_d_5000x5_cached_seconds", "reward_share_of_scst_step",
                                     "scst_relative_cider_d_gain"}
    for entry in results["goals"].values():
        assert set(entry) >= {"value", "goal", "met"} and isinstance(entry["met"], bool)


def test_captioning_speed_only_is_the_timing_alone():
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "captioning.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--speed-only", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["part"] == "cider_d_speed" and "runs" not in results
    assert results["cider_d_speed"]["candidates"] == 500 and set(results["goals"]) == {"cider_d_5000x5_cached_seconds"}
