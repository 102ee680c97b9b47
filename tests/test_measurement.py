"""The user's own model where it lives: `unforced.measure` on a library model and on a transformers model, and the
callbacks inside a transformers Trainer and a Lightning Trainer, which must leave the training run unchanged."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from conftest import TEST_THREADS
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

import unforced
from unforced.errors import UnforcedError
from unforced.models import ModelConfig, build_model
from unforced.tasks import get_task

torch.set_num_threads(TEST_THREADS)
LETTERS = list("abcdefgh")


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer whose specials sit at the library's ids (pad 0, bos 1, eos 2, unk 3)."""
    words = ["<pad>", "<s>", "</s>", "<unk>", *LETTERS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_hf(kind: str, vocab: int, dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "t5":
        return T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=32, d_kv=16, num_layers=1, num_heads=2,
                                                   d_ff=64, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2,
                                                   dropout_rate=dropout))
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0, resid_pdrop=dropout,
                                      embd_pdrop=dropout, attn_pdrop=dropout))


def copy_pairs(count: int, seed: int = 0, length: int = 4) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = " ".join(rng.choices(LETTERS, k=rng.randint(2, length)))
        pairs.append((words, [words, " ".join(reversed(words.split()))]))
    return pairs


def test_measure_a_library_model_leaves_it_as_it_was(tmp_path):
    task = get_task("copy", size=80, length=4)
    model = build_model(ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                                    target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=16))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    report = unforced.measure(model, [(e.source, e.references) for e in task.test], tokenizer=task.target_tokenizer,
                              metric="exact_match", beam_size=2, diagnostics_limit=8)
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG state is put back
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    figures = report.figures
    assert math.isfinite(figures["tf_nll"]) and math.isfinite(figures["fr_nll"]) and figures["fr_nll"] > 0
    assert figures["metric"]["name"] == "exact_match" and figures["metric"]["beam_size"] == 2
    assert {"sweep", "divergence", "recovery", "prefix_swap"} <= set(report.diagnostics)
    document = json.loads(report.to_json())
    assert document["strategies"]["model"]["tf_nll"] == figures["tf_nll"] and document["signature"]["nrefs"] == 1
    page = report.save_report(tmp_path / "measured")
    assert page.exists() and "Exposure-bias report" in page.read_text()
    assert json.loads((tmp_path / "measured" / "results.json").read_text())["strategies"]["model"]["fr_nll"] > 0


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_measure_a_transformers_model_with_its_tokenizer(kind):
    tokenizer = word_tokenizer()
    model = tiny_hf(kind, len(tokenizer))
    model.train()
    report = unforced.measure(model, copy_pairs(24), tokenizer=tokenizer, metric="chrf", diagnostics=False)
    assert model.training  # put back after the measurement
    assert report.diagnostics is None and report.figures["metric"]["nrefs"] == 2
    assert math.isfinite(report.figures["tf_nll"]) and math.isfinite(report.figures["fr_nll"])
    assert 0 < report.figures["tf_nll"] < 2 * math.log(len(tokenizer))  # untrained: not far from uniform


def test_bad_input_to_measure_is_refused_by_name():
    tokenizer = word_tokenizer()
    model = tiny_hf("gpt2", len(tokenizer))
    with pytest.raises(UnforcedError, match="no examples"):
        unforced.measure(model, [], tokenizer=tokenizer)
    with pytest.raises(UnforcedError, match=r"data\[1\]: expected a \(source, references\) pair"):
        unforced.measure(model, [("a b", "a b"), ("a",)], tokenizer=tokenizer)
    with pytest.raises(UnforcedError, match=r"data\[0\]: references must be"):
        unforced.measure(model, [("a b", [])], tokenizer=tokenizer)
    with pytest.raises(UnforcedError, match="unknown metric 'blue'"):
        unforced.measure(model, copy_pairs(2), tokenizer=tokenizer, metric="blue")
    with pytest.raises(UnforcedError, match="not a model of the library's contract"):
        unforced.measure(torch.nn.Linear(2, 2), copy_pairs(2), tokenizer=tokenizer)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, bos_token_id=2,
                                      eos_token_id=2))
    with pytest.raises(UnforcedError, match="needs distinct pad, bos_token_id and eos ids"):
        unforced.measure(gpt2, copy_pairs(2), tokenizer=tokenizer)


def lm_dataset(tokenizer, pairs, width: int = 12):
    """Causal-LM rows for a transformers Trainer: prompt, <s>, target, </s>, padded; loss on the target only."""
    rows = []
    for source, references in pairs:
        prompt = tokenizer(source, add_special_tokens=False)["input_ids"]
        target = tokenizer(references[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + [tokenizer.bos_token_id] + target)[:width]
        labels = ([-100] * (len(prompt) + 1) + target)[:width]
        pad = width - len(ids)
        rows.append({"input_ids": torch.tensor(ids + [0] * pad), "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
                     "labels": torch.tensor(labels + [-100] * pad)})
    return rows


def train_with_hf_trainer(tmp_path, callback_out=None, steps: int = 6):
    from transformers import Trainer, TrainingArguments

    from unforced.callbacks import GapCallback

    tokenizer = word_tokenizer()
    model = tiny_hf("gpt2", len(tokenizer), dropout=0.1)
    arguments = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=8,
                                  learning_rate=1e-2, logging_steps=2, report_to=[], save_strategy="no", seed=3,
                                  use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=arguments, train_dataset=lm_dataset(tokenizer, copy_pairs(64)))
    if callback_out is not None:
        trainer.add_callback(GapCallback(copy_pairs(16, seed=1), tokenizer, every=2, metric="chrf",
                                         out=callback_out, trainer=trainer))
    trainer.train()
    return trainer, model


