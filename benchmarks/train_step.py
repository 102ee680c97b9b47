"""Milliseconds per teacher-forcing training step (forward, backward, AdamW) at the reference size.

Reference size (every speed issue uses it): vocabulary 8000, embedding 256, hidden 512, batch 64, source and
target length 30, for the GRU and LSTM encoder-decoders with attention; the Transformer has d_model 256 and 4+4
layers. Prints JSON. `--quick` shrinks everything so the tests can run it in seconds. `--device` chooses where
the model and batch live (auto: CUDA where available); on CUDA each timed step ends with a synchronize.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from unforced.distributed import choose_device
from unforced.models import ModelConfig, build_model
from unforced.strategies import make_strategy
from unforced.tasks.base import Batch
from unforced.vocab import BOS, EOS

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


def time_steps(model, strategy, batch: Batch, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each full training step (loss, backward, clipping, AdamW) after `warmup` untimed ones, on
    the device of `model` (which `batch` must share)."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        output = strategy.loss(model, batch, index)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    device = choose_device(args.device)
    size = QUICK if args.quick else REFERENCE
    repeats = args.repeats or (3 if args.quick else 10)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(size, generator).to(device)
    results = {"benchmark": "train_step", "quick": args.quick, "size": size, "device": str(device),
               "threads": torch.get_num_threads(),
               "torch": str(torch.__version__), "ms_per_step": {}}
    for kind in ("gru", "lstm", "transformer"):
        torch.manual_seed(0)
        times = time_steps(build_model(model_config(kind, size)).to(device), make_strategy("teacher_forcing"), batch, repeats,
                           warmup=1 if args.quick else 2)
        results["ms_per_step"][kind] = {"median": statistics.median(times), "min": min(times),
                                        "max": max(times), "repeats": repeats}
        if not args.json:
            print(f"{kind}: {statistics.median(times):.1f} ms/step", file=sys.stderr)
    print(json.dumps(results, indent=None if args.json else 1))
    return results


if __name__ == "__main__":
    main()
