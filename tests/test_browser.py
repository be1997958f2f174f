"""What people look at, in a real browser: the report index, a notebook report, and JupyterLab.

Headless Chromium from Debian's packages, driven by Playwright's Python package (its own browser download
is unreachable here). `.ci/run` installs Chromium (a missing one fails there); elsewhere the tests skip without
it. Screenshots go to the test's output folder, whose path is printed.
"""

import contextlib
import json
import os
import re
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
from playwright.sync_api import TimeoutError as PlaywrightTimeout
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
    assert rows.count() == 19
    assert page.locator(".status.ok").count() == 19
    hrefs = page.eval_on_selector_all("table#reports a", "links => links.map(a => a.href)")
    assert len(hrefs) == 38  # an HTML page and the notebook for each row
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
    assert page.locator("table.dataTable tbody tr").count() == 5 and first  # trec_tiny's 3, behavior_tiny's 2
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
    assert len(pages) >= 20  # the index, 19 notebook reports, and the pages they wrote (attention views)
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


@contextlib.contextmanager
def jupyterlab(tmp_path, root_dir: Path):
    """A JupyterLab server on 127.0.0.1 serving ``root_dir``; yields its base URL's (port, token)."""
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
            f"--ServerApp.root_dir={root_dir}",
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
        yield port, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a kernel it started can hold shutdown up
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


def test_jupyterlab_serves_and_opens_the_training_notebook(browser, tmp_path):
    with jupyterlab(tmp_path, REPO) as (port, token):
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


def _run_all(page, restart: bool = False) -> None:
    """JupyterLab's Run menu: run every cell (after restarting the kernel when ``restart``).

    It waits for the kernel to be idle first, and without a restart checks that the first cell started (its prompt
    leaves ``[ ]``), clicking again once if not: a click that lands while the kernel connects can be lost (CI at
    stop 30 waited 120 s for a widget whose cell never ran)."""
    panel = page.locator(".jp-NotebookPanel:visible")
    panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=90_000)
    for attempt in range(2):
        page.locator(".lm-MenuBar-itemLabel", has_text="Kernel" if restart else "Run").click()
        label = "Restart Kernel and Run All Cells…" if restart else "Run All Cells"
        page.locator(".lm-Menu-itemLabel", has_text=label).first.click()
        if restart:
            page.locator(".jp-Dialog-button", has_text="Confirm").or_(
                page.locator(".jp-Dialog-button.jp-mod-accept")
            ).first.click()
            return
        try:
            expect(panel.locator(".jp-InputPrompt").first).not_to_have_text(re.compile(r"\[\s*\]"), timeout=15_000)
            return
        except AssertionError:
            if attempt:
                raise


def _lab_log(tmp_path) -> str:
    return "JupyterLab's log ends:\n" + (tmp_path / "lab.log").read_text()[-3000:]


def test_the_labeller_saves_clicks_retrains_and_keeps_labels_over_a_kernel_restart(browser, tiny_bert, tmp_path):
    """Notebook 14's labeller in JupyterLab: Playwright clicks two labels, retrains, restarts the kernel, and the
    labels are still there (in the file, and read back by the notebook)."""
    import nbformat
    import pandas as pd
    from test_fewshot import topic_rows

    folder = tmp_path / "lab"
    folder.mkdir()
    pool = topic_rows(8, 0)
    pool[["text"]].to_csv(folder / "pool.csv", index=False)
    labels_file = folder / "labels.jsonl"
    settings = {
        "model.backbone": tiny_bert,
        "data.max_length": 16,
        "train.epochs": 1,
        "active.labels": ["sport", "money", "food"],
        "active.initial": 4,
        "active.batch": 3,
        "run.root": str(folder / "runs"),
    }
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}}
    )
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "from functools import partial\n"
            "from workbench import active, widgets\n"
            "from workbench.config import load_config\n"
            f"config = load_config(None, {settings!r})\n"
            f"retrain = partial(active.next_batch, config, {str(folder / 'pool.csv')!r}, {str(labels_file)!r}, "
            f"{str(folder / 'next.csv')!r})\n"
            "queue, _ = retrain()\n"
            f"labeller = widgets.Labeller(queue, config.active.labels, {str(labels_file)!r}, retrain=retrain)\n"
            "labeller"
        ),
        nbformat.v4.new_code_cell(
            f"import pandas as pd\ntexts = pd.read_csv({str(folder / 'pool.csv')!r})['text']\n"
            f"print('labels kept:', len(active.read_labels({str(labels_file)!r}, texts, config.active.labels)))"
        ),
    ]
    nbformat.write(notebook, folder / "labeller.ipynb")
    with jupyterlab(tmp_path, folder) as (port, token):
        page = watched_page(browser, [])
        page.goto(f"http://127.0.0.1:{port}/lab/tree/labeller.ipynb?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
        _run_all(page)
        panel = page.locator(".jp-NotebookPanel:visible")
        try:
            panel.locator("button", has_text="sport").wait_for(timeout=120_000)  # the widget rendered
        except PlaywrightTimeout:
            page.screenshot(path=str(tmp_path / "labeller_timeout.png"))
            pytest.fail(f"no labeller widget after 120 s ({tmp_path / 'labeller_timeout.png'}). {_lab_log(tmp_path)}")
        expect(panel.locator(".jp-OutputArea-output", has_text="labels kept: 0")).to_be_visible(timeout=60_000)
        panel.locator("button", has_text="sport").click()
        panel.locator("button", has_text="money").click()
        deadline = time.monotonic() + 30
        while len(labels_file.read_text().splitlines()) < 2 if labels_file.exists() else True:
            assert time.monotonic() < deadline, "the clicks did not reach the labels file"
            time.sleep(0.3)
        clicked = [json.loads(line)["label"] for line in labels_file.read_text().splitlines()]
        assert clicked == ["sport", "money"]
        panel.locator("button", has_text="retrain").click()
        expect(panel.locator(".widget-label", has_text="retrained: 3 new texts")).to_be_visible(timeout=120_000)
        page.screenshot(path=str(tmp_path / "labeller.png"))
        _run_all(page, restart=True)
        expect(panel.locator(".jp-OutputArea-output", has_text="labels kept: 2")).to_be_visible(timeout=120_000)
    assert [json.loads(line)["label"] for line in labels_file.read_text().splitlines()] == ["sport", "money"]
    assert len(pd.read_csv(folder / "next.csv")) == 3


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
