"""Fault injection: runs killed at chosen moments must resume to the same state; bad files must be refused.

Three kinds of fault, each through the real command (`python -m unforced.cli train ... --json` subprocesses):
- SIGKILL: a tiny scheduled-sampling run (dropout on, a strategy generator, evaluations every 100 steps) is
  killed, then resumed with `--resume` (some resumes killed again first). Most kills are timed by the run's own
  progress: once the metrics line of a seeded target step appears, the kill follows within one checkpoint
  interval, so it lands between the first checkpoint and the end of training; a few land before the first
  checkpoint (while the command starts) and a few after training ended (during the test evaluation). Each kill
  is counted by where it landed, read from the checkpoints left behind. "Identical" means: every tensor and value
  of the final checkpoint (weights, optimizer state, every random state, the strategy's state, step, counters)
  equals the uninterrupted run's (torch.equal, ==), every metrics line has the same content in the same order
  (none lost, none twice), and results.json is the same, wall-clock fields (WALL_CLOCK) aside.
- corrupt checkpoints: last.pt of a finished run truncated, bit-flipped, replaced by a foreign file, given another
  format number, emptied; `--resume` must exit 2 with one line on stderr and change no byte of the run directory.
- malformed data files: `--task FILE --resume` on a finished run must exit 2 with one line naming the file, and
  change no byte of the run directory.

Prints JSON: provenance, kill counts by landing (mid_training, before_first_checkpoint, after_training,
finished_before_kill), resumed_identical, corrupt_checkpoints_refused/_total, bad_files_refused/_total,
nothing_lost, what "identical" compares and leaves out, goals, seconds, and the details of every failure.
`--quick` runs 3 kills and a few files instead of 30 and all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
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
from common import goal, provenance

from unforced.runfiles import MAGIC, read_checkpoint_file

STEPS = 300
CHECKPOINT_EVERY = 10
STRATEGY = "scheduled_sampling"  # keeps state a resume must restore: its own generator for the coins
TINY_CONFIG = {
    "task": "copy", "task_options": {"size": 160, "length": 5},
    "model": {"kind": "gru", "embedding": 16, "hidden": 32},  # dropout 0.2 (the default): the global generator
    "train": {"steps": STEPS, "batch_size": 16, "checkpoint_every": CHECKPOINT_EVERY, "eval_every": 100,
              "eval_limit": 20, "log_every": 10},
    "strategy_options": {STRATEGY: {"schedule": "linear", "schedule_params": {"steps": STEPS, "end": 0.5}}},
    "test_limit": 20, "diagnostics_limit": 0,
}
# Pairs files take no task options: the bad-file commands read this one.
FILES_CONFIG = {key: value for key, value in TINY_CONFIG.items() if key != "task_options"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# What "identical" leaves out, by file: the fields that measure wall-clock time, and the code's commit (other
# commits to the checkout may land while the benchmark runs). Everything else is compared.
WALL_CLOCK = {"checkpoint": ["train_seconds"], "metrics": ["steps_per_second"],
              "results": ["strategies.*.train_seconds"]}
PROVENANCE_ONLY = {"results": ["signature.commit"]}
LANDINGS = ("mid_training", "before_first_checkpoint", "after_training", "finished_before_kill")


DEVICE = ["--device", "cpu"]  # main() sets it from --device; every command trains there


def train_command(out: Path, config: Path, task: str = "copy", resume: bool = False) -> list[str]:
    command = [sys.executable, "-m", "unforced.cli", "train", "--task", task, "--strategy", STRATEGY,
               "--config", str(config), "--out", str(out), "--json", *DEVICE]
    return command + (["--resume"] if resume else [])


def checkpoint_step(path: Path) -> int | None:
    try:
        return read_checkpoint_file(path)["step"]
    except Exception:  # absent, or replaced while we read it
        return None


def logged_step(out: Path) -> int | None:
    """The step of the last training line in metrics.jsonl (None before the first)."""
    try:
        lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        if isinstance(record, dict) and "loss" in record:
            return record["step"]
    return None


def snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory` (the run lock aside: it comes and goes with each command)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


def compare(reference, candidate, where: str = "", skip: frozenset[str] = frozenset()) -> list[str]:
    """Every place where `candidate` differs from `reference` (nested dicts, lists, tensors, numbers); `skip`
    holds dotted paths left out, `*` matching any one key."""
    if where in skip or any(_matches(pattern, where) for pattern in skip if "*" in pattern):
        return []
    if isinstance(reference, torch.Tensor) or isinstance(candidate, torch.Tensor):
        if not (isinstance(reference, torch.Tensor) and isinstance(candidate, torch.Tensor)):
            return [f"{where}: a tensor on one side only"]
        if reference.dtype != candidate.dtype or reference.shape != candidate.shape:
            return [f"{where}: {candidate.dtype}{tuple(candidate.shape)} instead of "
                    f"{reference.dtype}{tuple(reference.shape)}"]
        same = torch.equal(reference, candidate) or (reference.is_floating_point() and bool(
            torch.equal(reference.isnan(), candidate.isnan())
            and torch.equal(reference.nan_to_num(0.0), candidate.nan_to_num(0.0))))
        return [] if same else [f"{where}: tensor values differ"]
    if isinstance(reference, dict) and isinstance(candidate, dict):
        problems = [f"{where}: keys {sorted(map(str, reference.keys() ^ candidate.keys()))} on one side only"] \
            if reference.keys() != candidate.keys() else []
        for key in reference.keys() & candidate.keys():
            problems += compare(reference[key], candidate[key], f"{where}.{key}" if where else str(key), skip)
        return problems
    if isinstance(reference, list | tuple) and isinstance(candidate, list | tuple):
        if len(reference) != len(candidate):
            return [f"{where}: {len(candidate)} items instead of {len(reference)}"]
        return [problem for index, (a, b) in enumerate(zip(reference, candidate, strict=True))
                for problem in compare(a, b, f"{where}[{index}]", skip)]
    if isinstance(reference, float) and isinstance(candidate, float) and math.isnan(reference) and \
            math.isnan(candidate):
        return []
    if type(reference) is not type(candidate) or reference != candidate:
        return [f"{where}: {candidate!r:.80} instead of {reference!r:.80}"]
    return []


def _matches(pattern: str, where: str) -> bool:
    parts, names = pattern.split("."), where.split(".")
    return len(parts) == len(names) and all(p in ("*", n) for p, n in zip(parts, names, strict=True))


def metrics_lines(out: Path) -> list[dict]:
    """Every line of metrics.jsonl, each parsed: a line that does not parse is a failure, not skipped."""
    records = []
    for number, line in enumerate((out / "metrics.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append({"unparsable_line": number})
    return records


def read_state(out: Path) -> dict:
    """What a finished run left that a resumed one must reproduce."""
    return {"checkpoint": read_checkpoint_file(out / "checkpoints" / "last.pt"),
            "metrics": metrics_lines(out),
            "results": json.loads((out / "results.json").read_text(encoding="utf-8"))}


class Reference:
    """The uninterrupted run every resumed one must match."""

    def __init__(self, out: Path, config: Path):
        started = time.perf_counter()
        result = subprocess.run(train_command(out, config), capture_output=True, text=True, env=ENV)
        if result.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{result.stderr}")
        self.seconds = time.perf_counter() - started
        self.out = out
        self.state = read_state(out)
        self.train_seconds = self.state["checkpoint"]["train_seconds"]
        self.checked = {"checkpoint_entries": count_leaves(self.state["checkpoint"]),
                        "metrics_lines": len(self.state["metrics"]),
                        "evaluation_lines": sum("eval" in r for r in self.state["metrics"])}

    def differences(self, out: Path) -> list[str]:
        """What differs between the run in `out` and the reference (empty when identical)."""
        try:
            state = read_state(out)
        except Exception as error:  # a missing or broken file is a difference too
            return [f"cannot read the run: {type(error).__name__}: {str(error)[:200]}"]
        problems = []
        if state["checkpoint"].get("step") != STEPS:
            problems.append(f"final step {state['checkpoint'].get('step')}")
        problems += compare(self.state["checkpoint"], state["checkpoint"], "checkpoint",
                            frozenset(f"checkpoint.{k}" for k in WALL_CLOCK["checkpoint"]))
        ours, theirs = self.state["metrics"], state["metrics"]
        if len(ours) != len(theirs):
            problems.append(f"metrics: {len(theirs)} lines instead of {len(ours)}, steps "
                            f"{[r.get('step') for r in theirs][:60]}")
        else:
            skip = frozenset(f"metrics[{i}].{k}" for i in range(len(ours)) for k in WALL_CLOCK["metrics"])
            for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                problems += compare(a, b, f"metrics[{index}]", skip)
        problems += compare(self.state["results"], state["results"], "results",
                            frozenset(f"results.{k}" for k in WALL_CLOCK["results"] + PROVENANCE_ONLY["results"]))
        return problems[:20]


def count_leaves(value) -> int:
    """Tensors and plain values inside a nested structure: how many things "identical" compares."""
    if isinstance(value, dict):
        return sum(count_leaves(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(count_leaves(v) for v in value)
    return 1


def wait_until(process: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """Poll `ready()` until it holds or the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.01)


