"""Scheduled sampling: equal to teacher forcing at ratio 1, to free running at ratio 0, mixing at the ratio asked."""

from __future__ import annotations

import math

import pytest
import torch

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, rollout
from unforced.strategies import make_strategy
from unforced.strategies.base import token_nll
from unforced.strategies.scheduled_sampling import ScheduledSampling, ScheduledSamplingConfig
from unforced.strategies.teacher_forcing import TeacherForcing

MODEL_KINDS = ("gru", "lstm", "transformer", "decoder_only")

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")]


def constant(ratio: float, **options) -> ScheduledSampling:
    return ScheduledSampling(ScheduledSamplingConfig(schedule="constant", schedule_params={"ratio": ratio},
                                                     **options), seed=0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("mode", ["parallel", "exact"])
def test_ratio_one_equals_teacher_forcing(tiny_model, padded_batch, kind, mode):
    model = tiny_model(kind)
    expected = TeacherForcing().loss(model, padded_batch, 0).loss
    output = constant(1.0, mode=mode).loss(model, padded_batch, 0)
    assert abs(float(output.loss) - float(expected)) < 1e-6
    assert output.logs["teacher_forcing_ratio"] == 1.0 and output.logs["gold_fed_share"] == 1.0


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("soft", [False, True])
def test_exact_rollout_at_ratio_one_equals_teacher_forcing(tiny_model, padded_batch, kind, soft):
    # The loss shortcuts ratio 1 to one forced pass; the sequential paths must agree with it on their own.
    model = tiny_model(kind)
    expected = TeacherForcing().loss(model, padded_batch, 0).loss
    strategy = constant(1.0, mode="exact", soft=soft)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    logits, coins = strategy._exact(model, memory, padded_batch, 1.0)
    assert abs(float(token_nll(logits, padded_batch.gold, padded_batch.gold_mask)) - float(expected)) < 1e-6
    assert bool(coins.all())


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_exact_ratio_zero_greedy_equals_free_running(tiny_model, padded_batch, kind):
    model = tiny_model(kind)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    free = rollout(model, memory, Greedy(), gold=padded_batch.gold, stop_at_eos=False)
    mask = padded_batch.gold_mask
    expected = -(free.log_probs * mask).sum() / mask.sum()
    output = constant(0.0, mode="exact").loss(model, padded_batch, 0)
    assert abs(float(output.loss) - float(expected)) < 1e-6
    assert output.logs["gold_fed_share"] == 0.0


@pytest.mark.parametrize("kind", ["gru", "transformer"])
@pytest.mark.parametrize("mode", ["parallel", "exact"])
@pytest.mark.parametrize("per", ["token", "sequence"])
def test_measured_gold_share_matches_ratio(tiny_model, batch_factory, kind, mode, per):
    model = tiny_model(kind)
    batch = batch_factory([6] * 64, [10] * 64, seed=3)
    strategy = constant(0.3, mode=mode, per=per)
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
    strategy = constant(0.5, mode="parallel", passes=2)
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


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("mode", ["parallel", "exact"])
def test_soft_feeds_are_differentiable(tiny_model, padded_batch, kind, mode):
    model = tiny_model(kind)
    model.zero_grad(set_to_none=True)
    output = constant(0.5, mode=mode, soft=True, temperature=0.7).loss(model, padded_batch, 0)
    assert math.isfinite(float(output.loss))
    output.loss.backward()
    table_grad = model.output_embedding().grad
    assert table_grad is not None and torch.isfinite(table_grad).all()
    # A probability-weighted embedding touches every row, not only the rows of fed tokens.
    used = set(padded_batch.inputs.flatten().tolist())
    unused = [row for row in range(table_grad.shape[0]) if row not in used]
    assert table_grad[unused].abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_tbptt_runs_on_rnns(tiny_model, padded_batch, kind):
    model = tiny_model(kind)
    full = constant(0.5, mode="exact").loss(model, padded_batch, 0).loss
    cut = constant(0.5, mode="exact", tbptt=2).loss(model, padded_batch, 0).loss
    assert abs(float(full) - float(cut)) < 1e-6  # same feeds and values; only the gradient is truncated
    grads = []
    for loss in (full, cut):
        model.zero_grad(set_to_none=True)
        loss.backward()
        grads.append(model.decoder.weight_hh_l0.grad.clone())
    model.zero_grad(set_to_none=True)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("kind", ["transformer", "decoder_only"])
def test_tbptt_on_transformer_raises(tiny_model, padded_batch, kind):
    with pytest.raises(UnforcedError, match="tbptt"):
        constant(0.5, mode="exact", tbptt=2).loss(tiny_model(kind), padded_batch, 0)


@pytest.mark.parametrize(("options", "name"), [
    ({"min_ratio": 1.5}, "min_ratio"),
    ({"min_ratio": -0.1}, "min_ratio"),
    ({"schedule": "cosine"}, "schedule"),
    ({"schedule": "constant", "schedule_params": {"ratio": 2.0}}, "schedule_params"),
    ({"schedule": "linear"}, "schedule_params"),
    ({"passes": 1}, "passes"),
    ({"per": "word"}, "per"),
    ({"own": "beam"}, "own"),
    ({"mode": "fast"}, "mode"),
    ({"temperature": 0.0}, "temperature"),
    ({"tbptt": 0, "mode": "exact"}, "tbptt"),
    ({"tbptt": 3}, "tbptt"),  # parallel mode has no steps to cut
])
def test_bad_parameters_raise_naming_them(options, name):
    with pytest.raises(UnforcedError, match=name):
        ScheduledSamplingConfig(**options)


def test_default_schedule_decays_from_one_to_about_a_third():
    strategy = ScheduledSampling()
    assert strategy.schedule(0) > 0.99
    assert 0.25 < strategy.schedule(2000) < 0.35


@pytest.mark.parametrize("mode", ["parallel", "exact"])
def test_same_seed_same_loss_and_state_round_trip(tiny_model, padded_batch, mode):
    model = tiny_model("gru")
    options = {"mode": mode, "own": "sample", "temperature": 1.5}
    first, second = constant(0.4, **options), constant(0.4, **options)
    assert float(first.loss(model, padded_batch, 0).loss) == float(second.loss(model, padded_batch, 0).loss)
    saved = first.state_dict()
    expected = [float(first.loss(model, padded_batch, step).loss) for step in (1, 2, 3)]
    resumed = constant(0.4, **options)
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


def test_trainer_run_lowers_the_loss(tmp_path):
    from unforced.models import ModelConfig, build_model
    from unforced.tasks import get_task
    from unforced.train import TrainConfig, Trainer

    task = get_task("copy", size=100, length=5)
    config = ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32, dropout=0.0,
                         max_source_len=16, max_target_len=16)
    torch.manual_seed(0)
    model = build_model(config)
    strategy = ScheduledSampling(ScheduledSamplingConfig(schedule="linear",
                                                         schedule_params={"steps": 20, "end": 0.5}), seed=0)
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
def test_exact_replay_has_the_gradient_of_the_sequential_rollout(tiny_model, padded_batch, kind):
    # Exact mode chooses hard feeds without gradient and scores them with one forced pass: same loss and
    # gradients as differentiating through every step (the same coins come from the same seed).
    model = tiny_model(kind)
    grads, losses = [], []
    for method in ("_exact", "_exact_loop"):
        strategy = constant(0.5, mode="exact")
        model.zero_grad(set_to_none=True)
        memory = model.encode(padded_batch.source, padded_batch.source_mask)
        logits, _ = getattr(strategy, method)(model, memory, padded_batch, 0.5)
        loss = token_nll(logits, padded_batch.gold, padded_batch.gold_mask)
        loss.backward()
        losses.append(float(loss))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    model.zero_grad(set_to_none=True)
    assert abs(losses[0] - losses[1]) < 1e-6
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_curriculum_trains_on_short_targets_first(tmp_path):
    from unforced.models import ModelConfig, build_model
    from unforced.tasks import get_task
    from unforced.train import TrainConfig, Trainer

    task = get_task("copy", size=200, length=8, min_length=1, seed=0)
    strategy = make_strategy("scheduled_sampling", {
        "schedule": "constant", "schedule_params": {"ratio": 0.5},
        "curriculum": {"max_length_start": 3, "max_length_end": 9, "steps": 6}})
    config = ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=8, hidden=16, dropout=0.0,
                         max_source_len=9, max_target_len=9)
    trainer = Trainer(build_model(config), task, strategy, TrainConfig(steps=8, batch_size=32, eval_every=0,
                                                                       checkpoint_every=0), tmp_path, tmp_path / "m")
    widths = []
    for step in (0, 3, 6):
        trainer.step = step
        batch = trainer._within_curriculum(trainer.batch_at(step))
        assert int(batch.gold_mask.sum(1).max()) <= strategy.max_target_length(step)
        widths.append(batch.gold.shape[1])
    assert widths[0] <= 3 < widths[-1]
    trainer.step = 0
    trainer.fit()  # trains through the rising limit without error


def test_curriculum_options_are_checked():
    with pytest.raises(UnforcedError, match="scheduled_sampling.curriculum"):
        make_strategy("scheduled_sampling", {"curriculum": {"max_length_start": 0, "max_length_end": 5,
                                                            "steps": 10}})
    with pytest.raises(UnforcedError, match="scheduled_sampling.curriculum"):
        make_strategy("scheduled_sampling", {"curriculum": {"steps": 10}})
