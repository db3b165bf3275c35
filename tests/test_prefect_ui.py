"""The Prefect UI, working: `qoeflow ui` serves the project's own runs (the smoke run's flow run and its stage
task runs, read off the rendered page in headless Chromium; a screenshot is kept at
`.qoeflow/screenshots/prefect-ui.png` under the repository root), each stage's headline tables are a Prefect
artifact on its task run, `qoeflow run --ui` keeps its server up after the run until Ctrl-C, and bad
input is refused."""

from __future__ import annotations

import base64
import contextlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, REPO, SMOKE_STAGES, api_post, clean_env, qoeflow
from flows.dag_flow import artifact_key
from tasks.headline import markdown_table
from tasks.report import Column, Row, Table

SCREENSHOT = REPO / ".qoeflow" / "screenshots" / "prefect-ui.png"
ADDRESS = re.compile(r"Prefect UI: (http://127\.0\.0\.1:\d+)")


class Watched:
    """A `qoeflow` command in its own session whose output is collected as it comes."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen([str(BIN / "qoeflow"), *args], cwd=cwd, env=clean_env(), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: re.Pattern, timeout: float = 240) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.output)
            if found:
                return found
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output[-4000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern.pattern!r} within {timeout:.0f} s:\n{self.output[-4000:]}")

    def interrupt(self) -> int:
        """Ctrl-C, as a person at the terminal would; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _listening(address: str) -> bool:
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _text_once(browser, url: str, needles: list[str], timeout: float = 90, at_least: int | None = None) -> str:
    """Navigate to `url` and wait until the rendered page's text holds every needle (or, with `at_least`, that
    many of them: the page draws its content progressively); that text."""
    browser.events.clear()
    browser.send("Page.navigate", url=url)
    browser.wait_for("Page.loadEventFired")
    deadline = time.monotonic() + timeout
    wanted = len(needles) if at_least is None else at_least
    text = ""
    while time.monotonic() < deadline:
        text = browser.evaluate("document.body ? document.body.innerText : ''") or ""
        if sum(n in text for n in needles) >= wanted:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{url}: {[n for n in needles if n not in text]} not on the page; it shows:\n{text[:3000]}")


# -- pieces ----------------------------------------------------------------------------------------


def test_a_report_table_becomes_markdown_with_its_cells_escaped():
    table = Table([Column("job"), Column("E_all", True)], [Row(["a|b", "0.5"]), Row(["c\u00a0d", "1"])],
                  caption="Plans", note="one note")
    assert markdown_table(table).splitlines() == [
        "**Plans**", "", "| job | E_all |", "| --- | ---: |", "| a\\|b | 0.5 |", "| c d | 1 |", "", "one note"]


@pytest.mark.parametrize("stage, key", [("continue", "continue"), ("Bench_GPU", "bench-gpu"), ("__", "stage")])
def test_artifact_keys_are_what_prefect_accepts(stage, key):
    assert artifact_key(stage) == key


# -- on the smoke run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui(smoke_project):
    project, _ = smoke_project
    served = Watched("ui", cwd=project)
    address = served.wait_for(ADDRESS, timeout=120).group(1)
    try:
        yield project, address
    finally:
        code = served.interrupt()
        assert code == 0, served.output[-3000:]
        assert not _listening(address), "the UI's server outlived Ctrl-C"