def kill(process: subprocess.Popen) -> bool:
    """SIGKILL `process`; whether it was still running (a run that finished first was not interrupted)."""
    running = process.poll() is None
    if running:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return running


def landing(out: Path, killed: bool) -> tuple[str, int | None]:
    """Where a kill landed, read from the checkpoints it left: (landing, step of last.pt)."""
    last = checkpoint_step(out / "checkpoints" / "last.pt")
    previous = checkpoint_step(out / "checkpoints" / "previous.pt")
    if not killed:
        return "finished_before_kill", last
    if last is None and previous is None:
        return "before_first_checkpoint", None
    if (last or 0) >= STEPS:
        return "after_training", last  # the last step's checkpoint is written: the test evaluation was under way
    return "mid_training", last  # last.pt can be missing here, between the two renames of a save


def plan(mid: int, early: int, late: int, seed: int) -> list[dict]:
    """The trials: `mid` kills at target steps spread evenly over the training (one stratum of checkpoint steps
    each, a seeded step within it), `early` ones before the first checkpoint, `late` ones after the last step;
    every fourth mid-training trial has its resume killed too."""
    rng = random.Random(seed)
    last_target = STEPS - 2 * CHECKPOINT_EVERY  # a kill within one interval after it still lands before the end
    trials = []
    for index in range(mid):
        low = CHECKPOINT_EVERY + (last_target - CHECKPOINT_EVERY) * index // mid
        high = CHECKPOINT_EVERY + (last_target - CHECKPOINT_EVERY) * (index + 1) // mid
        target = rng.randrange(low // CHECKPOINT_EVERY, max(low // CHECKPOINT_EVERY + 1, high // CHECKPOINT_EVERY)
                               ) * CHECKPOINT_EVERY
        trials.append({"plan": "mid_training", "target_step": max(CHECKPOINT_EVERY, target),
                       "kill_resume": index % 4 == 2})
    trials += [{"plan": "before_first_checkpoint", "target_step": None, "kill_resume": False}] * early
    trials += [{"plan": "after_training", "target_step": STEPS, "kill_resume": False}] * late
    return [{**trial, "trial": index} for index, trial in enumerate(trials)]


