"""The `unforced` command. Progress and tables go to stderr; `--json` prints the result alone on stdout.
Exit codes: 0 success, 2 bad input (one line naming the problem), 1 internal failure (with its traceback)."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from unforced.errors import UnforcedError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure and close the exposure-bias gap of autoregressive sequence models.")
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


def _load_config_file(path: Path | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UnforcedError(f"{path}: cannot read config ({error.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UnforcedError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UnforcedError(f"{path}: the config must be a mapping of sections (task, model, train, ...)")
    return data


def _apply_model(data: dict, model: str | None) -> None:
    """--model KIND or --model hf:PATH into the config's model section."""
    if model is None:
        return
    section = data.setdefault("model", {})
    if not isinstance(section, dict):
        raise UnforcedError("config: the model section must be a mapping")
    if model.startswith("hf:"):
        if not model[3:]:
            raise UnforcedError("--model hf:PATH needs a path (a directory saved with save_pretrained)")
        section.update({"kind": "hf", "path": model[3:]})
    else:
        section["kind"] = model


DEVICE_HELP = "auto (CUDA where available, else CPU), cpu, cuda or cuda:N; under accelerate/torchrun each process " \
              "takes its LOCAL_RANK's GPU"
PRECISION_HELP = "fp32, or bf16 (autocast; CUDA only)"
FSDP_HELP = "shard weights, gradients and optimizer states over the launched processes (FSDP; on by itself under " \
            "accelerate launch --use_fsdp); docs/scaling.md lists the strategies it trains"


def _apply_fsdp(data: dict, fsdp: bool) -> None:
    """--fsdp into the config's train section."""
    if not fsdp:
        return
    section = data.setdefault("train", {})
    if not isinstance(section, dict):
        raise UnforcedError("config: the train section must be a mapping")
    section["fsdp"] = True


def _apply_device(data: dict, device: str | None, precision: str | None = None) -> None:
    """--device and --precision into the config's train section (checked here, so errors name the flag)."""
    from unforced.distributed import check_device, check_precision

    if device is None and precision is None:
        return
    section = data.setdefault("train", {})
    if not isinstance(section, dict):
        raise UnforcedError("config: the train section must be a mapping")
    if device is not None:
        section["device"] = check_device(device, "--device")
    if precision is not None:
        check_precision(precision, section.get("device", "auto"), "--precision")
        section["precision"] = precision


def _device_option(device: str) -> str:
    from unforced.distributed import check_device

    return check_device(device, "--device")


def _default_out(data: dict) -> Path:
    import re
    import time

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(data.get("task", "bible-en-es"))).stem)
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _run(config_data: dict, out: Path | None, as_json: bool, resume: bool, overwrite: bool = False,
         seeds: int = 1, sweep: dict | None = None) -> None:
    from unforced.config import validate_config
    from unforced.experiment import RunConfig, run_experiment
    from unforced.report import build_report
    from unforced.runs import run_seeds

    config = validate_config(RunConfig, config_data, prefix="config")
    if out is None:
        if resume:
            raise UnforcedError("--resume needs --out: the run directory to continue")
        out = _default_out(config_data)
    if sweep is not None:
        return _run_sweep(config, out, as_json, overwrite, seeds, sweep)
    with _Bars(enabled=sys.stderr.isatty() or not as_json) as bars:
        if seeds == 1:
            results = run_experiment(config, out, progress=bars, resume=resume, overwrite=overwrite)
        else:
            results = run_seeds(config, out, seeds, progress=bars, resume=resume, overwrite=overwrite)
    from unforced import distributed

    if not distributed.is_main():  # under a distributed launch the main process reports, the others only train
        return
    report = build_report(out)
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    stderr.print(_table(results))
    stderr.print(f"results: {out / 'results.json'}\nreport:  {report}")


