"""What people look at, in a real browser: the report index, a notebook report, and JupyterLab.

Headless Chromium from Debian's packages, driven by Playwright's Python package (its own browser download
is unreachable here). `.ci/run` installs Chromium (a missing one fails there); elsewhere the tests skip without
it. Screenshots go to the test's output folder, whose path is printed.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import missing_prerequisite
from playwright.sync_api import expect

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        missing_prerequisite("Chromium is not installed: `make browser` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def watched_page(browser, problems: list):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    return page


def test_report_index_and_reports_render(browser, tiny_reports, tmp_path):
    problems: list[str] = []
    page = watched_page(browser, problems)
    index = tiny_reports / "reports" / "index.html"
    page.goto(index.as_uri())
    rows = page.locator("table#reports tbody tr")
    assert rows.count() == 18
    assert page.locator(".status.ok").count() == 18
    hrefs = page.eval_on_selector_all("table#reports a", "links => links.map(a => a.href)")
    assert len(hrefs) == 36  # an HTML page and the notebook for each row
    for href in hrefs:
        assert Path(urllib.request.url2pathname(href.removeprefix("file://"))).is_file(), href
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)

    page.locator("table#reports a", has_text="HTML").nth(4).click()  # trec_tiny__lr-0.0003 / 02_train
    page.wait_for_load_state("load")
    assert page.url.endswith("02_train.html")
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
    assert images and all(done and width > 100 for done, width in images)  # the learning curves, embedded
    page.screenshot(path=str(tmp_path / "02_train.png"), full_page=True)

    page.goto((tiny_reports / "reports" / "augment_tiny" / "08_augment.html").as_uri())
    assert page.locator("table.wb-augment tr").count() == 1 + 2 * 5  # two variants of each operation, changes marked
    assert page.locator("table.wb-augment mark").count() + page.locator("table.wb-augment del").count() >= 10
    page.screenshot(path=str(tmp_path / "08_augment.png"), full_page=True)

    page.goto((tiny_reports / "reports" / "trec_tiny_inspect" / "11_export.html").as_uri())
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
    assert len(images) == 1 and all(done and width > 100 for done, width in images)  # the engines' latency plot
    assert "onnx-int8" in page.inner_text("body") and "max_abs_logit_diff" in page.inner_text("body")

    page.goto((tiny_reports / "reports" / "leaderboard" / "09_compare_runs.html").as_uri())
    page.wait_for_selector("table.dataTable")  # the sortable table's JavaScript ran, offline
    first = page.locator("table.dataTable tbody tr").first.inner_text()
    page.locator("table.dataTable thead th", has_text="val_accuracy").click()
    page.wait_for_timeout(300)
    page.locator("table.dataTable thead th", has_text="val_accuracy").click()
    assert page.locator("table.dataTable tbody tr").count() == 3 and first
    page.screenshot(path=str(tmp_path / "09_compare_runs.png"), full_page=True)
    print(f"screenshots: {tmp_path}")
    assert problems == []


def test_every_report_page_works_offline(browser, tiny_reports, tmp_path):
    """Every page of the tiny experiments' reports, with every request to anything but a local file blocked:
    no failed request and no console error, and the attention views (bertviz, its libraries inlined) draw."""
    problems: list[str] = []
    page = watched_page(browser, problems)
    page.route(
        "**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:")) else route.abort()
    )
    pages = sorted((tiny_reports / "reports").rglob("*.html"))
    assert len(pages) >= 19  # the index, 18 notebook reports, and the pages they wrote (attention views)
    views = 0
    for report in pages:
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        if "bertviz" in report.read_text(encoding="utf-8"):
            page.wait_for_selector("[id^='bertviz'] svg", timeout=10_000)  # d3 drew the attention view
            views += 1
            page.screenshot(path=str(tmp_path / f"{report.stem}.png"), full_page=True)
    assert views >= 3  # 05_explain's report and its head-view and model-view pages
    assert problems == [], problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_serves_and_opens_the_training_notebook(browser, tmp_path):
    port, token = _free_port(), "workbench-test"
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={REPO}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "lab.log", "w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as reply:
                    assert json.loads(reply.read())["started"]
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        page = watched_page(browser, [])
        page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/02_train.ipynb?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
        notebook = page.locator(".jp-NotebookPanel:visible")
        notebook.locator(".jp-RenderedMarkdown h1", has_text="02 · Train").wait_for(timeout=30_000)
        # JupyterLab renders cells and editor lines lazily: let these checks retry while it does
        expect(notebook.locator(".jp-CodeCell").first).to_contain_text("run_name", timeout=30_000)
        expect(notebook.locator(".jp-Cell").nth(3)).to_be_attached(timeout=30_000)
        extensions = page.evaluate(
            "JSON.parse(document.getElementById('jupyter-config-data').textContent)"
            ".federated_extensions.map(e => e.name)"
        )
        assert "@jupyter-widgets/jupyterlab-manager" in extensions  # ipywidgets render in JupyterLab 4
        page.screenshot(path=str(tmp_path / "jupyterlab_02_train.png"))
        print(f"screenshot: {tmp_path / 'jupyterlab_02_train.png'}")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a kernel it started can hold shutdown up
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


def test_optuna_dashboard_shows_a_study(browser, tiny_bert, sentiment_files, tmp_path):
    from workbench import load_config
    from workbench.tune import tune

    space = {"train.lr": {"log_uniform": [1e-4, 3e-3]}}
    tune(
        load_config(
            overrides={
                "data.train_file": str(sentiment_files["train"]),
                "data.val_file": str(sentiment_files["val"]),
                "model.backbone": tiny_bert,
                "train.epochs": 1,
                "run.name": "board",
                "tune.space": space,
                "tune.trials": 2,
                "tune.pruner": "none",
            }
        )
    )
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "dashboard", "runs/board", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "dashboard.log", "w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "dashboard.log").read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        problems: list[str] = []
        page = watched_page(browser, problems)
        page.goto(f"http://127.0.0.1:{port}/dashboard")
        expect(page.get_by_text("board").first).to_be_visible(timeout=20_000)  # the study in the list
        page.get_by_text("board").first.click()
        expect(page.get_by_text("train.lr").first).to_be_visible(timeout=20_000)  # its search space / trials
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'dashboard.png'}")
        assert problems == []
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
