"""Where corpora built or unpacked on this machine live, and how a Debian package gets there: one cache folder for
every task, and one way to unpack packages into it (`apt-get download` + `dpkg-deb -x`, never a system install)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from unforced.errors import UnforcedError


def default_cache_dir() -> Path:
    """`$UNFORCED_CACHE` if set, else `~/.cache/unforced`."""
    configured = os.environ.get("UNFORCED_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "unforced"


def run_or_explain(command: list[str], cwd: Path, how_to_get: Callable[[str], str]) -> None:
    """Run `command`; on failure raise UnforcedError with `how_to_get(reason)`, the reason being the command's
    last error line (apt-get warns, W:, after its error, E:, and the error is what the user needs to see)."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = ([line for line in lines if line.startswith("E:")] or lines or [f"exit {result.returncode}"])[-1]
        raise UnforcedError(how_to_get(f"`{' '.join(command)}` failed: {reason}"))


def unpack_packages(packages: Callable[[], Iterable[str]], target: Path, complete: Callable[[Path], bool],
                    how_to_get: Callable[[str], str], incomplete: str,
                    tools: tuple[str, ...] = ("apt-get", "dpkg-deb")) -> None:
    """Download `packages()` with apt-get and unpack them into `target` (a folder of the cache), unless
    `complete(target)` already holds. They are unpacked into a scratch folder beside it, checked with `complete`
    (else `incomplete` names what is missing) and renamed into place in one step, so a half-done extraction is
    never taken for a finished one. On a fresh system (a container) with empty package lists, as root, the
    package lists are updated once and the download tried again."""
    if complete(target):
        return
    for tool in tools:
        if shutil.which(tool) is None:
            raise UnforcedError(how_to_get(f"{tool} not found"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as scratch:
        work = Path(scratch)
        download = ["apt-get", "download", *packages()]
        result = subprocess.run(download, cwd=work, capture_output=True, text=True)
        if result.returncode != 0:
            if "Unable to locate package" in result.stderr and os.geteuid() == 0:
                subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            run_or_explain(download, work, how_to_get)
        staging = work / "root"
        for deb in sorted(work.glob("*.deb")):
            run_or_explain(["dpkg-deb", "-x", str(deb), str(staging)], work, how_to_get)
        if not complete(staging):
            raise UnforcedError(how_to_get(incomplete))
        if target.exists():
            shutil.rmtree(target)  # an incomplete tree left by hand: replace it whole
        try:
            staging.rename(target)
        except OSError:
            if not complete(target):  # else another process finished first, which is fine
                raise


__all__ = ["default_cache_dir", "run_or_explain", "unpack_packages"]
