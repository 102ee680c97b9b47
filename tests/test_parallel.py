"""parallel.py: a comparison over seeds run as independent jobs (a local process pool, a local Ray) gives the
sequential `--seeds` aggregate; a sweep killed midway finishes only its missing jobs when run again."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unforced.parallel import DONE, KILL_AFTER_ENV, aggregate_sweep, run_sweep
from unforced.run_config import RunConfig
from unforced.runs import run_seeds

STRATEGIES = ["teacher_forcing", "parallel_scheduled_sampling"]
SEEDS = 3
TINY = {"task": "copy", "task_options": {"size": 120, "length": 4}, "strategies": STRATEGIES, "preset": "quick",
        "model": {"kind": "gru", "embedding": 8, "hidden": 16},
        "train": {"steps": 12, "batch_size": 8, "eval_every": 6, "eval_limit": 8, "checkpoint_every": 4,
                  "log_every": 4},
        "test_limit": 12, "diagnostics_limit": 0}
THREADS = torch.get_num_threads()  # the test run's (UNFORCED_TEST_THREADS)
UNTIMED = {"train_seconds", "signature", "checkpoint", "reused_prefix", "sweep", "threads"}


def tiny() -> RunConfig:
    return RunConfig(**json.loads(json.dumps(TINY)))


def numbers(value, path=""):
    """Every number of a results dict by its path, times (and paths) left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in UNTIMED:
                yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def assert_same_figures(a: dict, b: dict) -> None:
    first, second = dict(numbers(a["strategies"])), dict(numbers(b["strategies"]))
    assert first.keys() == second.keys()
    assert len(first) > 50
    for key, value in first.items():
        assert math.isclose(value, second[key], rel_tol=0, abs_tol=1e-6) or (math.isnan(value) and
                                                                           math.isnan(second[key])), key


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    return run_seeds(tiny(), tmp_path_factory.mktemp("seq") / "run", SEEDS)


def test_the_local_backend_gives_the_sequential_aggregate(sequential, tmp_path):
    # as many torch threads per job as the sequential run had: float sums then add up in the same order
    results = run_sweep(tiny(), tmp_path / "sweep", SEEDS, backend="local", workers=2, threads=THREADS)
    assert results["seeds"] == sequential["seeds"] == [0, 1, 2]
    assert set(results["strategies"]) == set(STRATEGIES)
    assert sorted(results["sweep"]["ran"]) == sorted(f"seed-{s}/{e}" for s in range(SEEDS) for e in STRATEGIES)
    assert results["sweep"]["threads_per_job"] >= 1
    assert_same_figures(results, sequential)
    for entry in STRATEGIES:  # the same keys, spreads included, as the sequential run's
        assert results["strategies"][entry].keys() == sequential["strategies"][entry].keys()
        assert results["strategies"][entry]["spread"].keys() == sequential["strategies"][entry]["spread"].keys()
    # rebuilt from the run directories alone, and the report reads them like a --seeds run
    assert_same_figures(aggregate_sweep(tmp_path / "sweep"), sequential)
    from unforced.report import build_report

    assert "within" in Path(build_report(tmp_path / "sweep")).read_text(encoding="utf-8")
    again = run_sweep(tiny(), tmp_path / "sweep", SEEDS, backend="local")
    assert again["sweep"]["ran"] == []


def test_a_local_ray_gives_the_sequential_aggregate(sequential, tmp_path):
    import ray  # the ray extra, in dev: installs from PyPI beside torch (no skip)

    ray.init(num_cpus=2 * THREADS, include_dashboard=False, log_to_driver=False)
    try:
        results = run_sweep(tiny(), tmp_path / "sweep", SEEDS, backend="ray", workers=2, threads=THREADS)
    finally:
        ray.shutdown()
    assert len(results["sweep"]["ran"]) == SEEDS * len(STRATEGIES)
    assert_same_figures(results, sequential)


def test_a_grid_setting_is_a_job_of_its_own(tmp_path):
    from unforced.parallel import parse_grid

    grid = parse_grid(["parallel_scheduled_sampling.schedule_params.k=5,50"])
    config = RunConfig(**{**json.loads(json.dumps(TINY)), "strategies": ["parallel_scheduled_sampling"]})
    results = run_sweep(config, tmp_path / "grid", 1, backend="serial", grid=grid)
    assert list(results["settings"]) == ["parallel_scheduled_sampling.schedule_params.k=5",
                                         "parallel_scheduled_sampling.schedule_params.k=50"]
    low, high = (results["settings"][name]["strategies"]["parallel_scheduled_sampling"]
                 for name in results["settings"])
    assert low["fr_nll"] != high["fr_nll"]  # the setting reached the strategy
    assert (tmp_path / "grid" / "parallel_scheduled_sampling.schedule_params.k=5" / "results.json").exists()


def test_a_killed_sweep_run_again_finishes_only_the_missing_jobs(tmp_path):
    out = tmp_path / "sweep"
    config = dict(TINY, seed=0)
    script = ("import json, sys; from unforced.run_config import RunConfig; from unforced.parallel import run_sweep;"
              f"run_sweep(RunConfig(**json.loads(sys.argv[1])), {str(out)!r}, 2, backend='local', workers=1)")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(config)], start_new_session=True,
                          env={**os.environ, KILL_AFTER_ENV: "2"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    jobs = [f"seed-{s}/{e}" for s in (0, 1) for e in STRATEGIES]
    finished = {job for job in jobs if (out / job / DONE).exists()}
    assert len(finished) == 2
    partial = aggregate_sweep(out)  # a partial sweep can be reported
    assert partial["sweep"]["finished"] == 2 and sorted(partial["sweep"]["missing"]) == sorted(set(jobs) - finished)
    results = run_sweep(RunConfig(**config), out, 2, backend="local", workers=1)
    assert sorted(results["sweep"]["ran"]) == sorted(set(jobs) - finished)
    assert results["sweep"]["finished"] == 4 and results["seeds"] == [0, 1]


def test_the_run_command_takes_parallel_and_grid(tmp_path, capsys):
    import yaml
    from cli_helper import call

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "strategies": ["teacher_forcing"]}), encoding="utf-8")
    code, out, err = call(["run", "--config", str(config), "--seeds", "2", "--parallel", "local", "--jobs", "2",
                           "--grid", "train.learning_rate=0.001,0.003", "--out", str(tmp_path / "run"), "--json"],
                          capsys)
    assert code == 0, err
    results = json.loads(out)
    assert len(results["sweep"]["ran"]) == 4 and results["sweep"]["missing"] == []
    assert all(part["seeds"] == [0, 1] for part in results["settings"].values())
    code, _, err = call(["run", "--config", str(config), "--parallel", "nowhere", "--out", str(tmp_path / "x")],
                        capsys)
    assert code == 2 and "--parallel" in err
