"""observation/cli.py: the clicks and specimens sub-apps, driven through a typer app of their own with
CliRunner, --json on stdout, bad input as exit code 2 with one line."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from unforced.errors import UnforcedError
from unforced.observation.cli import clicks_app, specimens_app

app = typer.Typer()
app.add_typer(clicks_app, name="clicks")
app.add_typer(specimens_app, name="specimens")


def call(*args: str) -> tuple[int, str, str]:
    """Like `unforced.cli.main`: an UnforcedError becomes exit code 2 and one line on stderr."""
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, UnforcedError):
        return 2, result.stdout, f"error: {result.exception}"
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clicks")
    code, out, _ = call("clicks", "simulate", "--out", str(folder / "log.csv"), "--policy-out",
                        str(folder / "policy.csv"), "--queries", "20", "--items", "6", "--sessions", "1500",
                        "--json")
    assert code == 0
    (folder / "truth.json").write_text(out)
    return folder, json.loads(out)


def test_clicks_estimate_json_keys(simulated):
    folder, simulation = simulated
    code, out, _ = call("clicks", "estimate", str(folder / "log.csv"), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["propensity"]["source"] == "given" and len(result["propensity"]["by_rank"]) == 6
    item = result["items"]["0"]
    assert set(item) >= {"impressions", "naive", "ips", "snips"} and isinstance(item["impressions"], int)
    code, out, _ = call("clicks", "estimate", str(folder / "log.csv"), "--propensity", "em", "--json")
    by_rank = json.loads(out)["propensity"]["by_rank"]
    assert by_rank[0] == 1.0 and abs(by_rank[1] - simulation["truth"]["propensity_by_rank"][1]) < 0.1


def test_clicks_evaluate_json_and_report(simulated):
    folder, simulation = simulated
    code, out, _ = call("clicks", "evaluate", str(folder / "log.csv"), "--policy", str(folder / "policy.csv"),
                        "--truth", str(folder / "truth.json"), "--report", str(folder / "clicks.html"), "--json")
    assert code == 0
    result = json.loads(out)
    for name in ("naive", "ips", "snips", "dr"):
        assert set(result[name]) == {"value", "standard_error"} and result[name]["standard_error"] > 0
    truth = simulation["truth"]["policy_value"]
    assert abs(result["snips"]["value"] - truth) < 4 * result["snips"]["standard_error"]
    assert "<svg" in (folder / "clicks.html").read_text()


def test_specimens_simulate_estimate(tmp_path):
    code, out, _ = call("specimens", "simulate", "--out", str(tmp_path / "s.csv"), "--effort-out",
                        str(tmp_path / "e.csv"), "--specimens", "400", "--json")
    assert code == 0
    (tmp_path / "truth.json").write_text(out)
    code, out, _ = call("specimens", "estimate", str(tmp_path / "s.csv"), "--effort", str(tmp_path / "e.csv"),
                        "--truth", str(tmp_path / "truth.json"), "--report", str(tmp_path / "s.html"), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["ages"][0] == 0
    for name in ("naive", "weighted", "kaplan_meier"):
        assert len(result["survival"][name]) == len(result["ages"]) and result["survival"][name][0] == pytest.approx(1.0)
    assert "<svg" in (tmp_path / "s.html").read_text()


def test_bad_input_exit_2_one_line(tmp_path):
    (tmp_path / "bad.csv").write_text("query,item,rank,click\nq,a,1,1\nq,b,2,3\n")
    code, _, err = call("clicks", "estimate", str(tmp_path / "bad.csv"), "--json")
    assert code == 2 and "bad.csv: row 2 (line 3): click must be 0 or 1" in err and "\n" not in err.strip()
    code, _, err = call("clicks", "estimate", str(tmp_path / "bad.csv"), "--propensity", "magic")
    assert code == 2
    code, _, err = call("clicks", "simulate", "--out", str(tmp_path / "x.txt"))
    assert code == 2 and "expected a .csv or .parquet file" in err
