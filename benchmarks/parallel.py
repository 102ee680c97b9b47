"""Independent jobs in parallel: 4 jobs (2 strategies x 2 seeds) of a quick-preset comparison run one after
another (`unforced run --seeds 2`) and as a local process pool (`--parallel local`), with the wall times' ratio;
then a sweep killed after half its jobs and run again, counting the jobs that ran again.

Both sides run the `unforced` command in a fresh process, so each pays its imports. Threads: the sequential run
uses every core for its one job (torch's default, OMP_NUM_THREADS = cores); the pool runs `cores` jobs at a time
with cores / workers torch threads each (1 on 2 cores), so the cores are never oversubscribed. The aggregates of
the pool are compared figure by figure with a third, sequential run at the pool's threads per job (seeds fix
the work at a given thread count; another thread count sums floats in another order, and training amplifies it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import goal, print_goals, provenance

STRATEGIES = ["teacher_forcing", "parallel_scheduled_sampling"]
QUICK_CONFIG = {"task": "copy", "task_options": {"size": 120, "length": 4}, "preset": "quick",
                "model": {"kind": "gru", "embedding": 8, "hidden": 16},
                "train": {"steps": 12, "batch_size": 8, "eval_every": 6, "eval_limit": 8, "checkpoint_every": 4},
                "test_limit": 12, "diagnostics_limit": 0}
FULL_CONFIG = {"task": "toy-translation", "preset": "quick"}  # the quick preset's sizes, 200 steps a job
UNTIMED = {"train_seconds", "signature", "checkpoint", "reused_prefix", "sweep"}


def numbers(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in UNTIMED:
                yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def largest_difference(a: dict, b: dict) -> float:
    first, second = dict(numbers(a["strategies"])), dict(numbers(b["strategies"]))
    if first.keys() != second.keys():
        return math.inf
    return max((abs(v - second[k]) for k, v in first.items() if not (math.isnan(v) and math.isnan(second[k]))),
               default=0.0)


def unforced(args: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "unforced.cli", "run", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, start_new_session=True)
    return time.perf_counter() - started, done


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from unforced.parallel import KILL_AFTER_ENV, usable_cores

    cores = usable_cores()
    workers = min(cores, 4)
    config = {**(QUICK_CONFIG if args.quick else FULL_CONFIG), "strategies": STRATEGIES}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config_file = folder / "config.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        common = ["--config", str(config_file), "--seeds", "2", "--json"]
        load_before = os.getloadavg()
        sequential_s, sequential = unforced([*common, "--out", str(folder / "sequential")],
                                            {"OMP_NUM_THREADS": str(cores)})
        parallel_s, parallel = unforced([*common, "--out", str(folder / "parallel"), "--parallel", "local",
                                         "--jobs", str(workers)])
        threads = max(1, cores // workers)
        # the same jobs one after another with the pool's threads per job: equal work, equal float sums
        equal_s, equal = unforced([*common, "--out", str(folder / "sequential-equal")],
                                  {"OMP_NUM_THREADS": str(threads)})
        load_after = os.getloadavg()
        for done in (sequential, parallel, equal):
            if done.returncode != 0:
                raise SystemExit(f"a run failed:\n{done.stderr[-3000:]}")
        seq, par, same = (json.loads(d.stdout) for d in (sequential, parallel, equal))
        # killed after 2 of the 4 jobs (the whole process group, workers included), then the same command again
        killed_s, killed = unforced([*common, "--out", str(folder / "killed"), "--parallel", "local", "--jobs",
                                     str(workers)], {KILL_AFTER_ENV: "2"})
        jobs = [f"seed-{s}/{e}" for s in (0, 1) for e in STRATEGIES]
        finished = sorted(j for j in jobs if (folder / "killed" / j / "job.json").exists())
        begun = sorted(j for j in jobs if j not in finished and (folder / "killed" / j / "config.yaml").exists())
        rerun_s, rerun = unforced([*common, "--out", str(folder / "killed"), "--parallel", "local", "--jobs",
                                   str(workers)])
        if rerun.returncode != 0:
            raise SystemExit(f"the rerun failed:\n{rerun.stderr[-3000:]}")
        rerun_results = json.loads(rerun.stdout)
        resumed = [j for j in rerun_results["sweep"]["ran"]
                   if json.loads((folder / "killed" / j / "job.json").read_text())["resumed"]]
    ratio = parallel_s / sequential_s
    results = {
        "benchmark": "parallel", "quick": args.quick,
        "provenance": provenance(quick=args.quick, load_during=[list(load_before), list(load_after)]),
        "work": {"config": config, "jobs": 4, "seeds": 2, "strategies": STRATEGIES,
                 "how": "both sides run `unforced run --seeds 2` in a fresh process; the parallel side adds "
                        f"--parallel local --jobs {workers}"},
        "threads": {"sequential": f"one job at a time with {cores} torch threads (OMP_NUM_THREADS={cores})",
                    "parallel": f"{par['sweep']['workers']} spawned workers x {par['sweep']['threads_per_job']} "
                                f"torch thread(s) each (threads per job = cores // workers), {cores} cores"},
        "sequential_seconds": sequential_s, "parallel_seconds": parallel_s, "wall_time_ratio": ratio,
        f"sequential_{threads}_thread_seconds": equal_s, "wall_time_ratio_to_equal_threads": parallel_s / equal_s,
        "aggregates_largest_difference": largest_difference(same, par),
        "aggregates_largest_difference_to_the_default_threads": largest_difference(seq, par),
        "note": f"the aggregates are compared with the sequential run at the pool's {threads} thread(s) per job: "
                f"the torch thread count changes the float reduction order, and over a training run that changes "
                f"the figures (the difference to the {cores}-thread sequential run is reported beside it)",
        "kill": {"killed_after_jobs": 2, "exit": killed.returncode, "killed_seconds": killed_s,
                 "finished_before_the_kill": finished, "begun_not_finished": begun,
                 "ran_again": sorted(rerun_results["sweep"]["ran"]), "resumed_from_checkpoints": sorted(resumed),
                 "finished_jobs_run_again": sorted(set(finished) & set(rerun_results["sweep"]["ran"])),
                 "rerun_seconds": rerun_s, "complete_after_rerun": rerun_results["sweep"]["missing"] == []},
        "goals": {"4 quick jobs, local pool / sequential wall time": goal(ratio, 0.65),
                  "aggregates agree at equal threads (largest difference)": goal(largest_difference(same, par),
                                                                                  1e-6),
                  "finished jobs run again after a kill": goal(
                      len(set(finished) & set(rerun_results["sweep"]["ran"])), 0)},
    }
    busiest = max(max(load_before[:1]), max(load_after[:1]))
    results["load_note"] = (
        f"the 1-minute load was {busiest:.2f} at the start or end of the timed runs on {cores} cores: other work held"
        f" about {busiest:.1f} core(s), so the pool's {workers} workers did not have the cores to themselves and the"
        f" ratio is polluted by load (read it as an upper bound)" if busiest >= 0.5 else
        f"the 1-minute load was below 0.5 ({busiest:.2f}) around the timed runs: the cores were nearly free")
    if args.quick:  # tiny jobs: the ratio is mostly process start-up, no measure of the goal
        results["goals"] = {k: v for k, v in results["goals"].items() if "wall time" not in k}
    print_goals(results["goals"])
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
