"""The switch from one phase of a chain to the next when validation stops improving.

    switch: {metric: cider_d, patience: 3}        in a run's config file

In a chain (`teacher_forcing>reinforce`), every phase but the last watches one validation figure; after `patience`
evaluations without a better value (by more than `min_delta`), it stops, the weights of its best evaluation are
loaded, and the next phase starts from them. The step count of such a phase (`teacher_forcing:2000`, or the
run's `train.steps` where it has none) is a ceiling. The best weights are kept in `best.pt` beside the phase's
`last.pt` (written before it, so a kill between the two leaves a best at least as new as the state that resumes),
and the patience counter travels in `last.pt`, so a killed run resumes into the same switch.

`metric` is the task's metric by name (`bleu`, `cider_d`, `wer`, ...: its free-running greedy score) or a figure
of the validation evaluation (`fr_nll`, `tf_nll`, `gap_pct`, `fr_token_acc`, `tf_token_acc`). `mode` is `max`,
`min`, or `auto`: lower is better for error rates, NLLs and the gap, higher for everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.runfiles import CHECKPOINT_FORMAT, atomic_save, read_checkpoint_file

FIGURES = ("fr_nll", "tf_nll", "gap_pct", "fr_token_acc", "tf_token_acc")
LOWER_IS_BETTER = ("wer", "cer", "fr_nll", "tf_nll", "gap_pct")


@dataclass
class SwitchConfig:
    metric: str
    patience: int = 3
    mode: str = "auto"
    min_delta: float = 0.0

    def __post_init__(self):
        if not isinstance(self.metric, str) or not self.metric:
            raise UnforcedError("switch.metric must name a metric (the task's, e.g. cider_d) or a validation "
                                f"figure ({', '.join(FIGURES)})")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise UnforcedError(f"switch.patience must be a whole number of evaluations, at least 1, got "
                                f"{self.patience!r}")
        if self.mode not in ("auto", "max", "min"):
            raise UnforcedError(f"switch.mode must be auto, max or min, got {self.mode!r}")
        if not (isinstance(self.min_delta, (int, float)) and self.min_delta >= 0 and math.isfinite(self.min_delta)):
            raise UnforcedError(f"switch.min_delta must be a non-negative number, got {self.min_delta!r}")

    @property
    def higher_is_better(self) -> bool:
        return self.mode == "max" if self.mode != "auto" else self.metric not in LOWER_IS_BETTER

    def check_task(self, task) -> None:
        """Refuse a metric the run's validation does not measure, before any training."""
        if self.metric not in FIGURES and self.metric != task.metric:
            raise UnforcedError(f"switch.metric {self.metric!r} is not measured on task {task.name!r}: use its "
                                f"metric {task.metric!r} or one of {', '.join(FIGURES)}")


class Patience:
    """Watches one validation figure of a phase: keeps the best weights and says when to stop."""

    def __init__(self, config: SwitchConfig, best_path: Path):
        self.config = config
        self.best_path = Path(best_path)
        self.best: float | None = None
        self.best_step: int | None = None
        self.waited = 0  # evaluations since the best
        self.stopped_at: int | None = None

    def value(self, figures: dict) -> float:
        metric = figures.get("metric") or {}
        value = metric.get("fr") if self.config.metric == metric.get("name") else figures.get(self.config.metric)
        if value is None:
            raise UnforcedError(f"switch.metric {self.config.metric!r}: the validation evaluation has no such "
                                f"figure (it has {metric.get('name')!r} and {', '.join(FIGURES)})")
        return float(value)

    def improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        delta = value - self.best if self.config.higher_is_better else self.best - value
        return delta > self.config.min_delta

    def update(self, figures: dict, step: int, model, main: bool = True) -> bool:
        """Record the evaluation at `step`; keep the weights if they are the best so far; True when the phase
        should stop (`patience` evaluations in a row without improvement)."""
        value = self.value(figures)
        if self.improved(value):
            self.best, self.best_step, self.waited = value, step, 0
            if main:
                atomic_save({"format": CHECKPOINT_FORMAT, "step": step, "value": value,
                             "metric": self.config.metric, "model": model.state_dict()}, self.best_path)
            return False
        self.waited += 1
        if self.waited >= self.config.patience:
            self.stopped_at = step
            return True
        return False

    def best_weights(self) -> dict | None:
        """The weights of the best evaluation, or None if no evaluation has been recorded."""
        if self.best_step is None or not self.best_path.exists():
            return None
        saved = read_checkpoint_file(self.best_path)
        if saved.get("step") != self.best_step:
            raise UnforcedError(f"{self.best_path}: holds the weights of step {saved.get('step')}, the run's best "
                                f"evaluation was at step {self.best_step}")
        return saved["model"]

    def summary(self) -> dict:
        return {"metric": self.config.metric, "patience": self.config.patience, "best": self.best,
                "best_step": self.best_step, "stalled": self.stopped_at is not None, "stopped_at": self.stopped_at}

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "waited": self.waited,
                "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.waited, self.stopped_at = state.get("waited", 0), state.get("stopped_at")


__all__ = ["FIGURES", "LOWER_IS_BETTER", "Patience", "SwitchConfig"]
