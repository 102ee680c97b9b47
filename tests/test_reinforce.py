"""REINFORCE / SCST: advantages, the <eos> in the mask, skipped batches, determinism, and that it learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import unforced.strategies.reinforce as reinforce_module
from unforced.errors import UnforcedError
from unforced.models import ModelConfig, build_model
from unforced.rewards import get_reward
from unforced.rollout import Greedy, rollout
from unforced.strategies import make_strategy
from unforced.strategies.base import TaskBound, WarmStarted
from unforced.strategies.reinforce import Reinforce, ReinforceConfig
from unforced.strategies.sequence_level import advantages, sequence_log_probs
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.tasks.base import Task
from unforced.tasks.tokenizers import EOS, VocabTokenizer

PAIRS = [("one two three", "uno dos tres"), ("two three four", "dos tres cuatro cinco"),
         ("three one", "tres uno uno"), ("four four two", "cuatro dos"), ("one five", "uno cinco cinco tres"),
         ("five two one three", "cinco dos uno tres")]


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: one torch thread


def toy_task() -> Task:
    source = VocabTokenizer.train([s for s, _ in PAIRS], "word")
    target = VocabTokenizer.train([t for _, t in PAIRS], "word")
    return Task("toy", PAIRS, PAIRS, PAIRS, source, target, metric="bleu")


def toy_model(task: Task, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                                   target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32,
                                   dropout=0.0, max_source_len=8, max_target_len=10))


def strategy(task: Task, seed: int = 0, **options) -> Reinforce:
    return Reinforce(ReinforceConfig(**options), seed=seed).bind(task)


REWARDS = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.4, 0.6]])


def test_advantage_formulas():
    greedy = torch.tensor([0.5, 0.4])
    advantage, base = advantages(REWARDS, "greedy", greedy)
    assert torch.allclose(advantage, torch.tensor([[0.5, -0.5, 0.0], [-0.2, 0.0, 0.2]]), atol=1e-6)
    assert torch.allclose(base, torch.tensor([[0.5] * 3, [0.4] * 3]))
    advantage, _ = advantages(REWARDS, "mean")
    assert torch.allclose(advantage, torch.tensor([[0.5, -0.5, 0.0], [-0.2, 0.0, 0.2]]), atol=1e-6)
    advantage, base = advantages(REWARDS, "leave_one_out")
    assert torch.allclose(base, torch.tensor([[0.25, 0.75, 0.5], [0.5, 0.4, 0.3]]))
    assert torch.allclose(advantage, torch.tensor([[0.75, -0.75, 0.0], [-0.3, 0.0, 0.3]]), atol=1e-6)
    advantage, base = advantages(REWARDS, "none")
    assert torch.equal(advantage, REWARDS) and not base.any()
    advantage, _ = advantages(REWARDS, "mean", normalize=True)
    assert math.isclose(float(advantage.std()), 1.0, rel_tol=1e-5)


def test_config_errors_name_the_field():
    for options, field in [({"baseline": "median"}, "baseline"), ({"samples": 0}, "samples"),
                           ({"baseline": "leave_one_out", "samples": 1}, "samples"), ({"reward": "rouge"}, "reward"),
                           ({"rl_weight": 1.5}, "rl_weight"), ({"temperature": 0.0}, "temperature"),
                           ({"rl_weight_schedule": {"name": "nope"}}, "rl_weight_schedule"),
                           ({"top_k": 0}, "top_k"), ({"max_len": 0}, "max_len"),
                           ({"max_len_factor": 0.0}, "max_len_factor"), ({"entropy_bonus": -1.0}, "entropy_bonus")]:
        with pytest.raises(UnforcedError, match=f"reinforce.{field}"):
            ReinforceConfig(**options)
    with pytest.raises(UnforcedError, match="mixer_delta"):  # MIXER is its own strategy now
        make_strategy("reinforce", {"mixer_delta": 2})


def test_eos_is_inside_the_log_prob_sum():
    logits = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[4, 5, EOS, 4]])
    mask = torch.tensor([[True, True, True, False]])  # a rollout's mask: through the first <eos> (test_rollout.py)
    log_softmax = logits.log_softmax(-1)[0]
    expected = log_softmax[0, 4] + log_softmax[1, 5] + log_softmax[2, EOS]
    assert torch.allclose(sequence_log_probs(logits, tokens, mask), expected.view(1))


def test_rl_weight_zero_is_teacher_forcing():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    ours = strategy(task, rl_weight=0.0).loss(model, batch, 0).loss
    assert torch.allclose(ours, TeacherForcing().loss(model, batch, 0).loss)


def test_gradient_only_through_the_forced_pass():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    seen = []
    original = model.forced

    def forced(memory, inputs, embeddings=None):
        seen.append(inputs)
        return original(memory, inputs, embeddings)

    model.forced = forced
    output = strategy(task, samples=3).loss(model, batch, 0)
    assert len(seen) == 1 and seen[0].grad_fn is None and seen[0].shape[0] == 3 * len(batch)
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    for key in ("reward_mean", "baseline_mean", "beat_baseline", "rl_weight", "skipped_batch"):
        assert key in output.logs


@pytest.mark.parametrize("bad", ["nan", "raise"])
def test_bad_reward_skips_the_batch(bad):
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)

    def reward(hypotheses, references):
        if bad == "raise":
            raise ValueError("scorer crashed")
        return np.full(len(hypotheses), np.nan)

    good = strategy(task, samples=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    good.loss(model, batch, 0).loss.backward()
    optimizer.step()  # momentum and weight decay now non-zero: a zero gradient would still move them
    before = [p.detach().clone() for p in model.parameters()]
    broken = strategy(task, samples=2)
    broken.reward = reward
    output = broken.loss(model, batch, 1)
    assert output.logs["skipped_batch"] == 1.0
    assert ("scorer crashed" if bad == "raise" else "non-finite") in output.logs["skip_message"]
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    assert float(output.loss.detach()) == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_same_seed_same_loss_and_state_round_trip():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    first, second = strategy(task, seed=3), strategy(task, seed=3)
    assert torch.equal(first.loss(model, batch, 0).loss, second.loss(model, batch, 0).loss)
    saved = first.state_dict()
    after = first.loss(model, batch, 1).loss
    other = strategy(task, seed=99)
    other.load_state_dict(saved)
    assert torch.equal(other.loss(model, batch, 1).loss, after)


def test_rl_weight_schedule_and_entropy_bonus_run():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    mixed = strategy(task, samples=2, rl_weight=0.5, entropy_bonus=0.01)
    output = mixed.loss(model, batch, 10)
    output.loss.backward()
    assert "entropy" in output.logs and "nll" in output.logs and output.logs["rl_weight"] == 0.5
    scheduled = strategy(task, rl_weight_schedule={"name": "linear", "start": 0.0, "end": 1.0, "steps": 10})
    assert scheduled.rl_weight(0) == 0.0 and scheduled.rl_weight(5) == 0.5


def warm_up(model, batch, steps: int = 20, lr: float = 0.01) -> None:
    """A short teacher-forced start on one batch (Adam), leaving greedy decoding imperfect."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    teacher = TeacherForcing()
    for step in range(steps):
        output = teacher.loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()


