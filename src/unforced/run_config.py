"""What a run is asked to do: the run config, the presets, and strategy entries (names and phase chains).

A strategy entry is a name (`teacher_forcing`), `recommended` (the preset's chain), or a chain of phases
(`teacher_forcing:2000>reinforce:500`), each phase starting from the previous one's weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from unforced.config import validate_config
from unforced.errors import UnforcedError
from unforced.strategies import STRATEGIES

DEFAULT_STRATEGIES = ["teacher_forcing", "parallel_scheduled_sampling", "reinforce", "recommended"]

# Presets: sizes that keep `--quick` under 3 minutes on 2 CPU cores (measured: a teacher-forcing step ~140 ms,
# scheduled sampling ~160 ms, an SCST step ~1.1 s at the quick size), a default under 20 minutes, and a large
# one for better numbers. `fine_tune_steps` is the budget of a warm-started strategy named alone (reinforce);
# `recommended` is the usual practice as a chain: teacher forcing, then a decaying forcing ratio, then a reward
# fine-tune. Scheduled sampling runs in its parallel form (Duckworth et al. 2019, two forced passes), a small cost
# over teacher forcing; the sequential `scheduled_sampling` (a decode per step) gets the same schedule when named.
# The inverse-sigmoid k is set so the ratio falls to ~0.3 by the end of the budget (k ln(2.33 k) ~ steps). The
# reward fine-tune samples at temperature 0.5 with a learning rate of 3e-4: measured on the default task from the
# teacher-forced checkpoint (valid BLEU 6.7 teacher-forced, 5.5 free), at temperature 1 and 2e-3 the samples
# rarely beat the greedy baseline (22% of them) and free-running BLEU fell; at 0.5 and 3e-4 it rose to 5.9.
# `phase_train` overrides train settings for the phases of one strategy (a short fine-tune is evaluated more
# often, so its curve shows in the report).
PRESETS: dict[str, dict] = {
    "quick": {
        "task": {"bible-en-es": {"max_words": 16, "vocab_size": 1500},
                 "toy-translation": {"size": 3000}},
        "model": {"kind": "gru", "embedding": 96, "hidden": 192, "dropout": 0.1},
        "train": {"steps": 200, "batch_size": 64, "eval_every": 100, "checkpoint_every": 100, "eval_limit": 100},
        "strategy_options": {"parallel_scheduled_sampling": {"schedule_params": {"k": 40.0}},
                             "scheduled_sampling": {"schedule_params": {"k": 40.0}},
                             "reinforce": {"temperature": 0.5}},
        "phase_train": {"reinforce": {"learning_rate": 3e-4, "warmup": 0, "eval_every": 10}},
        "fine_tune_steps": 20,
        "recommended": "teacher_forcing:100>parallel_scheduled_sampling:60>reinforce:12",
        "test_limit": 300,
    },
    "default": {
        "task": {"bible-en-es": {"max_words": 20, "vocab_size": 2000}},
        "model": {"kind": "gru", "embedding": 128, "hidden": 256, "dropout": 0.2},
        "train": {"steps": 1200, "batch_size": 64, "eval_every": 200, "checkpoint_every": 200},
        "strategy_options": {"parallel_scheduled_sampling": {"schedule_params": {"k": 180.0}},
                             "scheduled_sampling": {"schedule_params": {"k": 180.0}},
                             "reinforce": {"temperature": 0.5}},
        "phase_train": {"reinforce": {"learning_rate": 3e-4, "warmup": 0, "eval_every": 20}},
        "fine_tune_steps": 80,
        "recommended": "teacher_forcing:600>parallel_scheduled_sampling:400>reinforce:50",
        "test_limit": 1000,
    },
    "large": {
        "task": {"bible-en-es": {"max_words": 30, "vocab_size": 4000}},
        "model": {"kind": "gru", "embedding": 256, "hidden": 512, "dropout": 0.2},
        "train": {"steps": 12000, "batch_size": 64, "eval_every": 1000, "checkpoint_every": 500},
        "strategy_options": {"parallel_scheduled_sampling": {"schedule_params": {"k": 1100.0}},
                             "scheduled_sampling": {"schedule_params": {"k": 1100.0}},
                             "reinforce": {"temperature": 0.5}},
        "phase_train": {"reinforce": {"learning_rate": 3e-4, "warmup": 0, "eval_every": 250}},
        "fine_tune_steps": 1000,
        "recommended": "teacher_forcing:6000>parallel_scheduled_sampling:4000>reinforce:1000",
        "test_limit": 2000,
    },
}


@dataclass
class RunConfig:
    """Everything a run needs; built from a preset, a YAML config file and command-line flags, in that order."""

    task: str = "bible-en-es"
    task_options: dict = field(default_factory=dict)
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    strategy_options: dict = field(default_factory=dict)
    phase_train: dict = field(default_factory=dict)  # strategy -> train overrides for its phases
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    preset: str = "default"
    seed: int = 0
    test_limit: int | None = None
    diagnostics_limit: int = 100  # test pairs for the diagnostics written beside the results; 0 skips them
    switch: dict | None = None  # {metric, patience[, mode, min_delta]}: a chain's phases end on a stall (switch.py)

    def __post_init__(self):
        if not 0 <= self.seed < 2**32:
            raise UnforcedError(f"config.seed must be in [0, 2**32), got {self.seed}")
        if self.test_limit is not None and self.test_limit < 1:
            raise UnforcedError(f"config.test_limit must be at least 1 (or left out), got {self.test_limit}")
        if self.diagnostics_limit < 0:
            raise UnforcedError(f"config.diagnostics_limit must not be negative, got {self.diagnostics_limit}")
        if not self.strategies:
            raise UnforcedError("config.strategies names no strategy")
        if self.switch is not None:
            from unforced.switch import SwitchConfig

            if not isinstance(self.switch, dict):
                raise UnforcedError(f"config.switch must be a mapping such as {{metric: cider_d, patience: 3}}, got "
                                    f"{type(self.switch).__name__}")
            validate_config(SwitchConfig, dict(self.switch), prefix="switch")
        for name, options in self.phase_train.items():
            if name not in STRATEGIES:
                raise UnforcedError(f"config.phase_train.{name}: no such strategy; known: {', '.join(STRATEGIES)}")
            if options is not None and not isinstance(options, dict):
                raise UnforcedError(f"config.phase_train.{name} must be a mapping of train settings, got "
                                    f"{type(options).__name__}")
        for name, options in self.strategy_options.items():
            if name not in STRATEGIES:
                raise UnforcedError(f"config.strategy_options.{name}: no such strategy; known: "
                                    f"{', '.join(STRATEGIES)}")
            if options is not None and not isinstance(options, dict):
                raise UnforcedError(f"config.strategy_options.{name} must be a mapping of options, got "
                                    f"{type(options).__name__}")
            # Checked now, even for a strategy this run does not train: a typo should not wait for a later run.
            validate_config(STRATEGIES[name][0], dict(options or {}), prefix=name)


@dataclass(frozen=True)
class Phase:
    strategy: str
    steps: int | None


def parse_entry(entry: str, preset: str = "default", switch: bool = False) -> list[Phase]:
    """`name`, `recommended`, or `name:steps>name:steps>...` -> phases. A step count is required in a chain, unless
    the run switches phases on a validation stall (`switch`): then a phase without one runs up to `train.steps`
    (the first) or the preset's fine-tune budget (the others)."""
    if entry == "recommended":
        if preset not in PRESETS:
            raise UnforcedError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        entry = PRESETS[preset]["recommended"]
    parts = [p.strip() for p in entry.split(">")]
    phases = []
    for part in parts:
        match = re.fullmatch(r"([a-z_]+)(?::(\d+))?", part)
        if not match:
            raise UnforcedError(f"cannot read strategy entry {entry!r}: expected name or name:steps>name:steps")
        name, steps = match.group(1), match.group(2)
        if name not in STRATEGIES:
            raise UnforcedError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}, recommended")
        if steps is not None and int(steps) < 1:
            raise UnforcedError(f"strategy entry {entry!r}: steps must be at least 1")
        phases.append(Phase(name, int(steps) if steps else None))
    if len(phases) > 1 and not switch and any(p.steps is None for p in phases):
        raise UnforcedError(f"strategy chain {entry!r}: give every phase a step count (name:steps), or set "
                            f"`switch` in the config to end each phase on a validation stall")
    return phases


def entry_phases(config: RunConfig, entry: str) -> list[Phase]:
    """The phases of one of `config`'s strategy entries."""
    return parse_entry(entry, config.preset, switch=config.switch is not None)


def resolve(config: RunConfig) -> tuple[dict, dict, dict]:
    """Task options, model options and train options after the preset, then the user's own values."""
    if config.preset not in PRESETS:
        raise UnforcedError(f"unknown preset {config.preset!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[config.preset]
    task_options = {**preset["task"].get(config.task, {}), **config.task_options}
    model = {**preset["model"], **config.model}
    train = {**preset["train"], "seed": config.seed, **config.train}
    return task_options, model, train


def strategy_options(config: RunConfig, name: str) -> dict:
    """A strategy's options: the preset's, then the user's."""
    preset = PRESETS.get(config.preset, {}).get("strategy_options", {}).get(name, {})
    return {**preset, **(config.strategy_options.get(name) or {})}
