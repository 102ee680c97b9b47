"""Any device: the choice of device and precision is checked at the boundary, and nothing in a run makes a tensor
on a device other than the one asked for (checked on the CPU with a recorder of every factory call)."""

from __future__ import annotations

import pytest
import torch
from conftest import TEST_THREADS
from torch.overrides import TorchFunctionMode

from unforced import distributed
from unforced.diagnostics import evaluate
from unforced.diagnostics.suite import diagnose
from unforced.errors import UnforcedError
from unforced.models import ModelConfig, build_model
from unforced.strategies import make_strategy
from unforced.tasks import get_task
from unforced.train import TrainConfig, Trainer

torch.set_num_threads(TEST_THREADS)

FACTORIES = {torch.zeros, torch.ones, torch.full, torch.arange, torch.randn, torch.rand, torch.randint, torch.empty,
             torch.tensor, torch.as_tensor, torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like,
             torch.rand_like, torch.randn_like, torch.randperm, torch.eye, torch.linspace}


class DeviceRecorder(TorchFunctionMode):
    """Records the device type of every tensor a torch factory function makes while it is active."""

    def __init__(self):
        super().__init__()
        self.devices: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in FACTORIES and isinstance(result, torch.Tensor):
            self.devices[result.device.type] = self.devices.get(result.device.type, 0) + 1
        return result


def test_the_recorder_catches_a_tensor_made_on_another_device():
    with DeviceRecorder() as recorder:
        torch.zeros(3)
        torch.full((2,), 1.0, device="meta")  # another device type than the one a run asks for
        torch.tensor([1, 2])
    assert recorder.devices == {"cpu": 2, "meta": 1}


def test_a_run_makes_tensors_on_the_requested_device_only(tmp_path):
    task = get_task("copy", size=40, length=4, seed=0)
    config = ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                         target_vocab=task.target_tokenizer.vocab_size, embedding=8, hidden=8, dropout=0.0,
                         max_source_len=8, max_target_len=8)
    torch.manual_seed(0)
    model = build_model(config)
    train = TrainConfig(steps=3, batch_size=8, eval_every=3, eval_limit=6, checkpoint_every=3, log_every=1,
                        seed=0, device="cpu")
    strategy = make_strategy("scheduled_sampling", {"schedule": "constant", "schedule_params": {"ratio": 0.5}})
    with DeviceRecorder() as recorder:
        trainer = Trainer(model, task, strategy, train, tmp_path / "checkpoints", tmp_path / "metrics.jsonl",
                          evaluate=lambda m: {"tf_nll": evaluate(m, task, "valid", limit=6)["tf_nll"]})
        trainer.fit()
        figures = evaluate(trainer.model, task, "test", limit=6)
        diagnose(trainer.model, task, "test", limit=6, per_position=figures["per_position"])
    assert trainer.device == torch.device("cpu") and next(trainer.model.parameters()).device.type == "cpu"
    assert set(recorder.devices) == {"cpu"} and recorder.devices["cpu"] > 100


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "", "CPU0", "cuda:-1"])
def test_unknown_devices_are_refused_by_name(name):
    with pytest.raises(UnforcedError, match="train.device must be one of auto, cpu, cuda or cuda:N"):
        TrainConfig(device=name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_and_bf16_on_the_cpu_are_refused():
    with pytest.raises(UnforcedError, match="train.device is 'cuda' but CUDA is not available"):
        TrainConfig(device="cuda")
    with pytest.raises(UnforcedError, match="train.device is 'cuda:1' but CUDA is not available"):
        TrainConfig(device="cuda:1")
    with pytest.raises(UnforcedError, match="train.precision bf16 runs on CUDA only"):
        TrainConfig(precision="bf16")
    with pytest.raises(UnforcedError, match="train.precision must be one of fp32, bf16"):
        TrainConfig(precision="fp16")
    assert distributed.choose_device("auto") == torch.device("cpu")
    assert TrainConfig(device=" CPU ").device == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_command_line_refuses_a_missing_device_naming_the_flag(tmp_path, capsys):
    from cli_helper import call

    code, _, stderr = call(["train", "--task", "copy", "--strategy", "teacher_forcing", "--device", "cuda",
                            "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "--device is 'cuda' but CUDA is not available" in stderr
    code, _, stderr = call(["run", "--task", "copy", "--precision", "bf16", "--out", str(tmp_path / "run")],
                           capsys)
    assert code == 2 and "--precision bf16 runs on CUDA only" in stderr
    code, _, stderr = call(["gap", str(tmp_path), "--device", "npu"], capsys)
    assert code == 2 and "--device must be one of" in stderr


def test_auto_under_a_launch_takes_the_local_rank_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.choose_device("auto") == torch.device("cuda", 1)
    assert distributed.choose_device("cuda") == torch.device("cuda", 1)
    assert distributed.choose_device("cuda:0") == torch.device("cuda", 0)
    assert distributed.choose_device("cpu") == torch.device("cpu")
