"""benchmarks/callback.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_callback_quick(bench_quick):
    results = bench_quick("callback")
    assert results["ms_per_call"]["median"] > 0 and len(results["ms_per_call"]["samples"]) == 2
    assert results["still_training_mode"] and results["provenance"]["quick"]
