"""Feeds and the decoding engine: every feed against its definition, sampling statistics, beam search against
exhaustive search."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from unforced.errors import UnforcedError
from unforced.models import repeat_rows
from unforced.rollout import (
    Gold,
    Greedy,
    Mix,
    Prefix,
    Sample,
    beam_search,
    gold_coins,
    rollout,
    sample_tokens,
)
from unforced.vocab import BOS, EOS, PAD

KINDS = ("gru", "lstm", "transformer", "decoder_only")
ATOL = 1e-5
SETTINGS = settings(derandomize=True, deadline=None, max_examples=25)

pytestmark = pytest.mark.usefixtures("single_thread")


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=ATOL)


def within_three_standard_errors(successes: int, trials: int, probability: float) -> bool:
    standard_error = math.sqrt(probability * (1 - probability) / trials)
    return abs(successes / trials - probability) <= 3 * standard_error


def moderate_model(tiny_model, kind, **options):
    """A model whose next-token distributions are neither flat nor one-hot (see `make_tiny_model`)."""
    return tiny_model(kind, init_std=0.5, **options)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class ScriptedModel(nn.Module):
    """Emits `script[row, t]` at step t whatever it is fed (logits 0 there, -1e4 elsewhere)."""

    def __init__(self, script: torch.Tensor, vocab: int = 8):
        super().__init__()
        self.script = script
        self.vocab = vocab
        self.anchor = nn.Parameter(torch.zeros(1))  # rollout reads the device from the parameters

    def start(self, memory, batch_size):
        return torch.zeros(batch_size, dtype=torch.long)

    def step(self, memory, state, tokens):
        logits = torch.full((tokens.shape[0], self.vocab), -1e4)
        logits[torch.arange(tokens.shape[0]), self.script[:, state[0]]] = 0.0
        return logits, torch.zeros(tokens.shape[0], 3), state + 1


def encoded(model, batch):
    return model.encode(batch.source, batch.source_mask)


# ---------------------------------------------------------------------------------------------- Gold


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_gold_rollout_equals_forced(kind, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = encoded(model, padded_batch)
    result = rollout(model, memory, Gold(), gold=padded_batch.gold)
    forced = model.forced(memory, padded_batch.inputs)
    mask = padded_batch.gold_mask
    # Gold feeds y_(t-1): inside each row's length that is exactly the collated decoder input.
    assert torch.equal(result.inputs[:, 0], torch.full((4,), BOS))
    assert torch.equal(result.inputs[:, 1:], padded_batch.gold[:, :-1])
    assert torch.equal(result.inputs[mask], padded_batch.inputs[mask])
    assert_close(result.logits[mask], forced.logits[mask])
    assert_close(result.hidden[mask], forced.hidden[mask])
    # Everywhere, the logits are those of a forced pass over what was actually fed.
    fed = model.forced(memory, result.inputs)
    assert_close(result.logits, fed.logits)
    assert_close(result.hidden, fed.hidden)
    assert torch.equal(result.lengths, mask.sum(1))
    assert torch.equal(result.mask, mask)
    expected_log_probs = forced.logits.log_softmax(-1).gather(2, padded_batch.gold.unsqueeze(-1)).squeeze(-1)
    assert_close(result.log_probs[mask], expected_log_probs[mask])
    assert torch.equal(result.tokens, result.logits.argmax(-1))  # the model's own choice is still recorded
    assert result.gold_fed is None


# ---------------------------------------------------------------------------------------------- Greedy


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_greedy_feeds_the_argmax_of_the_previous_step(kind, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = encoded(model, padded_batch)
    result = rollout(model, memory, Greedy(), batch_size=4, max_len=7, stop_at_eos=False)
    assert result.tokens.shape == (4, 7)
    assert torch.equal(result.tokens, result.logits.argmax(-1))
    assert torch.equal(result.inputs[:, 0], torch.full((4,), BOS))
    assert torch.equal(result.inputs[:, 1:], result.tokens[:, :-1])
    assert_close(result.logits, model.forced(memory, result.inputs).logits)
    expected_log_probs = result.logits.log_softmax(-1).gather(2, result.tokens.unsqueeze(-1)).squeeze(-1)
    assert_close(result.log_probs, expected_log_probs)
    assert torch.equal(result.lengths, torch.full((4,), 7))
    assert bool(result.mask.all())


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_greedy_with_gold_scores_gold_tokens_along_its_own_path(kind, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = encoded(model, padded_batch)
    result = rollout(model, memory, Greedy(), gold=padded_batch.gold)
    free = rollout(model, memory, Greedy(), batch_size=4, max_len=padded_batch.gold.shape[1], stop_at_eos=False)
    assert torch.equal(result.tokens, free.tokens)
    assert torch.equal(result.inputs, free.inputs)
    expected = result.logits.log_softmax(-1).gather(2, padded_batch.gold.unsqueeze(-1)).squeeze(-1)
    assert_close(result.log_probs, expected)


# ---------------------------------------------------------------------------------------------- Sample


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_sample_is_deterministic_for_a_seed_and_differs_across_seeds(kind, tiny_model, batch_factory):
    model = moderate_model(tiny_model, kind)
    batch = batch_factory([3] * 8, [2] * 8, seed=4)
    memory = encoded(model, batch)

    def sample(seed):
        return rollout(model, memory, Sample(temperature=1.5), batch_size=8, max_len=6, stop_at_eos=False,
                       generator=generator(seed))

    first, again, other = sample(0), sample(0), sample(1)
    assert torch.equal(first.tokens, again.tokens)
    assert torch.equal(first.logits, again.logits)
    assert not torch.equal(first.tokens, other.tokens)
    # What is fed is the sample of the previous step, and the logits are those of that path.
    assert torch.equal(first.inputs[:, 1:], first.tokens[:, :-1])
    assert_close(first.logits, model.forced(memory, first.inputs).logits)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [0.3, 1.0, 5.0])
@torch.no_grad()
def test_sample_top_k_one_equals_greedy(kind, temperature, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = encoded(model, padded_batch)
    greedy = rollout(model, memory, Greedy(), batch_size=4, max_len=6, stop_at_eos=False)
    top_one = rollout(model, memory, Sample(temperature=temperature, top_k=1), batch_size=4, max_len=6,
                      stop_at_eos=False, generator=generator(3))
    assert torch.equal(top_one.tokens, greedy.tokens)
    assert torch.equal(top_one.inputs, greedy.inputs)


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (2.0, None), (0.7, 3), (1.0, 5), (1.0, 9)])
def test_sample_tokens_frequencies_match_softmax(temperature, top_k):
    logits = torch.tensor([1.2, -0.4, 0.3, 2.0, -1.5])
    draws = 20_000
    tokens = sample_tokens(logits.expand(draws, 5), temperature, top_k, generator(11))
    assert tokens.shape == (draws,)
    counts = torch.bincount(tokens, minlength=5)
    assert counts.shape == (5,)
    scaled = logits / temperature
    if top_k is not None and top_k < 5:
        kept = scaled.topk(top_k).indices
        scaled = torch.full_like(scaled, -math.inf).index_fill(0, kept, 0.0) + scaled
    probabilities = scaled.softmax(-1)
    for token in range(5):
        p = float(probabilities[token])
        if p == 0.0:
            assert counts[token] == 0
        else:
            assert within_three_standard_errors(int(counts[token]), draws, p), (token, counts.tolist(), p)


@given(rows=st.lists(st.tuples(st.integers(0, 6), st.lists(st.floats(-5, 5), min_size=7, max_size=7)),
                     min_size=1, max_size=6),
       temperature=st.floats(0.1, 3.0), top_k=st.one_of(st.none(), st.integers(1, 9)), seed=st.integers(0, 99))
@SETTINGS
def test_sample_tokens_picks_a_dominant_token_in_every_row(rows, temperature, top_k, seed):
    """A token ahead of all others by 1e3 / temperature is the only possible draw; rows are independent."""
    winners = torch.tensor([winner for winner, _ in rows])
    logits = torch.tensor([noise for _, noise in rows])
    logits[torch.arange(len(rows)), winners] = 1e3
    tokens = sample_tokens(logits, temperature, top_k, generator(seed))
    assert torch.equal(tokens, winners)


# ---------------------------------------------------------------------------------------------- Mix


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("per", ["token", "sequence", "batch"])
@torch.no_grad()
def test_mix_all_gold_equals_gold(kind, per, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = encoded(model, padded_batch)
    gold = rollout(model, memory, Gold(), gold=padded_batch.gold)
    for own in (Greedy(), Sample(temperature=2.0)):
        mixed = rollout(model, memory, Mix(1.0, own=own, per=per), gold=padded_batch.gold,
                        generator=generator(0))
        assert torch.equal(mixed.inputs, gold.inputs)
        assert_close(mixed.logits, gold.logits)
        assert_close(mixed.log_probs, gold.log_probs)
        assert bool(mixed.gold_fed.all())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("per", ["token", "sequence", "batch"])
@torch.no_grad()
def test_mix_no_gold_greedy_equals_greedy(kind, per, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = encoded(model, padded_batch)
    greedy = rollout(model, memory, Greedy(), gold=padded_batch.gold)
    mixed = rollout(model, memory, Mix(0.0, own=Greedy(), per=per), gold=padded_batch.gold,
                    generator=generator(0))
    assert torch.equal(mixed.tokens, greedy.tokens)
    assert torch.equal(mixed.inputs, greedy.inputs)
    assert_close(mixed.logits, greedy.logits)
    assert torch.equal(mixed.lengths, greedy.lengths)
    assert torch.equal(mixed.mask, greedy.mask)
    assert bool(mixed.gold_fed[:, 0].all())  # the first input is always <bos>
    assert not bool(mixed.gold_fed[:, 1:].any())


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8])
@torch.no_grad()
def test_mix_per_token_rate_matches_the_ratio(ratio, tiny_model, batch_factory):
    model = tiny_model("gru")
    batch = batch_factory([2] * 300, [7] * 300, seed=6)
    result = rollout(model, encoded(model, batch), Mix(ratio, per="token"), gold=batch.gold,
                     generator=generator(1))
    coins = result.gold_fed[:, 1:]  # step 0 always feeds <bos>
    assert within_three_standard_errors(int(coins.sum()), coins.numel(), ratio)
    # Per token the coins vary along a row: some row has both kinds of input.
    assert bool((coins.any(1) & ~coins.all(1)).any())


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_mix_per_sequence_and_per_batch_rates_match_the_ratio(ratio):
    rows = gold_coins(Mix(ratio, per="sequence"), batch=2000, time=5, generator=generator(2))
    assert rows.shape == (2000, 5)
    assert within_three_standard_errors(int(rows[:, 0].sum()), 2000, ratio)
    batches = [bool(gold_coins(Mix(ratio, per="batch"), 3, 4, generator=generator(seed))[0, 0])
               for seed in range(1000)]
    assert within_three_standard_errors(sum(batches), 1000, ratio)


@given(kind=st.sampled_from(KINDS), ratio=st.floats(0.0, 1.0), per=st.sampled_from(["token", "sequence", "batch"]),
       own=st.sampled_from([Greedy(), Sample(), Sample(temperature=3.0, top_k=4)]), seed=st.integers(0, 10_000))
@SETTINGS
@torch.no_grad()
def test_mix_feeds_gold_exactly_where_its_coins_say(kind, ratio, per, own, seed, tiny_model, batch_factory):
    model = moderate_model(tiny_model, kind)
    batch = batch_factory([4, 1, 3, 2, 5, 2], [6, 3, 1, 6, 4, 5], seed=seed)
    memory = encoded(model, batch)
    result = rollout(model, memory, Mix(ratio, own=own, per=per), gold=batch.gold, generator=generator(seed))
    coins = result.gold_fed
    assert coins.shape == result.tokens.shape == batch.gold.shape
    assert torch.equal(result.inputs[:, 0], torch.full((6,), BOS))
    assert bool(coins[:, 0].all())
    expected = torch.where(coins[:, 1:], batch.gold[:, :-1], result.tokens[:, :-1])
    assert torch.equal(result.inputs[:, 1:], expected)
    if per == "sequence":
        assert bool((coins[:, 1:] == coins[:, 1:2]).all())
    if per == "batch":
        assert bool((coins[:, 1:] == coins[0, 1]).all())
    if isinstance(own, Greedy):
        assert torch.equal(result.tokens, result.logits.argmax(-1))
    # The logits are those of the mixed path the decoder was actually fed.
    assert_close(result.logits, model.forced(memory, result.inputs).logits)
    again = rollout(model, memory, Mix(ratio, own=own, per=per), gold=batch.gold, generator=generator(seed))
    assert torch.equal(again.inputs, result.inputs)
    assert torch.equal(again.gold_fed, result.gold_fed)


# ---------------------------------------------------------------------------------------------- stopping


SCRIPT = torch.tensor([
    [4, 5, EOS, 6, 6, 6, 6, 6],  # ends at step 2
    [EOS, 4, 4, 4, 4, 4, 4, 4],  # ends at once
    [6, 6, 6, 6, EOS, 4, 4, 4],  # ends at step 4
    [7, EOS, 5, EOS, 5, 5, 5, 5],  # the first <eos> counts
])


@pytest.mark.parametrize("feed", [Greedy(), Sample(), Sample(temperature=0.5, top_k=2)])
def test_stop_at_eos_lengths_and_mask(feed):
    model = ScriptedModel(SCRIPT)
    result = rollout(model, None, feed, batch_size=4, max_len=8, generator=generator(0))
    assert result.tokens.shape == (4, 5)  # decoding ends once every row has emitted <eos>
    assert torch.equal(result.tokens, SCRIPT[:, :5])
    assert torch.equal(result.lengths, torch.tensor([3, 1, 5, 2]))
    expected_mask = torch.arange(5)[None, :] < torch.tensor([3, 1, 5, 2])[:, None]
    assert torch.equal(result.mask, expected_mask)
    assert torch.equal(result.inputs[:, 1:], SCRIPT[:, :4])


def test_a_row_without_eos_runs_to_max_len():
    script = SCRIPT.clone()
    script[2] = 6
    result = rollout(ScriptedModel(script), None, Greedy(), batch_size=4, max_len=8)
    assert result.tokens.shape == (4, 8)
    assert torch.equal(result.lengths, torch.tensor([3, 1, 8, 2]))
    assert bool(result.mask[2].all())
    assert result.mask.sum() == 3 + 1 + 8 + 2


def test_without_stop_at_eos_every_row_runs_the_full_width():
    result = rollout(ScriptedModel(SCRIPT), None, Greedy(), batch_size=4, max_len=8, stop_at_eos=False)
    assert torch.equal(result.tokens, SCRIPT)
    assert torch.equal(result.lengths, torch.full((4,), 8))
    assert bool(result.mask.all())


def test_with_gold_lengths_follow_the_gold_tokens_and_decoding_runs_the_gold_width():
    # log_probs score the gold tokens, so the gold decides where each row ends, whatever the feed.
    gold = torch.tensor([[4, 4, 4, 4, 4, 4, EOS], [4, 4, EOS, PAD, PAD, PAD, PAD]] * 2)
    greedy = rollout(ScriptedModel(SCRIPT), None, Greedy(), gold=gold)
    assert greedy.tokens.shape == (4, 7)
    assert torch.equal(greedy.lengths, torch.tensor([7, 3, 7, 3]))
    mixed = rollout(ScriptedModel(SCRIPT), None, Mix(0.5), gold=gold, generator=generator(0))
    assert torch.equal(mixed.lengths, torch.tensor([7, 3, 7, 3]))
    assert torch.equal(mixed.mask, gold != PAD)
    assert torch.equal(mixed.tokens, SCRIPT[:, :7])


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_stop_at_eos_invariants_on_a_real_model(kind, tiny_model, batch_factory):
    model = moderate_model(tiny_model, kind, target_vocab=6)
    batch = batch_factory([3, 1, 4, 2, 5, 3, 2, 4], [2] * 8, target_vocab=6, seed=8)
    result = rollout(model, encoded(model, batch), Sample(), batch_size=8, max_len=6, generator=generator(5))
    time = result.tokens.shape[1]
    for row in range(8):
        length = int(result.lengths[row])
        assert 1 <= length <= time
        assert not bool((result.tokens[row, : length - 1] == EOS).any())
        assert int(result.tokens[row, length - 1]) == EOS or length == time
        assert result.mask[row].tolist() == [t < length for t in range(time)]


# ---------------------------------------------------------------------------------------------- Prefix


PREFIX_GOLD = torch.tensor([[4, 5, 6, 7, EOS, PAD], [6, 6, EOS, PAD, PAD, PAD], [7, 4, 4, 5, 6, EOS],
                            [5, EOS, PAD, PAD, PAD, PAD]])


def test_prefix_feeds_gold_for_its_lengths_then_the_models_own():
    lengths = torch.tensor([2, 0, 4, 1])
    result = rollout(ScriptedModel(SCRIPT), None, Prefix(lengths), gold=PREFIX_GOLD, max_len=8)
    # The sequence: gold on positions t < lengths[b], the model's own choice after; it ends at its first <eos>.
    expected = torch.where(torch.arange(8)[None, :] < lengths[:, None],
                           torch.cat([PREFIX_GOLD, torch.full((4, 2), PAD)], 1), SCRIPT)
    time = result.tokens.shape[1]
    assert torch.equal(result.tokens, expected[:, :time])
    assert torch.equal(result.inputs[:, 1:], result.tokens[:, :-1])  # each token is fed back
    assert torch.equal(result.gold_fed, torch.arange(time)[None, :] <= lengths[:, None])  # <bos>, then the prefix
    # Row 0: 4 5 (gold) then the script's <eos> at step 2; row 1: the script from the start (<eos> at 0); row 2:
    # 7 4 4 5 (gold) then the script's <eos> at step 4; row 3: 5 (gold), then the script's <eos> at step 1.
    assert torch.equal(result.lengths, torch.tensor([3, 1, 5, 2])) and time == 5
    log_softmax = result.logits.log_softmax(-1)
    assert torch.equal(result.log_probs, log_softmax.gather(2, result.tokens.unsqueeze(-1)).squeeze(-1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("then", [Greedy(), Sample(temperature=2.0)])
@torch.no_grad()
def test_prefix_on_a_real_model_is_gold_then_its_own_path(kind, then, tiny_model, batch_factory):
    model = moderate_model(tiny_model, kind)
    batch = batch_factory([4, 1, 3, 2, 5], [6, 3, 1, 6, 5], seed=11)
    lengths = torch.tensor([3, 0, 1, 6, 2])
    memory = encoded(model, batch)
    result = rollout(model, memory, Prefix(lengths, then), gold=batch.gold, max_len=9, stop_at_eos=False,
                     generator=generator(4))
    steps = torch.arange(9)[None, :]
    gold = torch.cat([batch.gold, torch.full((5, 3), PAD)], 1)
    assert torch.equal(result.tokens[steps < lengths[:, None]], gold[steps < lengths[:, None]])
    own = rollout(model, memory, Gold(), gold=batch.gold).tokens  # the model's argmax where it is fed gold
    assert result.tokens.shape == (5, 9)
    assert torch.equal(result.inputs[:, 1:], result.tokens[:, :-1])
    if isinstance(then, Greedy):
        after = steps >= lengths[:, None]
        assert torch.equal(result.tokens[after], result.logits.argmax(-1)[after])
        # On the prefix the logits are those of teacher forcing (same inputs so far).
        first = lengths[0]
        assert torch.equal(result.logits[0, :first + 1].argmax(-1), own[0, :first + 1])
    assert_close(result.logits, model.forced(memory, result.inputs).logits)


def test_prefix_errors():
    with pytest.raises(UnforcedError, match="Prefix.lengths"):
        Prefix(torch.tensor([1, -1]))
    with pytest.raises(UnforcedError, match="Prefix.lengths"):
        Prefix(torch.tensor([[1, 2]]))
    with pytest.raises(UnforcedError, match="Prefix.then"):
        Prefix(torch.tensor([1]), then=Gold())
    with pytest.raises(UnforcedError, match="gold"):
        rollout(ScriptedModel(SCRIPT), None, Prefix(torch.tensor([1, 1, 1, 1])), batch_size=4, max_len=3)
    with pytest.raises(UnforcedError, match="Prefix.lengths"):  # one length per row
        rollout(ScriptedModel(SCRIPT), None, Prefix(torch.tensor([1, 1])), gold=PREFIX_GOLD)
    with pytest.raises(UnforcedError, match="Prefix.lengths"):  # no gold to feed past the gold's width
        rollout(ScriptedModel(SCRIPT), None, Prefix(torch.tensor([1, 7, 1, 1])), gold=PREFIX_GOLD, max_len=8)


# ---------------------------------------------------------------------------------------------- soft feeds


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feed", [Greedy(), Mix(0.5), Mix(0.5, per="sequence"), Prefix(torch.tensor([2, 0, 1, 5]))])
@torch.no_grad()
def test_soft_feed_of_a_one_hot_distribution_equals_the_hard_feed(kind, feed, tiny_model, padded_batch):
    # At a temperature near 0 softmax(logits / T) is one-hot on the argmax: the expected embedding is the greedy
    # token's own embedding (`model.embed` scaling included), so the soft rollout is the hard greedy one.
    model = moderate_model(tiny_model, kind)
    memory = encoded(model, padded_batch)
    hard = rollout(model, memory, feed, gold=padded_batch.gold, stop_at_eos=False, generator=generator(3))
    soft = rollout(model, memory, feed, gold=padded_batch.gold, stop_at_eos=False, generator=generator(3),
                   soft=True, soft_temperature=1e-6)
    assert torch.equal(soft.inputs, hard.inputs) and torch.equal(soft.tokens, hard.tokens)
    assert_close(soft.logits, hard.logits)
    if hard.gold_fed is not None:
        assert torch.equal(soft.gold_fed, hard.gold_fed)


@pytest.mark.parametrize("kind", KINDS)
def test_soft_feed_is_the_expected_embedding_and_carries_gradient(kind, tiny_model, padded_batch):
    model = moderate_model(tiny_model, kind)
    memory = encoded(model, padded_batch)
    result = rollout(model, memory, Greedy(), gold=padded_batch.gold, stop_at_eos=False, soft=True,
                     soft_temperature=0.7)
    # The step after step 0 is fed softmax(logits_0 / 0.7) @ E: replay it by hand.
    table = model.embed(torch.arange(model.output_embedding().shape[0]))
    fed = (result.logits[:, 0].detach() / 0.7).softmax(-1) @ table.detach()
    state = model.start(memory, 4)
    _, _, state = model.step(memory, state, result.inputs[:, 0])
    by_hand, _, _ = model.step(memory, state, result.inputs[:, 1], embeddings=fed)
    assert_close(result.logits[:, 1].detach(), by_hand.detach())
    # Gradient flows from a late step back through the earlier choices into embeddings never fed as tokens.
    model.zero_grad(set_to_none=True)
    result.logits[:, -1].sum().backward()
    grad = model.output_embedding().grad
    unused = [row for row in range(grad.shape[0]) if row not in set(result.inputs.flatten().tolist())]
    assert unused and grad[unused].abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_soft_temperature_must_be_positive(tiny_model, padded_batch):
    model = tiny_model("gru")
    with pytest.raises(UnforcedError, match="soft_temperature"):
        rollout(model, encoded(model, padded_batch), Greedy(), gold=padded_batch.gold, soft=True,
                soft_temperature=0.0)


# ---------------------------------------------------------------------------------------------- detach_every


def first_step_gradient(model, batch, soft: bool, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, gradient that the last step's log-prob of gold sends to the first step).

    Hard gold feeds: the gradient on the <bos> row of the embedding table (<bos> is fed at step 0 only). Soft
    greedy feeds: the gradient on step 0's logits, whose softmax is step 1's input (every soft input touches every
    row of the table, <bos> included, so the table's rows say nothing about where a path began).
    """
    model.zero_grad(set_to_none=True)
    stepped = []
    original = model.step

    def step(*args, **kwargs):
        logits, hidden, state = original(*args, **kwargs)
        logits.retain_grad()
        stepped.append(logits)
        return logits, hidden, state

    model.step = step
    try:
        result = rollout(model, encoded(model, batch), Greedy() if soft else Gold(), gold=batch.gold,
                         stop_at_eos=False, soft=soft, **options)
    finally:
        del model.step
    result.log_probs[:, -1].sum().backward()
    grad = stepped[0].grad if soft else model.output_embedding().grad[BOS]
    grad = torch.zeros(1) if grad is None else grad.clone()
    model.zero_grad(set_to_none=True)
    return result.logits.detach(), grad


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("soft", [False, True])
def test_detach_every_cuts_the_gradient_to_earlier_steps(kind, soft, tiny_model, batch_factory):
    model = moderate_model(tiny_model, kind)
    batch = batch_factory([3, 2, 4], [6, 6, 6], seed=2)
    full_logits, full = first_step_gradient(model, batch, soft)
    # Step 5 lies in the chunk of steps 4-5 (cut every 2) or 3-5 (every 3): no path back to step 0.
    for every in (2, 3):
        cut_logits, cut = first_step_gradient(model, batch, soft, detach_every=every)
        assert_close(cut_logits, full_logits)  # the values are the same; only the gradient is truncated
        assert float(full.abs().sum()) > 0 and float(cut.abs().sum()) == 0.0
    # A cut past the last step leaves the graph whole.
    _, long_cut = first_step_gradient(model, batch, soft, detach_every=6)
    torch.testing.assert_close(long_cut, full)


