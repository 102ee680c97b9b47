"""benchmarks/cycle.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations

import pytest


def test_cycle_quick(bench_quick, tmp_path):
    figure = tmp_path / "cer.png"
    results = bench_quick("cycle", "--figure", str(figure))
    assert {"commit", "cpu", "threads", "load", "date", "espeak"} <= set(results["provenance"])
    run, = results["runs"]
    assert run["share"] == 0.3 and run["seed"] == 0
    assert set(run["test"]) == {"paired_start", "paired_only", "self_training", "cycle"}
    for scores in run["test"].values():
        assert scores["cer"] >= 0 and scores["wer"] >= 0
    base = run["test"]["paired_only"]["cer"]
    for branch in ("self_training", "cycle"):
        expected = 100 * (base - run["test"][branch]["cer"]) / base
        assert run["relative_cer_cut_pct"][branch] == pytest.approx(expected, abs=1e-2)
    assert [r["round"] for r in run["rounds"]] == [0, 1]
    gaps = run["tts_frame_gap"]
    assert set(gaps) == {"teacher_forcing", "scheduled_sampling"}
    assert all(g["fr"] >= 0 and g["tf"] >= 0 for g in gaps.values())
    share = results["summary"]["by_share"]["0.3"]
    assert share["relative_cer_cut_pct"]["cycle"]["values"] == [run["relative_cer_cut_pct"]["cycle"]]
    assert results["anchors"]["hori2019_cycle"]["relative_cut_pct"] == 14.7
    goal, = results["goals"].values()
    assert goal["goal"] == 20.0 and isinstance(goal["met"], bool) and goal["share"] == 0.3
    assert figure.stat().st_size > 1000
