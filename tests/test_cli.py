"""The `unforced` command: the main job end to end, --json purity, and one-line errors with exit code 2."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helper import call
from rich.console import Console

from unforced.cli import _Bars, _PlainProgress, _table
from unforced.run_config import DEFAULT_STRATEGIES

TINY = {
    "preset": "quick",
    "task_options": {"size": 300, "length": 6},
    "model": {"kind": "gru", "embedding": 16, "hidden": 48},
    "train": {"steps": 60, "batch_size": 32, "eval_every": 30, "eval_limit": 20, "checkpoint_every": 30},
    "test_limit": 40,
}
CONTRACT_KEYS = {"tf_nll", "fr_nll", "gap_nll", "gap_pct", "tf_token_acc", "fr_token_acc", "metric", "per_position",
                 "train_seconds"}


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_run_json_prints_the_result_alone_and_writes_the_run_directory(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "unforced.cli", "run", "--task", "reverse", "--config",
                             str(tiny_config), "--out", str(out), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)  # stdout is the JSON alone
    assert results["task"] == "reverse" and results["seed"] == 0
    entry = results["strategies"]["teacher_forcing"]
    assert CONTRACT_KEYS <= entry.keys()
    assert entry["gap_nll"] == pytest.approx(entry["fr_nll"] - entry["tf_nll"])
    assert entry["gap_pct"] == pytest.approx(100 * entry["gap_nll"] / entry["tf_nll"])
    assert entry["metric"]["name"] == "exact_match"
    curves = entry["per_position"]
    assert len(curves["tf_nll"]) == len(curves["fr_nll"]) == len(curves["tf_error"]) == len(curves["fr_error"]) == 7
    assert list(results["strategies"]) == DEFAULT_STRATEGIES
    for name in ("config.yaml", "metrics.jsonl", "results.json", "report.html", "figures/per_position.png",
                 "figures/training_curves.png", *(e["checkpoint"] for e in results["strategies"].values())):
        assert (out / name).exists(), name
    assert json.loads((out / "results.json").read_text()) == results
    html = (out / "report.html").read_text()
    assert "figures/per_position.png" in html and "teacher_forcing" in html


def test_gap_measures_a_finished_run_again(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    code, stdout, _ = call(["run", "--task", "copy", "--strategies", "teacher_forcing", "--config",
                            str(tiny_config), "--out", str(out), "--json"], capsys)
    assert code == 0
    first = json.loads(stdout)["strategies"]["teacher_forcing"]
    code, stdout, _ = call(["gap", str(out), "--json"], capsys)
    assert code == 0
    again = json.loads(stdout)["strategies"]["teacher_forcing"]
    assert again["tf_nll"] == pytest.approx(first["tf_nll"], rel=1e-6)
    assert again["fr_nll"] == pytest.approx(first["fr_nll"], rel=1e-6)
    diagnostics = again["diagnostics"]
    assert diagnostics["sweep"]["ratios"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert diagnostics["sweep"]["nll"][0] == pytest.approx(again["fr_nll"], rel=1e-5)
    assert diagnostics["sweep"]["nll"][-1] == pytest.approx(again["tf_nll"], rel=1e-5)
    assert diagnostics["divergence"]["mean"][0] == 0.0
    assert (out / "diagnostics.json").exists()
    code, stdout, _ = call(["sweep", str(out), "--ratios", "1,0", "--json"], capsys)
    assert code == 0
    swept = json.loads(stdout)["strategies"]["teacher_forcing"]
    assert swept["nll"] == pytest.approx([again["tf_nll"], again["fr_nll"]], rel=1e-5)
    assert call(["sweep", str(out), "--ratios", "2"], capsys)[0] == 2
    (out / "report.html").unlink()
    assert call(["report", str(out)], capsys)[0] == 0
    html = (out / "report.html").read_text()
    named = re.findall(r'src="([^"]+)"', html)
    assert {"figures/per_position.png", "figures/sweep.png", "figures/divergence.png", "figures/recovery.png",
            "figures/compounding.png", "figures/prefix_divergence.png"} <= set(named)
    for figure in named:  # every figure the report names exists
        assert (out / figure).stat().st_size > 1000, figure


def test_schedules_plot(tmp_path, capsys):
    path = tmp_path / "schedules.png"
    assert call(["schedules", "--plot", str(path), "--steps", "500"], capsys)[0] == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phase_chain_is_keyed_exactly_as_given(tmp_path, tiny_config, capsys):
    chain = "teacher_forcing:20>teacher_forcing:10"
    code, stdout, err = call(["run", "--task", "copy", "--strategies", chain, "--config", str(tiny_config),
                              "--out", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    assert list(json.loads(stdout)["strategies"]) == [chain]


@pytest.mark.parametrize("args, message", [
    (["run", "--task", "no-such-task"], "unknown task 'no-such-task'"),
    (["run", "--task", "copy", "--strategies", "no_such_strategy"], "unknown strategy 'no_such_strategy'"),
    (["run", "--task", "copy", "--strategies", "teacher_forcing:10>teacher_forcing"], "give every phase"),
    (["run", "--task", "copy", "--preset", "huge"], "unknown preset 'huge'"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message, capsys):
    code, stdout, err = call([*args, "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert message in err and err.strip().count("\n") == 0
    assert stdout == ""


@pytest.mark.parametrize("config, message", [
    ({"train": {"steps": "many"}}, "train.steps"),
    ({"train": {"steps": -3}}, "train.steps"),
    ({"model": {"hidden": 0}}, "model.hidden"),
    ({"model": {"kind": "mamba"}}, "model.kind"),
    ({"model": {"dropout": 1.5}}, "model.dropout"),
    ({"task_options": {"length": 0}}, "length"),
    ({"task_options": {"colour": "red"}}, "colour"),
    ({"strategy_options": {"teacher_forcing": {"label_smoothing": 2}}}, "label_smoothing"),
    ({"unknown_section": 1}, "unknown_section"),
])
def test_bad_config_values_name_the_field(tmp_path, config, message, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, **config} if "unknown_section" not in config else config))
    code, _, err = call(["run", "--task", "copy", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2, err
    assert message in err


def test_malformed_config_file_and_data_file(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: [unclosed\n")
    code, _, err = call(["run", "--task", "copy", "--config", str(bad_yaml)], capsys)
    assert code == 2 and "not valid YAML" in err
    data = tmp_path / "pairs.tsv"
    data.write_text("a b\tb a\nonly one column\n")
    code, _, err = call(["run", "--task", str(data), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and f"{data}:2" in err


def test_sequence_longer_than_the_model_allows(tmp_path, capsys):
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({**TINY, "model": {**TINY["model"], "max_target_len": 3}}))
    code, _, err = call(["run", "--task", "copy", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "longer than the model allows" in err


def test_resume_with_another_model_is_refused_and_the_checkpoint_kept(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    assert call(["train", "--task", "copy", "--strategy", "teacher_forcing", "--config", str(tiny_config),
                 "--out", str(out)], capsys)[0] == 0
    before = (out / "checkpoints" / "last.pt").read_bytes()
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "model": {**TINY["model"], "kind": "lstm"}}))
    code, _, err = call(["train", "--task", "copy", "--strategy", "teacher_forcing", "--config", str(other),
                         "--out", str(out), "--resume"], capsys)
    assert code == 2 and "cannot resume with other settings (model" in err
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert "kind: gru" in (out / "config.yaml").read_text()


def test_a_finished_run_is_not_overwritten_without_being_asked(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    args = ["run", "--task", "copy", "--strategies", "teacher_forcing", "--config", str(tiny_config), "--out",
            str(out)]
    code, _, err = call(args, capsys)  # stderr is no terminal here: progress comes as plain lines
    assert code == 0
    assert "[teacher_forcing] training: 60 steps" in err and "[teacher_forcing] training done: 60 steps" in err
    assert re.search(r"\[teacher_forcing\] step 60/60  loss \d+\.\d{3}  \d+\.\d step/s  ETA 0s", err)
    assert "[teacher_forcing] evaluating on the test split" in err
    results = (out / "results.json").read_bytes()
    code, _, err = call(args, capsys)
    assert code == 2 and "already holds a run" in err
    assert (out / "results.json").read_bytes() == results
    assert call([*args, "--overwrite"], capsys)[0] == 0


def test_seeds_report_mean_and_spread(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    code, stdout, err = call(["run", "--task", "copy", "--strategies", "teacher_forcing", "--config",
                              str(tiny_config), "--out", str(out), "--seeds", "2", "--json"], capsys)
    assert code == 0, err
    results = json.loads(stdout)
    assert results["seeds"] == [0, 1]
    entry = results["strategies"]["teacher_forcing"]
    per_seed = [json.loads((out / f"seed-{s}" / "results.json").read_text())["strategies"]["teacher_forcing"]
                for s in (0, 1)]
    assert entry["spread"]["fr_nll"]["values"] == [p["fr_nll"] for p in per_seed]
    assert entry["fr_nll"] == pytest.approx((per_seed[0]["fr_nll"] + per_seed[1]["fr_nll"]) / 2)
    assert per_seed[0]["fr_nll"] != per_seed[1]["fr_nll"]  # the seeds really differ
    assert "Over 2 seeds" in (out / "report.html").read_text()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def step_record(step: int, steps: int = 2000, speed: float = 2.1) -> dict:
    return {"step": step, "steps": steps, "loss": 3.4123, "steps_per_second": speed,
            "eta_seconds": (steps - step) / speed}


def test_plain_progress_lines_are_spaced_and_say_phase_step_loss_speed_and_eta():
    clock, stream = FakeClock(), io.StringIO()
    progress = _PlainProgress(stream=stream, every=10.0, max_silence=30.0, clock=clock, heartbeat=False)
    printed_at = []

    def feed(tag: str, record: dict) -> None:
        before = stream.getvalue().count("\n")
        progress(tag, record)
        printed_at.extend([clock.now] * (stream.getvalue().count("\n") - before))

    feed("teacher_forcing", step_record(10))  # the phase starts: a start line and the first step line
    for step in range(20, 130, 10):  # one record every 2 s
        clock.now += 2.0
        feed("teacher_forcing", step_record(step))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[teacher_forcing] training: 2000 steps"
    assert lines[1] == "[teacher_forcing] step 10/2000  loss 3.412  2.1 step/s  ETA 15m48s"
    # at most one step line every 10 s: at t = 0, 10 and 20 of the 22 s
    assert lines[2:] == ["[teacher_forcing] step 60/2000  loss 3.412  2.1 step/s  ETA 15m24s",
                         "[teacher_forcing] step 110/2000  loss 3.412  2.1 step/s  ETA 15m00s"]
    assert [t - printed_at[0] for t in printed_at] == [0.0, 0.0, 10.0, 20.0]


def test_plain_progress_never_goes_quiet_for_30_seconds():
    clock, stream = FakeClock(), io.StringIO()
    progress = _PlainProgress(stream=stream, every=10.0, max_silence=30.0, clock=clock, heartbeat=False)
    progress("mixer", step_record(10, steps=100, speed=0.01))
    printed_at = []
    for _ in range(95):  # no record for 95 s: the heartbeat (ticks every second) repeats the state
        clock.now += 1.0
        before = stream.getvalue().count("\n")
        progress.tick()
        printed_at += [clock.now - 1000.0] * (stream.getvalue().count("\n") - before)
    lines = stream.getvalue().splitlines()
    assert printed_at == [30.0, 60.0, 90.0]  # with ticks out of step with the lines, still none past 30 s
    assert all(line.startswith("[mixer] step 10/100  loss 3.412  0.0 step/s  ETA 2h30m  (still running, 30s")
               for line in lines[2:])


def test_plain_progress_says_phase_ends_evaluations_and_reuse():
    clock, stream = FakeClock(), io.StringIO()
    progress = _PlainProgress(stream=stream, clock=clock, heartbeat=False)
    progress("scheduled_sampling", {"phase": "reused", "from": "teacher_forcing", "step": 40})
    progress("scheduled_sampling", step_record(50, steps=60))
    clock.now += 65.0
    progress("scheduled_sampling", step_record(60, steps=60))
    progress("scheduled_sampling", {"phase": "evaluate"})
    progress("scheduled_sampling", {"phase": "diagnostics"})
    assert stream.getvalue().splitlines() == [
        "[scheduled_sampling] reused steps 1-40 trained by teacher_forcing",
        "[scheduled_sampling] training: 60 steps",
        "[scheduled_sampling] step 50/60  loss 3.412  2.1 step/s  ETA 5s",
        "[scheduled_sampling] step 60/60  loss 3.412  2.1 step/s  ETA 0s",
        "[scheduled_sampling] training done: 60 steps, 1m05s",
        "[scheduled_sampling] evaluating on the test split",
        "[scheduled_sampling] measuring the diagnostics"]
    clock.now += 100.0
    progress.tick()  # the diagnostics still run: said again
    assert stream.getvalue().splitlines()[-1].startswith("[scheduled_sampling] measuring the diagnostics  (still")


def test_bars_print_plain_lines_without_a_terminal_and_a_bar_on_one(capsys):
    with _Bars(interactive=False) as bars:
        bars("teacher_forcing", step_record(10, steps=20))
        bars("teacher_forcing", step_record(20, steps=20))
    err = capsys.readouterr().err
    assert "[teacher_forcing] step 20/20" in err and "training done" in err
    with _Bars(interactive=True) as bars:
        assert bars.plain is None
    with _Bars(enabled=False, interactive=False) as bars:
        assert bars.plain is None and bars.progress.disable


def table_text(results: dict) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(_table(results))
    return console.export_text()


def entry(fr: float, fr_beam: float | None = None) -> dict:
    metric = {"name": "bleu", "fr": fr}
    if fr_beam is not None:
        metric.update({"fr_beam": fr_beam, "beam_size": 4})
    return {"tf_nll": 1.0, "fr_nll": 1.5, "gap_pct": 50.0, "metric": metric, "train_seconds": 3.0}


def test_table_shows_free_running_greedy_and_beam_and_no_teacher_forced_metric():
    text = table_text({"task": "t", "strategies": {"teacher_forcing": entry(12.345, 14.5), "mixer": entry(11.0)}})
    header = next(line for line in text.splitlines() if "strategy" in line)
    assert "FR bleu greedy" in header and "FR bleu beam 4" in header and "TF bleu" not in header
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in text.splitlines() if line.startswith("│")}
    assert cells == {"teacher_forcing": ["1.000", "1.500", "50.0", "12.35", "14.50", "3.0"],
                     "mixer": ["1.000", "1.500", "50.0", "11.00", "-", "3.0"]}
    no_beam = table_text({"task": "t", "strategies": {"teacher_forcing": entry(12.345)}})
    assert "beam" not in no_beam and "12.35" in no_beam


def test_the_observation_commands_are_part_of_the_main_cli(tmp_path):
    log = tmp_path / "log.csv"
    done = subprocess.run([sys.executable, "-m", "unforced.cli", "clicks", "simulate", "--out", str(log),
                           "--queries", "20", "--sessions", "200", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert log.exists() and json.loads(done.stdout)
    done = subprocess.run([sys.executable, "-m", "unforced.cli", "specimens", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "simulate" in done.stdout
