"""Sharded training (fsdp.py) of a tiny Hugging Face GPT-2 on the CPU with gloo, two processes launched by
`accelerate launch --use_fsdp`, against one unsharded process with the same global batch.

Deterministic strategies only (teacher forcing; scheduled sampling fed the model's own greedy tokens, which drives
`step` through a rollout under FSDP): a strategy that draws coins or samples draws them per process for its own
rows. Every process runs one torch thread. The two runs sum floats in different orders (two halves of the batch,
then a reduce-scatter), and AdamW amplifies that on gradients near zero, so weights are compared to 1e-4 after
steps that move them by about 1e-2."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cli_helper import call

from unforced import fsdp
from unforced.runfiles import read_checkpoint_file

WORKER = """
import json
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from transformers import GPT2Config, GPT2LMHeadModel

from unforced.diagnostics import evaluate
from unforced.errors import UnforcedError
from unforced.models.hf import wrap_hf_model
from unforced.strategies import make_strategy
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer

torch.set_num_threads(1)
out = Path(sys.argv[1])
task = get_task("copy", size=64, length=5, seed=0)
limits = {"max_source_len": 8, "max_target_len": 8}


def tiny():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=task.target_tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return wrap_hf_model(GPT2LMHeadModel(config), max_source_len=8, max_target_len=8)


def validation(model):
    figures = evaluate(model, task, "valid", limit=12, limits=limits)
    return {k: figures[k] for k in ("tf_nll", "fr_nll", "tf_token_acc", "fr_token_acc")}


def trainer(model, name, steps, folder, options=None):
    # fsdp is left False: `accelerate launch --use_fsdp` turns it on through ACCELERATE_USE_FSDP
    train = TrainConfig(steps=steps, batch_size=16, checkpoint_every=0, eval_every=2, log_every=1, seed=0,
                        warmup=0, device="cpu")
    return Trainer(model, task, make_strategy(name, options or {}, seed=0), train, out / folder,
                   out / "metrics.jsonl", tag=folder, evaluate=validation, limits=limits)


model = tiny()
first = trainer(model, "teacher_forcing", 4, "tf")
first.fit()
parameters = list(first.model.parameters())
held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in parameters)
sharded = {"dtensors": all(isinstance(p, DTensor) for p in parameters),
           "held": held / sum(p.numel() for p in parameters)}
resumed = trainer(model, "teacher_forcing", 6, "tf")  # a new Trainer continues from tf/last.pt
resumed.resume()
resumed.fit()
final = {"tf": validation(model)}
model = tiny()
trainer(model, "scheduled_sampling", 3, "ss", {"schedule": "constant", "schedule_params": {"ratio": 0.0}}).fit()
final["ss"] = validation(model)
try:
    trainer(tiny(), "preference", 2, "preference")
    refused = None
except UnforcedError as error:
    refused = str(error)
