"""Speech: how fast the spoken corpus is made and read, and teacher forcing against SCST on word error rate.

1. Synthesis: milliseconds per utterance of `unforced.tasks.speech.synthesise` (espeak-ng processes, 16 kHz
   resampling, noise, WAV writing; all cores) on a fresh folder, and x real time. The 10,000-utterance time is
   that rate times 10,000 (a projection, named so).
2. Features: `AudioCodec.encode` (WAV read + Hann `torch.stft` + mel filterbank + log + per-utterance
   normalisation, 80 mels) over batches of corpus files, timed with `interleaved` (median of rounds); x real time
   = seconds of audio / seconds of extraction. Goal >= 100x on 2 cores.
3. Training: per seed, one run of the main job on the corpus (word targets, WER on the held-out test speakers,
   greedy decoding): `teacher_forcing` for N + M steps, and the chain `teacher_forcing:N>reinforce:M` (SCST:
   K samples, greedy baseline, reward from the task's metric), whose first N steps are the teacher-forcing
   entry's own (shared, not retrained). So both sides take N + M optimizer steps from the same N-step model. The
   relative WER cut = 100 (WER_tf - WER_scst) / WER_tf, beside the 8.7% of Chen et al. 2022 (arXiv 2204.06260,
   LibriSpeech test-clean, a far larger model): mean and spread over seeds, and whether it is beyond the spread.

    python benchmarks/speech.py [--quick] [--json] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import goal, interleaved, provenance  # noqa: E402

from unforced.experiment import run_experiment  # noqa: E402
from unforced.run_config import RunConfig  # noqa: E402
from unforced.tasks import speech  # noqa: E402
from unforced.tasks.codecs import AudioCodec  # noqa: E402
from unforced.tasks.manifests import read_manifest  # noqa: E402

ANCHOR_RELATIVE_WER_CUT = 8.7  # Chen et al. 2022, SCST on LibriSpeech test-clean
FEATURES_GOAL = 100.0  # x real time on 2 cores
SIZES = {
    "quick": {"synthesis": 12, "corpus": 60, "feature_files": 32, "repeats": 2, "seeds": 1, "steps": 6,
              "fine_tune": 2, "batch_size": 8, "embedding": 16, "hidden": 24, "mels": 24, "eval_limit": 8,
              "test_limit": 8, "samples": 2},
    # Sized to finish in about 10 minutes on 2 shared cores (measured: ~1 teacher-forcing step a second at batch 32,
    # hidden 128 under load, so batch 16 and hidden 96 here).
    "full": {"synthesis": 300, "corpus": 3000, "feature_files": 256, "repeats": 5, "seeds": 2, "steps": 300,
             "fine_tune": 40, "batch_size": 16, "embedding": 48, "hidden": 96, "mels": 40, "eval_limit": 100,
             "test_limit": 200, "samples": 4},
}


def synthesis(count: int, espeak: speech.Espeak) -> dict:
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as folder:
        stats = speech.synthesise(count, seed=12345, cache_dir=Path(folder), espeak=espeak)
    ms = stats.ms_per_utterance
    return {"utterances": count, "ms_per_utterance": ms, "x_real_time": stats.audio_seconds / stats.seconds,
            "mean_utterance_seconds": stats.audio_seconds / count,
            "projected_10000_utterances_seconds": ms * 10_000 / 1000.0}


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


def training(manifest: Path, size: dict, seeds: int, out: Path) -> dict:
    chain = f"teacher_forcing:{size['steps']}>reinforce:{size['fine_tune']}"
    per_seed = []
    for seed in range(seeds):
        config = RunConfig(
            task=str(manifest), task_options={"tokenizer": "word", "mels": size["mels"]},
            strategies=["teacher_forcing", chain], preset="quick", seed=seed,
            strategy_options={"reinforce": {"samples": size["samples"], "temperature": 1.0}},
            phase_train={"reinforce": {"learning_rate": 3e-4, "warmup": 0,
                                       "eval_every": max(1, size["fine_tune"] // 3)}},
            model={"kind": "gru", "embedding": size["embedding"], "hidden": size["hidden"], "dropout": 0.1},
            train={"steps": size["steps"] + size["fine_tune"], "batch_size": size["batch_size"],
                   "eval_every": max(1, size["steps"] // 3), "eval_limit": size["eval_limit"],
                   "checkpoint_every": max(1, size["steps"] // 3), "learning_rate": 2e-3},
            test_limit=size["test_limit"], diagnostics_limit=0)
        started = time.perf_counter()
        results = run_experiment(config, out / f"seed-{seed}")
        entries = results["strategies"]
        tf, scst = entries["teacher_forcing"], entries[chain]
        wer_tf, wer_scst = tf["metric"]["fr"], scst["metric"]["fr"]
        per_seed.append({"seed": seed, "wer_teacher_forcing": wer_tf, "wer_scst": wer_scst,
                         "relative_wer_cut_pct": 100.0 * (wer_tf - wer_scst) / wer_tf if wer_tf else 0.0,
                         "gap_pct_teacher_forcing": tf["gap_pct"], "gap_pct_scst": scst["gap_pct"],
                         "train_seconds": {"teacher_forcing": tf["train_seconds"], "scst": scst["train_seconds"]},
                         "seconds": time.perf_counter() - started, "signature": results["signature"]["metric"]})
    cuts = [s["relative_wer_cut_pct"] for s in per_seed]
    spread = statistics.stdev(cuts) if len(cuts) > 1 else None
    mean = statistics.mean(cuts)
    return {"seeds": per_seed, "relative_wer_cut_pct": {"mean": mean, "stdev": spread, "values": cuts},
            "beyond_seed_spread": spread is not None and mean > 2 * spread / len(cuts) ** 0.5,
            "anchor": {"relative_wer_cut_pct": ANCHOR_RELATIVE_WER_CUT, "source": "Chen et al. 2022, "
                       "arXiv 2204.06260, SCST, LibriSpeech test-clean"},
            "setup": {"chain": chain, "teacher_forcing_steps": size["steps"] + size["fine_tune"],
                      "model": f"gru, audio front end, embedding {size['embedding']}, hidden {size['hidden']}",
                      "targets": "words", "decode": "greedy", "split": "test (held-out speakers)",
                      "test_limit": size["test_limit"], "reinforce_samples": size["samples"],
                      "equal_work": "both sides take the same N + M optimizer steps from the same N-step model"}}


def log(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke size the tests run")
    parser.add_argument("--json", action="store_true", help="print the JSON document alone on stdout")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 2, quick 1)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    arguments = parser.parse_args(argv)
    size = SIZES["quick" if arguments.quick else "full"]
    seeds = arguments.seeds or size["seeds"]
    espeak = speech.obtain_espeak()
    document: dict = {"benchmark": "speech", "size": "quick" if arguments.quick else "full",
                      "provenance": provenance(espeak=espeak.run(["--version"]).decode().split(" Data")[0])}
    log("synthesis ...")
    document["synthesis"] = synthesis(size["synthesis"], espeak)
    started = time.perf_counter()
    corpus = speech.synthesise(size["corpus"], seed=0, espeak=espeak)  # the cached corpus (made once)
    document["corpus"] = {"utterances": size["corpus"], "made_now": corpus.made, "manifest": str(corpus.manifest),
                          "seconds": time.perf_counter() - started}
    log("features ...")
    document["features"] = features(corpus.manifest, size["feature_files"], size["repeats"])
    log("training ...")
    with tempfile.TemporaryDirectory(prefix="speech-runs-") as scratch:
        document["training"] = training(corpus.manifest, size, seeds, arguments.out or Path(scratch))
    cut = document["training"]["relative_wer_cut_pct"]["mean"]
    document["goals"] = {
        "features_x_real_time": goal(document["features"]["x_real_time"], FEATURES_GOAL, lower_is_better=False),
        "synthesis_10000_utterances_seconds": goal(
            document["synthesis"]["projected_10000_utterances_seconds"], 300.0),
        "relative_wer_cut_pct": goal(cut, ANCHOR_RELATIVE_WER_CUT, lower_is_better=False),
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
