"""The lab's responsiveness: time from Train to the first curve point, the interval between step events while
the models train, and the server's memory over a long job.

    python benchmarks/lab.py [--quick] [--json] [--minutes M]

The lab runs as `unforced lab --port P` (the command itself, in its own process, on a free loopback port);
this process is the page: it sends the page's own POST /api/jobs body (toy translator, model "small", w = 0.5,
the lab's defaults for the rest) and reads the event stream with httpx. Figures:

- `first_point_seconds`: from sending POST /api/jobs to receiving the first evaluated step event (both models
  built and evaluated once, before any training step), one per trial, a fresh job each.
- `event_interval_seconds`: the gaps between consecutive step events as they arrive, over `--minutes` of
  training (evaluation rounds included: every 10th round evaluates both models on 64 validation pairs); the
  gap before the first training step's event (one-time costs of a job's first backward passes) also apart.
- `rss_mib`: the server's resident memory, sampled every few seconds over the same stretch.

Goals (issue 16): the first point within 3 s, a step event at least every 1 s (the largest gap), and memory
bounded (growth over the second half of the stretch under 64 MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, goal, provenance, summary

from unforced.lab.jobs import LAB_THREADS

PAGE_BODY = {"task": "toy-translation", "model": "small", "strategy": "reinforce", "seed": 0, "reward_weight": 0.5}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(runs: Path, port: int, log: Path) -> subprocess.Popen:
    # `unforced lab` itself, as a user starts it (its torch threads, its warm-up, its uvicorn settings)
    command = [sys.executable, "-m", "unforced.cli", "lab", "--port", str(port), "--runs", str(runs)]
    with open(log, "w") as errors:  # a file, not a pipe: a long run's warnings never block the server
        server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/options", timeout=1).raise_for_status()
            return server
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the lab did not start: {log.read_text()}") from None
            time.sleep(0.1)


def trial(base: str, steps: int, watch_seconds: float, pid: int) -> dict:
    """One Train press: time to the first point, then step-event arrival gaps and RSS for `watch_seconds`."""
    started = time.perf_counter()
    job = httpx.post(f"{base}/api/jobs", json={**PAGE_BODY, "steps": steps}, timeout=30).json()["id"]
    first_point, arrivals, memory, last_sample = None, [], [], 0.0
    with httpx.stream("GET", f"{base}/api/jobs/{job}/events", timeout=60) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            now = time.perf_counter()
            event = json.loads(line[len("data: "):])
            if event["type"] != "step":
                break
            if first_point is None and event["evaluated"]:
                first_point = now - started
            arrivals.append(now)
            if now - last_sample >= 2.0:
                memory.append((now - started, rss_mib(pid)))
                last_sample = now
            if now - started - first_point > watch_seconds:
                break
    httpx.delete(f"{base}/api/jobs/{job}", timeout=30)
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    return {"first_point_seconds": first_point, "gaps": gaps, "events": len(arrivals), "memory": memory}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--minutes", type=float, default=None, help="training watched in the long trial")
    args = parser.parse_args(argv)
    trials, short_watch = (1, 3.0) if args.quick else (3, 10.0)
    long_watch = 60 * (args.minutes if args.minutes is not None else (0.1 if args.quick else 10.0))
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        server = start_server(Path(folder) / "runs", port, Path(folder) / "server.log")
        base = f"http://127.0.0.1:{port}"
        try:
            runs = [trial(base, 100_000, short_watch, server.pid) for _ in range(trials - 1)]
            runs.append(trial(base, 100_000, long_watch, server.pid))
        finally:
            server.terminate()
            server.wait(30)
    firsts = [run["first_point_seconds"] for run in runs]
    gaps = [gap for run in runs for gap in run["gaps"]]
    # The first training step of a job pays one-time costs (the first backward pass of its models): apart.
    steady = [gap for run in runs for gap in run["gaps"][1:]]
    memory = runs[-1]["memory"]
    half = [mib for seconds, mib in memory if seconds >= memory[-1][0] / 2] if memory else []
    growth = (max(half) - half[0]) if half else float("nan")
    results = {"benchmark": "lab", "quick": args.quick,
               "provenance": provenance(quick=args.quick, torch_threads_server=LAB_THREADS),
               "setup": {"request": PAGE_BODY, "trials": trials, "long_watch_seconds": long_watch,
                         "server": "`unforced lab --port P --runs R` in its own process (uvicorn, "
                                   f"{LAB_THREADS} torch thread); this process reads the stream with httpx"},
               "first_point_seconds": summary(firsts),
               "event_interval_seconds": {**summary(gaps), "samples": None, "count": len(gaps),
                                          "p95": statistics.quantiles(gaps, n=20)[-1] if len(gaps) >= 20 else
                                          max(gaps),
                                          "largest_after_first_step": max(steady) if steady else None,
                                          "first_step": [run["gaps"][0] for run in runs if run["gaps"]]},
               "rss_mib": {"samples": memory, "start": memory[0][1] if memory else None,
                           "end": memory[-1][1] if memory else None, "growth_second_half": growth}}
    results["goals"] = {
        "first curve point after Train (s, slowest trial)": goal(max(firsts), 3.0),
        "largest gap between step events (s)": goal(max(gaps), 1.0),
        "largest gap between step events after the first training step (s)": goal(max(steady), 1.0),
        "memory growth over the second half (MiB)": goal(growth, 64.0)}
    if args.quick:
        results["goals"] = {}  # a few seconds say nothing about the goals
    text = json.dumps(results) if args.json else json.dumps(results, indent=1)
    sys.stdout.write(text + "\n")
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
