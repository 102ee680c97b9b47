"""Hugging Face models behind the Model contract (tiny T5 and GPT-2 from configs), and tasks from tables."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TEST_THREADS
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from unforced.diagnostics.gap import evaluate
from unforced.errors import UnforcedError
from unforced.models import repeat_rows, select_rows
from unforced.models.hf import (
    HFTokenizerAdapter,
    HuggingFaceModel,
    load_hf_model,
    special_permutation,
)
from unforced.rollout import Greedy, Sample, beam_search, rollout
from unforced.strategies import make_strategy
from unforced.strategies.base import TaskBound
from unforced.tasks import get_task
from unforced.tasks.tables import table_task
from unforced.train import TrainConfig, Trainer

torch.set_num_threads(TEST_THREADS)
KINDS = ("t5", "gpt2")


def tiny(kind: str, vocab: int, seed: int = 0):
    """A tiny Hugging Face model whose special ids are the library's (pad 0, bos 1, eos 2), dropout off."""
    torch.manual_seed(seed)
    if kind == "t5":
        config = T5Config(vocab_size=vocab, d_model=32, d_kv=16, num_layers=1, num_heads=2, d_ff=64,
                          decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, dropout_rate=0.0)
        return T5ForConditionalGeneration(config)
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=64, bos_token_id=1,
                        eos_token_id=2, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def task():
    return get_task("copy", size=60, length=4)


def batch_of(task, rows: int = 4):
    return task.collate(task.train[:rows])


@pytest.mark.parametrize("kind", KINDS)
def test_forced_equals_stepped_with_gold_feeds(kind, task):
    model = HuggingFaceModel(tiny(kind, task.target_tokenizer.vocab_size)).eval()
    batch = batch_of(task)
    assert bool((~batch.source_mask).any())  # right padding is exercised
    memory = model.encode(batch.source, batch.source_mask)
    forced = model.forced(memory, batch.inputs)
    stepped = rollout(model, memory, Gold_feed(), gold=batch.gold, stop_at_eos=False)
    assert forced.logits.shape == (len(batch), batch.gold.shape[1], task.target_tokenizer.vocab_size)
    assert forced.hidden.shape == (len(batch), batch.gold.shape[1], 32)
    # Rollout feeds <eos> where collate's inputs hold <pad>: the two agree up to each row's <eos>.
    scored = batch.gold_mask
    torch.testing.assert_close(stepped.logits[scored], forced.logits[scored], atol=1e-4, rtol=0)
    torch.testing.assert_close(stepped.hidden[scored], forced.hidden[scored], atol=1e-4, rtol=0)
    # Embeddings in place of ids give the same pass.
    again = model.forced(memory, batch.inputs, embeddings=model.embed(batch.inputs))
    torch.testing.assert_close(again.logits, forced.logits, atol=1e-5, rtol=0)
    assert model.output_embedding().shape == (task.target_tokenizer.vocab_size, 32)


def Gold_feed():  # noqa: N802
    from unforced.rollout import Gold

    return Gold()


