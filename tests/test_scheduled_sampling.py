"""Scheduled sampling, sequential and parallel: equal to teacher forcing at ratio 1, to free running at ratio 0,
mixing at the ratio asked; the curriculum as a batch filter."""

from __future__ import annotations

import math

import pytest
import torch

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, Mix, Sample, rollout, sample_tokens
from unforced.strategies import make_strategy
from unforced.strategies.base import BatchFilter, Observer, Stateful, token_nll
from unforced.strategies.parallel_scheduled_sampling import (
    ParallelScheduledSampling,
    ParallelScheduledSamplingConfig,
)
from unforced.strategies.scheduled_sampling import ScheduledSampling, ScheduledSamplingConfig
from unforced.strategies.teacher_forcing import TeacherForcing

MODEL_KINDS = ("gru", "lstm", "transformer", "decoder_only")
VARIANTS = ("sequential", "parallel")

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")]


def constant(ratio: float, variant: str = "sequential", **options):
    """A scheduled-sampling strategy (`variant` "sequential" or "parallel") at a constant teacher-forcing ratio."""
    config_class, strategy_class = {"sequential": (ScheduledSamplingConfig, ScheduledSampling),
                                    "parallel": (ParallelScheduledSamplingConfig, ParallelScheduledSampling)}[variant]
    return strategy_class(config_class(schedule="constant", schedule_params={"ratio": ratio}, **options), seed=0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_ratio_one_equals_teacher_forcing(tiny_model, padded_batch, kind, variant):
    model = tiny_model(kind)
    expected = TeacherForcing().loss(model, padded_batch, 0).loss
    output = constant(1.0, variant).loss(model, padded_batch, 0)
    assert abs(float(output.loss) - float(expected)) < 1e-6
    assert output.logs["teacher_forcing_ratio"] == 1.0 and output.logs["gold_fed_share"] == 1.0


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("soft", [False, True])
def test_sequential_rollout_at_ratio_one_equals_teacher_forcing(tiny_model, padded_batch, kind, soft):
    # The loss shortcuts ratio 1 to one forced pass; the sequential paths must agree with it on their own.
    model = tiny_model(kind)
    expected = TeacherForcing().loss(model, padded_batch, 0).loss
    strategy = constant(1.0, soft=soft)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    logits, coins = strategy.mixed_logits(model, memory, padded_batch, 1.0)
    assert abs(float(token_nll(logits, padded_batch.gold, padded_batch.gold_mask)) - float(expected)) < 1e-6
    assert bool(coins.all())


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_sequential_ratio_zero_greedy_equals_free_running(tiny_model, padded_batch, kind):
    model = tiny_model(kind)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    free = rollout(model, memory, Greedy(), gold=padded_batch.gold, stop_at_eos=False)
    mask = padded_batch.gold_mask
    expected = -(free.log_probs * mask).sum() / mask.sum()
    output = constant(0.0).loss(model, padded_batch, 0)
    assert abs(float(output.loss) - float(expected)) < 1e-6
    assert output.logs["gold_fed_share"] == 0.0


@pytest.mark.parametrize("kind", ["gru", "transformer"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("per", ["token", "sequence"])
def test_measured_gold_share_matches_ratio(tiny_model, batch_factory, kind, variant, per):
    model = tiny_model(kind)
    batch = batch_factory([6] * 64, [10] * 64, seed=3)
    strategy = constant(0.3, variant, per=per)
    shares, fed = [], 9 * 64  # positions after <bos> per batch
    for step in range(3):
        with torch.no_grad():
            shares.append(strategy.loss(model, batch, step).logs["gold_fed_share"])
    mean = sum(shares) / len(shares)
    draws = len(shares) * (fed if per == "token" else 64)
    standard_error = math.sqrt(0.3 * 0.7 / draws)
    assert abs(mean - 0.3) < 3 * standard_error


def test_parallel_two_passes_mixes_about_half(tiny_model, batch_factory):
    model = tiny_model("gru", target_vocab=60)
    batch = batch_factory([6] * 64, [10] * 64, target_vocab=60, seed=4)
    strategy = constant(0.5, "parallel", passes=2)
    fed = {}
    original = model.forced

    def spy(memory, inputs, embeddings=None):
        fed["inputs"] = inputs
        return original(memory, inputs, embeddings=embeddings)

    model.forced = spy
    try:
        strategy.loss(model, batch, 0)
    finally:
        del model.forced
    differs = (fed["inputs"][:, 1:] != batch.inputs[:, 1:]).float().mean().item()
    assert bool((fed["inputs"][:, 0] == batch.inputs[:, 0]).all())  # <bos> stays
    # Own tokens of an untrained model over 56 symbols are almost never gold, so about half the inputs differ.
    assert 0.4 < differs < 0.56


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_parallel_with_a_pass_per_step_equals_the_sequential_rollout(tiny_model, padded_batch, kind):
    # Duckworth et al.: with greedy feeds and passes = time + 1, pass p fixes the inputs up to position p, so the
    # last pass sees the inputs of the sequential rollout with the same coins.
    model = tiny_model(kind, init_std=0.5)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    width = padded_batch.gold.shape[1]
    parallel = constant(0.5, "parallel", passes=width + 1)
    with torch.no_grad():
        logits, coins = parallel.mixed_logits(model, memory, padded_batch, 0.5)
        sequential = rollout(model, memory, Mix(0.5), gold=padded_batch.gold,
                             generator=torch.Generator().manual_seed(0), stop_at_eos=False)
    assert torch.equal(coins, sequential.gold_fed)
    mask = padded_batch.gold_mask  # past a row's <eos> the collated inputs hold <pad> where the rollout fed <eos>
    torch.testing.assert_close(logits[mask], sequential.logits[mask], rtol=0.0, atol=1e-5)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_soft_feeds_are_differentiable(tiny_model, padded_batch, kind, variant):
    model = tiny_model(kind)
    model.zero_grad(set_to_none=True)
    output = constant(0.5, variant, soft=True, temperature=0.7).loss(model, padded_batch, 0)
    assert math.isfinite(float(output.loss))
    output.loss.backward()
    table_grad = model.output_embedding().grad
    assert table_grad is not None and torch.isfinite(table_grad).all()
    # A probability-weighted embedding touches every row, not only the rows of fed tokens.
    used = set(padded_batch.inputs.flatten().tolist())
    unused = [row for row in range(table_grad.shape[0]) if row not in used]
    assert table_grad[unused].abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(("options", "name"), [
    ({"min_ratio": 1.5}, "min_ratio"),
    ({"min_ratio": -0.1}, "min_ratio"),
    ({"schedule": "cosine"}, "schedule"),
    ({"schedule": "constant", "schedule_params": {"ratio": 2.0}}, "schedule_params"),
    ({"schedule": "linear"}, "schedule_params"),
    ({"per": "word"}, "per"),
    ({"own": "beam"}, "own"),
    ({"temperature": 0.0}, "temperature"),
])
@pytest.mark.parametrize("strategy", ["scheduled_sampling", "parallel_scheduled_sampling"])
def test_bad_parameters_raise_naming_them(options, name, strategy):
    with pytest.raises(UnforcedError, match=f"{strategy}.{name}"):
        make_strategy(strategy, options)


@pytest.mark.parametrize("passes", [1, 0, True, 2.5])
def test_parallel_passes_must_be_an_integer_of_at_least_two(passes):
    with pytest.raises(UnforcedError, match="parallel_scheduled_sampling.passes"):
        ParallelScheduledSamplingConfig(passes=passes)


@pytest.mark.parametrize("mode", ["parallel", "exact"])
def test_the_old_mode_option_names_the_strategy_that_replaced_it(mode):
    with pytest.raises(UnforcedError, match="scheduled_sampling.mode.*parallel_scheduled_sampling"):
        make_strategy("scheduled_sampling", {"mode": mode})
    with pytest.raises(UnforcedError, match="passes"):  # the parallel strategy's option, not the sequential one's
        make_strategy("scheduled_sampling", {"passes": 2})


def test_the_old_tbptt_option_names_its_new_place():
    with pytest.raises(UnforcedError, match="teacher_forcing.tbptt"):
        make_strategy("scheduled_sampling", {"tbptt": 2})


@pytest.mark.parametrize("variant", VARIANTS)
def test_capabilities_are_declared(variant):
    strategy = constant(0.5, variant)
    assert isinstance(strategy, Stateful) and isinstance(strategy, Observer) and isinstance(strategy, BatchFilter)
    assert not getattr(strategy, "warm_start", False)


def test_default_schedule_decays_from_one_to_about_a_third():
    strategy = ScheduledSampling()
    assert strategy.schedule(0) > 0.99
    assert 0.25 < strategy.schedule(2000) < 0.35


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_loss_and_state_round_trip(tiny_model, padded_batch, variant):
    model = tiny_model("gru")
    options = {"own": "sample", "temperature": 1.5}
    first, second = constant(0.4, variant, **options), constant(0.4, variant, **options)
    assert float(first.loss(model, padded_batch, 0).loss) == float(second.loss(model, padded_batch, 0).loss)
    saved = first.state_dict()
    expected = [float(first.loss(model, padded_batch, step).loss) for step in (1, 2, 3)]
    resumed = constant(0.4, variant, **options)
    resumed.load_state_dict(saved)
    assert [float(resumed.loss(model, padded_batch, step).loss) for step in (1, 2, 3)] == expected


def test_adaptive_schedule_state_and_observe():
    config = ScheduledSamplingConfig(schedule="adaptive", schedule_params={"threshold": 1.0, "patience": 1,
                                                                            "factor": 0.5})
    strategy = ScheduledSampling(config)
    strategy.observe({"tf_nll": 0.5})
    assert strategy.schedule(0) == 0.5
    resumed = ScheduledSampling(config)
    resumed.load_state_dict(strategy.state_dict())
    assert resumed.schedule(0) == 0.5
    strategy.observe({"fr_nll": 0.1})  # no tf_nll: nothing to act on
    assert strategy.schedule(0) == 0.5


@pytest.mark.parametrize("name", ["scheduled_sampling", "parallel_scheduled_sampling"])
def test_trainer_run_lowers_the_loss(tmp_path, name):
    from unforced.models import ModelConfig, build_model
    from unforced.tasks import get_task
    from unforced.train import TrainConfig, Trainer

    task = get_task("copy", size=100, length=5)
    config = ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32, dropout=0.0,
                         max_source_len=16, max_target_len=16)
    torch.manual_seed(0)
    model = build_model(config)
    strategy = make_strategy(name, {"schedule": "linear", "schedule_params": {"steps": 20, "end": 0.5}})
    train = TrainConfig(steps=20, batch_size=16, learning_rate=1e-2, warmup=0, eval_every=0, checkpoint_every=0,
                        log_every=1, seed=0)
    trainer = Trainer(model, task, strategy, train, tmp_path / "checkpoints", tmp_path / "metrics.jsonl")
    batch = trainer.batch_at(0)
    before = float(TeacherForcing().loss(model.eval(), batch, 0).loss)
    trainer.fit()
    after = float(TeacherForcing().loss(model.eval(), batch, 0).loss)
    assert after < before - 0.2
    assert (tmp_path / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_sequential_replay_has_the_gradient_of_the_rollout_through_every_step(tiny_model, padded_batch, kind):
    # Hard feeds are chosen without gradient and scored with one forced pass: the same loss and gradients as
    # differentiating through every step of the rollout (the same coins come from the same seed).
    model = tiny_model(kind)
    grads, losses = [], []
    for through_steps in (False, True):
        model.zero_grad(set_to_none=True)
        if through_steps:
            memory = model.encode(padded_batch.source, padded_batch.source_mask)
            logits = rollout(model, memory, Mix(0.5), gold=padded_batch.gold, stop_at_eos=False,
                             generator=torch.Generator().manual_seed(0)).logits
            loss = token_nll(logits, padded_batch.gold, padded_batch.gold_mask)
        else:
            loss = constant(0.5).loss(model, padded_batch, 0).loss
        loss.backward()
        losses.append(float(loss))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    model.zero_grad(set_to_none=True)
    assert abs(losses[0] - losses[1]) < 1e-6
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def plain_step_loop(model, batch, ratio: float, own: str, generator: torch.Generator):
    """Scheduled sampling written as the paper says it, with gradient through every step: at step t the model
    reads the input chosen at t - 1 (gold where its coin says so, else its own token), logits stacked with
    `torch.stack`. Coins are drawn first, then one own token per step, as `rollout` draws them."""
    memory = model.encode(batch.source, batch.source_mask)
    rows, width = batch.gold.shape
    coins = torch.rand(rows, width, generator=generator) < ratio  # (batch, time) True where gold is fed
    state = model.start(memory, rows)
    fed, logits_all, inputs = batch.inputs[:, 0], [], []
    for t in range(width):
        inputs.append(fed)
        logits, _, state = model.step(memory, state, fed)
        logits_all.append(logits)
        chosen = logits.detach().argmax(-1) if own == "greedy" else sample_tokens(logits, 1.0, generator=generator)
        if t + 1 < width:
            fed = torch.where(coins[:, t + 1], batch.gold[:, t], chosen)
    logits = torch.stack(logits_all, 1)  # (batch, time, vocab)
    return token_nll(logits, batch.gold, batch.gold_mask), torch.stack(inputs, 1)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("own", ["greedy", "sample"])
def test_exact_path_has_the_loss_and_gradients_of_a_plain_step_loop(tiny_model, padded_batch, kind, own):
    # The fast path chooses the inputs in a no-grad step loop and scores them with one forced pass: with dropout
    # off, its loss and every gradient equal those of the plain loop differentiated through every step, with
    # the same coins and the same sampled tokens (one generator, drawn in the same order).
    model = tiny_model(kind, init_std=0.5).train()  # train mode with dropout 0: deterministic all the same
    fed = {}
    original = model.forced

    def spy(memory, inputs, embeddings=None):
        fed["inputs"] = inputs
        return original(memory, inputs, embeddings=embeddings)

    results = []
    for fast in (True, False):
        model.zero_grad(set_to_none=True)
        if fast:
            model.forced = spy
            try:
                loss = constant(0.5, own=own).loss(model, padded_batch, 0).loss
            finally:
                del model.forced
            inputs = fed["inputs"]
        else:
            loss, inputs = plain_step_loop(model, padded_batch, 0.5, own, torch.Generator().manual_seed(0))
        loss.backward()
        results.append((loss.detach(), inputs, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (fast_loss, fast_inputs, fast_grads), (loop_loss, loop_inputs, loop_grads) = results
    assert torch.equal(fast_inputs, loop_inputs)
    assert (fast_inputs[:, 1:] != padded_batch.inputs[:, 1:]).any()  # some own tokens were fed
    torch.testing.assert_close(fast_loss, loop_loss, rtol=0.0, atol=1e-6)
    assert len(fast_grads) == len(loop_grads)
    for fast_grad, loop_grad in zip(fast_grads, loop_grads, strict=True):
        torch.testing.assert_close(fast_grad, loop_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("own", [Greedy(), Sample(1.3)])
def test_a_rollout_that_keeps_only_its_choices_chooses_as_the_full_one(tiny_model, padded_batch, own):
    model = tiny_model("gru", init_std=0.5)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    with torch.no_grad():
        full, choices = (rollout(model, memory, Mix(0.4, own), gold=padded_batch.gold, stop_at_eos=False,
                                 generator=torch.Generator().manual_seed(1), keep_logits=keep)
                         for keep in (True, False))
    assert choices.logits is None and choices.log_probs is None
    assert torch.equal(choices.tokens, full.tokens) and torch.equal(choices.inputs, full.inputs)
    assert torch.equal(choices.gold_fed, full.gold_fed) and torch.equal(choices.lengths, full.lengths)


def curriculum_task_and_strategy(name: str):
    from unforced.tasks import get_task

    task = get_task("copy", size=200, length=8, min_length=1, seed=0)
    strategy = make_strategy(name, {
        "schedule": "constant", "schedule_params": {"ratio": 0.5},
        "curriculum": {"max_length_start": 3, "max_length_end": 9, "steps": 6}})
    return task, strategy


@pytest.mark.parametrize("name", ["scheduled_sampling", "parallel_scheduled_sampling"])
def test_curriculum_selects_the_rows_that_fit(name):
    task, strategy = curriculum_task_and_strategy(name)
    batch = task.collate(task.train[:32])
    lengths = batch.gold_mask.sum(1)
    widths = []
    for step in (0, 3, 6):
        limit = strategy.max_target_length(step)
        kept = strategy.select(batch, step)
        fits = [row for row in range(len(lengths)) if int(lengths[row]) <= limit]
        assert kept.sources == [batch.sources[row] for row in fits]
        assert int(kept.gold_mask.sum(1).max()) <= limit and kept.gold.shape[1] == int(lengths[fits].max())
        widths.append(kept.gold.shape[1])
    assert widths[0] <= 3 < widths[-1]
    assert strategy.select(batch, 10**6) is batch  # every row fits: the batch itself
    long_rows = task.collate([pair for pair in task.train if len(pair.references[0].split()) >= 5][:8])
    shortest = strategy.select(long_rows, 0)  # none fits 3: the shortest row alone
    assert len(shortest.sources) == 1
    assert int(shortest.gold_mask.sum()) == int(long_rows.gold_mask.sum(1).min())
    no_curriculum = make_strategy(name)
    assert no_curriculum.select(batch, 0) is batch and no_curriculum.max_target_length(0) is None


def test_curriculum_trains_through_the_rising_limit(tmp_path):
    from unforced.models import ModelConfig, build_model
    from unforced.train import TrainConfig, Trainer

    task, strategy = curriculum_task_and_strategy("scheduled_sampling")
    config = ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=8, hidden=16, dropout=0.0,
                         max_source_len=9, max_target_len=9)
    trainer = Trainer(build_model(config), task, strategy, TrainConfig(steps=8, batch_size=32, eval_every=0,
                                                                       checkpoint_every=0), tmp_path, tmp_path / "m")
    trainer.fit()  # trains through the rising limit without error


@pytest.mark.parametrize("name", ["scheduled_sampling", "parallel_scheduled_sampling"])
def test_curriculum_options_are_checked(name):
    with pytest.raises(UnforcedError, match=f"{name}.curriculum"):
        make_strategy(name, {"curriculum": {"max_length_start": 0, "max_length_end": 5, "steps": 10}})
    with pytest.raises(UnforcedError, match=f"{name}.curriculum"):
        make_strategy(name, {"curriculum": {"steps": 10}})