if first.main:
    (out / "final.json").write_text(json.dumps({"final": final, "refused": refused, "sharded": sharded}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(folder: Path, processes: int) -> dict:
    script = folder.parent / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_FSDP", None)
    if processes == 1:
        command = [sys.executable, str(script), str(folder)]
    else:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
        assert accelerate, "accelerate is not installed beside this python: FSDP cannot be launched"
        command = [accelerate, "launch", "--use_fsdp", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                   str(script), str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((folder / "final.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    single = root / "single"
    sharded = root / "sharded"
    return {"single": (single, launch(single, 1)), "sharded": (sharded, launch(sharded, 2))}


def evaluations(folder: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(line["strategy"], line["step"], line["eval"]) for line in lines if "eval" in line]


def test_sharded_training_matches_one_process(runs):
    (single, one), (sharded, two) = runs["single"], runs["sharded"]
    assert two["sharded"]["dtensors"], "the trained model's parameters must be FSDP shards"
    assert two["sharded"]["held"] == pytest.approx(0.5, abs=0.02), "each process holds half of the weights"
    for folder in ("tf", "ss"):
        a = read_checkpoint_file(single / folder / "last.pt")
        b = read_checkpoint_file(sharded / folder / "last.pt")
        assert a["step"] == b["step"] == {"tf": 6, "ss": 3}[folder]
        assert a["model"].keys() == b["model"].keys()
        for name, value in a["model"].items():
            assert type(b["model"][name]) is torch.Tensor  # whole, not a shard
            assert torch.allclose(value, b["model"][name], atol=1e-4, rtol=0), (folder, name)
        # the optimizer's state is the unsharded optimizer's, keyed alike
        assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
        for index, state in a["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.allclose(value, b["optimizer"]["state"][index][key], atol=1e-5, rtol=1e-3)
    # validation figures (greedy free-running rollouts on the sharded model) as the unsharded model's
    ones, twos = evaluations(single), evaluations(sharded)
    assert [(s, t) for s, t, _ in ones] == [(s, t) for s, t, _ in twos] == [
        ("tf", 2), ("tf", 4), ("tf", 6), ("ss", 2), ("ss", 3)]
    for (_, _, a), (_, _, b) in zip(ones, twos, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    for entry in ("tf", "ss"):
        for key, value in one["final"][entry].items():
            assert two["final"][entry][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (entry, key)
    moved = read_checkpoint_file(single / "tf" / "last.pt")["model"]
    initial = tiny_model()[0].state_dict()
    assert max(float((moved[k] - initial[k]).abs().max()) for k in initial) > 5e-3, "training must move weights"


def tiny_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    from unforced.models.hf import wrap_hf_model
    from unforced.tasks import get_task

    task = get_task("copy", size=64, length=5, seed=0)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=task.target_tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return wrap_hf_model(GPT2LMHeadModel(config), max_source_len=8, max_target_len=8), task


def test_the_sharded_checkpoint_loads_into_an_unsharded_model(runs):
    from unforced.diagnostics import evaluate

    sharded, two = runs["sharded"]
    checkpoint = read_checkpoint_file(sharded / "tf" / "last.pt")
    model, task = tiny_model()
    model.load_state_dict(checkpoint["model"])  # strict: every key, whole tensors
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.load_state_dict(checkpoint["optimizer"])
    assert float(optimizer.state_dict()["state"][0]["step"]) == 6
    figures = evaluate(model, task, "valid", limit=12, limits={"max_source_len": 8, "max_target_len": 8})
    for key, value in two["final"]["tf"].items():
        assert figures[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_a_strategy_with_a_second_model_copy_is_refused_by_name(runs):
    _, one = runs["single"]
    _, two = runs["sharded"]
    assert one["refused"] is None  # one process shards nothing: preference trains there
    assert "'preference'" in two["refused"] and "FSDP" in two["refused"] and "copy of the model" in two["refused"]


def test_fsdp_is_asked_for_by_the_flag_or_by_accelerate(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not fsdp.requested() and fsdp.requested(True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert fsdp.requested() and not fsdp.active()  # one process: nothing to shard
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"preset": "quick", "task_options": {"size": 40, "length": 4},
                                      "test_limit": 4, "diagnostics_limit": 0,
                                      "train": {"steps": 2, "batch_size": 8, "eval_every": 0, "device": "cpu"}}))
    code, out, err = call(["train", "--task", "copy", "--strategy", "teacher_forcing", "--fsdp", "--config",
                           str(config), "--out", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["fsdp"] is True
    assert math.isfinite(json.loads(out)["strategies"]["teacher_forcing"]["tf_nll"])


def test_a_run_refuses_the_strategy_before_any_phase_trains(tmp_path, monkeypatch):
    from unforced.errors import UnforcedError
    from unforced.experiment import run_experiment
    from unforced.run_config import RunConfig

    monkeypatch.setenv("WORLD_SIZE", "2")  # as under a launch; the refusal comes before any process group
    config = RunConfig(task="copy", task_options={"size": 60, "length": 4}, preset="quick",
                       strategies=["teacher_forcing:4>reinforce:2", "preference"],
                       model={"kind": "gru", "embedding": 8, "hidden": 16},
                       train={"steps": 4, "batch_size": 8, "fsdp": True}, test_limit=8, diagnostics_limit=0)
    with pytest.raises(UnforcedError, match="'preference' cannot train under FSDP"):
        run_experiment(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
