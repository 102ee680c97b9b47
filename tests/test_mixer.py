"""MIXER: a gold prefix then the model's own samples, cross-entropy on the prefix, REINFORCE on the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reinforce import toy_model, toy_task  # the toy translator: six pairs, a tiny GRU

from unforced.errors import UnforcedError
from unforced.strategies import make_strategy
from unforced.strategies.base import Stateful, TaskBound, WarmStarted
from unforced.strategies.mixer import Mixer, MixerConfig
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.vocab import BOS, PAD

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: one torch thread


def mixer(task, seed: int = 0, **options) -> Mixer:
    return Mixer(MixerConfig(**options), seed=seed).bind(task)


@pytest.mark.parametrize(("options", "field"), [
    ({"delta": -1}, "delta"), ({"delta": 1.5}, "delta"), ({"delta": "two"}, "delta"),
    ({"delta_growth": 0}, "delta_growth"), ({"samples": 0}, "samples"), ({"baseline": "median"}, "baseline"),
    ({"baseline": "mean", "samples": 1}, "samples"), ({"reward": "rouge"}, "reward"),
    ({"temperature": 0.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"max_len": 0}, "max_len"),
    ({"entropy_bonus": -0.1}, "entropy_bonus"),
])
def test_config_errors_name_the_field(options, field):
    with pytest.raises(UnforcedError, match=f"mixer.{field}"):
        make_strategy("mixer", options)


def test_capabilities_and_defaults():
    assert MixerConfig().reward is None  # the task's metric, set in bind
    strategy = Mixer()
    assert isinstance(strategy, WarmStarted) and isinstance(strategy, TaskBound) and isinstance(strategy, Stateful)
    with pytest.raises(UnforcedError, match="bind"):
        task = toy_task()
        strategy.loss(toy_model(task), task.collate(task.train), 0)


def test_delta_zero_is_teacher_forcing():
    # Every token is gold: the prefix cross-entropy is the teacher-forced loss and nothing is reinforced.
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    output = mixer(task, delta=0, samples=2).loss(model, batch, 0)
    expected = TeacherForcing().loss(model, batch, 0).loss
    assert abs(float(output.loss.detach()) - float(expected.detach())) < 1e-6
    assert output.logs["sampled_share"] == 0.0 and output.logs["delta"] == 0.0


def test_samples_continue_from_the_gold_prefix_and_the_loss_splits_there():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    seen = []
    original = model.forced

    def forced(memory, inputs, embeddings=None):
        seen.append(inputs)
        return original(memory, inputs, embeddings)

    model.forced = forced
    strategy = mixer(task, delta=2, delta_growth=5, samples=3, entropy_bonus=0.01)
    output = strategy.loss(model, batch, 5)  # delta 2 + 5 // 5 = 3
    assert output.logs["delta"] == 3.0 and strategy.delta(9) == 3 and strategy.delta(10) == 4
    assert len(seen) == 1 and seen[0].grad_fn is None  # one forced pass with gradient, on chosen tokens
    inputs = seen[0]  # (batch * 3, time): <bos>, then the gold prefix, then samples
    lengths = (batch.gold != PAD).sum(1).repeat_interleave(3)
    gold = batch.gold.repeat_interleave(3, 0)
    assert bool((inputs[:, 0] == BOS).all())
    for row in range(inputs.shape[0]):
        prefix = max(int(lengths[row]) - 3, 0)
        assert torch.equal(inputs[row, 1:prefix + 1], gold[row, :prefix])
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    for key in ("prefix_nll", "reward_mean", "baseline_mean", "greedy_reward_mean", "entropy", "sampled_share"):
        assert key in output.logs
    assert 0.0 < output.logs["sampled_share"] < 1.0


def test_bad_reward_skips_the_batch():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    broken = mixer(task, samples=2)
    broken.reward = lambda hypotheses, references: np.full(len(hypotheses), np.nan)
    output = broken.loss(model, batch, 0)
    assert output.logs["skipped_batch"] == 1.0 and broken.skipped_batches == 1
    output.loss.backward()
    assert all(p.grad is None for p in model.parameters())


def test_same_seed_same_loss_and_state_round_trip():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    first, second = mixer(task, seed=3), mixer(task, seed=3)
    assert torch.equal(first.loss(model, batch, 0).loss, second.loss(model, batch, 0).loss)
    saved = first.state_dict()
    after = first.loss(model, batch, 1).loss
    other = mixer(task, seed=99)
    other.load_state_dict(saved)
    assert torch.equal(other.loss(model, batch, 1).loss, after)


def test_mixer_trains_the_model_towards_the_gold():
    # From a short teacher-forced start, MIXER steps (cross-entropy on the prefix, reward on the last tokens)
    # lower the teacher-forced loss of the toy pairs: the prefix term keeps it learning the gold.
    task = toy_task()
    model, batch = toy_model(task, seed=1), task.collate(task.train)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    teacher = TeacherForcing()
    for step in range(10):
        output = teacher.loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    before = float(teacher.loss(model, batch, 0).loss.detach())
    strategy = mixer(task, reward="bleu", delta=1, samples=4)
    for step in range(25):
        output = strategy.loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    after = float(teacher.loss(model, batch, 0).loss.detach())
    assert after < before - 0.2, (before, after)
