"""Professor forcing: trains on the RNN and the Transformer, logs its discriminator, resumes identically."""

import pytest
import torch

from unforced.errors import UnforcedError
from unforced.models import ModelConfig, build_model
from unforced.strategies import make_strategy
from unforced.strategies.base import OwnOptimizers, Stateful
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer


def tiny(task, kind="gru"):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, source_vocab=task.source_tokenizer.vocab_size,
                                   target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32,
                                   heads=2, dropout=0.0, max_source_len=32, max_target_len=16))


def train(tmp_path, task, strategy, steps, kind="gru"):
    model = tiny(task, kind)
    config = TrainConfig(steps=steps, batch_size=16, learning_rate=1e-2, warmup=0, eval_every=0,
                         checkpoint_every=3, log_every=1, seed=0)
    trainer = Trainer(model, task, strategy.bind(task), config, tmp_path / "checkpoints", tmp_path / "metrics.jsonl")
    return model, trainer


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
