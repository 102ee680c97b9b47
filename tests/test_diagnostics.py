"""Diagnostics beyond the gap: ratio sweep, hidden-state divergence, Jacobian amplification, recovery probe,
zero-gradient probe, prefix divergence, mid-training dips."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from unforced.diagnostics.divergence import hidden_divergence, jacobian_amplification
from unforced.diagnostics.gap import evaluate
from unforced.diagnostics.probes import mid_training_dips, prefix_divergence, zero_gradient_probe
from unforced.diagnostics.recovery import recovery_probe
from unforced.diagnostics.sweep import ratio_sweep
from unforced.models import ModelConfig, build_model
from unforced.models.base import Forced
from unforced.tasks import get_task
from unforced.theory import fit_linear_divergence
from unforced.vocab import EOS, PAD

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def task():
    return get_task("copy", size=60, length=5)


def tiny(kind, task, seed=0):
    torch.manual_seed(seed)
    vocab = task.target_tokenizer.vocab_size
    config = ModelConfig(kind=kind, source_vocab=vocab, target_vocab=vocab, embedding=16, hidden=16, heads=2,
                         dropout=0.0, max_source_len=16, max_target_len=16)
    return build_model(config).eval()


class CopyOracle(nn.Module):
    """Puts its mass on source[t] (or <eos> past the source) at target position t, whatever it is fed."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.unused = nn.Parameter(torch.zeros(1))  # rollout reads the device from a parameter

    def encode(self, source, source_mask):
        return source

    def _logits(self, source, positions):  # positions (batch, time) -> (batch, time, vocab)
        padded = torch.cat([source, torch.full_like(source[:, :1], PAD)], 1)
        target = padded.gather(1, positions.clamp(max=padded.shape[1] - 1))
        target = torch.where(target == PAD, torch.full_like(target, EOS), target)
        return 10.0 * nn.functional.one_hot(target, self.vocab).float()

    def forced(self, memory, inputs, embeddings=None):
        positions = torch.arange(inputs.shape[1]).expand(inputs.shape[0], -1)
        logits = self._logits(memory, positions)
        return Forced(logits=logits, hidden=logits)

    def start(self, memory, batch_size):
        return torch.zeros(batch_size, dtype=torch.long)

    def step(self, memory, state, tokens):
        logits = self._logits(memory, state[:, None])[:, 0]
        return logits, logits, state + 1


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_sweep_endpoints_equal_teacher_forced_and_free_running(task, kind):
    model = tiny(kind, task)
    figures = evaluate(model, task, "test")
    sweep = ratio_sweep(model, task, "test", ratios=(0.0, 0.5, 1.0))
    assert sweep["ratios"] == [0.0, 0.5, 1.0]
    assert sweep["nll"][0] == pytest.approx(figures["fr_nll"], abs=1e-5)
    assert sweep["nll"][-1] == pytest.approx(figures["tf_nll"], abs=1e-5)
    assert sweep["token_acc"][0] == pytest.approx(figures["fr_token_acc"], abs=1e-6)
    assert sweep["token_acc"][-1] == pytest.approx(figures["tf_token_acc"], abs=1e-6)
    assert sweep == ratio_sweep(model, task, "test", ratios=(0.0, 0.5, 1.0))  # seeded


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_hidden_divergence_starts_at_zero_and_fits(task, kind):
    result = hidden_divergence(tiny(kind, task), task, "test")
    assert result["positions"][0] == 0
    assert result["mean"][0] == pytest.approx(0.0, abs=1e-6)  # both read <bos> from the same state
    assert min(result["mean"]) >= 0.0 and min(result["std"]) >= 0.0
    assert result["count"][0] == len(task.test)
    assert len(result["mean"]) == len(result["std"]) == len(result["count"])
    fit = result["fit"]
    assert fit is not None and math.isfinite(fit["a"]) and math.isfinite(fit["b"])
    assert (fit["plateau_predicted"] is None) == (fit["a"] >= 1.0)
    assert math.isfinite(result["plateau_measured"])


