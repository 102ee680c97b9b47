"""Many independent runs at once: every (strategy entry, seed, grid setting) of a comparison is a job of its own,
with a run directory of its own, run by a process pool on this machine or by a Ray cluster.

    <out>/sweep.json                                 the plan: the run config, seeds, entries and grid
    <out>/[<setting>/]seed-<s>/<entry>/              one job's run directory (run_experiment's, one entry)
    <out>/[<setting>/]seed-<s>/<entry>/job.json      written once the job has finished
    <out>/[<setting>/]results.json                   mean and spread over seeds (runs.aggregate_seeds' keys)

A job runs `run_experiment` on its own entry and seed; seeds fix the work, so the aggregate equals the sequential
`--seeds` run's (the seconds aside). Running the same command again skips the finished jobs and resumes the
others from their checkpoints (the Trainer's resume); a job that fails for any reason but bad input is retried.
The aggregate is rebuilt from the run directories alone (`aggregate_sweep`), so a partial sweep can be reported.

Ray is imported only by the Ray backend, and only when it is asked for (the `ray` extra).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from unforced.errors import UnforcedError
from unforced.lock import run_lock
from unforced.run_config import RunConfig
from unforced.runfiles import atomic_write_text, claim_run_directory

DONE = "job.json"
PLAN = "sweep.json"
# Fault injection for tests and benchmarks/parallel.py: the sweep's own process group is killed (SIGKILL) once
# this many jobs have finished in the current invocation, as a machine lost mid-sweep would be.
KILL_AFTER_ENV = "UNFORCED_FAULT_SWEEP_KILL_AFTER"


def safe_name(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.=,-]+", "-", text).strip("-")


def parse_grid(specs: list[str]) -> list[tuple[str, list]]:
    """`path=v1,v2,...` (a strategy's option path `scheduled_sampling.schedule_params.k`, or a config section's:
    `train.learning_rate`, `model.hidden`, `task_options.size`) -> [(path, [values])]; values read as YAML."""
    grid = []
    for spec in specs:
        path, sep, values = spec.partition("=")
        path = path.strip()
        if not sep or not path or "." not in path or not values.strip():
            raise UnforcedError(f"--grid {spec!r}: write it as strategy.option=v1,v2 (e.g. "
                                f"scheduled_sampling.schedule_params.k=100,300,1000)")
        parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
        if len(set(map(repr, parsed))) != len(parsed):
            raise UnforcedError(f"--grid {spec!r}: a value is named twice")
        if path in (p for p, _ in grid):
            raise UnforcedError(f"--grid names {path} twice")
        grid.append((path, parsed))
    return grid


SECTIONS = ("task_options", "model", "train", "phase_train", "strategy_options")


def apply_setting(config_data: dict, setting: dict) -> dict:
    """The run config (a dict) with each `path: value` of one grid setting written into it."""
    from unforced.strategies import STRATEGIES

    data = json.loads(json.dumps(config_data))
    for path, value in setting.items():
        head, *rest = path.split(".")
        if head in STRATEGIES:
            keys = ["strategy_options", head, *rest]
        elif head in SECTIONS:
            keys = [head, *rest]
        else:
            raise UnforcedError(f"--grid {path}: {head!r} is neither a strategy ({', '.join(STRATEGIES)}) nor a "
                                f"config section ({', '.join(SECTIONS)})")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UnforcedError(f"--grid {path}: {key} is not a mapping in the config")
        node[keys[-1]] = value
    return data


@dataclass(frozen=True)
class Job:
    setting: str  # the setting's folder name, "" without a grid
    seed: int
    entry: str

    def directory(self, out: Path) -> Path:
        from unforced.experiment import safe_name as entry_folder

        base = out / self.setting if self.setting else out
        return base / f"seed-{self.seed}" / entry_folder(self.entry)

    def name(self) -> str:
        return "/".join(p for p in (self.setting, f"seed-{self.seed}", self.entry) if p)


@dataclass
class Plan:
    """What a sweep runs: the run config, the seeds, and the grid's settings (one, empty, without a grid)."""

    config: dict
    seeds: list[int]
    settings: dict[str, dict]  # folder name -> {path: value}

    def jobs(self) -> list[Job]:
        entries = self.config["strategies"]
        return [Job(setting, seed, entry) for setting in self.settings for seed in self.seeds for entry in entries]

    def to_json(self) -> dict:
        return {"config": self.config, "seeds": self.seeds, "settings": self.settings}


def make_plan(config: RunConfig, seeds: int, grid: list[tuple[str, list]]) -> Plan:
    if seeds < 1:
        raise UnforcedError(f"--seeds must be at least 1, got {seeds}")
    if len(set(config.strategies)) != len(config.strategies):
        raise UnforcedError("a strategy entry is named twice")
    data = dataclasses.asdict(config)
    settings: dict[str, dict] = {}
    for values in itertools.product(*(v for _, v in grid)):
        setting = {path: value for (path, _), value in zip(grid, values, strict=True)}
        name = ",".join(f"{path}={value}" for path, value in setting.items())
        settings[safe_name(name)] = setting
        RunConfig(**apply_setting(data, setting))  # checked now, before any job starts
    return Plan(data, [config.seed + offset for offset in range(seeds)], settings or {"": {}})


