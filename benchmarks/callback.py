"""What the training-loop callback costs per call: the gap figures of 256 examples of 32 target tokens on a tiny
GPT-2 (2 layers, width 64), one teacher-forced pass plus one greedy decode of the sample under no_grad, as
`unforced.callbacks.GapMonitor.measure` runs them inside a transformers or Lightning Trainer.

    python benchmarks/callback.py [--quick] [--json]

The goal (issue: "under 2 s on 2 cores") is on the median of at least 5 timed calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import torch
from common import goal, interleaved, provenance
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from unforced.callbacks import GapMonitor

WORDS = [f"w{i}" for i in range(60)]


def tokenizer() -> PreTrainedTokenizerFast:
    vocabulary = ["<pad>", "<s>", "</s>", "<unk>", *WORDS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def pairs(count: int, length: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = " ".join(rng.choices(WORDS, k=length))
        out.append((" ".join(rng.choices(WORDS, k=8)), [words]))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    examples, length, repeats = (32, 8, 2) if args.quick else (256, 32, 7)
    tok = tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=128,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=0))
    model.train()  # as inside a training loop: the monitor switches to eval and back
    monitor = GapMonitor(pairs(examples, length), tok, every=1, limit=examples, metric="bleu")
    step = iter(range(1, 10_000))
    timing = interleaved({"measure": lambda: monitor.measure(model, next(step))}, repeats=repeats, warmup=1)
    median = timing["measure"]["median"]
    results = {"benchmark": "callback", "quick": args.quick,
               "provenance": provenance(quick=args.quick),
               "size": {"examples": examples, "target_tokens": length, "layers": 2, "width": 64,
                        "vocab": len(tok)},
               "ms_per_call": timing["measure"],
               "still_training_mode": model.training,
               "goals": {"callback call, 256 x 32 tokens, tiny GPT-2 (ms)": goal(median, 2000.0)}}
    if args.quick:
        results["goals"] = {}  # the quick sizes say nothing about the goal
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
