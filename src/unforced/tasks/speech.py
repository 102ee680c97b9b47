"""The spoken corpus `speech`: short everyday English sentences spoken by espeak-ng, made here from a seed.

No corpus ships in a package and nothing is downloaded at run time but the speech synthesiser itself, so the
project makes its own. espeak-ng (GPL, so called as a subprocess, never vendored) is unpacked from its Debian
packages into the cache with `apt-get download` + `dpkg-deb -x`, as `sword.py` does for the Bible: no system
install. Its shared libraries (and those of the packages it needs that the system lacks, e.g. libpulse0) are found
through LD_LIBRARY_PATH, its voices through ESPEAK_DATA_PATH.

Each utterance `i` is drawn from its own generator `default_rng([seed, i])`, so the corpus is the same whatever
the order or the number of workers, and an interrupted build resumes where it stopped:

    sentence   from a small grammar (about 150 everyday words, 3 to 9 words a sentence)
    speaker    an English voice x a variant (`-v en-us+f3`): 8 voices x 98 variants; the valid and test speakers
               are held out whole (no utterance of theirs is in training)
    prosody    rate 130..200 words a minute (`-s`), pitch 25..75 (`-p`)
    noise      white noise at an SNR of 30, 20, 10 or 5 dB, or none (clean)
    audio      espeak's 22050 Hz resampled to 16 kHz (band-limited, by FFT), 16-bit PCM WAV

    <cache>/speech-v1-seed<S>-n<N>/wav/utt-000000.wav ...   written through a temporary file and renamed
    <cache>/speech-v1-seed<S>-n<N>/manifest.jsonl           audio, text, split, speaker, rate, pitch, snr

The manifest is the format `tasks/manifests.py` reads, so the task is a manifest task (metric WER).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unforced.errors import UnforcedError
from unforced.tasks.base import Task
from unforced.tasks.cache import default_cache_dir, unpack_packages

PACKAGES = ("espeak-ng", "espeak-ng-data", "libespeak-ng1", "libpcaudio0", "libsonic0")
SAMPLE_RATE = 16000
VERSION = 1  # bump when the grammar, the speakers or the audio change, so an old corpus is not taken for new
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029",
          "en-us-nyc")
# Whispered variants have no voicing at all: at 5 dB SNR they are noise to a listener too.
EXCLUDED_VARIANTS = ("whisper", "whisperf")
SNRS = (None, 30.0, 20.0, 10.0, 5.0)  # dB; None: clean
SPLIT_SHARES = {"train": 0.8, "valid": 0.1, "test": 0.1}  # of the utterances and of the speakers


# --- espeak-ng, unpacked into the cache -----------------------------------------------------------------------

@dataclass(frozen=True)
class Espeak:
    """How to run the unpacked espeak-ng: its binary and the environment that finds its libraries and data."""

    binary: str
    env: dict

    def run(self, arguments: list[str], text: str | None = None) -> bytes:
        command = [self.binary, *arguments] + ([] if text is None else ["--", text])
        result = subprocess.run(command, capture_output=True, env=self.env)
        if result.returncode != 0:
            raise UnforcedError(f"espeak-ng {' '.join(arguments)} failed: "
                                f"{result.stderr.decode(errors='replace').strip() or result.returncode}")
        return result.stdout

    def variants(self) -> list[str]:
        """The voice variants (`+f3`, `+klatt`, ...) this espeak-ng has, sorted: its `voices/!v` files (a name
        with a space cannot follow `+`)."""
        folder = Path(self.env["ESPEAK_DATA_PATH"]) / "voices" / "!v"
        names = {path.name for path in folder.iterdir() if path.is_file() and " " not in path.name}
        return sorted(names - set(EXCLUDED_VARIANTS))


def obtain_espeak(cache_dir: Path | None = None) -> Espeak:
    """espeak-ng unpacked under `cache_dir/espeak-ng`, fetched with apt-get on first use (a `make data` step).

    The packages and every dependency the system lacks are unpacked into a scratch folder, checked to speak, and
    renamed into place in one step, so a half-done extraction is never taken for a finished one.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "espeak-ng"
    if (found := _espeak_under(target)) is not None:
        return found
    unpack_packages(lambda: _missing_closure(PACKAGES, cache_dir), target,
                    lambda root: _espeak_under(root) is not None, lambda reason: _how_to_get(reason, cache_dir),
                    "the unpacked espeak-ng does not run", tools=("apt-get", "apt-cache", "dpkg-deb", "dpkg-query"))
    found = _espeak_under(target)
    if found is None:
        raise UnforcedError(_how_to_get("the unpacked espeak-ng does not run", cache_dir))
    return found


