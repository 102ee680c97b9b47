"""A lock on a run directory, so two runs never write into the same one.

The lock file holds the owner's pid. A second run finds it and stops, naming that pid; a lock whose process is
gone (a run that was killed) is stale and is taken over.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from unforced.errors import UnforcedError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    """Whether `pid` is a process that can still write: not gone, not a zombie, not dying of a SIGKILL.

    A run killed mid-way may leave processes that have not been reaped yet (a killed sweep's workers, reparented
    to an init that reaps them late): they still answer `kill(pid, 0)`, but they hold nothing any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # no /proc (not Linux), or it ended just now: take kill's answer
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip()[:1] in ("Z", "X"):
        return False
    kill = 1 << (signal.SIGKILL - 1)
    return not any(int(fields.get(key, "0").strip() or "0", 16) & kill for key in ("SigPnd", "ShdPnd"))


@contextlib.contextmanager
def run_lock(directory: Path):
    """Hold `directory/.lock` for the duration of the block."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _alive(holder):
                raise UnforcedError(f"{directory} is in use by another run (pid {holder}); wait for it or choose "
                                    f"another --out") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(handle, "w") as file:
            file.write(str(os.getpid()))
        break
    else:
        raise UnforcedError(f"{directory}: could not take the run lock {path}")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
