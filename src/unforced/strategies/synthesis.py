"""Training the synthesiser (models/tts.py) with the Trainer: teacher forcing or scheduled sampling over frames.

The Trainer's batches are the speech task's: `batch.source` (the log-mel frames) is what the synthesiser makes,
`batch.gold` (the characters, <eos> last) what it reads. So the synthesiser trains through the same loop as every
recogniser, with its checkpoints, resume and progress. The feed is a `rollout` feed for frames: Gold() for
teacher forcing, or Mix(schedule(step)) for scheduled sampling (Bengio et al. 2015) on the frames it feeds back.
Not a registered strategy of `unforced run`: it trains a synthesiser, not a sequence-to-sequence model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unforced.errors import UnforcedError
from unforced.models.tts import frame_error, synthesis_loss
from unforced.rollout import Gold, Greedy, Mix
from unforced.schedules import Schedule
from unforced.strategies.base import StepOutput, generator_for


@dataclass
class SynthesisTraining:
    """The synthesiser's loss on a speech batch: frames L1 + stop BCE + `guided` x guided attention, fed gold
    frames (`schedule` None) or gold with probability schedule(step) (scheduled sampling)."""

    schedule: Schedule | None = None
    guided: float = 1.0
    per: str = "token"
    seed: int = 0

    def __post_init__(self):
        if not self.guided >= 0:
            raise UnforcedError(f"synthesis.guided must not be negative, got {self.guided}")
        self.generator = generator_for(self.seed)

    def feed(self, step: int):
        return Gold() if self.schedule is None else Mix(float(self.schedule(step)), Greedy(), self.per)

    def loss(self, model, batch, step: int) -> StepOutput:
        feed = self.feed(step)
        out = model.decode(batch.gold, batch.gold_mask, feed, gold_frames=batch.source,
                           generator=None if isinstance(feed, Gold) else self.generator)
        loss, logs = synthesis_loss(out, batch.source, batch.source_mask, batch.gold_mask,
                                    model.config.reduction, self.guided)
        if isinstance(feed, Mix):
            logs["gold_ratio"] = feed.gold_ratio
        return StepOutput(loss=loss, logs=logs)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


@torch.no_grad()
def frame_gap(model, task, split: str = "test", batch_size: int = 32, limit: int | None = None) -> dict:
    """The synthesiser's own exposure gap on `split`: mean absolute frame error (per real frame and mel bin)
    teacher-forced (each step fed the gold previous frame) and free-running (fed its own), both at the gold
    length, and the free-running frame error in the first and the last third of each utterance."""
    was_training = model.training
    model.eval()
    sums = {"tf": 0.0, "fr": 0.0, "fr_first_third": 0.0, "fr_last_third": 0.0}
    rows = 0
    try:
        for batch in task.batches(split, batch_size, limit=limit):
            forced = model.decode(batch.gold, batch.gold_mask, Gold(), gold_frames=batch.source)
            free = model.decode(batch.gold, batch.gold_mask, Greedy(), gold_frames=batch.source,
                                steps=forced.stop_logits.shape[1])
            sums["tf"] += float(frame_error(forced, batch.source, batch.source_mask).sum())
            sums["fr"] += float(frame_error(free, batch.source, batch.source_mask).sum())
            lengths = batch.source_mask.sum(1)
            positions = torch.arange(batch.source.shape[1])[None, :]
            first = batch.source_mask & (positions < lengths[:, None] / 3)
            last = batch.source_mask & (positions >= 2 * lengths[:, None] / 3)
            sums["fr_first_third"] += float(frame_error(free, batch.source, first).sum())
            sums["fr_last_third"] += float(frame_error(free, batch.source, last).sum())
            rows += len(batch)
    finally:
        model.train(was_training)
    figures = {key: value / max(rows, 1) for key, value in sums.items()}
    figures["gap"] = figures["fr"] - figures["tf"]
    figures["utterances"] = rows
    return figures


__all__ = ["SynthesisTraining", "frame_gap"]
