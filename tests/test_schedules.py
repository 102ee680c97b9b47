import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unforced.errors import UnforcedError
from unforced.schedules import (
    SCHEDULES,
    Adaptive,
    Constant,
    Curriculum,
    Exponential,
    InverseSigmoid,
    Linear,
    Piecewise,
    Schedule,
    make_schedule,
    plot_schedules,
)

ratios = st.floats(0.0, 1.0)
steps = st.integers(0, 100_000)


def test_constant_value():
    assert Constant(0.3)(0) == 0.3
    assert Constant(0.3)(12345) == 0.3
    assert Constant(0.3, min_ratio=0.5)(7) == 0.5


def test_linear_values_follow_formula():
    schedule = Linear(start=0.9, end=0.1, steps=100)
    assert schedule(0) == pytest.approx(0.9)
    assert schedule(25) == pytest.approx(0.9 - 0.8 * 0.25)
    assert schedule(100) == pytest.approx(0.1)
    assert schedule(10_000) == pytest.approx(0.1)  # held after `steps`
    assert Linear(start=0.2, end=0.8, steps=10)(5) == pytest.approx(0.5)  # rising works too


def test_exponential_values_follow_formula():
    schedule = Exponential(0.99)
    assert schedule(0) == 1.0
    assert schedule(1) == pytest.approx(0.99)
    assert schedule(50) == pytest.approx(0.99**50)
    assert Exponential(1.0)(1000) == 1.0


def test_inverse_sigmoid_values_follow_formula():
    schedule = InverseSigmoid(10.0)
    for step in (0, 5, 37, 100):
        assert schedule(step) == pytest.approx(10.0 / (10.0 + math.exp(step / 10.0)))
    assert schedule(10**9) == 0.0  # no overflow far out


def test_piecewise_step_function_by_epoch():
    schedule = Piecewise({0: 1.0, 2: 0.5, 5: 0.25}, steps_per_epoch=10)
    expected = {0: 1.0, 19: 1.0, 20: 0.5, 49: 0.5, 50: 0.25, 10_000: 0.25}
    assert {step: schedule(step) for step in expected} == expected
    as_pairs = Piecewise([(5, 0.25), (0, 1.0), (2, 0.5)], steps_per_epoch=10)
    assert [as_pairs(s) for s in expected] == list(expected.values())
    assert hash(as_pairs) == hash(schedule)  # normalised to a sorted tuple


def test_min_ratio_floors_every_schedule():
    floor = 0.2
    far = 10**6
    assert Linear(steps=10, min_ratio=floor)(far) == floor
    assert Exponential(0.5, min_ratio=floor)(far) == floor
    assert InverseSigmoid(2.0, min_ratio=floor)(far) == floor
    assert Piecewise({0: 1.0, 1: 0.0}, min_ratio=floor)(far) == floor
    assert Linear(steps=10, min_ratio=floor)(0) == 1.0  # the floor never raises a value above it


decaying = st.one_of(
    st.builds(
        lambda start, end, n, floor: Linear(
            start=max(start, end), end=min(start, end), steps=n, min_ratio=floor
        ),
        ratios,
        ratios,
        st.integers(1, 10_000),
        ratios,
    ),
    st.builds(lambda decay, floor: Exponential(decay, min_ratio=floor), st.floats(1e-3, 1.0), ratios),
    st.builds(lambda k, floor: InverseSigmoid(k, min_ratio=floor), st.floats(1.0, 1e4), ratios),
)


