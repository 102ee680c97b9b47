"""Teacher-forcing-ratio schedules.

A schedule maps a training step (or epoch) to the **teacher-forcing ratio**: the probability of feeding the
gold token. Some sources (Bengio et al. 2015, "Scheduled Sampling for Sequence Prediction with Recurrent
Neural Networks") schedule the probability of feeding the model's own token instead; here every schedule
returns the gold probability, P(gold), and every value is floored at ``min_ratio``: ``max(min_ratio, value)``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from unforced.config import finite_number, integer_at_least
from unforced.errors import UnforcedError

__all__ = [
    "SCHEDULES",
    "Adaptive",
    "Constant",
    "Curriculum",
    "Exponential",
    "InverseSigmoid",
    "Linear",
    "Piecewise",
    "Schedule",
    "make_schedule",
    "plot_schedules",
]


@runtime_checkable
class Schedule(Protocol):
    """Step -> teacher-forcing ratio, P(gold): the probability of feeding the gold token, in [0, 1]."""

    def __call__(self, step: int) -> float: ...



def _ratio(name: str, value: Any) -> float:
    ratio = finite_number(name, value)
    if not 0.0 <= ratio <= 1.0:
        raise UnforcedError(f"{name} must be a teacher-forcing ratio (P(gold)) in [0, 1], got {value!r}")
    return ratio



def _step(step: Any) -> float:
    step = finite_number("step", step)
    if step < 0:
        raise UnforcedError(f"step must be >= 0, got {step!r}")
    return step


def _floor(value: float, min_ratio: float) -> float:
    return max(min_ratio, min(1.0, value))


@dataclass(frozen=True)
class Constant:
    """Teacher-forcing ratio (P(gold)) held fixed: ``max(min_ratio, ratio)`` at every step."""

    ratio: float
    min_ratio: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        _ratio("ratio", self.ratio)
        _ratio("min_ratio", self.min_ratio)

    def __call__(self, step: int) -> float:
        _step(step)
        return _floor(self.ratio, self.min_ratio)


@dataclass(frozen=True, kw_only=True)
class Linear:
    """Teacher-forcing ratio (P(gold)) moving linearly, then held (Bengio et al. 2015's linear decay).

    ``ratio(step) = max(min_ratio, start + (end - start) * min(step / steps, 1))``.
    """

    start: float = 1.0
    end: float = 0.0
    steps: int
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        _ratio("start", self.start)
        _ratio("end", self.end)
        integer_at_least("steps", self.steps, 1)
        _ratio("min_ratio", self.min_ratio)

    def __call__(self, step: int) -> float:
        progress = min(_step(step) / self.steps, 1.0)
        return _floor(self.start + (self.end - self.start) * progress, self.min_ratio)


@dataclass(frozen=True)
class Exponential:
    """Teacher-forcing ratio (P(gold)) decaying geometrically (Bengio et al. 2015: eps_i = k^i, k < 1).

    ``ratio(step) = max(min_ratio, decay ** step)`` with ``0 < decay <= 1``.
    """

    decay: float
    min_ratio: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        if not 0.0 < finite_number("decay", self.decay) <= 1.0:
            raise UnforcedError(f"decay must be in (0, 1], got {self.decay!r}")
        _ratio("min_ratio", self.min_ratio)

    def __call__(self, step: int) -> float:
        return _floor(self.decay ** _step(step), self.min_ratio)


@dataclass(frozen=True)
class InverseSigmoid:
    """Teacher-forcing ratio (P(gold)) on an inverse sigmoid (Bengio et al. 2015).

    ``ratio(step) = max(min_ratio, k / (k + exp(step / k)))`` with ``k >= 1``; larger k decays later.
    """

    k: float
    min_ratio: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        if finite_number("k", self.k) < 1.0:
            raise UnforcedError(f"k must be >= 1, got {self.k!r}")
        _ratio("min_ratio", self.min_ratio)

    def __call__(self, step: int) -> float:
        # k / (k + e^x) = 1 / (1 + e^(x - log k)), written so that large steps do not overflow exp.
        exponent = _step(step) / self.k - math.log(self.k)
        value = 0.0 if exponent > 700.0 else 1.0 / (1.0 + math.exp(exponent))
        return _floor(value, self.min_ratio)


@dataclass(frozen=True)
class Piecewise:
    """Teacher-forcing ratio (P(gold)) as a step function of the epoch.

    ``epoch = step // steps_per_epoch``; ``ratio(step) = max(min_ratio, r_j)`` where ``(e_j, r_j)`` is the
    last boundary with ``e_j <= epoch``. ``boundaries`` is a mapping or a sequence of ``(epoch, ratio)`` pairs
    and must include epoch 0, so that the ratio is defined from the first step.
    """

    boundaries: Mapping[int, float] | Sequence[tuple[int, float]]
    steps_per_epoch: int = 1
    min_ratio: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        pairs = self.boundaries.items() if isinstance(self.boundaries, Mapping) else self.boundaries
        try:
            pairs = [(epoch, ratio) for epoch, ratio in pairs]
        except (TypeError, ValueError) as error:
            raise UnforcedError(
                f"boundaries must be (epoch, ratio) pairs, got {self.boundaries!r}"
            ) from error
        cleaned = sorted(
            (integer_at_least("boundaries epoch", e, 0), _ratio(f"boundaries[{e!r}]", r)) for e, r in pairs
        )
        epochs = [epoch for epoch, _ in cleaned]
        if not epochs or epochs[0] != 0:
            raise UnforcedError(f"boundaries must include epoch 0, got epochs {epochs}")
        if len(set(epochs)) != len(epochs):
            raise UnforcedError(f"boundaries name an epoch twice: {epochs}")
        object.__setattr__(self, "boundaries", tuple(cleaned))
        integer_at_least("steps_per_epoch", self.steps_per_epoch, 1)
        _ratio("min_ratio", self.min_ratio)

    def __call__(self, step: int) -> float:
        epoch = int(_step(step) // self.steps_per_epoch)
        index = bisect.bisect_right([e for e, _ in self.boundaries], epoch) - 1
        return _floor(self.boundaries[index][1], self.min_ratio)


@dataclass(kw_only=True, eq=False)
class Adaptive:
    """Teacher-forcing ratio (P(gold)) lowered when validation holds below a threshold.

    Call ``observe(validation_loss)`` after each evaluation. When the loss is below ``threshold`` for
    ``patience`` consecutive evaluations: ``ratio <- max(min_ratio, ratio * factor)``,
    ``threshold <- threshold * tighten``, and the count restarts. ``__call__(step)`` returns the current ratio
    whatever the step. Stateful: save ``state_dict()`` with a checkpoint and ``load_state_dict`` on resume.
    """

    initial: float = 1.0
    factor: float = 0.9
    threshold: float
    patience: int = 3
    tighten: float = 0.95
    min_ratio: float = 0.0
    _current_ratio: float = field(init=False, repr=False)
    _current_threshold: float = field(init=False, repr=False)
    _evaluations_below: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        _ratio("initial", self.initial)
        if not 0.0 < finite_number("factor", self.factor) <= 1.0:
            raise UnforcedError(f"factor must be in (0, 1], got {self.factor!r}")
        finite_number("threshold", self.threshold)
        integer_at_least("patience", self.patience, 1)
        if not 0.0 < finite_number("tighten", self.tighten) <= 1.0:
            raise UnforcedError(f"tighten must be in (0, 1], got {self.tighten!r}")
        _ratio("min_ratio", self.min_ratio)
        self._current_ratio = _floor(float(self.initial), self.min_ratio)
        self._current_threshold = float(self.threshold)

    @property
    def current_threshold(self) -> float:
        """The threshold now, after every tightening so far."""
        return self._current_threshold

    def observe(self, validation_loss: float) -> float:
        """Record one evaluation's loss; returns the teacher-forcing ratio (P(gold)) from now on."""
        self._evaluations_below = (
            self._evaluations_below + 1 if validation_loss < self._current_threshold else 0
        )
        if self._evaluations_below >= self.patience:
            self._current_ratio = _floor(self._current_ratio * self.factor, self.min_ratio)
            self._current_threshold *= self.tighten
            self._evaluations_below = 0
        return self._current_ratio

    def __call__(self, step: int) -> float:
        _step(step)
        return self._current_ratio

    def state_dict(self) -> dict[str, float | int]:
        """The evolving state (ratio, tightened threshold, evaluations below it in a row)."""
        return {
            "ratio": self._current_ratio,
            "threshold": self._current_threshold,
            "below": self._evaluations_below,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` so that a resumed run continues identically."""
        missing = {"ratio", "threshold", "below"} - set(state)
        if missing:
            raise UnforcedError(f"Adaptive state is missing {sorted(missing)}")
        self._current_ratio = _ratio("ratio", state["ratio"])
        self._current_threshold = finite_number("threshold", state["threshold"])
        self._evaluations_below = integer_at_least("below", state["below"], 0)


@dataclass(frozen=True)
class Curriculum:
    """A schedule plus a curriculum over length and difficulty, both rising linearly with progress.

    ``ratio(step)`` is the wrapped schedule's teacher-forcing ratio (P(gold)).
    With ``p = min(step / steps, 1)``:
    ``max_length(step) = round(max_length_start + (max_length_end - max_length_start) * p)`` and
    ``difficulty(step) = difficulty_start + (difficulty_end - difficulty_start) * p``.
    """

    schedule: Schedule
    max_length_start: int
    max_length_end: int
    steps: int
    difficulty_start: float = 0.0
    difficulty_end: float = 1.0

    def __post_init__(self) -> None:
        if not callable(self.schedule):
            raise UnforcedError(f"schedule must be a callable schedule, got {self.schedule!r}")
        integer_at_least("max_length_start", self.max_length_start, 1)
        integer_at_least("max_length_end", self.max_length_end, 1)
        integer_at_least("steps", self.steps, 1)
        finite_number("difficulty_start", self.difficulty_start)
        finite_number("difficulty_end", self.difficulty_end)

    def _progress(self, step: int) -> float:
        return min(_step(step) / self.steps, 1.0)

    def ratio(self, step: int) -> float:
        """The wrapped schedule's teacher-forcing ratio (P(gold)) at ``step``."""
        return self.schedule(step)

    __call__ = ratio

    def max_length(self, step: int) -> int:
        """Longest target length allowed at ``step`` (rounded half up)."""
        span = self.max_length_end - self.max_length_start
        return math.floor(self.max_length_start + span * self._progress(step) + 0.5)

    def difficulty(self, step: int) -> float:
        """Task difficulty at ``step``, for tasks that take one."""
        span = self.difficulty_end - self.difficulty_start
        return self.difficulty_start + span * self._progress(step)


SCHEDULES: dict[str, type] = {
    "constant": Constant,
    "linear": Linear,
    "exponential": Exponential,
    "inverse_sigmoid": InverseSigmoid,
    "piecewise": Piecewise,
    "adaptive": Adaptive,
}


def make_schedule(name: str, **params: Any) -> Schedule:
    """Build the teacher-forcing-ratio (P(gold)) schedule registered as ``name`` from keyword parameters."""
    if name not in SCHEDULES:
        raise UnforcedError(f"unknown schedule {name!r}; known schedules: {', '.join(sorted(SCHEDULES))}")
    try:
        return SCHEDULES[name](**params)
    except TypeError as error:  # a missing or unexpected parameter name
        raise UnforcedError(f"schedule {name!r}: {error}") from error


def plot_schedules(schedules: Mapping[str, Schedule], steps: int, path: str | Path) -> Path:
    """Plot each schedule's teacher-forcing ratio, P(gold), over ``steps`` steps; returns the PNG path."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    integer_at_least("steps", steps, 1)
    if not schedules:
        raise UnforcedError("plot_schedules needs at least one schedule")
    points = np.unique(np.linspace(0, steps, min(steps + 1, 2000)).round().astype(int))
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)  # no pyplot: leaves the global backend alone
    axes = figure.add_subplot()
    for label, schedule in schedules.items():
        axes.plot(points, [schedule(int(step)) for step in points], label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("teacher-forcing ratio (P(gold))")
    axes.set_ylim(-0.02, 1.02)
    axes.legend()
    axes.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path