def greedy_reward(model, task, reward) -> float:
    batch = task.collate(task.train)
    with torch.no_grad():
        memory = model.encode(batch.source, batch.source_mask)
        tokens = rollout(model, memory, Greedy(), max_len=10, batch_size=len(batch), keep_hidden=False).tokens
    hypotheses = [task.target_tokenizer.decode(row) for row in tokens.tolist()]
    return float(reward(hypotheses, batch.references).mean())


def test_scst_raises_the_free_running_reward():
    # A short teacher-forced warm start leaves greedy decoding imperfect; SCST then raises its BLEU. With K = 5
    # and a weaker start (15 steps) some seeds went down: a flat policy rarely samples anything better than
    # greedy, and the many negative advantages push mass at random. K = 16 after 20 steps rises on every seed
    # tried (0-3); seed 3 is the one pinned here.
    task = toy_task()
    model, batch = toy_model(task, seed=3), task.collate(task.train)
    warm_up(model, batch)
    bleu = get_reward("bleu")
    before = greedy_reward(model, task, bleu)
    assert before < 0.95
    scst = strategy(task, reward="bleu", samples=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for step in range(80):
        output = scst.loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    after = greedy_reward(model, task, bleu)
    assert after > before + 0.05, (before, after)


def test_bind_takes_the_task_metric():
    task = toy_task()
    task.metric = "exact_match"
    assert ReinforceConfig().reward is None  # the default: the task's metric, set in bind
    assert isinstance(Reinforce(), WarmStarted) and isinstance(Reinforce(), TaskBound)
    bound = strategy(task)
    assert bound.reward(["uno dos tres"], [["uno dos tres"]])[0] == 1.0
    assert bound.decode([[4, 5, EOS, 6]]) == [task.target_tokenizer.decode([4, 5])]
    unbound = Reinforce(ReinforceConfig(reward=None))
    with pytest.raises(UnforcedError, match="bind"):
        unbound.loss(toy_model(task), task.collate(task.train), 0)


def test_scst_raises_held_out_free_running_chrf_over_seeds():
    # A claim about training outcomes, made as the project makes them: over five seeds, on held-out pairs, with a
    # metric that is continuous there (chrF on sentences of 4-9 words), asserting a mean with a margin and a
    # majority, the premise asserted too. Measured here (150 teacher-forced steps, then 60 SCST steps): gains of
    # +0.5 to +8.1 chrF with 1 thread and -0.2 to +6.4 with 2; float reduction order moves single seeds, not the
    # mean. (60 more teacher-forced steps gain more on this undertrained model: this test claims only that SCST
    # raises the free-running score it optimises.)
    import dataclasses

    from unforced.diagnostics import evaluate
    from unforced.tasks import get_task

    task = dataclasses.replace(get_task("toy-translation", size=400, seed=0), metric="chrf")
    gains = []
    for seed in range(5):
        torch.manual_seed(seed)
        model = build_model(ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                                        target_vocab=task.target_tokenizer.vocab_size, embedding=32, hidden=64,
                                        dropout=0.0, max_source_len=12, max_target_len=12))
        generator = torch.Generator().manual_seed(seed)

        def batch(generator=generator):
            rows = torch.randint(len(task.train), (32,), generator=generator).tolist()
            return task.collate([task.train[i] for i in rows])

        for strategy_, steps, lr in ((TeacherForcing(), 150, 0.01),
                                     (Reinforce(ReinforceConfig(reward="chrf", samples=4), seed=seed).bind(task),
                                      60, 0.003)):
            if steps == 60:
                before = evaluate(model, task, "test")
                assert before["fr_token_acc"] < before["tf_token_acc"] - 0.1  # the premise: a gap to close
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            for step in range(steps):
                output = strategy_.loss(model, batch(), step)
                optimizer.zero_grad()
                output.loss.backward()
                optimizer.step()
        after = evaluate(model, task, "test")
        gains.append(after["metric"]["fr"] - before["metric"]["fr"])
    assert len(task.test) >= 30 and not set(task.test) & set(task.train)
    assert np.mean(gains) > 1.0, gains
    assert sum(gain > 0 for gain in gains) >= 3, gains


