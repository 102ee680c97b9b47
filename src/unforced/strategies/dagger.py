"""DAgger for sequences (Ross, Gordon and Bagnell 2011, "A Reduction of Imitation Learning and Structured
Prediction to No-Regret Online Learning"): train on the states the learner visits, labelled by an expert.

    1. roll in with the mixture policy: at each step feed the gold token with probability beta, else the model's
       own token, greedy or sampled (`roll_in`; a `Mix` rollout, without gradient)
    2. ask the task's oracle for the best next tokens after every visited prefix (batched, once per step)
    3. train on the set-valued target: loss_t = -log sum_{a in oracle(prefix_t)} p(a | prefix_t)

beta is a Schedule (schedules.py) and is, as everywhere in this library, P(gold). The `imitation` library's
`LinearBetaSchedule(rampdown_rounds)` uses the same convention (beta = the probability of taking the expert's
action, min(1, max(0, (rampdown_rounds - round) / rampdown_rounds))), counted in rounds; here it is counted in
training steps, and the expert's action in the roll-in is the reference token (the oracle's token for positional
oracles). The paper's aggregated data set is the option `buffer`: a bounded FIFO of visited prefixes and their
labels, of which `replay` rows are trained on again each step.

The oracle: `oracle="task"` the task's own (an error names the problem where it has none), `"edit_distance"` the
OCD oracle over the task's references (tasks/oracles.py), `"auto"` (default) the task's own where it has one,
else the edit-distance one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, Mix, Sample, rollout
from unforced.schedules import make_schedule
from unforced.strategies.base import StepOutput
from unforced.tasks.oracles import EditDistanceOracle, OracleLabels, batched_labels
from unforced.vocab import EOS, PAD

ORACLES = ("auto", "task", "edit_distance")
ROLL_INS = ("greedy", "sample")


@dataclass
class DaggerConfig:
    """Parameters of DAgger.

    schedule (str, default "linear"), schedule_params (dict, default {"start": 1.0, "end": 0.0, "steps": 100}):
        beta, the probability of feeding the gold token at each roll-in step, as a schedules.py schedule.
    oracle (str, default "auto"): "auto", "task" or "edit_distance" (see the module docstring).
    buffer (int, default 0): rows of visited prefixes and labels kept (the aggregated data set); 0 keeps none.
    replay (int, default 0): buffered rows trained on again each step (with `buffer` > 0).
    roll_in (str, default "greedy"): the learner's token in the roll-in: "greedy" (its most probable) or "sample"
        (drawn from softmax(logits / temperature), as optimal completion distillation rolls in, Sabour et al.
        2019): sampling visits prefixes off gold even once the greedy decode of the training sources is right.
    temperature (float, default 1.0): of the sampled roll-in.

    Measured (docs/dagger.md, 1000 steps, 5 seeds, against teacher forcing at equal tokens): these defaults (beta
    down to 0 within 100 steps, close to the beta_i = I(i = 1) of Ross et al.: the expert in the first round only,
    and a greedy roll-in) beat it beyond the spread on reverse and sort, are lower on every seed of noisy-copy and
    equal on toy-translation; beta over 700 steps won on sort only. `roll_in: sample` won on noisy-copy too but
    lost toy-translation on two seeds of five.
    """

    schedule: str = "linear"
    schedule_params: dict[str, Any] = field(default_factory=lambda: {"start": 1.0, "end": 0.0, "steps": 100})
    oracle: str = "auto"
    buffer: int = 0
    replay: int = 0
    roll_in: str = "greedy"
    temperature: float = 1.0

    def __post_init__(self):
        if self.oracle not in ORACLES:
            raise UnforcedError(f"dagger.oracle must be one of {', '.join(ORACLES)}, got {self.oracle!r}")
        for name in ("buffer", "replay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UnforcedError(f"dagger.{name} must be an integer >= 0, got {value!r}")
        if self.roll_in not in ROLL_INS:
            raise UnforcedError(f"dagger.roll_in must be one of {', '.join(ROLL_INS)}, got {self.roll_in!r}")
        if not self.temperature > 0:
            raise UnforcedError(f"dagger.temperature must be a positive number, got {self.temperature!r}")
        if self.replay and not self.buffer:
            raise UnforcedError("dagger.replay needs dagger.buffer above 0")
        make_schedule(self.schedule, **self.schedule_params)


def set_nll(logits: torch.Tensor, labels: OracleLabels, mask: torch.Tensor) -> torch.Tensor:
    """Mean over `mask` of -log sum_{a in oracle set} softmax(logits)_a."""
    log_probs = logits.float().log_softmax(-1)  # (batch, time, vocab)
    chosen = labels.mask(logits.shape[-1])
    picked = log_probs.masked_fill(~chosen, float("-inf")).logsumexp(-1)  # (batch, time)
    picked = torch.where(mask, picked, torch.zeros_like(picked))
    return -(picked * mask).sum() / mask.sum().clamp(min=1)


class Dagger:
    """DAgger with a mixture roll-in; coins draw from one `torch.Generator` seeded from `seed`."""

    name = "dagger"

    def __init__(self, config: DaggerConfig | None = None, seed: int = 0):
        self.config = config or DaggerConfig()
        self.schedule = make_schedule(self.config.schedule, **self.config.schedule_params)
        self.generator = torch.Generator().manual_seed(seed)
        self.oracle = None
        self.tokenizer = None
        self.buffer: list[dict] = []

    # ---- capabilities (strategies/base.py): TaskBound, Stateful ------------------------------------------------
    def bind(self, task) -> Dagger:
        choice = self.config.oracle
        if choice == "task" and task.oracle is None:
            raise UnforcedError(f"dagger needs an oracle: task {task.name!r} has none; set dagger.oracle to "
                                f"'edit_distance' (or 'auto') to use the edit-distance oracle over its references")
        if choice == "edit_distance" or (choice == "auto" and task.oracle is None):
            self.oracle = EditDistanceOracle.from_task(task)
        else:
            self.oracle = task.oracle
        self.tokenizer = task.target_tokenizer
        return self

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.buffer = list(state.get("buffer", []))

    # ---- loss --------------------------------------------------------------------------------------------------
    def labels(self, batch, visited: torch.Tensor) -> OracleLabels:
        """The oracle's best next tokens after visited[:, :t] for every t."""
        references = [[self.tokenizer.encode(r) for r in refs] for refs in batch.references]
        return batched_labels(self.oracle, batch.sources, references, visited)

    def loss(self, model, batch, step: int) -> StepOutput:
        if self.oracle is None:
            raise UnforcedError("dagger is not bound to a task: call bind(task) before training")
        beta = float(self.schedule(step))
        memory = model.encode(batch.source, batch.source_mask)
        gold = batch.gold.masked_fill(batch.gold == PAD, EOS)  # past its end the expert says: end now
        with torch.no_grad():
            own = Sample(self.config.temperature) if self.config.roll_in == "sample" else Greedy()
            chosen = rollout(model, memory, Mix(beta, own), gold=gold, generator=self.generator, stop_at_eos=False,
                             keep_hidden=False, keep_logits=False)
        inputs = chosen.inputs  # (batch, time) <bos>, then the visited prefix
        visited = torch.cat([inputs[:, 1:], torch.full_like(inputs[:, :1], PAD)], 1)  # prefix at t: visited[:, :t]
        ended = (inputs == EOS).cumsum(1) > 0  # a fed <eos> ends the roll-in
        mask = ~ended
        labels = self.labels(batch, visited)
        fed = inputs.masked_fill(ended, PAD)
        loss = set_nll(model.forced(memory, fed).logits, labels, mask)
        logs = {"beta": beta, "set_nll": float(loss.detach()),
                "own_fed": float(((~chosen.gold_fed) & mask).sum() / mask.sum().clamp(min=1))}
        if self.config.buffer:
            loss = loss + self._replay(model, batch, fed, labels, mask, logs)
        return StepOutput(loss=loss, logs=logs)

    def _replay(self, model, batch, fed, labels, mask, logs) -> torch.Tensor:
        """Train on `replay` buffered rows (the aggregated data set), then add this batch's rows to the buffer."""
        extra = torch.zeros((), device=fed.device)
        if self.config.replay and self.buffer:
            picks = torch.randint(len(self.buffer), (min(self.config.replay, len(self.buffer)),),
                                  generator=self.generator).tolist()
            rows = [self.buffer[i] for i in picks]
            source = _stack([r["source"] for r in rows], 0).to(fed.device)
            source_mask = _stack([r["source_mask"] for r in rows], False).to(fed.device)
            inputs = _stack([r["inputs"] for r in rows], PAD).to(fed.device)
            row_mask = _stack([r["mask"] for r in rows], False).to(fed.device)
            tokens = _stack([r["tokens"] for r in rows], PAD).to(fed.device)
            valid = _stack([r["valid"] for r in rows], False).to(fed.device)
            memory = model.encode(source, source_mask)
            extra = set_nll(model.forced(memory, inputs).logits, OracleLabels(tokens, valid), row_mask)
            logs["replay_nll"] = float(extra.detach())
        for b in range(fed.shape[0]):
            self.buffer.append({"source": batch.source[b].cpu(), "source_mask": batch.source_mask[b].cpu(),
                                "inputs": fed[b].cpu(), "mask": mask[b].cpu(), "tokens": labels.tokens[b].cpu(),
                                "valid": labels.valid[b].cpu()})
        del self.buffer[:max(0, len(self.buffer) - self.config.buffer)]
        logs["buffer"] = float(len(self.buffer))
        return extra


def _stack(rows: list[torch.Tensor], fill) -> torch.Tensor:
    """Pad tensors of different leading (and second) sizes to one batch."""
    shape = [max(r.shape[d] for r in rows) for d in range(rows[0].dim())]
    out = torch.full((len(rows), *shape), fill, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[(i, *(slice(0, s) for s in r.shape))] = r
    return out


__all__ = ["Dagger", "DaggerConfig", "set_nll"]
