"""The lab's HTTP API (unforced.lab.app) driven with FastAPI's TestClient: validation naming the field, the job
bound, the body limit, run directories, and the event stream of a short seeded job on the toy translator."""

from __future__ import annotations

import json
import time

import pytest
import torch
from fastapi.testclient import TestClient

from unforced.lab.app import create_app
from unforced.lab.cli import is_loopback
from unforced.lab.job import Lockstep, Stopped
from unforced.lab.jobs import LAB_THREADS
from unforced.runfiles import read_metrics

# The smallest job that shows every kind of event: tiny model, few steps, small evaluations.
SHORT = {"task": "toy-translation", "reward_weight": 0.5, "steps": 4, "model": "tiny", "eval_every": 2,
         "eval_limit": 8, "batch_size": 8, "test_limit": 8}


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(tmp_path / "runs", max_jobs=1)) as client:
        yield client


def events(client, job_id: str, timeout: float = 120.0) -> list[dict]:
    """Every event of a job until its stream ends (the job finished or stopped)."""
    seen, started = [], time.monotonic()
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[len("data: "):]))
            assert time.monotonic() - started < timeout
    return seen


@pytest.mark.parametrize(("body", "field"), [
    ({"reward_weight": 1.5}, "reward_weight"),
    ({"reward_weight": -0.1}, "reward_weight"),
    ({"reward_weight": "half"}, "reward_weight"),
    ({"steps": 0}, "steps"),
    ({"steps": 10**9}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"seed": -1}, "seed"),
    ({"model": "huge"}, "model"),
    ({"strategy": "mixer"}, "strategy"),
    ({"task": "no-such-task"}, "task"),
    ({"task": "/etc/passwd"}, "task"),
    ({"batch_size": 0}, "batch_size"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"reward_learning_rate": 0.5}, "reward_learning_rate"),
    ({"colour": "red"}, "colour"),
])
def test_out_of_range_parameters_get_422_naming_the_field(client, body, field):
    response = client.post("/api/jobs", json={**SHORT, **body})
    assert response.status_code == 422
    assert response.json()["message"].startswith(f"{field}:")
    assert client.get("/api/runs").json() == {"runs": []}  # nothing was started


