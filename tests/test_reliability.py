"""Reliability: nothing lost under crashes, full disks, bad files and bad numbers.

Config fuzzing (every invalid value is refused with an UnforcedError naming the field), a full disk in the middle of
a run (what was written still loads, the resumed run matches an uninterrupted one), damaged checkpoints met by
`--resume`, and data files with huge lines, NUL bytes and mixed encodings. FIXED_BUGS lists inputs that were once
accepted or failed with another exception type; each must now be refused by name.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cli_helper import call
from conftest import TEST_THREADS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unforced.cli import main
from unforced.config import validate_config
from unforced.errors import UnforcedError
from unforced.experiment import RunConfig, parse_entry, resolve, run_experiment, strategy_options
from unforced.models import ModelConfig
from unforced.runfiles import atomic_write_text, load_checkpoint, read_checkpoint_file
from unforced.strategies import make_strategy
from unforced.tasks import get_task
from unforced.tasks.files import read_pairs
from unforced.train import TrainConfig

torch.set_num_threads(TEST_THREADS)

# ---- config fuzzing ----------------------------------------------------------------------------------------------

BASE = {"task": "copy", "task_options": {"size": 30, "length": 4},
        "strategies": ["teacher_forcing", "scheduled_sampling", "reinforce"]}


def check_config(data: dict) -> None:
    """Every check a config meets before training, in the order the CLI and `run_experiment` make them."""
    config = validate_config(RunConfig, data, prefix="config")  # the CLI's `_run`
    for entry in config.strategies:  # `_run_experiment` from here on
        parse_entry(entry, config.preset)
    task_options, model_options, train_options = resolve(config)
    validate_config(TrainConfig, train_options, prefix="train")
    task = get_task(config.task, **{"seed": config.seed, **task_options})
    longest_source, longest_target = task.longest()
    model_options = {"max_source_len": longest_source, "max_target_len": longest_target, **model_options}
    model_options.setdefault("source_vocab", task.source_tokenizer.vocab_size)
    model_options.setdefault("target_vocab", task.target_tokenizer.vocab_size)
    validate_config(ModelConfig, model_options, prefix="model")
    for entry in config.strategies:  # `_train_phase`
        for phase in parse_entry(entry, config.preset):
            options = strategy_options(config, phase.strategy)
            if phase.strategy == "reinforce":
                options = {"reward": None, **options}
            make_strategy(phase.strategy, options, seed=config.seed)


def test_the_base_config_is_valid():
    check_config(BASE)


not_a_number = st.text("abcdefghij", max_size=6).map(lambda s: "x" + s)  # never parses as a number or a bool
containers = st.one_of(st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2))
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def bad_int(minimum: int | None, optional: bool = False):
    """Values an int field must refuse: other types, fractions, non-finite numbers, numbers below `minimum`."""
    choices = [not_a_number, containers, non_finite, st.floats(0.1, 0.9).map(lambda f: 3 + f)]
    if not optional:
        choices.append(st.none())
    if minimum is not None:
        choices.append(st.integers(-10**6, minimum - 1))
    return st.one_of(*choices)


def bad_float(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = True,
              nan: bool = True, inf: bool = True):
    """Values a float field in [low, high) (or the interval given) must refuse."""
    choices = [not_a_number, containers, st.none(),
               st.floats(max_value=low, exclude_max=not low_open, allow_nan=False, allow_infinity=False)]
    if nan:
        choices.append(st.just(math.nan))
    if inf:
        choices.append(st.just(-math.inf))
    if math.isfinite(high):
        choices.append(st.floats(min_value=high, exclude_min=not high_open, allow_nan=False))
    elif inf:
        choices.append(st.just(math.inf))
    return st.one_of(*choices)


def bad_choice(optional: bool = False):
    return st.one_of(not_a_number, containers, st.integers(), *([] if optional else [st.none()]))


bad_bool = st.one_of(not_a_number, containers, st.none(), st.integers(2, 100))
bad_mapping = st.one_of(not_a_number, st.lists(st.integers(), max_size=2), st.integers())

# section -> field -> bad values (inputs that once slipped through are in FIXED_BUGS below).
TRAIN = {**{name: bad_int(1) for name in ("steps", "batch_size", "eval_limit", "log_every", "max_bad_steps")},
         **{name: bad_int(0) for name in ("warmup", "eval_every", "checkpoint_every")},
         "clip": bad_float(0.0, nan=False, inf=False),  # clip = inf disables clipping, as 0 does
         "weight_decay": bad_float(0.0, nan=False, inf=False),
         "learning_rate": bad_float(0.0, low_open=False), "seed": bad_int(None),
         "device": st.one_of(bad_choice(), st.sampled_from(["gpu", "cuda:x", "tpu", "", "cpu:0", "cuda:-1"])),
         "precision": st.one_of(bad_choice(), st.sampled_from(["fp16", "bfloat16", "", "FP32"])), "fsdp": bad_bool}
MODEL = {**{name: bad_int(1) for name in ("embedding", "hidden", "layers", "heads", "max_source_len",
                                          "max_target_len", "source_vocab", "target_vocab")},
         "feedforward": bad_int(1, optional=True), "kind": bad_choice(), "dropout": bad_float(0.0, 1.0),
         "path": st.one_of(st.integers(), containers), "source": bad_choice(), "source_features": bad_int(0)}
TASK = {"length": st.integers(-10**6, 0), "size": st.integers(-10**6, 2), "symbols": st.one_of(
    st.integers(-10**6, 1), st.integers(27, 10**6)), "min_length": st.one_of(st.integers(-10**6, 0),
                                                                           st.integers(5, 10**6))}
SCHEDULED_FEEDS = {
    "schedule": bad_choice(), "schedule_params": st.one_of(bad_mapping, st.fixed_dictionaries(
        {"k": st.one_of(st.integers(-10**6, 0), non_finite, not_a_number, st.none())})),
    "min_ratio": bad_float(0.0, 1.0, high_open=False), "per": bad_choice(), "own": bad_choice(),
    "soft": bad_bool, "temperature": bad_float(0.0, low_open=False, inf=False),
    "curriculum": st.one_of(bad_mapping, st.just({}), st.fixed_dictionaries(
        {"max_length_start": bad_int(1), "max_length_end": st.just(5), "steps": st.just(10)}))}
STRATEGIES = {
    "teacher_forcing": {"label_smoothing": bad_float(0.0, 1.0), "tbptt": bad_int(1, optional=True)},
    "scheduled_sampling": SCHEDULED_FEEDS,
    "parallel_scheduled_sampling": {**SCHEDULED_FEEDS, "passes": bad_int(2)},
    "mixer": {
        "delta": bad_int(0), "delta_growth": bad_int(1, optional=True), "reward": bad_choice(optional=True),
        "baseline": bad_choice(), "normalize_advantage": bad_bool, "samples": bad_int(1),
        "temperature": bad_float(0.0, low_open=False), "top_k": bad_int(1, optional=True),
        "max_len": bad_int(1, optional=True), "max_len_factor": bad_float(0.0, low_open=False),
        "entropy_bonus": bad_float(0.0)},
    "reinforce": {
        "reward": bad_choice(optional=True), "baseline": bad_choice(), "normalize_advantage": bad_bool,
        "samples": bad_int(1), "temperature": bad_float(0.0, low_open=False),
        "top_k": bad_int(1, optional=True), "max_len": bad_int(1, optional=True),
        "max_len_factor": bad_float(0.0, low_open=False), "rl_weight": bad_float(0.0, 1.0, high_open=False),
        "rl_weight_schedule": st.one_of(not_a_number, st.lists(st.integers(), max_size=2), st.just({}),
                                        st.fixed_dictionaries({"name": bad_choice()}),
                                        st.fixed_dictionaries({"name": st.just("linear"),
                                                               "steps": bad_int(1)})),
        "entropy_bonus": bad_float(0.0),
        "collapse_threshold": st.one_of(not_a_number, containers, st.floats(max_value=0.0, allow_nan=False),
                                        st.floats(min_value=1.0, exclude_min=True, allow_nan=False),
                                        st.just(math.nan)),  # None is allowed: the guard off
        "collapse_cross_entropy": bad_float(0.0, 1.0, high_open=False)},
    "preference": {
        "reward": bad_choice(optional=True), "pairs": bad_choice(), "samples": bad_int(2),
        "temperature": bad_float(0.0, low_open=False), "top_k": bad_int(1, optional=True),
        "max_len": bad_int(1, optional=True), "max_len_factor": bad_float(0.0, low_open=False),
        "beta": bad_float(0.0, low_open=False), "ce_weight": bad_float(0.0, 1.0)},
    "minimum_risk": {
        "reward": bad_choice(optional=True), "nbest": bad_int(2), "candidates": bad_choice(),
        "temperature": bad_float(0.0, low_open=False), "alpha": bad_float(0.0, low_open=False),
        "cross_entropy_weight": bad_float(0.0), "max_len": bad_int(1, optional=True),
        "max_len_factor": bad_float(0.0, low_open=False)},
    "spin": {
        "beta": bad_float(0.0, low_open=False), "iteration_steps": bad_int(1),
        "temperature": bad_float(0.0, low_open=False), "top_k": bad_int(1, optional=True),
        "max_len": bad_int(1, optional=True), "max_len_factor": bad_float(0.0, low_open=False)},
    "self_training": {
        "ratio": bad_float(0.0, low_open=True), "unlabelled_batch": bad_int(1, optional=True), "beam": bad_int(1),
        "threshold": st.one_of(not_a_number, containers, st.none(), st.just(math.nan),  # -inf keeps every label
                               st.floats(min_value=0.0, exclude_min=True, allow_nan=False)),
        "max_len": bad_int(1, optional=True), "max_len_factor": bad_float(0.0, low_open=True)},
}
TOP = {"task": st.one_of(st.integers(), containers, st.none()), "strategies": st.one_of(
    not_a_number, st.integers(), st.lists(st.integers(), min_size=1, max_size=2)),
    "preset": bad_choice(), "seed": bad_int(None), "test_limit": bad_int(None, optional=True),
    "diagnostics_limit": bad_int(None), "switch": bad_mapping, **{name: bad_mapping | st.none() for name in (
        "task_options", "strategy_options", "phase_train", "model", "train")}}
unknown_key = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).map(lambda s: "zz" + s)


@st.composite
def invalid_configs(draw) -> tuple[dict, list[str]]:
    """A config with one invalid value or one unknown key, and the names its error message must contain."""
    section = draw(st.sampled_from(["train", "model", "task_options", "top", *STRATEGIES]))
    data = json.loads(json.dumps(BASE))
    if draw(st.integers(0, 5)) == 0 and section != "top":  # an unknown key
        key = draw(unknown_key)
        if section in STRATEGIES:
            data["strategy_options"] = {section: {key: 1}}
        else:
            data.setdefault(section, {})[key] = 1
        return data, [key] if section == "task_options" else [section, key]
    if section == "top":
        field = draw(st.sampled_from(sorted(TOP)))
        data[field] = draw(TOP[field], label=field)
        return data, ["preset" if field == "preset" else f"config.{field}"]  # "unknown preset 'x'"
    table = {"train": TRAIN, "model": MODEL, "task_options": TASK}.get(section) or STRATEGIES[section]
    field = draw(st.sampled_from(sorted(table)))
    value = draw(table[field], label=f"{section}.{field}")
    if section in STRATEGIES:
        data["strategy_options"] = {section: {field: value}}
        return data, [f"{section}.{field}"]
    data.setdefault(section, {})[field] = value
    return data, [field] if section == "task_options" else [f"{section}.{field}"]


@given(case=invalid_configs())
@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_every_invalid_config_is_refused_naming_the_field(case):
    data, names = case
    with pytest.raises(Exception) as caught:
        check_config(data)
    assert type(caught.value) is UnforcedError, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert all(name in message for name in names), (names, message)


FIXED_BUGS = [
    # (config change, the name the error must contain, the fix that made it so)
    ({"task_options": {"length": "many"}}, "length", "get_task: check each option's type against the default's"),
    ({"task_options": {"length": 2.5}}, "length", "same"),
    ({"task_options": {"symbols": None}}, "symbols", "same"),
    ({"task_options": {"size": math.nan}}, "size", "same"),
    ({"task_options": {"seed": "x"}}, "seed", "same"),
    ({"strategy_options": {"teacher_forcing": "x"}}, "teacher_forcing", "strategy_options: refuse a non-mapping"),
    ({"strategy_options": {"schedule_sampling": {"per": "batch"}}}, "schedule_sampling",
     "RunConfig: refuse strategy_options for an unknown strategy (a typo is silently ignored)"),
    ({"train": {"clip": math.nan}}, "train.clip", "TrainConfig: `not value >= 0` instead of `value < 0`"),
    ({"train": {"weight_decay": math.nan}}, "train.weight_decay", "same"),
    ({"train": {"weight_decay": math.inf}}, "train.weight_decay", "TrainConfig: weight_decay finite"),
    ({"seed": 10**30}, "seed", "RunConfig/TrainConfig: seed in [0, 2**32)"),
    ({"train": {"seed": 10**30}}, "train.seed", "same"),
    ({"test_limit": -5}, "config.test_limit", "RunConfig: test_limit None or >= 1"),
    ({"diagnostics_limit": -5}, "config.diagnostics_limit", "RunConfig: diagnostics_limit >= 0"),
    ({"strategies": []}, "config.strategies", "RunConfig: at least one strategy"),
    ({"strategy_options": {"scheduled_sampling": {"temperature": math.inf}}}, "scheduled_sampling.temperature",
     "ScheduledSamplingConfig: temperature finite, as reinforce's"),
]


@pytest.mark.parametrize("change, name, fix", FIXED_BUGS, ids=[str(c) for c, _, _ in FIXED_BUGS])
def test_once_accepted_invalid_configs_are_refused_naming_the_field(change, name, fix):
    data = {**json.loads(json.dumps(BASE)), **change}
    with pytest.raises(Exception) as caught:
        check_config(data)
    assert type(caught.value) is UnforcedError and name in str(caught.value), repr(caught.value)


# ---- a full disk during a run ------------------------------------------------------------------------------------

TWO_ENTRIES = ["teacher_forcing", "teacher_forcing:12>teacher_forcing:8"]


def tiny_run_config() -> RunConfig:
    return RunConfig(task="copy", task_options={"size": 80, "length": 4}, strategies=list(TWO_ENTRIES),
                     model={"kind": "gru", "embedding": 8, "hidden": 16, "dropout": 0.1},
                     train={"steps": 20, "batch_size": 16, "checkpoint_every": 5, "eval_every": 0,
                            "log_every": 5},
                     preset="quick", test_limit=10, diagnostics_limit=0)


def final_weights(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): read_checkpoint_file(p)["model"]
            for p in sorted(out.rglob("last.pt"))}


def figures(results: dict) -> dict:
    return {name: {k: v for k, v in entry.items() if k != "train_seconds"}
            for name, entry in results["strategies"].items()}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    results = run_experiment(tiny_run_config(), out)
    return out, results


class FullDisk:
    """`os.fsync` that raises ENOSPC at its `fail_at`-th call (counted from 1), noting who called it."""

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.calls, self.callers = fail_at, 0, []
        self.real = os.fsync

    def __call__(self, fd):
        self.calls += 1
        self.callers.append(sys._getframe(1).f_code.co_name)
        if self.calls == self.fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(fd)


def assert_everything_written_loads(out: Path) -> None:
    for checkpoint in out.rglob("*.pt"):
        load_checkpoint(checkpoint)
    if (out / "results.json").exists():
        json.loads((out / "results.json").read_text())
    if (out / "config.yaml").exists():
        yaml.safe_load((out / "config.yaml").read_text())
    for line in (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []:
        json.loads(line)


@pytest.fixture(scope="module")
def fsync_callers(tmp_path_factory, reference_run) -> list[str]:
    counter = FullDisk()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", counter)
        run_experiment(tiny_run_config(), tmp_path_factory.mktemp("count") / "run")
    return counter.callers


@pytest.mark.parametrize("where", ["first config write", "checkpoint", "checkpoint directory", "results.json",
                                   "last results.json", "late checkpoint"])
def test_full_disk_mid_run_loses_nothing_and_the_resume_matches(where, fsync_callers, reference_run, tmp_path,
                                                                 monkeypatch):
    calls = list(enumerate(fsync_callers, 1))
    writes = [n for n, caller in calls if caller == "atomic_write_text"]
    results_writes = writes[2:]  # config.yaml and tokenizers.json come first
    fail_at = {"first config write": writes[0],
               "checkpoint": [n for n, c in calls if c == "atomic_save"][3],
               "checkpoint directory": [n for n, c in calls if c == "_fsync_directory"][6],
               "results.json": results_writes[0], "last results.json": results_writes[-1],
               "late checkpoint": [n for n, c in calls if c == "atomic_save"][-2]}[where]
    out = tmp_path / "run"
    disk = FullDisk(fail_at)
    monkeypatch.setattr(os, "fsync", disk)
    with pytest.raises(OSError) as caught:
        run_experiment(tiny_run_config(), out)
    assert caught.value.errno == errno.ENOSPC and disk.calls == fail_at
    monkeypatch.setattr(os, "fsync", disk.real)
    assert_everything_written_loads(out)
    if where == "last results.json":  # the first entry's results survive the failed rewrite
        assert list(json.loads((out / "results.json").read_text())["strategies"]) == TWO_ENTRIES[:1]
    assert not (out / ".lock").exists()
    results = run_experiment(tiny_run_config(), out, resume=True)
    reference_out, reference_results = reference_run
    got, want = figures(results), figures(reference_results)
    for name in want:
        for key in want[name]:
            assert got[name].get(key) == want[name][key], (name, key, got[name].get(key), want[name][key])
    assert got == want
    expected, resumed = final_weights(reference_out), final_weights(out)
    assert expected.keys() == resumed.keys()
    for name, weights in expected.items():
        assert all(torch.equal(weights[key], resumed[name][key]) for key in weights), name


def test_full_disk_while_saving_a_checkpoint_leaves_no_temporary_file(fsync_callers, tmp_path, monkeypatch):
    fail_at = [n for n, c in enumerate(fsync_callers, 1) if c == "atomic_save"][2]
    monkeypatch.setattr(os, "fsync", FullDisk(fail_at))
    with pytest.raises(OSError):
        run_experiment(tiny_run_config(), tmp_path / "run")
    assert not [p for p in (tmp_path / "run").rglob("*.tmp")]


def test_full_disk_while_writing_text_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text('{"kept": true}', path)
    monkeypatch.setattr(os, "fsync", FullDisk(1))
    with pytest.raises(OSError):
        atomic_write_text('{"kept": false}', path)
    assert json.loads(path.read_text()) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_full_disk_while_writing_text_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text('{"kept": true}', path)
    monkeypatch.setattr(os, "fsync", FullDisk(1))
    with pytest.raises(OSError):
        atomic_write_text('{"kept": false}', path)
    assert json.loads(path.read_text()) == {"kept": True}


# ---- damaged checkpoints met by --resume -------------------------------------------------------------------------

CLI_CONFIG = {"task": "copy", "task_options": {"size": 80, "length": 4},
              "model": {"kind": "gru", "embedding": 8, "hidden": 16},
              "train": {"steps": 20, "batch_size": 16, "checkpoint_every": 5, "eval_every": 0, "log_every": 5},
              "test_limit": 10, "diagnostics_limit": 0}


@pytest.fixture(scope="module")
def finished_cli_run(tmp_path_factory):
    """A finished `unforced train` run (checkpoints at steps 15 and 20), built once."""
    directory = tmp_path_factory.mktemp("cli")
    config = directory / "tiny.yaml"
    config.write_text(yaml.safe_dump(CLI_CONFIG))
    out = directory / "run"
    old = sys.argv
    sys.argv = ["unforced", "train", "--task", "copy", "--strategy", "teacher_forcing", "--config", str(config),
                "--out", str(out), "--json"]
    try:
        main()
    except SystemExit as exit_:
        assert not exit_.code
    finally:
        sys.argv = old
    return config, out


def train_args(config: Path, out: Path) -> list[str]:
    return ["train", "--task", "copy", "--strategy", "teacher_forcing", "--config", str(config), "--out", str(out),
            "--json", "--resume"]


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_from_a_truncated_checkpoint_exits_2_naming_it_and_previous_then_recovers(finished_cli_run,
                                                                                          tmp_path, capsys,
                                                                                          monkeypatch):
    config, finished = finished_cli_run
    # The code moved on since the run began (a new commit): the refused resume still changes no byte.
    monkeypatch.setattr("unforced.experiment.source_commit", lambda: "f" * 40)
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    last, previous = out / "checkpoints" / "last.pt", out / "checkpoints" / "previous.pt"
    whole = read_checkpoint_file(last)
    last.write_bytes(last.read_bytes()[: last.stat().st_size * 3 // 4])
    before = files_of(out)
    code, stdout, err = call(train_args(config, out), capsys)
    assert code == 2 and stdout == ""
    assert err.strip().count("\n") == 0, err
    assert str(last) in err and str(previous) in err and "truncated or altered" in err
    assert files_of(out) == before  # the damaged file, previous.pt, results, metrics: every byte as it was
    # The way out the message points to: continue from previous.pt; the replay reaches the same weights.
    shutil.copy(previous, last)
    code, stdout, err = call(train_args(config, out), capsys)
    assert code == 0, err
    again = read_checkpoint_file(last)
    assert again["step"] == whole["step"] == 20
    assert all(torch.equal(whole["model"][key], again["model"][key]) for key in whole["model"])
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]


@pytest.mark.parametrize("size", [0, 10])
def test_a_checkpoint_cut_inside_its_header_names_previous(size, finished_cli_run, tmp_path, capsys):
    config, finished = finished_cli_run
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:size])
    code, _, err = call(train_args(config, out), capsys)
    assert code == 2 and str(last) in err
    assert "previous.pt" in err


class Crash(Exception):
    pass


def crashed_before_the_first_checkpoint(out: Path) -> RunConfig:
    """A one-strategy run into `out` that crashes at step 3, before its first checkpoint; returns its config."""

    def crash_at_step_3(tag, record):
        if record.get("step") == 3:
            raise Crash

    config = tiny_run_config()
    config.train = {**config.train, "log_every": 1}
    config.strategies = ["teacher_forcing"]
    with pytest.raises(Crash):
        run_experiment(config, out, progress=crash_at_step_3)
    return config


def test_killed_before_the_first_checkpoint_resume_starts_from_scratch(reference_run, tmp_path):
    """`_claim` accepts --resume on a directory with config.yaml but no checkpoint; the run starts over."""
    config = crashed_before_the_first_checkpoint(tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").exists() and not list((tmp_path / "run").rglob("*.pt"))
    run_experiment(config, tmp_path / "run", resume=True)
    reference = run_experiment(config, tmp_path / "whole")
    resumed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert figures(resumed) == figures(reference)
    whole, again = final_weights(tmp_path / "whole"), final_weights(tmp_path / "run")
    assert all(torch.equal(whole[name][key], again[name][key]) for name in whole for key in whole[name])


def test_killed_before_the_first_checkpoint_metrics_are_written_once(tmp_path):
    config = crashed_before_the_first_checkpoint(tmp_path / "run")
    run_experiment(config, tmp_path / "run", resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))


# ---- data files: huge lines, NUL bytes, mixed encodings -----------------------------------------------------------

GOOD_LINES = [f"s{i} a b\tt{i} a b" for i in range(6)]


def test_a_2mb_line_is_read_whole_and_a_later_bad_line_still_named(tmp_path):
    """A 2 MB line is either refused naming file:line or read whole; never another error, never a wrong line."""
    huge = "a " * 1_000_000 + "\tb"
    path = tmp_path / "huge.tsv"
    path.write_text("\n".join(GOOD_LINES[:2] + [huge] + GOOD_LINES[2:]) + "\n", encoding="utf-8")
    try:
        pairs, _ = read_pairs(path)
    except UnforcedError as error:
        assert f"{path}:3:" in str(error)
    else:
        assert len(pairs) == 7 and len(pairs[2][0].split()) == 1_000_000
    path.write_text("\n".join(GOOD_LINES[:2] + [huge] + GOOD_LINES[2:] + ["one field"]) + "\n", encoding="utf-8")
    with pytest.raises(UnforcedError, match=rf"{path}:(3|8):"):
        read_pairs(path)
    jsonl = tmp_path / "huge.jsonl"
    jsonl.write_text(json.dumps({"source": "a", "target": "b"}) + "\n" + '{"source": "' + "x" * 2_000_000 + "\n")
    with pytest.raises(UnforcedError, match=rf"{jsonl}:2: "):
        read_pairs(jsonl)


def test_a_2mb_line_is_refused_naming_file_and_line(tmp_path):
    path = tmp_path / "huge.tsv"
    path.write_text("\n".join(GOOD_LINES[:2] + ["a " * 1_000_000 + "\tb"] + GOOD_LINES[2:]) + "\n")
    with pytest.raises(UnforcedError, match=rf"{path}:3:"):
        read_pairs(path)


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_latin1_bytes_among_utf8_lines_name_the_line(suffix, tmp_path):
    lines = [line.encode() for line in GOOD_LINES] if suffix == ".tsv" else \
        [json.dumps({"source": s, "target": t}, ensure_ascii=False).encode()
         for s, t in (line.split("\t") for line in GOOD_LINES)]
    latin = "café crème\tcoffee" if suffix == ".tsv" else json.dumps({"source": "café", "target": "x"},
                                                                     ensure_ascii=False)
    lines.insert(3, latin.encode("latin-1"))
    lines.insert(1, "naïve\tnaive".encode() if suffix == ".tsv" else
                 json.dumps({"source": "naïve", "target": "x"}, ensure_ascii=False).encode())  # good UTF-8 first
    path = tmp_path / ("mixed" + suffix)
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(UnforcedError) as error:
        get_task(str(path))
    assert f"{path}:5: not valid UTF-8" in str(error.value)


def test_nul_bytes_in_jsonl_are_refused_naming_the_line(tmp_path):
    path = tmp_path / "nul.jsonl"
    path.write_bytes(b'{"source": "a", "target": "b"}\n{"source": "a\x00b", "target": "c"}\n')
    with pytest.raises(UnforcedError, match=rf"{path}:2:"):
        read_pairs(path)


@pytest.mark.parametrize("content", [
    "\n".join(GOOD_LINES[:1] + ["a\x00b\tc"] + GOOD_LINES[1:]).encode(),
    "\n".join(GOOD_LINES).encode("utf-16-le"),
], ids=["nul-in-a-field", "utf-16-without-bom"])
def test_nul_bytes_in_tsv_are_refused_naming_the_line(content, tmp_path):
    path = tmp_path / "nul.tsv"
    path.write_bytes(content)
    with pytest.raises(UnforcedError, match=rf"{path}:[12]:"):
        read_pairs(path)


@given(content=st.lists(st.sampled_from([b"a\tb", b"\x00", b"\xe9t\xe9\tsummer", b"caf\xc3\xa9\tx", b"\r",
                                          b"\t", b"{\"source\": \"a\", \"target\": \"b\"}", b"\xff\xfe",
                                          b"x" * 5000]), max_size=12),
       suffix=st.sampled_from([".tsv", ".jsonl"]))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_mixed_encodings_and_nul_bytes_never_give_another_error(content, suffix, tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / ("data" + suffix)
    path.write_bytes(b"\n".join(content))
    try:
        task = get_task(str(path))
    except UnforcedError as error:
        assert str(path) in str(error)
    else:
        assert task.train and task.valid and task.test


def test_dataclass_fields_fuzzed_are_the_real_ones():
    """The fuzzing tables name real fields: a renamed field must not leave its fuzzing behind unnoticed."""
    assert set(TRAIN) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(MODEL) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(TOP) == {f.name for f in dataclasses.fields(RunConfig)}
    from unforced.strategies import STRATEGIES as REGISTRY

    for name, table in STRATEGIES.items():
        assert set(table) == {f.name for f in dataclasses.fields(REGISTRY[name][0])}, name