@pytest.mark.parametrize("kind", KINDS)
def test_repeat_and_select_rows_of_state(kind, task):
    model = HuggingFaceModel(tiny(kind, task.target_tokenizer.vocab_size)).eval()
    batch = batch_of(task, 3)
    memory = model.encode(batch.source, batch.source_mask)
    state = model.start(memory, 3)
    logits, _, state = model.step(memory, state, batch.inputs[:, 0])
    logits, _, state = model.step(memory, state, batch.inputs[:, 1])
    expected, _, _ = model.step(memory, state, batch.inputs[:, 2])
    repeated, _, _ = model.step(repeat_rows(memory, 2), repeat_rows(state, 2), batch.inputs[:, 2].repeat_interleave(2))
    torch.testing.assert_close(repeated, expected.repeat_interleave(2, 0), atol=1e-5, rtol=0)
    order = torch.tensor([2, 0, 1])
    selected, _, _ = model.step(select_rows(memory, order), select_rows(state, order), batch.inputs[order, 2])
    torch.testing.assert_close(selected, expected[order], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_rollouts_and_beam_search_run(kind, task):
    model = HuggingFaceModel(tiny(kind, task.target_tokenizer.vocab_size)).eval()
    batch = batch_of(task)
    memory = model.encode(batch.source, batch.source_mask)
    with torch.no_grad():
        greedy = rollout(model, memory, Greedy(), max_len=6, batch_size=len(batch))
        sampled = rollout(model, memory, Sample(temperature=1.0), max_len=6, batch_size=len(batch),
                          generator=torch.Generator().manual_seed(0))
        tokens, scores = beam_search(model, memory, beam_size=3, max_len=6, batch_size=len(batch))
    assert greedy.tokens.shape[0] == sampled.tokens.shape[0] == tokens.shape[0] == len(batch)
    assert torch.isfinite(scores).all()
    # Beam search of width 1 is greedy decoding.
    with torch.no_grad():
        one, _ = beam_search(model, memory, beam_size=1, max_len=6, batch_size=len(batch))
    width = min(one.shape[1], greedy.tokens.shape[1])
    first = greedy.mask[:, :width]
    assert torch.equal(one[:, :width][first], greedy.tokens[:, :width][first])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", ["teacher_forcing", "parallel_scheduled_sampling", "reinforce"])
def test_trainer_steps_change_the_loss(kind, strategy, task, tmp_path):
    model = HuggingFaceModel(tiny(kind, task.target_tokenizer.vocab_size))
    model.check_task(task)
    options = {"parallel_scheduled_sampling": {"schedule": "constant", "schedule_params": {"ratio": 0.5}},
               "reinforce": {"reward": "bleu", "samples": 2}}.get(strategy)
    made = make_strategy(strategy, options)
    if isinstance(made, TaskBound):
        made.bind(task)
    config = TrainConfig(steps=6, batch_size=8, learning_rate=1e-2, warmup=0, eval_every=0, log_every=1, seed=0)
    trainer = Trainer(model, task, made, config, tmp_path / "checkpoints", tmp_path / "metrics.jsonl", tag=strategy)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = trainer.fit()
    assert result["steps"] == 6 and result["skipped_steps"] == 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    losses = [__import__("json").loads(line)["loss"] for line in lines]
    assert all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    if strategy != "reinforce":  # REINFORCE's loss is not a quantity that must fall
        assert losses[-1] < losses[0]


@pytest.mark.parametrize("kind", KINDS)
def test_gap_evaluate_is_finite(kind, task):
    model = HuggingFaceModel(tiny(kind, task.target_tokenizer.vocab_size))
    figures = evaluate(model, task, "test", batch_size=8, limit=8)
    assert math.isfinite(figures["tf_nll"]) and math.isfinite(figures["fr_nll"])
    assert 0.0 <= figures["fr_token_acc"] <= 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_offline_gives_identical_logits(kind, task, tmp_path):
    model = HuggingFaceModel(tiny(kind, task.target_tokenizer.vocab_size)).eval()
    model.model.save_pretrained(tmp_path)
    loaded = load_hf_model(tmp_path)
    assert loaded.tokenizer is None and loaded.library_to_model is None
    assert loaded.config.is_encoder_decoder == (kind == "t5")
    batch = batch_of(task)
    with torch.no_grad():
        expected = model.forced(model.encode(batch.source, batch.source_mask), batch.inputs).logits
        got = loaded.forced(loaded.encode(batch.source, batch.source_mask), batch.inputs).logits
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_load_refuses_a_missing_directory(tmp_path):
    with pytest.raises(UnforcedError, match="cannot load"):
        load_hf_model(tmp_path / "nothing")


def test_special_ids_are_remapped_through_a_permutation(task):
    # A model whose own specials sit elsewhere (pad 7, start 9, end 8) behaves, in library ids, exactly as the same
    # model with its rows permuted: the permutation swaps 7/9/8 into 0/1/2.
    vocab = task.target_tokenizer.vocab_size
    permutation = special_permutation(vocab, pad=7, bos=9, eos=8)
    assert permutation[:3].tolist() == [7, 9, 8] and sorted(permutation.tolist()) == list(range(vocab))
    base = tiny("gpt2", vocab)
    shuffled = tiny("gpt2", vocab)
    with torch.no_grad():
        for table in (shuffled.transformer.wte.weight,):
            table[permutation] = base.transformer.wte.weight.clone()
    wrapped = HuggingFaceModel(shuffled, library_to_model=permutation).eval()
    plain = HuggingFaceModel(base).eval()
    batch = batch_of(task)
    with torch.no_grad():
        a = plain.forced(plain.encode(batch.source, batch.source_mask), batch.inputs).logits
        b = wrapped.forced(wrapped.encode(batch.source, batch.source_mask), batch.inputs).logits
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    with pytest.raises(UnforcedError, match="distinct"):
        special_permutation(vocab, pad=7, bos=8, eos=8)


def test_tokenizer_adapter_maps_ids():
    class Tiny:  # a stand-in for a transformers tokenizer: one id per word
        words = ["<s>", "</s>", "<p>", "a", "b", "c"]

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [self.words.index(w) for w in text.split()]}

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(self.words[i] for i in ids)

    permutation = special_permutation(6, pad=2, bos=0, eos=1)
    adapter = HFTokenizerAdapter(Tiny(), permutation, 6)
    ids = adapter.encode("a c b")
    assert all(i > 2 for i in ids)
    assert adapter.decode(ids + [2, 4]) == "a c b"
    assert adapter.kind == "hf" and adapter.vocab_size == 6


