"""Teacher forcing (Williams and Zipser 1989): every step is fed the gold prefix; one parallel `forced` pass.

With `tbptt` = k the decoder is stepped through a gold-fed `rollout` that detaches its recurrent state every k
steps: truncated backpropagation through time (Williams and Peng 1990). The loss value is the same; the gradient
of a step reaches back at most to the last cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from unforced.errors import UnforcedError
from unforced.rollout import Gold, rollout
from unforced.strategies.base import StepOutput, token_nll


@dataclass
class TeacherForcingConfig:
    """Parameters of teacher forcing.

    label_smoothing (float, default 0.0): mass spread uniformly over the vocabulary in the cross-entropy target
        (Szegedy et al. 2016); 0.1 is common for translation Transformers.
    tbptt (int or None, default None): truncated backpropagation through time, recurrent decoders only: the
        state is detached every `tbptt` steps (Williams and Peng 1990), so no gradient reaches further back than
        the last cut. The decoder is then stepped (a loop over time) instead of one fused forced pass. None keeps
        the full graph.
    """

    label_smoothing: float = 0.0
    tbptt: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UnforcedError(f"teacher_forcing.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.tbptt is not None and (isinstance(self.tbptt, bool) or not isinstance(self.tbptt, int)
                                       or self.tbptt < 1):
            raise UnforcedError(f"teacher_forcing.tbptt must be None or an integer >= 1, got {self.tbptt!r}")


class TeacherForcing:
    name = "teacher_forcing"

    def __init__(self, config: TeacherForcingConfig | None = None, seed: int = 0):
        self.config = config or TeacherForcingConfig()

    def loss(self, model, batch, step: int) -> StepOutput:
        memory = model.encode(batch.source, batch.source_mask)
        if self.config.tbptt is None:
            logits = model.forced(memory, batch.inputs).logits  # (batch, time, vocab)
        else:
            try:
                logits = rollout(model, memory, Gold(), gold=batch.gold, detach_every=self.config.tbptt,
                                 stop_at_eos=False, keep_hidden=False).logits
            except UnforcedError as error:
                raise UnforcedError(f"teacher_forcing.tbptt: {error}; set tbptt to None") from None
        loss = token_nll(logits, batch.gold, batch.gold_mask, self.config.label_smoothing)
        return StepOutput(loss=loss, logs={"nll": float(loss.detach())})