def job_config(plan: Plan, job: Job) -> dict:
    data = apply_setting(plan.config, plan.settings[job.setting])
    return {**data, "strategies": [job.entry], "seed": job.seed}


def run_job(config_data: dict, directory: str, threads: int | None = None) -> dict:
    """One job, in whatever process runs it: its entry and seed trained, measured and written to `directory`,
    continued from its checkpoints where an earlier attempt began it; `job.json` written last."""
    import torch

    from unforced.experiment import run_experiment

    if threads:
        torch.set_num_threads(threads)
    directory = Path(directory)
    config = RunConfig(**config_data)
    resume = (directory / "config.yaml").exists()
    results = run_experiment(config, directory, resume=resume)
    atomic_write_text(json.dumps({"entry": config.strategies[0], "seed": config.seed, "resumed": resume,
                                  "pid": os.getpid(), "threads": torch.get_num_threads()}), directory / DONE)
    return results


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_sweep(config: RunConfig, out: Path, seeds: int, backend: str = "local", grid: list | None = None,
              workers: int | None = None, retries: int = 2, overwrite: bool = False,
              progress: Callable[[str, dict], None] | None = None, threads: int | None = None) -> dict:
    """Every job of the sweep not finished yet, on `backend` (`local`, `serial` in this process, `ray` or
    `ray:ADDRESS`); then the aggregate. Returns the aggregate with `sweep` saying which jobs ran this time.
    `workers` jobs run at once (default: the usable cores), each with `threads` torch threads (default: cores //
    workers, so the cores are not oversubscribed)."""
    if backend not in ("serial", "local", "ray") and not backend.startswith("ray:"):
        raise UnforcedError(f"--parallel must be local or ray[:ADDRESS], got {backend!r}")
    out = Path(out)
    plan = make_plan(config, seeds, grid or [])
    with run_lock(out):
        plan_path = out / PLAN
        if plan_path.exists() and not overwrite:
            before = json.loads(plan_path.read_text(encoding="utf-8"))
            if before != json.loads(json.dumps(plan.to_json())):
                raise UnforcedError(f"{out} holds a sweep with other settings (its {PLAN} differs): choose another "
                                    f"--out or pass --overwrite")
        else:
            if overwrite and out.exists():
                import shutil

                for child in out.iterdir():
                    if child.name != ".lock":
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            claim_run_directory(out, {}, resume=False, overwrite=overwrite)
            atomic_write_text(json.dumps(plan.to_json(), indent=1), plan_path)
        jobs = plan.jobs()
        todo = [job for job in jobs if not (job.directory(out) / DONE).exists()]
        payloads = {job: (job_config(plan, job), str(job.directory(out))) for job in todo}
        cores = usable_cores()
        workers = max(1, min(workers or cores, len(todo) or 1))
        threads = threads or max(1, cores // workers)
        kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
        finished: list[Job] = []

        def done(job: Job) -> None:
            finished.append(job)
            if progress:
                progress(job.name(), {"phase": "job", "state": "done", "done": len(finished), "jobs": len(todo)})
            if kill_after and len(finished) >= kill_after:
                import signal

                os.killpg(os.getpgid(0), signal.SIGKILL)

        if progress:
            progress("sweep", {"phase": "job", "state": "start", "jobs": len(todo), "workers": workers,
                               "threads": threads, "backend": backend})
        if todo:
            if backend == "serial":
                for job in todo:
                    run_job(*payloads[job])
                    done(job)
            elif backend == "local":
                _run_local(payloads, workers, threads, retries, done)
            else:
                from unforced.ray_backend import run_ray

                run_ray(payloads, backend.partition(":")[2] or None, threads, retries, done)
        results = aggregate_sweep(out)
    results["sweep"] = {**results.get("sweep", {}), "backend": backend, "workers": workers,
                        "threads_per_job": threads, "ran": [job.name() for job in finished]}
    return results


def _run_local(payloads: dict, workers: int, threads: int, retries: int, done: Callable[[Job], None]) -> None:
    """A pool of `workers` fresh processes (spawned, `threads` torch threads each); a job that fails, or whose
    worker dies, runs again (resumed from its checkpoints) up to `retries` times; bad input fails at once."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    attempts = dict.fromkeys(payloads, 0)
    pending = list(payloads)
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch's threads
    while pending:
        failed: list[tuple[Job, BaseException]] = []
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context,
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(run_job, *payloads[job], threads): job for job in pending}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    future.result()
                except UnforcedError:
                    raise
                except Exception as error:  # noqa: BLE001  (a crash, a killed worker: retried)
                    failed.append((job, error))
                    continue
                done(job)
        pending = []
        for job, error in failed:
            attempts[job] += 1
            if attempts[job] > retries:
                raise UnforcedError(f"job {job.name()} failed {attempts[job]} times; last: "
                                    f"{type(error).__name__}: {error}")
            pending.append(job)


def _job_results(directory: Path) -> dict | None:
    if not (directory / DONE).exists():
        return None
    return json.loads((directory / "results.json").read_text(encoding="utf-8"))


def aggregate_sweep(out: Path) -> dict:
    """The aggregate of a sweep from its run directories alone: for each setting, each entry's mean and spread
    over the seeds whose job has finished (runs.aggregate_seeds), written as <setting folder>/results.json with
    config.yaml, tokenizers.json, metrics.jsonl and diagnostics.json of its first seed, so that the report reads
    it like a `--seeds` run. With a grid, the returned dict holds every setting's under `settings`."""
    out = Path(out)
    try:
        data = json.loads((out / PLAN).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UnforcedError(f"{out}: no readable {PLAN}; is it a sweep's directory? ({error})") from None
    plan = Plan(data["config"], data["seeds"], data["settings"])
    every = {name: _aggregate_setting(out, plan, name) for name in plan.settings}
    if list(plan.settings) == [""]:
        return every[""]
    summary = {"grid": plan.settings, "seeds": plan.seeds, "settings": every,
               "sweep": {"jobs": sum(r["sweep"]["jobs"] for r in every.values()),
                         "finished": sum(r["sweep"]["finished"] for r in every.values()),
                         "missing": [m for r in every.values() for m in r["sweep"]["missing"]]}}
    atomic_write_text(json.dumps(summary, indent=1), out / "results.json")
    return summary


def _aggregate_setting(out: Path, plan: Plan, setting: str) -> dict:
    from unforced.runs import aggregate_seeds

    base = out / setting if setting else out
    entries = plan.config["strategies"]
    found = {(seed, entry): _job_results(Job(setting, seed, entry).directory(out))
             for seed in plan.seeds for entry in entries}
    missing = [Job(setting, s, e).name() for (s, e), r in found.items() if r is None]
    results: dict = {"strategies": {}}
    for entry in entries:
        runs = [found[(seed, entry)] for seed in plan.seeds if found[(seed, entry)] is not None]
        if not runs:
            continue
        merged = aggregate_seeds(runs)
        figures = merged["strategies"][entry]
        first = Job(setting, merged["seeds"][0], entry).directory(out).relative_to(base)
        figures["checkpoint"] = f"{first}/{figures['checkpoint']}"
        if len(runs) < len(plan.seeds):
            figures["seeds"] = merged["seeds"]  # a partial sweep: this entry's mean is over these seeds only
        if not results["strategies"]:
            results = {**{k: v for k, v in merged.items() if k != "strategies"}, "strategies": {}}
        results["strategies"][entry] = figures
    results["seeds"] = [s for s in plan.seeds if any(found[(s, e)] for e in entries)]
    if setting:
        results["setting"] = plan.settings[setting]
    results["sweep"] = {"jobs": len(found), "finished": len(found) - len(missing), "missing": missing}
    if results["strategies"]:
        _write_setting_files(base, plan, setting, results)
    return results


def _write_setting_files(base: Path, plan: Plan, setting: str, results: dict) -> None:
    """results.json, and the files the report reads beside it, from the first seed's job of each entry."""
    config, metrics, diagnostics, tokenizers = None, [], None, None
    phases = {}
    for figures in results["strategies"].values():
        directory = base / Path(figures["checkpoint"]).parts[0] / Path(figures["checkpoint"]).parts[1]
        if config is None:
            config = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))
            tokenizers = (directory / "tokenizers.json").read_text(encoding="utf-8")
        phases.update((yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8")) or {})
                      .get("phases", {}))
        if (directory / "metrics.jsonl").exists():
            metrics.append((directory / "metrics.jsonl").read_text(encoding="utf-8"))
        if (directory / "diagnostics.json").exists():
            part = json.loads((directory / "diagnostics.json").read_text(encoding="utf-8"))
            diagnostics = diagnostics or {**part, "strategies": {}}
            diagnostics["strategies"].update(part.get("strategies", {}))
    config["strategies"], config["phases"] = list(results["strategies"]), phases
    if setting:
        config["setting"] = plan.settings[setting]
    atomic_write_text(yaml.safe_dump(config, sort_keys=False), base / "config.yaml")
    atomic_write_text(tokenizers, base / "tokenizers.json")
    atomic_write_text("".join(metrics), base / "metrics.jsonl")
    if diagnostics is not None:
        atomic_write_text(json.dumps(diagnostics, indent=1), base / "diagnostics.json")
    atomic_write_text(json.dumps(results, indent=1), base / "results.json")