def test_decoder_only_needs_a_shared_vocabulary():
    task = get_task("toy-translation")
    model = HuggingFaceModel(tiny("gpt2", max(task.source_tokenizer.vocab_size, task.target_tokenizer.vocab_size)))
    with pytest.raises(UnforcedError, match="shared vocabulary"):
        model.check_task(task)


# ---- tables ----------------------------------------------------------------------------------------------------
def test_table_task_from_csv_with_named_columns(tmp_path):
    path = tmp_path / "pairs.csv"
    rows = [f'"hello, {i}",bonjour {i},x' for i in range(20)]
    path.write_text("question,answer,other\n" + "\n".join(rows) + "\n", encoding="utf-8")
    task = table_task(path, source_column="question", target_column="answer")
    assert len(task.train) + len(task.valid) + len(task.test) == 20
    assert ("hello, 3", "bonjour 3") in task.train + task.valid + task.test
    assert task.valid and task.test
    again = table_task(path, source_column="question", target_column="answer")
    assert again.train == task.train  # deterministic


def test_table_task_split_column_and_tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    splits = ["train"] * 4 + ["validation", "test"]
    path.write_text("src\ttgt\tsplit\n" + "".join(f"a {i}\tb {i}\t{s}\n" for i, s in enumerate(splits)))
    task = table_task(path, source_column="src", target_column="tgt", split_column="split")
    assert len(task.train) == 4 and task.valid == [("a 4", "b 4")] and task.test == [("a 5", "b 5")]


def test_table_task_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("source,target\na,b\n")
    with pytest.raises(UnforcedError, match=r"pairs.csv:1: no column\(s\) 'answer'"):
        table_task(path, target_column="answer")
    path.write_text("source,target\na,b\nc\n")
    with pytest.raises(UnforcedError, match=r"pairs.csv:3: missing column\(s\) 'target'"):
        table_task(path)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"source": "a", "target": "b"}\n{"source": "c"}\n')
    with pytest.raises(UnforcedError, match=r"pairs.jsonl:2: missing column\(s\) 'target'"):
        table_task(jsonl)
    with pytest.raises(UnforcedError, match="must end in"):
        table_task(tmp_path / "pairs.txt")


class DuckSplit(list):
    """The duck type of a `datasets.Dataset`: iterable rows (dicts) and `column_names`."""

    @property
    def column_names(self):
        return list(self[0]) if self else []


def test_table_task_from_a_dataset_duck_type():
    def rows(n, offset=0):
        return DuckSplit({"en": f"w {i}", "fr": f"m {i}"} for i in range(offset, offset + n))

    single = table_task(rows(10), source_column="en", target_column="fr")
    assert len(single.train) + len(single.valid) + len(single.test) == 10
    splits = table_task({"train": rows(6), "validation": rows(2, 6), "test": rows(2, 8)},
                        source_column="en", target_column="fr")
    assert len(splits.train) == 6 and splits.valid[0] == ("w 6", "m 6") and splits.test[-1] == ("w 9", "m 9")
    with pytest.raises(UnforcedError, match=r"dataset train: no column\(s\) 'de'"):
        table_task({"train": rows(6)}, source_column="en", target_column="de")
    with pytest.raises(UnforcedError, match="no 'train' split"):
        table_task({"test": rows(3)}, source_column="en", target_column="fr")