def _smoke_flow_run(address: str) -> tuple[dict, list[dict]]:
    runs = api_post(f"{address}/api/flow_runs/filter", {"sort": "START_TIME_ASC", "limit": 1})  # the smoke run
    assert runs, "the project's database holds no flow run"
    run = runs[0]
    tasks = api_post(f"{address}/api/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    return run, tasks


def test_each_stage_with_a_table_publishes_its_headline_on_its_task_run(ui):
    _, address = ui
    run, tasks = _smoke_flow_run(address)
    by_id = {t["id"]: t for t in tasks}
    artifacts = api_post(f"{address}/api/artifacts/filter",
                         {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200})
    keyed = {a["key"]: a for a in artifacts if a["key"]}
    expected = [s for s in SMOKE_STAGES if s not in ("forecast", "report")]  # their sections hold no table
    assert sorted(keyed) == sorted(artifact_key(s) for s in expected)
    for stage in expected:
        artifact = keyed[artifact_key(stage)]
        assert artifact["type"] == "markdown" and "| --- |" in artifact["data"], stage
        task = by_id[artifact["task_run_id"]]  # linked to a task run of this flow run...
        assert task["name"].startswith(stage), (stage, task["name"])  # ...the stage's own
    assert "| digits-mlp |" in keyed["train"]["data"]


def test_ui_shows_the_run_and_its_stage_task_runs_in_a_browser(ui, browser, tmp_path):
    _, address = ui
    run, tasks = _smoke_flow_run(address)
    shown = _text_once(browser, f"{address}/runs", [run["name"]])
    assert "Completed" in shown
    names = sorted({t["name"] for t in tasks})
    assert any(n.startswith("train[") for n in names) and any(n.startswith("continue[") for n in names), names
    _text_once(browser, f"{address}/runs/flow-run/{run['id']}?tab=Task%20Runs", [run["name"], "train["])
    page = _text_once(browser, f"{address}/runs/flow-run/{run['id']}?tab=Task%20Runs", names,
                      at_least=min(10, len(names)))
    listed = [n for n in names if n in page]
    assert len(listed) >= min(10, len(names)), f"task runs listed: {listed} of {names}"
    shot = browser.send("Page.captureScreenshot", format="png")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert SCREENSHOT.stat().st_size > 10_000
    artifacts = _text_once(browser, f"{address}/runs/flow-run/{run['id']}?tab=Artifacts", ["allocate", "train"])
    assert "continue" in artifacts


def test_ui_refuses_a_port_in_use(ui):
    project, address = ui
    port = address.rsplit(":", 1)[1]
    result = qoeflow("ui", "--port", port, cwd=project, timeout=60)
    assert result.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in result.stderr, result.stderr
    result = qoeflow("ui", "--port", "http", cwd=project, timeout=60)
    assert result.returncode == 2 and "a port is a number" in result.stderr, result.stderr


def test_ui_refuses_a_project_that_never_ran(tmp_path):
    start = time.monotonic()
    result = qoeflow("ui", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no run recorded" in result.stderr and "qoeflow run" in result.stderr
    assert time.monotonic() - start < 30


def test_run_ui_keeps_its_server_up_after_the_run_until_ctrl_c(smoke_project, tmp_path):
    project, _ = smoke_project
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns("server-*.json"))
    with contextlib.closing(sqlite3.connect(copy / ".qoeflow/prefect/prefect.db")) as db:
        before = db.execute("SELECT count(*) FROM flow_run").fetchone()[0]
    served = Watched("run", "--dag", "dags/smoke.yaml", "--force", "report", "--ui", cwd=copy)
    served.wait_for(re.compile(r"\(this run and every earlier one\); Ctrl-C to stop"))
    address = ADDRESS.search(served.output).group(1)
    assert "report" in served.output and "ran" in served.output  # the summary came before the address
    with urllib.request.urlopen(address, timeout=10) as page:
        assert page.status == 200 and b"<html" in page.read().lower()
    runs = api_post(f"{address}/api/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 50})
    assert before >= 1 and len(runs) == before + 1 and runs[0]["state_type"] == "COMPLETED"
    second = qoeflow("run", "--dag", "dags/smoke.yaml", cwd=copy, timeout=60)  # the run lock is still held
    message = " ".join(second.stderr.split())
    assert second.returncode == 2 and "another qoeflow run is in progress" in message
    assert f"pid {served.proc.pid}" in message, message
    assert served.interrupt() == 0, served.output[-3000:]
    assert not _listening(address)


def test_serve_prints_a_deployment_link_that_opens_the_deployment(smoke_project, browser):
    project, _ = smoke_project
    served = Watched("serve", "--dag", "dags/smoke.yaml", "--cron", "0 0 1 1 *", "--name", "yearly", cwd=project)
    try:
        ui_line = served.wait_for(re.compile(r"UI (http://127\.0\.0\.1:\d+); Ctrl-C"), timeout=120).group(1)
        link = served.wait_for(re.compile(r"(http://127\.0\.0\.1:\d+/deployments/deployment/[0-9a-f-]{36})")).group(1)
        assert link.startswith(ui_line + "/")
        _text_once(browser, link, ["yearly", "qoeflow-dag"])
    finally:
        assert served.interrupt() in (0, -signal.SIGINT), served.output[-3000:]
