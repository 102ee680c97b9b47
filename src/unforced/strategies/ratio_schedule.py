"""What the two scheduled-sampling strategies share: the teacher-forcing-ratio options and their run-time state.

`ScheduledFeedConfig` holds the options of a decaying teacher-forcing ratio (the schedule, the coins, the own
feed, the length curriculum); `scheduled_sampling` (Bengio et al. 2015, sequential) and
`parallel_scheduled_sampling` (Duckworth et al. 2019) extend it with what differs. `RatioState` is the state
behind it during training: the schedule (an Adaptive one learns from validation), the curriculum, and the one
`torch.Generator` every coin and sample draws from; the strategies forward their capabilities to it.
`scheduled_loss` is the loss both share, given how each mixes its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, Mix, Sample
from unforced.schedules import SCHEDULES, Adaptive, Curriculum, make_schedule
from unforced.strategies.base import StepOutput, token_nll

# (model, memory, batch, ratio) -> (logits (batch, time, vocab), coins (batch, time)): what a strategy feeds.
MixedLogits = Callable[[Any, Any, Any, float], tuple[Tensor, Tensor]]


def _default_schedule_params() -> dict[str, Any]:
    # InverseSigmoid ratio(step) = k / (k + exp(step / k)): k = 300 starts at 0.997, is 0.5 at k ln k ~ 1700 steps
    # and ~0.28 at 2000 (TrainConfig's default length), so most of a default run sees mostly-gold feeds.
    return {"k": 300.0}


@dataclass
class ScheduledFeedConfig:
    """Parameters shared by the scheduled-sampling strategies. The schedule's value is the teacher-forcing ratio:
    P(feed gold).

    > Parameters that control the teacher-forcing ratio

    schedule (str, default "inverse_sigmoid"): a name from `unforced.schedules.SCHEDULES` ("constant", "linear",
        "exponential", "inverse_sigmoid", "piecewise", "adaptive"). Bengio et al. 2015 found the inverse sigmoid
        best on their tasks.
    schedule_params (dict, default {"k": 300.0}): keyword arguments of that schedule. With k = 300 the
        inverse-sigmoid ratio k / (k + exp(step / k)) falls from ~1.0 at step 0 to 0.5 near step 1700 and ~0.3
        at step 2000: a default run (2000 steps) ends with mostly own tokens fed only near its end. "adaptive"
        needs {"threshold": ...}; it is lowered through `observe` from validation `tf_nll`.
    min_ratio (float, default 0.0): floor of the ratio, in [0, 1] (given to the schedule as its `min_ratio`).

    > Parameters that control the feeds

    per (str, default "token"): one coin per token (Bengio et al. 2015), per "sequence" (one per row), or per
        "batch" (one for the whole batch).
    own (str, default "greedy"): the model's own token is its argmax ("greedy") or a sample ("sample") from
        softmax(logits / temperature).
    temperature (float, default 1.0): > 0; used by own="sample" and by `soft`.
    soft (bool, default False): feed the probability-weighted embedding softmax(logits / temperature) @ the
        embedding table (scaled as `model.embed` scales) instead of a token, so that gradient flows into the
        embeddings of every candidate (Goyal et al. 2017 use a peaked softmax for this).

    > Parameters of the curriculum

    curriculum (dict | None, default None): {"max_length_start", "max_length_end", "steps"}: train only on pairs
        whose target (with <eos>) fits a maximum length that rises linearly from start to end over `steps` steps
        (`schedules.Curriculum`), combined with whatever ratio schedule is chosen; shorter sequences first, as in
        curriculum learning (Bengio et al. 2009). None trains on every pair throughout.
    """

    prefix = "scheduled_sampling"  # the strategy's name, which every error message starts with (not a field)

    schedule: str = "inverse_sigmoid"
    schedule_params: dict[str, Any] = field(default_factory=_default_schedule_params)
    min_ratio: float = 0.0
    per: str = "token"
    own: str = "greedy"
    temperature: float = 1.0
    soft: bool = False
    curriculum: dict[str, int] | None = None

    def __post_init__(self):
        prefix = self.prefix
        if self.schedule not in SCHEDULES:
            raise UnforcedError(f"{prefix}.schedule: unknown schedule {self.schedule!r}; known: "
                                f"{', '.join(sorted(SCHEDULES))}")
        if not isinstance(self.schedule_params, dict):
            raise UnforcedError(f"{prefix}.schedule_params must be a mapping, got {self.schedule_params!r}")
        if "min_ratio" in self.schedule_params:
            raise UnforcedError(f"{prefix}.schedule_params: give min_ratio as {prefix}.min_ratio")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise UnforcedError(f"{prefix}.min_ratio must be a teacher-forcing ratio in [0, 1], got "
                                f"{self.min_ratio}")
        for name, allowed in (("per", ("token", "sequence", "batch")), ("own", ("greedy", "sample"))):
            if getattr(self, name) not in allowed:
                raise UnforcedError(f"{prefix}.{name} must be one of {', '.join(allowed)}, got "
                                    f"{getattr(self, name)!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UnforcedError(f"{prefix}.temperature must be positive, got {self.temperature}")
        self.build_schedule()  # fails here, naming the field, rather than at the first step
        self.build_curriculum()

    def build_schedule(self):
        """A fresh schedule (each strategy owns one: Adaptive keeps state)."""
        try:
            return make_schedule(self.schedule, min_ratio=self.min_ratio, **self.schedule_params)
        except UnforcedError as error:
            raise UnforcedError(f"{self.prefix}.schedule_params: {error}") from None

    def build_curriculum(self) -> Curriculum | None:
        if self.curriculum is None:
            return None
        if not isinstance(self.curriculum, dict):
            raise UnforcedError(f"{self.prefix}.curriculum must be a mapping, got {self.curriculum!r}")
        known = {"max_length_start", "max_length_end", "steps"}
        if set(self.curriculum) != known:
            raise UnforcedError(f"{self.prefix}.curriculum needs exactly {', '.join(sorted(known))}")
        try:
            return Curriculum(self.build_schedule(), **self.curriculum)
        except (UnforcedError, TypeError) as error:
            raise UnforcedError(f"{self.prefix}.curriculum: {error}") from None

    def own_feed(self) -> Greedy | Sample:
        """The feed that chooses the model's own tokens."""
        return Greedy() if self.own == "greedy" else Sample(self.temperature)

    def mix(self, ratio: float) -> Mix:
        """The rollout feed at teacher-forcing ratio `ratio`."""
        return Mix(ratio, self.own_feed(), self.per)


