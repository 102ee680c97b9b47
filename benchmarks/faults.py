"""Fault injection: runs killed at random moments must resume to the same weights; bad files must be refused.

Three kinds of fault, each through the real command (`python -m unforced.cli train ... --json` subprocesses):
- SIGKILL: a tiny training run is killed at a seeded random moment (most after the first checkpoint, some before
  it, some resumes killed again), then resumed with `--resume`; the final checkpoint's weights must equal those of
  an uninterrupted run tensor for tensor (torch.equal), with the same metrics lines (none lost, none twice) and
  the same test figures.
- corrupt checkpoints: last.pt of a finished run truncated, bit-flipped, replaced by a foreign file, given another
  format number, emptied; `--resume` must exit 2 with one line on stderr and change no byte of the run directory.
- malformed data files: `--task FILE --resume` on a finished run must exit 2 with one line naming the file, and
  change no byte of the run directory.

Prints JSON: runs_killed, resumed_identical, corrupt_checkpoints_refused/_total, bad_files_refused/_total,
nothing_lost (no trial lost or changed anything written), seconds, and the details of every failure.
`--quick` runs 3 kills and a few files instead of 20 and all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from unforced.runfiles import MAGIC, read_checkpoint_file

STEPS = 300
TINY_CONFIG = {
    "task": "copy", "task_options": {"size": 160, "length": 5},
    "model": {"kind": "gru", "embedding": 16, "hidden": 32},
    "train": {"steps": STEPS, "batch_size": 16, "checkpoint_every": 10, "eval_every": 0, "log_every": 10},
    "test_limit": 20, "diagnostics_limit": 0,
}
# Pairs files take no task options: the bad-file commands read this one.
FILES_CONFIG = {key: value for key, value in TINY_CONFIG.items() if key != "task_options"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FIGURES = ("tf_nll", "fr_nll", "gap_nll", "tf_token_acc", "fr_token_acc", "metric", "per_position")


DEVICE = ["--device", "cpu"]  # main() sets it from --device; every command trains there


def train_command(out: Path, config: Path, task: str = "copy", resume: bool = False) -> list[str]:
    command = [sys.executable, "-m", "unforced.cli", "train", "--task", task, "--strategy", "teacher_forcing",
               "--config", str(config), "--out", str(out), "--json", *DEVICE]
    return command + (["--resume"] if resume else [])


def checkpoint_step(path: Path) -> int | None:
    try:
        return read_checkpoint_file(path)["step"]
    except Exception:  # absent, or replaced while we read it
        return None


def loss_steps(out: Path) -> list[int]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["step"] for line in lines if "loss" in line]


def snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory` (the run lock aside: it comes and goes with each command)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


class Reference:
    """The uninterrupted run every resumed one must match."""

    def __init__(self, out: Path, config: Path):
        started = time.perf_counter()
        result = subprocess.run(train_command(out, config), capture_output=True, text=True, env=ENV)
        if result.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{result.stderr}")
        self.seconds = time.perf_counter() - started
        self.out = out
        self.weights = read_checkpoint_file(out / "checkpoints" / "last.pt")["model"]
        self.results = json.loads((out / "results.json").read_text())["strategies"]["teacher_forcing"]
        self.train_seconds = self.results["train_seconds"]
        self.loss_steps = loss_steps(out)

    def differences(self, out: Path) -> list[str]:
        """What differs between the run in `out` and the reference (empty when identical)."""
        problems = []
        checkpoint = read_checkpoint_file(out / "checkpoints" / "last.pt")
        if checkpoint["step"] != STEPS:
            problems.append(f"final step {checkpoint['step']}")
        weights = checkpoint["model"]
        if weights.keys() != self.weights.keys():
            problems.append("other weight names")
        else:
            problems += [f"weights {key} differ" for key in weights if not torch.equal(weights[key], self.weights[key])]
        if loss_steps(out) != self.loss_steps:
            problems.append(f"metrics steps differ: {loss_steps(out)[:40]}")
        results = json.loads((out / "results.json").read_text())["strategies"]["teacher_forcing"]
        problems += [f"results.{key} differ" for key in FIGURES if results[key] != self.results[key]]
        return problems


def wait_for_checkpoint(process: subprocess.Popen, path: Path, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            return True
        time.sleep(0.01)
    return path.exists()


def kill(process: subprocess.Popen) -> bool:
    """SIGKILL `process`; whether it was still running (a run that finished first was not interrupted)."""
    running = process.poll() is None
    if running:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return running


def kill_trial(index: int, seed: int, work: Path, config: Path, reference: Reference) -> dict:
    """Start, kill at a seeded random moment, maybe kill the resume too, resume to the end, compare."""
    rng = random.Random(seed * 1000 + index)
    out = work / f"killed-{index}"
    checkpoint = out / "checkpoints" / "last.pt"
    early = index % 7 == 1  # killed before the first checkpoint: the resume must start from scratch
    kill_resume = index % 4 == 2
    record = {"trial": index, "early": early, "killed_resume": False}
    process = subprocess.Popen(train_command(out, config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=ENV)
    if early:
        time.sleep(rng.uniform(0.3, 2.5))  # the command is still importing torch or building the task
    else:
        wait_for_checkpoint(process, checkpoint)
        time.sleep(rng.uniform(0.0, reference.train_seconds * 1.1))
    record["killed"] = kill(process)
    record["step_at_kill"] = checkpoint_step(checkpoint)
    if kill_resume:
        process = subprocess.Popen(train_command(out, config, resume=True), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(rng.uniform(2.5, 5.0))
        record["killed_resume"] = kill(process)
        record["step_at_second_kill"] = checkpoint_step(checkpoint)
    result = subprocess.run(train_command(out, config, resume=True), capture_output=True, text=True, env=ENV,
                            timeout=300)
    if result.returncode != 0:
        record["problems"] = [f"resume exited {result.returncode}: {result.stderr.strip()[-500:]}"]
    else:
        record["problems"] = reference.differences(out)
    record["identical"] = not record["problems"]
    shutil.rmtree(out, ignore_errors=True)
    return record


def corrupt(kind: str, path: Path) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bit_flipped":
        altered = bytearray(data)
        altered[len(data) * 2 // 3] ^= 0x10
        path.write_bytes(bytes(altered))
    elif kind == "foreign_file":
        torch.save({"format": 1, "model": {}}, path)  # a plain torch file, no header
    elif kind == "wrong_format_header":
        payload = data[data.index(b"\n") + 1:]
        path.write_bytes(MAGIC + f" 99 {hashlib.sha256(payload).hexdigest()}\n".encode() + payload)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(kind)


CORRUPTIONS = ("truncated", "bit_flipped", "foreign_file", "wrong_format_header", "empty")


def refused_cleanly(command: list[str], run_dir: Path, must_name: str) -> list[str]:
    """Run `command` on the finished run `run_dir`: the problems with how it was refused (empty when clean)."""
    before = snapshot(run_dir)
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    problems = []
    if result.returncode != 2:
        problems.append(f"exit code {result.returncode}")
    message = result.stderr.strip()
    if message.count("\n") != 0:
        problems.append(f"{message.count(chr(10)) + 1} lines on stderr: {message[-300:]}")
    if must_name not in message:
        problems.append(f"message does not name {must_name}: {message[:300]}")
    if result.stdout:
        problems.append("something on stdout")
    after = snapshot(run_dir)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if changed:
        problems.append(f"changed: {', '.join(changed)}")
    return problems


def corrupt_trial(kind: str, work: Path, config: Path, reference: Reference) -> dict:
    out = work / f"corrupt-{kind}"
    shutil.copytree(reference.out, out)
    checkpoint = out / "checkpoints" / "last.pt"
    corrupt(kind, checkpoint)
    problems = refused_cleanly(train_command(out, config, resume=True), out, str(checkpoint))
    previous = out / "checkpoints" / "previous.pt"
    if checkpoint_step(previous) is None:
        problems.append("previous.pt does not load")
    shutil.rmtree(out, ignore_errors=True)
    return {"kind": kind, "problems": problems, "refused": not problems}


def bad_files(directory: Path, seed: int) -> dict[str, Path]:
    """Malformed pairs files, each with a fault a user might meet."""
    directory.mkdir(parents=True, exist_ok=True)
    good = [f"s{i} a b\tt{i} a b" for i in range(6)]
    contents: dict[str, bytes] = {
        "one_field.tsv": "\n".join(good[:2] + ["only one field"] + good[2:]).encode(),
        "bad_json.jsonl": b'{"source": "a", "target": "b"}\n{"source": "c", "target": \n',
        "not_string.jsonl": b'{"source": "a", "target": "b"}\n{"source": 3, "target": "b"}\n',
        "unknown_split.tsv": "\n".join(good[:3] + ["x\ty\tdevelopment"] + good[3:]).encode(),
        "latin1.tsv": "\n".join(good[:3] + ["café\tcoffee"] + good[3:]).encode("latin-1"),
        "utf16.tsv": "\n".join(good).encode("utf-16"),
        "nul_bytes.tsv": "\n".join(good[:1] + ["a\x00b\tc\x00d"] + good[1:]).encode(),
        "empty.tsv": b"",
        "huge_line.tsv": "\n".join(good[:2] + ["a " * 1_000_000 + "\tb"] + good[2:]).encode(),  # 2 MB, 1M words
        "random_bytes.jsonl": random.Random(seed).randbytes(4096),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = directory / name
        paths[name].write_bytes(content)
    return paths


def bad_file_trial(name: str, path: Path, work: Path, reference: Reference) -> dict:
    out = work / f"bad-{name}"
    shutil.copytree(reference.out, out)
    config = work / "files.yaml"
    problems = refused_cleanly(train_command(out, config, task=str(path), resume=True), out, str(path))
    shutil.rmtree(out, ignore_errors=True)
    return {"file": name, "problems": problems, "refused": not problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 kills and a few bad files (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print the JSON result alone on stdout")
    parser.add_argument("--kills", type=int, default=None, help="killed runs (default 20, quick 3)")
    parser.add_argument("--workers", type=int, default=2, help="commands run side by side (one thread each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N: where each command trains")
    args = parser.parse_args()
    DEVICE[1] = args.device
    kills = args.kills if args.kills is not None else (3 if args.quick else 20)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unforced-faults-") as directory:
        work = Path(directory)
        config = work / "tiny.yaml"
        config.write_text(yaml.safe_dump(TINY_CONFIG))
        (work / "files.yaml").write_text(yaml.safe_dump(FILES_CONFIG))
        reference = Reference(work / "reference", config)
        corruptions = CORRUPTIONS[:2] if args.quick else CORRUPTIONS
        files = bad_files(work / "data", args.seed)
        if args.quick:
            files = {name: files[name] for name in ("one_field.tsv", "latin1.tsv", "bad_json.jsonl")}
        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
            killed = list(pool.map(lambda i: kill_trial(i, args.seed, work, config, reference), range(kills)))
            corrupted = list(pool.map(lambda k: corrupt_trial(k, work, config, reference), corruptions))
            refused = list(pool.map(lambda item: bad_file_trial(*item, work, reference), files.items()))
        reference_intact = not reference.differences(reference.out)
    changed_anything = [t for t in corrupted + refused if any(p.startswith("changed") or "previous.pt" in p
                                                              for p in t["problems"])]
    output = {
        "runs_killed": sum(t["killed"] for t in killed),
        "resumed_identical": sum(t["identical"] for t in killed),
        "trials": kills,
        "killed_before_first_checkpoint": sum(t["killed"] and t["step_at_kill"] is None for t in killed),
        "resumes_killed": sum(t["killed_resume"] for t in killed),
        "corrupt_checkpoints_refused": sum(t["refused"] for t in corrupted),
        "corrupt_checkpoints_total": len(corrupted),
        "bad_files_refused": sum(t["refused"] for t in refused),
        "bad_files_total": len(refused),
        "nothing_lost": all(t["identical"] for t in killed) and not changed_anything and reference_intact,
        "device": args.device,
        "seconds": round(time.perf_counter() - started, 1),
        "reference_seconds": round(reference.seconds, 1),
        "failures": [t for t in killed + corrupted + refused if t["problems"]],
        "kills": [{k: t[k] for k in ("trial", "killed", "step_at_kill", "killed_resume")} for t in killed],
    }
    if args.json:
        sys.stdout.write(json.dumps(output) + "\n")
    else:
        sys.stderr.write(json.dumps(output, indent=1) + "\n")


if __name__ == "__main__":
    main()
