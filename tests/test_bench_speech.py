"""benchmarks/speech.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_speech_quick(bench_quick):
    results = bench_quick("speech")
    assert {"commit", "cpu", "threads", "load", "date", "espeak"} <= set(results["provenance"])
    synthesis = results["synthesis"]
    assert synthesis["utterances"] == 60 and synthesis["made"] == 60 and synthesis["ms_per_utterance"] > 0
    assert abs(synthesis["projected_10000_utterances_seconds"] - synthesis["ms_per_utterance"] * 10) < 1e-6
    features = results["features"]
    assert features["files"] == 32 and features["x_real_time"] > 0 and len(features["milliseconds"]["samples"]) == 2
    training = results["training"]
    run, = training["runs"]
    assert set(run["test_scores"]) == {"cross_entropy_start", "cross_entropy_more", "scst_greedy",
                                       "scst_leave_one_out", "minimum_wer", "scheduled_sampling"}
    for scores in run["test_scores"].values():
        assert set(scores) == {"wer", "wer_beam", "cer", "cer_beam", "wer_clean", "wer_noisy"}
        assert scores["wer"] >= 0 and scores["cer"] >= 0
    base, scst = run["test_scores"]["cross_entropy_more"]["wer"], run["test_scores"]["scst_greedy"]["wer"]
    expected = 100 * (base - scst) / base if base > 0 else None
    got = run["relative_wer_cut_pct"]["scst_greedy_over_cross_entropy_more"]
    assert (got is None and expected is None) or abs(got - expected) < 1e-2
    start = run["per_position_character_error"]["cross_entropy_start"]
    assert len(start["tf_error"]) == len(start["fr_error"]) > 0 and 0 <= start["fr_character_error"] <= 1
    assert run["switch"]["metric"] == "wer" and run["switch"]["steps_trained"] >= 1
    assert training["anchors"]["chen2022_scst"]["relative_wer_cut_pct"] == 8.7
    assert set(results["goals"]) == {"features_x_real_time", "synthesis_10000_utterances_seconds",
                                     "relative_wer_cut_pct"}
    for entry in results["goals"].values():
        assert set(entry) >= {"value", "goal", "met"} and isinstance(entry["met"], bool)
