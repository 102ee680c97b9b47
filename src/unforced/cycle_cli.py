"""`unforced cycle`: the ASR-TTS cycle on the spoken corpus (unforced.cycle, docs/speech.md). The main CLI
registers this function as its `cycle` command. Run again with the same `--out`, it resumes where it stopped;
other settings in a folder that holds a run are refused (or, with --overwrite, the folder is started over).
`--json` prints the result alone on stdout; progress goes to stderr; bad arguments raise UnforcedError, which the
main command turns into exit code 2 and one line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from unforced.errors import UnforcedError
from unforced.runfiles import atomic_write_text

stderr = Console(stderr=True)
QUICK = {"size": 60, "mels": 24, "rounds": 1, "asr_steps": 20, "tts_steps": 20, "round_asr_steps": 10,
         "round_tts_steps": 10, "batch_size": 8, "asr_hidden": 32, "asr_embedding": 16, "tts_hidden": 32,
         "eval_limit": 16}


def cycle(paired: float = typer.Option(0.1, "--paired", help="share of the train utterances with both audio and "
                                       "transcript; the rest is halved into speech alone and text alone"),
          size: int = typer.Option(3000, "--size", help="utterances of the spoken corpus (made on first use)"),
          mels: int = typer.Option(40, "--mels", help="mel bins of the features"),
          rounds: int = typer.Option(2, "--rounds", help="rounds of the cycle after the paired phases"),
          asr_steps: int = typer.Option(1200, "--asr-steps", help="recogniser steps on the paired share"),
          tts_steps: int = typer.Option(1200, "--tts-steps", help="synthesiser steps on the paired share"),
          round_asr_steps: int = typer.Option(300, "--round-asr-steps", help="recogniser steps a round"),
          round_tts_steps: int = typer.Option(300, "--round-tts-steps", help="synthesiser steps a round"),
          tts_feed: str = typer.Option("teacher_forcing", "--tts-feed",
                                       help="teacher_forcing or scheduled_sampling (the synthesiser's frames)"),
          cycle_weight: float = typer.Option(0.5, "--cycle-weight",
                                             help="weight of the cycle-consistency term against cross-entropy"),
          seed: int = typer.Option(0, "--seed", help="seeds the split, the weights and every choice"),
          quick: bool = typer.Option(False, "--quick", help="a tiny corpus and few steps: a smoke run"),
          out: Path | None = typer.Option(None, "--out", help="folder of the run (default runs/cycle-paired-P)"),
          overwrite: bool = typer.Option(False, "--overwrite", help="start over in an --out that holds another "
                                         "run"),
          as_json: bool = typer.Option(False, "--json", help="print the JSON result alone on stdout")):
    """The ASR-TTS cycle: a recogniser and a synthesiser trained on the paired share, then teaching each other on
    unpaired speech and text; test CER and WER and the synthesiser's frame gap after each round."""
    from unforced.cycle import CycleConfig, run_cycle
    from unforced.tasks.speech import speech_task, synthesise

    options = {"rounds": rounds, "asr_steps": asr_steps, "tts_steps": tts_steps,
               "round_asr_steps": round_asr_steps, "round_tts_steps": round_tts_steps}
    if quick:
        size, mels = QUICK["size"], QUICK["mels"]
        options = {key: value for key, value in QUICK.items() if key not in ("size", "mels")}
    if size < 10:
        raise UnforcedError(f"--size must be at least 10 utterances, got {size}")
    if mels < 1:
        raise UnforcedError(f"--mels must be at least 1, got {mels}")
    config = CycleConfig(paired=paired, seed=seed, tts_feed=tts_feed, cycle_weight=cycle_weight, **options)
    out = out or Path("runs") / f"cycle-paired-{paired:g}"
    settings = {"size": size, "mels": mels, **dataclasses.asdict(config)}
    _claim(out, settings, overwrite)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, transient=True) as bar:
        corpus = bar.add_task("speech corpus", total=size)  # made (or finished) first, with its own bar
        synthesise(size, 0, progress=lambda done, total: bar.update(corpus, completed=done))
        task = speech_task(size=size, mels=mels, seed=seed)
        jobs: dict[str, int] = {}

        def progress(event: dict) -> None:
            if isinstance(event.get("step"), int):
                name, done, total = event["phase"], event["step"], event["steps"]
            else:
                name, done, total = f"{event['phase']}/{event['step']}", event["done"], event["total"]
            if name not in jobs:
                jobs[name] = bar.add_task(name, total=total)
            bar.update(jobs[name], completed=done)

        result = run_cycle(task, config, out, progress=progress)
    result = {"settings": settings, **result}
    atomic_write_text(json.dumps(result, indent=2) + "\n", out / "results.json")
    if as_json:
        typer.echo(json.dumps(result))
        return
    for entry in result["rounds"]:
        tts = entry["tts"]
        stderr.print(f"round {entry['round']}: test CER {entry['asr']['cer']:.4f}, WER {entry['asr']['wer']:.4f}; "
                     f"synthesiser frame error teacher-forced {tts['tf']:.4f}, free-running {tts['fr']:.4f}",
                     highlight=False)
    stderr.print(f"result: {out / 'results.json'}", highlight=False)


def _claim(out: Path, settings: dict, overwrite: bool) -> None:
    """Make `out` this run's folder: new, or holding a run of the same settings (resumed); a run of other
    settings is refused unless `overwrite` (then the folder is emptied)."""
    marker = out / "settings.json"
    if marker.exists():
        try:
            before = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UnforcedError(f"{marker}: unreadable ({error}); use another --out or --overwrite") from None
        if before != settings and not overwrite:
            changed = sorted(key for key in settings.keys() | before.keys() if before.get(key) != settings.get(key))
            raise UnforcedError(f"--out {out} holds a cycle run of other settings ({', '.join(changed)}); use "
                                "another --out, the same settings to resume it, or --overwrite to start over")
        if before != settings:
            shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise UnforcedError(f"--out {out} is not empty and holds no cycle run; use another --out or --overwrite")
    elif out.exists() and overwrite:
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(settings, indent=2) + "\n", marker)
    except OSError as error:
        raise UnforcedError(f"--out {out}: cannot write there: {error}") from None


__all__ = ["cycle"]
