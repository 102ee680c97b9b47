"""Professor forcing: trains on the RNN and the Transformer, logs its discriminator, resumes identically."""

import pytest
import torch
from strategy_helper import tiny, train

from unforced.errors import UnforcedError
from unforced.strategies import make_strategy
from unforced.strategies.base import OwnOptimizers, Stateful
from unforced.tasks import get_task


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_trains_without_divergence(tmp_path, kind):
    task = get_task("reverse", size=100, length=5)
    model, trainer = train(tmp_path, task, make_strategy("professor_forcing", {"min_accuracy": 0.0}), 8, kind)
    strategy = trainer.strategy
    batch = trainer.batch_at(0).to("cpu")
    out = strategy.loss(model, batch, 0)
    assert {"discriminator_accuracy", "generator_on", "nll"} <= set(out.logs)
    assert isinstance(strategy, OwnOptimizers) and isinstance(strategy, Stateful)
    trainer.fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_generator_term_off_outside_the_bounds():
    task = get_task("reverse", size=40, length=5)
    strategy = make_strategy("professor_forcing", {"min_accuracy": 1.0, "max_accuracy": 1.0})
    out = strategy.loss(tiny(task), task.collate(task.train[:8]), 0)
    assert out.logs["generator_on"] == 0.0 and out.logs["generator"] == 0.0


def test_resume_is_identical(tmp_path):
    task = get_task("reverse", size=100, length=5)
    options = {"min_accuracy": 0.0}
    whole, trainer = train(tmp_path / "a", task, make_strategy("professor_forcing", options), 6)
    trainer.fit()
    _, trainer = train(tmp_path / "b", task, make_strategy("professor_forcing", options), 3)
    trainer.fit()
    resumed, trainer = train(tmp_path / "b", task, make_strategy("professor_forcing", options), 6)
    assert trainer.resume()
    trainer.fit()
    for key, value in whole.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key]), key


def test_bad_bounds_are_named():
    with pytest.raises(UnforcedError, match="min_accuracy"):
        make_strategy("professor_forcing", {"min_accuracy": 0.9, "max_accuracy": 0.5})