@pytest.mark.parametrize("kind", ["transformer", "decoder_only"])
def test_detach_every_refuses_states_that_are_not_recurrent(kind, tiny_model, padded_batch):
    model = tiny_model(kind)
    with pytest.raises(UnforcedError, match="detach_every.*recurrent"):
        rollout(model, encoded(model, padded_batch), Gold(), gold=padded_batch.gold, detach_every=2)


@pytest.mark.parametrize("every", [0, -1, True, 1.5])
def test_detach_every_must_be_a_positive_integer(every, tiny_model, padded_batch):
    model = tiny_model("gru")
    with pytest.raises(UnforcedError, match="detach_every"):
        rollout(model, encoded(model, padded_batch), Gold(), gold=padded_batch.gold, detach_every=every)


# ---------------------------------------------------------------------------------------------- beam search


def exhaustive_search(model, memory, vocab: int, max_len: int, length_penalty: float = 0.0):
    """Best hypothesis per row over every sequence that ends at its first <eos> or reaches `max_len`."""
    sequences = torch.tensor(list(itertools.product(range(vocab), repeat=max_len)))  # (N, max_len)
    n = sequences.shape[0]
    inputs = torch.cat([torch.full((n, 1), BOS), sequences[:, :-1]], 1)
    is_eos = sequences == EOS
    last = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full((n,), max_len - 1))
    best = []
    for row in range(memory_rows(memory)):
        row_memory = repeat_rows(select_row(memory, row), n)
        log_probs = model.forced(row_memory, inputs).logits.log_softmax(-1)
        scores = log_probs.gather(2, sequences.unsqueeze(-1)).squeeze(-1).cumsum(1)
        scores = scores.gather(1, last.unsqueeze(1)).squeeze(1)
        ranked = scores / (last + 1).float() ** length_penalty if length_penalty else scores
        winner = int(ranked.argmax())
        best.append((tuple(sequences[winner, : last[winner] + 1].tolist()), float(scores[winner])))
    return best


