"""Speech: how fast the spoken corpus is made and read, and teacher forcing against SCST on word error rate.

1. Synthesis: the corpus the benchmark trains on, 10,000 utterances made from nothing in a fresh folder by
   `unforced.tasks.speech.synthesise` (espeak-ng processes, 16 kHz resampling, noise, WAV writing; all cores),
   timed: the seconds, milliseconds per utterance and x real time (`--quick` makes 60 and projects to 10,000,
   named so).
2. Features: `AudioCodec.encode` (WAV read + Hann `torch.stft` + mel filterbank + log + per-utterance
   normalisation, 80 mels) over batches of corpus files, timed with `interleaved` (median of rounds); x real time
   = seconds of audio / seconds of extraction. Goal >= 100x on 2 cores.
3. Training, per seed: an attention ASR over characters (audio front end subsampling time 4x, GRU encoder and
   decoder) trained with cross-entropy until validation WER stalls (unforced.switch: best weights), then from
   that model, for the same steps over the same batches, five branches: more cross-entropy, SCST with the
   greedy baseline and with leave-one-out (K samples, reward -WER), minimum-WER training over the 4-best beam
   (Prabhavalkar et al. 2018; strategy `minimum_risk`), and parallel scheduled sampling. WER and CER on the
   held-out test speakers, greedy and beam 3, WER on their clean and noisy utterances, and the teacher-forced vs
   free-running character error per position. The relative WER cut of each branch over the cross-entropy branch of
   equal steps, 100 (WER_ce - WER) / WER_ce, beside the 8.7% of Chen et al. 2022 (arXiv 2204.06260, LibriSpeech
   test-clean, a far larger model): mean and spread over seeds, and whether it is beyond the spread.

    python benchmarks/speech.py [--quick] [--json] [--seeds N]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _branches import spread, train  # noqa: E402
from common import goal, interleaved, provenance  # noqa: E402

from unforced.diagnostics import evaluate  # noqa: E402
from unforced.models import ModelConfig, build_model  # noqa: E402
from unforced.strategies.minimum_risk import MinimumRisk, MinimumRiskConfig  # noqa: E402
from unforced.strategies.parallel_scheduled_sampling import (  # noqa: E402
    ParallelScheduledSampling,
    ParallelScheduledSamplingConfig,
)
from unforced.strategies.reinforce import Reinforce, ReinforceConfig  # noqa: E402
from unforced.strategies.teacher_forcing import TeacherForcing  # noqa: E402
from unforced.switch import Patience, SwitchConfig  # noqa: E402
from unforced.tasks import get_task, speech  # noqa: E402
from unforced.tasks.base import Task  # noqa: E402
from unforced.tasks.codecs import AudioCodec  # noqa: E402
from unforced.tasks.manifests import read_manifest  # noqa: E402

ANCHOR_RELATIVE_WER_CUT = 8.7  # Chen et al. 2022, SCST on LibriSpeech test-clean
FEATURES_GOAL = 100.0  # x real time on 2 cores
BRANCHES = ("cross_entropy_more", "scst_greedy", "scst_leave_one_out", "minimum_wer", "scheduled_sampling")
# The full size synthesises the 10,000 utterances it trains on (timed: the synthesis goal) and is sized for
# about an hour on 2 shared cores (measured: ~190 ms a teacher-forcing step at batch 16, hidden 128, one thread).
SIZES = {
    "quick": {"corpus": 60, "feature_files": 32, "repeats": 2, "seeds": 1, "steps": 6, "eval_every": 2,
              "patience": 1, "fine_tune": 2, "batch_size": 8, "embedding": 16, "hidden": 24, "mels": 24,
              "eval_limit": 8, "test_limit": 8, "samples": 2, "lr": 2e-3, "branch_lr": 3e-4, "ss_k": 2.0,
              "beam": 3},
    "full": {"corpus": 10000, "feature_files": 256, "repeats": 5, "seeds": 3, "steps": 2000, "eval_every": 200,
             "patience": 3, "fine_tune": 120, "batch_size": 16, "embedding": 48, "hidden": 128, "mels": 40,
             "eval_limit": 150, "test_limit": 250, "samples": 4, "lr": 2e-3, "branch_lr": 3e-4, "ss_k": 25.0,
             "beam": 3},
}


def synthesis(count: int, espeak: speech.Espeak, folder: Path) -> tuple[dict, Path]:
    """The corpus of `count` utterances made from nothing in `folder`, timed; its figures and its manifest."""
    stats = speech.synthesise(count, seed=12345, cache_dir=folder, espeak=espeak,
                              progress=lambda done, total: done % 1000 == 0 and log(f"synthesis {done}/{total}"))
    ms = stats.ms_per_utterance
    figures = {"utterances": count, "made": stats.made, "seconds": stats.seconds, "ms_per_utterance": ms,
               "x_real_time": stats.audio_seconds / stats.seconds, "mean_utterance_seconds": stats.audio_seconds / count,
               "workers": os.cpu_count()}
    if count != 10_000:
        figures["projected_10000_utterances_seconds"] = ms * 10_000 / 1000.0
    return figures, stats.manifest


def features(manifest: Path, count: int, repeats: int) -> dict:
    _, examples, _ = read_manifest(manifest)
    paths = [e.source for e in examples[:count]]
    codec = AudioCodec(mels=80)
    audio_seconds = sum(codec.samples(p).size for p in paths) / codec.sample_rate

    def extract():
        for start in range(0, len(paths), 32):
            codec.encode(paths[start:start + 32])

    timing = interleaved({"encode": extract}, repeats=repeats, warmup=1)["encode"]
    return {"files": len(paths), "audio_seconds": audio_seconds, "milliseconds": timing,
            "x_real_time": audio_seconds / (timing["median"] / 1000.0), "mels": 80, "batch": 32,
            "includes": "WAV read, stft, mel filterbank, log, per-utterance normalisation, padding"}


def subset(task: Task, snr: dict[str, float | None], clean: bool) -> Task:
    """The task with its test split cut to the clean (no added noise) or the noisy utterances."""
    chosen = [e for e in task.test if (snr.get(Path(e.source).name) is None) == clean]
    return dataclasses.replace(task, test=chosen)


def test_scores(model, task: Task, beam: int, subsets: dict[str, Task], limits: dict) -> tuple[dict, dict]:
    """WER and CER on the test speakers, greedy and beam; greedy WER on the clean and the noisy utterances; and the
    per-position character error under both decodings."""
    figures = evaluate(model, task, "test", beam_size=beam, limits=limits)
    metric = figures["metric"]
    cer = metric["companions"]["cer"]
    scores = {"wer": metric["fr"], "wer_beam": metric["fr_beam"], "cer": cer["fr"], "cer_beam": cer["fr_beam"]}
    for name, part in subsets.items():
        scores[f"wer_{name}"] = evaluate(model, part, "test", limits=limits)["metric"]["fr"] if part.test else None
    positions = {key: [round(v, 4) for v in figures["per_position"][key]] for key in ("tf_error", "fr_error")}
    return scores, {**positions, "count": figures["per_position"]["count"],
                    "tf_character_error": 1 - figures["tf_token_acc"],
                    "fr_character_error": 1 - figures["fr_token_acc"]}


def branch_strategy(name: str, size: dict, seed: int, task: Task):
    if name == "cross_entropy_more":
        return TeacherForcing()
    if name == "scheduled_sampling":
        return ParallelScheduledSampling(ParallelScheduledSamplingConfig(schedule_params={"k": size["ss_k"]}),
                                         seed=seed)
    if name == "minimum_wer":  # Prabhavalkar et al. 2018: the 4-best beam, lambda = 0.01
        return MinimumRisk(MinimumRiskConfig(nbest=size["samples"]), seed=seed).bind(task)
    return Reinforce(ReinforceConfig(baseline=name.removeprefix("scst_"), samples=size["samples"]),
                     seed=seed).bind(task)


def compare(size: dict, seed: int, task: Task, subsets: dict[str, Task], scratch: Path) -> dict:
    """Cross-entropy until validation WER stalls (best weights), then every branch for the same steps from it."""
    longest_source, longest_target = task.longest()
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind="gru", target_vocab=task.target_tokenizer.vocab_size,
                                    embedding=size["embedding"], hidden=size["hidden"], dropout=0.1,
                                    max_source_len=longest_source, max_target_len=longest_target,
                                    **task.source_codec.model_options()))
    limits = {"max_source_len": longest_source, "max_target_len": longest_target}
    patience = Patience(SwitchConfig(metric="wer", patience=size["patience"]), scratch / f"best-{seed}.pt")
    done = train(model, TeacherForcing(), task, size["steps"], size["batch_size"], size["lr"], seed,
                 patience=patience, eval_every=size["eval_every"], valid_limit=size["eval_limit"])
    seconds = {"cross_entropy": done["seconds"]}
    log(f"seed {seed}: cross-entropy {done['steps']} steps, best validation WER {patience.best:.3f} at step "
        f"{patience.best_step} ({done['seconds']:.0f} s)")
    scores, positions = {}, {}
    scores["cross_entropy_start"], positions["cross_entropy_start"] = test_scores(model, task, size["beam"],
                                                                                   subsets, limits)
    for name in BRANCHES:
        copy_ = copy.deepcopy(model)
        seconds[name] = train(copy_, branch_strategy(name, size, seed, task), task, size["fine_tune"],
                              size["batch_size"], size["branch_lr"], seed, done["steps"])["seconds"]
        scores[name], positions[name] = test_scores(copy_, task, size["beam"], subsets, limits)
        log(f"seed {seed}: {name} test WER {scores[name]['wer']:.3f} ({seconds[name]:.0f} s)")
    cuts = {f"{b}_over_{base}": cut(scores[b]["wer"], scores[base]["wer"])
            for base in ("cross_entropy_more", "cross_entropy_start") for b in BRANCHES if b != base}
    return {"seed": seed, "switch": {**patience.summary(), "steps_trained": done["steps"]},
            "test_scores": {k: {m: None if x is None else round(x, 4) for m, x in v.items()} for k, v in scores.items()},
            "per_position_character_error": positions,
            "relative_wer_cut_pct": {k: None if v is None else round(v, 3) for k, v in cuts.items()},
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def cut(wer: float, base: float) -> float | None:
    """The relative WER cut in percent, 100 (base - wer) / base; None where the base is 0."""
    return 100.0 * (base - wer) / base if base > 0 else None


def training(manifest: Path, size: dict, seeds: int, scratch: Path) -> dict:
    task = get_task(str(manifest), tokenizer="char", mels=size["mels"])
    task = dataclasses.replace(task, test=task.test[:size["test_limit"]])
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    snr = {Path(row["audio"]).name: row["snr"] for row in rows}
    subsets = {"clean": subset(task, snr, clean=True), "noisy": subset(task, snr, clean=False)}
    runs = [compare(size, seed, task, subsets, scratch) for seed in range(seeds)]
    cuts = {key: spread([run["relative_wer_cut_pct"][key] for run in runs]) for key in runs[0]["relative_wer_cut_pct"]}
    scores = {key: {m: spread([run["test_scores"][key][m] for run in runs]) for m in runs[0]["test_scores"][key]}
              for key in runs[0]["test_scores"]}
    headline = cuts["scst_greedy_over_cross_entropy_more"]
    return {"runs": runs, "test_scores": scores, "relative_wer_cut_pct": cuts,
            "beyond_seed_spread": bool(headline["mean"] is not None and len(runs) > 1
                                       and headline["mean"] - headline["stdev"] > 0),
            "anchors": {"chen2022_scst": {"relative_wer_cut_pct": ANCHOR_RELATIVE_WER_CUT,
                                          "source": "Chen et al. 2022, arXiv 2204.06260, SCST, LibriSpeech test-clean"},
                        "prabhavalkar2018_mwer": {"relative_wer_cut_pct": 8.2,
                                                  "source": "Prabhavalkar et al. 2018, minimum WER training, up to "
                                                  "8.2% relative"}},
            "setup": {"targets": "characters", "model": f"gru, audio front end (4x time subsampling), embedding "
                      f"{size['embedding']}, hidden {size['hidden']}, {size['mels']} mels",
                      "cross_entropy": f"up to {size['steps']} steps, validated every {size['eval_every']} on "
                      f"{size['eval_limit']} utterances, stopped after {size['patience']} evaluations without a "
                      "better validation WER (unforced.switch), best weights",
                      "branches": f"{', '.join(BRANCHES)}: {size['fine_tune']} steps each from the same model over "
                      f"the same batches, learning rate {size['branch_lr']}",
                      "split": f"test (held-out speakers), first {size['test_limit']} utterances; clean = no added "
                      "noise, noisy = 5-30 dB SNR", "decode": f"greedy and beam {size['beam']}",
                      "samples": size["samples"]}}


def log(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke size the tests run")
    parser.add_argument("--json", action="store_true", help="print the JSON document alone on stdout")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 3, quick 1)")
    arguments = parser.parse_args(argv)
    size = SIZES["quick" if arguments.quick else "full"]
    seeds = arguments.seeds or size["seeds"]
    espeak = speech.obtain_espeak()
    document: dict = {"benchmark": "speech", "size": "quick" if arguments.quick else "full",
                      "provenance": provenance(espeak=espeak.run(["--version"]).decode().split(" Data")[0])}
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as scratch:
        log(f"synthesis of {size['corpus']} utterances ...")
        document["synthesis"], manifest = synthesis(size["corpus"], espeak, Path(scratch) / "corpus")
        log("features ...")
        document["features"] = features(manifest, size["feature_files"], size["repeats"])
        log("training ...")
        document["training"] = training(manifest, size, seeds, Path(scratch))
    synthesis_seconds = document["synthesis"].get("projected_10000_utterances_seconds",
                                                  document["synthesis"]["seconds"])
    cut = document["training"]["relative_wer_cut_pct"]["scst_greedy_over_cross_entropy_more"]["mean"]
    document["goals"] = {
        "features_x_real_time": goal(document["features"]["x_real_time"], FEATURES_GOAL, lower_is_better=False),
        "synthesis_10000_utterances_seconds": goal(synthesis_seconds, 300.0),
        "relative_wer_cut_pct": goal(cut if cut is not None else float("nan"), ANCHOR_RELATIVE_WER_CUT,
                                     lower_is_better=False),
    }
    document["threads"] = torch.get_num_threads()
    if arguments.json:
        print(json.dumps(document, indent=2))
    else:
        for name, entry in document["goals"].items():
            log(f"{name}: {entry['value']:.2f} (goal {entry['direction']} {entry['goal']}) "
                f"{'met' if entry['met'] else 'not met'}")
    return document


if __name__ == "__main__":
    main()
