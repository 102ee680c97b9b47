"""Captioning: CIDEr-D speed, the reward's share of an SCST step, and SCST's CIDEr-D gain over cross-entropy.

1. CIDEr-D of 5,000 candidates x 5 references of the composed caption grammar, the document frequencies computed
   once from those references (`CiderD(references_corpus)`), the scoring calls timed with `interleaved`.
2. A CNN-attention captioner (the image front end + GRU with attention) on the composed `captions` corpus: trained
   with cross-entropy until validation CIDEr-D stalls (the library's switch, unforced.switch: `patience`
   evaluations without improvement, then the best evaluation's weights), then from that model (same weights, same
   batches) four branches of equal steps: more cross-entropy, SCST with the greedy baseline (Rennie et al. 2017),
   SCST with leave-one-out (Kool et al. 2019), each with K samples and the CIDEr-D reward whose document
   frequencies are the training split's five references per image, and parallel scheduled sampling. Test CIDEr-D,
   BLEU-4 and chrF (greedy and beam 3, all five references, held-out combinations) per seed; the relative gain of
   each branch over the cross-entropy branch of equal steps (and over the cross-entropy start); the start's
   teacher-forced vs free-running error per position. The SCST steps' time inside the reward is their reward share.
Anchors: Rennie et al. 2017, Table 4 (COCO, CIDEr-D): Att2in 101.3 -> 111.4 (+10%), Att2all 97.9 -> 113.7 (+16%).

    python benchmarks/captioning.py [--quick] [--json] [--seeds N] [--threads T]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _branches import RewardClock, relative, spread, train  # noqa: E402
from common import goal, interleaved, provenance  # noqa: E402

from unforced.diagnostics import evaluate  # noqa: E402
from unforced.models import ModelConfig, build_model  # noqa: E402
from unforced.rewards import get_reward  # noqa: E402
from unforced.rewards.cider import CiderD  # noqa: E402
from unforced.strategies.parallel_scheduled_sampling import (  # noqa: E402
    ParallelScheduledSampling,
    ParallelScheduledSamplingConfig,
)
from unforced.strategies.reinforce import Reinforce, ReinforceConfig  # noqa: E402
from unforced.strategies.teacher_forcing import TeacherForcing  # noqa: E402
from unforced.switch import Patience, SwitchConfig  # noqa: E402
from unforced.tasks import captions  # noqa: E402
from unforced.tasks.base import Example, Task  # noqa: E402

CIDER_SECONDS_GOAL = 0.2  # 5,000 candidates x 5 references, document frequencies cached
REWARD_SHARE_GOAL = 0.05
ANCHORS = {"rennie2017_att2in": {"cross_entropy": 101.3, "scst": 111.4, "relative_gain": round(111.4 / 101.3 - 1, 3)},
           "rennie2017_att2all": {"cross_entropy": 97.9, "scst": 113.7, "relative_gain": round(113.7 / 97.9 - 1, 3)}}
# Cross-entropy runs up to `cross_entropy_steps`, validated every `eval_every` steps on `valid_limit` images, and
# stops after `patience` evaluations without a better validation CIDEr-D. Scheduled sampling's branch decays the
# teacher-forcing ratio from 1 (inverse sigmoid, k) over the branch.
FULL = {"size": 2000, "objects": 40, "image_size": 64, "embedding": 64, "hidden": 128, "batch": 32,
        "cross_entropy_steps": 3000, "eval_every": 100, "patience": 4, "valid_limit": 200, "branch_steps": 150,
        "samples": 5, "seeds": 3, "lr": 2e-3, "scst_lr": 2e-4, "ss_k": 30.0, "beam": 3}
QUICK = {"size": 40, "objects": 10, "image_size": 32, "embedding": 16, "hidden": 24, "batch": 8,
         "cross_entropy_steps": 8, "eval_every": 2, "patience": 1, "valid_limit": 4, "branch_steps": 3,
         "samples": 3, "seeds": 2, "lr": 2e-3, "scst_lr": 2e-4, "ss_k": 2.0, "beam": 3}
BRANCHES = ("cross_entropy_more", "scst_greedy", "scst_leave_one_out", "scheduled_sampling")


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


def test_scores(model, task: Task, beam: int) -> tuple[dict, dict]:
    """Test CIDEr-D, BLEU-4 and chrF, greedy and beam; and the per-position error under both decodings."""
    figures = evaluate(model, task, "test", beam_size=beam)
    metric = figures["metric"]
    scores = {"cider_d": metric["fr"], "cider_d_beam": metric["fr_beam"]}
    for name, values in metric.get("companions", {}).items():
        scores[name], scores[f"{name}_beam"] = values["fr"], values.get("fr_beam")
    positions = {key: [round(v, 4) for v in figures["per_position"][key]] for key in ("tf_error", "fr_error")}
    return scores, {**positions, "count": figures["per_position"]["count"]}


def compare(size: dict, seed: int, task: Task, scratch: Path) -> dict:
    longest_source, longest_target = task.longest()
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind="gru", target_vocab=task.target_tokenizer.vocab_size,
                                    embedding=size["embedding"], hidden=size["hidden"], dropout=0.0,
                                    max_source_len=longest_source, max_target_len=longest_target,
                                    **task.source_codec.model_options()))
    patience = Patience(SwitchConfig(metric="cider_d", patience=size["patience"]), scratch / f"best-{seed}.pt")
    done = train(model, TeacherForcing(), task, size["cross_entropy_steps"], size["batch"], size["lr"], seed,
                 patience=patience, eval_every=size["eval_every"], valid_limit=size["valid_limit"])
    seconds = {"cross_entropy": done["seconds"]}
    switch = {**patience.summary(), "steps_trained": done["steps"]}
    scores, positions = {}, {}
    scores["cross_entropy_start"], positions["cross_entropy_start"] = test_scores(model, task, size["beam"])
    branch = size["branch_steps"]
    start = done["steps"]  # the branches continue the batch order where cross-entropy stopped
    shares = {}
    for name in BRANCHES:
        copy_ = copy.deepcopy(model)
        clock = None
        if name == "cross_entropy_more":
            strategy = TeacherForcing()
        elif name == "scheduled_sampling":
            strategy = ParallelScheduledSampling(ParallelScheduledSamplingConfig(
                schedule_params={"k": size["ss_k"]}), seed=seed)
        else:
            baseline = name.removeprefix("scst_")
            strategy = Reinforce(ReinforceConfig(baseline=baseline, samples=size["samples"]), seed=seed).bind(task)
            # The reward's document frequencies: all five references of each training image.
            clock = RewardClock(get_reward("cider_d", task.references_corpus("train")))
            strategy.reward = clock
        seconds[name] = train(copy_, strategy, task, branch, size["batch"], size["scst_lr"], seed, start)["seconds"]
        if clock is not None:
            shares[name.removeprefix("scst_")] = clock.seconds / seconds[name]
        scores[name], positions[name] = test_scores(copy_, task, size["beam"])
    gains = {f"{b}_over_{base}": relative(scores[b]["cider_d"], scores[base]["cider_d"])
             for base in ("cross_entropy_more", "cross_entropy_start") for b in BRANCHES if b != base}
    return {"seed": seed, "switch": switch,
            "test_cider_d": {k: round(v["cider_d"], 4) for k, v in scores.items()},
            "test_scores": {k: {m: None if x is None else round(x, 4) for m, x in v.items()} for k, v in scores.items()},
            "per_position_error": positions,
            "relative_gain": {k: None if v is None else round(v, 4) for k, v in gains.items()},
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "reward_share_of_scst_steps": {k: round(v, 4) for k, v in shares.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny corpus, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine two threads fight, ~10x slower measured)")
    parser.add_argument("--cache-dir", default=None, help="where the font and the corpus are (default the cache)")
    parser.add_argument("--speed-only", action="store_true",
                        help="only the CIDEr-D timing (1): a minute, to take it again on a quiet machine")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = dict(QUICK if args.quick else FULL)
    if args.seeds:
        size["seeds"] = args.seeds
    began = time.perf_counter()
    speed = cider_speed(500 if args.quick else 5000, 3 if args.quick else 7)
    if args.speed_only:
        result = {"provenance": provenance(device="cpu"), "benchmark": "captioning", "part": "cider_d_speed",
                  "quick": args.quick, "cider_d_speed": speed,
                  "goals": {"cider_d_5000x5_cached_seconds": goal(speed["cached_call_ms"]["median"] / 1000,
                                                                  CIDER_SECONDS_GOAL)}}
        print(json.dumps(result, indent=None if args.json else 1))
        return result
    task = captions.captions_task(size=size["size"], objects=size["objects"], image_size=size["image_size"],
                                  cache_dir=args.cache_dir)
    task = in_memory(task, size["image_size"])
    runs = []
    scratch = Path(tempfile.mkdtemp(prefix="unforced-captioning-"))
    for seed in range(size["seeds"]):
        runs.append(compare(size, seed, task, scratch))
        if not args.json:
            print(f"seed {seed}: {runs[-1]['test_cider_d']} gains {runs[-1]['relative_gain']}", file=sys.stderr)
    gains = {key: spread([run["relative_gain"][key] for run in runs]) for key in runs[0]["relative_gain"]}
    scores = {key: spread([run["test_cider_d"][key] for run in runs]) for key in runs[0]["test_cider_d"]}
    every = {key: {m: spread([run["test_scores"][key][m] for run in runs]) for m in runs[0]["test_scores"][key]}
             for key in runs[0]["test_scores"]}
    headline_spread = gains["scst_greedy_over_cross_entropy_more"]
    share = max(run["reward_share_of_scst_steps"][b] for run in runs for b in ("greedy", "leave_one_out"))
    headline = gains["scst_greedy_over_cross_entropy_more"]["mean"] or 0.0
    result = {
        "provenance": provenance(device="cpu"), "benchmark": "captioning", "quick": args.quick, "size": size,
        "task": {"name": task.name, "settings": task.settings, "train": len(task.train), "valid": len(task.valid),
                 "test": len(task.test), "target_vocab": task.target_tokenizer.vocab_size},
        "signature": {"metric": "CIDEr-D|nrefs:5|df:scored-set|n:4|sigma:6 (test split, held-out combinations)",
                      "decode": f"greedy and beam {size['beam']}", "reward": "CIDEr-D, document frequencies of the training split's 5 "
                      "references per image", "model": "image front end (3 stride-2 convs) + GRU with attention",
                      "comparison": "every branch starts from the same cross-entropy model (trained until validation "
                      "CIDEr-D stalled, best weights) and takes the same number of steps over the same batches"},
        "cider_d_speed": speed, "runs": runs, "test_cider_d": scores, "test_scores": every, "relative_gain": gains,
        "anchors": ANCHORS,
        "beyond_seed_spread": bool(headline_spread["mean"] is not None and len(runs) > 1
                                   and headline_spread["mean"] - headline_spread["stdev"] > 0),
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