def _run_sweep(config, out: Path, as_json: bool, overwrite: bool, seeds: int, sweep: dict) -> None:
    """--parallel / --grid: every (entry, seed, setting) a job of its own (parallel.py)."""
    from unforced.parallel import parse_grid, run_sweep
    from unforced.report import build_report

    lines = _PlainProgress() if sys.stderr.isatty() or not as_json else None  # a line at least every 30 s

    def say(tag: str, record: dict) -> None:
        if lines is None:
            return
        with lines.lock:
            if record.get("state") == "start":
                lines.current = f"sweep: 0/{record['jobs']} jobs done"
                lines._print(f"sweep: {record['jobs']} jobs to run on {record['backend']}, {record['workers']} at "
                             f"a time, {record['threads']} torch thread(s) each")
            elif record.get("state") == "done":
                lines.current = f"sweep: {record['done']}/{record['jobs']} jobs done"
                lines._print(f"[{tag}] done ({record['done']}/{record['jobs']})")

    import contextlib

    with lines if lines is not None else contextlib.nullcontext():
        results = run_sweep(config, out, seeds, backend=sweep["backend"], grid=parse_grid(sweep["grid"]),
                            workers=sweep["jobs"], retries=sweep["retries"], overwrite=overwrite, progress=say)
    settings = results.get("settings", {"": results})
    for name, part in settings.items():
        if part["strategies"]:
            build_report(out / name if name else out)
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    for name, part in settings.items():
        if part["strategies"]:
            if name:
                stderr.print(f"setting {name}", highlight=False)
            stderr.print(_table(part))
    missing = results["sweep"]["missing"]
    stderr.print(f"jobs run now: {len(results['sweep']['ran'])}; missing: {len(missing)}\nresults: "
                 f"{out / 'results.json'}")


