"""What the linear system and CartPole share: the LQR gain, the fitted growth rate of a deviation, the log-log
slope of the excess cost against the horizon, and the summary of per-seed curves."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from unforced.errors import UnforcedError

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """The default progress callback: says nothing (the CLI passes one that writes to stderr)."""


def lqr_gain(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, iterations: int = 100_000,
             tolerance: float = 1e-12) -> np.ndarray:
    """The infinite-horizon discrete LQR gain K (u = -K x) minimising sum x'Qx + u'Ru under x' = Ax + Bu.

    Iterates the discrete algebraic Riccati equation P = Q + A'PA - A'PB (R + B'PB)^-1 B'PA from P = Q until it
    stops moving; K = (R + B'PB)^-1 B'PA.
    """
    P = Q.astype(float).copy()
    for _ in range(iterations):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        updated = Q + A.T @ P @ (A - B @ K)
        if np.max(np.abs(updated - P)) <= tolerance * max(1.0, np.max(np.abs(P))):
            return np.linalg.solve(R + B.T @ updated @ B, B.T @ updated @ A)
        P = updated
    raise UnforcedError("the Riccati iteration did not converge: the system is not stabilisable")


def growth_rate(deviation: np.ndarray) -> float:
    """The fitted per-step factor of a deviation curve: exp(slope) of log deviation against time, fitted by least
    squares over the second half of the horizon (after the transient from a zero deviation at t = 0).

    Above 1 = geometric growth; about 1 = bounded. Steps where the deviation is exactly 0 are left out; with
    fewer than two left the deviation did not grow, and the rate is 1.
    """
    deviation = np.asarray(deviation, dtype=float)
    steps = np.arange(len(deviation))
    keep = (steps >= len(deviation) // 2) & (deviation > 0) & np.isfinite(deviation)
    if keep.sum() < 2:
        return 1.0
    slope = np.polyfit(steps[keep], np.log(deviation[keep]), 1)[0]
    return float(np.exp(slope))


def excess_cost_slope(excess_by_horizon: np.ndarray, horizons: np.ndarray) -> float | None:
    """The log-log slope of the excess cost (learner's minus expert's) against the horizon T, fitted over the
    horizons where it is positive. Ross and Bagnell's bounds: about 2 for behaviour cloning (eps T^2), about 1
    for DAgger (eps T), for per-step costs in [0, 1]. None when fewer than two horizons have a positive excess."""
    keep = (np.asarray(excess_by_horizon) > 0) & np.isfinite(excess_by_horizon)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(horizons[keep]), np.log(np.asarray(excess_by_horizon)[keep]), 1)[0])


def horizons_for(horizon: int, count: int = 12) -> np.ndarray:
    """Horizons T spread evenly on a log axis from about horizon/10 to horizon (integers, no repeats)."""
    return np.unique(np.geomspace(max(1, horizon // 10), horizon, count).round().astype(int))


def curve_summary(per_seed: np.ndarray) -> dict:
    """Mean, standard deviation, min and max over seeds (axis 0) of a per-step curve, as lists."""
    per_seed = np.asarray(per_seed, dtype=float)
    return {"mean": per_seed.mean(0).tolist(), "std": per_seed.std(0).tolist(),
            "min": per_seed.min(0).tolist(), "max": per_seed.max(0).tolist()}


def learner_summary(deviation: np.ndarray, cost: np.ndarray, expert_cost: np.ndarray, labels: list[int],
                    horizons: np.ndarray) -> dict:
    """The contract's keys of one learner (deviation, growth_rate, cost, expert_labels) and the extras.

    `deviation` (seeds, horizon + 1) deviations from the expert's trajectory; `cost` and `expert_cost`
    (seeds, horizon) per-step costs of the learner and of the expert on the same episodes.
    """
    deviation_mean = deviation.mean(0)
    excess = np.cumsum(cost.mean(0) - expert_cost.mean(0))  # excess cost of the first T steps, T = 1..horizon
    excess_by_horizon = excess[horizons - 1]
    return {"deviation": deviation_mean.tolist(), "growth_rate": growth_rate(deviation_mean),
            "cost": float(cost.sum(1).mean()), "expert_labels": int(round(float(np.mean(labels)))),
            "deviation_spread": {key: value for key, value in curve_summary(deviation).items() if key != "mean"},
            "growth_rate_by_seed": [growth_rate(row) for row in deviation],
            "cost_by_seed": cost.sum(1).tolist(), "expert_labels_by_seed": [int(n) for n in labels],
            "excess_cost": {"horizons": horizons.tolist(), "values": excess_by_horizon.tolist(),
                            "slope": excess_cost_slope(excess_by_horizon, horizons)}}


__all__ = ["Progress", "curve_summary", "excess_cost_slope", "growth_rate", "horizons_for", "learner_summary",
           "lqr_gain", "quiet"]
