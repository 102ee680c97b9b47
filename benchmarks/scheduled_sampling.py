"""Milliseconds per scheduled-sampling training step (forward, backward, AdamW) at the reference size.

Compares, in one run and on the same batch, for the GRU and LSTM encoder-decoders with attention (vocabulary 8000,
embedding 256, hidden 512, batch 64, lengths 30) at teacher-forcing ratio 0.5:

    teacher_forcing   one forced pass (the floor)
    parallel          `parallel_scheduled_sampling` (Duckworth et al. 2019), 2 passes (one without gradient)
    exact             `scheduled_sampling`: the sequential rollout chooses the feeds without gradient, one
                      forced pass with gradient scores them (same loss and gradients)
    exact_through_steps  the same rollout differentiated through every step (`rollout` with grad)
    naive             scheduled sampling as often first written: a Python loop over steps (even at ratio 1.0),
                      one coin per step for the whole batch, an `outputs` tensor filled step by step

Prints JSON with ratios parallel / teacher_forcing (goal <= 1.5) and exact / naive (goal <= 0.8).
`--quick` shrinks everything so the tests can run it in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import QUICK, REFERENCE, model_config, random_batch, time_steps  # noqa: E402

from unforced.models import build_model  # noqa: E402
from unforced.rollout import rollout  # noqa: E402
from unforced.strategies.base import StepOutput, token_nll  # noqa: E402
from unforced.strategies.parallel_scheduled_sampling import (  # noqa: E402
    ParallelScheduledSampling,
    ParallelScheduledSamplingConfig,
)
from unforced.strategies.scheduled_sampling import ScheduledSampling, ScheduledSamplingConfig  # noqa: E402
from unforced.strategies.teacher_forcing import TeacherForcing  # noqa: E402
from unforced.vocab import BOS  # noqa: E402

RATIO = 0.5


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


class ThroughSteps(ScheduledSampling):
    """Sequential scheduled sampling with the gradient taken through every step of the rollout."""

    def mixed_logits(self, model, memory, batch, ratio):
        result = rollout(model, memory, self.config.mix(ratio), gold=batch.gold,
                         generator=self.ratio.generator_on(batch.gold.device), stop_at_eos=False, keep_hidden=False)
        return result.logits, result.gold_fed


def strategies(ratio: float) -> dict:
    schedule = {"schedule": "constant", "schedule_params": {"ratio": ratio}}
    return {"teacher_forcing": TeacherForcing(),
            "parallel": ParallelScheduledSampling(ParallelScheduledSamplingConfig(**schedule, passes=2), seed=0),
            "exact": ScheduledSampling(ScheduledSamplingConfig(**schedule), seed=0),
            "exact_through_steps": ThroughSteps(ScheduledSamplingConfig(**schedule), seed=0),
            "naive": NaiveScheduledSampling(ratio)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    size = QUICK if args.quick else REFERENCE
    batch = random_batch(size, torch.Generator().manual_seed(0))
    results = {"benchmark": "scheduled_sampling", "quick": args.quick, "size": size, "ratio": RATIO,
               "passes": 2, "threads": torch.get_num_threads(), "torch": str(torch.__version__),
               "repeats": args.repeats, "warmup": 1, "ms_per_step": {}, "ratios": {}}
    for kind in ("gru", "lstm"):
        entry = {}
        for name, strategy in strategies(RATIO).items():
            torch.manual_seed(0)  # every method starts from the same weights
            model = build_model(model_config(kind, size))
            times = time_steps(model, strategy, batch, args.repeats, warmup=1)
            entry[name] = {"median": statistics.median(times), "min": min(times), "max": max(times)}
            if not args.json:
                print(f"{kind} {name}: {statistics.median(times):.1f} ms/step", file=sys.stderr)
        results["ms_per_step"][kind] = entry
        results["ratios"][kind] = {
            "parallel/teacher_forcing": entry["parallel"]["median"] / entry["teacher_forcing"]["median"],
            "exact/naive": entry["exact"]["median"] / entry["naive"]["median"],
            "exact_through_steps/naive": entry["exact_through_steps"]["median"] / entry["naive"]["median"],
        }
    results["goals"] = {"parallel/teacher_forcing": 1.5, "exact/naive": 0.8}
    print(json.dumps(results, indent=None if args.json else 1))
    return results


if __name__ == "__main__":
    main()