def memory_rows(memory) -> int:
    return memory.mask.shape[0]


def select_row(memory, row):
    from unforced.models import select_rows

    return select_rows(memory, torch.tensor([row]))


def trim(sequence) -> tuple[int, ...]:
    """Up to and including the first <eos>."""
    tokens = [int(token) for token in sequence]
    return tuple(tokens[: tokens.index(EOS) + 1]) if EOS in tokens else tuple(tokens)


def sequence_score(model, memory, row, tokens) -> float:
    inputs = torch.tensor([[BOS, *tokens[:-1]]])
    log_probs = model.forced(select_row(memory, row), inputs).logits.log_softmax(-1)[0]
    return float(log_probs[torch.arange(len(tokens)), torch.tensor(tokens)].sum())


VOCAB, MAX_LEN, BEAM_ROWS = 6, 4, 4


@pytest.fixture(scope="module")
def beam_setup(tiny_model, batch_factory):
    """Per kind: a peaked model with 6 target tokens, three sources, and the exhaustive best hypotheses."""
    setups = {}
    batch = batch_factory([3, 1, 5, 2], [2, 2, 2, 2], target_vocab=VOCAB, seed=9)
    with torch.no_grad():
        for kind in KINDS:
            model = moderate_model(tiny_model, kind, target_vocab=VOCAB, seed=3)
            memory = encoded(model, batch)
            setups[kind] = (model, memory, exhaustive_search(model, memory, VOCAB, MAX_LEN))
    return setups