def test_the_transformers_callback_logs_the_gap_and_changes_nothing(tmp_path):
    from unforced.report import build_report
    from unforced.runfiles import read_metrics

    out = tmp_path / "gap"
    trainer, model = train_with_hf_trainer(tmp_path, callback_out=out)
    logged = [entry for entry in trainer.state.log_history if "unforced/fr_nll" in entry]
    assert [entry["step"] for entry in logged] == [2, 4, 6]
    assert all(math.isfinite(entry["unforced/gap_pct"]) and "unforced/fr_chrf" in entry for entry in logged)
    lines = read_metrics(out / "metrics.jsonl")
    assert [line["step"] for line in lines] == [2, 4, 6]
    assert lines[-1]["eval"]["fr_nll"] == pytest.approx(logged[-1]["unforced/fr_nll"])
    assert json.loads((out / "results.json").read_text())["strategies"]["model"]["metric"]["name"] == "chrf"
    assert build_report(out).exists()
    # Dropout is on, so a callback that moved any random state or left the model in eval mode would change this.
    _, plain = train_with_hf_trainer(tmp_path / "plain")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values(),
                                                  strict=True))


def test_the_lightning_callback_logs_the_gap_and_changes_nothing(tmp_path):
    import lightning.pytorch as pl

    from unforced.callbacks import lightning_gap_callback
    from unforced.runfiles import read_metrics
    from unforced.strategies.teacher_forcing import TeacherForcing

    task = get_task("copy", size=96, length=4)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = build_model(ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                                                 target_vocab=task.target_tokenizer.vocab_size, embedding=16,
                                                 hidden=16, dropout=0.2))
            self.logged: list[dict] = []

        def training_step(self, batch, index):
            return TeacherForcing().loss(self.model, batch, index).loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

        def log_dict(self, values, *args, **kwargs):
            self.logged.append(dict(values))
            super().log_dict(values, *args, **kwargs)

    def fit(callbacks):
        module = Module()
        loader = torch.utils.data.DataLoader(task.train, batch_size=16, collate_fn=task.collate)
        trainer = pl.Trainer(max_steps=4, callbacks=callbacks, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
        pl.seed_everything(1, verbose=False)
        trainer.fit(module, loader)
        return module

    out = tmp_path / "gap"
    measured = fit([lightning_gap_callback([(e.source, e.references) for e in task.test[:16]],
                                           task.target_tokenizer, every=2, metric="exact_match", out=out,
                                           model_attribute="model")])
    assert [round(d["unforced/fr_nll"], 6) > 0 for d in measured.logged] == [True, True]
    assert [line["step"] for line in read_metrics(out / "metrics.jsonl")] == [2, 4]
    assert (out / "results.json").exists()
    plain = fit([])
    assert all(torch.equal(a, b) for a, b in zip(measured.model.state_dict().values(),
                                                  plain.model.state_dict().values(), strict=True))


def test_a_callback_refuses_a_folder_that_holds_results(tmp_path):
    from unforced.callbacks import GapMonitor

    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(UnforcedError, match="already holds results.json"):
        GapMonitor(copy_pairs(2), word_tokenizer(), out=tmp_path)
    with pytest.raises(UnforcedError, match="every must be at least 1"):
        GapMonitor(copy_pairs(2), word_tokenizer(), every=0)


def call_cli(args: list[str], capsys) -> tuple[int, str, str]:
    import sys

    from unforced.cli import main

    old, sys.argv = sys.argv, ["unforced", *args]
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_gap_of_a_saved_model_on_the_users_file_from_the_command_line(kind, tmp_path, capsys):
    tokenizer = word_tokenizer()
    directory = tmp_path / kind
    tiny_hf(kind, len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"source": s, "target": r}) + "\n" for s, r in copy_pairs(20)))
    out = tmp_path / "gap"
    code, stdout, err = call_cli(["gap", "--model", f"hf:{directory}", "--task", str(pairs), "--limit", "12",
                                  "--beam", "2", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    document = json.loads(stdout)
    entry = document["strategies"]["model"]
    assert all(math.isfinite(entry[key]) for key in ("tf_nll", "fr_nll", "gap_pct", "tf_token_acc"))
    assert entry["metric"]["name"] == "bleu" and entry["metric"]["nrefs"] == 2 and "fr_beam" in entry["metric"]
    assert document["model"]["kind"] == "hf" and {"sweep", "prefix_swap"} <= set(document["diagnostics"])
    assert (out / "report.html").exists() and (out / "results.json").exists() and (out / "diagnostics.json").exists()


def test_gap_of_a_model_refuses_bad_arguments_by_name(tmp_path, capsys):
    tokenizer = word_tokenizer()
    bare = tmp_path / "bare"
    tiny_hf("gpt2", len(tokenizer)).save_pretrained(bare)  # no tokenizer beside it
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"source": "a b", "target": "a b"}) + "\n")
    for args, message in ((["--model", "gpt2", "--task", str(pairs)], "--model takes hf:PATH"),
                          (["--model", f"hf:{tmp_path / 'missing'}", "--task", str(pairs)], "no such directory"),
                          (["--model", f"hf:{bare}", "--task", str(pairs)], "no tokenizer saved beside the model"),
                          (["--model", f"hf:{bare}"], "--model and --task go together"),
                          ([str(tmp_path), "--model", f"hf:{bare}", "--task", str(pairs)], "not both"),
                          ([], "gap needs a run directory")):
        code, stdout, err = call_cli(["gap", *args], capsys)
        assert code == 2 and stdout == "" and message in err, (args, err)