def only_eos_model(task: Task):
    """The toy model made to emit <eos> first whatever it reads: the collapse SCST's users report."""
    model = toy_model(task)
    with torch.no_grad():
        model.output.bias.zero_()
        model.output.bias[EOS] = 8.0
    return model


def test_collapse_to_empty_outputs_is_logged_once_and_guarded(caplog):
    task = toy_task()
    model, batch = only_eos_model(task), task.collate(task.train)
    guarded = strategy(task, samples=4)
    with caplog.at_level("WARNING", logger="unforced.strategies.reinforce"):
        first = guarded.loss(model, batch, 0)
        second = guarded.loss(model, batch, 1)
    assert first.logs["short_share"] > 0.9 and first.logs["collapse"] == 1.0 and second.logs["collapse"] == 1.0
    warnings = [record for record in caplog.records if "collapse" in record.getMessage()]
    assert len(warnings) == 1 and "step 0" in warnings[0].getMessage()
    assert guarded.collapsed_steps == 2 and guarded.state_dict()["collapsed_steps"] == 2
    # Every output is empty and scores 0, like the greedy baseline: the reward term alone has no gradient, so the
    # guard's gold cross-entropy is what moves the model away from <eos>.
    assert first.logs["rl_weight"] == 0.5 and "nll" in first.logs
    first.loss.backward()
    assert float(model.output.bias.grad[EOS]) > 0  # descent lowers the <eos> logit

    model.zero_grad()
    unguarded = strategy(task, samples=4, collapse_threshold=None)
    output = unguarded.loss(model, batch, 0)
    assert "collapse" not in output.logs and output.logs["rl_weight"] == 1.0
    output.loss.backward()
    assert float(model.output.bias.grad[EOS].abs()) < 1e-6


def test_guard_gives_short_outputs_no_positive_advantage():
    # A reward that prefers the empty output: without the guard the empty samples would be reinforced.
    task = toy_task()
    model, batch = only_eos_model(task), task.collate(task.train)
    guarded = strategy(task, samples=4, baseline="mean", collapse_cross_entropy=0.0)
    guarded.reward = lambda hypotheses, references: np.asarray([1.0 if not h else 0.0 for h in hypotheses])
    seen = []
    original = reinforce_module.policy_gradient

    def spy(logits, tokens, mask, advantage, *args):
        seen.append(advantage)
        return original(logits, tokens, mask, advantage, *args)

    reinforce_module.policy_gradient = spy
    try:
        output = guarded.loss(model, batch, 0)
    finally:
        reinforce_module.policy_gradient = original
    assert output.logs["collapse"] == 1.0 and output.logs["rl_weight"] == 1.0 and "nll" not in output.logs
    assert float(seen[0].max()) <= 0.0


def test_no_collapse_on_a_healthy_model_or_one_word_golds():
    task = toy_task()
    model, batch = toy_model(task), task.collate(task.train)
    output = strategy(task, samples=4, max_len=8).loss(model, batch, 0)
    assert output.logs["collapse"] == 0.0 and output.logs["short_share"] < 0.5
    one_word = Task("one", [("one", "uno"), ("two", "dos")], [], [], task.source_tokenizer, task.target_tokenizer,
                    metric="bleu")
    short_batch = one_word.collate(one_word.train)
    output = strategy(one_word, samples=2).loss(only_eos_model(one_word), short_batch, 0)
    assert output.logs["collapse"] == 0.0  # golds of one word: a one-word output is no collapse


def test_collapse_options_name_the_field():
    for options, field in [({"collapse_threshold": 0.0}, "collapse_threshold"),
                           ({"collapse_threshold": 1.5}, "collapse_threshold"),
                           ({"collapse_cross_entropy": -0.1}, "collapse_cross_entropy")]:
        with pytest.raises(UnforcedError, match=f"reinforce.{field}"):
            make_strategy("reinforce", options)
