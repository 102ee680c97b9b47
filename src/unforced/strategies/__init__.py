"""Training strategies, found by name in a plain dict registry: name -> (config dataclass, strategy class)."""

from __future__ import annotations

from unforced.config import validate_config
from unforced.errors import UnforcedError
from unforced.strategies.base import StepOutput, Strategy, token_nll
from unforced.strategies.preference import Preference, PreferenceConfig
from unforced.strategies.reinforce import Reinforce, ReinforceConfig
from unforced.strategies.scheduled_sampling import ScheduledSampling, ScheduledSamplingConfig
from unforced.strategies.teacher_forcing import TeacherForcing, TeacherForcingConfig

STRATEGIES: dict[str, tuple[type, type]] = {
    "teacher_forcing": (TeacherForcingConfig, TeacherForcing),
    "scheduled_sampling": (ScheduledSamplingConfig, ScheduledSampling),
    "reinforce": (ReinforceConfig, Reinforce),
    "preference": (PreferenceConfig, Preference),
}

# Strategies that fine-tune a trained model: named alone in `unforced run`, they start from the teacher-forced
# model of the same run.
NEEDS_WARM_START: set[str] = {"reinforce", "preference"}


def make_strategy(name: str, options: dict | None = None, seed: int = 0) -> Strategy:
    """The strategy `name` with its config built from `options` (errors name the field)."""
    if name not in STRATEGIES:
        raise UnforcedError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    config_class, strategy_class = STRATEGIES[name]
    config = validate_config(config_class, dict(options or {}), prefix=name)  # unknown options name the strategy
    return strategy_class(config, seed=seed)


__all__ = ["NEEDS_WARM_START", "STRATEGIES", "StepOutput", "Strategy", "make_strategy", "token_nll"]
