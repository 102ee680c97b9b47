"""What the `unforced` commands share: their progress (a rich bar per training phase on a terminal, plain lines in
a log) and the table of the gap's figures, all on stderr; the help texts and check of the device options."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

stderr = Console(stderr=True)


def _duration(seconds: float) -> str:
    """42s, 15m02s, 2h05m: short enough for a progress line."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _PlainProgress:
    """Progress as plain lines, for a stderr that is no terminal (CI logs, `make run > log`).

    A step line (`[tag] step 120/2000  loss 3.412  2.1 step/s  ETA 15m02s`) when steps arrive, at most every
    `every` seconds; a line when a phase starts and ends, and at each evaluation, diagnostics or reuse record; and,
    while nothing else is printed, the last state again (`tick`, called every `tick_seconds` by a background
    thread between `__enter__` and `__exit__`, prints it when the next tick would come after `max_silence`
    seconds of silence), so a log never goes quiet for longer than `max_silence`.
    """

    def __init__(self, stream=None, every: float = 10.0, max_silence: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = True, tick_seconds: float = 1.0):
        self.stream, self.every, self.max_silence, self.clock = stream, every, max_silence, clock
        self.tick_seconds = tick_seconds
        self.heartbeat = heartbeat
        self.started: dict[str, float] = {}  # tag -> when its first step record arrived
        self.last_line = -math.inf  # when any line was printed
        self.last_step_line = -math.inf
        self.current: str | None = None  # the line that says where the run is now, for the heartbeat
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self):
        if self.heartbeat:
            self.thread = threading.Thread(target=self._beat, name="unforced-progress", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2.0)

    def _beat(self) -> None:
        while not self.stop.wait(self.tick_seconds):
            self.tick()

    def _print(self, line: str) -> None:
        stream = self.stream or sys.stderr  # looked up late: tests and callers swap sys.stderr
        stream.write(line + "\n")
        stream.flush()
        self.last_line = self.clock()

    def tick(self) -> None:
        """Print the current state again when waiting for the next tick would leave `max_silence` seconds
        without a line."""
        with self.lock:
            now = self.clock()
            if self.current is not None and now - self.last_line + self.tick_seconds > self.max_silence:
                self._print(f"{self.current}  (still running, {_duration(now - self.last_line)} since the last "
                            f"line)")

    def __call__(self, tag: str, record: dict) -> None:
        with self.lock:
            now = self.clock()
            if "steps" in record:
                self._step(tag, record, now)
            elif record.get("phase") == "reused":
                self._print(f"[{tag}] reused steps 1-{record.get('step')} trained by {record.get('from')}")
            elif record.get("phase") == "evaluate":
                self.current = f"[{tag}] evaluating on the test split"
                self._print(self.current)
            elif record.get("phase") == "diagnostics":
                self.current = f"[{tag}] measuring the diagnostics"
                self._print(self.current)

    def _step(self, tag: str, record: dict, now: float) -> None:
        step, steps = record["step"], record["steps"]
        line = (f"[{tag}] step {step}/{steps}  loss {record['loss']:.3f}  "
                f"{record.get('steps_per_second', float('nan')):.1f} step/s  "
                f"ETA {_duration(record.get('eta_seconds', float('nan')))}")
        self.current = line
        if tag not in self.started:
            self.started[tag] = now
            self._print(f"[{tag}] training: {steps} steps")
            self._print(line)
            self.last_step_line = now
        elif step >= steps:
            self._print(line)
            self.current = f"[{tag}] training done: {steps} steps, {_duration(now - self.started[tag])}"
            self._print(self.current)
        elif now - self.last_step_line >= self.every:
            self._print(line)
            self.last_step_line = now


class _Bars:
    """A rich progress bar per training phase (loss, steps per second, ETA) on a terminal; plain lines
    (`_PlainProgress`) when stderr is no terminal, where a live bar would show nothing."""

    def __init__(self, enabled: bool = True, interactive: bool | None = None):
        self.enabled = enabled
        self.interactive = stderr.is_terminal if interactive is None else interactive
        self.plain = _PlainProgress() if enabled and not self.interactive else None
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                                 "{task.total}"), TextColumn("loss {task.fields[loss]}"),
                                 TextColumn("{task.fields[speed]} step/s"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=stderr,
                                 disable=not enabled or self.plain is not None)
        self.bars: dict[str, int] = {}

    def __enter__(self):
        self.progress.__enter__()
        if self.plain is not None:
            self.plain.__enter__()
        return self

    def __exit__(self, *exc):
        if self.plain is not None:
            self.plain.__exit__(*exc)
        self.progress.__exit__(*exc)

    def __call__(self, tag: str, record: dict) -> None:
        if self.plain is not None:
            self.plain(tag, record)
            return
        if "steps" not in record:
            return
        if tag not in self.bars:
            self.bars[tag] = self.progress.add_task(tag, total=record["steps"], loss="-", speed="-")
        self.progress.update(self.bars[tag], completed=record["step"], loss=f"{record['loss']:.3f}",
                             speed=f"{record['steps_per_second']:.1f}")


def _table(results: dict) -> Table:
    """The figures that measure the gap: NLL teacher-forced and free-running, and the free-running sequence
    metric (greedy; beam where the run measured one). No teacher-forced sequence metric: the argmax under gold
    prefixes is no decode a model could make."""
    entries = list(results["strategies"].values())
    metric = entries[0]["metric"]["name"] if entries else "metric"
    beam = next((e["metric"].get("beam_size") for e in entries if e["metric"].get("fr_beam") is not None), None)
    table = Table(title=f"{results['task']}: teacher-forced (TF) vs free-running (FR), test split")
    columns = ["strategy", "TF NLL", "FR NLL", "gap %", f"FR {metric} greedy"]
    columns += [f"FR {metric} beam {beam}"] if beam is not None else []
    for column in (*columns, "train s"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for name, entry in results["strategies"].items():
        cells = [name, f"{entry['tf_nll']:.3f}", f"{entry['fr_nll']:.3f}", f"{entry['gap_pct']:.1f}",
                 f"{entry['metric']['fr']:.2f}"]
        if beam is not None:
            value = entry["metric"].get("fr_beam")
            cells.append("-" if value is None else f"{value:.2f}")
        table.add_row(*cells, f"{entry['train_seconds']:.1f}")
    return table


DEVICE_HELP = "auto (CUDA where available, else CPU), cpu, cuda or cuda:N; under accelerate/torchrun each process " \
              "takes its LOCAL_RANK's GPU"
PRECISION_HELP = "fp32, or bf16 (autocast; CUDA only)"
FSDP_HELP = "shard weights, gradients and optimizer states over the launched processes (FSDP; on by itself under " \
            "accelerate launch --use_fsdp); docs/scaling.md lists the strategies it trains"


def _device_option(device: str) -> str:
    from unforced.distributed import check_device

    return check_device(device, "--device")


__all__ = ["DEVICE_HELP", "FSDP_HELP", "PRECISION_HELP", "_Bars", "_PlainProgress", "_device_option", "_duration",
           "_table", "stderr"]
