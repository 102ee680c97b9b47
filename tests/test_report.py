"""report.html: the new measures with a sentence each, the saturation note, the metric warning, the signature, and
every figure also as SVG; no teacher-forced sequence score anywhere."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from unforced.experiment import run_experiment
from unforced.report import build_report
from unforced.report.html import SATURATED_ERROR, saturation
from unforced.run_config import RunConfig


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    config = RunConfig(task="copy", task_options={"size": 120, "length": 5},
                       strategies=["teacher_forcing", "parallel_scheduled_sampling"], preset="quick",
                       model={"kind": "gru", "embedding": 16, "hidden": 32},
                       train={"steps": 30, "batch_size": 16, "eval_every": 15, "eval_limit": 16, "log_every": 5},
                       test_limit=32, diagnostics_limit=32)
    run_experiment(config, out)
    build_report(out)
    return out


def test_the_report_leads_with_the_measures_and_says_what_each_shows(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    page = (run_dir / "report.html").read_text()
    for entry in results["strategies"].values():
        assert "metric" in entry and "tf" not in entry["metric"]  # no teacher-forced sequence score
        measures = entry["measures"]
        assert f"on-path NLL {measures['on_path_nll']:.3f}" in page
        assert f"{measures['length_ratio']:.2f} times the reference length" in page
        assert f"{100 * measures['first_divergence']['never']:.0f}% of test outputs never leave gold" in page
        assert f"<td>{entry['metric']['fr_beam']:.2f}</td>" in page  # the beam column
    diagnostics = json.loads((run_dir / "diagnostics.json").read_text())["strategies"]
    swap = diagnostics["teacher_forcing"]["diagnostics"]["prefix_swap"]["positions"]
    assert swap and f"continued after {swap[0]['k']} gold tokens" in page
    # The measures come before the positional figures, and copy's oracle gives the excess of Arora et al.
    assert page.index("Measures not inflated by misalignment") < page.index("Per-position error")
    assert "attributable to exposure bias" in page
    assert "TF exact_match" not in page and "teacher-forced score" not in page
    signature = results["signature"]
    assert "<h2>Signature</h2>" in page and html_cell(signature["metric"]) in page


def html_cell(text: str) -> str:
    import html

    return html.escape(str(text))


def test_every_figure_is_written_as_svg_beside_its_png(run_dir):
    pngs = sorted(p.stem for p in (run_dir / "figures").glob("*.png"))
    assert {"per_position", "training_curves", "scores", "sweep"} <= set(pngs)
    for stem in pngs:
        svg = run_dir / "figures" / f"{stem}.svg"
        assert svg.exists() and svg.read_text(encoding="utf-8").lstrip().startswith("<?xml"), stem
    page = (run_dir / "report.html").read_text()
    assert re.search(r'href="figures/per_position\.svg"', page)


def saturated_copy(run_dir, tmp_path, error: float):
    """The run directory with the first strategy's free-running error set to `error` from position 2 on."""
    out = tmp_path / "copy"
    out.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "diagnostics.json"):
        (out / name).write_text((run_dir / name).read_text())
    results = json.loads((run_dir / "results.json").read_text())
    entry = results["strategies"]["teacher_forcing"]
    curve = entry["per_position"]["fr_error"]
    entry["per_position"]["fr_error"] = [min(curve[0], 0.5)] + [error] * (len(curve) - 1)
    entry["per_position"]["count"] = [100] * len(curve)  # every position well measured
    entry["metric"]["warning"] = "corpus BLEU on references mostly shorter than 4 words"
    (out / "results.json").write_text(json.dumps(results))
    return out, results


def test_a_saturated_positional_measure_is_named_and_the_others_are_pointed_to(run_dir, tmp_path):
    out, results = saturated_copy(run_dir, tmp_path, error=0.97)
    page = build_report(out).read_text()
    assert saturation(results["strategies"]["teacher_forcing"]) == 2
    assert "Positional measures saturate here." in page and "teacher_forcing from position" in page
    assert "<b>Warning:</b> corpus BLEU on references mostly shorter than 4 words" in page


def test_an_unsaturated_run_gets_no_saturation_note(run_dir, tmp_path):
    out, results = saturated_copy(run_dir, tmp_path, error=SATURATED_ERROR / 2)
    entry = copy.deepcopy(results["strategies"]["teacher_forcing"])
    assert saturation(entry) is None
    page = build_report(out).read_text()
    assert "saturate here" not in page
    assert yaml.safe_load((out / "config.yaml").read_text())  # the copied run is still a run


def test_curve_data_is_json_ready_and_matches_the_results(run_dir):
    from unforced.report import curves
    from unforced.runfiles import read_run

    _, results, metrics = read_run(run_dir)
    positions = curves.per_position(results)
    entry = results["strategies"]["teacher_forcing"]
    shown = curves.well_measured(entry["per_position"])
    assert positions["teacher_forcing"]["fr_error"] == entry["per_position"]["fr_error"][:shown]
    assert positions["teacher_forcing"]["position"] == list(range(1, shown + 1))
    training = curves.training(metrics)
    assert training["teacher_forcing"]["eval_step"] == [15, 30] and training["teacher_forcing"]["loss"]
    scores = curves.scores(metrics)
    assert scores["metric"] == "exact_match" and scores["entries"]["teacher_forcing"]["step"] == [15, 30]
    fine_tuned = curves.scores(metrics, {"parallel_scheduled_sampling": "teacher_forcing"})
    series = fine_tuned["entries"]["parallel_scheduled_sampling"]
    assert series["fr"][0] == scores["entries"]["teacher_forcing"]["fr"][-1] and len(series["step"]) == 3
    json.dumps([positions, training, scores])


def test_every_page_shares_one_shell():
    from unforced.report.page import page

    document = page("a <title>", "<p>body</p>")
    assert document.startswith("<!doctype html>") and "<title>a &lt;title&gt;</title>" in document
    assert "<p>body</p>" in document and document.rstrip().endswith("</html>")