def test_fit_plumbing_recovers_a_linear_drift():
    a, b = 0.6, 0.5
    curve = [0.0]
    for _ in range(12):
        curve.append(a * curve[-1] + b)
    fit = fit_linear_divergence(np.array(curve))
    assert fit.a == pytest.approx(a) and fit.b == pytest.approx(b)
    assert fit.plateau_predicted == pytest.approx(b / (1 - a))


def test_jacobian_amplification_matches_explicit_jacobian(task):
    model = tiny("gru", task)
    batch = task.collate(task.test[:1])
    memory = model.encode(batch.source, batch.source_mask)
    state = model.start(memory, 1)
    token = batch.gold[:, 0]
    estimate = jacobian_amplification(model, memory, state, token, iterations=30)
    jacobian = torch.autograd.functional.jacobian(lambda s: model.step(memory, s, token)[2], state)
    exact = float(torch.linalg.matrix_norm(jacobian.reshape(state.numel(), state.numel()), ord=2))
    assert estimate == pytest.approx(exact, rel=0.05)


def test_jacobian_amplification_is_none_for_transformers(task):
    model = tiny("transformer", task)
    batch = task.collate(task.test[:2])
    memory = model.encode(batch.source, batch.source_mask)
    assert jacobian_amplification(model, memory, model.start(memory, 2), batch.gold[:, 0]) is None


def test_recovery_probe_is_full_for_an_oracle(task):
    oracle = CopyOracle(task.target_tokenizer.vocab_size)
    result = recovery_probe(oracle, task, "test", position=1, k=2)
    assert result["clean_acc_after"] == 1.0
    assert result["corrupted_acc_after"] == 1.0
    assert result["recovery"] == 1.0
    assert result["curve"]["corrupted"] == result["curve"]["clean"]


def test_recovery_probe_bounds_on_an_untrained_model(task):
    result = recovery_probe(tiny("gru", task), task, "test", position=2, k=1, seed=3)
    assert result["position"] == 2 and result["k"] == 1
    assert 0.0 <= result["corrupted_acc_after"] <= 1.0 and 0.0 < result["clean_acc_after"] <= 1.0
    assert result["recovery"] >= 0.0
    assert result["sequences"] == result["curve"]["count"][0] > 0
    assert result == recovery_probe(tiny("gru", task), task, "test", position=2, k=1, seed=3)


def test_zero_gradient_probe():
    result = zero_gradient_probe()
    gradients = result["max_abs_grad_off_path"]
    assert result["off_path_rows"] >= 3
    assert gradients["teacher_forcing"] == 0.0  # exactly: no gold context ever reads those rows
    assert gradients["scheduled_sampling"] > 0.0
    assert gradients["reinforce"] > 0.0


def test_prefix_divergence_is_finite_per_length(task):
    result = prefix_divergence(tiny("gru", task), task, "train", max_len=6, n_samples=32, order=2, seed=0)
    assert result["lengths"] == list(range(1, 7))
    assert len(result["kl"]) == 6 and all(math.isfinite(v) for v in result["kl"])
    # Log-probs of a growing prefix can only fall.
    assert all(np.diff(result["model_log_prob"]) <= 1e-9) and all(np.diff(result["ngram_log_prob"]) <= 1e-9)


def _records(values, ratios=None):
    records = []
    for i, value in enumerate(values):
        step = 100 * (i + 1)
        records.append({"strategy": "ss", "step": step, "loss": 1.0,
                        **({"teacher_forcing_ratio": ratios[i]} if ratios else {})})
        records.append({"strategy": "ss", "step": step,
                        "eval": {"tf_nll": 1.0, "metric": {"name": "exact_match", "tf": 0.9, "fr": value}}})
    records.append({"strategy": "ss", "step": 100 * (len(values) + 1), "loss": 1.0})
    return records


def test_mid_training_dips_finds_a_dip_and_not_a_monotone_curve():
    dips = mid_training_dips(_records([0.1, 0.3, 0.5, 0.2, 0.25, 0.6], ratios=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5]))
    assert len(dips) == 1
    assert dips[0]["step"] == 400 and dips[0]["drop"] == pytest.approx(0.3)
    assert dips[0]["gold_ratio"] == 0.7 and dips[0]["strategy"] == "ss"
    assert mid_training_dips(_records([0.1, 0.2, 0.3, 0.4, 0.5])) == []
