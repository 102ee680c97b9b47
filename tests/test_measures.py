"""Every gap measure on models of known behaviour: a scripted policy with the model contract, on the sort task
(whose oracle repairs any prefix), so what each measure should say is known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unforced.diagnostics import evaluate
from unforced.models.base import Forced
from unforced.tasks import get_task
from unforced.vocab import BOS, EOS, PAD, UNK

JUNK = UNK  # a token the sort oracle never names


class Scripted(nn.Module):
    """policy(source text, prefix ids) -> next id, as a model: logits 12 on the chosen token, 0 elsewhere."""

    def __init__(self, task, policy):
        super().__init__()
        self.task, self.policy = task, policy
        self.anchor = nn.Parameter(torch.zeros(1))  # the device the rollout reads
        vocab = task.target_tokenizer.vocab_size

        class Config:
            max_target_len = max(len(task.target_tokenizer.encode(t)) + 1 for _, t in task.test) + 2
            target_vocab = vocab

        self.config = Config()

    def _logits(self, sources, prefixes) -> torch.Tensor:
        logits = torch.zeros(len(prefixes), self.config.target_vocab)
        for row, (source, prefix) in enumerate(zip(sources, prefixes, strict=True)):
            logits[row, self.policy(source, prefix)] = 12.0
        return logits

    def encode(self, source, source_mask):
        return {"source": source}

    def start(self, memory, batch_size):
        return torch.zeros(batch_size, 0, dtype=torch.long)

    def _texts(self, memory):
        return [self.task.source_tokenizer.decode(row) for row in memory["source"].tolist()]

    def step(self, memory, state, tokens, embeddings=None):
        prefix = state if tokens[0] == BOS and state.shape[1] == 0 else torch.cat([state, tokens[:, None]], 1)
        logits = self._logits(self._texts(memory), prefix.tolist())
        return logits, torch.zeros(len(tokens), 2), prefix

    def forced(self, memory, inputs, embeddings=None) -> Forced:
        texts = self._texts(memory)
        steps = [self._logits(texts, [[i for i in row[1:t + 1] if i != PAD] for row in inputs.tolist()])
                 for t in range(inputs.shape[1])]
        return Forced(logits=torch.stack(steps, 1), hidden=torch.zeros(*inputs.shape, 2))


@pytest.fixture(scope="module")
def task():
    return get_task("sort", size=60, length=6, min_length=4, symbols=6, seed=0)


def oracle_policy(task):
    def policy(source, prefix):
        return min(task.oracle(source, prefix))

    return policy


def measures_of(task, policy):
    figures = evaluate(Scripted(task, policy), task, "test")
    return figures, figures["measures"]


def test_an_oracle_model_has_no_gap_by_any_measure(task):
    figures, measures = measures_of(task, oracle_policy(task))
    assert figures["tf_token_acc"] == figures["fr_token_acc"] == 1.0
    assert measures["first_divergence"]["never"] == 1.0 and measures["first_divergence"]["mean"] is None
    assert measures["oracle"]["accumulated_error"] == measures["oracle"]["gold_prefix_error"] == 0.0
    assert measures["length_ratio"] == pytest.approx(1.0)
    assert measures["on_path_nll"] == pytest.approx(figures["tf_nll"])


def test_one_inserted_token_misaligns_positional_figures_but_not_the_oracle_excess(task):
    best = oracle_policy(task)

    def inserter(source, prefix):
        if not prefix:
            return JUNK
        return best(source, [i for i in prefix if i != JUNK])  # ignores its own junk, so continues correctly

    figures, measures = measures_of(task, inserter)
    assert figures["fr_token_acc"] < 0.3 < figures["tf_token_acc"]  # positional: almost every position wrong
    assert figures["gap_nll"] > 5.0
    oracle = measures["oracle"]
    assert oracle["accumulated_error"] == oracle["gold_prefix_error"] == 1.0  # one mistake, made either way
    assert oracle["excess_pct"] == 0.0 and oracle["excess_share"] == 0.0
    assert measures["first_divergence"]["mean"] == 0.0
    assert measures["length_ratio"] > 1.0
    assert measures["on_path_nll"] > 5.0  # only step 0 is on the path, and it is the mistake


def test_a_model_that_stops_early_shows_in_length_and_divergence(task):
    best = oracle_policy(task)

    def stopper(source, prefix):
        return EOS if len(prefix) == 2 else best(source, [i for i in prefix if i != EOS])

    figures, measures = measures_of(task, stopper)
    assert measures["length_ratio"] < 0.8
    assert measures["first_divergence"]["mean"] == 2.0 and measures["first_divergence"]["never"] == 0.0
    assert measures["first_divergence"]["histogram"][2] == len(task.test)
    assert measures["oracle"]["excess_pct"] == 0.0  # the same one mistake with either prefix
    assert figures["metric"]["fr"] < 1.0


def test_errors_that_compound_on_the_model_s_own_prefix_are_excess(task):
    best = oracle_policy(task)

    def compounding(source, prefix):
        if JUNK in prefix or len(prefix) == 1:
            return JUNK  # one mistake after one token, then lost for good once its own junk is in the prefix
        return best(source, prefix)

    figures, measures = measures_of(task, compounding)
    oracle = measures["oracle"]
    assert oracle["gold_prefix_error"] == 1.0  # with gold prefixes it errs at step 1 only
    assert oracle["accumulated_error"] > 3.0  # on its own, every step from 1 on
    assert oracle["excess_pct"] > 200.0 and oracle["excess_share"] > 0.6
    assert measures["first_divergence"]["mean"] == 1.0


def test_prefix_swap_separates_a_model_thrown_off_by_its_own_prefix(task):
    from unforced.diagnostics.measures import prefix_swap

    best = oracle_policy(task)
    steady = prefix_swap(Scripted(task, best), task, "test", positions=(1, 2))
    assert [p["own_over_gold"] for p in steady["positions"]] == [1.0, 1.0]

    def compounding(source, prefix):
        if JUNK in prefix or len(prefix) == 0:
            return JUNK  # its own first token is junk, and junk in its prefix makes it junk forever
        return best(source, prefix)

    shaken = prefix_swap(Scripted(task, compounding), task, "test", positions=(1, 2))
    for position in shaken["positions"]:
        assert position["after_gold"] == 1.0 and position["after_own"] == 0.0  # exact match of the rest
        assert position["rows"] == len(task.test)