def test_load_with_a_tokenizer_remaps_gpt2_style_specials(tmp_path):
    # GPT-2's layout: no pad, and one <|endoftext|> for both start and end. Loading adds a pad and a start token,
    # and maps every id so that the library sees pad 0, bos 1, eos 2.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["a", "b", "c", "d", "<|endoftext|>"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=5, n_embd=16, n_layer=1, n_head=2, n_positions=32, bos_token_id=4,
                               eos_token_id=4)).save_pretrained(tmp_path)
    model = load_hf_model(tmp_path)
    assert model.library_to_model[2] == 4  # the library's <eos> is the model's <|endoftext|>
    ids = model.tokenizer.encode("a b d")
    assert min(ids) > 2 and model.tokenizer.decode(ids + [2, 5]) == "a b d"
    source = torch.tensor([ids])
    result = rollout(model, model.encode(source, source != 0), Greedy(), max_len=4, batch_size=1)
    assert result.logits.shape[-1] == model.config.target_vocab == 7


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_run_and_gap_on_a_saved_model_from_the_command_line(kind, tmp_path, capsys):
    import json

    import yaml

    from unforced.cli import main

    copy_task = get_task("copy", size=120, length=4)
    directory = tmp_path / kind
    tiny(kind, copy_task.target_tokenizer.vocab_size).save_pretrained(directory)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "preset": "quick", "task_options": {"size": 120, "length": 4}, "test_limit": 12, "diagnostics_limit": 8,
        "train": {"steps": 6, "batch_size": 8, "eval_every": 0, "checkpoint_every": 3},
        "strategy_options": {"parallel_scheduled_sampling": {"schedule": "constant",
                                                             "schedule_params": {"ratio": 0.5}},
                             "reinforce": {"samples": 2}}}))
    out = tmp_path / "run"

    def call(*args):
        import sys

        old, sys.argv = sys.argv, ["unforced", *args]
        try:
            main()
        except SystemExit as exit_:
            assert exit_.code in (0, None), capsys.readouterr().err
        finally:
            sys.argv = old
        return capsys.readouterr().out

    results = json.loads(call("run", "--task", "copy", "--model", f"hf:{directory}", "--strategies",
                              "teacher_forcing,parallel_scheduled_sampling,reinforce:4", "--config", str(config),
                              "--out", str(out), "--json"))
    assert list(results["strategies"]) == ["teacher_forcing", "parallel_scheduled_sampling", "reinforce:4"]
    assert results["model"]["kind"] == "hf"
    gap = json.loads(call("gap", str(out), "--limit", "8", "--json"))
    for entry in gap["strategies"].values():
        assert math.isfinite(entry["tf_nll"]) and math.isfinite(entry["fr_nll"])
        assert entry["diagnostics"]["sweep"]["nll"][-1] == pytest.approx(entry["tf_nll"], rel=1e-4)


def test_a_csv_with_named_columns_is_a_task_by_path(tmp_path):
    from unforced.tasks import get_task as task_by_name

    path = tmp_path / "pairs.csv"
    rows = "\n".join(f"{i},s{i} a,t{i} b" for i in range(12))
    path.write_text("id,english,spanish\n" + rows + "\n")
    task = task_by_name(str(path), source_column="english", target_column="spanish")
    assert len(task.train) + len(task.valid) + len(task.test) == 12
    assert ("s0 a", "t0 b") in task.train + task.valid + task.test
    with pytest.raises(UnforcedError, match="english"):
        task_by_name(str(path), source_column="english")  # no 'target' column: named in the error


def test_a_saved_hf_tokenizer_reads_back_without_the_model(tmp_path, monkeypatch):
    # tokenizers.json keeps the fast tokenizer's own JSON: reading it back loads no model, and the restored
    # tokenizer encodes and decodes exactly as the adapter does (ids permuted the same way).
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    import unforced.models.hf as hf_module
    from unforced.tasks.tokenizers import SavedHFTokenizer, tokenizer_from_json

    words = ["a", "b", "c", "d", "<|endoftext|>"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=5, n_embd=16, n_layer=1, n_head=2, n_positions=32, bos_token_id=4,
                               eos_token_id=4)).save_pretrained(tmp_path)
    adapter = load_hf_model(tmp_path).tokenizer

    def no_model(*args, **kwargs):
        raise AssertionError("reading a saved tokenizer loaded a model")

    monkeypatch.setattr(hf_module, "load_hf_model", no_model)
    saved = tokenizer_from_json(adapter.to_json())
    assert isinstance(saved, SavedHFTokenizer) and saved.vocab_size == adapter.vocab_size == 7
    for text in ["a b d", "d c b a a", "", "c  c"]:
        assert saved.encode(text) == adapter.encode(text)
    for ids in [adapter.encode("a b d"), [1, 4, 5, 6, 2, 5], [0, 3, 4], list(range(7)), [2]]:
        assert saved.decode(ids) == adapter.decode(ids)
    assert tokenizer_from_json(saved.to_json()).encode("b a") == adapter.encode("b a")


def test_a_saved_tokenizer_record_without_its_json_is_refused_by_name():
    import json as json_module

    from unforced.tasks.tokenizers import tokenizer_from_json

    with pytest.raises(UnforcedError, match="slow \\(Python\\) tokenizer or from an older version"):
        tokenizer_from_json(json_module.dumps({"kind": "hf", "name_or_path": "somewhere"}))