def test_missing_required_fields_and_non_finite_values_are_refused(client):
    response = client.post("/api/jobs", json={"task": "toy-translation", "steps": 3})
    assert response.status_code == 422 and response.json()["message"].startswith("reward_weight:")
    nan = client.post("/api/jobs", content='{"reward_weight": NaN, "steps": 3}',
                      headers={"content-type": "application/json"})
    assert nan.status_code == 422 and "reward_weight" in nan.json()["message"]
    broken = client.post("/api/jobs", content="{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422


def test_patch_is_validated_and_unknown_jobs_are_404(client):
    for bad in ("0123456789ab", "../../etc", "x" * 300):
        assert client.get(f"/api/jobs/{bad}").status_code == 404
        assert client.patch(f"/api/jobs/{bad}", json={"reward_weight": 0.2}).status_code == 404
        assert client.delete(f"/api/jobs/{bad}").status_code == 404
        assert client.get(f"/api/jobs/{bad}/events").status_code == 404
    job = client.post("/api/jobs", json={**SHORT, "steps": 10_000}).json()["id"]
    for body, field in (({"reward_weight": 2}, "reward_weight"), ({"paused": "yes"}, "paused"),
                        ({"steps": 3}, "steps"), ({}, "body")):
        response = client.patch(f"/api/jobs/{job}", json=body)
        assert response.status_code == 422
        assert response.json()["message"].startswith(f"{field}:")
    assert client.delete(f"/api/jobs/{job}").status_code == 200


def test_too_many_jobs_are_refused_until_one_is_reset(client):
    first = client.post("/api/jobs", json={**SHORT, "steps": 10_000})
    assert first.status_code == 201
    second = client.post("/api/jobs", json=SHORT)
    assert second.status_code == 429
    assert "too many jobs" in second.json()["message"]
    assert client.delete(f"/api/jobs/{first.json()['id']}").status_code == 200
    third = client.post("/api/jobs", json={**SHORT, "steps": 10_000})
    assert third.status_code == 201
    assert client.delete(f"/api/jobs/{third.json()['id']}").status_code == 200


def test_one_job_per_browser_session(tmp_path):
    with TestClient(create_app(tmp_path / "runs", max_jobs=4)) as client:
        assert client.get("/").status_code == 200  # the page sets the session cookie
        first = client.post("/api/jobs", json={**SHORT, "steps": 10_000})
        assert first.status_code == 201
        again = client.post("/api/jobs", json=SHORT)
        assert again.status_code == 429 and "browser session" in again.json()["message"]
        client.delete(f"/api/jobs/{first.json()['id']}")


def test_oversized_requests_get_413(client):
    padding = "x" * (20 * 1024)
    response = client.post("/api/jobs", json={**SHORT, "task": padding})
    assert response.status_code == 413
    assert "request body over" in response.json()["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 1024

    chunked = client.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert client.get("/api/runs").json() == {"runs": []}


def test_unknown_run_directories_are_404(client, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "metrics.jsonl").write_text("{}\n")
    for name in ("nope", "..", "%2e%2e", "..%2fsecret", "secret", "lab-0123456789ab"):
        response = client.get(f"/api/runs/{name}")
        assert response.status_code == 404, name
    assert "unknown run directory" in client.get("/api/runs/nope").json()["message"]


def test_the_event_stream_gives_step_events_and_writes_a_run(client, tmp_path):
    started = client.post("/api/jobs", json=SHORT)
    assert started.status_code == 201
    job = started.json()
    seen = events(client, job["id"])
    steps = [event for event in seen if event["type"] == "step"]
    assert [event["step"] for event in steps] == [0, 1, 2, 3, 4]
    assert [event["step"] for event in steps if event["evaluated"]] == [0, 2, 4]
    for event in steps:
        for key in ("tf_score", "fr_score", "reward_fr_score", "gap"):
            assert 0.0 <= abs(event[key]) <= 1.0
        assert event["gap"] == pytest.approx(event["tf_score"] - event["fr_score"])
        assert event["reward_weight"] == 0.5
        assert event["reward_from_step"] == 0  # above 0 from the start: blended from the first step
    for event in steps:  # the heat map rides on evaluated events only
        assert ("beliefs" in event) == event["evaluated"]
    for beliefs in steps[-1]["beliefs"].values():
        width = len(beliefs["gold"])
        assert width >= 2 and beliefs["gold"][-1] == "<eos>"
        assert len(beliefs["chosen"]) == len(beliefs["top"]) == len(beliefs["gold_probability"]) == width
        for row in beliefs["top"]:
            probabilities = [p for _, p in row]
            assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
        assert [row[0][0] for row in beliefs["top"]] == beliefs["chosen"]  # greedy: the top token is fed on
    late = [event for event in events(client, job["id"]) if event["type"] == "step"]  # a late subscriber
    assert [event["step"] for event in late] == [0, 1, 2, 3, 4]
    assert [event["step"] for event in late if "beliefs" in event] == [4]  # only the latest heat map is kept
    # Both models start from the same weights: the same scores before training.
    assert steps[0]["fr_score"] == steps[0]["reward_fr_score"]
    assert steps[-1]["tf_score"] != steps[0]["tf_score"]  # it trained
    assert seen[-1]["type"] == "done"
    assert client.get(f"/api/jobs/{job['id']}").json()["state"] == "done"

    # A normal run directory: listed, replayed from metrics.jsonl with the live scores, readable by `gap`.
    run_dir = tmp_path / "runs" / job["run_dir"]
    assert client.get("/api/runs").json() == {"runs": [job["run_dir"]]}
    replayed = client.get(f"/api/runs/{job['run_dir']}").json()
    assert replayed["finished"]
    assert [(p["step"], p["tf_score"], p["reward_fr_score"]) for p in replayed["points"]] == \
        [(e["step"], e["tf_score"], e["reward_fr_score"]) for e in steps if e["evaluated"]]
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["strategies"]) == {"teacher_forcing", "reinforce"}
    for entry in results["strategies"].values():
        assert {"tf_nll", "fr_nll", "gap_nll", "gap_pct", "tf_token_acc", "fr_token_acc", "metric",
                "per_position", "train_seconds"} <= set(entry)
        assert (run_dir / entry["checkpoint"]).exists()
    from unforced.runs import load_run_model

    model, task, _, entry = load_run_model(run_dir, "reinforce", device="cpu")
    assert task.name == "toy-translation" and entry == "reinforce"
    from unforced.report import build_report

    report = build_report(run_dir).read_text()
    assert "teacher_forcing" in report and "reinforce" in report


def test_a_job_replays_exactly_from_its_seed(client):
    runs = []
    for _ in range(2):
        job = client.post("/api/jobs", json={**SHORT, "steps": 2, "eval_every": 1}).json()
        runs.append([(e["step"], e["tf_score"], e["fr_score"], e["reward_fr_score"], e["loss"], e["reward_loss"])
                     for e in events(client, job["id"]) if e["type"] == "step"])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 3


def test_the_slider_takes_effect_at_the_next_step(client, tmp_path):
    job = client.post("/api/jobs", json={**SHORT, "steps": 12, "eval_every": 100}).json()
    assert client.patch(f"/api/jobs/{job['id']}", json={"paused": True}).json()["paused"] is True
    seen = []
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            seen.append(event)
            if event["type"] == "paused":
                paused_at = event["step"]
                assert client.get(f"/api/jobs/{job['id']}").json()["state"] == "paused"
                time.sleep(0.3)
                assert seen[-1]["type"] == "paused"  # nothing trains while paused
                client.patch(f"/api/jobs/{job['id']}", json={"reward_weight": 0.0, "paused": False})
    steps = {event["step"]: event["reward_weight"] for event in seen if event["type"] == "step"}
    assert all(weight == 0.5 for step, weight in steps.items() if 0 < step <= paused_at)
    assert all(weight == 0.0 for step, weight in steps.items() if step > paused_at)
    assert seen[-1]["type"] == "done"
    logged = {record["step"]: record["rl_weight"]
              for record in read_metrics(tmp_path / "runs" / job["run_dir"] / "metrics.jsonl")
              if record.get("strategy") == "reinforce" and "rl_weight" in record}
    assert logged[paused_at + 1] == 0.0 and all(logged[s] == 0.5 for s in logged if s <= paused_at)


def test_the_reward_model_follows_the_cross_entropy_one_until_the_slider_leaves_0(client, tmp_path):
    job = client.post("/api/jobs", json={**SHORT, "reward_weight": 0.0, "steps": 40, "eval_every": 1}).json()
    seen, paused_at = [], None
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            seen.append(event)
            if event["type"] == "step" and event["step"] == 3:
                client.patch(f"/api/jobs/{job['id']}", json={"paused": True})
            if event["type"] == "paused":
                paused_at = event["step"]
                client.patch(f"/api/jobs/{job['id']}", json={"reward_weight": 1.0, "paused": False})
    assert seen[-1]["type"] == "done" and paused_at is not None and 3 <= paused_at < 40
    steps = [event for event in seen if event["type"] == "step"]
    assert all(event["reward_from_step"] is None for event in steps if event["step"] <= paused_at)
    assert all(event["reward_from_step"] == paused_at for event in steps if event["step"] > paused_at)
    # While w is 0 the reward-blended model is the cross-entropy one: every validation figure is the same.
    figures: dict[int, dict] = {}
    run_dir = tmp_path / "runs" / job["run_dir"]
    for record in read_metrics(run_dir / "metrics.jsonl"):
        if isinstance(record.get("eval"), dict):
            figures.setdefault(record["step"], {})[record["strategy"]] = record["eval"]
    assert all(figures[step]["teacher_forcing"] == figures[step]["reinforce"] for step in range(paused_at + 1))
    assert figures[40]["teacher_forcing"]["tf_nll"] != figures[40]["reinforce"]["tf_nll"]  # then it went its way
    assert json.loads((run_dir / "results.json").read_text())["lab"]["reward_from_step"] == paused_at
    # From the warm start on, the reward-blended model fine-tunes at its own learning rate (a copy never shares it).
    rates = {(record["strategy"], record["step"]): record["lr"] for record in read_metrics(run_dir / "metrics.jsonl")
             if "lr" in record}
    assert rates[("reinforce", paused_at + 1)] == rates[("reinforce", 40)] == 3e-4
    assert rates[("teacher_forcing", 40)] == rates[("reinforce", paused_at)] == 2e-3


def test_reset_stops_a_running_job(client):
    job = client.post("/api/jobs", json={**SHORT, "steps": 10_000}).json()
    seen = []
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[len("data: "):]))
                if seen[-1].get("step") == 2:
                    assert client.delete(f"/api/jobs/{job['id']}").json()["state"] == "stopped"
    assert seen[-1]["type"] == "stopped"
    assert max(event.get("step", 0) for event in seen) < 10  # stopped within a step or so
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404


