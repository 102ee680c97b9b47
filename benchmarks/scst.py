"""Sequences per second of a self-critical (SCST) training step at the reference size, and the rewards' speed.

One step of `reinforce` (K = 5 samples plus the greedy baseline, no gradient; one forced pass with gradient over
the samples; backward; AdamW) on the GRU + attention model at the reference size (vocabulary 8000, embedding 256,
hidden 512, batch 64, lengths 30). The model has random weights, so its samples run to the full length: the
worst case. It is timed with `interleaved` against a teacher-forcing step of a copy of the same model on the same
batch (rounds alternate the two, >= 5 timed rounds; median and min), so the ratio says what SCST costs in
teacher-forcing steps on this machine at this moment. The SCST step is split into sampling (both no-grad
rollouts), decoding ids to text, the reward (BLEU against 5 references per source), and the rest (the forced pass
with backward and the optimizer step). Then the throughput of the CIDEr-D and BLEU rewards against their
reference implementations (from benchmarks/rewards_speed.py).

    python benchmarks/scst.py [--quick] [--json] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rewards_speed  # noqa: E402
from common import goal, interleaved, provenance  # noqa: E402
from train_step import QUICK, REFERENCE, model_config, random_batch, training_step  # noqa: E402

import unforced.strategies.reinforce as reinforce_module  # noqa: E402
from unforced.models import build_model  # noqa: E402
from unforced.rewards import get_reward  # noqa: E402
from unforced.strategies.reinforce import Reinforce, ReinforceConfig  # noqa: E402
from unforced.strategies.teacher_forcing import TeacherForcing  # noqa: E402
from unforced.tasks.tokenizers import EOS, UNK  # noqa: E402

REWARD_SHARE_GOAL = 0.05  # the reward (BLEU, 5 references) should be a small part of an SCST step
CIDER_SPEEDUP_GOAL = 10.0  # CIDEr-D (corpus document frequencies, cached) over pycocoevalcap's, per batch


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
    forced_model = copy.deepcopy(model)  # the teacher-forcing side trains its own copy: neither moves the other
    strategy = Reinforce(ReinforceConfig(reward="bleu", samples=samples, baseline="greedy"), seed=0)
    clock = Clock()
    strategy.decode = clock.wrap("decode", decode)
    strategy.reward = clock.wrap("reward", get_reward("bleu"))
    scst = training_step(model, strategy, batch)
    shares: list[dict[str, float]] = []
    lengths: list[float] = []

    def scst_timed() -> None:
        clock.seconds = {}
        start = time.perf_counter()
        scst()
        total = time.perf_counter() - start
        parts = dict(clock.seconds)
        parts["forced_backward_optimizer"] = total - sum(parts.values())
        shares.append({key: value / total for key, value in parts.items()})

    original_rollout = reinforce_module.rollout

    def rollout_timed(*args, **kwargs):
        drawn = clock.wrap("sampling", original_rollout)(*args, **kwargs)
        if kwargs.get("generator") is not None:  # the K samples, not the greedy decode
            lengths.append(float(drawn.lengths.float().mean()))
        return drawn

    reinforce_module.rollout = rollout_timed
    try:
        timing = interleaved({"scst_step": scst_timed,
                              "teacher_forcing_step": training_step(forced_model, TeacherForcing(), batch)},
                             repeats=repeats, warmup=warmup)
    finally:
        reinforce_module.rollout = original_rollout
    shares = shares[warmup:]  # interleaved's warm-up rounds are not timed
    share = {key: round(statistics.median(s[key] for s in shares), 3) for key in shares[0]}
    scst_ms, forced_ms = timing["scst_step"], timing["teacher_forcing_step"]
    sequences = size["batch"] * samples

    def milliseconds(entry: dict) -> dict:
        return {"median": round(entry["median"], 1), "min": round(entry["min"], 1), "max": round(entry["max"], 1),
                "repeats": len(entry["samples"])}

    return {"model": "gru", "samples_per_source": samples, "baseline": "greedy", "reward": "bleu",
            "references_per_source": 5, "decoded_length": round(statistics.median(lengths), 1),
            "timing": f"interleaved with a teacher-forcing step, {repeats} rounds after {warmup} warm-up",
            "ms_per_step": {"scst": milliseconds(scst_ms), "teacher_forcing": milliseconds(forced_ms)},
            # The SCST step again in seconds, under the name of the earlier records (and compare_commits.py's key).
            "seconds_per_step": {"median": round(scst_ms["median"] / 1000, 3), "min": round(scst_ms["min"] / 1000, 3),
                                 "max": round(scst_ms["max"] / 1000, 3), "repeats": repeats},
            "scst_over_teacher_forcing": {"median": round(scst_ms["median"] / forced_ms["median"], 2),
                                          "min": round(scst_ms["min"] / forced_ms["min"], 2)},
            "sampled_sequences_per_second": {"median": round(1000.0 * sequences / scst_ms["median"], 1),
                                             "best": round(1000.0 * sequences / scst_ms["min"], 1)},
            "sources_per_second": round(1000.0 * size["batch"] / scst_ms["median"], 1),
            "share_of_step": share}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 2)")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else REFERENCE
    repeats = args.repeats or (2 if args.quick else 5)
    step = scst_step(size, repeats, warmup=1)
    if not args.json:
        print(f"SCST step: {step['ms_per_step']['scst']['median']:.0f} ms "
              f"({step['scst_over_teacher_forcing']['median']}x a teacher-forcing step), "
              f"{step['sampled_sequences_per_second']['median']} sampled sequences/s, shares {step['share_of_step']}",
              file=sys.stderr)
    with contextlib.redirect_stdout(io.StringIO()):  # rewards_speed prints its own JSON
        rewards = rewards_speed.main(["--json"] + (["--quick"] if args.quick else []))
    result = {"provenance": provenance(device="cpu"), "benchmark": "scst", "quick": args.quick, "size": size,
              "threads": torch.get_num_threads(), "torch": str(torch.__version__), "scst_step": step,
              "rewards": {key: rewards[key] for key in ("batch_size", "references_per_hypothesis", "cider_d_ms",
                                                        "cider_d_speedup", "cider_d_max_abs_difference",
                                                        "bleu_ms", "bleu_speedup")}}
    warm = rewards["cider_d_ms"]["ours_corpus_df_warm"]
    result["rewards"]["cider_d_hypotheses_per_second"] = round(1000.0 * rewards["batch_size"] / warm, 1)
    result["rewards"]["bleu_hypotheses_per_second"] = round(
        1000.0 * rewards["batch_size"] / rewards["bleu_ms"]["ours_warm"], 1)
    cider_speedup = rewards["cider_d_speedup"]["pycocoevalcap_over_ours_warm"]
    result["goals"] = {
        "reward_share_of_scst_step": goal(step["share_of_step"]["reward"], REWARD_SHARE_GOAL),
        "cider_d_speedup_over_pycocoevalcap": goal(cider_speedup, CIDER_SPEEDUP_GOAL, lower_is_better=False),
    }
    print(json.dumps(result, indent=None if args.json else 1))
    return result


if __name__ == "__main__":
    main()