class RatioState:
    """The schedule, the curriculum and the generator of one scheduled-sampling strategy during training.

    The strategies forward their capabilities (Stateful, Observer, BatchFilter) to it.
    """

    def __init__(self, config: ScheduledFeedConfig, seed: int = 0):
        self.schedule = config.build_schedule()
        self.curriculum = config.build_curriculum()
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, step: int) -> float:
        """The teacher-forcing ratio at `step`."""
        return float(self.schedule(step))

    def generator_on(self, device: torch.device) -> torch.Generator:
        # A CPU generator cannot draw on CUDA: move once, seeded the same (the state restarts there).
        if self.generator.device.type != torch.device(device).type:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.generator

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "generator_device": str(self.generator.device),
                "schedule": self.schedule.state_dict() if isinstance(self.schedule, Adaptive) else None}

    def load_state_dict(self, state: dict) -> None:
        self.generator = torch.Generator(device=state.get("generator_device", "cpu"))
        self.generator.set_state(state["generator"])
        if state.get("schedule") is not None and isinstance(self.schedule, Adaptive):
            self.schedule.load_state_dict(state["schedule"])

    def observe(self, figures: dict) -> None:
        """Forward the validation NLL (`figures["tf_nll"]`) to an Adaptive schedule; other schedules ignore it."""
        if isinstance(self.schedule, Adaptive) and figures.get("tf_nll") is not None:
            self.schedule.observe(float(figures["tf_nll"]))

    def max_target_length(self, step: int) -> int | None:
        """The curriculum's longest target at `step`, or None without a curriculum."""
        return self.curriculum.max_length(step) if self.curriculum is not None else None

    def select(self, batch, step: int):
        """The rows of `batch` whose target (with <eos>) fits the curriculum at `step`; the shortest row if none
        does; the batch itself without a curriculum or when every row fits."""
        limit = self.max_target_length(step)
        if limit is None:
            return batch
        lengths = batch.gold_mask.sum(1)
        keep = torch.nonzero(lengths <= limit).flatten()
        if keep.numel() == 0:
            keep = lengths.argmin().reshape(1)
        if keep.numel() == len(lengths):
            return batch
        return batch.select(keep)


def scheduled_loss(model, batch, ratio: float, mixed_logits: MixedLogits) -> StepOutput:
    """The loss of both scheduled-sampling strategies: token NLL of gold along the inputs fed at `ratio`.

    At ratio 1 every feed is gold, so one forced pass on gold is teacher forcing exactly; below it
    `mixed_logits(model, memory, batch, ratio)` -> (logits (batch, time, vocab), coins (batch, time), True where
    the input at that step was gold, <bos> first) is what the strategy does. Logs the ratio asked and the share of
    scored inputs after <bos> that were gold.
    """
    memory = model.encode(batch.source, batch.source_mask)
    if ratio >= 1.0:
        logits, coins = model.forced(memory, batch.inputs).logits, torch.ones_like(batch.gold_mask)
    else:
        logits, coins = mixed_logits(model, memory, batch, ratio)
    loss = token_nll(logits, batch.gold, batch.gold_mask)
    fed = batch.gold_mask[:, 1:]  # inputs after <bos> that feed a scored position
    share = float((coins[:, 1:] & fed).sum() / fed.sum().clamp(min=1))
    return StepOutput(loss=loss, logs={"nll": float(loss.detach()), "teacher_forcing_ratio": ratio,
                                       "gold_fed_share": share})


__all__ = ["MixedLogits", "RatioState", "ScheduledFeedConfig", "scheduled_loss"]