def _espeak_under(root: Path) -> Espeak | None:
    binary = root / "usr" / "bin" / "espeak-ng"
    libraries = root / "usr" / "lib" / "x86_64-linux-gnu"
    if not binary.is_file():
        return None
    library_dirs = [str(libraries), str(libraries / "pulseaudio")]
    library_dirs += [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(library_dirs),
           "ESPEAK_DATA_PATH": str(libraries / "espeak-ng-data")}
    espeak = Espeak(str(binary), env)
    try:
        espeak.run(["--version"])
    except (UnforcedError, OSError):
        return None
    return espeak


def _missing_closure(roots: tuple[str, ...], cache_dir: Path) -> list[str]:
    """The packages `roots` with their dependencies (recursively) that are not installed on this system.

    Of alternatives (`a | b`) an installed one satisfies the group; else the first is taken."""
    chosen, queue = [], list(roots)
    while queue:
        package = queue.pop(0)
        if package in chosen:
            continue
        chosen.append(package)
        result = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", package],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise UnforcedError(_how_to_get(f"apt-cache depends {package} failed", cache_dir))
        group: list[str] = []
        for line in result.stdout.splitlines()[1:]:
            stripped = line.strip()
            if not stripped.lstrip("|").startswith(("Depends:", "PreDepends:")):
                continue
            group.append(stripped.split(":", 1)[1].strip())
            if stripped.startswith("|"):
                continue  # more alternatives of this group follow
            real = [name for name in group if not name.startswith("<")]
            if real and not any(_installed(name) for name in real):
                queue.append(real[0])
            group = []
    return [package for package in chosen if package in roots or not _installed(package)]


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.endswith("ok installed")


def _how_to_get(reason: str, cache_dir: Path) -> str:
    return (f"cannot get espeak-ng for the speech corpus ({reason}): run `apt-get download {' '.join(PACKAGES)}` "
            f"(and their missing dependencies) and `dpkg-deb -x <package>.deb {cache_dir / 'espeak-ng'}` for each, "
            "or give the task a manifest of your own audio")


# --- the grammar ----------------------------------------------------------------------------------------------

NAMES = ("anna", "ben", "maria", "tom", "lucy", "sam", "emma", "jack", "sara", "david", "kate", "peter")
THINGS = ("cup", "book", "dog", "cat", "car", "chair", "table", "phone", "bag", "key", "door", "window", "bike",
          "coat", "hat", "box", "ball", "lamp", "clock", "bed")
PLACES = ("in the kitchen", "on the table", "at the door", "in the garden", "under the bed", "near the window",
          "in the car", "at school", "at home", "in the park", "on the shelf", "by the river")
ADJECTIVES = ("red", "blue", "green", "big", "small", "old", "new", "warm", "cold", "clean", "happy", "quiet")
VERBS = ("open", "close", "find", "bring", "take", "clean", "wash", "move", "carry", "fix", "show", "buy")
PAST = {"open": "opened", "close": "closed", "find": "found", "bring": "brought", "take": "took", "clean":
        "cleaned", "wash": "washed", "move": "moved", "carry": "carried", "fix": "fixed", "show": "showed",
        "buy": "bought"}
TIMES = ("today", "tomorrow", "now", "tonight", "this morning", "after lunch", "before dinner", "on monday",
         "on friday", "at noon")
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
FOODS = ("bread", "milk", "tea", "coffee", "rice", "soup", "apples", "eggs", "water", "cheese")


def sentence(rng: np.random.Generator) -> str:
    """One short everyday sentence of the grammar (lower case, no punctuation: the words are the transcript)."""
    def pick(words):
        return words[int(rng.integers(len(words)))]

    form = int(rng.integers(8))
    if form == 0:
        return f"the {pick(ADJECTIVES)} {pick(THINGS)} is {pick(PLACES)}"
    if form == 1:
        return f"{pick(NAMES)} {PAST[pick(VERBS)]} the {pick(THINGS)} {pick(TIMES)}"
    if form == 2:
        return f"please {pick(VERBS)} the {pick(ADJECTIVES)} {pick(THINGS)}"
    if form == 3:
        return f"{pick(NAMES)} has {pick(NUMBERS)} {pick(THINGS)}s"
    if form == 4:
        return f"can you {pick(VERBS)} the {pick(THINGS)} {pick(TIMES)}"
    if form == 5:
        return f"we need some {pick(FOODS)} and {pick(FOODS)}"
    if form == 6:
        return f"{pick(NAMES)} and {pick(NAMES)} are {pick(PLACES)}"
    return f"where is the {pick(ADJECTIVES)} {pick(THINGS)}"


