"""Milliseconds per teacher-forcing training step (forward, backward, AdamW) at the reference size.

Reference size (every speed issue uses it): vocabulary 8000, embedding 256, hidden 512, batch 64, source and
target length 30, for the GRU and LSTM encoder-decoders with attention; the Transformer has d_model 256 and 4+4
layers. The three kinds are timed interleaved (`common.interleaved`: each round steps every kind once, in a
rotating order), so a noisy neighbour shows as spread in every kind rather than as one kind's figure; median and
min over at least 5 rounds. Prints JSON with `provenance` and `goals`. `--quick` shrinks everything so the tests
can run it in seconds. `--device` chooses where the model and batch live (auto: CUDA where available); on CUDA
each timed step ends with a synchronize.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, provenance  # noqa: E402

from unforced.distributed import choose_device
from unforced.models import ModelConfig, build_model
from unforced.strategies import make_strategy
from unforced.tasks.base import Batch
from unforced.vocab import BOS, EOS

KINDS = ("gru", "lstm", "transformer")
REFERENCE = {"vocab": 8000, "embedding": 256, "hidden": 512, "batch": 64, "length": 30, "transformer_width": 256,
             "transformer_layers": 4, "heads": 4}
QUICK = {"vocab": 200, "embedding": 16, "hidden": 32, "batch": 8, "length": 8, "transformer_width": 32,
         "transformer_layers": 1, "heads": 2}


def random_batch(size: dict, generator: torch.Generator) -> Batch:
    b, t, v = size["batch"], size["length"], size["vocab"]
    source = torch.randint(4, v, (b, t), generator=generator)
    gold = torch.randint(4, v, (b, t), generator=generator)
    gold[:, -1] = EOS
    inputs = torch.cat([torch.full((b, 1), BOS), gold[:, :-1]], 1)
    return Batch(source=source, source_mask=torch.ones(b, t, dtype=torch.bool), inputs=inputs, gold=gold,
                 gold_mask=torch.ones(b, t, dtype=torch.bool), sources=[""] * b, references=[[""]] * b)


def model_config(kind: str, size: dict) -> ModelConfig:
    transformer = kind == "transformer"
    return ModelConfig(kind=kind, source_vocab=size["vocab"], target_vocab=size["vocab"],
                       embedding=size["embedding"],
                       hidden=size["transformer_width"] if transformer else size["hidden"],
                       layers=size["transformer_layers"] if transformer else 1, heads=size["heads"], dropout=0.1,
                       max_source_len=size["length"], max_target_len=size["length"])


def training_step(model, strategy, batch: Batch) -> Callable[[], None]:
    """One full training step (loss, backward, clipping, AdamW) of `strategy` on `model`, as a call to time; on
    CUDA it ends with a synchronize, so the clock sees the work. `batch` must share the model's device."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    steps = itertools.count()

    def step() -> None:
        output = strategy.loss(model, batch, next(steps))
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 10, at least 5)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 10)
    if repeats < 5:
        parser.error("--repeats must be at least 5: a median of fewer says little on a shared machine")
    device = choose_device(args.device)
    size = QUICK if args.quick else REFERENCE
    warmup = 1 if args.quick else 2
    batch = random_batch(size, torch.Generator().manual_seed(0)).to(device)
    variants = {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build_model(model_config(kind, size)).to(device)
        variants[kind] = training_step(model, make_strategy("teacher_forcing"), batch)
    timing = interleaved(variants, repeats=repeats, warmup=warmup)
    results = {"benchmark": "train_step", "quick": args.quick, "size": size, "device": str(device),
               "provenance": provenance(device=str(device)),
               "method": f"one teacher-forcing training step (forward, backward, clipping, AdamW) per call, each "
                         f"kind from seed-0 weights with dropout 0.1 on one fixed random batch; {warmup} untimed "
                         f"rounds, then {repeats} timed rounds interleaved: each round calls every kind once, the order "
                         f"rotated each round",
               "ms_per_step": {kind: {**timing[kind], "repeats": repeats} for kind in KINDS},
               "goals": {},
               "goals_note": "no speed goal has been raised for the teacher-forcing step: it is the floor the other "
                             "benchmarks (scheduled_sampling, scst) divide by"}
    if not args.json:
        for kind in KINDS:
            entry = results["ms_per_step"][kind]
            print(f"{kind}: median {entry['median']:.1f} ms/step, min {entry['min']:.1f}", file=sys.stderr)
    print(json.dumps(results, indent=None if args.json else 1))
    return results


if __name__ == "__main__":
    main()
