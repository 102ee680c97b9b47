"""Captioning: CIDEr-D speed, the reward's share of an SCST step, and SCST's CIDEr-D gain over cross-entropy.

1. CIDEr-D of 5,000 candidates x 5 references of the composed caption grammar, the document frequencies computed
   once from those references (`CiderD(references_corpus)`), the scoring calls timed with `interleaved`.
2. A CNN-attention captioner (the image front end + GRU with attention) on the composed `captions` corpus: trained
   with cross-entropy, then from that model (same weights, same batches) three branches of equal steps: more
   cross-entropy, SCST with the greedy baseline (Rennie et al. 2017) and SCST with leave-one-out (Kool et al.
   2019), each with K samples and the CIDEr-D reward whose document frequencies are the training split's five
   references per image. Test CIDEr-D (greedy, all five references, held-out combinations) per seed; the relative
   gain of each SCST branch over the cross-entropy branch of equal steps (and over the cross-entropy start).
   The SCST steps' time inside the reward function is their reward share.
Anchors: Rennie et al. 2017, Table 4 (COCO, CIDEr-D): Att2in 101.3 -> 111.4 (+10%), Att2all 97.9 -> 113.7 (+16%).

    python benchmarks/captioning.py [--quick] [--json] [--seeds N] [--threads T]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import goal, interleaved, provenance  # noqa: E402

from unforced.diagnostics import evaluate  # noqa: E402
from unforced.models import ModelConfig, build_model  # noqa: E402
from unforced.rewards import get_reward  # noqa: E402
from unforced.rewards.cider import CiderD  # noqa: E402
from unforced.strategies.reinforce import Reinforce, ReinforceConfig  # noqa: E402
from unforced.strategies.teacher_forcing import TeacherForcing  # noqa: E402
from unforced.tasks import captions  # noqa: E402
from unforced.tasks.base import Example, Task  # noqa: E402

CIDER_SECONDS_GOAL = 0.2  # 5,000 candidates x 5 references, document frequencies cached
REWARD_SHARE_GOAL = 0.05
ANCHORS = {"rennie2017_att2in": {"cross_entropy": 101.3, "scst": 111.4, "relative_gain": round(111.4 / 101.3 - 1, 3)},
           "rennie2017_att2all": {"cross_entropy": 97.9, "scst": 113.7, "relative_gain": round(113.7 / 97.9 - 1, 3)}}
FULL = {"size": 2000, "objects": 40, "image_size": 64, "embedding": 64, "hidden": 128, "batch": 32,
        "cross_entropy_steps": 500, "branch_steps": 120, "samples": 5, "seeds": 2, "lr": 2e-3, "scst_lr": 2e-4}
QUICK = {"size": 40, "objects": 10, "image_size": 32, "embedding": 16, "hidden": 24, "batch": 8,
         "cross_entropy_steps": 6, "branch_steps": 3, "samples": 3, "seeds": 2, "lr": 2e-3, "scst_lr": 2e-4}


def cider_speed(count: int, repeats: int) -> dict:
    """CIDEr-D of `count` candidates x 5 references from the caption grammar (no images drawn)."""
    rng = random.Random(0)
    objects = [(0x1F408 + k, f"object{k}") for k in range(60)]
    candidates, references = [], []
    for _ in range(count):
        scene = captions.compose(rng, objects)
        references.append(captions.captions(scene, rng))
        candidates.append(captions.captions(scene, rng, 1)[0])  # another draw: often, not always, a reference
    start = time.perf_counter()
    scorer = CiderD(references)
    frequencies_ms = 1000 * (time.perf_counter() - start)
    start = time.perf_counter()
    first = scorer(candidates, references)
    first_ms = 1000 * (time.perf_counter() - start)
    timing = interleaved({"cider_d": lambda: scorer(candidates, references)}, repeats=repeats, warmup=0)["cider_d"]
    return {"candidates": count, "references_per_candidate": 5, "document_frequencies": "the 5 x count references",
            "document_frequencies_ms": round(frequencies_ms, 1),
            "first_call_ms": round(first_ms, 1),  # also vectorises each reference once
            "cached_call_ms": {"median": round(timing["median"], 1), "min": round(timing["min"], 1),
                               "max": round(timing["max"], 1), "repeats": repeats},
            "mean_cider_d": round(float(np.mean(first)), 4)}


def in_memory(task: Task, size: int) -> Task:
    """The task with every image decoded once at the model's size: the timing then measures training."""
    def load(split):
        return [Example(np.asarray(task.source_codec.image(e.source).resize((size, size))), e.references)
                for e in split]

    return Task("captions", load(task.train), load(task.valid), load(task.test), None, task.target_tokenizer,
                metric="cider_d", description=task.description, settings=task.settings,
                source_codec=task.source_codec)


def test_cider(model, task: Task) -> float:
    figures = evaluate(model, task, "test")
    return figures["metric"]["fr"]


class RewardClock:
    """The reward, timed: seconds spent inside it."""

    def __init__(self, reward):
        self.reward, self.seconds = reward, 0.0

    def __call__(self, hypotheses, references):
        start = time.perf_counter()
        try:
            return self.reward(hypotheses, references)
        finally:
            self.seconds += time.perf_counter() - start


