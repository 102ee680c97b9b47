"""The ASR-TTS cycle: paired-only training against self-training and the cycle, at three paired shares.

For each paired share (5%, 10%, 25% of the train utterances of the spoken corpus) and seed, one job:

1. The recogniser (attention GRU over characters) and the synthesiser (models/tts.py) train teacher-forced on
   the paired share (`asr_steps`, `tts_steps`); the rest of the train split is halved into speech without
   transcripts and transcripts without speech (unforced.cycle.split_for_cycle).
2. From that recogniser, three branches of equal recogniser steps (`rounds` x `round_asr_steps`):
   paired_only     more cross-entropy on the paired share
   self_training   the strategy `self_training`: pseudo-labels from its own beam on the unpaired speech, a
                   confidence filter, mixed with the paired batch
   cycle           `rounds` rounds of unforced.cycle (synthetic pairs from the unpaired text, the
                   cycle-consistency term on the unpaired speech, the synthesiser retrained on transcripts)
3. Test CER and WER (greedy, held-out speakers) of each; the relative CER cut of self_training and cycle over
   paired_only, 100 (CER_paired - CER) / CER_paired, mean and spread over seeds, beside Hori et al. 2019's
   14.7% (WER, LibriSpeech 100 h paired + 360 h unpaired) and the 20% of ASR-TTS cycles on Mandarin.

And the synthesiser's own exposure gap: at the 10% share, its frame error (L1 per frame and mel bin)
teacher-forced and free-running on the test utterances, trained teacher-forced (the job's) and with scheduled
sampling over its frames for the same steps, per seed.

Jobs run in parallel processes of one thread each; each job works in its own folder (under `--work`, default a
folder in the cache; keyed by the job's settings and the commit), so a killed benchmark run again resumes every
job where it stopped.

    python benchmarks/cycle.py [--quick] [--json] [--seeds N] [--workers N] [--work DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _branches import spread  # noqa: E402
from common import goal, print_goals, provenance  # noqa: E402

ANCHORS = {"hori2019_cycle": {"relative_cut_pct": 14.7, "source": "Hori et al. 2019, cycle-consistency "
                              "training, WER, LibriSpeech 100 h paired + 360 h unpaired"},
           "mandarin_asr_tts_cycle": {"relative_cut_pct": 20.0, "source": "ASR-TTS cycles on Mandarin, character "
                                      "error, up to 20% relative"}}
GOAL = 20.0  # relative CER cut of the cycle over paired-only at 10% paired, percent
SIZES = {
    "quick": {"corpus": 60, "mels": 24, "shares": [0.3], "headline_share": 0.3, "seeds": 1, "asr_steps": 6,
              "tts_steps": 6, "rounds": 1, "round_asr_steps": 4, "round_tts_steps": 4, "batch_size": 4,
              "asr_hidden": 24, "asr_embedding": 16, "tts_hidden": 24, "eval_limit": 8, "beam": 2, "eval_every": 3,
              "valid_limit": 4},
    "full": {"corpus": 8000, "mels": 40, "shares": [0.05, 0.1, 0.25], "headline_share": 0.1, "seeds": 3,
             "asr_steps": 1200, "tts_steps": 800, "rounds": 2, "round_asr_steps": 300, "round_tts_steps": 200,
             "batch_size": 16, "asr_hidden": 128, "asr_embedding": 48, "tts_hidden": 128, "eval_limit": 300,
             "beam": 3, "eval_every": 150, "valid_limit": 100},
}
BRANCHES = ("paired_only", "self_training", "cycle")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def job(size: dict, share: float, seed: int, work: Path) -> dict:
    """One paired share and seed: the three branches' test error rates, and (at the headline share) the
    synthesiser's frame gap trained teacher-forced and with scheduled sampling."""
    import torch

    torch.set_num_threads(1)
    from unforced.cycle import (
        CycleConfig,
        build_recogniser,
        build_synthesiser,
        error_rates,
        limits_of,
        run_cycle,
        split_for_cycle,
        train_phase,
    )
    from unforced.strategies.self_training import SelfTraining, SelfTrainingConfig
    from unforced.strategies.synthesis import frame_gap
    from unforced.strategies.teacher_forcing import TeacherForcing
    from unforced.tasks import speech

    task = speech.speech_task(size=size["corpus"], mels=size["mels"], corpus_seed=0)
    config = CycleConfig(paired=share, seed=seed, rounds=size["rounds"], asr_steps=size["asr_steps"],
                         tts_steps=size["tts_steps"], round_asr_steps=size["round_asr_steps"],
                         round_tts_steps=size["round_tts_steps"], batch_size=size["batch_size"],
                         asr_hidden=size["asr_hidden"], asr_embedding=size["asr_embedding"],
                         tts_hidden=size["tts_hidden"], eval_limit=size["eval_limit"], log_every=50,
                         eval_every=size["eval_every"], valid_limit=size["valid_limit"])
    key = hashlib.sha256(json.dumps([dataclasses.asdict(config), size], sort_keys=True).encode()).hexdigest()[:12]
    out = work / f"share{share}-seed{seed}-{key}"
    started = time.perf_counter()

    def say(event: dict) -> None:
        if isinstance(event.get("step"), int) and event["step"] % 200 == 0:
            log(f"share {share} seed {seed}: {event['phase']} step {event['step']}/{event['steps']}")
        elif event.get("step") in ("synthetic", "transcripts") and event["done"] == event["total"]:
            log(f"share {share} seed {seed}: {event['phase']} {event['step']} {event['total']} utterances")

    limits = limits_of(task)

    def evaluate(model, task) -> dict:
        return error_rates(model, task, limit=size["eval_limit"], limits=limits)

    cycle = run_cycle(task, config, out, progress=say, evaluate_asr=evaluate)
    seconds = {"cycle": time.perf_counter() - started}
    paired, speech_only, _ = split_for_cycle(task, share, seed)
    paired_task = dataclasses.replace(task, train=paired, unlabelled=speech_only)
    more = size["rounds"] * size["round_asr_steps"]
    start = Path(cycle["phases"]["asr-paired"]["checkpoint"])
    scores = {"paired_start": cycle["rounds"][0]["asr"], "cycle": cycle["rounds"][-1]["asr"]}
    for name, strategy in (("paired_only", TeacherForcing()),
                           ("self_training", SelfTraining(SelfTrainingConfig(beam=size["beam"]), seed=seed))):
        began = time.perf_counter()
        model = build_recogniser(task, config, limits)
        if hasattr(strategy, "bind"):
            strategy.bind(paired_task)
        train_phase(name, model, paired_task, strategy, more, out, config, say, start, limits, select=True)
        scores[name] = evaluate(model, task)
        seconds[name] = time.perf_counter() - began
    result = {"share": share, "seed": seed, "split": cycle["split"], "test": scores,
              "rounds": cycle["rounds"], "seconds": {k: round(v, 1) for k, v in seconds.items()},
              "relative_cer_cut_pct": {b: cut(scores[b]["cer"], scores["paired_only"]["cer"])
                                       for b in ("self_training", "cycle")},
              "relative_wer_cut_pct": {b: cut(scores[b]["wer"], scores["paired_only"]["wer"])
                                       for b in ("self_training", "cycle")}}
    if share == size["headline_share"]:
        gaps = {"teacher_forcing": cycle["rounds"][0]["tts"]}
        ss = dataclasses.replace(config, tts_feed="scheduled_sampling", tts_ss_k=max(size["tts_steps"] / 8, 1.0))
        from unforced.cycle import tts_strategy

        tts = build_synthesiser(task, ss, limits)
        train_phase("tts-scheduled-sampling", tts, dataclasses.replace(task, train=paired, unlabelled=[]),
                    tts_strategy(ss), size["tts_steps"], out, ss, say)
        gaps["scheduled_sampling"] = frame_gap(tts, task, "test", limit=size["eval_limit"])
        result["tts_frame_gap"] = gaps
    log(f"share {share} seed {seed}: CER paired-only {scores['paired_only']['cer']:.3f}, self-training "
        f"{scores['self_training']['cer']:.3f}, cycle {scores['cycle']['cer']:.3f}")
    return result


