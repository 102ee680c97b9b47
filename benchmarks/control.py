"""Behaviour cloning against DAgger (`unforced control`): the default runs, their figures and their time.

Runs the command as a user would, in its own process (`python -m unforced.cli control ... --json`), for the
linear system at spectral radius 1.1 and 0.9 and for CartPole, each at its defaults (linear: horizon 100,
5 seeds, 10 rounds of one 100-step trajectory each, so 1000 expert labels per learner; CartPole: horizon 500,
5 seeds, rounds of 25 labels up to 1000). Records each run's wall time (interpreter start and imports included)
and its figures: per learner the fitted per-step growth rate of the deviation from the expert's trajectory
(over seeds and per seed), the cost, the expert labels, DAgger's rounds, and the log-log slope of the excess cost
against the horizon (Ross and Bagnell's reference: 2 for behaviour cloning, 1 for DAgger).

Goals (issue 12): at radius 1.1 behaviour cloning's growth rate above 1 (at least 1.01) and DAgger's bounded
(at most 1.01); at radius 0.9 both at most 1.01; on CartPole every seed's DAgger reaching the expert's episode
length, with fewer expert labels than behaviour cloning (labels saved at least 1); each default run under 120 s.
`--quick` runs the same commands at a small size (linear horizon 60, 3 seeds; CartPole horizon 200, 3 seeds).

    python benchmarks/control.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, goal, print_goals, provenance

SECONDS_GOAL = 120.0
BOUNDED = 1.01  # a fitted per-step factor at most this is read as bounded (no geometric growth)


def run_command(args: list[str], out: Path) -> tuple[dict, float, list[str]]:
    command = [sys.executable, "-m", "unforced.cli", "control", *args, "--json", "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr}")
    return json.loads(done.stdout), seconds, ["unforced", "control", *args]


def summary(result: dict, seconds: float, command: list[str]) -> dict:
    horizon = result["horizon"]
    learners = {}
    for name, entry in result["learners"].items():
        deviation = entry["deviation"]
        learners[name] = {
            "growth_rate": entry["growth_rate"], "growth_rate_by_seed": entry["growth_rate_by_seed"],
            "cost": entry["cost"], "cost_by_seed": entry["cost_by_seed"],
            "expert_labels": entry["expert_labels"], "expert_labels_by_seed": entry["expert_labels_by_seed"],
            "deviation_at": {str(t): deviation[t] for t in (horizon // 4, horizon // 2, horizon)},
            "excess_cost_slope": entry["excess_cost"]["slope"],
            **{key: entry[key] for key in ("rounds", "rounds_to_expert_cost", "episode_length", "reached",
                                           "rounds_by_seed") if key in entry}}
    equal = result["learners"]["behaviour_cloning"].get("at_dagger_labels")
    if equal is not None:  # CartPole: behaviour cloning with the labels DAgger needed
        learners["behaviour_cloning"]["at_dagger_labels"] = {
            key: equal[key] for key in ("expert_labels", "expert_labels_by_seed", "episode_length", "cost",
                                        "cost_by_seed", "growth_rate")} | {
            "excess_cost_slope": equal["excess_cost"]["slope"]}
    return {"command": " ".join(command), "seconds": seconds, "env": result["env"], "radius": result["radius"],
            "horizon": horizon, "seeds": result["seeds"], "learners": learners, "expert": result["expert"],
            "settings": result["settings"], "seconds_inside": result["seconds"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the smoke variant the tests run")
    parser.add_argument("--json", action="store_true", help="print the JSON result alone")
    args = parser.parse_args(argv)
    linear_size = ["--horizon", "60", "--seeds", "3"] if args.quick else []
    cartpole_size = ["--horizon", "200", "--seeds", "3"] if args.quick else []
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, command in (("linear_radius_1.1", ["--env", "linear", "--radius", "1.1", *linear_size]),
                              ("linear_radius_0.9", ["--env", "linear", "--radius", "0.9", *linear_size]),
                              ("cartpole", ["--env", "cartpole", *cartpole_size])):
            print(f"unforced control {' '.join(command)} ...", file=sys.stderr)
            runs[name] = summary(*run_command(command, Path(folder) / name))
    unstable, stable, cartpole = runs["linear_radius_1.1"], runs["linear_radius_0.9"], runs["cartpole"]
    goals = {
        "linear_1.1_behaviour_cloning_growth_rate": goal(
            unstable["learners"]["behaviour_cloning"]["growth_rate"], BOUNDED, lower_is_better=False),
        "linear_1.1_dagger_growth_rate": goal(unstable["learners"]["dagger"]["growth_rate"], BOUNDED),
        "linear_0.9_behaviour_cloning_growth_rate": goal(stable["learners"]["behaviour_cloning"]["growth_rate"],
                                                         BOUNDED),
        "linear_0.9_dagger_growth_rate": goal(stable["learners"]["dagger"]["growth_rate"], BOUNDED),
        "cartpole_dagger_seeds_reaching_expert_length": goal(cartpole["learners"]["dagger"]["reached"], 1.0,
                                                             lower_is_better=False),
        "cartpole_labels_saved_by_dagger": goal(cartpole["learners"]["behaviour_cloning"]["expert_labels"] -
                                                cartpole["learners"]["dagger"]["expert_labels"], 1,
                                                lower_is_better=False),
        **{f"seconds_{name}": goal(run["seconds"], SECONDS_GOAL) for name, run in runs.items()},
    }
    result = {"provenance": provenance(device="cpu", quick=args.quick), "benchmark": "control", "quick": args.quick,
              "runs": runs, "goals": goals}
    if not args.json:
        print_goals(goals)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
