"""The README's library example runs as written, and says what it promises."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_library_example_runs():
    blocks = python_blocks()
    assert blocks, "the README has a Python example"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102  (the README's own code)
        mixed = namespace["mixed"]
        batch = namespace["batch"]
        assert mixed.tokens.shape[0] == len(batch) and mixed.logits.shape[-1] > 4
