"""Two CPU processes (gloo) reach the same weights as one process with the same global batch.

Deterministic strategies only: a strategy that draws coins or samples draws them per process for its own rows,
which is the same distribution but not the same numbers as one process drawing for the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import TEST_THREADS

from unforced.runfiles import read_checkpoint_file

SCRIPT = """
import sys
from pathlib import Path
import torch
from unforced.models import ModelConfig, build_model
from unforced.strategies import make_strategy
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer

torch.set_num_threads(int(sys.argv[4]))
out = Path(sys.argv[1])
task = get_task("copy", size=200, length=6, seed=0)
config = ModelConfig(kind=sys.argv[2], source_vocab=task.source_tokenizer.vocab_size,
                     target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32, dropout=0.0,
                     max_source_len=8, max_target_len=8, heads=2)
torch.manual_seed(0)
model = build_model(config)
strategy = make_strategy(sys.argv[3])
train = TrainConfig(steps=12, batch_size=24, checkpoint_every=0, eval_every=0, log_every=4, seed=0, warmup=0)
Trainer(model, task, strategy, train, out / "checkpoints", out / "metrics.jsonl").fit()
"""


def run(tmp_path: Path, processes: int, kind: str, strategy: str) -> dict:
    out = tmp_path / f"{kind}-{strategy}-{processes}"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    if processes == 1:
        command = [sys.executable, str(script), str(out), kind, strategy, str(TEST_THREADS)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", "29533", str(script), str(out), kind, strategy, str(TEST_THREADS)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_checkpoint_file(out / "checkpoints" / "last.pt")["model"]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    for kind, strategy in (("gru", "teacher_forcing"), ("transformer", "teacher_forcing")):
        single = run(tmp_path, 1, kind, strategy)
        double = run(tmp_path, 2, kind, strategy)
        assert single.keys() == double.keys()
        for name, value in single.items():
            assert torch.allclose(value, double[name], atol=1e-5, rtol=0), (kind, name)
        initial = run_initial(kind)
        moved = any(not torch.allclose(initial[n], single[n]) for n in single)
        assert moved, "training must change the weights for the comparison to mean anything"


def run_initial(kind: str) -> dict:
    from unforced.models import ModelConfig, build_model
    from unforced.tasks import get_task

    task = get_task("copy", size=200, length=6, seed=0)
    config = ModelConfig(kind=kind, source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=16, hidden=32, dropout=0.0,
                         max_source_len=8, max_target_len=8, heads=2)
    torch.manual_seed(0)
    return build_model(config).state_dict()