def cut(value: float, base: float) -> float | None:
    return round(100.0 * (base - value) / base, 3) if base > 0 else None


def summarise(runs: list[dict], size: dict) -> dict:
    by_share = {}
    for share in size["shares"]:
        chosen = [r for r in runs if r["share"] == share]
        by_share[str(share)] = {
            "test": {b: {m: spread([r["test"][b][m] for r in chosen]) for m in ("cer", "wer")}
                     for b in ("paired_start", *BRANCHES)},
            "relative_cer_cut_pct": {b: spread([r["relative_cer_cut_pct"][b] for r in chosen])
                                     for b in ("self_training", "cycle")},
            "relative_wer_cut_pct": {b: spread([r["relative_wer_cut_pct"][b] for r in chosen])
                                     for b in ("self_training", "cycle")}}
    gaps = [r["tts_frame_gap"] for r in runs if "tts_frame_gap" in r]
    tts = {feed: {k: spread([g[feed][k] for g in gaps]) for k in ("tf", "fr", "gap", "fr_last_third")}
           for feed in ("teacher_forcing", "scheduled_sampling")} if gaps else None
    return {"by_share": by_share, "tts_frame_gap": tts}


def figure(summary: dict, path: Path) -> None:
    """Test CER against the paired share, one line per branch, the seeds' spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = sorted(summary["by_share"], key=float)
    fig, axis = plt.subplots(figsize=(5, 3.5))
    for branch in BRANCHES:
        means = [summary["by_share"][s]["test"][branch]["cer"]["mean"] for s in shares]
        errors = [summary["by_share"][s]["test"][branch]["cer"]["stdev"] or 0.0 for s in shares]
        axis.errorbar([100 * float(s) for s in shares], means, yerr=errors, marker="o", capsize=3,
                      label=branch.replace("_", " "))
    axis.set_xlabel("paired share of the train utterances (%)")
    axis.set_ylabel("test CER (greedy)")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke size the tests run")
    parser.add_argument("--json", action="store_true", help="print the JSON document alone on stdout")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 3, quick 1)")
    parser.add_argument("--workers", type=int, default=None, help="parallel jobs (default: cores, one thread each)")
    parser.add_argument("--work", type=Path, default=None, help="where the jobs work and resume (default: cache)")
    parser.add_argument("--shares", type=float, nargs="+", default=None, help="paired shares (default: the size's)")
    parser.add_argument("--figure", type=Path, default=None, help="write the CER-against-share figure here")
    arguments = parser.parse_args(argv)
    label = "quick" if arguments.quick else "full"
    size = SIZES[label]
    seeds = arguments.seeds or size["seeds"]
    from unforced.tasks import speech
    from unforced.tasks.cache import default_cache_dir

    # The full size works in the cache, so a killed run resumes; the quick one in a fresh folder (never stale).
    scratch = tempfile.TemporaryDirectory(prefix="cycle-bench-") if arguments.quick and not arguments.work else None
    work = arguments.work or (Path(scratch.name) if scratch else default_cache_dir() / f"bench-cycle-{label}")
    espeak = speech.obtain_espeak()
    document: dict = {"benchmark": "cycle", "size": label,
                      "provenance": provenance(espeak=espeak.run(["--version"]).decode().split(" Data")[0])}
    began = time.perf_counter()
    log(f"corpus of {size['corpus']} utterances ...")
    speech.synthesise(size["corpus"], 0, espeak=espeak)
    shares = sorted(arguments.shares or size["shares"], key=lambda s: s != size["headline_share"])  # headline first
    jobs = [(share, seed) for share in shares for seed in range(seeds)]
    # A job's folder is keyed by its settings and the commit: a rerun resumes it, other code starts afresh.
    size = {**size, "commit": document["provenance"]["commit"]}
    workers = min(arguments.workers or os.cpu_count() or 1, len(jobs))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        runs = list(pool.map(job, [size] * len(jobs), [s for s, _ in jobs], [s for _, s in jobs],
                             [work] * len(jobs)))
    size = {**size, "shares": sorted({run["share"] for run in runs})}
    if scratch:
        scratch.cleanup()
    summary = summarise(runs, size)
    chosen = summary["by_share"].get(str(size["headline_share"]))
    headline = chosen["relative_cer_cut_pct"]["cycle"] if chosen else {"mean": None, "stdev": None}
    document.update(runs=runs, summary=summary, anchors=ANCHORS, seconds=round(time.perf_counter() - began, 1),
                    setup={"corpus": f"{size['corpus']} utterances of the spoken corpus (seed 0), {size['mels']} "
                           "mels; test: held-out speakers, greedy decoding",
                           "recogniser": f"gru, audio front end, embedding {size['asr_embedding']}, hidden "
                           f"{size['asr_hidden']}; {size['asr_steps']} paired steps, then "
                           f"{size['rounds'] * size['round_asr_steps']} steps in each branch, batch "
                           f"{size['batch_size']}; every recogniser phase ends with the weights of its best "
                           f"validation WER (every {size['eval_every']} steps on {size['valid_limit']} "
                           "utterances), all its steps taken",
                           "synthesiser": f"attention decoder, hidden {size['tts_hidden']}, reduction 4, "
                           f"{size['tts_steps']} paired steps, {size['round_tts_steps']} a round",
                           "self_training": f"beam {size['beam']}, the strategy's default threshold and ratio",
                           "workers": workers})
    cut_value = headline["mean"]
    document["goals"] = {"cycle_relative_cer_cut_pct_at_headline_share": {
        **goal(cut_value if cut_value is not None else float("nan"), GOAL, lower_is_better=False),
        "stdev": headline["stdev"], "share": size["headline_share"]}}
    if arguments.figure:
        figure(summary, arguments.figure)
        document["figure"] = str(arguments.figure)
    if arguments.json:
        print(json.dumps(document, indent=2))
    print_goals(document["goals"])
    return document


if __name__ == "__main__":
    main()
