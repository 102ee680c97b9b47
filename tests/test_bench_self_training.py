"""benchmarks/self_training.py: its --quick smoke variant runs and prints the JSON it promises, and its relative
figures are what its raw scores give."""

from __future__ import annotations

import statistics

import pytest

PARTS = {"scarce_labels": ("tf_start", "tf_more", "self_training"),
         "all_labels": ("tf_start", "tf_more", "spin", "preference", "scst")}


def test_self_training_quick(bench_quick):
    results = bench_quick("self_training", timeout=120)
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    assert results["provenance"]["threads"] == 1 and results["seeds"] == 2
    assert "BLEU|" in results["scarce_labels"]["runs"][0]["measured"]["bleu_signature"]
    assert "equal_work" in results["setup"] and "not equal work" in results["setup"]["equal_work"]
    assert results["scarce_labels"]["task"]["unlabelled"] > 0 and results["all_labels"]["task"]["unlabelled"] == 0
    for part, branches in PARTS.items():
        entry = results[part]
        assert len(entry["runs"]) == 2
        for run in entry["runs"]:
            scores = run["test_scores"]
            assert set(scores) == set(branches)
            assert all(set(s) == {"bleu", "chrf"} and s["bleu"] >= 0 and s["chrf"] >= 0 for s in scores.values())
            assert set(run["seconds"]) >= set(branches) and all(v >= 0 for v in run["seconds"].values())
            for branch in branches[2:]:  # every branch over more teacher forcing, from the raw scores
                for metric in ("bleu", "chrf"):
                    base, value = scores["tf_more"][metric], scores[branch][metric]
                    got = run["relative"][f"{branch}_over_tf_more"][metric]
                    assert (got is None and base == 0) or got == pytest.approx(value / base - 1, abs=1e-5)
        for key, by_metric in entry["relative"].items():  # the spread over seeds is of the per-seed figures
            for metric, figure in by_metric.items():
                values = [run["relative"][key][metric] for run in entry["runs"]]
                values = [v for v in values if v is not None]
                assert figure["values"] == values
                if values:
                    assert figure["mean"] == pytest.approx(statistics.mean(values), abs=1e-4)
                assert entry["against_spread"][key][metric] in ("above", "below", "within", "unknown")
        for branch in branches:
            assert entry["test_scores"][branch]["chrf"]["values"] == [r["test_scores"][branch]["chrf"]
                                                                      for r in entry["runs"]]
    for run in results["scarce_labels"]["runs"]:
        assert run["self_training_threshold"] <= 0
        assert 0 <= run["branch_logs"]["self_training"]["pseudo_kept"] <= 1
    assert set(results["goals"]) == {"self_training_bleu_over_tf_more", "spin_bleu_over_tf_more"}
    for name, entry in results["goals"].items():
        part, key = ("scarce_labels", "self_training") if name.startswith("self") else ("all_labels", "spin")
        assert entry["goal"] == 0.0 and isinstance(entry["met"], bool)
        assert entry["value"] == results[part]["relative"][f"{key}_over_tf_more"]["bleu"]["mean"]
        assert entry["met"] == (entry["value"] is not None and entry["value"] >= 0)
