"""The studies: TBPTT myopia and tokenization, each run at a minimal budget."""

from __future__ import annotations

import json
import re

import torch
from conftest import TEST_THREADS

from unforced.studies import STUDIES
from unforced.studies.tbptt_myopia import delayed_echo_task

torch.set_num_threads(TEST_THREADS)


def test_registry_names_both_studies():
    assert set(STUDIES) == {"tbptt-myopia", "tokenization"}


def test_delayed_echo_repeats_the_symbol_delay_places_back():
    task = delayed_echo_task(3, length=10, size=60)
    for source, target in task.train[:20]:
        symbols = target.split()
        assert source == "go" and len(symbols) == 10
        assert all(symbols[t] == symbols[t - 3] for t in range(3, 10))


def test_tbptt_study_cut_below_the_delay_learns_less(tmp_path):
    results = STUDIES["tbptt-myopia"](tmp_path, quick=True, truncations=(1, 8), steps=120, full_reference=False)
    for delay in (2, 6):
        for truncation in ("1", "8"):
            assert 0.0 <= results["accuracy"][str(delay)][truncation] <= 1.0
    assert {(c["delay"], c["truncation"]) for c in results["cells"]} == {(2, 1), (2, 8), (6, 1), (6, 8)}
    # D = 6 cut every step against D = 2 cut every 8: at this budget (measured ~0.15-0.25 against ~0.99).
    assert results["accuracy"]["6"]["1"] + 0.3 < results["accuracy"]["2"]["8"]
    summary = results["summary"]
    assert summary["mean_accuracy_truncation_below_delay"] < summary["mean_accuracy_truncation_at_least_delay"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["accuracy"] == results["accuracy"]
    assert (tmp_path / "figures" / "tbptt_myopia.png").stat().st_size > 0
    page = (tmp_path / "report.html").read_text()
    assert f"{results['summary']['mean_accuracy_truncation_below_delay']:.2f}" in page


def test_tokenization_study_on_the_toy_fallback(tmp_path):
    results = STUDIES["tokenization"](tmp_path, quick=True, corpus="toy", steps=60)
    assert results["corpus"] == "toy" and [r["vocab_size"] for r in results["rows"]] == [40, 200]
    small, large = results["rows"]
    assert small["tokens_per_sentence"] > 2 * large["tokens_per_sentence"]  # ~33 against ~7
    for row in results["rows"]:
        assert 0.0 <= row["tf_error"] <= 1.0 and 0.0 <= row["fr_error"] <= 1.0
        assert abs(row["gap_per_sentence"] - row["gap_nll"] * (row["tokens_per_sentence"] + 1)) < 1e-6
        assert (tmp_path / f"vocab-{row['vocab_size']}" / "results.json").exists()
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images and all((tmp_path / image).exists() for image in images)
    assert results["sentences"][0] in page.replace("&#x27;", "'")
