"""unforced.control and `unforced control`: behaviour cloning's deviation compounds geometrically on an unstable
linear system where DAgger's stays bounded; both stay bounded on a stable one; on CartPole DAgger reaches the
expert's episode length with fewer expert labels. Everything is numpy and seeded, so no figure depends on the
torch thread count."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_helper import call

from unforced.control import CartPoleConfig, LinearConfig, growth_rate, lqr_gain, run_cartpole, run_linear
from unforced.errors import UnforcedError

LEARNER_KEYS = {"deviation", "growth_rate", "cost", "expert_labels"}


def control_json(capsys, tmp_path, *args: str) -> dict:
    code, out, err = call(["control", *args, "--json", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "deviation.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == json.loads(out)
    return json.loads(out)


def check_contract(result: dict, env: str, horizon: int) -> None:
    assert result["env"] == env and result["horizon"] == horizon
    assert set(result["learners"]) == {"behaviour_cloning", "dagger"}
    for entry in result["learners"].values():
        assert LEARNER_KEYS <= set(entry)
        assert len(entry["deviation"]) == horizon + 1 and all(np.isfinite(entry["deviation"]))
        assert isinstance(entry["expert_labels"], int) and entry["expert_labels"] > 0
        assert isinstance(entry["growth_rate"], float) and isinstance(entry["cost"], float)
    assert isinstance(result["learners"]["dagger"]["rounds"], int) and result["learners"]["dagger"]["rounds"] >= 1
    assert isinstance(result["expert"]["cost"], float)


def test_unstable_system_behaviour_cloning_compounds_dagger_stays_bounded(capsys, tmp_path):
    result = control_json(capsys, tmp_path, "--env", "linear", "--radius", "1.1", "--horizon", "60", "--seeds", "3")
    check_contract(result, "linear", 60)
    assert result["radius"] == 1.1
    cloning, dagger = result["learners"]["behaviour_cloning"], result["learners"]["dagger"]
    assert cloning["growth_rate"] > 1.05 and min(cloning["growth_rate_by_seed"]) > 1.05
    assert dagger["growth_rate"] < 1.01 and max(dagger["deviation"]) < 0.2
    assert cloning["deviation"][-1] > 50 * dagger["deviation"][-1]
    assert cloning["expert_labels"] == dagger["expert_labels"] == 10 * 60  # the same labels for both
    assert dagger["cost"] < 1.2 * result["expert"]["cost"] < cloning["cost"]
    assert dagger["rounds_to_expert_cost"] is not None and cloning["rounds_to_expert_cost"] is None


def test_stable_system_both_stay_bounded(capsys, tmp_path):
    result = control_json(capsys, tmp_path, "--env", "linear", "--radius", "0.9", "--horizon", "60", "--seeds", "3")
    check_contract(result, "linear", 60)
    for entry in result["learners"].values():
        assert entry["growth_rate"] < 1.01 and max(entry["deviation"]) < 0.2
        assert entry["cost"] < 1.2 * result["expert"]["cost"]


def test_cartpole_dagger_needs_fewer_labels_to_the_experts_episode_length(capsys, tmp_path):
    result = control_json(capsys, tmp_path, "--env", "cartpole", "--horizon", "200", "--seeds", "3")
    check_contract(result, "cartpole", 200)
    assert result["radius"] is None and result["expert"]["episode_length"] == 200  # the expert balances throughout
    cloning, dagger = result["learners"]["behaviour_cloning"], result["learners"]["dagger"]
    assert dagger["reached"] == 1.0 and dagger["episode_length"] == 200
    assert dagger["expert_labels"] < cloning["expert_labels"]
    assert all(d < c for d, c in zip(dagger["expert_labels_by_seed"], cloning["expert_labels_by_seed"], strict=True))
    equal = cloning["at_dagger_labels"]  # behaviour cloning with DAgger's labels falls before the horizon
    assert equal["expert_labels"] == dagger["expert_labels"] and equal["episode_length"] < 0.9 * 200
    assert equal["cost"] > dagger["cost"] == 0.0


def test_figures_do_not_depend_on_the_thread_count():
    config = LinearConfig(horizon=30, seeds=2, rounds=3)
    previous = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(run_linear(config))
    finally:
        torch.set_num_threads(previous)
    for run in runs:
        run.pop("seconds")
    assert runs[0] == runs[1]
    small = CartPoleConfig(horizon=50, seeds=1, max_rounds=3, evaluation_episodes=2)
    first, second = run_cartpole(small), run_cartpole(small)
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_lqr_gain_and_growth_rate():
    # Scalar x' = a x + u with q = r = 1: p = 1 + a^2 p / (1 + p), k = a p / (1 + p).
    a = 1.1
    k = lqr_gain(np.array([[a]]), np.eye(1), np.eye(1), np.eye(1))[0, 0]
    p = (a * a + np.sqrt((a * a) ** 2 + 4)) / 2  # the positive root of p^2 - a^2 p - 1 = 0
    assert k == pytest.approx(a * p / (1 + p), rel=1e-9)
    assert growth_rate(0.01 * 1.07 ** np.arange(50)) == pytest.approx(1.07)
    assert growth_rate(np.r_[0.0, np.full(49, 0.3)]) == pytest.approx(1.0)
    with pytest.raises(UnforcedError, match="Riccati"):
        lqr_gain(np.array([[2.0]]), np.zeros((1, 1)), np.eye(1), np.eye(1), iterations=200)


@pytest.mark.parametrize(("args", "names"), [
    (["--env", "mujoco"], "--env"),
    (["--env", "cartpole", "--radius", "1.1"], "--radius"),
    (["--env", "linear", "--radius", "0"], "--radius"),
    (["--env", "linear", "--radius", "nan"], "--radius"),
    (["--env", "linear", "--horizon", "1"], "--horizon"),
    (["--env", "cartpole", "--horizon", "5"], "--horizon"),
    (["--env", "linear", "--seeds", "0"], "--seeds"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, args, names):
    code, out, err = call(["control", *args, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and names in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_core_package_does_not_import_gymnasium():
    code = ("import sys, unforced, unforced.cli, unforced.control; "
            "assert 'gymnasium' not in sys.modules, 'gymnasium imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_an_out_folder_that_cannot_be_made_exits_2_before_running(capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    code, out, err = call(["control", "--env", "linear", "--out", str(tmp_path / "file" / "run")], capsys)
    assert code == 2 and out == "" and "--out" in err and "seed" not in err
