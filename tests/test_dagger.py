"""DAgger: trains on a tiny task, resumes identically, and names the problem on a task without an oracle."""

import pytest
import torch
from strategy_helper import tiny, train

from unforced.errors import UnforcedError
from unforced.strategies import make_strategy
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.tasks import get_task

OPTIONS = {"schedule": "linear", "schedule_params": {"steps": 10, "end": 0.3}, "buffer": 32, "replay": 4}


@pytest.mark.parametrize("name", ["reverse", "noisy-copy"])
def test_dagger_lowers_the_loss(tmp_path, name):
    task = get_task(name, size=100, length=5)
    model, trainer = train(tmp_path, task, make_strategy("dagger", OPTIONS), 12)
    batch = trainer.batch_at(0)
    before = float(TeacherForcing().loss(model.eval(), batch, 0).loss)
    trainer.fit()
    after = float(TeacherForcing().loss(model.eval(), batch, 0).loss)
    assert after < before - 0.2


def test_resume_is_identical(tmp_path):
    task = get_task("noisy-copy", size=100, length=5)
    whole, trainer = train(tmp_path / "a", task, make_strategy("dagger", OPTIONS), 6)
    trainer.fit()
    first, trainer = train(tmp_path / "b", task, make_strategy("dagger", OPTIONS), 3)
    trainer.fit()
    resumed, trainer = train(tmp_path / "b", task, make_strategy("dagger", OPTIONS), 6)
    assert trainer.resume()
    trainer.fit()
    for key, value in whole.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key]), key


def test_a_task_without_an_oracle_is_refused_with_oracle_task():
    task = get_task("toy-translation", size=40)
    with pytest.raises(UnforcedError, match="has none"):
        make_strategy("dagger", {"oracle": "task"}).bind(task)
    strategy = make_strategy("dagger").bind(task)  # auto: the edit-distance oracle over its references
    assert strategy.oracle is not None


def test_unbound_dagger_names_the_problem():
    task = get_task("reverse", size=40)
    model = tiny(task)
    with pytest.raises(UnforcedError, match="bind"):
        make_strategy("dagger").loss(model, task.collate(task.train[:4]), 0)


def test_bad_options_are_named():
    with pytest.raises(UnforcedError, match="dagger.oracle"):
        make_strategy("dagger", {"oracle": "x"})
    with pytest.raises(UnforcedError, match="dagger.replay"):
        make_strategy("dagger", {"replay": 2})
    with pytest.raises(UnforcedError, match="dagger.roll_in"):
        make_strategy("dagger", {"roll_in": "beam"})
    for bad in (0, -1.0):
        with pytest.raises(UnforcedError, match="dagger.temperature"):
            make_strategy("dagger", {"roll_in": "sample", "temperature": bad})


def test_sampled_roll_in_leaves_the_greedy_path():
    """At beta 0 the greedy roll-in feeds the model's argmax; the sampled one draws from its softmax, so on an
    untrained model (near-uniform next-token distributions) it feeds other tokens on most steps, reproducibly
    from its seed."""
    task = get_task("reverse", size=60, length=6, min_length=6)
    model = tiny(task)
    batch = task.collate(task.train[:16])
    options = {"schedule": "constant", "schedule_params": {"ratio": 0.0}}
    seen = {}
    for roll_in in ("greedy", "sample"):
        for seed in (0, 0, 1):
            strategy = make_strategy("dagger", {**options, "roll_in": roll_in}, seed=seed).bind(task)
            captured = {}

            def labels(batch, visited, strategy=strategy, captured=captured):
                captured["visited"] = visited.clone()
                return type(strategy).labels(strategy, batch, visited)

            strategy.labels = labels
            strategy.loss(model, batch, 0)
            seen.setdefault(roll_in, []).append(captured["visited"])
    greedy, sample = seen["greedy"], seen["sample"]
    assert torch.equal(greedy[0], greedy[2])  # greedy: no coin decides a token
    assert torch.equal(sample[0], sample[1]) and not torch.equal(sample[0], sample[2])  # seeded draws
    width = min(greedy[0].shape[1], sample[0].shape[1]) - 1
    differ = (greedy[0][:, :width] != sample[0][:, :width]).float().mean()
    assert differ > 0.5


def test_transformer_step_runs():
    task = get_task("reverse", size=40, length=5)
    model = tiny(task, "transformer")
    out = make_strategy("dagger").bind(task).loss(model, task.collate(task.train[:8]), 0)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_run_and_report_take_dagger_and_professor_forcing(tmp_path, capsys):
    import json

    import yaml
    from cli_helper import call

    from unforced.report import build_report

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"task_options": {"size": 120, "length": 4},
                                      "model": {"kind": "gru", "embedding": 8, "hidden": 16},
                                      "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "eval_limit": 8},
                                      "test_limit": 12, "diagnostics_limit": 0}))
    out = tmp_path / "run"
    code, stdout, err = call(["run", "--task", "reverse", "--quick", "--config", str(config), "--strategies",
                              "teacher_forcing,dagger,professor_forcing", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    strategies = json.loads(stdout)["strategies"]
    assert set(strategies) == {"teacher_forcing", "dagger", "professor_forcing"}
    for figures in strategies.values():
        assert 0.0 <= figures["metric"]["fr"] <= 1.0
    page = build_report(out).read_text(encoding="utf-8")
    assert "dagger" in page and "professor_forcing" in page
