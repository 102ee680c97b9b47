"""Training strategies, found by name in a plain dict registry: name -> (config dataclass, strategy class)."""

from __future__ import annotations

from unforced.config import validate_config
from unforced.errors import UnforcedError
from unforced.strategies.base import StepOutput, Strategy, needs_warm_start, token_nll
from unforced.strategies.dagger import Dagger, DaggerConfig
from unforced.strategies.minimum_risk import MinimumRisk, MinimumRiskConfig
from unforced.strategies.mixer import Mixer, MixerConfig
from unforced.strategies.parallel_scheduled_sampling import (
    ParallelScheduledSampling,
    ParallelScheduledSamplingConfig,
)
from unforced.strategies.preference import Preference, PreferenceConfig
from unforced.strategies.professor_forcing import ProfessorForcing, ProfessorForcingConfig
from unforced.strategies.reinforce import Reinforce, ReinforceConfig
from unforced.strategies.scheduled_sampling import ScheduledSampling, ScheduledSamplingConfig
from unforced.strategies.self_training import SelfTraining, SelfTrainingConfig
from unforced.strategies.spin import Spin, SpinConfig
from unforced.strategies.teacher_forcing import TeacherForcing, TeacherForcingConfig

STRATEGIES: dict[str, tuple[type, type]] = {
    "teacher_forcing": (TeacherForcingConfig, TeacherForcing),
    "scheduled_sampling": (ScheduledSamplingConfig, ScheduledSampling),
    "parallel_scheduled_sampling": (ParallelScheduledSamplingConfig, ParallelScheduledSampling),
    "reinforce": (ReinforceConfig, Reinforce),
    "mixer": (MixerConfig, Mixer),
    "preference": (PreferenceConfig, Preference),
    "minimum_risk": (MinimumRiskConfig, MinimumRisk),
    "dagger": (DaggerConfig, Dagger),
    "professor_forcing": (ProfessorForcingConfig, ProfessorForcing),
    "spin": (SpinConfig, Spin),
    "self_training": (SelfTrainingConfig, SelfTraining),
}

# Where a strategy that declares `warm_start = True` starts from, named alone in `unforced run`: the model this
# registry entry trains in the same run (a strategy may name another with a class attribute `warm_start_from`).
WARM_START_FROM = "teacher_forcing"


def strategy_class(name: str) -> type:
    """The class registered as `name`."""
    if name not in STRATEGIES:
        raise UnforcedError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name][1]


def warm_start_source(name: str) -> str | None:
    """The registered strategy whose trained model `name` starts from when named alone, or None if it needs no
    warm start."""
    cls = strategy_class(name)
    if not needs_warm_start(cls):
        return None
    source = getattr(cls, "warm_start_from", WARM_START_FROM)
    if source not in STRATEGIES or needs_warm_start(strategy_class(source)):
        raise UnforcedError(f"strategy {name!r} starts from {source!r}, which is not a registered strategy that "
                            f"trains from scratch")
    return source


def make_strategy(name: str, options: dict | None = None, seed: int = 0) -> Strategy:
    """The strategy `name` with its config built from `options` (errors name the field)."""
    cls = strategy_class(name)
    config_class = STRATEGIES[name][0]
    config = validate_config(config_class, dict(options or {}), prefix=name)  # unknown options name the strategy
    return cls(config, seed=seed)


__all__ = ["STRATEGIES", "WARM_START_FROM", "StepOutput", "Strategy", "make_strategy", "needs_warm_start",
           "strategy_class", "token_nll", "warm_start_source"]