def kill_trial(trial: dict, seed: int, work: Path, config: Path, reference: Reference) -> dict:
    """Start, kill where the plan says, maybe kill the resume too, resume to the end, compare."""
    rng = random.Random(seed * 1000 + trial["trial"])
    out = work / f"killed-{trial['trial']}"
    interval = reference.train_seconds * CHECKPOINT_EVERY / STEPS  # seconds between checkpoints, unloaded
    record = {"trial": trial["trial"], "plan": trial["plan"], "target_step": trial["target_step"],
              "killed_resume": False}
    process = subprocess.Popen(train_command(out, config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=ENV)
    if trial["plan"] == "before_first_checkpoint":  # the command is still importing torch or building the task
        deadline = time.monotonic() + rng.uniform(0.3, 2.5)
        wait_until(process, lambda: time.monotonic() > deadline or (out / "metrics.jsonl").exists())
    else:
        wait_until(process, lambda: (logged_step(out) or 0) >= trial["target_step"])
        time.sleep(rng.uniform(0.0, interval if trial["plan"] == "mid_training" else 1.0))
    record["killed"] = kill(process)
    record["landed"], record["step_at_kill"] = landing(out, record["killed"])
    record["logged_step_at_kill"] = logged_step(out)
    if trial["kill_resume"]:
        process = subprocess.Popen(train_command(out, config, resume=True), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=ENV)
        second = min(STEPS - 2 * CHECKPOINT_EVERY, (record["step_at_kill"] or 0) + rng.randrange(2, 8) *
                     CHECKPOINT_EVERY)
        above = record["logged_step_at_kill"] or 0  # the resume first drops the lines after its checkpoint
        wait_until(process, lambda: (logged_step(out) or 0) >= max(second, above + CHECKPOINT_EVERY))
        time.sleep(rng.uniform(0.0, interval))
        record["killed_resume"] = kill(process)
        record["second_landed"], record["step_at_second_kill"] = landing(out, record["killed_resume"])
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
    parser.add_argument("--mid-kills", type=int, default=None, help="kills timed to land mid-training (24, quick 2)")
    parser.add_argument("--early-kills", type=int, default=None, help="kills before the first checkpoint (3, quick 1)")
    parser.add_argument("--late-kills", type=int, default=None, help="kills after the last step (3, quick 0)")
    parser.add_argument("--workers", type=int, default=2, help="commands run side by side (one thread each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N: where each command trains")
    args = parser.parse_args()
    DEVICE[1] = args.device
    counts = [(given if given is not None else (quick if args.quick else full)) for given, full, quick in
              ((args.mid_kills, 24, 2), (args.early_kills, 3, 1), (args.late_kills, 3, 0))]
    trials = plan(*counts, seed=args.seed)
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
            killed = list(pool.map(lambda t: kill_trial(t, args.seed, work, config, reference), trials))
            corrupted = list(pool.map(lambda k: corrupt_trial(k, work, config, reference), corruptions))
            refused = list(pool.map(lambda item: bad_file_trial(*item, work, reference), files.items()))
        reference_intact = not reference.differences(reference.out)
    changed_anything = [t for t in corrupted + refused if any(p.startswith("changed") or "previous.pt" in p
                                                              for p in t["problems"])]
    landed = {name: sum(t["landed"] == name for t in killed) for name in LANDINGS}
    identical = sum(t["identical"] for t in killed)
    mid_identical = sum(t["identical"] for t in killed if t["landed"] == "mid_training")
    nothing_lost = identical == len(killed) and not changed_anything and reference_intact
    output = {
        "provenance": provenance(device=args.device, workers=args.workers, seed=args.seed),
        "runs_killed": sum(t["killed"] for t in killed),
        "resumed_identical": identical,
        "trials": len(killed),
        "killed_mid_training": landed["mid_training"],
        "killed_before_first_checkpoint": landed["before_first_checkpoint"],
        "killed_after_training": landed["after_training"],
        "finished_before_kill": landed["finished_before_kill"],
        "mid_training_identical": mid_identical,
        "mid_training_steps_at_kill": sorted(t["step_at_kill"] or 0 for t in killed if t["landed"] == "mid_training"),
        "resumes_killed": sum(t["killed_resume"] for t in killed),
        "resumes_killed_mid_training": sum(t.get("second_landed") == "mid_training" for t in killed),
        "corrupt_checkpoints_refused": sum(t["refused"] for t in corrupted),
        "corrupt_checkpoints_total": len(corrupted),
        "bad_files_refused": sum(t["refused"] for t in refused),
        "bad_files_total": len(refused),
        "nothing_lost": nothing_lost,
        "identical_means": {
            "compares": "every tensor (torch.equal, same dtype and shape) and value of the final checkpoint "
                        "(model, optimizer state, extra optimizers, strategy state, torch RNG, step, counters, "
                        "config); every metrics.jsonl line's content, in order; the whole results.json",
            "excluded_wall_clock": WALL_CLOCK, "excluded_provenance": PROVENANCE_ONLY,
            "per_run": reference.checked},
        "run": {"strategy": STRATEGY, "steps": STEPS, "checkpoint_every": CHECKPOINT_EVERY, "config": TINY_CONFIG},
        "landing_rule": "read after the kill: no checkpoint file at all = before_first_checkpoint; last.pt at the "
                        "last step = after_training; otherwise mid_training; the process already gone = "
                        "finished_before_kill",
        "device": args.device,
        "seconds": round(time.perf_counter() - started, 1),
        "reference_seconds": round(reference.seconds, 1),
        "reference_train_seconds": round(reference.train_seconds, 2),
        "goals": {
            "mid_training_kills": goal(landed["mid_training"], 20, lower_is_better=False),
            "resumed_identical": goal(identical, len(killed), lower_is_better=False),
            "mid_training_identical": goal(mid_identical, landed["mid_training"], lower_is_better=False),
            "corrupt_checkpoints_refused": goal(sum(t["refused"] for t in corrupted), len(corrupted),
                                                lower_is_better=False),
            "bad_files_refused": goal(sum(t["refused"] for t in refused), len(refused), lower_is_better=False),
            "nothing_lost": goal(int(nothing_lost), 1, lower_is_better=False),
        },
        "failures": [t for t in killed + corrupted + refused if t["problems"]],
        "kills": [{k: t.get(k) for k in ("trial", "plan", "target_step", "killed", "landed", "step_at_kill",
                                          "logged_step_at_kill", "killed_resume", "second_landed",
                                          "step_at_second_kill", "identical")} for t in killed],
    }
    if args.json:
        sys.stdout.write(json.dumps(output) + "\n")
    else:
        sys.stderr.write(json.dumps(output, indent=1) + "\n")


if __name__ == "__main__":
    main()
