"""The switch of a chain on a validation stall: the phase stops after `patience` evaluations without
improvement, the next starts from the best evaluation's weights, a resume lands in the same place, the results
and the report say where it happened, and bad settings are refused before any training."""

from __future__ import annotations

import re

import pytest
import torch

from unforced.errors import UnforcedError
from unforced.experiment import run_experiment
from unforced.report import build_report
from unforced.run_config import RunConfig, parse_entry
from unforced.runfiles import read_checkpoint_file, read_metrics
from unforced.switch import Patience, SwitchConfig

CHAIN = "teacher_forcing:40>parallel_scheduled_sampling:6"
# min_delta so large that only the first evaluation counts as an improvement: the stall is certain and lands on
# the same step on every machine, whatever the floating-point order of the figures.
STALL = {"metric": "fr_nll", "patience": 2, "min_delta": 1e9}


def tiny(strategies: list[str], switch: dict | None = STALL, **train) -> RunConfig:
    return RunConfig(task="copy", task_options={"size": 200, "length": 5}, strategies=strategies, preset="quick",
                     model={"kind": "gru", "embedding": 16, "hidden": 32},
                     train={"steps": 40, "batch_size": 16, "eval_every": 5, "eval_limit": 16,
                            "checkpoint_every": 10, "log_every": 5, **train},
                     test_limit=16, diagnostics_limit=0, switch=switch)


def folder(out, tag: str):
    return out / "checkpoints" / re.sub(r"[^A-Za-z0-9_.-]+", "-", tag).strip("-")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def switched(tmp_path_factory):
    out = tmp_path_factory.mktemp("switched")
    return out, run_experiment(tiny([CHAIN]), out)


def test_the_phase_stops_on_the_stall_and_the_next_starts_from_the_best_weights(switched, tmp_path):
    out, results = switched
    move, = results["strategies"][CHAIN]["switches"]
    # best at the first evaluation (step 5), then two evaluations without improvement: stop at step 15
    assert move["stalled"] and move["best_step"] == 5 and move["stopped_at"] == 15 and move["global_step"] == 15
    phase_one = folder(out, f"{CHAIN}#1:teacher_forcing")
    assert read_checkpoint_file(phase_one / "last.pt")["step"] == 15
    best = read_checkpoint_file(phase_one / "best.pt")
    assert best["step"] == 5
    # the weights of best.pt are those of 5 teacher-forcing steps trained with nothing else
    plain = tmp_path / "plain"
    run_experiment(tiny(["teacher_forcing"], switch=None, steps=5), plain)
    assert same(best["model"], read_checkpoint_file(plain / "checkpoints" / "last.pt")["model"])
    assert not same(best["model"], read_checkpoint_file(phase_one / "last.pt")["model"])
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "switch" in r] == [15]
    second = [r for r in records if r["strategy"] == f"{CHAIN}#2:parallel_scheduled_sampling" and "loss" in r]
    assert second and min(r["global_step"] for r in second) > 15  # its steps continue from the switch
    assert not any(r["step"] > 15 for r in records if r["strategy"] == f"{CHAIN}#1:teacher_forcing")


def test_a_resumed_run_keeps_the_switch(switched, tmp_path):
    out, results = switched
    again = run_experiment(tiny([CHAIN]), out, resume=True)
    assert again["strategies"][CHAIN]["switches"] == results["strategies"][CHAIN]["switches"]
    assert again["strategies"][CHAIN]["fr_nll"] == results["strategies"][CHAIN]["fr_nll"]


def test_the_report_marks_the_switch(switched):
    out, _ = switched
    page = build_report(out).read_text()
    assert "Switches (dotted lines)" in page and "at step 15" in page and "of step 5" in page


def test_patience_counts_evaluations_without_improvement(tmp_path):
    model = torch.nn.Linear(2, 2)
    patience = Patience(SwitchConfig(metric="bleu", patience=2), tmp_path / "best.pt")
    values = [10.0, 12.0, 11.0, 12.0]  # equal to the best is no improvement
    stops = [patience.update({"metric": {"name": "bleu", "fr": v}}, step, model) for step, v in
             enumerate(values, 1)]
    assert stops == [False, False, False, True]
    assert patience.best == 12.0 and patience.best_step == 2 and patience.stopped_at == 4
    lower = Patience(SwitchConfig(metric="wer", patience=1), tmp_path / "wer.pt")
    assert not lower.update({"metric": {"name": "wer", "fr": 0.5}}, 1, model)
    assert not lower.update({"metric": {"name": "wer", "fr": 0.4}}, 2, model)  # lower WER is better
    assert lower.update({"metric": {"name": "wer", "fr": 0.45}}, 3, model)


def test_bad_switch_settings_are_refused_before_training(tmp_path):
    with pytest.raises(UnforcedError, match="switch.metric 'cider_d' is not measured on task"):
        run_experiment(tiny([CHAIN], switch={"metric": "cider_d", "patience": 2}), tmp_path / "a")
    assert not (tmp_path / "a" / "metrics.jsonl").exists()
    with pytest.raises(UnforcedError, match="switch.patience"):
        tiny([CHAIN], switch={"metric": "bleu", "patience": 0})
    with pytest.raises(UnforcedError, match="switch: unknown option"):
        tiny([CHAIN], switch={"metric": "bleu", "patient": 2})
    with pytest.raises(UnforcedError, match="needs validation"):
        run_experiment(tiny([CHAIN], eval_every=0), tmp_path / "b")
    with pytest.raises(UnforcedError, match="set `switch`"):
        parse_entry("teacher_forcing>reinforce")
    phases = parse_entry("teacher_forcing>reinforce", switch=True)
    assert [p.steps for p in phases] == [None, None]


def test_the_command_line_takes_the_switch_from_the_config_file(tmp_path, capsys):
    import json

    import yaml
    from cli_helper import call

    config = tmp_path / "switch.yaml"
    config.write_text(yaml.safe_dump({"task_options": {"size": 200, "length": 5},
                                      "model": {"kind": "gru", "embedding": 16, "hidden": 32},
                                      "train": {"steps": 40, "batch_size": 16, "eval_every": 5, "eval_limit": 16,
                                                "log_every": 5}, "test_limit": 16, "diagnostics_limit": 0,
                                      "switch": STALL}))
    code, out, err = call(["run", "--task", "copy", "--quick", "--strategies",
                           "teacher_forcing>parallel_scheduled_sampling:4", "--config", str(config),
                           "--out", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    move, = json.loads(out)["strategies"]["teacher_forcing>parallel_scheduled_sampling:4"]["switches"]
    assert move["global_step"] == 15 and move["best_step"] == 5
    config.write_text(yaml.safe_dump({"switch": {"metric": "bleu", "patience": "soon"}}))
    code, _, err = call(["run", "--task", "copy", "--quick", "--config", str(config), "--out",
                         str(tmp_path / "bad")], capsys)
    assert code == 2 and "switch.patience" in err
