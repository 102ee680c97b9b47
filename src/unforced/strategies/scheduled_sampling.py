"""Scheduled sampling (Bengio et al. 2015): feed gold with probability = the teacher-forcing ratio, else the model's own.

The teacher-forcing ratio is P(feed gold) and decays over training as `schedule` says. Two ways to run it:

    mode="exact"     a true sequential rollout with mixed feeds (Bengio et al. 2015): each own token is chosen
                     from the logits of the step before, through `model.step`
    mode="parallel"  Duckworth et al. 2019, "Parallel Scheduled Sampling": `passes - 1` teacher-forced passes
                     without gradient each propose own tokens for every position at once, mixed with gold by the
                     same coins; a last forced pass with gradient scores gold on the mixed inputs

The loss is always the token NLL of gold. Only `forced` is used in parallel mode, so it runs on every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, Mix, Sample, gold_coins, rollout, sample_tokens
from unforced.schedules import SCHEDULES, Adaptive, Curriculum, make_schedule
from unforced.strategies.base import StepOutput, token_nll
from unforced.vocab import BOS

PREFIX = "scheduled_sampling"


def _default_schedule_params() -> dict[str, Any]:
    # InverseSigmoid ratio(step) = k / (k + exp(step / k)): k = 300 starts at 0.997, is 0.5 at k ln k ~ 1700 steps
    # and ~0.28 at 2000 (TrainConfig's default length), so most of a default run sees mostly-gold feeds.
    return {"k": 300.0}


@dataclass
class ScheduledSamplingConfig:
    """Parameters of scheduled sampling. The schedule's value is the teacher-forcing ratio: P(feed gold).

    Parameters that control the teacher-forcing ratio:
        schedule (str, default "inverse_sigmoid"): a name from `unforced.schedules.SCHEDULES` ("constant",
            "linear", "exponential", "inverse_sigmoid", "piecewise", "adaptive"). Bengio et al. 2015 found the
            inverse sigmoid best on their tasks.
        schedule_params (dict, default {"k": 300.0}): keyword arguments of that schedule. With k = 300 the
            inverse-sigmoid ratio k / (k + exp(step / k)) falls from ~1.0 at step 0 to 0.5 near step 1700 and
            ~0.3 at step 2000: a default run (2000 steps) ends with mostly own tokens fed only near its end.
            "adaptive" needs {"threshold": ...}; it is lowered through `observe` from validation `tf_nll`.
        min_ratio (float, default 0.0): floor of the ratio, in [0, 1] (given to the schedule as its `min_ratio`).

    Parameters that control the feeds:
        per (str, default "token"): one coin per token (Bengio et al. 2015), per "sequence" (one per row), or per
            "batch" (one for the whole batch).
        own (str, default "greedy"): the model's own token is its argmax ("greedy") or a sample ("sample") from
            softmax(logits / temperature).
        temperature (float, default 1.0): > 0; used by own="sample" and by `soft`.
        soft (bool, default False): feed the probability-weighted embedding softmax(logits / temperature) @ the
            embedding table (scaled as `model.embed` scales) instead of a token, so that gradient flows into the
            embeddings of every candidate (and, in exact mode, back through the earlier step's logits).

    Parameters that control how the rollout runs:
        mode (str, default "parallel"): "parallel" (Duckworth et al. 2019: `passes` forced passes, no Python loop
            over time) or "exact" (a sequential rollout through `model.step`).
        passes (int, default 2): >= 2; parallel mode runs `passes - 1` passes without gradient that propose own
            tokens, then one with gradient. Duckworth et al. found 2 passes close to the sequential result.
        tbptt (int | None, default None): exact mode on RNNs only: truncated backpropagation through time, the
            recurrent state is detached every `tbptt` steps (Williams and Peng 1990). None keeps the full graph.

    Parameters of the curriculum:
        curriculum (dict | None, default None): {"max_length_start", "max_length_end", "steps"}: train only on
            pairs whose target (with <eos>) fits a maximum length that rises linearly from start to end over
            `steps` steps (`schedules.Curriculum`), combined with whatever ratio schedule is chosen; shorter
            sequences first, as in curriculum learning (Bengio et al. 2009). None trains on every pair throughout.
    """

    schedule: str = "inverse_sigmoid"
    schedule_params: dict[str, Any] = field(default_factory=_default_schedule_params)
    min_ratio: float = 0.0
    per: str = "token"
    own: str = "greedy"
    temperature: float = 1.0
    soft: bool = False
    mode: str = "parallel"
    passes: int = 2
    tbptt: int | None = None
    curriculum: dict[str, int] | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise UnforcedError(f"{PREFIX}.schedule: unknown schedule {self.schedule!r}; known: "
                                f"{', '.join(sorted(SCHEDULES))}")
        if not isinstance(self.schedule_params, dict):
            raise UnforcedError(f"{PREFIX}.schedule_params must be a mapping, got {self.schedule_params!r}")
        if "min_ratio" in self.schedule_params:
            raise UnforcedError(f"{PREFIX}.schedule_params: give min_ratio as {PREFIX}.min_ratio")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise UnforcedError(f"{PREFIX}.min_ratio must be a teacher-forcing ratio in [0, 1], got "
                                f"{self.min_ratio}")
        for name, allowed in (("per", ("token", "sequence", "batch")), ("own", ("greedy", "sample")),
                              ("mode", ("parallel", "exact"))):
            if getattr(self, name) not in allowed:
                raise UnforcedError(f"{PREFIX}.{name} must be one of {', '.join(allowed)}, got "
                                    f"{getattr(self, name)!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UnforcedError(f"{PREFIX}.temperature must be positive, got {self.temperature}")
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 2:
            raise UnforcedError(f"{PREFIX}.passes must be an integer >= 2, got {self.passes!r}")
        if self.tbptt is not None:
            if isinstance(self.tbptt, bool) or not isinstance(self.tbptt, int) or self.tbptt < 1:
                raise UnforcedError(f"{PREFIX}.tbptt must be None or an integer >= 1, got {self.tbptt!r}")
            if self.mode != "exact":
                raise UnforcedError(f"{PREFIX}.tbptt needs mode='exact' (a parallel pass has no steps to cut)")
        self.build_schedule()  # fails here, naming the field, rather than at the first step
        self.build_curriculum()

    def build_curriculum(self) -> Curriculum | None:
        if self.curriculum is None:
            return None
        if not isinstance(self.curriculum, dict):
            raise UnforcedError(f"{PREFIX}.curriculum must be a mapping, got {self.curriculum!r}")
        known = {"max_length_start", "max_length_end", "steps"}
        if set(self.curriculum) != known:
            raise UnforcedError(f"{PREFIX}.curriculum needs exactly {', '.join(sorted(known))}")
        try:
            return Curriculum(self.build_schedule(), **self.curriculum)
        except (UnforcedError, TypeError) as error:
            raise UnforcedError(f"{PREFIX}.curriculum: {error}") from None

    def build_schedule(self):
        """A fresh schedule (each strategy owns one: Adaptive keeps state)."""
        try:
            return make_schedule(self.schedule, min_ratio=self.min_ratio, **self.schedule_params)
        except UnforcedError as error:
            raise UnforcedError(f"{PREFIX}.schedule_params: {error}") from None


class ScheduledSampling:
    """Scheduled sampling; every coin and sample draws from one `torch.Generator` seeded from `seed`."""

    name = "scheduled_sampling"

    def __init__(self, config: ScheduledSamplingConfig | None = None, seed: int = 0):
        self.config = config or ScheduledSamplingConfig()
        self.schedule = self.config.build_schedule()
        self.curriculum = self.config.build_curriculum()
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    # ---- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "generator_device": str(self.generator.device),
                "schedule": self.schedule.state_dict() if isinstance(self.schedule, Adaptive) else None}

    def load_state_dict(self, state: dict) -> None:
        self.generator = torch.Generator(device=state.get("generator_device", "cpu"))
        self.generator.set_state(state["generator"])
        if state.get("schedule") is not None and isinstance(self.schedule, Adaptive):
            self.schedule.load_state_dict(state["schedule"])

    def max_target_length(self, step: int) -> int | None:
        """The curriculum's longest target at `step` (the Trainer trains on the pairs that fit), or None."""
        return self.curriculum.max_length(step) if self.curriculum is not None else None

    def observe(self, figures: dict) -> None:
        """Forward the validation NLL (`figures["tf_nll"]`) to an Adaptive schedule; other schedules ignore it."""
        if isinstance(self.schedule, Adaptive) and figures.get("tf_nll") is not None:
            self.schedule.observe(float(figures["tf_nll"]))

    def _generator_on(self, device: torch.device) -> torch.Generator:
        # A CPU generator cannot draw on CUDA: move once, seeded the same (the state restarts there).
        if self.generator.device.type != torch.device(device).type:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.generator

    # ---- loss --------------------------------------------------------------------------------------------------
    def loss(self, model, batch, step: int) -> StepOutput:
        ratio = float(self.schedule(step))
        memory = model.encode(batch.source, batch.source_mask)
        if ratio >= 1.0 and not self.config.tbptt:
            # Every feed is gold: teacher forcing exactly, one forced pass whatever the mode (truncated BPTT
            # still needs its step-by-step loop, where the gradient is cut).
            logits = model.forced(memory, batch.inputs).logits
            coins = torch.ones_like(batch.gold_mask)
        elif self.config.mode == "parallel":
            logits, coins = self._parallel(model, memory, batch, ratio)
        else:
            logits, coins = self._exact(model, memory, batch, ratio)
        loss = token_nll(logits, batch.gold, batch.gold_mask)
        fed = batch.gold_mask[:, 1:]  # inputs after <bos> that feed a scored position
        share = float((coins[:, 1:] & fed).sum() / fed.sum().clamp(min=1))
        return StepOutput(loss=loss, logs={"nll": float(loss.detach()), "teacher_forcing_ratio": ratio,
                                           "gold_fed_share": share})

    def _coins(self, batch, ratio: float, device) -> Tensor:
        b, t = batch.gold.shape
        coins = gold_coins(Mix(ratio, per=self.config.per), b, t, self._generator_on(device), device).clone()
        coins[:, 0] = True  # the first input is always <bos>
        return coins  # (batch, time)

    def _own_tokens(self, logits: Tensor) -> Tensor:
        """logits (..., vocab) -> own tokens (...), greedy or sampled, never differentiated."""
        if self.config.own == "greedy":
            return logits.argmax(-1)
        flat = logits.reshape(-1, logits.shape[-1])
        generator = self._generator_on(logits.device)
        return sample_tokens(flat, self.config.temperature, generator=generator).view(logits.shape[:-1])

    def _soft(self, logits: Tensor, table: Tensor) -> Tensor:
        """Probability-weighted embedding: softmax(logits / temperature) @ table, (..., embedding)."""
        return (logits.float() / self.config.temperature).softmax(-1).to(table.dtype) @ table

    def _parallel(self, model, memory, batch, ratio: float) -> tuple[Tensor, Tensor]:
        """Duckworth et al. 2019: passes - 1 no-grad forced passes propose own tokens; the last one has gradient.

        The coins are drawn once and kept across passes, so each pass refreshes the same own positions with the
        predictions of the pass before (with passes = time + 1 and greedy feeds this is the exact rollout).
        """
        gold_inputs = batch.inputs
        coins = self._coins(batch, ratio, gold_inputs.device)
        if self.config.soft:
            table = model.embed(torch.arange(model.output_embedding().shape[0], device=gold_inputs.device))
            gold_embedded = model.embed(gold_inputs)  # (batch, time, embedding), scaled as the model scales
            embedded = gold_embedded
            for index in range(self.config.passes - 1):
                last = index == self.config.passes - 2
                with torch.no_grad():
                    logits = model.forced(memory, gold_inputs, embeddings=embedded).logits
                # The last mixture keeps the table's gradient: every candidate's embedding learns from the loss.
                with torch.set_grad_enabled(last and torch.is_grad_enabled()):
                    own = self._soft(logits[:, :-1], table)
                    embedded = torch.cat([gold_embedded[:, :1],
                                          torch.where(coins[:, 1:, None], gold_embedded[:, 1:], own)], 1)
            return model.forced(memory, gold_inputs, embeddings=embedded).logits, coins
        inputs = gold_inputs
        with torch.no_grad():
            for _ in range(self.config.passes - 1):
                logits = model.forced(memory, inputs).logits  # (batch, time, vocab)
                own = self._own_tokens(logits[:, :-1])  # own token of step t-1 is the candidate input at t
                inputs = torch.cat([gold_inputs[:, :1], torch.where(coins[:, 1:], gold_inputs[:, 1:], own)], 1)
        return model.forced(memory, inputs).logits, coins

    def _exact(self, model, memory, batch, ratio: float) -> tuple[Tensor, Tensor]:
        """A sequential rollout with mixed feeds.

        Hard feeds are never differentiated, so the logits along the rollout are a function of the parameters
        through the fed tokens only: the rollout runs without gradient to choose them, and one forced pass with
        gradient on those inputs gives the same logits and gradients (`forced` equals stepping, the model
        contract) at the cost of a teacher-forced step, with the fused RNN backward instead of a per-step one.
        With dropout on, the choosing pass and the scored pass draw different dropout masks.
        Soft feeds and `tbptt` need the gradient through the steps: they run the loop with gradient.
        """
        device = batch.gold.device
        if self.config.soft or self.config.tbptt is not None:
            return self._exact_loop(model, memory, batch, ratio)
        own = Greedy() if self.config.own == "greedy" else Sample(self.config.temperature)
        with torch.no_grad():
            result = rollout(model, memory, Mix(ratio, own, self.config.per), gold=batch.gold,
                             generator=self._generator_on(device), stop_at_eos=False, keep_hidden=False)
        return model.forced(memory, result.inputs).logits, result.gold_fed

    def _exact_loop(self, model, memory, batch, ratio: float) -> tuple[Tensor, Tensor]:
        """The rollout written out, for soft feeds (embeddings, not tokens) and truncated backpropagation."""
        gold = batch.gold
        b, t = gold.shape
        coins = self._coins(batch, ratio, gold.device)
        table = None
        if self.config.soft:
            table = model.embed(torch.arange(model.output_embedding().shape[0], device=gold.device))
        state = model.start(memory, b)
        if self.config.tbptt is not None and not isinstance(state, Tensor):
            raise UnforcedError(f"{PREFIX}.tbptt works on recurrent models only (the state of "
                                f"{type(model).__name__} is not a recurrent state); set tbptt to None")
        tokens = torch.full((b,), BOS, dtype=torch.long, device=gold.device)
        embedded = None
        outputs = []
        for step in range(t):
            if self.config.tbptt is not None and step and step % self.config.tbptt == 0:
                state = state.detach()
            logits, _, state = model.step(memory, state, tokens, embeddings=embedded)  # (batch, vocab)
            outputs.append(logits)
            if step + 1 == t:
                break
            coin = coins[:, step + 1]
            if table is not None:
                gold_embedded = model.embed(gold[:, step])
                embedded = torch.where(coin[:, None], gold_embedded, self._soft(logits, table))
                tokens = gold[:, step]  # carries only the batch size now
            else:
                tokens = torch.where(coin, gold[:, step], self._own_tokens(logits.detach()))
        return torch.stack(outputs, 1), coins


__all__ = ["ScheduledSampling", "ScheduledSamplingConfig"]
