"""One benchmark at two commits, interleaved in one run: the ratio of HEAD's figures to a base commit's.

    python benchmarks/compare_commits.py --base REV --bench train_step [--rounds 3] [--quick] [--json]

The base commit is checked out into a temporary git worktree; each round runs the benchmark script of that
commit with its own `src` first on PYTHONPATH, then HEAD's, alternating which goes first, so a noisy neighbour
lands on both sides alike. Every timing figure found in the benchmark's JSON (a dict with a "median") is
compared: ratio = HEAD / base of the median over rounds of each side's medians (below 1 is faster at HEAD).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def medians(document, path: str = "") -> dict[str, float]:
    """Every {"median": x} inside a benchmark's JSON, by its dotted path."""
    found: dict[str, float] = {}
    if isinstance(document, dict):
        if isinstance(document.get("median"), int | float):
            found[path] = float(document["median"])
        for key, value in document.items():
            if key != "provenance":
                found.update(medians(value, f"{path}.{key}" if path else key))
    return found


def run_once(tree: Path, bench: str, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    result = subprocess.run([sys.executable, str(tree / "benchmarks" / f"{bench}.py"), "--json", *extra],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise SystemExit(f"{bench} failed in {tree}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare HEAD with")
    parser.add_argument("--bench", required=True, help="a benchmark script name, e.g. train_step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("args", nargs="*", help="further arguments for the benchmark (after --)")
    args = parser.parse_args(argv)
    extra = (["--quick"] if args.quick else []) + list(args.args)
    base = git("rev-parse", args.base)
    head = git("rev-parse", "HEAD")
    samples: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "base"
        git("worktree", "add", "--detach", str(worktree), base)
        try:
            for round_index in range(args.rounds):
                order = [("base", worktree), ("head", ROOT)]
                for side, tree in order if round_index % 2 == 0 else order[::-1]:
                    for key, value in medians(run_once(tree, args.bench, extra)).items():
                        samples[side].setdefault(key, []).append(value)
        finally:
            git("worktree", "remove", "--force", str(worktree))
    figures = {}
    for key in sorted(set(samples["base"]) & set(samples["head"])):
        before, after = statistics.median(samples["base"][key]), statistics.median(samples["head"][key])
        figures[key] = {"base": before, "head": after, "ratio": after / before,
                        "base_rounds": samples["base"][key], "head_rounds": samples["head"][key]}
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else None
    document = {"benchmark": "compare_commits", "bench": args.bench, "quick": args.quick, "rounds": args.rounds,
                "provenance": {"commit": head, "base": base, "cpu": cpu, "threads": os.cpu_count(), "load": load,
                               "date": datetime.now(UTC).isoformat(timespec="seconds")},
                "figures": figures,
                "goals": {f"{key} no slower than base (ratio <= 1.1)": {"value": f["ratio"], "goal": 1.1,
                                                                         "met": f["ratio"] <= 1.1}
                          for key, f in figures.items()}}
    print(json.dumps(document, indent=None if args.json else 1))
    return document


if __name__ == "__main__":
    main()