def test_the_page_and_the_vendored_chart_library_are_served(client):
    page = client.get("/")
    assert page.status_code == 200
    for part in ('id="reward-weight"', 'id="train"', 'id="pause"', 'id="reset"', 'id="gap"',
                 "/static/vendor/uplot/uPlot.iife.min.js", "/static/lab.js"):
        assert part in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "") and "https://" not in page.text
    script = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert script.status_code == 200 and "uPlot" in script.text
    assert client.get("/static/vendor/uplot/LICENSE").text.startswith("The MIT License")
    assert client.get("/static/lab.js").status_code == 200
    options = client.get("/api/options").json()
    assert options["default_task"] == "toy-translation" and options["ranges"]["reward_weight"] == {"ge": 0.0,
                                                                                                     "le": 1.0}


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_lockstep_takes_turns_and_stops():
    import threading

    lockstep, order = Lockstep(2), []

    def party(index: int) -> None:
        try:
            for round_ in range(3):
                lockstep.wait_for(index)
                order.append((round_, index))
                lockstep.hand_over(index)
        finally:
            lockstep.hand_over(index, finished=True)

    threads = [threading.Thread(target=party, args=(i,)) for i in (1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == [(r, i) for r in range(3) for i in (0, 1)]
    stopped = Lockstep(2)
    stopped.stop()
    with pytest.raises(Stopped):
        stopped.wait_for(1)


def test_the_lab_command_binds_loopback_by_default_and_warns_beyond(monkeypatch, tmp_path):
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from unforced.lab.cli import lab

    served: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self.config))
    threads: list[int] = []  # the lab fixes its torch threads (process-wide: recorded, not applied, here)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    app = typer.Typer()
    app.command()(lab)  # as the main CLI registers it
    app.command("other")(lambda: None)  # two commands, so the command is named as in `unforced lab`
    runner = CliRunner()
    quiet = runner.invoke(app, ["lab", "--runs", str(tmp_path / "runs")])
    assert quiet.exit_code == 0, quiet.output
    assert (served[-1].host, served[-1].port) == ("127.0.0.1", 8765) and "warning" not in quiet.output
    assert threads == [LAB_THREADS]
    loud = runner.invoke(app, ["lab", "--host", "0.0.0.0", "--port", "9000", "--runs", str(tmp_path / "runs")])
    assert loud.exit_code == 0, loud.output
    assert (served[-1].host, served[-1].port) == ("0.0.0.0", 9000) and "warning" in loud.output
    assert runner.invoke(app, ["lab", "--port", "0"]).exit_code == 2  # out of range: a usage error


