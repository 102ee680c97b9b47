"""Adding a strategy is adding a class and a registry line: toy strategies registered at runtime run through
`unforced run` and `run_experiment`, and the Trainer and the experiment find what they can do by their declared
capabilities (strategies/base.py), never by their names."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from cli_helper import call
from conftest import TEST_THREADS

from unforced.errors import UnforcedError
from unforced.experiment import RunConfig, run_experiment
from unforced.models import ModelConfig, build_model
from unforced.runfiles import read_checkpoint_file, read_metrics
from unforced.strategies import STRATEGIES, warm_start_source
from unforced.strategies.base import (
    BatchFilter,
    Observer,
    OwnOptimizers,
    Stateful,
    StepOutput,
    TaskBound,
    needs_warm_start,
    token_nll,
)
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer

torch.set_num_threads(TEST_THREADS)


@dataclass
class ToyConfig:
    """A toy strategy's options. weight: scales the teacher-forced loss."""

    weight: float = 1.0


class ToyPlain:
    """Teacher forcing and nothing else: declares no capability."""

    name = "toy_plain"

    def __init__(self, config: ToyConfig | None = None, seed: int = 0):
        self.config = config or ToyConfig()

    def loss(self, model, batch, step: int) -> StepOutput:
        memory = model.encode(batch.source, batch.source_mask)
        logits = model.forced(memory, batch.inputs).logits  # (batch, time, vocab)
        return StepOutput(self.config.weight * token_nll(logits, batch.gold, batch.gold_mask))


class ToyObserver(ToyPlain):
    """Keeps a count of its steps (Stateful), watches every evaluation (Observer), binds to the task (TaskBound)."""

    name = "toy_observer"
    seen: list = []  # every instance's observations, in order (the test reads them)

    def __init__(self, config: ToyConfig | None = None, seed: int = 0):
        super().__init__(config, seed)
        self.steps_taken = 0
        self.task_name = None

    def bind(self, task) -> ToyObserver:
        self.task_name = task.name
        return self

    def state_dict(self) -> dict:
        return {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        self.steps_taken = state["steps_taken"]

    def observe(self, figures: dict) -> None:
        ToyObserver.seen.append((self.task_name, self.steps_taken, figures["tf_nll"]))

    def loss(self, model, batch, step: int) -> StepOutput:
        self.steps_taken += 1
        return super().loss(model, batch, step)


class ToyWarm(ToyPlain):
    """Fine-tunes a trained model: named alone, it starts from the registered strategy it names."""

    name = "toy_warm"
    warm_start = True
    warm_start_from = "toy_observer"


class ToyFilter(ToyPlain):
    """Trains on the rows with an even index only (a BatchFilter)."""

    name = "toy_filter"
    rows_seen: list = []

    def select(self, batch, step: int):
        chosen = batch.select(torch.arange(0, len(batch), 2))
        ToyFilter.rows_seen.append(len(chosen))
        return chosen

    def loss(self, model, batch, step: int) -> StepOutput:
        assert len(batch) == ToyFilter.rows_seen[-1]
        return super().loss(model, batch, step)


class ToyOptimizer(ToyPlain):
    """Steps an optimizer of its own (a scalar it moves towards the loss), which the Trainer checkpoints."""

    name = "toy_optimizer"

    def __init__(self, config: ToyConfig | None = None, seed: int = 0):
        super().__init__(config, seed)
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.optimizer = torch.optim.Adam([self.scale], lr=0.1)

    def extra_optimizers(self) -> dict:
        return {"scale": self.optimizer}

    def loss(self, model, batch, step: int) -> StepOutput:
        output = super().loss(model, batch, step)
        self.optimizer.zero_grad()
        ((self.scale - output.loss.detach()) ** 2).backward()
        self.optimizer.step()
        return output


TOYS = {toy.name: (ToyConfig, toy) for toy in (ToyPlain, ToyObserver, ToyWarm, ToyFilter, ToyOptimizer)}


@pytest.fixture
def registered(monkeypatch):
    """The toy strategies in the registry for one test: one line each, as a new strategy file would add."""
    for name, entry in TOYS.items():
        monkeypatch.setitem(STRATEGIES, name, entry)
    ToyObserver.seen.clear()
    ToyFilter.rows_seen.clear()
    return TOYS


def tiny_config(strategies: list[str], **train) -> RunConfig:
    return RunConfig(task="copy", task_options={"size": 60, "length": 4}, strategies=strategies, preset="quick",
                     model={"kind": "gru", "embedding": 16, "hidden": 24, "dropout": 0.0},
                     train={"steps": 4, "batch_size": 8, "eval_every": 2, "eval_limit": 8, "checkpoint_every": 2,
                            "log_every": 2, **train},
                     test_limit=8, diagnostics_limit=0)


def test_capabilities_are_declared_not_named():
    plain, observer, warm = ToyPlain(), ToyObserver(), ToyWarm()
    assert not isinstance(plain, Stateful | Observer | TaskBound | BatchFilter | OwnOptimizers)
    assert isinstance(observer, Stateful) and isinstance(observer, Observer) and isinstance(observer, TaskBound)
    assert isinstance(ToyFilter(), BatchFilter) and isinstance(ToyOptimizer(), OwnOptimizers)
    assert needs_warm_start(ToyWarm) and needs_warm_start(warm) and not needs_warm_start(ToyObserver)


def test_warm_start_source_comes_from_the_class(registered):
    assert warm_start_source("toy_warm") == "toy_observer"
    assert warm_start_source("toy_plain") is None
    with pytest.raises(UnforcedError, match="unknown strategy 'nowhere'"):
        warm_start_source("nowhere")


def test_a_warm_start_must_start_from_a_strategy_that_trains_from_scratch(registered, monkeypatch):
    class Loop(ToyWarm):
        warm_start_from = "toy_loop"

    monkeypatch.setitem(STRATEGIES, "toy_loop", (ToyConfig, Loop))
    with pytest.raises(UnforcedError, match="starts from 'toy_loop'"):
        warm_start_source("toy_loop")


def test_run_experiment_with_registered_toys(registered, tmp_path):
    out = tmp_path / "run"
    results = run_experiment(tiny_config(["toy_observer", "toy_warm:3", "toy_plain"]), out)
    assert list(results["strategies"]) == ["toy_observer", "toy_warm:3", "toy_plain"]
    entries = results["strategies"]
    assert entries["toy_warm:3"]["warm_start_from"] == "toy_observer"
    assert entries["toy_observer"]["warm_start_from"] is None and entries["toy_plain"]["warm_start_from"] is None
    # The warm start reuses the toy_observer entry's model and counts its steps and seconds.
    assert entries["toy_warm:3"]["train_seconds"] >= entries["toy_observer"]["train_seconds"]
    steps = [m["global_step"] for m in read_metrics(out / "metrics.jsonl") if m["strategy"] == "toy_warm:3"]
    assert steps and min(steps) > 4
    # Bound to the task, observed every evaluation (steps 2 and 4), its state checkpointed.
    assert [(name, taken) for name, taken, _ in ToyObserver.seen] == [("copy", 2), ("copy", 4)]
    observed = [m["eval"]["tf_nll"] for m in read_metrics(out / "metrics.jsonl")
                if m["strategy"] == "toy_observer" and "eval" in m]
    assert [nll for _, _, nll in ToyObserver.seen] == observed
    checkpoint = read_checkpoint_file(out / "checkpoints" / "toy_observer" / "last.pt")
    assert checkpoint["strategy_state"] == {"steps_taken": 4}
    assert read_checkpoint_file(out / "checkpoints" / "toy_plain" / "last.pt")["strategy_state"] is None
    assert json.loads((out / "results.json").read_text())["strategies"]["toy_warm:3"]["warm_start_from"] == \
        "toy_observer"


def test_a_warm_start_named_alone_trains_its_source_first(registered, tmp_path):
    results = run_experiment(tiny_config(["toy_warm:2"]), tmp_path / "run")
    assert results["strategies"]["toy_warm:2"]["warm_start_from"] == "toy_observer"
    assert (tmp_path / "run" / "checkpoints" / "toy_observer" / "last.pt").exists()
    assert [taken for _, taken, _ in ToyObserver.seen] == [2, 4]


def test_unforced_run_with_registered_toys_writes_the_report(registered, tmp_path, capsys):
    import yaml

    config = tmp_path / "config.yaml"
    data = tiny_config(["toy_plain"]).__dict__
    config.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "strategies"}))
    out = tmp_path / "run"
    code, stdout, stderr = call(["run", "--config", str(config), "--strategies", "toy_plain,toy_warm:2",
                                 "--device", "cpu", "--out", str(out), "--json"], capsys)
    assert code == 0, stderr
    results = json.loads(stdout)
    assert results["strategies"]["toy_warm:2"]["warm_start_from"] == "toy_observer"
    assert results["signature"]["device"] == "cpu" and results["signature"]["precision"] == "fp32"
    assert (out / "report.html").exists() and (out / "figures" / "scores.png").exists()


