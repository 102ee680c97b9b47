"""A lock on a run directory, so two runs never write into the same one.

The lock file holds the owner's pid. A second run finds it and stops, naming that pid; a lock whose process is
gone (a run that was killed) is stale and is taken over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from unforced.errors import UnforcedError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


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
