"""Self-training: options refused by name, a task without unlabelled sources refused naming `labelled`, the
threshold's two ends (nothing kept: teacher forcing; everything kept: the model's own beam output, weighed by
`ratio`), the seeded walk over the unlabelled sources carried through a resume, and `unforced run` end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from cli_helper import call
from strategy_helper import tiny

from unforced.errors import UnforcedError
from unforced.rollout import beam_search
from unforced.strategies import make_strategy, warm_start_source
from unforced.strategies.base import Stateful, TaskBound, WarmStarted, token_nll
from unforced.strategies.self_training import SelfTraining, SelfTrainingConfig
from unforced.strategies.sequence_level import sequence_log_probs
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.tasks import Example, get_task
from unforced.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: TEST_THREADS torch threads


def reverse_task(labelled: float = 0.25):
    return get_task("reverse", size=60, length=4, labelled=labelled)


def warm_model(task, steps: int = 30):
    """The tiny GRU after a short teacher-forced start: its beam hypotheses end in <eos>, some of them wrong."""
    model, batch = tiny(task), task.collate(task.train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        output = TeacherForcing().loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    return model


def self_training(task, seed: int = 0, **options) -> SelfTraining:
    return make_strategy("self_training", options, seed=seed).bind(task)


@pytest.mark.parametrize("options, field", [
    ({"ratio": 0.0}, "self_training.ratio"), ({"ratio": -1.0}, "self_training.ratio"),
    ({"ratio": math.nan}, "self_training.ratio"), ({"ratio": math.inf}, "self_training.ratio"),
    ({"unlabelled_batch": 0}, "self_training.unlabelled_batch"), ({"beam": 0}, "self_training.beam"),
    ({"beam": None}, "self_training.beam"), ({"threshold": 0.1}, "self_training.threshold"),
    ({"threshold": math.nan}, "self_training.threshold"), ({"threshold": math.inf}, "self_training.threshold"),
    ({"max_len": 0}, "self_training.max_len"), ({"max_len_factor": 0.0}, "self_training.max_len_factor"),
    ({"beams": 2}, "beams")])
def test_bad_options_are_refused_by_name(options, field):
    with pytest.raises(UnforcedError, match=field.replace(".", r"\.")):
        make_strategy("self_training", options)


def test_the_ends_of_the_threshold_are_accepted_and_it_starts_warm():
    assert make_strategy("self_training", {"threshold": 0.0}).config.threshold == 0.0
    assert make_strategy("self_training", {"threshold": -math.inf}).config.threshold == -math.inf
    strategy = make_strategy("self_training")
    assert isinstance(strategy, TaskBound) and isinstance(strategy, Stateful) and isinstance(strategy, WarmStarted)
    assert warm_start_source("self_training") == "teacher_forcing"


def test_a_task_without_unlabelled_sources_is_refused_naming_the_labelled_option():
    task = reverse_task(labelled=1.0)
    assert task.unlabelled == []
    with pytest.raises(UnforcedError, match="labelled") as caught:
        make_strategy("self_training").bind(task)
    assert "'reverse'" in str(caught.value)
    with pytest.raises(UnforcedError, match="bind"):
        make_strategy("self_training").loss(tiny(task), task.collate(task.train[:4]), 0)


def test_threshold_zero_keeps_nothing_and_the_step_is_the_labelled_nll():
    task = reverse_task()
    model, batch = warm_model(task), task.collate(task.train[:8])
    strategy = self_training(task, threshold=0.0)
    output = strategy.loss(model, batch, 0)
    expected = TeacherForcing().loss(model, batch, 0).loss  # dropout 0: train and eval mode agree
    assert output.logs["pseudo_kept"] == 0.0 and output.logs["pseudo_rows"] == 0.0
    assert "pseudo_nll" not in output.logs
    assert -3.0 < output.logs["pseudo_confidence"] < 0.0  # there were hypotheses; none is above 0
    assert torch.equal(output.loss, expected)
    assert output.logs["labelled_nll"] == pytest.approx(float(expected.detach()))
    assert strategy.state_dict() == {"epoch": 0, "position": 8}  # the walk moved by the batch's rows
    assert model.training  # put back after the decode


def test_a_permissive_threshold_keeps_every_row_labelled_by_the_models_own_beam():
    task = reverse_task()
    model, batch = warm_model(task), task.collate(task.train[:8])
    strategy = self_training(task, threshold=-math.inf, unlabelled_batch=6, beam=2, ratio=0.5)
    sources = self_training(task).next_sources(6)  # the same seed walks the same sources
    model.eval()
    memory = model.encode(*task.source_codec.encode(sources))
    tokens, scores = beam_search(model, memory, 2, 16, len(sources))
    beam_texts = [task.target_tokenizer.decode(row) for row in tokens.tolist()]
    model.train()

    labels = strategy.pseudo_labels(model, sources, 16)
    assert labels.sources == sources and labels.texts == beam_texts and bool(labels.kept.all())
    pseudo = task.collate([Example(s, t) for s, t in zip(sources, beam_texts, strict=True)])
    with torch.no_grad():  # the confidence is the hypothesis' mean log-probability per token
        logits = model.forced(model.encode(pseudo.source, pseudo.source_mask), pseudo.inputs).logits
        per_token = sequence_log_probs(logits, pseudo.gold, pseudo.gold_mask) / pseudo.gold_mask.sum(1)
    assert torch.allclose(labels.confidence, per_token, atol=1e-5)
    assert torch.allclose(labels.confidence, scores / pseudo.gold_mask.sum(1), atol=1e-5)
    assert len(set(beam_texts)) > 1  # the labels depend on the source

    output = strategy.loss(model, batch, 0)
    labelled = TeacherForcing().loss(model, batch, 0).loss
    pseudo_nll = token_nll(logits, pseudo.gold, pseudo.gold_mask)
    assert output.logs["pseudo_kept"] == 1.0 and output.logs["pseudo_rows"] == 6.0
    assert output.logs["pseudo_nll"] == pytest.approx(float(pseudo_nll), abs=1e-5)
    assert float(output.loss.detach()) == pytest.approx(float(labelled.detach() + 0.5 * pseudo_nll), abs=1e-5)
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_source_too_long_or_a_hypothesis_cut_by_the_budget_is_not_kept():
    task = reverse_task()
    model = warm_model(task)
    strategy = self_training(task, threshold=-math.inf)
    long = " ".join(["a"] * 40)  # the tiny model takes 32 source positions
    labels = strategy.pseudo_labels(model, [task.unlabelled[0], long], 16)
    assert labels.kept.tolist() == [True, False] and labels.confidence[1] == -math.inf
    cut = strategy.pseudo_labels(model, task.unlabelled[:4], 1)  # one step: a symbol, never its <eos>
    assert all(len(text.split()) == 1 for text in cut.texts) and not bool(cut.kept.any())


def test_the_walk_covers_each_epoch_once_and_a_resumed_strategy_continues_it():
    task = reverse_task()
    count = len(task.unlabelled)
    whole = self_training(task, seed=3)
    draws = [whole.next_sources(7) for _ in range(2 * count // 7 + 1)]
    flat = [s for draw in draws for s in draw]
    assert sorted(flat[:count]) == sorted(task.unlabelled)  # the first epoch visits every source once
    assert flat[count:2 * count] != flat[:count]  # the next one is reshuffled
    assert sorted(flat[count:2 * count]) == sorted(task.unlabelled)
    assert self_training(task, seed=4).next_sources(count) != flat[:count]  # the seed draws the walk

    stopped = self_training(task, seed=3)
    for _ in range(6):
        stopped.next_sources(7)
    resumed = SelfTraining(SelfTrainingConfig(), seed=3).bind(task)
    resumed.load_state_dict(json.loads(json.dumps(stopped.state_dict())))  # plain numbers: any checkpoint holds them
    assert [resumed.next_sources(7) for _ in range(len(draws) - 6)] == draws[6:]


def test_a_resumed_run_reaches_the_weights_of_an_uninterrupted_one(tmp_path):
    task = reverse_task()

    def trainer(folder, steps):
        config = TrainConfig(steps=steps, batch_size=4, checkpoint_every=3, eval_every=0, log_every=1, seed=0,
                             learning_rate=3e-3, warmup=0)
        strategy = self_training(task, threshold=-math.inf, unlabelled_batch=5)
        return Trainer(warm_model(task), task, strategy, config, tmp_path / folder / "checkpoints",
                       tmp_path / folder / "metrics.jsonl", tag="self_training",
                       identity={"strategy": "self_training"})

    whole = trainer("whole", 6)
    whole.fit()
    trainer("stopped", 3).fit()
    resumed = trainer("stopped", 6)
    assert resumed.resume() and resumed.step == 3 and resumed.strategy.state_dict() == {"epoch": 0, "position": 15}
    resumed.fit()
    assert resumed.strategy.state_dict() == whole.strategy.state_dict() == {"epoch": 0, "position": 30}
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_unforced_run_self_trains_from_the_teacher_forced_model(tmp_path, capsys):
    settings = {"task_options": {"size": 120, "length": 4, "labelled": 0.25},
                "model": {"kind": "gru", "embedding": 8, "hidden": 16},
                "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "eval_limit": 8, "log_every": 2},
                "strategy_options": {"self_training": {"threshold": -1e9, "unlabelled_batch": 5}},
                "test_limit": 12, "diagnostics_limit": 0}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "run"
    code, stdout, err = call(["run", "--task", "reverse", "--quick", "--config", str(config), "--strategies",
                              "teacher_forcing,self_training", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert json.loads(stdout)["strategies"].keys() == results["strategies"].keys() == {"teacher_forcing",
                                                                                       "self_training"}
    assert results["task_settings"]["labelled_share"] == 0.25
    assert 0.0 <= results["strategies"]["self_training"]["metric"]["fr"] <= 1.0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [r for r in steps if r.get("strategy") == "self_training" and "loss" in r]
    assert steps and all(r["pseudo_kept"] == 1.0 and r["pseudo_rows"] == 5.0 for r in steps)
    assert all(r["loss"] == pytest.approx(r["labelled_nll"] + r["pseudo_nll"], rel=1e-5) for r in steps)

    settings["task_options"].pop("labelled")  # every train example labelled: nothing to self-train on
    config.write_text(yaml.safe_dump(settings))
    code, _, err = call(["run", "--task", "reverse", "--quick", "--config", str(config), "--strategies",
                         "self_training", "--out", str(tmp_path / "refused"), "--json"], capsys)
    assert code == 2 and "labelled" in err and "unlabelled" in err
    assert not (tmp_path / "refused" / "metrics.jsonl").exists()  # refused before teacher forcing trained