# --- the corpus -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Utterance:
    """What utterance `index` says and how; all of it from `default_rng([seed, index])`."""

    index: int
    text: str
    split: str
    speaker: str  # voice+variant, the `-v` argument
    rate: int
    pitch: int
    snr: float | None

    @property
    def file(self) -> str:
        return f"wav/utt-{self.index:06d}.wav"


def speakers_by_split(variants: list[str], seed: int) -> dict[str, list[str]]:
    """Every voice+variant, shuffled with `seed` and cut 80/10/10: valid and test speakers never train."""
    speakers = [f"{voice}+{variant}" for voice in VOICES for variant in variants]
    order = np.random.default_rng([seed, 2**31]).permutation(len(speakers))
    shuffled = [speakers[i] for i in order]
    test = max(1, round(len(shuffled) * SPLIT_SHARES["test"]))
    valid = max(1, round(len(shuffled) * SPLIT_SHARES["valid"]))
    return {"test": shuffled[:test], "valid": shuffled[test:test + valid], "train": shuffled[test + valid:]}


def plan(size: int, seed: int, variants: list[str]) -> list[Utterance]:
    """The `size` utterances of the corpus of `seed`: 10% test and 10% valid (at least one each, by a seeded
    permutation), each spoken by a speaker of its split."""
    speakers = speakers_by_split(variants, seed)
    order = np.random.default_rng([seed, 2**31 + 1]).permutation(size)
    test = max(1, round(size * SPLIT_SHARES["test"]))
    valid = max(1, round(size * SPLIT_SHARES["valid"]))
    split_of = {int(i): "test" for i in order[:test]} | {int(i): "valid" for i in order[test:test + valid]}
    utterances = []
    for index in range(size):
        rng = np.random.default_rng([seed, index])
        split = split_of.get(index, "train")
        pool = speakers[split]
        snr = SNRS[int(rng.integers(len(SNRS)))]
        utterances.append(Utterance(index, sentence(rng), split, pool[int(rng.integers(len(pool)))],
                                    int(rng.integers(130, 201)), int(rng.integers(25, 76)), snr))
    return utterances


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by FFT: keep the spectrum below the new Nyquist frequency, inverse at the new
    length (the signal is taken as periodic; an utterance starts and ends in silence)."""
    if rate == target:
        return samples
    count = round(len(samples) * target / rate)
    spectrum = np.fft.rfft(samples)[: count // 2 + 1]
    return (np.fft.irfft(spectrum, count) * (count / len(samples))).astype(np.float32)


def pcm_of(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    """Float samples and rate of espeak's `--stdout` WAV (a streaming header whose sizes are placeholders)."""
    data = wav_bytes.find(b"data")
    if not wav_bytes.startswith(b"RIFF") or data < 0:
        raise UnforcedError("espeak-ng wrote no WAV data")
    rate = int.from_bytes(wav_bytes[24:28], "little")
    pcm = np.frombuffer(wav_bytes[data + 8:], dtype="<i2", count=(len(wav_bytes) - data - 8) // 2)
    return pcm.astype(np.float32) / 32768.0, rate


def speak(espeak: Espeak, utterance: Utterance, seed: int) -> np.ndarray:
    """16 kHz float samples of one utterance, noise added at its SNR (the noise from its own generator)."""
    voiced = espeak.run(["-v", utterance.speaker, "-s", str(utterance.rate), "-p", str(utterance.pitch),
                         "--stdout"], utterance.text)
    samples, rate = pcm_of(voiced)
    samples = resample(samples, rate)
    if utterance.snr is not None:
        power = float(np.mean(samples.astype(np.float64) ** 2)) or 1e-12
        noise = np.random.default_rng([seed, utterance.index, 1]).standard_normal(len(samples))
        samples = samples + (noise * np.sqrt(power / 10 ** (utterance.snr / 10))).astype(np.float32)
    peak = float(np.abs(samples).max(initial=0.0))
    return samples / peak * 0.9 if peak > 0.9 else samples


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """16-bit mono PCM, through a temporary file renamed into place (a reader sees no file or the whole one)."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2").tobytes()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with wave.open(str(temporary), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm)
    os.replace(temporary, path)


def corpus_dir(size: int, seed: int, cache_dir: Path | None = None) -> Path:
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache_dir / f"speech-v{VERSION}-seed{seed}-n{size}"


@dataclass(frozen=True)
class CorpusStats:
    """What one call of `synthesise` did: utterances made now (the rest were already there) and their time."""

    manifest: Path
    utterances: int
    made: int
    seconds: float
    audio_seconds: float  # of the utterances made now

    @property
    def ms_per_utterance(self) -> float:
        return 1000.0 * self.seconds / self.made if self.made else 0.0


def synthesise(size: int = 4000, seed: int = 0, cache_dir: Path | None = None, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None, espeak: Espeak | None = None) -> CorpusStats:
    """Make (or finish) the corpus of `size` utterances of `seed` under `cache_dir` (default: the cache) and its
    manifest; returns what it did. espeak-ng is `obtain_espeak()`'s (in the default cache) unless given.

    Utterances already on disk are kept (each was renamed into place whole), so an interrupted build resumes.
    `progress(done, total)` is called as utterances finish. The manifest is written last, through a rename."""
    if size < 3:
        raise UnforcedError(f"the speech corpus needs at least 3 utterances (one per split), got {size}")
    folder = corpus_dir(size, seed, cache_dir)
    manifest = folder / "manifest.jsonl"
    espeak = espeak or obtain_espeak()
    utterances = plan(size, seed, espeak.variants())
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    todo = [u for u in utterances if not (folder / u.file).is_file()]
    done = size - len(todo)
    if progress:
        progress(done, size)
    started = time.perf_counter()
    audio_seconds = 0.0

    def make(utterance: Utterance) -> float:
        samples = speak(espeak, utterance, seed)
        write_wav(folder / utterance.file, samples)
        return len(samples) / SAMPLE_RATE

    # Threads suffice: the work is the espeak-ng processes, and numpy's FFTs release the GIL.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for seconds in pool.map(make, todo):
            audio_seconds += seconds
            done += 1
            if progress:
                progress(done, size)
    elapsed = time.perf_counter() - started
    if todo or not manifest.is_file():
        lines = [json.dumps({"audio": u.file, "text": u.text, "split": u.split, "speaker": u.speaker,
                             "rate": u.rate, "pitch": u.pitch, "snr": u.snr}) for u in utterances]
        temporary = manifest.with_name(f".manifest.{os.getpid()}.tmp")
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, manifest)
    return CorpusStats(manifest, size, len(todo), elapsed, audio_seconds)


def speech_task(size: int = 4000, tokenizer: str = "char", vocab_size: int | None = None, seed: int = 0,
                corpus_seed: int = 0, metric: str = "wer", mels: int = 80, cache_dir: str | None = None) -> Task:
    """The synthesised corpus as a task: log-mel sources, character (or word, or BPE) targets, WER.

    `corpus_seed` fixes the corpus, `seed` the training: runs over several seeds share one corpus. Valid and test
    are spoken by speakers (voice+variant) that never occur in training. `cache_dir`: where the corpus is written
    (default: the cache, `$UNFORCED_CACHE` or ~/.cache/unforced)."""
    from unforced.tasks.manifests import manifest_task

    stats = synthesise(size, corpus_seed, Path(cache_dir) if cache_dir else None)
    task = manifest_task(stats.manifest, tokenizer=tokenizer, vocab_size=vocab_size, seed=seed, metric=metric,
                         sample_rate=SAMPLE_RATE, mels=mels)
    task.name = "speech"
    task.description = (f"{size} English sentences spoken by espeak-ng ({len(VOICES)} voices x variants, noise "
                        "at 5-30 dB SNR or clean), valid and test speakers held out")
    task.settings = {**task.settings, "size": size, "corpus_seed": corpus_seed, "corpus_version": VERSION,
                     "mels": mels}
    return task


def main(argv: list[str] | None = None) -> None:
    """`python -m unforced.tasks.speech [--size N] [--seed S]`: make the corpus with a progress bar (`make data`)."""
    import argparse

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    parser = argparse.ArgumentParser(prog="python -m unforced.tasks.speech", description=main.__doc__)
    parser.add_argument("--size", type=int, default=4000, help="utterances (default 4000, the task's default)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="parallel espeak-ng processes (default: cores)")
    arguments = parser.parse_args(argv)
    columns = (TextColumn("speech corpus"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            job = bar.add_task("speech", total=arguments.size)
            stats = synthesise(arguments.size, arguments.seed, workers=arguments.workers,
                               progress=lambda done, total: bar.update(job, completed=done))
    except UnforcedError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    made = (f", {stats.made} made now at {stats.ms_per_utterance:.1f} ms per utterance "
            f"({stats.audio_seconds / max(stats.seconds, 1e-9):.0f}x real time)" if stats.made else "")
    print(f"speech: {stats.utterances} utterances{made}, manifest {stats.manifest}", file=sys.stderr)


__all__ = ["Espeak", "Utterance", "obtain_espeak", "plan", "sentence", "speech_task", "synthesise"]

if __name__ == "__main__":
    main()
