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


def test_transformer_step_runs():
    task = get_task("reverse", size=40, length=5)
    model = tiny(task, "transformer")
    out = make_strategy("dagger").bind(task).loss(model, task.collate(task.train[:8]), 0)
    out.loss.backward()
    assert torch.isfinite(out.loss)
