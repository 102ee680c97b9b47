"""Where corpora built or unpacked on this machine live: one cache folder for every task."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """`$UNFORCED_CACHE` if set, else `~/.cache/unforced`."""
    configured = os.environ.get("UNFORCED_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "unforced"


__all__ = ["default_cache_dir"]
