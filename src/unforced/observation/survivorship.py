"""Survivor bias in specimen collections: a life table from museum specimens over-counts the long-lived, who
had more years in which to be collected. Weighting each specimen by 1 / its exposure (the collection effort summed
over the years it was alive) undoes it, as 1 / theta undoes position bias.

Ages are whole years: an animal born in year b that reached age a was alive in years b .. b + a. S(a) =
P(lifespan >= a). Three life tables from the specimens (`birth_year, age`) and the effort (`year, effort`):
- naive: the share of specimens that reached age a;
- weighted: the same share with each specimen weighted by 1 / exposure (Horvitz-Thompson: its chance of being
  collected is proportional to its exposure); it cannot see the animals of cohorts born before collection began
  that died before it began (exposure 0);
- kaplan_meier: Kaplan-Meier with those weights and left truncation (an animal born before collection began
  enters observation at the age it had then), through lifelines (`KaplanMeierFitter(weights=, entry=)`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unforced.errors import UnforcedError
from unforced.observation import require
from unforced.observation.tables import read_columns, write_columns


def gompertz_makeham_hazard(max_age: int = 20, baseline: float = 0.08, scale: float = 0.01,
                            growth: float = 0.25) -> np.ndarray:
    """Yearly death probability at ages 0 .. max_age: baseline + scale exp(growth a), 1 at max_age."""
    hazard = np.minimum(1.0, baseline + scale * np.exp(growth * np.arange(max_age + 1)))
    hazard[-1] = 1.0
    return hazard


def survival_from_hazard(hazard: np.ndarray) -> np.ndarray:
    """S(a) = prod_(j < a) (1 - h(j)) at ages 0 .. len(hazard) - 1."""
    return np.concatenate([[1.0], np.cumprod(1.0 - hazard)[:-1]])


@dataclass
class Collection:
    birth_year: np.ndarray  # (specimens,) int64
    age: np.ndarray  # (specimens,) int64, the age each reached
    effort_year: np.ndarray  # (years,) int64
    effort: np.ndarray  # (years,) float64, >= 0
    true_survival: np.ndarray | None = None  # (ages,) S(a) of the population, where simulated


def simulate_collection(specimens: int = 2000, first_year: int = 1900, years: int = 60, births_per_year: int = 2000,
                        hazard: np.ndarray | None = None, seed: int = 0) -> Collection:
    """A population born every year from `first_year - max_age` on, lifespans drawn from `hazard`; collection
    effort over `years` years from `first_year` (a random walk, so that it varies); each animal is collected with
    probability proportional to its exposure, scaled for about `specimens` specimens (never above 1)."""
    hazard = gompertz_makeham_hazard() if hazard is None else np.asarray(hazard, dtype=np.float64)
    survival = survival_from_hazard(hazard)
    max_age = len(hazard) - 1
    rng = np.random.default_rng(seed)
    effort_year = np.arange(first_year, first_year + years)
    effort = np.exp(np.cumsum(rng.normal(0.0, 0.25, years)))
    cohort_years = np.arange(first_year - max_age, first_year + years)
    birth_year = np.repeat(cohort_years, births_per_year)
    death_probability = survival * hazard  # P(lifespan = a)
    age = rng.choice(max_age + 1, size=len(birth_year), p=death_probability / death_probability.sum())
    exposure = exposure_of(birth_year, age, effort_year, effort)
    rate = min(specimens / exposure.sum(), 1.0 / exposure.max())
    collected = rng.random(len(birth_year)) < rate * exposure
    return Collection(birth_year=birth_year[collected], age=age[collected], effort_year=effort_year,
                      effort=effort, true_survival=survival)


def exposure_of(birth_year: np.ndarray, age: np.ndarray, effort_year: np.ndarray, effort: np.ndarray) -> np.ndarray:
    """Collection effort summed over years b .. b + a of each animal (0 outside the effort's years)."""
    order = np.argsort(effort_year)
    years, values = effort_year[order], effort[order]
    cumulative = np.concatenate([[0.0], np.cumsum(values)])

    def through(year):  # effort summed over every effort year <= year
        return cumulative[np.searchsorted(years, year, side="right")]

    return through(birth_year + age) - through(birth_year - 1)


def read_collection(specimens_path: str | Path, effort_path: str | Path) -> Collection:
    """Specimens (`birth_year, age`) and effort (`year, effort`), checked; a specimen whose life saw no collection
    effort (exposure 0: it could not have been collected) is refused by row."""
    effort_columns = read_columns(effort_path)
    effort_columns.require(("year", "effort"))
    effort_year = effort_columns.integers("year", what="a whole year")
    effort = effort_columns.numbers("effort")
    effort_columns.refuse("effort", ~np.isfinite(effort) | (effort < 0), "a number >= 0")
    order = np.argsort(effort_year, kind="stable")
    repeated = np.flatnonzero(effort_year[order][1:] == effort_year[order][:-1])
    if len(repeated):
        effort_columns.refuse("year", np.arange(len(effort_year)) == order[repeated[0] + 1], "a year not given "
                              "before")
    columns = read_columns(specimens_path)
    columns.require(("birth_year", "age"))
    birth_year = columns.integers("birth_year", what="a whole year")
    age = columns.integers("age", minimum=0, what="a whole number of years >= 0")
    exposure = exposure_of(birth_year, age, effort_year, effort)
    columns.refuse("birth_year", exposure <= 0, "a year whose animal lived through some collection effort (its "
                   "exposure is 0, so it could not have been collected)")
    return Collection(birth_year=birth_year, age=age, effort_year=effort_year, effort=effort)


def write_collection(specimens_path: str | Path, effort_path: str | Path, collection: Collection) -> None:
    write_columns(specimens_path, {"birth_year": collection.birth_year, "age": collection.age})
    write_columns(effort_path, {"year": collection.effort_year, "effort": collection.effort})


def _weighted_share(age: np.ndarray, weight: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """sum_i w_i [age_i >= a] / sum_i w_i at each a of `ages`."""
    totals = np.bincount(age, weights=weight, minlength=int(ages.max()) + 1)
    at_least = np.cumsum(totals[::-1])[::-1]
    return at_least[ages] / totals.sum()


def kaplan_meier(age: np.ndarray, entry: np.ndarray, weight: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """P(lifespan >= a) by lifelines' weighted Kaplan-Meier with left truncation at `entry`."""
    lifelines = require("lifelines")
    fitter = lifelines.KaplanMeierFitter()
    # Ages are whole years and a death at age a leaves the animal at risk at a: with entry e, the animal is at
    # risk at ages e .. a, so it enters just before e (lifelines counts entrants at t only when entry < t).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifelines warns that weights are not integers: they are not meant to be
        fitter.fit(age.astype(np.float64), event_observed=np.ones(len(age)), entry=entry - 0.5, weights=weight)
    # S(a) = P(L >= a) = P(L > a - 1): the fitted survival just before a.
    before = fitter.survival_function_at_times(ages.astype(np.float64) - 0.5).to_numpy()
    return np.asarray(before, dtype=np.float64)


def life_tables(collection: Collection, ages: np.ndarray | None = None) -> dict:
    """{"ages", "survival": {"naive", "weighted", "kaplan_meier"}, "exposure"} for the collection's specimens."""
    if len(collection.age) == 0:
        raise UnforcedError("no specimens")
    ages = np.arange(int(collection.age.max()) + 1) if ages is None else np.asarray(ages)
    exposure = exposure_of(collection.birth_year, collection.age, collection.effort_year, collection.effort)
    weight = 1.0 / exposure
    first_effort_year = int(collection.effort_year[collection.effort > 0].min())
    entry = np.maximum(0, first_effort_year - collection.birth_year)
    return {"ages": ages,
            "survival": {"naive": _weighted_share(collection.age, np.ones(len(collection.age)), ages),
                         "weighted": _weighted_share(collection.age, weight, ages),
                         "kaplan_meier": kaplan_meier(collection.age, entry, weight, ages)},
            "exposure": exposure}


def integrated_absolute_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """sum_a |S_hat(a) - S(a)| over whole ages: the area between the two step curves."""
    size = max(len(estimate), len(truth))
    return float(np.abs(np.pad(estimate, (0, size - len(estimate))) - np.pad(truth, (0, size - len(truth)))).sum())
