"""The Trainer: AdamW, gradient clipping, seeded determinism, periodic evaluation, atomic checkpoints, resume.

It knows no strategy by name: it asks the strategy for a loss and steps the optimizer. What it writes:

    <checkpoint_dir>/last.pt     model, optimizer, step, every random state (written atomically)
    <metrics_path>               one JSON line per logged step and per evaluation

A resumed run replays exactly: batches are a function of (seed, step), and the checkpoint carries the global and
the strategy's random states, so a run killed and resumed reaches the same weights as one never interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unforced import __version__, distributed
from unforced.errors import UnforcedError
from unforced.tasks.base import Batch, Task

CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """Parameters of the training loop.

    steps: optimizer steps to take. batch_size: pairs per step. learning_rate, weight_decay: AdamW's.
    warmup: steps of linear learning-rate warm-up. clip: maximum global gradient norm (0 disables).
    eval_every: steps between validation evaluations (0 disables). eval_limit: validation pairs per evaluation.
    checkpoint_every: steps between checkpoints (the last step always writes one). log_every: steps between
    metrics lines. seed: seeds the weights, the batch order and every random choice of the strategy.
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


MAGIC = b"UNFORCED-CHECKPOINT"


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_save(obj, path: Path, keep_previous: bool = False) -> None:
    """Write a checkpoint safely: a header with the format and a SHA-256 of the payload, then the payload, into a
    temporary file beside `path`; fsync; rename over `path`. A crash or a full disk leaves the old file whole.
    With `keep_previous`, the file being replaced becomes `previous.pt` (the last two are kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    header = MAGIC + f" {CHECKPOINT_FORMAT} {hashlib.sha256(payload).hexdigest()}\n".encode()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(header)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name("previous.pt"))
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_directory(path.parent)


def read_checkpoint_file(path: Path) -> dict:
    """The object inside a checkpoint, after checking its header and checksum."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UnforcedError(f"{path}: cannot read checkpoint ({error.strerror or error})") from None
    previous = path.with_name("previous.pt")
    hint = f"; the previous checkpoint {previous} is kept" if previous.exists() and previous != path else ""
    end = data.find(b"\n", 0, 200)
    fields = data[:end].split(b" ") if end > 0 else []
    if len(fields) != 3 or fields[0] != MAGIC:
        raise UnforcedError(f"{path}: not an unforced checkpoint{hint}")
    if fields[1] != str(CHECKPOINT_FORMAT).encode():
        raise UnforcedError(f"{path}: checkpoint format {fields[1].decode(errors='replace')}, this version of "
                            f"unforced reads {CHECKPOINT_FORMAT}")
    payload = data[end + 1:]
    if hashlib.sha256(payload).hexdigest().encode() != fields[2]:
        raise UnforcedError(f"{path}: checksum mismatch, the file is truncated or altered{hint}")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as error:  # a payload that passed its checksum but still fails is a bug worth naming
        raise UnforcedError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None