@pytest.mark.parametrize("kind", KINDS)
def test_beam_search_with_a_full_beam_equals_exhaustive_search(kind, beam_setup):
    model, memory, best = beam_setup[kind]
    sequences, scores = beam_search(model, memory, beam_size=VOCAB**MAX_LEN, max_len=MAX_LEN, batch_size=BEAM_ROWS)
    assert sequences.shape[0] == BEAM_ROWS and scores.shape == (BEAM_ROWS,)
    for row, (tokens, score) in enumerate(best):
        assert trim(sequences[row]) == tokens
        assert float(scores[row]) == pytest.approx(score, abs=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_exhaustive_best_is_not_simply_greedy(kind, beam_setup):
    """Guards the test above: on some row the best hypothesis is not the greedy one (so a beam that pruned
    wrongly would be caught), and the best hypotheses differ between sources."""
    model, memory, best = beam_setup[kind]
    with torch.no_grad():
        greedy = rollout(model, memory, Greedy(), batch_size=BEAM_ROWS, max_len=MAX_LEN)
    assert any(trim(greedy.tokens[row]) != tokens for row, (tokens, _) in enumerate(best))
    assert len({tokens for tokens, _ in best}) > 1


@pytest.mark.parametrize("kind", KINDS)
def test_beam_search_with_length_penalty_equals_exhaustive_search(kind, beam_setup):
    model, memory, _ = beam_setup[kind]
    with torch.no_grad():
        best = exhaustive_search(model, memory, VOCAB, MAX_LEN, length_penalty=1.0)
    sequences, scores = beam_search(model, memory, beam_size=VOCAB**MAX_LEN, max_len=MAX_LEN, batch_size=BEAM_ROWS,
                                    length_penalty=1.0)
    for row, (tokens, score) in enumerate(best):
        assert trim(sequences[row]) == tokens
        assert float(scores[row]) == pytest.approx(score, abs=ATOL)  # the returned score is not normalised


@pytest.mark.parametrize("kind", KINDS)
def test_beam_size_one_equals_greedy(kind, beam_setup):
    model, memory, _ = beam_setup[kind]
    sequences, scores = beam_search(model, memory, beam_size=1, max_len=MAX_LEN, batch_size=BEAM_ROWS)
    with torch.no_grad():
        greedy = rollout(model, memory, Greedy(), batch_size=BEAM_ROWS, max_len=MAX_LEN)
    for row in range(BEAM_ROWS):
        assert trim(sequences[row]) == trim(greedy.tokens[row])
        greedy_score = float((greedy.log_probs[row] * greedy.mask[row]).sum())
        assert float(scores[row]) == pytest.approx(greedy_score, abs=ATOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("beam_size", [2, 3, 7])
def test_beam_search_returns_a_real_hypothesis_no_better_than_the_best(kind, beam_size, beam_setup):
    model, memory, best = beam_setup[kind]
    sequences, scores = beam_search(model, memory, beam_size=beam_size, max_len=MAX_LEN, batch_size=BEAM_ROWS)
    with torch.no_grad():
        for row, (_, best_score) in enumerate(best):
            tokens = trim(sequences[row])
            assert len(tokens) == MAX_LEN or tokens[-1] == EOS
            assert float(scores[row]) == pytest.approx(sequence_score(model, memory, row, tokens), abs=ATOL)
            assert float(scores[row]) <= best_score + ATOL


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("ratio", [-0.01, 1.01, math.nan, math.inf])
def test_mix_ratio_outside_unit_interval_is_an_error(ratio):
    with pytest.raises(UnforcedError, match="gold_ratio"):
        Mix(ratio)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_sample_temperature_must_be_positive(temperature):
    with pytest.raises(UnforcedError, match="temperature"):
        Sample(temperature=temperature)


def test_bad_feed_options_are_errors():
    with pytest.raises(UnforcedError, match="top_k"):
        Sample(top_k=0)
    with pytest.raises(UnforcedError, match="per"):
        Mix(0.5, per="word")
    with pytest.raises(UnforcedError, match="own"):
        Mix(0.5, own=Gold())


@pytest.mark.parametrize("feed", [Gold(), Mix(0.5)])
def test_gold_feeds_without_gold_are_errors(feed, tiny_model, padded_batch):
    model = tiny_model("gru")
    with pytest.raises(UnforcedError, match="gold"):
        rollout(model, encoded(model, padded_batch), feed, batch_size=4, max_len=5)


def test_rollout_needs_a_batch_size_and_a_length(tiny_model, padded_batch):
    model = tiny_model("gru")
    memory = encoded(model, padded_batch)
    with pytest.raises(UnforcedError):
        rollout(model, memory, Greedy(), max_len=5)
    with pytest.raises(UnforcedError):
        rollout(model, memory, Greedy(), batch_size=4)


def test_beam_size_must_be_positive(tiny_model, padded_batch):
    model = tiny_model("gru")
    with pytest.raises(UnforcedError, match="beam_size"):
        beam_search(model, encoded(model, padded_batch), beam_size=0, max_len=3, batch_size=4)
