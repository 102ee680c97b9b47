"""Teacher forcing (Williams and Zipser 1989): every step is fed the gold prefix; one parallel `forced` pass."""

from __future__ import annotations

from dataclasses import dataclass

from unforced.errors import UnforcedError
from unforced.strategies.base import StepOutput, token_nll


@dataclass
class TeacherForcingConfig:
    """Parameters of teacher forcing.

    label_smoothing (float, default 0.0): mass spread uniformly over the vocabulary in the cross-entropy target
        (Szegedy et al. 2016); 0.1 is common for translation Transformers.
    """

    label_smoothing: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UnforcedError(f"teacher_forcing.label_smoothing must be in [0, 1), got {self.label_smoothing}")


class TeacherForcing:
    name = "teacher_forcing"

    def __init__(self, config: TeacherForcingConfig | None = None, seed: int = 0):
        self.config = config or TeacherForcingConfig()

    def loss(self, model, batch, step: int) -> StepOutput:
        memory = model.encode(batch.source, batch.source_mask)
        logits = model.forced(memory, batch.inputs).logits  # (batch, time, vocab)
        loss = token_nll(logits, batch.gold, batch.gold_mask, self.config.label_smoothing)
        return StepOutput(loss=loss, logs={"nll": float(loss.detach())})
