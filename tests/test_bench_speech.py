"""benchmarks/speech.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_speech_quick(bench_quick):
    results = bench_quick("speech")
    assert {"commit", "cpu", "threads", "load", "date", "espeak"} <= set(results["provenance"])
    synthesis = results["synthesis"]
    assert synthesis["utterances"] == 12 and synthesis["ms_per_utterance"] > 0
    assert abs(synthesis["projected_10000_utterances_seconds"] - synthesis["ms_per_utterance"] * 10) < 1e-6
    features = results["features"]
    assert features["files"] == 32 and features["x_real_time"] > 0 and len(features["milliseconds"]["samples"]) == 2
    training = results["training"]
    assert len(training["seeds"]) == 1
    seed = training["seeds"][0]
    expected = 100 * (seed["wer_teacher_forcing"] - seed["wer_scst"]) / seed["wer_teacher_forcing"]
    assert abs(seed["relative_wer_cut_pct"] - expected) < 1e-9 and seed["signature"].startswith("WER")
    assert training["anchor"]["relative_wer_cut_pct"] == 8.7
    assert set(results["goals"]) == {"features_x_real_time", "synthesis_10000_utterances_seconds",
                                     "relative_wer_cut_pct"}
    for entry in results["goals"].values():
        assert set(entry) >= {"value", "goal", "met"} and isinstance(entry["met"], bool)
