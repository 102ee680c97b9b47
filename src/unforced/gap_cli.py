"""`unforced gap`: every diagnostic of a finished run measured again from its checkpoints, or of the user's own
saved Hugging Face model on a task (unforced.measure). The main CLI registers this function as its `gap` command;
bad arguments raise UnforcedError, which the main command turns into exit code 2 and one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from unforced.cli_common import DEVICE_HELP, _device_option, _table, stderr
from unforced.errors import UnforcedError


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


__all__ = ["gap"]
