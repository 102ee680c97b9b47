"""The `unforced` command. Progress and tables go to stderr; `--json` prints the result alone on stdout.
Exit codes: 0 success, 2 bad input (one line naming the problem), 1 internal failure (with its traceback)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from unforced.cli_common import (
    DEVICE_HELP,
    FSDP_HELP,
    PRECISION_HELP,
    _Bars,
    _device_option,
    _PlainProgress,
    _table,
    stderr,
)
from unforced.errors import UnforcedError
from unforced.gap_cli import gap

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure and close the exposure-bias gap of autoregressive sequence models.")


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


app.command()(gap)  # every diagnostic of a run, or of the user's own model (gap_cli.py)


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
