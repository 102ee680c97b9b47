"""benchmarks/rewards_speed.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations

GOALS = {
    "cider_d_set_speedup_over_pycocoevalcap": "at least",
    "cider_d_set_max_abs_difference_vs_pycocoevalcap": "at most",
    "cider_d_corpus_cached_speedup_over_scst_port": "at least",
    "cider_d_corpus_cached_max_abs_difference_vs_scst_port": "at most",
}


def test_rewards_speed_quick(bench_quick):
    results = bench_quick("rewards_speed")
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    assert next(iter(results)) == "provenance"

    # Structure: both comparisons say how their work is equal, and time every variant with median and min.
    cider_set, cider_batch = results["cider_d_set"], results["cider_d_per_batch"]
    assert "document frequencies from the scored set" in cider_set["equal_work"]
    assert "re-vectorises" in cider_batch["equal_work"]
    assert set(cider_set["ms"]) == {"ours_corpus_score", "pycocoevalcap_cider_compute_score"}
    assert all(len(samples) >= 5 for samples in cider_set["samples_ms"].values())
    assert {"ours_corpus_cached", "scst_ciderd_port", "ours_corpus_cold_first_pass"} <= set(
        cider_batch["ms_per_batch"])
    for timing in [*cider_set["ms"].values(), *cider_batch["ms_per_batch"].values(),
                   *results["bleu_per_batch"]["ms_per_batch"].values()]:
        assert 0 < timing["min"] <= timing["median"] <= timing["max"]

    # Equality: the timings compare equal metrics.
    assert cider_set["max_abs_difference"]["per_candidate"] < 1e-6
    assert cider_set["max_abs_difference"]["mean"] < 1e-6
    assert abs(cider_set["mean"]["ours"] - cider_set["mean"]["pycocoevalcap"]) < 1e-6
    assert cider_set["mean"]["ours"] > 0
    assert cider_batch["max_abs_difference"]["corpus_cached_vs_scst_port"] < 1e-6
    assert cider_batch["max_abs_difference"]["batch_df_vs_pycocoevalcap"] < 1e-6
    assert results["bleu_per_batch"]["max_abs_difference_vs_sacrebleu"] < 1e-9

    # The goals block: its shape, and that each goal's value is the figure it names (not the speed itself).
    goals = results["goals"]
    assert set(goals) == set(GOALS)
    for name, direction in GOALS.items():
        entry = goals[name]
        assert set(entry) == {"value", "goal", "met", "direction"} and entry["direction"] == direction
        assert isinstance(entry["met"], bool)
    assert goals["cider_d_set_speedup_over_pycocoevalcap"]["value"] == (
        cider_set["speedup_pycocoevalcap_over_ours"]["median"])
    assert goals["cider_d_set_max_abs_difference_vs_pycocoevalcap"]["met"]
    assert goals["cider_d_corpus_cached_max_abs_difference_vs_scst_port"]["met"]

    # The names benchmarks/scst.py reads.
    assert results["cider_d_ms"]["ours_corpus_df_warm"] == cider_batch["ms_per_batch"]["ours_corpus_cached"][
        "median"]
    assert {"pycocoevalcap_over_ours_warm"} <= set(results["cider_d_speedup"])
    assert {"ours_warm"} <= set(results["bleu_ms"])
