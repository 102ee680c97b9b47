"""Milliseconds per scheduled-sampling training step (forward, backward, AdamW) at the reference size.

Compares, on the same batch and from the same weights, for the GRU and LSTM encoder-decoders with attention
(vocabulary 8000, embedding 256, hidden 512, batch 64, lengths 30, dropout 0.1 in train mode) at teacher-forcing
ratio 0.5:

    teacher_forcing   one forced pass (the floor)
    parallel          `parallel_scheduled_sampling` (Duckworth et al. 2019), 2 passes (one without gradient)
    exact             `scheduled_sampling`: a step loop without gradient chooses the inputs, one forced pass with
                      gradient scores them (for a deterministic model the loss and gradients of `step_loop`)
    step_loop         a competent step loop with gradient through every step: per-token coins drawn at once,
                      `model.step` per position, the logits collected in a list and joined with `torch.stack`
    naive             scheduled sampling as often first written: a Python loop over steps, one coin per step for
                      the whole batch, an `outputs` tensor filled step by step

The five variants of each kind are timed interleaved (`common.interleaved`: each round calls every one once, in
a rotating order), at least 5 rounds after a warm-up, so a noisy neighbour shows as spread in every variant
rather than as one variant's result. Prints JSON with `provenance`, the median and min of each, the ratios of
medians (`ratios`, which the goals read), of minima, and the median over rounds of each round's own ratio
(`paired_ratios`, what a burst of load that spans a round cancels out of), and `goals`: exact / teacher_forcing <= 1.5 (the floor is ~1.3: a no-grad decode, about 0.3 of
a step, plus one forced step), parallel / teacher_forcing <= 1.3, exact / naive <= 0.8.
`--quick` shrinks everything so the tests can run it in seconds (its figures are noise, not speeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import goal, interleaved, provenance  # noqa: E402
from train_step import QUICK, REFERENCE, model_config, random_batch, training_step  # noqa: E402

from unforced.models import build_model  # noqa: E402
from unforced.rollout import gold_coins  # noqa: E402
from unforced.strategies.base import StepOutput, token_nll  # noqa: E402
from unforced.strategies.parallel_scheduled_sampling import (  # noqa: E402
    ParallelScheduledSampling,
    ParallelScheduledSamplingConfig,
)
from unforced.strategies.scheduled_sampling import ScheduledSampling, ScheduledSamplingConfig  # noqa: E402
from unforced.strategies.teacher_forcing import TeacherForcing  # noqa: E402
from unforced.vocab import BOS  # noqa: E402

RATIO = 0.5
KINDS = ("gru", "lstm")
VARIANTS = ("teacher_forcing", "parallel", "exact", "step_loop", "naive")
GOALS = {"exact/teacher_forcing": 1.5, "parallel/teacher_forcing": 1.3, "exact/naive": 0.8}
RATIOS = ("exact/teacher_forcing", "parallel/teacher_forcing", "exact/step_loop", "exact/naive",
          "step_loop/teacher_forcing", "naive/teacher_forcing")


class StepLoopScheduledSampling:
    """Scheduled sampling as a competent step loop with gradient through every step: the baseline `exact` is
    held against. The same feeds as `scheduled_sampling` (per-token coins, greedy own tokens)."""

    name = "step_loop"

    def __init__(self, ratio: float, seed: int = 0):
        self.feed = ScheduledSamplingConfig(schedule="constant", schedule_params={"ratio": ratio}).mix(ratio)
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, model, batch, step: int) -> StepOutput:
        memory = model.encode(batch.source, batch.source_mask)
        rows, width = batch.gold.shape
        coins = gold_coins(self.feed, rows, width, self.generator)  # (batch, time) True where gold is fed
        state = model.start(memory, rows)
        fed, logits_all = batch.inputs[:, 0], []
        for position in range(width):
            logits, _, state = model.step(memory, state, fed)
            logits_all.append(logits)
            if position + 1 < width:
                fed = torch.where(coins[:, position + 1], batch.gold[:, position], logits.detach().argmax(-1))
        loss = token_nll(torch.stack(logits_all, 1), batch.gold, batch.gold_mask)
        return StepOutput(loss=loss, logs={"nll": float(loss.detach())})


class NaiveScheduledSampling:
    """The loop written the naive way, as a baseline: what sequential `scheduled_sampling` is measured against."""

    name = "naive"

    def __init__(self, ratio: float, seed: int = 0):
        self.ratio = ratio
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, model, batch, step: int) -> StepOutput:
        memory = model.encode(batch.source, batch.source_mask)
        b, t = batch.gold.shape
        state = model.start(memory, b)
        outputs = torch.zeros(b, t, model.config.target_vocab)
        token = torch.full((b,), BOS, dtype=torch.long)
        for position in range(t):
            logits, _, state = model.step(memory, state, token)
            outputs[:, position] = logits
            if float(torch.rand(1, generator=self.generator)) < self.ratio:
                token = batch.gold[:, position]
            else:
                token = logits.argmax(-1)
        loss = token_nll(outputs, batch.gold, batch.gold_mask)
        return StepOutput(loss=loss, logs={"nll": float(loss.detach())})


def strategies(ratio: float) -> dict:
    schedule = {"schedule": "constant", "schedule_params": {"ratio": ratio}}
    return {"teacher_forcing": TeacherForcing(),
            "parallel": ParallelScheduledSampling(ParallelScheduledSamplingConfig(**schedule, passes=2), seed=0),
            "exact": ScheduledSampling(ScheduledSamplingConfig(**schedule), seed=0),
            "step_loop": StepLoopScheduledSampling(ratio, seed=0),
            "naive": NaiveScheduledSampling(ratio, seed=0)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (at least 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5: a median of fewer says little on a shared machine")
    size = QUICK if args.quick else REFERENCE
    batch = random_batch(size, torch.Generator().manual_seed(0))
    ms_per_step = {}
    for kind in KINDS:
        steps = {}
        for name, strategy in strategies(RATIO).items():
            torch.manual_seed(0)  # every variant starts from the same weights
            steps[name] = training_step(build_model(model_config(kind, size)), strategy, batch)
        ms_per_step[kind] = interleaved(steps, repeats=args.repeats, warmup=args.warmup)
        del steps  # free this kind's models and optimizer states before the next kind's
    ratios, ratios_of_min, paired_ratios = {}, {}, {}
    for kind, entry in ms_per_step.items():
        pairs = {ratio: (entry[ratio.split("/")[0]], entry[ratio.split("/")[1]]) for ratio in RATIOS}
        ratios[kind] = {ratio: top["median"] / bottom["median"] for ratio, (top, bottom) in pairs.items()}
        ratios_of_min[kind] = {ratio: top["min"] / bottom["min"] for ratio, (top, bottom) in pairs.items()}
        paired_ratios[kind] = {ratio: statistics.median(a / b for a, b in zip(top["samples"], bottom["samples"],
                                                                               strict=True))
                               for ratio, (top, bottom) in pairs.items()}
    results = {
        "benchmark": "scheduled_sampling", "quick": args.quick, "size": size, "ratio": RATIO, "passes": 2,
        "provenance": provenance(), "repeats": args.repeats, "warmup": args.warmup,
        "method": "each call is one full training step (loss, backward, clipping at 1.0, AdamW) of one variant on "
                  "its own copy of the seed-0 weights (dropout 0.1, train mode), on one fixed random batch with no "
                  "padding; the five variants of a kind interleaved, the order rotated each round; every variant "
                  "feeds gold with probability 0.5 and greedy own tokens otherwise, with per-token coins except "
                  "naive (one coin per step for the whole batch); exact and step_loop make the same choices for a "
                  "deterministic model (tests/test_scheduled_sampling.py holds their losses and gradients equal "
                  "with dropout off); ratios are of medians (ratios_of_min: of minima; paired_ratios: the median "
                  "over rounds of the ratio within each round)",
        "ms_per_step": ms_per_step, "ratios": ratios, "ratios_of_min": ratios_of_min,
        "paired_ratios": paired_ratios,
        "goals": {f"{kind} {ratio}": goal(ratios[kind][ratio], target)
                  for kind in KINDS for ratio, target in GOALS.items()},
    }
    if not args.json:
        for kind in KINDS:
            for name in VARIANTS:
                entry = ms_per_step[kind][name]
                print(f"{kind} {name}: median {entry['median']:.1f} ms/step, min {entry['min']:.1f}",
                      file=sys.stderr)
    print(json.dumps(results, indent=None if args.json else 1))
    return results


if __name__ == "__main__":
    main()