@app.command()
def run(task: str = typer.Option(None, help="registered task name or a .tsv/.jsonl pairs file"),
        strategies: str = typer.Option(None, help="comma-separated names or chains (a:2000>b:500)"),
        quick: bool = typer.Option(False, "--quick", help="small preset: under 3 minutes on 2 CPU cores"),
        preset: str = typer.Option(None, help="quick, default or large"),
        config: Path = typer.Option(None, help="YAML file with task, model, train, strategy_options sections"),
        out: Path = typer.Option(None, help="run directory (default: runs/<task>-<date>-<time>)"),
        model: str = typer.Option(None, help="gru, lstm, transformer, decoder_only, or hf:PATH (a saved "
                                              "Hugging Face model)"),
        seed: int = typer.Option(None, help="random seed"),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option(None, help=PRECISION_HELP),
        fsdp: bool = typer.Option(False, "--fsdp", help=FSDP_HELP),
        seeds: int = typer.Option(1, help="repeat every strategy over this many seeds; report mean and spread"),
        parallel: str = typer.Option(None, help="run every (strategy, seed, setting) as a job of its own: local "
                                                "(a process pool sized to the cores) or ray[:ADDRESS]; the same "
                                                "command again finishes the missing jobs"),
        grid: list[str] = typer.Option(None, help="a setting to sweep, strategy.option=v1,v2 (e.g. scheduled_"
                                                  "sampling.schedule_params.k=100,300,1000); repeatable"),
        jobs: int = typer.Option(None, help="with --parallel local: jobs at a time (default: the cores)"),
        retries: int = typer.Option(2, help="with --parallel: times a failed job is run again"),
        resume: bool = typer.Option(False, "--resume", help="continue from the checkpoints in --out"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace a run already in --out"),
        as_json: bool = typer.Option(False, "--json", help="print the JSON result alone on stdout")):
    """The main job: train every strategy, compare teacher-forced and free-running figures, write a report."""
    data = _load_config_file(config)
    if task is not None:
        data["task"] = task
    if strategies is not None:
        data["strategies"] = [s for s in strategies.split(",") if s.strip()]
        if not data["strategies"]:
            raise UnforcedError("--strategies names no strategy")
    if quick and preset not in (None, "quick"):
        raise UnforcedError("--quick and --preset name different presets")
    if quick or preset:
        data["preset"] = "quick" if quick else preset
    if seed is not None:
        data["seed"] = seed
    _apply_model(data, model)
    _apply_device(data, device, precision)
    _apply_fsdp(data, fsdp)
    sweep = None
    if parallel is not None or grid:
        if resume:
            raise UnforcedError("--parallel and --grid resume by themselves: run the same command again, "
                                "without --resume")
        if jobs is not None and jobs < 1:
            raise UnforcedError(f"--jobs must be at least 1, got {jobs}")
        if retries < 0:
            raise UnforcedError(f"--retries must not be negative, got {retries}")
        sweep = {"backend": parallel or "serial", "grid": grid or [], "jobs": jobs, "retries": retries}
    _run(data, out, as_json, resume, overwrite, seeds, sweep)


@app.command()
def train(task: str = typer.Option(..., help="registered task name or a .tsv/.jsonl pairs file"),
          strategy: str = typer.Option(..., help="strategy name or chain"),
          config: Path = typer.Option(None, help="YAML config file"),
          out: Path = typer.Option(None, help="run directory (default: runs/<task>-<date>-<time>)"),
          preset: str = typer.Option(None, help="quick, default or large"),
          model: str = typer.Option(None, help="gru, lstm, transformer, decoder_only, or hf:PATH"),
          device: str = typer.Option(None, help=DEVICE_HELP),
          precision: str = typer.Option(None, help=PRECISION_HELP),
          fsdp: bool = typer.Option(False, "--fsdp", help=FSDP_HELP),
          resume: bool = typer.Option(False, "--resume", help="continue from <out>/checkpoints/last.pt"),
          overwrite: bool = typer.Option(False, "--overwrite", help="replace a run already in --out"),
          as_json: bool = typer.Option(False, "--json", help="print the JSON result alone on stdout")):
    """Train one strategy on one task."""
    data = _load_config_file(config)
    data.update({"task": task, "strategies": [strategy]})
    if preset:
        data["preset"] = preset
    _apply_model(data, model)
    _apply_device(data, device, precision)
    _apply_fsdp(data, fsdp)
    _run(data, out, as_json, resume, overwrite)


@app.command()
def gap(run_dir: Path = typer.Argument(None, help="a finished run directory (or --model and --task instead)"),
        strategy: str = typer.Option(None, help="strategy entry (default: all)"),
        model: str = typer.Option(None, help="hf:PATH, a saved Hugging Face model with its tokenizer, measured "
                                             "as it is (no run directory)"),
        task: str = typer.Option(None, help="with --model: a registered task or a .tsv/.jsonl/.csv pairs file"),
        metric: str = typer.Option(None, help="with --model and a file: the metric (default: the task's; bleu)"),
        out: Path = typer.Option(None, help="with --model: write results.json, diagnostics.json, report.html here"),
        split: str = typer.Option("test", help="train, valid or test (a file without splits is measured whole)"),
        limit: int = typer.Option(200, help="at most this many pairs"),
        beam: int = typer.Option(0, help="with --model: also decode with a beam of this width"),
        device: str = typer.Option("auto", help=DEVICE_HELP),
        as_json: bool = typer.Option(False, "--json", help="print the JSON result alone on stdout")):
    """Every diagnostic of a trained run, measured again from its checkpoints (the gap, the ratio sweep,
    hidden-state divergence, recovery, the compounding fit, prefix divergence, prefix swap; writes
    RUN_DIR/diagnostics.json), or of the user's own saved model with --model hf:PATH --task T."""
    if model is not None or task is not None:
        if run_dir is not None:
            raise UnforcedError("give a run directory or --model with --task, not both")
        output, where = _gap_of_a_model(model, task, metric, out, split, limit, beam, _device_option(device))
    else:
        if run_dir is None:
            raise UnforcedError("gap needs a run directory, or --model hf:PATH with --task")
        from unforced.runs import diagnose_run

        output = diagnose_run(run_dir, split=split, limit=limit, only=strategy, device=_device_option(device))
        where = Path(run_dir) / "diagnostics.json"
    if as_json:
        sys.stdout.write(json.dumps(output) + "\n")
        return
    stderr.print(_table(output))
    for name, entry in output["strategies"].items():
        details = entry.get("diagnostics") or output.get("diagnostics")
        if not details:
            continue
        sweep = details["sweep"]
        pairs = ", ".join(f"{r:g}: {n:.3f}" for r, n in zip(sweep["ratios"], sweep["nll"], strict=True))
        fit = details["divergence"].get("fit") or {}
        stderr.print(f"[b]{name}[/b] NLL by teacher-forcing ratio {pairs}; divergence amplification "
                     f"a={fit.get('a', float('nan')):.3f}, injection b={fit.get('b', float('nan')):.3f}")
    if where is not None:
        stderr.print(f"written: {where}")


def _gap_of_a_model(model: str | None, task: str | None, metric: str | None, out: Path | None, split: str,
                    limit: int, beam: int, device: str) -> tuple[dict, Path | None]:
    """`unforced gap --model hf:PATH --task T`: unforced.measure on a saved model, no run directory."""
    from unforced.measurement import measure
    from unforced.models.hf import load_hf_model

    if model is None or task is None:
        raise UnforcedError("--model and --task go together: gap --model hf:PATH --task TASK_OR_FILE")
    if not model.startswith("hf:") or not model[3:]:
        raise UnforcedError(f"--model takes hf:PATH (a directory saved with save_pretrained), got {model!r}")
    if limit < 1:
        raise UnforcedError(f"--limit must be at least 1, got {limit}")
    if beam < 0:
        raise UnforcedError(f"--beam must not be negative, got {beam}")
    if split not in ("train", "valid", "test"):
        raise UnforcedError(f"--split must be train, valid or test, got {split!r}")
    path = Path(model[3:])
    if not path.is_dir():
        raise UnforcedError(f"--model {model}: no such directory")
    wrapped = load_hf_model(path)
    if wrapped.tokenizer is None:
        raise UnforcedError(f"{path}: no tokenizer saved beside the model (tokenizer.json or tokenizer_config.json);"
                            f" save it with tokenizer.save_pretrained({str(path)!r})")
    pairs, task_metric = _measured_pairs(task, split)
    report = measure(wrapped, pairs[:limit], tokenizer=wrapped.tokenizer, metric=metric or task_metric,
                     beam_size=beam, diagnostics_limit=limit, device=device)
    report.task = task
    output = {**report.results(), "diagnostics": report.diagnostics, "model": {"kind": "hf", "path": str(path)}}
    from unforced.diagnostics.suite import clean_json

    if out is not None:
        report.save_report(out)
    return clean_json(output), (out / "report.html" if out is not None else None)


def _measured_pairs(task: str, split: str) -> tuple[list, str]:
    """The pairs measured by `gap --model`: a registered task's split, or a pairs file's (the whole file where it
    names no splits); with the task's metric (a file's: bleu)."""
    from unforced.tasks import TASKS, get_task

    if task not in TASKS and task.endswith((".tsv", ".jsonl")):
        from unforced.tasks.files import read_pairs

        if not Path(task).exists():
            raise UnforcedError(f"data file {task} does not exist")
        examples, splits = read_pairs(task)
        if any(s is not None for s in splits):
            examples = [e for e, s in zip(examples, splits, strict=True) if s == split]
            if not examples:
                raise UnforcedError(f"{task}: no pairs in split {split!r}")
        return [(e.source, e.references) for e in examples], "bleu"
    built = get_task(task)
    return [(e.source, e.references) for e in built.split(split)], built.metric


@app.command()
def sweep(run_dir: Path, ratios: str = typer.Option("0,0.25,0.5,0.75,1", help="comma-separated ratios"),
          strategy: str = typer.Option(None, help="strategy entry (default: all)"),
          split: str = typer.Option("test"), limit: int = typer.Option(200),
          device: str = typer.Option("auto", help=DEVICE_HELP),
          as_json: bool = typer.Option(False, "--json", help="print the JSON result alone on stdout")):
    """Gold-token NLL and token accuracy at several teacher-forcing ratios (P(gold) of each fed token)."""
    from unforced.diagnostics import ratio_sweep
    from unforced.report import read_run
    from unforced.runs import load_run_model

    try:
        values = [float(r) for r in ratios.split(",") if r.strip()]
    except ValueError:
        raise UnforcedError(f"--ratios must be numbers separated by commas, got {ratios!r}") from None
    if not values or any(not 0.0 <= r <= 1.0 for r in values):
        raise UnforcedError(f"--ratios must lie in [0, 1], got {ratios!r}")
    device = _device_option(device)
    _, results, _ = read_run(run_dir)
    output = {"split": split, "strategies": {}}
    for name in [strategy] if strategy else list(results["strategies"]):
        model, task, limits, _ = load_run_model(run_dir, name, device)
        output["strategies"][name] = ratio_sweep(model, task, split, ratios=values, limit=limit, limits=limits)
    if as_json:
        sys.stdout.write(json.dumps(output) + "\n")
        return
    table = Table(title="NLL (token accuracy) by teacher-forcing ratio")
    table.add_column("strategy")
    for r in values:
        table.add_column(f"{r:g}", justify="right")
    for name, entry in output["strategies"].items():
        table.add_row(name, *(f"{n:.3f} ({a:.2f})" for n, a in zip(entry["nll"], entry["token_acc"], strict=True)))
    stderr.print(table)


@app.command()
def schedules(plot: Path = typer.Option(..., "--plot", help="PNG file to draw"),
              steps: int = typer.Option(2000, help="training steps on the x axis")):
    """Draw every teacher-forcing-ratio schedule side by side (the ratio is P(feed gold))."""
    from unforced.schedules import Constant, Exponential, InverseSigmoid, Linear, Piecewise, plot_schedules

    if steps < 1:
        raise UnforcedError(f"--steps must be at least 1, got {steps}")
    third = max(1, steps // 3)
    drawn = {"constant(0.75)": Constant(0.75), f"linear(1 -> 0 over {steps})": Linear(steps=steps),
             "exponential(0.999)": Exponential(0.999), "inverse_sigmoid(k=300)": InverseSigmoid(300.0),
             "piecewise(1, 0.6, 0.3)": Piecewise({0: 1.0, 1: 0.6, 2: 0.3}, steps_per_epoch=third)}
    stderr.print(f"plot: {plot_schedules(drawn, steps, plot)}")


@app.command()
def study(name: str = typer.Argument(..., help="tbptt-myopia or tokenization"),
          quick: bool = typer.Option(False, "--quick", help="the small variant (about a minute)"),
          out: Path = typer.Option(None, help="output folder (default: runs/study-<name>)"),
          seed: int = typer.Option(0, help="random seed"),
          device: str = typer.Option("auto", help=DEVICE_HELP),
          as_json: bool = typer.Option(False, "--json", help="print the JSON result alone on stdout")):
    """Run one experiment of the diagnostics: results.json, figures and report.html in --out."""
    from unforced.studies import STUDIES

    if name not in STUDIES:
        raise UnforcedError(f"unknown study {name!r}; known: {', '.join(STUDIES)}")
    out = out or Path("runs") / f"study-{name}"
    result = STUDIES[name](out, quick=quick, seed=seed, device=_device_option(device))
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for sentence in result.get("sentences", []):
        stderr.print(sentence)
    stderr.print(f"report: {out / 'report.html'}")


@app.command()
def report(run_dir: Path):
    """(Re)build report.html and the figures of a run directory."""
    from unforced.report import build_report

    stderr.print(f"report: {build_report(run_dir)}")


@app.command()
def tasks(as_json: bool = typer.Option(False, "--json", help="print JSON on stdout")):
    """List the registered tasks with their options."""
    from unforced.tasks import TASKS, task_options

    listing = {name: {"description": (builder.__doc__ or "").strip().splitlines()[0] if builder.__doc__ else "",
                      "options": task_options(name)} for name, builder in TASKS.items()}
    if as_json:
        sys.stdout.write(json.dumps(listing) + "\n")
        return
    table = Table(title="tasks (or --task path/to/pairs.tsv|.jsonl)")
    table.add_column("task")
    table.add_column("options")
    for name, info in listing.items():
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in info["options"].items()))
    stderr.print(table)


