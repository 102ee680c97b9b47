"""What every benchmark shares (DESIGN.md, Benchmarks): the provenance of its figures, the goals block, and
interleaved timing.

- `provenance()`: commit (and whether the tree was dirty), CPU model, torch threads, load average, date, versions.
- `goal(value, goal, lower_is_better=True)` -> {"value", "goal", "met"}; a benchmark's JSON carries
  `goals: {name: goal(...)}`; `print_goals(goals)` says them on stderr.
- `interleaved(variants, repeats, warmup)`: times each variant once per round, variants in a rotating order, so
  that a noisy neighbour lands on all of them alike and shows as spread rather than as a result. Returns
  `{name: {"median", "min", "max", "samples"}}` in milliseconds.

Benchmarks import it as `from common import ...` (they run as scripts from this folder) or through
`benchmarks.common` (tests).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(**extra) -> dict:
    """Where and when the figures were measured: enough to tell two runs of one benchmark apart."""
    import torch

    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "load": load,
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "torch": str(torch.__version__), **extra}


def goal(value: float, target: float, lower_is_better: bool = True) -> dict:
    """One entry of the goals block: `met` says whether `value` is on the right side of `target`."""
    met = value <= target if lower_is_better else value >= target
    return {"value": value, "goal": target, "met": bool(met),
            "direction": "at most" if lower_is_better else "at least"}


def print_goals(goals: dict[str, dict]) -> None:
    """One line per goal on stderr: its value, the bound, and whether it was met."""
    import sys

    for name, entry in goals.items():
        print(f"{name}: {entry['value']:.4g} ({entry['direction']} {entry['goal']:g}, "
              f"{'met' if entry['met'] else 'NOT met'})", file=sys.stderr)


def summary(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def interleaved(variants: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """Milliseconds per call of each variant: `warmup` untimed rounds, then `repeats` timed rounds, each round
    calling every variant once, the order rotated by one each round."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            variants[name]()
            elapsed = (clock() - start) * 1000.0
            if round_index >= warmup:
                samples[name].append(elapsed)
    return {name: summary(values) for name, values in samples.items()}
