"""observation/survivorship.py: the weighted and Kaplan-Meier life tables recover the true survival curve that
the naive one misses, and bad specimen files are refused by row."""

from __future__ import annotations

import numpy as np
import pytest

from unforced.errors import UnforcedError
from unforced.observation.survivorship import (
    exposure_of,
    integrated_absolute_error,
    kaplan_meier,
    life_tables,
    read_collection,
    simulate_collection,
    write_collection,
)


def test_corrected_life_tables_beat_naive():
    errors = {"naive": [], "weighted": [], "kaplan_meier": []}
    for seed in range(5):
        collection = simulate_collection(1500, seed=seed)
        tables = life_tables(collection, np.arange(len(collection.true_survival)))
        for name in errors:
            errors[name].append(integrated_absolute_error(tables["survival"][name], collection.true_survival))
    mean = {name: float(np.mean(values)) for name, values in errors.items()}
    assert mean["kaplan_meier"] < 0.5 and mean["weighted"] < 0.6
    assert mean["naive"] > 4 * mean["kaplan_meier"] and mean["naive"] > 3 * mean["weighted"]


def test_kaplan_meier_left_truncation_by_hand():
    # At risk at age t: entry <= t <= age. t=0: 4 at risk, 1 dies; t=1: 4, 2 die; t=2: 4, 1 dies.
    age = np.array([0, 1, 1, 2, 3, 3, 3])
    entry = np.array([0, 0, 1, 2, 2, 0, 0])
    np.testing.assert_allclose(kaplan_meier(age, entry, np.ones(7), np.arange(5)), [1, 0.75, 0.375, 0.28125, 0])
    np.testing.assert_allclose(kaplan_meier(age, np.zeros(7, dtype=int), np.ones(7), np.arange(5)),
                               [np.mean(age >= a) for a in range(5)])


def test_exposure_sums_effort_over_the_years_alive():
    years, effort = np.array([2000, 2001, 2002]), np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(exposure_of(np.array([1999, 2001, 2002]), np.array([1, 0, 5]), years, effort),
                               [1.0, 2.0, 4.0])


def test_round_trip_and_bad_files(tmp_path):
    collection = simulate_collection(300, seed=1)
    write_collection(tmp_path / "s.csv", tmp_path / "e.csv", collection)
    back = read_collection(tmp_path / "s.csv", tmp_path / "e.csv")
    np.testing.assert_array_equal(back.age, collection.age)
    (tmp_path / "bad.csv").write_text("birth_year,age\n1950,3\n1950,-1\n")
    with pytest.raises(UnforcedError, match=r"bad.csv: row 2 \(line 3\): age must be a whole number"):
        read_collection(tmp_path / "bad.csv", tmp_path / "e.csv")
    (tmp_path / "old.csv").write_text("birth_year,age\n1950,3\n1700,2\n")
    with pytest.raises(UnforcedError, match=r"old.csv: row 2 \(line 3\): birth_year .*exposure is 0"):
        read_collection(tmp_path / "old.csv", tmp_path / "e.csv")
    (tmp_path / "effort.csv").write_text("year,effort\n1950,1\n1951,-2\n")
    with pytest.raises(UnforcedError, match=r"effort.csv: row 2 \(line 3\): effort must be a number >= 0"):
        read_collection(tmp_path / "s.csv", tmp_path / "effort.csv")
    (tmp_path / "twice.csv").write_text("year,effort\n1950,1\n1950,2\n")
    with pytest.raises(UnforcedError, match=r"twice.csv: row 2 \(line 3\): year must be a year not given before"):
        read_collection(tmp_path / "s.csv", tmp_path / "twice.csv")
    (tmp_path / "cols.csv").write_text("born,age\n1950,3\n")
    with pytest.raises(UnforcedError, match=r"cols.csv: missing column\(s\) birth_year"):
        read_collection(tmp_path / "cols.csv", tmp_path / "e.csv")


def test_lifelines_missing_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lifelines", None)
    with pytest.raises(UnforcedError, match=r"lifelines .*unforced\[observation\]"):
        kaplan_meier(np.array([1, 2]), np.zeros(2, dtype=int), np.ones(2), np.arange(3))
