"""The main job: a first phase shared by two entries is trained once, and the copy is the same, step for step, as
training it again; the results carry their signature."""

from __future__ import annotations

import json
import re

import pytest
import torch

from unforced.experiment import run_experiment
from unforced.run_config import RunConfig
from unforced.runfiles import read_checkpoint_file, read_metrics

CHAIN = "teacher_forcing:20>parallel_scheduled_sampling:10"
PHASE_ONE = f"{CHAIN}#1:teacher_forcing"


def tiny(strategies: list[str]) -> RunConfig:
    return RunConfig(task="copy", task_options={"size": 200, "length": 5}, strategies=strategies, preset="quick",
                     model={"kind": "gru", "embedding": 16, "hidden": 32},
                     train={"steps": 40, "batch_size": 16, "eval_every": 10, "eval_limit": 16,
                            "checkpoint_every": 10, "log_every": 5},
                     test_limit=24, diagnostics_limit=0)


def weights(path) -> dict:
    return read_checkpoint_file(path)["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    out = tmp_path_factory.mktemp("alone")
    return out, run_experiment(tiny(["teacher_forcing", CHAIN][1:]), out)


def test_a_chain_reuses_the_teacher_forcing_entry_and_matches_training_it_again(tmp_path, alone):
    alone_out, alone_results = alone
    out = tmp_path / "run"
    results = run_experiment(tiny(["teacher_forcing", CHAIN]), out)
    phase_dir = out / "checkpoints" / re.sub(r"[^A-Za-z0-9_.-]+", "-", PHASE_ONE).strip("-")
    snapshot = out / "checkpoints" / "teacher_forcing" / "step-20.pt"
    assert read_checkpoint_file(snapshot)["step"] == 20
    # the chain's weights after its shared phase equal those of the chain trained with nobody to share with
    assert same_weights(weights(phase_dir / "last.pt"), weights(alone_out / "checkpoints" / "last.pt")
                        if (alone_out / "checkpoints" / "last.pt").exists() else
                        weights(next(alone_out.glob("checkpoints/*1-teacher_forcing/last.pt"))))
    assert same_weights(weights(phase_dir / "last.pt"), weights(snapshot))
    entry, again = results["strategies"][CHAIN], alone_results["strategies"][CHAIN]
    assert entry["reused_prefix"] == {"from": "teacher_forcing", "steps": 20}
    assert again["reused_prefix"] is None
    for key in ("tf_nll", "fr_nll", "fr_token_acc"):
        assert entry[key] == again[key], key
    assert entry["metric"]["fr"] == again["metric"]["fr"]
    lines = [r for r in read_metrics(out / "metrics.jsonl") if r["strategy"] == PHASE_ONE]
    assert lines and all(r["reused_from"] == "teacher_forcing" for r in lines)
    assert [r["step"] for r in lines if "eval" in r] == [10, 20]
    # the teacher_forcing entry itself is unchanged by stopping at step 20 on the way
    plain = run_experiment(tiny(["teacher_forcing", "parallel_scheduled_sampling"]), tmp_path / "plain")
    assert results["strategies"]["teacher_forcing"]["fr_nll"] == plain["strategies"]["teacher_forcing"]["fr_nll"]
    assert same_weights(weights(out / "checkpoints" / "teacher_forcing" / "last.pt"),
                        weights(tmp_path / "plain" / "checkpoints" / "teacher_forcing" / "last.pt"))

    # a finished run resumed does nothing again and writes no line twice
    before = read_metrics(out / "metrics.jsonl")
    resumed = run_experiment(tiny(["teacher_forcing", CHAIN]), out, resume=True)
    assert read_metrics(out / "metrics.jsonl") == before
    assert resumed["strategies"][CHAIN]["fr_nll"] == entry["fr_nll"]
    assert resumed["strategies"][CHAIN]["reused_prefix"] == entry["reused_prefix"]


def test_a_longer_entry_after_the_chain_continues_from_its_phase(tmp_path):
    results = run_experiment(tiny([CHAIN, "teacher_forcing"]), tmp_path / "run")
    plain = run_experiment(tiny(["teacher_forcing", "parallel_scheduled_sampling"]), tmp_path / "plain")
    entry = results["strategies"]["teacher_forcing"]
    assert entry["reused_prefix"] == {"from": PHASE_ONE, "steps": 20}
    assert entry["fr_nll"] == plain["strategies"]["teacher_forcing"]["fr_nll"]
    assert same_weights(weights(tmp_path / "run" / "checkpoints" / "teacher_forcing" / "last.pt"),
                        weights(tmp_path / "plain" / "checkpoints" / "teacher_forcing" / "last.pt"))
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")
             if r["strategy"] == "teacher_forcing" and "loss" in r]
    assert steps == sorted(set(steps)) and steps[0] == 5 and steps[-1] == 40


def test_results_carry_the_signature_of_the_test_numbers(alone):
    _, results = alone
    signature = results["signature"]
    metric = results["strategies"][CHAIN]["metric"]
    assert signature["metric"] == metric["signature"] and signature["nrefs"] == metric["nrefs"] == 1
    assert signature["decode"] == f"{metric['decode']}; beam=4" and metric["beam_size"] == 4
    assert "fr_beam" in metric
    assert signature["tokenizer"]["target"]["vocab_size"] > 4 and signature["tokenizer"]["target"]["kind"]
    assert signature["seeds"] == [0]
    assert signature["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", signature["commit"])
    assert {"unforced", "torch", "device"} <= signature.keys()
    json.dumps(results)
