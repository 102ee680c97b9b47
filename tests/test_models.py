"""The Model contract: `forced` equals stepping, row selection keeps outputs, configs name their bad field."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unforced.errors import UnforcedError
from unforced.models import ModelConfig, build_model, repeat_rows, select_rows
from unforced.vocab import BOS

KINDS = ("gru", "lstm", "transformer", "decoder_only")
ATOL = 1e-5
SETTINGS = settings(derandomize=True, deadline=None, max_examples=12)

pytestmark = pytest.mark.usefixtures("single_thread")


def step_through(model, memory, inputs, state=None):
    """Logits (batch, time, vocab), hidden (batch, time, hidden) and the final state of stepping `inputs`."""
    state = model.start(memory, inputs.shape[0]) if state is None else state
    logits, hidden = [], []
    for t in range(inputs.shape[1]):
        step_logits, step_hidden, state = model.step(memory, state, inputs[:, t])
        logits.append(step_logits)
        hidden.append(step_hidden)
    return torch.stack(logits, 1), torch.stack(hidden, 1), state


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_forced_equals_stepping_with_gold_feeds(kind, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    forced = model.forced(memory, padded_batch.inputs)
    logits, hidden, _ = step_through(model, memory, padded_batch.inputs)
    b, t = padded_batch.inputs.shape
    assert forced.logits.shape == (b, t, 12)
    assert forced.hidden.shape == (b, t, 16)
    assert torch.isfinite(forced.logits).all()
    assert_close(forced.logits, logits)
    assert_close(forced.hidden, hidden)


@pytest.mark.parametrize("kind", KINDS)
@given(rows=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 8)), min_size=1, max_size=4),
       seed=st.integers(0, 1000))
@SETTINGS
@torch.no_grad()
def test_forced_equals_stepping_for_any_lengths(kind, rows, seed, tiny_model, batch_factory):
    model = tiny_model(kind)
    batch = batch_factory([s for s, _ in rows], [t for _, t in rows], seed=seed)
    memory = model.encode(batch.source, batch.source_mask)
    forced = model.forced(memory, batch.inputs)
    logits, hidden, _ = step_through(model, memory, batch.inputs)
    assert_close(forced.logits, logits)
    assert_close(forced.hidden, hidden)


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_each_row_is_independent_of_padding_and_of_other_rows(kind, tiny_model, batch_factory):
    """A row alone, unpadded, gives the same outputs on its real positions as inside a padded batch."""
    model = tiny_model(kind)
    source_lengths, target_lengths = [5, 2, 1, 4], [3, 7, 1, 5]
    batch = batch_factory(source_lengths, target_lengths, seed=3, source_width=8)
    forced = model.forced(model.encode(batch.source, batch.source_mask), batch.inputs)
    for row, (s, t) in enumerate(zip(source_lengths, target_lengths, strict=True)):
        source = batch.source[row: row + 1, :s]
        alone = model.forced(model.encode(source, source != 0), batch.inputs[row: row + 1, :t])
        assert_close(forced.logits[row: row + 1, :t], alone.logits)
        assert_close(forced.hidden[row: row + 1, :t], alone.hidden)


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_outputs_depend_on_the_source(kind, tiny_model, batch_factory):
    """Guards the tests above against a model that ignores its source (which would pass them trivially)."""
    model = tiny_model(kind)
    first = batch_factory([4, 4], [3, 3], seed=0)
    second = batch_factory([4, 4], [3, 3], seed=0)
    second.source[:, 0] = torch.where(first.source[:, 0] == 4, 5, 4)
    a = model.forced(model.encode(first.source, first.source_mask), first.inputs).logits
    b = model.forced(model.encode(second.source, second.source_mask), first.inputs).logits
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_repeat_rows_of_memory_equals_encoding_the_repeated_source(kind, tiny_model, padded_batch):
    model = tiny_model(kind)
    times = 3
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    repeated = repeat_rows(memory, times)
    recomputed = model.encode(padded_batch.source.repeat_interleave(times, 0),
                              padded_batch.source_mask.repeat_interleave(times, 0))
    inputs = padded_batch.inputs.repeat_interleave(times, 0)
    logits, hidden, _ = step_through(model, repeated, inputs)
    expected_logits, expected_hidden, _ = step_through(model, recomputed, inputs)
    assert_close(logits, expected_logits)
    assert_close(hidden, expected_hidden)
    # Row r of the original became rows r*times .. r*times + times - 1.
    original, _, _ = step_through(model, memory, padded_batch.inputs)
    assert_close(logits, original.repeat_interleave(times, 0))


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_select_rows_of_state_mid_decoding_equals_recomputing(kind, tiny_model, padded_batch):
    """Reorder and duplicate rows of memory and state after two steps (what beam search does)."""
    model = tiny_model(kind)
    index = torch.tensor([2, 0, 0, 3, 1, 2])
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    inputs = padded_batch.inputs
    _, _, state = step_through(model, memory, inputs[:, :2])
    selected_memory, selected_state = select_rows(memory, index), select_rows(state, index)
    logits, hidden, _ = step_through(model, selected_memory, inputs[index, 2:], state=selected_state)

    recomputed = model.encode(padded_batch.source[index], padded_batch.source_mask[index])
    expected_logits, expected_hidden, _ = step_through(model, recomputed, inputs[index])
    assert_close(logits, expected_logits[:, 2:])
    assert_close(hidden, expected_hidden[:, 2:])


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_repeat_rows_of_state_mid_decoding(kind, tiny_model, padded_batch):
    model = tiny_model(kind)
    memory = model.encode(padded_batch.source, padded_batch.source_mask)
    _, _, state = step_through(model, memory, padded_batch.inputs[:, :3])
    logits, hidden, _ = step_through(model, repeat_rows(memory, 2), padded_batch.inputs[:, 3:].repeat_interleave(2, 0),
                                     state=repeat_rows(state, 2))
    expected_logits, expected_hidden, _ = step_through(model, memory, padded_batch.inputs)
    assert_close(logits, expected_logits[:, 3:].repeat_interleave(2, 0))
    assert_close(hidden, expected_hidden[:, 3:].repeat_interleave(2, 0))


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_different_source_and_target_vocabularies(kind, tiny_model, batch_factory):
    model = tiny_model(kind, source_vocab=20, target_vocab=7)
    batch = batch_factory([4, 2, 3], [5, 2, 4], source_vocab=20, target_vocab=7, seed=5)
    batch.source[0, :2] = torch.tensor([19, 18])  # ids beyond the target vocabulary
    memory = model.encode(batch.source, batch.source_mask)
    forced = model.forced(memory, batch.inputs)
    assert forced.logits.shape == (3, 5, 7)
    assert torch.isfinite(forced.logits).all()
    logits, hidden, _ = step_through(model, memory, batch.inputs)
    assert_close(forced.logits, logits)
    assert_close(forced.hidden, hidden)
    first_logits, _, _ = model.step(memory, model.start(memory, 3), torch.full((3,), BOS))
    assert first_logits.shape == (3, 7)


def test_decoder_only_source_ids_may_exceed_the_target_vocabulary(tiny_model, batch_factory):
    """The source prefix is embedded with its own table: changing a source id beyond the target vocabulary
    changes the outputs (it is read, not clipped or shared with a target id)."""
    model = tiny_model("decoder_only", source_vocab=30, target_vocab=6)
    batch = batch_factory([3], [3], source_vocab=30, target_vocab=6, seed=2)
    with torch.no_grad():
        outputs = []
        for symbol in (25, 29):
            batch.source[0, 1] = symbol
            outputs.append(model.forced(model.encode(batch.source, batch.source_mask), batch.inputs).logits)
    assert (outputs[0] - outputs[1]).abs().max() > 1e-4


def test_dropout_zero_in_train_mode_is_deterministic(batch_factory):
    model = build_model(ModelConfig(kind="transformer", source_vocab=12, target_vocab=12, hidden=16, heads=2,
                                    dropout=0.0)).train()
    batch = batch_factory([3, 2], [4, 2])
    memory = model.encode(batch.source, batch.source_mask)
    first = model.forced(memory, batch.inputs).logits
    second = model.forced(memory, batch.inputs).logits
    assert torch.equal(first, second)


def base_config(**changes):
    fields = dict(kind="transformer", source_vocab=12, target_vocab=12, hidden=16, heads=2, dropout=0.0)
    fields.update(changes)
    return fields


@pytest.mark.parametrize(("changes", "names"), [
    ({"kind": "rnn"}, ["kind"]),
    ({"kind": ""}, ["kind"]),
    ({"kind": "transformer", "hidden": 15, "heads": 4}, ["hidden", "heads"]),
    ({"kind": "decoder_only", "hidden": 16, "heads": 3}, ["hidden", "heads"]),
    ({"dropout": -0.1}, ["dropout"]),
    ({"dropout": 1.0}, ["dropout"]),
    ({"dropout": math.nan}, ["dropout"]),
    ({"source_vocab": 0}, ["source_vocab"]),
    ({"target_vocab": 0}, ["target_vocab"]),
    ({"hidden": 0}, ["hidden"]),
    ({"layers": 0}, ["layers"]),
    ({"heads": 0}, ["heads"]),
])
def test_model_config_bad_values_name_the_field(changes, names):
    with pytest.raises(UnforcedError) as error:
        ModelConfig(**base_config(**changes))
    for name in names:
        assert name in str(error.value)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_heads_do_not_constrain_rnn_hidden_size(kind):
    config = ModelConfig(**base_config(kind=kind, hidden=15, heads=4, embedding=8))
    model = build_model(config)
    assert model.config.hidden == 15


@pytest.mark.parametrize("kind", KINDS)
def test_build_model_builds_each_kind(kind):
    model = build_model(ModelConfig(**base_config(kind=kind)))
    assert model.config.kind == kind
    assert sum(p.numel() for p in model.parameters()) > 0
