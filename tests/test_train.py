"""Trainer: seeded determinism, resume to identical weights (in process and after SIGKILL), checkpoint safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TEST_THREADS

from unforced import UnforcedError
from unforced.models import ModelConfig, build_model
from unforced.runfiles import atomic_save, load_checkpoint, read_checkpoint_file
from unforced.strategies import make_strategy
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer


def tiny_setup(tmp_path: Path, steps: int = 24, checkpoint_every: int = 8, kind: str = "gru"):
    task = get_task("copy", size=120, length=5, seed=0)
    config = ModelConfig(kind=kind, source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32, dropout=0.1,
                         max_source_len=8, max_target_len=8)
    torch.manual_seed(0)
    model = build_model(config)
    train = TrainConfig(steps=steps, batch_size=16, checkpoint_every=checkpoint_every, eval_every=0, log_every=4,
                        seed=0)
    identity = {"model_config": config.__dict__.copy(), "strategy": "teacher_forcing", "task": task.name}
    trainer = Trainer(model, task, make_strategy("teacher_forcing"), train, tmp_path / "checkpoints",
                      tmp_path / "metrics.jsonl", tag="tf", identity=identity)
    return trainer


def weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_seed_same_weights_and_metrics(tmp_path):
    first = tiny_setup(tmp_path / "a")
    first.fit()
    second = tiny_setup(tmp_path / "b")
    second.fit()
    assert_same(weights(first.model), weights(second.model))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(line)["loss"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert losses == again and len(losses) == 6


def test_different_seed_different_weights(tmp_path):
    first = tiny_setup(tmp_path / "a")
    first.fit()
    second = tiny_setup(tmp_path / "b")
    second.config.seed = 1
    second.fit()
    assert any(not torch.equal(a, b) for a, b in zip(weights(first.model).values(),
                                                      weights(second.model).values(), strict=True))


class Crash(Exception):
    pass


def test_crash_then_resume_reaches_identical_weights(tmp_path):
    reference = tiny_setup(tmp_path / "reference")
    reference.fit()

    crashing = tiny_setup(tmp_path / "crash")

    def crash_after_step_11(record):
        if record["step"] >= 12:
            raise Crash

    crashing.progress = crash_after_step_11
    with pytest.raises(Crash):
        crashing.fit()
    assert load_checkpoint(crashing.checkpoint_path)["step"] == 8  # the last checkpoint before the crash

    resumed = tiny_setup(tmp_path / "crash")
    assert resumed.resume() and resumed.step == 8
    resumed.fit()
    assert_same(weights(reference.model), weights(resumed.model))
    steps = [json.loads(line)["step"] for line in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) == [4, 8, 12, 16, 20, 24]  # lines past the checkpoint were written once


def test_checkpoint_of_another_model_is_refused(tmp_path):
    trainer = tiny_setup(tmp_path, steps=8)
    trainer.fit()
    other = tiny_setup(tmp_path, steps=8, kind="lstm")
    with pytest.raises(UnforcedError, match="another model config"):
        other.resume()


def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path):
    trainer = tiny_setup(tmp_path, steps=16)
    trainer.fit()
    data = trainer.checkpoint_path.read_bytes()
    trainer.checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnforcedError, match="checksum mismatch"):
        load_checkpoint(trainer.checkpoint_path)
    altered = bytearray(data)
    altered[-10] ^= 0xFF
    trainer.checkpoint_path.write_bytes(bytes(altered))
    with pytest.raises(UnforcedError, match="checksum mismatch.*previous checkpoint"):
        load_checkpoint(trainer.checkpoint_path)
    torch.save({"format": 1}, trainer.checkpoint_path)
    with pytest.raises(UnforcedError, match="not an unforced checkpoint"):
        load_checkpoint(trainer.checkpoint_path)
    assert load_checkpoint(trainer.checkpoint_path.with_name("previous.pt"))["step"] == 8  # rotation kept it


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"format": 1, "value": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"format": 1, "value": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint_file(path)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_bad_train_config_names_the_field():
    with pytest.raises(UnforcedError, match="train.steps"):
        TrainConfig(steps=0)
    with pytest.raises(UnforcedError, match="train.learning_rate"):
        TrainConfig(learning_rate=-1.0)


TINY_CONFIG = {
    "task": "copy", "task_options": {"size": 160, "length": 5},
    "model": {"kind": "gru", "embedding": 16, "hidden": 32},
    "train": {"steps": 400, "batch_size": 16, "checkpoint_every": 10, "eval_every": 0, "log_every": 10},
    "test_limit": 20,
}


def _train_command(out: Path, config: Path, resume: bool = False) -> list[str]:
    command = [sys.executable, "-m", "unforced.cli", "train", "--task", "copy", "--strategy", "teacher_forcing",
               "--config", str(config), "--out", str(out), "--json"]
    return command + (["--resume"] if resume else [])


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    subprocess.run(_train_command(tmp_path / "whole", config), check=True, capture_output=True, env=env)

    process = subprocess.Popen(_train_command(tmp_path / "killed", config), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists():
            try:
                if read_checkpoint_file(checkpoint)["step"] >= 30:
                    break
            except Exception:
                pass  # the rename is atomic, but the file may be replaced while we read it
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step_at_kill = read_checkpoint_file(checkpoint)["step"]
    assert 30 <= step_at_kill < 400, "the run must be killed mid-way"

    resumed = subprocess.run(_train_command(tmp_path / "killed", config, resume=True), capture_output=True,
                             text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    whole = read_checkpoint_file(tmp_path / "whole" / "checkpoints" / "last.pt")
    again = read_checkpoint_file(checkpoint)
    assert again["step"] == whole["step"] == 400
    assert_same(whole["model"], again["model"])


def test_nan_steps_are_skipped_then_the_run_stops_with_the_checkpoint_intact(tmp_path):
    trainer = tiny_setup(tmp_path, steps=40, checkpoint_every=8)
    real_loss = trainer.strategy.loss

    def poisoned(model, batch, step):
        output = real_loss(model, batch, step)
        if step in (3, 4) or step >= 10:  # two isolated bad steps, then bad for good
            output.loss = output.loss * float("nan")
        return output

    trainer.strategy.loss = poisoned
    with pytest.raises(UnforcedError, match="NaN or inf for 5 steps in a row"):
        trainer.fit()
    assert trainer.skipped_steps == 7
    checkpoint = load_checkpoint(trainer.checkpoint_path)
    assert checkpoint["step"] == 8
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in records if r.get("skipped_step")) == 7


def test_run_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    from unforced.lock import run_lock

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(str(holder.pid))
        with pytest.raises(UnforcedError, match=f"pid {holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path) as lock:  # the holder is dead: its lock is stale
        assert lock.read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_run_lock_takes_over_from_a_killed_holder_not_yet_reaped(tmp_path):
    # A killed sweep's workers may linger as zombies until init reaps them; their lock is stale all the same.
    from unforced.lock import run_lock

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        holder.kill()
        for _ in range(500):  # killed, and left unreaped (no wait) so that it stays a zombie
            if Path(f"/proc/{holder.pid}/status").read_text().split("State:")[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        os.kill(holder.pid, 0)  # it still answers as a process
        (tmp_path / ".lock").write_text(str(holder.pid))
        with run_lock(tmp_path) as lock:
            assert lock.read_text() == str(os.getpid())
    finally:
        holder.wait()
