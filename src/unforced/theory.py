"""Closed forms and simulators of compounding error (exposure bias).

The absorbing-error chain: a model decoding its own prefix pays per-token NLL ``c`` while the prefix is still
correct and ``d`` once it holds an error (errors are absorbing); at each step an error first happens with
probability ``e``. The excess over teacher forcing (which always sees a correct prefix) is about
``(d - c) * e * T * (T - 1) / 2`` while ``T << 1/e``, the quadratic compounding of Ross & Bagnell (2010,
"Efficient Reductions for Imitation Learning"), and about ``(d - c) * (T - 1/e)``, linear, once ``T >> 1/e``:
a prefix can be spoiled only once.

The drift model: a hidden-state divergence obeying ``D_t = alpha * D_{t-1} + eps`` settles at
``eps / (1 - alpha)`` when ``alpha < 1`` and grows geometrically when ``alpha > 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from unforced.config import finite_number, integer_at_least
from unforced.errors import UnforcedError

__all__ = [
    "CompoundingFit",
    "DivergenceFit",
    "SimulationResult",
    "compounding_gap",
    "drift_steady_state",
    "fit_compounding",
    "fit_linear_divergence",
    "per_position_excess",
    "simulate_compounding",
]


@dataclass(frozen=True)
class SimulationResult:
    """Monte Carlo estimate of the total excess NLL of free running over teacher forcing."""

    mean_excess_nll: float
    standard_error: float


@dataclass(frozen=True)
class CompoundingFit:
    """The absorbing-error chain fitted to measured per-position NLL curves.

    ``predicted_curve[t-1] = c + (d - c) * (1 - (1 - e)^(t-1))``; ``predicted_excess`` is its total excess
    over ``c``, ``measured_excess = sum_t (fr(t) - c)`` over the positions measured.
    """

    c: float
    d: float
    e: float
    predicted_excess: float
    measured_excess: float
    predicted_curve: np.ndarray


@dataclass(frozen=True)
class DivergenceFit:
    """Least-squares fit of ``D_t = a * D_{t-1} + b``.

    ``plateau_predicted = b / (1 - a)`` when ``a < 1``, else None;
    ``growth_rate = a`` when ``a > 1``, else None.
    """

    a: float
    b: float
    plateau_predicted: float | None
    growth_rate: float | None



def _probability(name: str, value: Any) -> float:
    p = finite_number(name, value)
    if not 0.0 <= p <= 1.0:
        raise UnforcedError(f"{name} must be a probability in [0, 1], got {value!r}")
    return p



def _error_by(e: float, k: np.ndarray | int) -> np.ndarray:
    """``1 - (1 - e)^k``: probability of an error within ``k`` steps (expm1 keeps small ``e`` exact)."""
    k = np.asarray(k, dtype=float)
    if e >= 1.0:
        return (k > 0).astype(float)
    return -np.expm1(k * np.log1p(-e))


def compounding_gap(c: float, d: float, e: float, T: int) -> float:
    """Expected total excess NLL of free running over teacher forcing in the absorbing-error chain.

    ``(d - c) * sum_{t=1..T} [1 - (1 - e)^(t-1)] = (d - c) * (T - (1 - (1 - e)^T) / e)`` for ``e > 0``,
    and 0 for ``e = 0``. ``c``: per-token NLL on a correct prefix; ``d``: per-token NLL once the prefix holds
    an error; ``e``: per-step probability of the first error; ``T``: sequence length.
    """
    c, d, e, T = finite_number("c", c), finite_number("d", d), _probability("e", e), integer_at_least("T", T, 0)
    if e == 0.0 or T == 0:
        return 0.0
    return (d - c) * (T - float(_error_by(e, T)) / e)


def per_position_excess(c: float, d: float, e: float, T: int) -> np.ndarray:
    """Expected excess NLL per position: ``(d - c) * (1 - (1 - e)^(t-1))`` for ``t = 1..T``; shape (T,)."""
    c, d, e, T = finite_number("c", c), finite_number("d", d), _probability("e", e), integer_at_least("T", T, 0)
    return (d - c) * _error_by(e, np.arange(T))


def simulate_compounding(c: float, d: float, e: float, T: int, n: int, seed: int) -> SimulationResult:
    """Monte Carlo of the absorbing-error chain over ``n`` sequences of length ``T``.

    The first error step ``F ~ Geometric(e)`` on ``{1, 2, ...}``; step ``t`` costs ``d`` when ``F < t`` and
    ``c`` otherwise, so a sequence's excess NLL is ``(d - c) * max(0, T - F)``.
    """
    c, d, e, T = finite_number("c", c), finite_number("d", d), _probability("e", e), integer_at_least("T", T, 0)
    n = integer_at_least("n", n, minimum=2)
    if e == 0.0:
        return SimulationResult(0.0, 0.0)
    first_error = np.random.default_rng(seed).geometric(e, size=n)  # (n,)
    excess = (d - c) * np.maximum(0, T - first_error)
    return SimulationResult(float(excess.mean()), float(excess.std(ddof=1) / math.sqrt(n)))


def _curve(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise UnforcedError(f"{name} must be a non-empty 1-D per-position curve, got shape {array.shape}")
    return array


def fit_compounding(tf_nll_per_position: Any, fr_nll_per_position: Any) -> CompoundingFit:
    """Fit ``(c, d, e)`` of the absorbing-error chain to measured per-position NLL curves.

    ``c`` = mean teacher-forced NLL. ``d`` and ``e`` by least squares of
    ``fr(t) ~ c + g * (1 - (1 - e)^(t-1))`` with ``g = d - c >= 0``: a log grid over ``e`` in ``(0, 1]``,
    refined around the best point, with the closed-form ``g = <s, y> / <s, s>`` at each ``e`` (``s`` the
    error curve, ``y = fr - c``). Positions whose free-running NLL is not finite (no sequence reached them)
    are left out.
    """
    teacher_forced = _curve("tf_nll_per_position", tf_nll_per_position)
    free_running = _curve("fr_nll_per_position", fr_nll_per_position)
    if not np.isfinite(teacher_forced).any():
        raise UnforcedError("tf_nll_per_position holds no finite value")
    measured = np.isfinite(free_running)
    if measured.sum() < 2:
        raise UnforcedError("fr_nll_per_position needs at least two finite positions to fit")
    c = float(np.nanmean(np.where(np.isfinite(teacher_forced), teacher_forced, np.nan)))
    positions = np.arange(free_running.size)[measured]  # t - 1 for each measured t
    excess = free_running[measured] - c

    def best(grid: np.ndarray) -> tuple[float, float, float]:
        shapes = -np.expm1(positions[None, :] * np.log1p(-np.minimum(grid, 1 - 1e-15))[:, None])  # (grid, T)
        shapes[grid >= 1.0] = (positions > 0).astype(float)
        norms = (shapes**2).sum(axis=1)
        gains = np.where(norms > 0, shapes @ excess / np.where(norms > 0, norms, 1.0), 0.0).clip(min=0.0)
        residuals = ((excess[None, :] - gains[:, None] * shapes) ** 2).sum(axis=1)
        i = int(np.argmin(residuals))
        return float(grid[i]), float(gains[i]), float(residuals[i])

    coarse = np.logspace(-6, 0, 601)
    e, gain, _ = best(coarse)
    i = int(np.searchsorted(coarse, e))
    e, gain, _ = best(np.linspace(coarse[max(i - 1, 0)], coarse[min(i + 1, coarse.size - 1)], 401))
    curve = c + gain * _error_by(e, np.arange(free_running.size))
    return CompoundingFit(
        c=c,
        d=c + gain,
        e=e,
        predicted_excess=float((curve[measured] - c).sum()),
        measured_excess=float(excess.sum()),
        predicted_curve=curve,
    )


def drift_steady_state(eps: float, alpha: float) -> float:
    """Fixed point of the drift ``D_t = alpha * D_{t-1} + eps``: ``eps / (1 - alpha)`` for ``0 <= alpha < 1``.

    For ``alpha >= 1`` there is none: the drift grows without bound (geometrically, at rate ``alpha``, when
    ``alpha > 1``), and an UnforcedError says so.
    """
    eps, alpha = finite_number("eps", eps), finite_number("alpha", alpha)
    if alpha < 0.0:
        raise UnforcedError(f"alpha must be >= 0 (a contraction factor of the drift), got {alpha!r}")
    if alpha >= 1.0:
        raise UnforcedError(
            f"alpha = {alpha!r} >= 1: the drift grows without bound "
            f"(geometric growth rate alpha = {alpha!r}); there is no steady state"
        )
    return eps / (1.0 - alpha)


def fit_linear_divergence(D: Any) -> DivergenceFit:
    """Least-squares fit of ``D_t = a * D_{t-1} + b`` to a per-position divergence curve.

    ``D`` is one curve (shape (T,)) or several (shape (sequences, T)); every consecutive pair
    ``(D_{t-1}, D_t)`` within a row is one observation, and pairs with a non-finite value are left out.
    ``a = cov(x, y) / var(x)``, ``b = mean(y) - a * mean(x)``. When ``a < 1`` the fit predicts the plateau
    ``b / (1 - a)``; when ``a > 1`` it reports the geometric growth rate ``a``.
    """
    curves = np.asarray(D, dtype=float)
    if curves.ndim == 1:
        curves = curves[None, :]
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise UnforcedError(
            f"D must be a curve (T,) or curves (sequences, T) with T >= 2, got shape {np.shape(D)}"
        )
    previous, following = curves[:, :-1].ravel(), curves[:, 1:].ravel()
    keep = np.isfinite(previous) & np.isfinite(following)
    previous, following = previous[keep], following[keep]
    if previous.size < 2 or np.ptp(previous) == 0.0:
        raise UnforcedError("D needs at least two consecutive pairs with differing D_{t-1} to fit a and b")
    x_centred = previous - previous.mean()
    a = float(x_centred @ (following - following.mean()) / (x_centred @ x_centred))
    b = float(following.mean() - a * previous.mean())
    return DivergenceFit(
        a=a,
        b=b,
        plateau_predicted=b / (1.0 - a) if a < 1.0 else None,
        growth_rate=a if a > 1.0 else None,
    )
