"""Shared fixtures: tiny seeded models of every kind and padded batches for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from unforced.models import ModelConfig, build_model
from unforced.vocab import BOS, EOS, PAD

MODEL_KINDS = ("gru", "lstm", "transformer", "decoder_only")

# Tiny models run fastest on one thread; with two, the threads fight each other and any other job on a 2-core
# machine (measured: 70 s against 4 s for test_models.py under load). Subprocesses inherit the setting.
# CI runs the suite twice, under UNFORCED_TEST_THREADS=1 and =2, so that no test depends on the thread count or
# the float reduction order that comes with it.
TEST_THREADS = int(os.environ.get("UNFORCED_TEST_THREADS", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))
torch.set_num_threads(TEST_THREADS)
FIRST_SYMBOL = 4  # ids 0..3 are <pad>, <bos>, <eos>, <unk>


def make_tiny_model(kind: str, source_vocab: int = 12, target_vocab: int = 12, seed: int = 0,
                    layers: int = 2, init_std: float | None = None):
    """A freshly initialised model (hidden 16, dropout 0) in eval mode, the same for the same arguments.

    `init_std` redraws every weight matrix and embedding from N(0, init_std**2), with the Transformer output
    projection untied from the embedding, which gives next-token distributions that depend on the source and are
    neither flat (RNNs at their default init) nor one-hot (Transformers at theirs copy the input token).
    """
    torch.manual_seed(seed)
    config = ModelConfig(kind=kind, source_vocab=source_vocab, target_vocab=target_vocab, embedding=16,
                         hidden=16, layers=layers, heads=2, dropout=0.0, max_source_len=12, max_target_len=12)
    model = build_model(config).eval()
    if init_std is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.output.weight = torch.nn.Parameter(model.output.weight.clone())
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * init_std)
    return model


@dataclass
class PaddedBatch:
    source: torch.Tensor  # (batch, source) right-padded
    source_mask: torch.Tensor  # (batch, source)
    inputs: torch.Tensor  # (batch, time) <bos>, y_1 .. y_(T-1), <eos> replaced by <pad>
    gold: torch.Tensor  # (batch, time) y_1 .. y_T, <eos>, padded
    gold_mask: torch.Tensor  # (batch, time)


def make_batch(source_lengths: list[int], target_lengths: list[int], source_vocab: int = 12,
               target_vocab: int = 12, seed: int = 0, source_width: int | None = None) -> PaddedBatch:
    """Random symbols; `target_lengths` count <eos>, so every length is at least 1."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(source_lengths)
    width_s = source_width or max(source_lengths)
    width_t = max(target_lengths)
    source = torch.full((batch, width_s), PAD, dtype=torch.long)
    gold = torch.full((batch, width_t), PAD, dtype=torch.long)
    for row, (s, t) in enumerate(zip(source_lengths, target_lengths, strict=True)):
        source[row, :s] = torch.randint(FIRST_SYMBOL, source_vocab, (s,), generator=generator)
        gold[row, : t - 1] = torch.randint(FIRST_SYMBOL, target_vocab, (t - 1,), generator=generator)
        gold[row, t - 1] = EOS
    inputs = torch.cat([torch.full((batch, 1), BOS, dtype=torch.long), gold[:, :-1]], 1)
    inputs = inputs.masked_fill(inputs == EOS, PAD)
    return PaddedBatch(source=source, source_mask=source != PAD, inputs=inputs, gold=gold, gold_mask=gold != PAD)


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., torch.nn.Module]:
    """Factory of tiny models, cached per argument set (treat the models as read-only)."""
    cache: dict = {}

    def factory(kind: str, **options):
        key = (kind, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = make_tiny_model(kind, **options)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def padded_batch() -> PaddedBatch:
    """Four rows with source padding and targets of different lengths (one of them only <eos>)."""
    return make_batch(source_lengths=[5, 3, 1, 4], target_lengths=[6, 4, 1, 5], seed=1)


@pytest.fixture(scope="session")
def batch_factory() -> Callable[..., PaddedBatch]:
    """`make_batch` as a fixture, for tests that need other lengths or vocabularies."""
    return make_batch


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread: tiny models gain nothing from more, and on a busy 2-core machine the threads of a
    parallel op spin against other processes (measured 4 s against 70 s for tests/test_models.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(previous)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark_quick(name: str, *extra: str, timeout: float = 300) -> dict:
    """`benchmarks/NAME.py --quick --json` in a subprocess: its JSON, after asserting it exited cleanly."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--json", *extra],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def bench_quick() -> Callable[..., dict]:
    return run_benchmark_quick