def test_the_recovery_view_answers_an_edited_prefix(client):
    job = client.post("/api/jobs", json={**SHORT, "steps": 10_000}).json()["id"]
    assert client.patch(f"/api/jobs/{job}", json={"paused": True}).status_code == 200  # answered while paused too
    response = client.post(f"/api/jobs/{job}/recovery", json={"position": 2, "token": "los"})
    assert response.status_code == 200, response.text
    views = response.json()["recovery"]
    assert set(views) == {"teacher_forcing", "reinforce"}
    for view in views.values():
        width = len(view["gold"])
        assert view["prefix"] == [view["gold"][0], "los"]
        assert len(view["continuation"]) == len(view["matches"]) == width - 2
        assert view["matches"] == [own == gold for own, gold in zip(view["continuation"], view["gold"][2:],
                                                                     strict=True)]
        back = view["steps_to_recover"]
        assert back is None or all(view["matches"][back:])
    for body, field in (({"position": 1, "token": "no-such-word"}, "token"), ({"position": 999, "token": "los"},
                                                                               "position"),
                        ({"position": 0, "token": "los"}, "position"), ({"position": 2}, "token")):
        refused = client.post(f"/api/jobs/{job}/recovery", json=body)
        assert refused.status_code == 422 and refused.json()["message"].startswith(f"{field}:"), refused.text
    client.delete(f"/api/jobs/{job}")
    assert client.post(f"/api/jobs/{job}/recovery", json={"position": 2, "token": "los"}).status_code == 404


def test_the_warm_up_leaves_no_import_to_the_first_job():
    """After warm_up (which the app runs at start, before it serves), the first optimizer and the first BLEU of a fresh
    process import nothing more: the first training step of the first job pays no one-time import."""
    code = """
import sys
import torch
from unforced.lab import app
from unforced.lab.jobs import warm_up
warm_up()
before = set(sys.modules)
torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
from unforced.rewards import corpus_bleu, sentence_bleu
sentence_bleu(["a b c d"], [["a b c d"]])
corpus_bleu(["a b c d"], [["a b c d"]])
print(sorted(set(sys.modules) - before))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    new = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307  (our own print of a list of names)
    assert not [name for name in new if name.startswith(("torch._dynamo", "sympy", "sacrebleu"))], new


def test_the_app_warms_up_before_it_serves(tmp_path, monkeypatch):
    from unforced.lab import app as app_module

    calls = []
    monkeypatch.setattr(app_module, "warm_up", lambda: calls.append("warm"))
    with TestClient(create_app(tmp_path / "runs")) as started:
        assert calls == ["warm"]  # the lifespan's startup is over before the first request
        assert started.get("/api/options").status_code == 200
