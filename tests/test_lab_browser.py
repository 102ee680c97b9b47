"""The lab page end to end in headless Chromium: Debian's `chromium`, driven by Playwright for Python with
`executable_path` set (no browser download). The lab serves on a free loopback port from a thread; the test opens
the page, trains, watches the curves grow, moves the slider, pauses, resets, and saves a screenshot under its tmp
dir."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from unforced.lab.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """The lab on http://127.0.0.1:<free port>/, stopped (jobs included) at the end."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "runs"), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the lab did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.fixture
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is part of the test set-up (apt-get install -y chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def points(page) -> int:
    return int(page.evaluate("document.body.dataset.points || '0'"))


def test_train_watch_the_curves_move_the_slider_pause_and_reset(lab, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(lab) else outside.append(request.url))
    page.goto(f"{lab}/?task=toy-translation&model=tiny&steps=400&seed=0&w=0")  # w = 0: the reward model follows
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert page.input_value("#model") == "tiny" and page.input_value("#steps") == "400"  # state from the URL

    page.click("#train")
    page.wait_for_function("Number(document.body.dataset.points || 0) >= 1", timeout=30_000)
    job = page.evaluate("document.body.dataset.job")
    page.wait_for_function("Number(document.body.dataset.points || 0) >= 3", timeout=60_000)
    assert page.text_content("#gap") != "-"
    assert float(page.text_content("#step")) >= 20
    assert page.locator("#scores-chart canvas").count() == 1  # uPlot drew
    assert page.locator("#metric-chart canvas").count() == 1  # and the task's sequence metric, labelled
    assert page.text_content("#metric-name") == "bleu"
    assert page.evaluate("document.body.dataset.lastRewardMetricFr") == page.evaluate(
        "document.body.dataset.lastMetricFr")  # still one model
    columns = int(page.evaluate("document.body.dataset.heatmapColumns || '0'"))  # the heat map of beliefs
    assert columns >= 2 and page.locator("#heatmap tr").count() == 2 + 8 + 1
    page.select_option("#beliefs-model", "reinforce")
    assert page.locator("#heatmap td").count() > 0

    page.locator("#reward-weight").fill("1")  # the slider, as a user drags it to the reward end
    assert page.text_content("#weight-value") == "1.00"
    assert "w=1" in page.url  # the configuration stays shareable
    deadline = time.monotonic() + 10
    while httpx.get(f"{lab}/api/jobs/{job}").json()["reward_weight"] != 1.0:
        assert time.monotonic() < deadline, "the slider did not reach the job"
        time.sleep(0.1)

    page.wait_for_function("document.body.dataset.lastWeight === '1'", timeout=30_000)  # the schedule curve
    page.click("#pause")
    page.wait_for_function("document.body.dataset.state === 'paused'")
    page.wait_for_function("document.body.dataset.pausedAt !== undefined")  # the worker stopped at a step
    assert httpx.get(f"{lab}/api/jobs/{job}").json()["state"] == "paused"
    shown = points(page)
    time.sleep(1.0)
    assert points(page) == shown  # nothing trains while paused
    page.click("#pause")  # Resume
    page.wait_for_function(f"Number(document.body.dataset.points || 0) > {shown}", timeout=60_000)
    assert float(page.evaluate("document.body.dataset.lastRewardFr")) >= 0.0
    assert int(page.evaluate("document.body.dataset.rewardFromStep")) >= 20  # the reward phase warm-started

    page.fill("#recovery-position", "2")  # the recovery view answers an edited prefix
    page.fill("#recovery-token", "los")
    page.click("#recover")
    page.wait_for_function("document.body.dataset.recovered === '1'", timeout=30_000)
    assert "cross-entropy" in page.text_content("#recovery") and "los" in page.text_content("#recovery")

    shot = tmp_path / "lab.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    page.click("#reset")
    page.wait_for_function("document.body.dataset.state === 'idle'")
    assert points(page) == 0
    assert httpx.get(f"{lab}/api/jobs/{job}").status_code == 404
    assert errors == [] and outside == []  # no script error, nothing fetched from outside the lab