def test_trainer_filters_batches_and_checkpoints_own_optimizers(registered, tmp_path):
    task = get_task("copy", size=40, length=4, seed=0)
    config = ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=8, hidden=8, dropout=0.0,
                         max_source_len=8, max_target_len=8)
    train = TrainConfig(steps=4, batch_size=8, eval_every=0, checkpoint_every=2, log_every=2, seed=0,
                        device="cpu")

    def trainer(strategy, folder):
        torch.manual_seed(0)
        return Trainer(build_model(config), task, strategy, train, tmp_path / folder, tmp_path / folder / "m.jsonl")

    trainer(ToyFilter(), "filter").fit()
    assert ToyFilter.rows_seen == [4, 4, 4, 4]  # every other row of batches of 8
    first = trainer(ToyOptimizer(), "optimizer")
    first.fit()
    saved = read_checkpoint_file(first.checkpoint_path)["extra_optimizers"]["scale"]
    assert saved["state"][0]["step"] == 4
    again = ToyOptimizer()
    resumed = trainer(again, "optimizer")
    assert resumed.resume()
    assert again.optimizer.state_dict()["state"][0]["step"] == 4
    assert torch.equal(again.optimizer.state_dict()["state"][0]["exp_avg"],
                       first.strategy.optimizer.state_dict()["state"][0]["exp_avg"])


def test_no_strategy_is_known_by_name_where_runs_are_made_and_reported():
    """experiment.py, runs.py and report/ reach strategies through the registry and the capabilities only."""
    import re
    from pathlib import Path

    from unforced.strategies import STRATEGIES

    source = Path(__file__).resolve().parents[1] / "src" / "unforced"
    files = [source / "experiment.py", source / "runs.py", *sorted((source / "report").glob("*.py"))]
    pattern = re.compile("|".join(sorted(STRATEGIES, key=len, reverse=True)))
    found = [f"{path.name}:{number}: {line.strip()}" for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert len(files) >= 4 and not found, found