@app.command()
def bench(name: str = typer.Argument(None, help="benchmark name (a file in benchmarks/)"),
          quick: bool = typer.Option(False, "--quick"),
          as_json: bool = typer.Option(False, "--json")):
    """Run a benchmark from the source checkout's benchmarks/ folder (each prints JSON)."""
    import subprocess

    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    available = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")) if folder.is_dir() else []
    if name is None or name not in available:
        if name is not None:
            raise UnforcedError(f"unknown benchmark {name!r}; known: {', '.join(available) or 'none found'}")
        sys.stdout.write("\n".join(available) + "\n")
        return
    command = [sys.executable, str(folder / f"{name}.py")] + (["--quick"] if quick else []) + \
        (["--json"] if as_json else [])
    raise typer.Exit(subprocess.call(command))


# The same bias outside sequence models (docs/observation.md): click logs and specimen collections.
from unforced.observation.cli import clicks_app, specimens_app  # noqa: E402  (after every command of this app)

app.add_typer(clicks_app, name="clicks")
app.add_typer(specimens_app, name="specimens")

# The lab: a local web page that trains in front of the user (docs/lab.md).
from unforced.lab.cli import lab  # noqa: E402

app.command()(lab)
from unforced.control.cli import control  # noqa: E402  (behaviour cloning vs DAgger, docs/control.md)

app.command()(control)
from unforced.cycle_cli import cycle  # noqa: E402  (the ASR-TTS cycle, docs/speech.md)

app.command()(cycle)


def main() -> None:
    try:
        app()  # standalone: usage errors exit 2 with click's message, success exits 0
    except UnforcedError as error:
        stderr.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
