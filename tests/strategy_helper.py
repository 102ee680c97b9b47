"""A tiny model and a Trainer for the strategy tests (dagger, professor forcing)."""

from __future__ import annotations

import torch

from unforced.models import ModelConfig, build_model
from unforced.train import TrainConfig, Trainer


def tiny(task, kind="gru"):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, source_vocab=task.source_tokenizer.vocab_size,
                                   target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32,
                                   heads=2, dropout=0.0, max_source_len=32, max_target_len=16))


def train(tmp_path, task, strategy, steps, kind="gru"):
    model = tiny(task, kind)
    config = TrainConfig(steps=steps, batch_size=16, learning_rate=1e-2, warmup=0, eval_every=0,
                         checkpoint_every=3, log_every=1, seed=0)
    trainer = Trainer(model, task, strategy.bind(task), config, tmp_path / "checkpoints", tmp_path / "metrics.jsonl")
    return model, trainer
