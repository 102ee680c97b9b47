"""The run directory's plumbing: atomic writes, the checkpoint format, claiming a directory, metrics.jsonl.

    <out>/config.yaml        the resolved settings (compared on --resume)
    <out>/metrics.jsonl      one JSON object a line (training steps and evaluations), appended as training goes
    <out>/checkpoints/...    UNFORCED-CHECKPOINT <format> <sha256 of the payload>\\n, then a torch.save payload
    <out>/results.json       the results contract

Everything here is written through a temporary file, fsync and a rename, so a crash or a full disk leaves the
previous file whole. This module sits low (it knows no model, task or strategy), so the Trainer, the experiment,
the report and the lab can all read and write run directories through it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from unforced.errors import UnforcedError

CHECKPOINT_FORMAT = 1
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
    """The object inside a checkpoint, after checking its header and checksum; tensors land on the CPU (the
    caller moves them to its device)."""
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


# ---- metrics.jsonl -------------------------------------------------------------------------------------------

def read_metrics(path: Path) -> list[dict]:
    """Every record of a metrics.jsonl file (none if it is missing); a line cut short by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def append_metrics(path: Path, record: dict) -> None:
    """Append one record as a JSON line (not fsynced: a resumed run rewrites what followed its checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def keep_metrics(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite metrics.jsonl atomically with the records for which `keep` holds (broken lines dropped)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [json.dumps(record) + "\n" for record in read_metrics(path) if keep(record)]
    atomic_write_text("".join(kept), path)


# ---- a run directory -----------------------------------------------------------------------------------------

def read_run(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """(config, results, metrics) of a run directory; errors name the missing or broken file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UnforcedError(f"{run_dir}: not a run directory")
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise UnforcedError(f"{results_path}: missing (has the run finished?)")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnforcedError(f"{results_path}: not valid JSON ({error})") from None
    config = {}
    if (run_dir / "config.yaml").exists():
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    return config, results, read_metrics(run_dir / "metrics.jsonl")


def same_settings(before, now, defaults: type | None = None) -> bool:
    """Settings equal, where a field that a newer version added counts as equal when it holds its default
    (`defaults`: the dataclass whose fields the section holds)."""
    if before == now:
        return True
    if defaults is None or not isinstance(before, dict) or not isinstance(now, dict):
        return False
    fields = {f.name: f.default for f in dataclasses.fields(defaults)}
    return all(before.get(name, fields.get(name)) == value for name, value in now.items()) and \
        set(before) <= set(now)


def claim_run_directory(out: Path, resolved: dict, resume: bool, overwrite: bool,
                        sections: dict[str, type] | None = None) -> None:
    """Refuse to write over an earlier run unless told to resume it (with the same settings: `resolved` against
    its config.yaml, each key in `sections` compared field by field against that dataclass's defaults) or to
    replace it (`overwrite`: its checkpoints, results, metrics and report are removed)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UnforcedError(f"{out}: exists and is not a directory")
    holds_run = (out / "results.json").exists() or (out / "checkpoints").exists() or (out / "config.yaml").exists()
    if holds_run and resume and (out / "config.yaml").exists():
        before = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
        changed = [key for key in resolved if key != "signature"
                   and not same_settings(before.get(key), resolved[key], (sections or {}).get(key))]
        if changed:
            raise UnforcedError(f"{out}: cannot resume with other settings ({', '.join(changed)} differ from the "
                                f"run's config.yaml)")
    elif holds_run and not resume:
        if not overwrite:
            raise UnforcedError(f"{out} already holds a run: pass --resume to continue it, --overwrite to replace "
                                f"it, or choose another --out")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for name in ("results.json", "metrics.jsonl", "report.html"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


__all__ = ["CHECKPOINT_FORMAT", "MAGIC", "append_metrics", "atomic_save", "atomic_write_text", "claim_run_directory",
           "keep_metrics", "load_checkpoint", "read_checkpoint_file", "read_metrics", "read_run", "same_settings"]
