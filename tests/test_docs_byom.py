"""docs/bring-your-own-model.md: every example on the page runs as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "bring-your-own-model.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("index", [0, 1])
def test_each_python_example_runs(index, tmp_path, monkeypatch, capsys):
    python = blocks("python")
    assert len(python) == 2
    monkeypatch.chdir(tmp_path)
    exec(compile(python[index], f"{PAGE}#python-{index}", "exec"), {"__name__": "__byom__"})  # noqa: S102
    printed = capsys.readouterr().out
    if index == 0:
        assert "free-running chrF" in printed and (tmp_path / "my-model-gap" / "report.html").exists()
    else:
        assert re.search(r"\[-?\d", printed) and (tmp_path / "my-gap" / "results.json").exists()
        assert json.loads((tmp_path / "my-gap" / "results.json").read_text())["strategies"]["model"]


def test_the_command_line_example_runs(tmp_path, monkeypatch):
    import shlex
    import subprocess
    import sys

    from test_measurement import copy_pairs, tiny_hf, word_tokenizer

    (command,) = [line for block in blocks("sh") for line in block.splitlines() if line.startswith("unforced gap")]
    monkeypatch.chdir(tmp_path)
    tokenizer = word_tokenizer()
    tiny_hf("t5", len(tokenizer)).save_pretrained("my-model")
    tokenizer.save_pretrained("my-model")
    Path("pairs.jsonl").write_text("".join(json.dumps({"source": s, "target": r}) + "\n" for s, r in copy_pairs(8)))
    done = subprocess.run([sys.executable, "-m", "unforced.cli", *shlex.split(command)[1:]], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["strategies"]["model"]["fr_nll"] > 0
    assert (tmp_path / "my-model-gap" / "report.html").exists()
