"""Sequences per second of a self-critical (SCST) training step at the reference size, and the rewards' speed.

One step of `reinforce` (K = 5 samples plus the greedy baseline, no gradient; one forced pass with gradient over
the samples; backward; AdamW) on the GRU + attention model at the reference size (vocabulary 8000, embedding 256,
hidden 512, batch 64, lengths 30). The model has random weights, so its samples run to the full length: the
worst case. Time is split into sampling (both no-grad rollouts), decoding ids to text, the reward (BLEU against
5 references per source), and the forced pass with backward and the optimizer step. Then the throughput of the
CIDEr-D and BLEU rewards against their reference implementations (from benchmarks/rewards_speed.py).

    python benchmarks/scst.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rewards_speed  # noqa: E402
from train_step import QUICK, REFERENCE, model_config, random_batch  # noqa: E402

import unforced.strategies.reinforce as reinforce_module  # noqa: E402
from unforced.models import build_model  # noqa: E402
from unforced.rewards import get_reward  # noqa: E402
from unforced.strategies.reinforce import Reinforce, ReinforceConfig  # noqa: E402
from unforced.tasks.tokenizers import EOS, UNK  # noqa: E402


def decode(rows: list[list[int]]) -> list[str]:
    out = []
    for row in rows:
        words = []
        for token in row:
            if token == EOS:
                break
            if token > UNK:
                words.append(f"w{token}")
        out.append(" ".join(words))
    return out


class Clock:
    """Seconds spent inside wrapped functions, by label."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, label: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        return timed


def scst_step(size: dict, repeats: int, warmup: int, samples: int = 5) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(size, generator)
    # Five references per source, drawn from the gold ids so that some n-grams match.
    references = []
    for row in batch.gold.tolist():
        words = decode([row])[0].split()
        references.append([" ".join(words[k:] + words[:k]) for k in range(5)])
    batch.references = references
    torch.manual_seed(0)
    model = build_model(model_config("gru", size))
    model.train()
    strategy = Reinforce(ReinforceConfig(reward="bleu", samples=samples, baseline="greedy"), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clock = Clock()
    reinforce_module.rollout = clock.wrap("sampling", reinforce_module.rollout)
    strategy.decode = clock.wrap("decode", decode)
    strategy.reward = clock.wrap("reward", get_reward("bleu"))
    totals, shares = [], []
    try:
        for index in range(warmup + repeats):
            clock.seconds = {}
            start = time.perf_counter()
            output = strategy.loss(model, batch, index)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total = time.perf_counter() - start
            if index >= warmup:
                totals.append(total)
                parts = dict(clock.seconds)
                parts["forced_backward_optimizer"] = total - sum(parts.values())
                shares.append(parts)
    finally:
        reinforce_module.rollout = rollout_original
    median = statistics.median(totals)
    share = {key: round(statistics.median(s[key] / t for s, t in zip(shares, totals, strict=True)), 3)
             for key in shares[0]}
    sequences = size["batch"] * samples
    return {"model": "gru", "samples_per_source": samples, "baseline": "greedy", "reward": "bleu",
            "references_per_source": 5, "decoded_length": int(output.logs["sample_length"]),
            "seconds_per_step": {"median": round(median, 3), "min": round(min(totals), 3),
                                 "max": round(max(totals), 3), "repeats": repeats},
            "sampled_sequences_per_second": round(sequences / median, 1),
            "sources_per_second": round(size["batch"] / median, 1),
            "share_of_step": share}


rollout_original = reinforce_module.rollout


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    size = QUICK if args.quick else REFERENCE
    repeats = args.repeats or (2 if args.quick else 5)
    step = scst_step(size, repeats, warmup=1)
    if not args.json:
        print(f"SCST step: {step['seconds_per_step']['median']:.2f} s, "
              f"{step['sampled_sequences_per_second']} sampled sequences/s, shares {step['share_of_step']}",
              file=sys.stderr)
    with contextlib.redirect_stdout(io.StringIO()):  # rewards_speed prints its own JSON
        rewards = rewards_speed.main(["--json"] + (["--quick"] if args.quick else []))
    result = {"benchmark": "scst", "quick": args.quick, "size": size, "threads": torch.get_num_threads(),
              "torch": str(torch.__version__), "scst_step": step,
              "rewards": {key: rewards[key] for key in ("batch_size", "references_per_hypothesis", "cider_d_ms",
                                                        "cider_d_speedup", "cider_d_max_abs_difference",
                                                        "bleu_ms", "bleu_speedup")}}
    warm = rewards["cider_d_ms"]["ours_corpus_df_warm"]
    result["rewards"]["cider_d_hypotheses_per_second"] = round(1000.0 * rewards["batch_size"] / warm, 1)
    result["rewards"]["bleu_hypotheses_per_second"] = round(
        1000.0 * rewards["batch_size"] / rewards["bleu_ms"]["ours_warm"], 1)
    result["rewards"]["cider_d_goal_10x_over_pycocoevalcap_met"] = (
        rewards["cider_d_speedup"]["pycocoevalcap_over_ours_warm"] >= 10.0)
    print(json.dumps(result, indent=None if args.json else 1))
    return result


if __name__ == "__main__":
    main()
