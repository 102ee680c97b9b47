"""Observation bias, corrected: position bias in click logs and survivor bias in specimen collections.

Policy value (goal: IPS and SNIPS unbiased, naive biased): over `logs` simulated click logs of one world (queries
with 10 results each, a logging ranker that leans on a feature relevance ignores, examination (1/rank)^1), each
estimator's value of the new policy (the true-relevance ranking) against its true value. Per estimator: bias,
RMSE, mean standard error, the bias in standard errors of the mean over logs (|mean error| / (sd / sqrt(logs)):
within 3 = unbiased at this many logs), and the share of logs whose estimate lies within 3 of its own standard
errors of the truth.

Propensities: regression EM (and result randomisation, on a shuffled log) against the simulator's theta, the
largest absolute error over ranks, averaged over `em_logs` logs. Life tables: over `collections` simulated
specimen collections, the integrated absolute error sum_a |S_hat(a) - S(a)| of naive, weighted and Kaplan-Meier.
Unbiased learning to rank: NDCG@5 on the true relevance of a linear ranker fitted to IPS-corrected clicks and of
one fitted to raw clicks.

Speed (goal: under 10 s on this machine's cores): reading a 10-million-row click log from Parquet (pyarrow) and the
new policy's file, then every item's relevance (naive, IPS, SNIPS) and the policy's value by every estimator, with
the log's own propensities; timed with `interleaved` (median and min of the repeats). The log is simulated and
written first, untimed.

    python benchmarks/observation.py [--quick] [--json]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import goal, interleaved, print_goals, provenance

from unforced.observation.clicklog import read_log, read_policy, write_log, write_policy
from unforced.observation.position_bias import (
    estimate_relevance,
    evaluate_policy,
    examination,
    make_world,
    propensity_by_em,
    propensity_by_randomization,
    simulate_log,
    true_policy_value,
)
from unforced.observation.ranking import unbiased_learning_to_rank
from unforced.observation.survivorship import integrated_absolute_error, life_tables, simulate_collection

ESTIMATORS = ("naive", "ips", "snips", "clipped_ips", "dr")
Z_GOAL = 3.0
EM_GOAL = 0.05
SPEED_GOAL_S = 10.0


def policy_value(logs: int, queries: int, sessions: int, seed: int = 0) -> dict:
    world = make_world(queries, 10, seed=seed)
    truth = true_policy_value(world)
    values = {name: [] for name in ESTIMATORS}
    errors = {name: [] for name in ESTIMATORS}
    for index in range(logs):
        log = simulate_log(world, sessions, seed=1000 + index)
        estimates = evaluate_policy(log, world.target_rank[log.item])
        for name in ESTIMATORS:
            values[name].append(estimates[name].value)
            errors[name].append(estimates[name].standard_error)
    result = {"truth": truth, "logs": logs, "queries": queries, "sessions_per_log": sessions,
              "rows_per_log": sessions * 10, "estimators": {}}
    for name in ESTIMATORS:
        value, standard_error = np.asarray(values[name]), np.asarray(errors[name])
        error = value - truth
        result["estimators"][name] = {
            "mean": float(value.mean()), "bias": float(error.mean()), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "mean_standard_error": float(standard_error.mean()), "sd_over_logs": float(error.std(ddof=1)),
            "bias_in_standard_errors_of_the_mean": float(abs(error.mean()) / (error.std(ddof=1) / np.sqrt(logs))),
            "mean_abs_error_in_own_standard_errors": float(np.mean(np.abs(error) / standard_error)),
            "share_within_3_standard_errors": float(np.mean(np.abs(error) <= 3 * standard_error))}
    return result


def propensities(logs: int, queries: int, sessions: int, seed: int = 1) -> dict:
    world = make_world(queries, 10, seed=seed)
    truth = examination(np.arange(1, 11))
    em, randomized = [], []
    for index in range(logs):
        em.append(propensity_by_em(simulate_log(world, sessions, seed=2000 + index))[0])
        randomized.append(propensity_by_randomization(simulate_log(world, sessions, logging="randomized",
                                                                   seed=3000 + index)))
    em, randomized = np.asarray(em), np.asarray(randomized)
    return {"truth_by_rank": truth.tolist(), "logs": logs, "sessions_per_log": sessions,
            "em_mean_by_rank": em.mean(0).tolist(),
            "em_max_abs_error": float(np.mean(np.abs(em - truth).max(1))),
            "randomization_mean_by_rank": randomized.mean(0).tolist(),
            "randomization_max_abs_error": float(np.mean(np.abs(randomized - truth).max(1))),
            "error": "largest absolute error over ranks 1..10 (propensities relative to rank 1), mean over logs"}


def ranking(queries: int, sessions: int, seed: int = 2) -> dict:
    world = make_world(queries, 10, seed=seed)
    log = simulate_log(world, sessions, seed=seed + 1)
    return {"queries": queries, "sessions": sessions, **unbiased_learning_to_rank(world, log, log.propensity)}


def survival(collections: int, specimens: int) -> dict:
    errors = {"naive": [], "weighted": [], "kaplan_meier": []}
    for index in range(collections):
        collection = simulate_collection(specimens, seed=4000 + index)
        tables = life_tables(collection, np.arange(len(collection.true_survival)))
        for name in errors:
            errors[name].append(integrated_absolute_error(tables["survival"][name], collection.true_survival))
    return {"collections": collections, "specimens_per_collection": specimens,
            "integrated_absolute_error": {name: {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))}
                                          for name, values in errors.items()},
            "error": "sum over ages 0..20 of |S_hat(a) - S(a)|, S(a) = P(lifespan >= a)"}


def speed(rows: int, repeats: int) -> dict:
    sessions, queries = rows // 10, max(rows // 100, 10)
    started = time.perf_counter()
    world = make_world(queries, 10, seed=5)
    log = simulate_log(world, sessions, seed=6)
    with tempfile.TemporaryDirectory() as folder:
        log_path = write_log(Path(folder) / "log.parquet", log)
        policy_path = write_policy(Path(folder) / "policy.parquet", world.query_of_item,
                                   np.arange(len(world.relevance)), world.target_rank)
        prepared = time.perf_counter() - started
        outcome = {}

        def estimate():
            read = read_log(log_path)
            relevance = estimate_relevance(read)
            value = evaluate_policy(read, read_policy(policy_path, read))
            outcome.update(snips=value["snips"].value, items=int((relevance["impressions"] > 0).sum()))

        timing = interleaved({"read_estimate_evaluate": estimate}, repeats=repeats, warmup=1)
        size = log_path.stat().st_size
    entry = timing["read_estimate_evaluate"]
    return {"rows": rows, "sessions": sessions, "items": len(world.relevance), "parquet_bytes": size,
            "seconds": {key: entry[key] / 1000.0 for key in ("median", "min", "max")},
            "samples_s": [sample / 1000.0 for sample in entry["samples"]],
            "simulate_and_write_s_untimed": prepared, "snips_value": outcome["snips"],
            "work": "read_log (Parquet via pyarrow, checked) + read_policy (join on query,item) + "
                    "estimate_relevance (naive, IPS, SNIPS per item) + evaluate_policy (naive, IPS, SNIPS, "
                    "clipped IPS, DR with standard errors)"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the smoke variant the tests run")
    parser.add_argument("--json", action="store_true", help="print the JSON result alone")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu"), help="numpy on the CPU; recorded")
    args = parser.parse_args(argv)
    if args.quick:
        logs, queries, sessions, em_logs, collections, specimens, rows, repeats = 40, 30, 1000, 3, 5, 1500, 20_000, 2
    else:
        logs, queries, sessions, em_logs, collections, specimens, rows, repeats = (200, 100, 5000, 20, 200, 2000,
                                                                                   10_000_000, 3)
    value = policy_value(logs, queries, sessions)
    found = propensities(em_logs, queries, sessions)
    tables = survival(collections, specimens)
    ltr = ranking(queries, sessions * 4)
    timed = speed(rows, repeats)
    estimators = value["estimators"]
    table_error = tables["integrated_absolute_error"]
    goals = {
        "ips_bias_in_standard_errors": goal(estimators["ips"]["bias_in_standard_errors_of_the_mean"], Z_GOAL),
        "snips_bias_in_standard_errors": goal(estimators["snips"]["bias_in_standard_errors_of_the_mean"], Z_GOAL),
        "naive_bias_in_standard_errors": goal(estimators["naive"]["bias_in_standard_errors_of_the_mean"], Z_GOAL,
                                              lower_is_better=False),
        "em_propensity_max_abs_error": goal(found["em_max_abs_error"], EM_GOAL),
        "kaplan_meier_over_naive_life_table_error": goal(
            table_error["kaplan_meier"]["mean"] / table_error["naive"]["mean"], 0.5),
        "weighted_over_naive_life_table_error": goal(table_error["weighted"]["mean"] / table_error["naive"]["mean"],
                                                     0.5),
        "ips_ranker_ndcg_gain_over_naive_ranker": goal(ltr["ips"] - ltr["naive"], 0.0, lower_is_better=False),
        "seconds_10m_rows" if not args.quick else "seconds_quick_rows": goal(timed["seconds"]["median"],
                                                                              SPEED_GOAL_S),
    }
    result = {"provenance": provenance(device="cpu"), "benchmark": "observation", "quick": args.quick,
              "device": "cpu", "policy_value": value, "propensities": found, "life_tables": tables,
              "learning_to_rank": ltr, "speed": timed, "goals": goals}
    if not args.json:
        print_goals(goals)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