def train(model, strategy, task: Task, steps: int, batch: int, lr: float, seed: int, start: int = 0) -> float:
    """`steps` optimiser steps (Adam) of `strategy` over seeded shuffles of the training split; seconds taken."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    began, done, epoch = time.perf_counter(), 0, start
    while done < steps:
        for rows in task.batches("train", batch, shuffle=True, seed=seed * 1000 + epoch):
            if done == steps:
                break
            output = strategy.loss(model, rows, start + done)
            optimizer.zero_grad()
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done += 1
        epoch += 1
    model.eval()
    return time.perf_counter() - began


def compare(size: dict, seed: int, task: Task) -> dict:
    longest_source, longest_target = task.longest()
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind="gru", target_vocab=task.target_tokenizer.vocab_size,
                                    embedding=size["embedding"], hidden=size["hidden"], dropout=0.0,
                                    max_source_len=longest_source, max_target_len=longest_target,
                                    **task.source_codec.model_options()))
    seconds = {"cross_entropy": train(model, TeacherForcing(), task, size["cross_entropy_steps"], size["batch"],
                                      size["lr"], seed)}
    scores = {"cross_entropy_start": test_cider(model, task)}
    branch = size["branch_steps"]
    start = size["cross_entropy_steps"]
    more = copy.deepcopy(model)
    seconds["cross_entropy_more"] = train(more, TeacherForcing(), task, branch, size["batch"], size["scst_lr"],
                                          seed, start)
    scores["cross_entropy_more"] = test_cider(more, task)
    shares = {}
    for baseline in ("greedy", "leave_one_out"):
        scst = copy.deepcopy(model)
        strategy = Reinforce(ReinforceConfig(baseline=baseline, samples=size["samples"]), seed=seed).bind(task)
        # The reward's document frequencies: all five references of each training image.
        clock = RewardClock(get_reward("cider_d", task.references_corpus("train")))
        strategy.reward = clock
        seconds[f"scst_{baseline}"] = train(scst, strategy, task, branch, size["batch"], size["scst_lr"], seed, start)
        shares[baseline] = clock.seconds / seconds[f"scst_{baseline}"]
        scores[f"scst_{baseline}"] = test_cider(scst, task)
    gains = {f"scst_{b}_over_{base}": relative(scores[f"scst_{b}"], scores[base])
             for base in ("cross_entropy_more", "cross_entropy_start") for b in ("greedy", "leave_one_out")}
    return {"seed": seed, "test_cider_d": {k: round(v, 4) for k, v in scores.items()},
            "relative_gain": {k: None if v is None else round(v, 4) for k, v in gains.items()},
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "reward_share_of_scst_steps": {k: round(v, 4) for k, v in shares.items()}}


def relative(value: float, base: float) -> float | None:
    """value / base - 1; None when the base scores 0 (a model too small to caption at all)."""
    return value / base - 1 if base > 0 else None


def spread(values: list[float | None]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "values": []}
    return {"mean": round(statistics.mean(values), 4),
            "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "values": values}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny corpus, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine two threads fight, ~10x slower measured)")
    parser.add_argument("--cache-dir", default=None, help="where the font and the corpus are (default the cache)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = dict(QUICK if args.quick else FULL)
    if args.seeds:
        size["seeds"] = args.seeds
    began = time.perf_counter()
    speed = cider_speed(500 if args.quick else 5000, 3 if args.quick else 7)
    task = captions.captions_task(size=size["size"], objects=size["objects"], image_size=size["image_size"],
                                  cache_dir=args.cache_dir)
    task = in_memory(task, size["image_size"])
    runs = []
    for seed in range(size["seeds"]):
        runs.append(compare(size, seed, task))
        if not args.json:
            print(f"seed {seed}: {runs[-1]['test_cider_d']} gains {runs[-1]['relative_gain']}", file=sys.stderr)
    gains = {key: spread([run["relative_gain"][key] for run in runs]) for key in runs[0]["relative_gain"]}
    scores = {key: spread([run["test_cider_d"][key] for run in runs]) for key in runs[0]["test_cider_d"]}
    share = max(run["reward_share_of_scst_steps"][b] for run in runs for b in ("greedy", "leave_one_out"))
    headline = gains["scst_greedy_over_cross_entropy_more"]["mean"] or 0.0
    result = {
        "provenance": provenance(device="cpu"), "benchmark": "captioning", "quick": args.quick, "size": size,
        "task": {"name": task.name, "settings": task.settings, "train": len(task.train), "valid": len(task.valid),
                 "test": len(task.test), "target_vocab": task.target_tokenizer.vocab_size},
        "signature": {"metric": "CIDEr-D|nrefs:5|df:scored-set|n:4|sigma:6 (test split, held-out combinations)",
                      "decode": "greedy", "reward": "CIDEr-D, document frequencies of the training split's 5 "
                      "references per image", "model": "image front end (3 stride-2 convs) + GRU with attention",
                      "comparison": "each SCST branch and the cross-entropy branch start from the same cross-entropy "
                      "model and take the same number of steps"},
        "cider_d_speed": speed, "runs": runs, "test_cider_d": scores, "relative_gain": gains, "anchors": ANCHORS,
        "seconds": round(time.perf_counter() - began, 1),
        "goals": {
            "cider_d_5000x5_cached_seconds": goal(speed["cached_call_ms"]["median"] / 1000, CIDER_SECONDS_GOAL),
            "reward_share_of_scst_step": goal(share, REWARD_SHARE_GOAL),
            "scst_relative_cider_d_gain": goal(headline, ANCHORS["rennie2017_att2all"]["relative_gain"],
                                               lower_is_better=False)},
    }
    print(json.dumps(result, indent=None if args.json else 1))
    return result


if __name__ == "__main__":
    main()