def atomic_write_text(text: str, path: Path) -> None:
    """Write text through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def load_checkpoint(path: Path, expect: dict | None = None) -> dict:
    """Read a checkpoint; refuse one of another format, another model, or one that does not load."""
    if not path.exists():
        raise UnforcedError(f"{path}: no checkpoint there")
    checkpoint = read_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
        raise UnforcedError(f"{path}: checkpoint format {found!r}, this version of unforced reads "
                            f"{CHECKPOINT_FORMAT}")
    for key, value in (expect or {}).items():
        if checkpoint.get(key) != value:
            raise UnforcedError(f"{path}: checkpoint is for another {key.replace('_', ' ')} "
                                f"({checkpoint.get(key)!r}, expected {value!r})")
    return checkpoint


class Trainer:
    """Train `model` on `task` with `strategy` for `config.steps` steps."""

    def __init__(self, model, task: Task, strategy, config: TrainConfig, checkpoint_dir: Path,
                 metrics_path: Path, tag: str | None = None, identity: dict | None = None,
                 limits: dict | None = None, progress: Callable[[dict], None] | None = None,
                 evaluate: Callable | None = None, step_offset: int = 0):
        self.model, self.task, self.strategy, self.config = model, task, strategy, config
        self.checkpoint_path = Path(checkpoint_dir) / "last.pt"
        self.metrics_path = Path(metrics_path)
        self.tag = tag
        self.identity = identity or {}
        self.limits = limits or {}
        self.progress = progress
        self.evaluate = evaluate
        self.step_offset = step_offset  # steps trained before this phase (warm start, earlier phases of a chain)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.step = 0
        self.train_seconds = 0.0
        self.skipped_steps = 0
        self.bad_in_a_row = 0
        if not task.train:
            raise UnforcedError(f"task {task.name!r} has no training pairs")
        distributed.setup()
        self.main = distributed.is_main()

    def batch_at(self, step: int) -> Batch:
        """The batch of `step`: each epoch is a fresh seeded permutation, so this is a pure function of step."""
        pairs = self.task.train
        per_epoch = max(1, math.ceil(len(pairs) / self.config.batch_size))
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(self.config.seed * 100003 + epoch))
        chosen = order[index * self.config.batch_size:(index + 1) * self.config.batch_size].tolist()
        return self.task.collate([pairs[i] for i in chosen], **self.limits)

    def _within_curriculum(self, batch: Batch) -> Batch:
        """Rows whose target fits the strategy's curriculum length at this step (the shortest row if none does)."""
        limit = self.strategy.max_target_length(self.step) if hasattr(self.strategy, "max_target_length") else None
        if limit is None:
            return batch
        lengths = batch.gold_mask.sum(1)
        keep = torch.nonzero(lengths <= limit).flatten()
        if keep.numel() == 0:
            keep = lengths.argmin().reshape(1)
        if keep.numel() == len(batch):
            return batch
        rows = keep.tolist()
        width = int(lengths[keep].max())
        return Batch(batch.source[keep], batch.source_mask[keep], batch.inputs[keep, :width],
                     batch.gold[keep, :width], batch.gold_mask[keep, :width],
                     [batch.sources[i] for i in rows], [batch.references[i] for i in rows])

    def learning_rate(self, step: int) -> float:
        if self.config.warmup and step < self.config.warmup:
            return self.config.learning_rate * (step + 1) / self.config.warmup
        return self.config.learning_rate

    def state(self) -> dict:
        strategy_state = self.strategy.state_dict() if hasattr(self.strategy, "state_dict") else None
        return {"format": CHECKPOINT_FORMAT, "version": __version__, **self.identity,
                "step": self.step, "train_seconds": self.train_seconds, "skipped_steps": self.skipped_steps,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "strategy_state": strategy_state, "torch_rng": torch.get_rng_state(),
                "train_config": dataclasses.asdict(self.config)}

    def save(self) -> None:
        if self.main:
            atomic_save(self.state(), self.checkpoint_path, keep_previous=True)

    def resume(self) -> bool:
        """Continue from the checkpoint if there is one; returns whether it did."""
        if not self.checkpoint_path.exists():
            self._truncate_metrics(0)  # a run killed before its first checkpoint starts over: drop its lines
            return False
        checkpoint = load_checkpoint(self.checkpoint_path, self.identity)
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError:
            raise UnforcedError(f"{self.checkpoint_path}: weights do not fit this model") from None
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("strategy_state") is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(checkpoint["strategy_state"])
        torch.set_rng_state(checkpoint["torch_rng"])
        self.step = checkpoint["step"]
        self.train_seconds = checkpoint.get("train_seconds", 0.0)
        self.skipped_steps = checkpoint.get("skipped_steps", 0)
        self._truncate_metrics(self.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics lines this run wrote after its checkpoint: the resumed run writes them again."""
        if not self.metrics_path.exists() or not self.main:
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if record.get("strategy") != self.tag or record.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text("".join(k + "\n" for k in kept), self.metrics_path)

    def log(self, record: dict) -> None:
        if not self.main:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"strategy": self.tag, **record,
                                     "global_step": self.step_offset + record["step"]}) + "\n")

    def fit(self) -> dict:
        config = self.config
        if self.step == 0:
            torch.manual_seed(config.seed)  # dropout draws from the global generator; the run owns it
        self.model.train()
        started = time.perf_counter()
        window_start, window_steps = started, 0
        while self.step < config.steps:
            step_start = time.perf_counter()
            batch = self._within_curriculum(self.batch_at(self.step))
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.step)
            weight = 1.0
            if distributed.world_size() > 1:  # this process's slice, weighted by its share of the gold tokens
                rows = distributed.shard(len(batch))
                tokens = float(batch.gold_mask.sum())
                batch = batch.slice(rows)
                weight = float(batch.gold_mask.sum()) * distributed.world_size() / max(tokens, 1.0)
            output = self.strategy.loss(self.model, batch, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            # Every process must agree to skip, or the gradient all-reduce below would wait forever.
            finite = distributed.all_sum(float(not torch.isfinite(output.loss.detach()))) == 0
            if finite:
                (output.loss * weight).backward()
                distributed.average_gradients(self.model.parameters())
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip or float("inf"))
                finite = bool(torch.isfinite(grad_norm))
            if finite:
                self.optimizer.step()
                self.bad_in_a_row = 0
            else:  # skip the update, count it, and stop before a run of bad steps spoils the weights
                self.optimizer.zero_grad(set_to_none=True)
                grad_norm = torch.tensor(float("nan"))
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
                record = {"step": self.step, "loss": float(output.loss.detach()), "grad_norm": float(grad_norm),
                          "lr": self.learning_rate(self.step - 1), "steps_per_second": speed, **output.logs}
                self.log(record)
                if self.progress and self.main:
                    self.progress({**record, "steps": config.steps,
                                   "eta_seconds": (config.steps - self.step) / max(speed, 1e-9)})
            if self.main and self.evaluate and config.eval_every and (self.step % config.eval_every == 0
                                                        or self.step == config.steps):
                figures = self.evaluate(self.model)
                self.log({"step": self.step, "eval": figures})
                if hasattr(self.strategy, "observe"):
                    self.strategy.observe(figures)
                self.model.train()
            if (config.checkpoint_every and self.step % config.checkpoint_every == 0) or self.step == config.steps:
                self.save()
        self.model.eval()
        return {"steps": self.step, "train_seconds": self.train_seconds, "skipped_steps": self.skipped_steps}
