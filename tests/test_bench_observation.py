"""benchmarks/observation.py: its --quick smoke variant runs, prints the JSON it promises, and its statistical
claims hold at the small size with the seeds fixed (speed is not asserted here)."""

from __future__ import annotations

GOALS = {"ips_bias_in_standard_errors", "snips_bias_in_standard_errors", "naive_bias_in_standard_errors",
         "em_propensity_max_abs_error", "kaplan_meier_over_naive_life_table_error",
         "weighted_over_naive_life_table_error", "ips_ranker_ndcg_gain_over_naive_ranker", "seconds_quick_rows"}


def test_observation_quick(bench_quick):
    results = bench_quick("observation")
    assert next(iter(results)) == "provenance"
    assert {"commit", "cpu", "threads", "load", "date"} <= set(results["provenance"])
    assert set(results["goals"]) == GOALS
    for entry in results["goals"].values():
        assert set(entry) == {"value", "goal", "met", "direction"} and isinstance(entry["met"], bool)

    estimators = results["policy_value"]["estimators"]
    assert set(estimators) == {"naive", "ips", "snips", "clipped_ips", "dr"}
    for entry in estimators.values():
        assert {"bias", "rmse", "mean_standard_error", "bias_in_standard_errors_of_the_mean"} <= set(entry)
        assert entry["rmse"] >= abs(entry["bias"])
    assert estimators["ips"]["bias_in_standard_errors_of_the_mean"] < 3
    assert estimators["snips"]["bias_in_standard_errors_of_the_mean"] < 3
    assert estimators["naive"]["bias_in_standard_errors_of_the_mean"] > 10
    assert estimators["snips"]["rmse"] < estimators["naive"]["rmse"]

    assert results["propensities"]["em_max_abs_error"] < 0.1
    assert results["propensities"]["randomization_max_abs_error"] < 0.15
    error = results["life_tables"]["integrated_absolute_error"]
    assert error["kaplan_meier"]["mean"] < 0.5 * error["naive"]["mean"]
    assert error["weighted"]["mean"] < 0.5 * error["naive"]["mean"]
    assert results["learning_to_rank"]["ips"] > results["learning_to_rank"]["naive"]
    assert results["speed"]["rows"] == 20_000 and results["speed"]["seconds"]["min"] > 0
