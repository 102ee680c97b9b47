import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unforced.errors import UnforcedError
from unforced.theory import (
    compounding_gap,
    drift_steady_state,
    fit_compounding,
    fit_linear_divergence,
    per_position_excess,
    simulate_compounding,
)


def explicit_sum(c, d, e, T):
    return (d - c) * sum(1.0 - (1.0 - e) ** (t - 1) for t in range(1, T + 1))


@settings(max_examples=200, deadline=None)
@given(
    c=st.floats(0.0, 5.0),
    d=st.floats(0.0, 10.0),
    e=st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-9, 1.0)),
    T=st.integers(0, 300),
)
def test_closed_form_equals_explicit_sum(c, d, e, T):
    expected = explicit_sum(c, d, e, T)
    assert compounding_gap(c, d, e, T) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert per_position_excess(c, d, e, T).sum() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_per_position_excess_values():
    curve = per_position_excess(1.0, 3.0, 0.5, 4)
    np.testing.assert_allclose(curve, [0.0, 1.0, 1.5, 1.75])
    assert per_position_excess(1.0, 3.0, 0.5, 0).shape == (0,)


def test_known_values_and_regimes():
    assert compounding_gap(1.0, 2.0, 1.0, 10) == pytest.approx(9.0)
    assert compounding_gap(1.0, 2.0, 0.0, 10) == 0.0
    # small e*T: quadratic, (d - c) e T (T - 1) / 2
    assert compounding_gap(0.0, 1.0, 1e-6, 100) == pytest.approx(1e-6 * 100 * 99 / 2, rel=1e-3)
    # large e*T: linear, (d - c) (T - 1/e)
    assert compounding_gap(0.0, 1.0, 0.1, 10_000) == pytest.approx(10_000 - 10, rel=1e-9)


@pytest.mark.parametrize(
    ("c", "d", "e", "T"),
    [
        (0.5, 2.0, 0.05, 40),
        (1.0, 1.5, 0.2, 10),
        (0.1, 4.0, 0.01, 200),
        (2.0, 1.0, 0.3, 25),
        (0.0, 1.0, 1.0, 7),
    ],
)
def test_closed_form_matches_monte_carlo(c, d, e, T):
    result = simulate_compounding(c, d, e, T, n=20_000, seed=0)
    expected = compounding_gap(c, d, e, T)
    assert abs(result.mean_excess_nll - expected) <= 3 * result.standard_error + 1e-12
    assert result.standard_error < 0.05 * abs(expected) + 1e-12  # the check above is not vacuous


def test_simulation_is_seeded():
    assert simulate_compounding(0.0, 1.0, 0.1, 30, 100, seed=3) == simulate_compounding(
        0.0, 1.0, 0.1, 30, 100, seed=3
    )
    assert simulate_compounding(0.0, 1.0, 0.0, 30, 100, seed=3).mean_excess_nll == 0.0


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: compounding_gap(0.0, 1.0, 1.5, 10), "e"),
        (lambda: compounding_gap(0.0, 1.0, -0.1, 10), "e"),
        (lambda: compounding_gap(0.0, 1.0, 0.1, -1), "T"),
        (lambda: compounding_gap(0.0, 1.0, 0.1, 2.5), "T"),
        (lambda: per_position_excess(0.0, 1.0, 2.0, 10), "e"),
        (lambda: simulate_compounding(0.0, 1.0, 0.1, 10, n=1, seed=0), "n"),
        (lambda: fit_linear_divergence(np.ones(5)), "D"),
        (lambda: fit_compounding([1.0], [np.nan, np.nan]), "fr_nll_per_position"),
    ],
)
def test_bad_inputs_raise_naming_the_parameter(call, parameter):
    with pytest.raises(UnforcedError, match=parameter):
        call()


def test_drift_steady_state():
    assert drift_steady_state(0.2, 0.0) == pytest.approx(0.2)
    assert drift_steady_state(0.2, 0.6) == pytest.approx(0.5)
    with pytest.raises(UnforcedError, match="without bound.*1.2"):
        drift_steady_state(0.2, 1.2)
    with pytest.raises(UnforcedError, match="without bound"):
        drift_steady_state(0.2, 1.0)
    with pytest.raises(UnforcedError, match="alpha"):
        drift_steady_state(0.2, -0.5)


def simulate_drift(a, b, starts, T, noise, seed):
    rng = np.random.default_rng(seed)
    D = np.empty((len(starts), T))  # (sequences, time)
    D[:, 0] = starts
    for t in range(1, T):
        D[:, t] = a * D[:, t - 1] + b + noise * rng.standard_normal(len(starts))
    return D


@pytest.mark.parametrize(("a", "b"), [(0.7, 0.3), (0.95, 0.05), (1.15, 0.2), (1.05, 0.5)])
def test_fit_linear_divergence_recovers_a_and_b(a, b):
    D = simulate_drift(a, b, starts=np.linspace(0.0, 2.0, 16), T=20, noise=0.005, seed=1)
    fit = fit_linear_divergence(D)
    assert fit.a == pytest.approx(a, rel=0.05)
    assert fit.b == pytest.approx(b, rel=0.05)
    if a < 1:
        assert fit.plateau_predicted == pytest.approx(b / (1 - a), rel=0.1)
        assert fit.growth_rate is None
    else:
        assert fit.growth_rate == pytest.approx(a, rel=0.05)
        assert fit.plateau_predicted is None


def test_fit_linear_divergence_one_curve_exact():
    D = simulate_drift(0.5, 1.0, starts=[0.0], T=12, noise=0.0, seed=0)[0]
    fit = fit_linear_divergence(D)
    assert (fit.a, fit.b) == (pytest.approx(0.5), pytest.approx(1.0))
    assert fit.plateau_predicted == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("c", "d", "e", "T"), [(1.0, 3.0, 0.1, 50), (0.4, 2.5, 0.03, 120), (2.0, 2.6, 0.3, 30)]
)
def test_fit_compounding_recovers_parameters(c, d, e, T):
    teacher_forced = np.full(T, c)
    free_running = c + per_position_excess(c, d, e, T)
    fit = fit_compounding(teacher_forced, free_running)
    assert fit.c == pytest.approx(c, rel=0.05)
    assert fit.d == pytest.approx(d, rel=0.05)
    assert fit.e == pytest.approx(e, rel=0.05)
    assert fit.measured_excess == pytest.approx(compounding_gap(c, d, e, T), rel=1e-9)
    assert fit.predicted_excess == pytest.approx(fit.measured_excess, rel=0.05)
    np.testing.assert_allclose(fit.predicted_curve, free_running, rtol=0.02)


def test_fit_compounding_with_noise_and_unreached_positions():
    rng = np.random.default_rng(0)
    c, d, e, T = 1.0, 3.0, 0.08, 60
    teacher_forced = c + 0.02 * rng.standard_normal(T)
    free_running = c + per_position_excess(c, d, e, T) + 0.02 * rng.standard_normal(T)
    free_running[-5:] = np.nan  # no sequence was that long
    fit = fit_compounding(teacher_forced, free_running)
    assert fit.d == pytest.approx(d, rel=0.05)
    assert fit.e == pytest.approx(e, rel=0.1)
    assert fit.predicted_curve.shape == (T,)
    assert np.isfinite(fit.predicted_excess)
