"""Minimum-risk (minimum-WER) training: the N-best list, the loss by hand, the config's errors, its state, and that
it lowers the risk it is trained on."""

from __future__ import annotations

import pytest
import torch
from test_reinforce import greedy_reward, toy_model, toy_task, warm_up

from unforced.errors import UnforcedError
from unforced.models import repeat_rows
from unforced.rewards import get_reward
from unforced.rollout import beam_nbest, beam_search
from unforced.strategies import make_strategy
from unforced.strategies.base import TaskBound, WarmStarted
from unforced.strategies.minimum_risk import MinimumRisk, MinimumRiskConfig
from unforced.strategies.sequence_level import sequence_log_probs, shifted
from unforced.vocab import EOS, PAD

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: one torch thread


def test_the_nbest_list_is_ranked_and_its_head_is_the_beam_search_result():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    model.eval()
    with torch.no_grad():
        memory = model.encode(batch.source, batch.source_mask)
        best, best_score = beam_search(model, memory, 4, 10, len(batch))
        sequences, scores = beam_nbest(model, memory, 4, 10, len(batch))
    assert sequences.shape[:2] == (len(batch), 4) and torch.equal(sequences[:, 0], best)
    assert torch.equal(scores[:, 0], best_score)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())  # best first (no length penalty: by total log-prob)


def test_the_loss_is_the_renormalised_risk_less_its_mean():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train[:3])
    strategy = MinimumRisk(MinimumRiskConfig(reward="bleu", nbest=3, cross_entropy_weight=0.0)).bind(task)
    output = strategy.loss(model, batch, 0)
    with torch.no_grad():  # the same by hand, from the same N-best list
        memory = model.encode(batch.source, batch.source_mask)
        tokens, real = strategy.candidates(model, memory, 3, 10)
        hypotheses = strategy.decode(tokens.tolist())
        risk = -torch.tensor(get_reward("bleu")(hypotheses, [r for r in batch.references for _ in range(3)]),
                             dtype=torch.float32).view(3, 3)
        seen = (tokens == EOS).long().cumsum(1)
        mask = ((seen == 0) | ((seen == 1) & (tokens == EOS))) & (tokens != PAD)
        forced = model.forced(repeat_rows(memory, 3), shifted(tokens)).logits
        log_probs = sequence_log_probs(forced, tokens, mask).view(3, 3)
    weights = log_probs.masked_fill(~real, float("-inf")).softmax(1)
    centred = (risk - (risk * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)).masked_fill(~real, 0.0)
    assert float(output.loss.detach()) == pytest.approx(float((weights * centred).sum(1).mean()), abs=1e-5)
    assert output.loss.requires_grad and {"risk", "expected_risk", "nbest_size"} <= set(output.logs)


def test_config_errors_name_the_field():
    for options, field in (({"nbest": 1}, "nbest"), ({"candidates": "greedy"}, "candidates"),
                           ({"alpha": 0.0}, "alpha"), ({"reward": "nope"}, "reward"),
                           ({"cross_entropy_weight": -1.0}, "cross_entropy_weight")):
        with pytest.raises(UnforcedError, match=f"minimum_risk.{field}"):
            MinimumRiskConfig(**options)
    with pytest.raises(UnforcedError, match="call strategy.bind"):
        task = toy_task()
        MinimumRisk().loss(toy_model(task), task.collate(task.train), 0)


def test_registered_warm_started_and_task_bound():
    strategy = make_strategy("minimum_risk", {"nbest": 3, "candidates": "sample"}, seed=1)
    assert isinstance(strategy, WarmStarted) and isinstance(strategy, TaskBound)
    task = toy_task()
    strategy.bind(task)
    model, batch = toy_model(task), task.collate(task.train)
    first = strategy.loss(model, batch, 0).loss
    state = strategy.state_dict()
    again = make_strategy("minimum_risk", {"nbest": 3, "candidates": "sample"}, seed=2).bind(task)
    again.load_state_dict(state)
    assert float(strategy.loss(model, batch, 1).loss.detach()) == pytest.approx(float(again.loss(model, batch, 1).loss.detach()))
    assert torch.isfinite(first)


def test_minimum_risk_raises_the_reward_it_is_trained_on_over_seeds():
    # A short teacher-forced warm start leaves greedy decoding imperfect on these six pairs; 60 steps of
    # minimum risk (chrF, continuous where sentence BLEU on 2-4 word references is mostly 0) over a 4-best beam
    # then raise greedy chrF on average over three seeds, with a margin.
    chrf = get_reward("chrf")
    gains = []
    for seed in range(3):
        task = toy_task()
        model, batch = toy_model(task, seed=seed), task.collate(task.train)
        warm_up(model, batch)
        before = greedy_reward(model, task, chrf)
        risk = MinimumRisk(MinimumRiskConfig(reward="chrf", nbest=4), seed=seed).bind(task)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
        for step in range(60):
            output = risk.loss(model, batch, step)
            optimizer.zero_grad()
            output.loss.backward()
            optimizer.step()
        gains.append(greedy_reward(model, task, chrf) - before)
    # measured here: +0.041, +0.063, +0.092 (1 and 2 threads alike)
    assert sum(gains) / len(gains) > 0.03 and sum(g > 0 for g in gains) >= 2, gains
