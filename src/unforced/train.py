"""The Trainer: AdamW, gradient clipping, seeded determinism, periodic evaluation, atomic checkpoints, resume.

It knows no strategy by name: it asks the strategy for a loss and steps the optimizer, and tests the optional
capabilities of strategies/base.py with `isinstance` (Stateful, Observer, BatchFilter, OwnOptimizers). What it
writes (through runfiles.py):

    <checkpoint_dir>/last.pt     model, optimizer(s), step, every random state (written atomically)
    <metrics_path>               one JSON line per logged step and per evaluation
    <checkpoint_dir>/best.pt     the best evaluation's weights, where the phase switches on a stall (switch.py)

The model and every batch live on `config.device` (auto: CUDA where available); `config.precision` bf16 runs the
loss under CUDA autocast. Checkpoints are read onto the CPU and moved. Under FSDP (`config.fsdp`, fsdp.py) the
Trainer trains a sharded copy, and `model` stays where it is and receives the trained weights at the end.

A resumed run replays exactly: batches are a function of (seed, step), and the checkpoint carries the global and
the strategy's random states, so a run killed and resumed reaches the same weights as one never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unforced import __version__, distributed, fsdp
from unforced.errors import UnforcedError
from unforced.runfiles import CHECKPOINT_FORMAT, append_metrics, atomic_save, keep_metrics, load_checkpoint
from unforced.strategies.base import BatchFilter, Observer, OwnOptimizers, Stateful
from unforced.tasks.base import Batch, Task


@dataclass
class TrainConfig:
    """Parameters of the training loop.

    steps: optimizer steps to take. batch_size: pairs per step. learning_rate, weight_decay: AdamW's.
    warmup: steps of linear learning-rate warm-up. clip: maximum global gradient norm (0 disables).
    eval_every: steps between validation evaluations (0 disables). eval_limit: validation pairs per evaluation.
    checkpoint_every: steps between checkpoints (the last step always writes one). log_every: steps between
    metrics lines. seed: seeds the weights, the batch order and every random choice of the strategy.
    fsdp: shard the weights, gradients and optimizer states over the processes of a launch (fsdp.py); also on
    under `accelerate launch --use_fsdp`.
    """

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 50
    clip: float = 1.0
    eval_every: int = 250
    eval_limit: int = 200
    checkpoint_every: int = 250
    log_every: int = 10
    max_bad_steps: int = 5
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    fsdp: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_limit", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise UnforcedError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "eval_every", "checkpoint_every", "clip", "weight_decay"):
            if not getattr(self, name) >= 0:  # NaN fails this too
                raise UnforcedError(f"train.{name} must not be negative, got {getattr(self, name)}")
        if not math.isfinite(self.weight_decay):
            raise UnforcedError(f"train.weight_decay must be a finite number, got {self.weight_decay}")
        if not 0 <= self.seed < 2**32:
            raise UnforcedError(f"train.seed must be in [0, 2**32), got {self.seed}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise UnforcedError(f"train.learning_rate must be a positive number, got {self.learning_rate}")
        self.device = distributed.check_device(self.device, "train.device")
        distributed.check_precision(self.precision, self.device, "train.precision")


class Trainer:
    """Train `model` on `task` with `strategy` for `config.steps` steps, on `config.device`."""

    def __init__(self, model, task: Task, strategy, config: TrainConfig, checkpoint_dir: Path,
                 metrics_path: Path, tag: str | None = None, identity: dict | None = None,
                 limits: dict | None = None, progress: Callable[[dict], None] | None = None,
                 evaluate: Callable | None = None, step_offset: int = 0, patience=None):
        if not task.train:
            raise UnforcedError(f"task {task.name!r} has no training pairs")
        distributed.setup()
        self.main = distributed.is_main()
        self.device = distributed.choose_device(config.device)
        self.autocast = config.precision == "bf16"
        self.fsdp = fsdp.active(config.fsdp)
        if self.fsdp:  # trains a sharded copy; `model` stays whole and receives the weights after fit
            fsdp.check_strategy(strategy)
            self.whole, model = model, fsdp.shard(model, self.device)
        self.model, self.task, self.strategy, self.config = model.to(self.device), task, strategy, config
        self.checkpoint_path = Path(checkpoint_dir) / "last.pt"
        self.metrics_path = Path(metrics_path)
        self.tag = tag
        self.identity = identity or {}
        self.limits = limits or {}
        self.progress = progress
        self.evaluate = evaluate
        self.step_offset = step_offset  # steps trained before this phase (warm start, earlier phases of a chain)
        self.patience = patience  # switch.Patience: stops the phase when validation stalls (a chain's switch)
        if patience is not None and not (evaluate and config.eval_every):
            raise UnforcedError("a phase that switches on a validation stall needs validation: set "
                                "train.eval_every above 0")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.step = 0
        self.train_seconds = 0.0
        self.skipped_steps = 0
        self.bad_in_a_row = 0

    def batch_at(self, step: int) -> Batch:
        """The batch of `step` (on the CPU): each epoch is a fresh seeded permutation, so this is a pure function
        of step."""
        pairs = self.task.train
        per_epoch = max(1, math.ceil(len(pairs) / self.config.batch_size))
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(self.config.seed * 100003 + epoch))
        chosen = order[index * self.config.batch_size:(index + 1) * self.config.batch_size].tolist()
        return self.task.collate([pairs[i] for i in chosen], **self.limits)

    def training_batch(self, step: int) -> Batch:
        """The batch of `step` after the strategy's own choice of rows (a BatchFilter: a curriculum)."""
        batch = self.batch_at(step)
        if isinstance(self.strategy, BatchFilter):
            batch = self.strategy.select(batch, step)
        return batch

    def learning_rate(self, step: int) -> float:
        if self.config.warmup and step < self.config.warmup:
            return self.config.learning_rate * (step + 1) / self.config.warmup
        return self.config.learning_rate

    def _extra_optimizers(self) -> dict:
        return self.strategy.extra_optimizers() if isinstance(self.strategy, OwnOptimizers) else {}

    def state(self) -> dict:
        strategy_state = self.strategy.state_dict() if isinstance(self.strategy, Stateful) else None
        state = {"format": CHECKPOINT_FORMAT, "version": __version__, **self.identity,
                 "step": self.step, "train_seconds": self.train_seconds, "skipped_steps": self.skipped_steps,
                 "model": fsdp.full_model_state(self.model) if self.fsdp else self.model.state_dict(),
                 "optimizer": fsdp.full_optimizer_state(self.optimizer) if self.fsdp
                 else self.optimizer.state_dict(),
                 "extra_optimizers": {name: optimizer.state_dict()
                                      for name, optimizer in self._extra_optimizers().items()},
                 "strategy_state": strategy_state, "torch_rng": torch.get_rng_state(),
                 "patience": self.patience.state_dict() if self.patience is not None else None,
                 "train_config": dataclasses.asdict(self.config)}
        if self.device.type == "cuda":  # dropout on the GPU draws from the device's own generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self) -> None:
        if self.fsdp:  # gathering the weights is a collective: every process joins, the main one writes
            state = self.state()
            if self.main:
                atomic_save(state, self.checkpoint_path, keep_previous=True)
        elif self.main:
            atomic_save(self.state(), self.checkpoint_path, keep_previous=True)

    def resume(self) -> bool:
        """Continue from the checkpoint if there is one; returns whether it did."""
        if not self.checkpoint_path.exists():
            self._truncate_metrics(0)  # a run killed before its first checkpoint starts over: drop its lines
            return False
        checkpoint = load_checkpoint(self.checkpoint_path, self.identity)  # on the CPU; load_state_dict moves it
        try:
            if self.fsdp:
                fsdp.load_full_model_state(self.model, checkpoint["model"])
            else:
                self.model.load_state_dict(checkpoint["model"])
        except RuntimeError:
            raise UnforcedError(f"{self.checkpoint_path}: weights do not fit this model") from None
        if self.fsdp:
            fsdp.load_full_optimizer_state(self.optimizer, checkpoint["optimizer"])
        else:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        saved = checkpoint.get("extra_optimizers") or {}
        for name, optimizer in self._extra_optimizers().items():
            if name not in saved:
                raise UnforcedError(f"{self.checkpoint_path}: no state for the strategy's optimizer {name!r}")
            optimizer.load_state_dict(saved[name])
        if checkpoint.get("strategy_state") is not None and isinstance(self.strategy, Stateful):
            self.strategy.load_state_dict(checkpoint["strategy_state"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if self.device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], self.device)
        if self.patience is not None and checkpoint.get("patience") is not None:
            self.patience.load_state_dict(checkpoint["patience"])
        self.step = checkpoint["step"]
        self.train_seconds = checkpoint.get("train_seconds", 0.0)
        self.skipped_steps = checkpoint.get("skipped_steps", 0)
        self._truncate_metrics(self.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics lines this run wrote after its checkpoint: the resumed run writes them again."""
        if self.main:
            keep_metrics(self.metrics_path,
                         lambda record: record.get("strategy") != self.tag or record.get("step", 0) <= step)

    def log(self, record: dict) -> None:
        if self.main:
            append_metrics(self.metrics_path, {"strategy": self.tag, **record,
                                               "global_step": self.step_offset + record["step"]})

    def _observe_evaluation(self) -> bool:
        """Evaluate on the main process (on every process in lock step under FSDP: each joins the gathers), log,
        and let the strategy observe the main process's figures on every process; True when the phase's patience
        has run out (the switch to the next phase of a chain)."""
        figures = distributed.broadcast_object(self.evaluate(self.model) if self.main or self.fsdp else None)
        self.log({"step": self.step, "eval": figures})
        if isinstance(self.strategy, Observer):
            self.strategy.observe(figures)
        stop = False
        if self.patience is not None:
            model = fsdp.gather_into(self.whole, self.model) if self.fsdp else self.model
            stop = self.patience.update(figures, self.step, model, main=self.main)
            if stop:
                self.log({"step": self.step, "switch": self.patience.summary()})
        self.model.train()
        return stop

    def fit(self) -> dict:
        config = self.config
        if self.step == 0:
            torch.manual_seed(config.seed)  # dropout draws from the global generator; the run owns it
        self.model.train()
        started = time.perf_counter()
        window_start, window_steps = started, 0
        stalled = self.patience is not None and self.patience.stopped_at is not None  # a resumed, finished phase
        while self.step < config.steps and not stalled:
            step_start = time.perf_counter()
            batch = self.training_batch(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.step)
            weight = 1.0
            if distributed.world_size() > 1:  # this process's slice, weighted by its share of the gold tokens
                rows = distributed.shard(len(batch))
                tokens = float(batch.gold_mask.sum())
                batch = batch.slice(rows)
                weight = float(batch.gold_mask.sum()) * distributed.world_size() / max(tokens, 1.0)
            batch = batch.to(self.device)
            precision = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast
                         else contextlib.nullcontext())
            with precision:
                output = self.strategy.loss(self.model, batch, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            # Every process must agree to skip, or the gradient all-reduce below would wait forever.
            finite = distributed.all_sum(float(not torch.isfinite(output.loss.detach()))) == 0
            grad_norm = float("nan")
            if finite:
                (output.loss * weight).backward()
                if not self.fsdp:  # FSDP's reduce-scatter has averaged the gradients already
                    distributed.average_gradients(self.model.parameters())
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                 config.clip or float("inf")))
                finite = math.isfinite(grad_norm)
            if finite:
                self.optimizer.step()
                self.bad_in_a_row = 0
            else:  # skip the update, count it, and stop before a run of bad steps spoils the weights
                self.optimizer.zero_grad(set_to_none=True)
                grad_norm = float("nan")
                self.skipped_steps += 1
                self.bad_in_a_row += 1
                self.log({"step": self.step + 1, "skipped_step": True, "skipped_steps": self.skipped_steps})
                if self.bad_in_a_row >= config.max_bad_steps:
                    where = (f"; the last good checkpoint is {self.checkpoint_path}"
                             if self.checkpoint_path.exists() else "")
                    raise UnforcedError(f"loss or gradient was NaN or inf for {self.bad_in_a_row} steps in a row "
                                        f"(up to step {self.step + 1}): stopping{where}")
            self.step += 1
            self.train_seconds += time.perf_counter() - step_start
            window_steps += 1
            if self.step % config.log_every == 0 or self.step == config.steps:
                now = time.perf_counter()
                speed = window_steps / max(now - window_start, 1e-9)
                window_start, window_steps = now, 0
                record = {"step": self.step, "loss": float(output.loss.detach()), "grad_norm": grad_norm,
                          "lr": self.learning_rate(self.step - 1), "steps_per_second": speed, **output.logs}
                self.log(record)
                if self.progress and self.main:
                    self.progress({**record, "steps": config.steps,
                                   "eta_seconds": (config.steps - self.step) / max(speed, 1e-9)})
            if self.evaluate and config.eval_every and (self.step % config.eval_every == 0
                                                        or self.step == config.steps):
                stalled = self._observe_evaluation()
            if ((config.checkpoint_every and self.step % config.checkpoint_every == 0) or self.step == config.steps
                    or stalled):
                self.save()
        self.model.eval()
        if self.fsdp:
            fsdp.gather_into(self.whole, self.model).eval()
        return {"steps": self.step, "train_seconds": self.train_seconds, "skipped_steps": self.skipped_steps,
                "switch": self.patience.summary() if self.patience is not None else None}
