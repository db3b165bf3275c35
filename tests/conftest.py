"""Shared fixtures: throwaway copies of the project (git + DVC), the `qoeflow` command, and local services."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from pathlib import Path

import pytest

from qoeflow.dag.spec import load_dag

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED = ["qoeflow", "tasks", "flows", "dags", "params.yaml", "dvc.yaml", ".dvcignore", "pyproject.toml"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child command: this venv first on PATH, no inherited Prefect/Ray targets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def make_project(dest: Path) -> Path:
    """Copy the project's code, DAGs and params into `dest`, as a fresh git + DVC repository."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dvc.lock"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    run = lambda *a: subprocess.run(a, cwd=dest, check=True, capture_output=True, env=clean_env())  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@qoeflow.local")
    run("git", "config", "user.name", "qoeflow test")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "config", "core.analytics", "false")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "project copy")
    return dest


def qoeflow(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `qoeflow` command; output captured as text."""
    return subprocess.run([str(BIN / "qoeflow"), *args], cwd=cwd, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def last_run(project: Path) -> dict[str, dict]:
    """The stages of the last `qoeflow run`, by name."""
    summary = json.loads((project / ".qoeflow" / "runs" / "last.json").read_text())
    return {s["stage"]: s for s in summary["stages"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def api_post(url: str, body: dict) -> object:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A Prefect server started before the runs that use it, as a user would run one."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while True:
        try:
            api_get(url + "/health")
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


WORKER_LABEL = "worker_b"  # the custom resource that only the cluster's second node offers


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A two-node Ray cluster on this machine, started beforehand as a user would: `ray start --head`, then a
    second `ray start --address` offering the custom resource WORKER_LABEL; stopped afterwards. Yields the
    head's address."""
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = clean_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_USAGE_STATS_ENABLED="0")  # more than one node here
    ray = str(BIN / "ray")
    subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false",
                    "--disable-usage-stats", f"--temp-dir={temp}"],
                   env=env, check=True, capture_output=True, timeout=120)
    ports = [str(free_port()) for _ in range(4)]
    try:
        subprocess.run([ray, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2",
                        "--resources", json.dumps({WORKER_LABEL: 8}), "--disable-usage-stats",
                        "--dashboard-agent-listen-port", ports[0], "--dashboard-agent-grpc-port", ports[1],
                        "--runtime-env-agent-port", ports[2], "--metrics-export-port", ports[3]],  # not the head's
                       env={**env, "RAY_AUTH_MODE": "token"}, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


SMOKE = ["--dag", "dags/smoke.yaml"]
SMOKE_STAGES = load_dag(REPO / "dags/smoke.yaml").order()  # the smoke DAG's stages, in order


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def qoeflow_on_terminal(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `qoeflow` on a pseudo-terminal (160 × 50), as a person at a terminal would; the screen's text,
    escape sequences removed, is the result's stdout."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen([str(BIN / "qoeflow"), *args], cwd=cwd, env=clean_env(TERM="xterm-256color"),
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    text = ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r", "\n")
    return subprocess.CompletedProcess(proc.args, code, stdout=text, stderr="")


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory):
    """One project copy with a completed `qoeflow run` of the smoke DAG (on a terminal), shared by the
    modules that read its artifacts (each leaves it as it found it) and test_run_smoke.py (which changes
    it last)."""
    project = make_project(tmp_path_factory.mktemp("smoke"))
    result = qoeflow_on_terminal("run", *SMOKE, cwd=project)
    assert result.returncode == 0, result.stdout[-6000:]
    return project, result


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with page, console and log events on; the test is skipped where none is installed."""
    from browser import Browser, chromium

    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium); the page is not checked in a browser")
    b = Browser(binary, tmp_path_factory.mktemp("chromium"))
    try:
        for domain in ("Page", "Runtime", "Log"):  # page events; console.* and exceptions; browser log entries
            b.send(f"{domain}.enable")
        yield b
    finally:
        b.close()
