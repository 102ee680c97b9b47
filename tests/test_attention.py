"""Attention maps: teacher-forced against free-running on one source, and where they part."""

from __future__ import annotations

import pytest
import torch
from conftest import TEST_THREADS

from unforced.diagnostics.attention import attention_maps, draw_attention
from unforced.rollout import Greedy, rollout
from unforced.tasks import get_task

torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="module")
def copy_task():
    return get_task("copy", size=40, length=6, min_length=4, symbols=8, seed=0)  # vocabulary 12


def test_maps_are_row_stochastic_and_equal_forced_attention(tiny_model, copy_task):
    model = tiny_model("gru", layers=1)
    maps = attention_maps(model, copy_task, "test", index=0)
    batch = copy_task.collate([copy_task.test[0]])
    real = int(batch.source_mask[0].sum())
    assert len(maps["source_tokens"]) == real
    assert maps["source_tokens"] == copy_task.test[0][0].split()
    for key in ("teacher_forced", "free_running"):
        weights = torch.tensor(maps[key])
        assert weights.shape == (batch.gold.shape[1], real)
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-5)
        assert bool((weights >= 0).all())
    with torch.no_grad():
        memory = model.encode(batch.source, batch.source_mask)
        expected = model.forced(memory, batch.inputs).attention[0, :, :real]
    assert torch.allclose(torch.tensor(maps["teacher_forced"]), expected, atol=1e-6)
    assert maps["teacher_forced_tokens"][-1] == "<eos>"


def test_free_running_map_equals_stepping(tiny_model, copy_task):
    model = tiny_model("gru", layers=1)
    maps = attention_maps(model, copy_task, "test", index=1)
    batch = copy_task.collate([copy_task.test[1]])
    with torch.no_grad():
        memory = model.encode(batch.source, batch.source_mask)
        state = model._initial_state(memory)
        fed = torch.tensor([1])  # <bos>
        rows = []
        for _ in range(batch.gold.shape[1]):
            out, state = model.decoder(model.embed(fed).unsqueeze(1), state)
            logits, _, weights = model._attend(memory, out)
            rows.append(weights[0, 0])
            fed = logits[:, 0].argmax(-1)
    stepped = torch.stack(rows)[:, : len(maps["source_tokens"])]
    assert torch.allclose(torch.tensor(maps["free_running"]), stepped, atol=1e-5)


def test_parting_position_is_where_the_fed_tokens_first_differ(tiny_model, copy_task):
    model = tiny_model("gru", layers=1)  # untrained: its greedy path leaves gold at once
    for index in range(3):
        maps = attention_maps(model, copy_task, "test", index=index)
        batch = copy_task.collate([copy_task.test[index]])
        with torch.no_grad():
            memory = model.encode(batch.source, batch.source_mask)
            free = rollout(model, memory, Greedy(), max_len=batch.gold.shape[1], batch_size=1, stop_at_eos=False)
        differ = (free.inputs[0] != batch.inputs[0]).nonzero()
        assert len(differ), "the untrained model should leave the gold path"
        assert maps["parting_position"] == int(differ[0, 0])
        assert maps["parting_position"] >= 0
        parting = maps["parting_position"]
        # Before the parting the two decodings were fed the same tokens, so their rows agree.
        assert all(tv < 1e-6 for tv in maps["total_variation"][:parting])
        assert maps["teacher_forced_inputs"][:parting] == maps["free_running_inputs"][:parting]


def test_transformer_gives_none(tiny_model, copy_task):
    assert attention_maps(tiny_model("transformer"), copy_task) is None
    assert attention_maps(tiny_model("decoder_only"), copy_task) is None


def test_draw_writes_a_png(tiny_model, copy_task, tmp_path):
    maps = attention_maps(tiny_model("lstm", layers=1), copy_task, "test", index=0)
    path = draw_attention(maps, tmp_path / "figures" / "attention.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
