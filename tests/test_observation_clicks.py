"""observation/position_bias.py, clicklog.py, ranking.py: the estimators recover the simulator's truth, and bad
logs are refused with the file and row named."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from unforced.errors import UnforcedError
from unforced.observation.clicklog import read_log, read_policy, write_log, write_policy
from unforced.observation.position_bias import (
    PropensityClipWarning,
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


@pytest.fixture(scope="module")
def world():
    return make_world(queries=40, items_per_query=8, seed=0)


def test_ips_and_snips_unbiased_naive_not(world):
    truth = true_policy_value(world)
    errors = {name: [] for name in ("naive", "ips", "snips", "dr")}
    for seed in range(30):
        log = simulate_log(world, 1500, seed=seed)
        estimates = evaluate_policy(log, world.target_rank[log.item])
        for name in errors:
            errors[name].append(estimates[name].value - truth)
    for name, values in errors.items():
        values = np.asarray(values)
        z = abs(values.mean()) / (values.std(ddof=1) / np.sqrt(len(values)))
        assert (z > 10) if name == "naive" else (z < 3), (name, z)


def test_relevance_ips_closer_than_naive(world):
    log = simulate_log(world, 6000, seed=3)
    relevance = estimate_relevance(log)
    error = {name: np.abs(relevance[name] - world.relevance).mean() for name in ("naive", "ips", "snips")}
    assert error["ips"] < 0.5 * error["naive"] and error["snips"] < 0.5 * error["naive"]
    assert relevance["impressions"].sum() == log.rows


def test_propensities_by_em_and_randomization(world):
    truth = examination(np.arange(1, 9))
    em, _ = propensity_by_em(simulate_log(world, 6000, seed=4))
    assert np.max(np.abs(em - truth)) < 0.05
    randomized = propensity_by_randomization(simulate_log(world, 6000, logging="randomized", seed=5))
    assert np.max(np.abs(randomized - truth)) < 0.08


def test_tiny_propensities_clipped_with_a_warning(world):
    log = simulate_log(world, 500, eta=3.5, seed=6)  # only rank 8: 8^-3.5 = 0.0007 < 0.001
    with pytest.warns(PropensityClipWarning, match=r"^500 of 4000 propensities were below 0.001.*IPS value moved "
                      r"from [0-9.]+ to [0-9.]+"):
        estimates = evaluate_policy(log, world.target_rank[log.item], min_propensity=1e-3)
    assert estimates["clipping"].rows == 500
    with pytest.warns(PropensityClipWarning, match=r"IPS relevance of the \d+ item\(s\) they touch moved by up to"):
        estimate_relevance(log)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_policy(log, world.target_rank[log.item], min_propensity=1e-5)


def test_log_round_trip_csv_and_parquet(world, tmp_path):
    log = simulate_log(world, 50, seed=7)
    for suffix in (".csv", ".parquet"):
        path = write_log(tmp_path / f"log{suffix}", log)
        back = read_log(path)
        assert back.rows == log.rows and back.sessions == 50
        np.testing.assert_array_equal(back.item_labels[back.item], log.item)
        np.testing.assert_allclose(back.propensity, log.propensity, rtol=1e-9)
        policy = write_policy(tmp_path / f"policy{suffix}", world.query_of_item, np.arange(len(world.relevance)),
                              world.target_rank)
        np.testing.assert_array_equal(read_policy(policy, back), world.target_rank[log.item])
        a = evaluate_policy(log, world.target_rank[log.item])["snips"].value
        assert evaluate_policy(back, read_policy(policy, back))["snips"].value == pytest.approx(a)


@pytest.mark.parametrize(("text", "problem"), [
    ("query,item,click\nq,a,1\n", "missing column(s) rank"),
    ("query,item,rank,click\n", "no rows"),
    ("query,item,rank,click\nq,a,1,1\nq,b,1.5,0\n", "row 2 (line 3): rank must be a positive integer, got 1.5"),
    ("query,item,rank,click\nq,a,1,1\nq,b,0,0\n", "row 2 (line 3): rank must be a positive integer, got 0"),
    ("query,item,rank,click\nq,a,1,1\nq,b,two,0\n", "row 2 (line 3): rank must be a number, got 'two'"),
    ("query,item,rank,click\nq,a,1,1\nq,b,2,2\n", "row 2 (line 3): click must be 0 or 1, got 2"),
    ("query,item,rank,click,propensity\nq,a,1,1,1\nq,b,2,0,0\n", "row 2 (line 3): propensity must be in (0, 1]"),
    ("query,item,rank,click,propensity\nq,a,1,1,1.5\n", "row 1 (line 2): propensity must be in (0, 1]"),
    ("query,item,rank,click\nq,a,1,1\nq,,2,0\n", "row 2 (line 3): item is empty"),
    ("query,item,rank,click\nq,a,1,1\nq,b,,0\n", "row 2 (line 3): rank must be a number, got an empty cell"),
])
def test_bad_logs_refused_with_file_and_row(tmp_path, text, problem):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UnforcedError) as error:
        read_log(path)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_bad_log_refused_without_pyarrow(tmp_path, monkeypatch):
    from unforced.observation import tables

    monkeypatch.setattr(tables, "_pyarrow_or_none", lambda: None)
    path = tmp_path / "bad.csv"
    path.write_text("query,item,rank,click\nq,a,1,1\nq,b,2,yes\n")
    with pytest.raises(UnforcedError, match=r"bad.csv: row 2 \(line 3\): click must be a number, got 'yes'"):
        read_log(path)
    path.write_text("query,item,rank,click\nq,a,1,1\nq,b,2,0\n")
    log = read_log(path)
    assert log.rows == 2 and log.sessions == 1 and list(log.item_labels[log.item]) == ["a", "b"]


def test_parquet_needs_pyarrow_names_the_extra(tmp_path, monkeypatch):
    import sys

    from unforced.observation import tables

    monkeypatch.setattr(tables, "_pyarrow_or_none", lambda: None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails as if it were not installed
    path = tmp_path / "log.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(UnforcedError, match=r"pyarrow .*unforced\[observation\]"):
        read_log(path)


def test_unbiased_learning_to_rank_beats_raw_clicks():
    world = make_world(queries=100, items_per_query=10, seed=1)
    log = simulate_log(world, 8000, seed=2)
    result = unbiased_learning_to_rank(world, log, log.propensity)
    assert result["ips"] > result["naive"] + 0.01 and result["ips"] > 0.98
    # The raw-click ranker leans on the feature the logging ranker used and relevance ignores.
    assert abs(result["weights"]["naive"][0]) > 5 * abs(result["weights"]["ips"][0])
