"""Call the `unforced` command in process and return (exit code, stdout, stderr)."""

from __future__ import annotations

import sys

from unforced.cli import main


def call(args: list[str], capsys) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["unforced", *args]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err