@settings(max_examples=60, deadline=None)
@given(schedule=decaying, a=steps, b=steps)
def test_decaying_schedules_are_monotone_and_in_range(schedule, a, b):
    early, late = sorted((a, b))
    assert 0.0 <= schedule(late) <= schedule(early) <= 1.0
    assert schedule(late) >= schedule.min_ratio


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: Constant(1.5), "ratio"),
        (lambda: Constant(-0.1), "ratio"),
        (lambda: Constant(0.5, min_ratio=2.0), "min_ratio"),
        (lambda: Linear(start=1.2, steps=10), "start"),
        (lambda: Linear(end=-0.5, steps=10), "end"),
        (lambda: Linear(steps=0), "steps"),
        (lambda: Exponential(-0.5), "decay"),
        (lambda: Exponential(1.5), "decay"),
        (lambda: Exponential(0.0), "decay"),
        (lambda: InverseSigmoid(0.5), "k"),
        (lambda: Piecewise({0: 1.0, 3: 1.7}), "boundaries[3]"),
        (lambda: Piecewise({2: 0.5}), "epoch 0"),
        (lambda: Piecewise({0: 1.0}, steps_per_epoch=0), "steps_per_epoch"),
        (lambda: Adaptive(threshold=1.0, patience=0), "patience"),
        (lambda: Adaptive(threshold=1.0, initial=3.0), "initial"),
        (lambda: Adaptive(threshold=1.0, factor=1.5), "factor"),
        (lambda: Curriculum(Constant(1.0), 0, 10, steps=5), "max_length_start"),
        (lambda: Curriculum(Constant(1.0), 5, 10, steps=-1), "steps"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(build, parameter):
    with pytest.raises(UnforcedError, match=parameter.replace("[", r"\[")):
        build()


def test_negative_step_raises():
    with pytest.raises(UnforcedError, match="step"):
        Linear(steps=10)(-1)


def test_adaptive_lowers_after_patience_and_not_before():
    schedule = Adaptive(initial=1.0, factor=0.5, threshold=2.0, patience=3, tighten=0.9)
    assert schedule.observe(1.0) == 1.0
    assert schedule.observe(1.0) == 1.0
    assert schedule.observe(3.0) == 1.0  # at or above the threshold: the streak restarts
    assert schedule.observe(1.9) == 1.0
    assert schedule.observe(1.9) == 1.0
    assert schedule(0) == 1.0
    assert schedule.observe(1.9) == 0.5  # third in a row below 2.0
    assert schedule(500) == 0.5
    assert schedule.current_threshold == pytest.approx(1.8)
    for _ in range(2):
        schedule.observe(1.85)  # below the old threshold, above the tightened one
    assert schedule(0) == 0.5


def test_adaptive_respects_min_ratio():
    schedule = Adaptive(factor=0.1, threshold=1.0, patience=1, min_ratio=0.3)
    schedule.observe(0.0)
    assert schedule(0) == 0.3


def test_adaptive_state_dict_round_trip_continues_identically():
    losses = [0.5, 0.4, 0.9, 0.3, 0.2, 0.1, 0.05, 0.6, 0.01, 0.01, 0.01, 0.0]
    reference = Adaptive(factor=0.8, threshold=0.7, patience=2, tighten=0.5)
    original = Adaptive(factor=0.8, threshold=0.7, patience=2, tighten=0.5)
    for loss in losses[:5]:
        reference.observe(loss)
        original.observe(loss)
    resumed = Adaptive(factor=0.8, threshold=0.7, patience=2, tighten=0.5)
    resumed.load_state_dict(original.state_dict())
    assert resumed.state_dict() == reference.state_dict()
    for loss in losses[5:]:
        assert resumed.observe(loss) == reference.observe(loss)
    assert resumed.state_dict() == reference.state_dict()
    assert reference(0) < 0.8  # the trace did lower the ratio more than once
    with pytest.raises(UnforcedError, match="missing"):
        resumed.load_state_dict({"ratio": 0.5})


def test_curriculum_delegates_and_rises():
    inner = Linear(steps=100)
    curriculum = Curriculum(inner, max_length_start=5, max_length_end=25, steps=200, difficulty_end=0.8)
    assert isinstance(curriculum, Schedule)
    assert curriculum.ratio(50) == inner(50) == curriculum(50)
    assert [curriculum.max_length(s) for s in (0, 50, 100, 200, 1000)] == [5, 10, 15, 25, 25]
    assert isinstance(curriculum.max_length(33), int)
    assert curriculum.max_length(33) == round(5 + 20 * 33 / 200)
    assert curriculum.difficulty(0) == 0.0
    assert curriculum.difficulty(100) == pytest.approx(0.4)
    assert curriculum.difficulty(999) == pytest.approx(0.8)


def test_make_schedule_and_registry():
    assert set(SCHEDULES) == {"constant", "linear", "exponential", "inverse_sigmoid", "piecewise", "adaptive"}
    assert make_schedule("linear", steps=10) == Linear(steps=10)
    assert make_schedule("inverse_sigmoid", k=5.0)(3) == InverseSigmoid(5.0)(3)
    assert make_schedule("adaptive", threshold=1.0)(0) == 1.0
    with pytest.raises(UnforcedError, match="known schedules: adaptive, constant"):
        make_schedule("cosine")
    with pytest.raises(UnforcedError, match="wrong_name"):
        make_schedule("constant", ratio=0.5, wrong_name=1)


def test_plot_schedules_writes_png(tmp_path):
    path = plot_schedules(
        {
            "linear": Linear(steps=50),
            "exponential": Exponential(0.95),
            "piecewise": Piecewise({0: 1.0, 1: 0.4}, 30),
        },
        steps=100,
        path=tmp_path / "figures" / "schedules.png",
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
