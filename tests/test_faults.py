"""Faults survived, nothing lost: a Ray worker SIGKILLed mid-training, the driver SIGKILLed mid-run, and a
second run started beside a running one. Real `qoeflow` commands in throwaway projects, a real embedded
Prefect server and a real local Ray; nothing mocked.

The runs use cut-down copies of the smoke DAG (fewer jobs and stages: the faults, not the stages, are under
test). The driver tests share one project and run in file order: the driver killed while training, then
a run that resumes the training jobs, refuses the commands started beside it, and is killed once `train`
is recorded; then the run that finishes what was left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BIN, clean_env, last_run, make_project, qoeflow

STAGES = ["train", "forecast", "allocate"]  # what the driver tests run
RESUMED = re.compile(r"train\[([\w-]+)\] resuming from epoch (\d+) checkpoint")


# --- processes, seen through /proc (independently of flows/reaper.py) -----------------------------------

def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[1]), int(fields[19]), fields[0].decode()


def _alive(pid: int, started: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] == started and stat[2] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `pid`."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[2] not in ("Z", "X"):
            parents[int(entry)] = stat
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, started, _) in parents.items():
            if ppid == parent and child not in found:
                found[child] = started
                frontier.append(child)
    return found


# --- a `qoeflow run` in the background ---------------------------------------------------------------------

class Driver:
    """`qoeflow ARGS` started in its own session (so that only it is killed), output to a file."""

    def __init__(self, project: Path, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen([str(BIN / "qoeflow"), *args], cwd=project,
                                            env=clean_env(PYTHONUNBUFFERED="1"), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition, what: str, timeout: float = 300.0):
        """Poll `condition()` until it is truthy (its value is returned); fail if the driver ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"the run ended (code {self.process.returncode}) before {what}:\n{self.output()[-5000:]}")
            time.sleep(0.1)
        pytest.fail(f"no {what} within {timeout:.0f} s:\n{self.output()[-5000:]}")

    def sigkill(self) -> dict[int, int]:
        """SIGKILL the driver alone; returns the processes it had started (pid -> start time), after
        checking that its Prefect server and its Ray (GCS, raylet, workers) are among them."""
        started = _descendants(self.pid)
        commands = {pid: _cmdline(pid) for pid in started}
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        for service in ("prefect server start", "gcs_server", "raylet/raylet", "ray::"):
            assert any(service in c for c in commands.values()), f"no {service!r} among {sorted(commands.values())}"
        return started


def _assert_all_gone(started: dict[int, int], timeout: float = 20.0) -> float:
    """Every process the killed driver started ends within `timeout` seconds; returns how long it took."""
    begin = time.monotonic()
    while time.monotonic() - begin < timeout:
        left = {pid: s for pid, s in started.items() if _alive(pid, s)}
        if not left:
            return time.monotonic() - begin
        time.sleep(0.2)
    survivors = "\n".join(f"{pid}: {_cmdline(pid)[:160]}" for pid in left)
    pytest.fail(f"still running {timeout:.0f} s after the driver was killed:\n{survivors}")


def _assert_no_partial_files(project: Path) -> None:
    """No temporary left under data/, and every table, document and tensor file there reads."""
    import torch

    files = [p for p in (project / "data").rglob("*") if p.is_file()]
    assert files, "the killed run published nothing at all"
    leftovers = [str(p.relative_to(project)) for p in files if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers, f"partial files under data/: {leftovers}"
    for path in files:
        if path.suffix == ".csv":
            assert len(pd.read_csv(path).columns) > 1, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)


def _locked_stages(project: Path) -> set[str]:
    """The stages recorded in the faults DAG's dvc.lock (read while a run may be writing it)."""
    try:
        lock = yaml.safe_load((project / "dags/faults/dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return set()
    return set(lock.get("stages", {}))


def _output(project: Path, dag: str, stage: str, name: str) -> Path:
    out = yaml.safe_load((project / dag).read_text())["stages"][stage]["outs"][name]
    return project / (out["path"] if isinstance(out, dict) else out)


def _faults_dag(project: Path, stages: list[str], jobs: list[str], probe: int) -> str:
    """The smoke DAG cut down to `stages` and the training jobs `jobs`, whose probes (what `train` trains)
    take `probe` epochs, written as dags/faults.yaml with its outputs under data/faults/ and its DVC file
    in dags/faults/."""
    dag = yaml.safe_load((project / "dags/smoke.yaml").read_text().replace("data/smoke/", "data/faults/"))
    dag.update(name="faults", dvc_dir="dags/faults")
    overrides = dag.setdefault("overrides", {})
    smoke_jobs = overrides.get("train", {}).get("jobs")
    if smoke_jobs is None:  # the smoke settings live in the DAG's params file
        smoke_jobs = yaml.safe_load((project / dag["params_file"]).read_text())["train"]["jobs"]
    kept = [dict(j, max_epochs=max(probe + 1, j["max_epochs"])) for j in smoke_jobs if j["name"] in jobs]
    overrides.setdefault("train", {})["jobs"] = kept
    overrides.setdefault("allocate", {})["probe_epochs"] = probe
    dag["stages"] = {name: dag["stages"][name] for name in stages}
    (project / "dags/faults.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    return "dags/faults.yaml"


# --- a Ray worker killed --------------------------------------------------------------------------------------

def test_worker_killed_mid_training_is_retried_and_the_job_resumes_from_its_checkpoint(tmp_path):
    project = make_project(tmp_path / "p")
    epochs = 20
    dag = _faults_dag(project, ["train"], ["digits-allcnn"], epochs)
    checkpoint = _output(project, dag, "train", "checkpoints") / "digits-allcnn.pt"
    run = Driver(project, ["run", "--dag", dag], tmp_path / "run.log")
    # The worker training the job names itself in the lines it logs: "(stage-item pid=N) ... epoch 1/20".
    epoch_line = re.compile(rf"\(stage-item pid=(\d+)\).*train\[digits-allcnn\] epoch \d+/{epochs}\b")
    match = run.wait_for(lambda: checkpoint.exists() and epoch_line.search(run.output()), "a first checkpoint")
    worker = int(match.group(1))
    assert _cmdline(worker).startswith("ray::"), _cmdline(worker)
    os.kill(worker, signal.SIGKILL)

    assert run.process.wait(timeout=420) == 0, run.output()[-5000:]
    output = run.output()
    resumed = [(job, int(epoch)) for job, epoch in RESUMED.findall(output)]
    assert resumed and resumed[0][0] == "digits-allcnn" and 1 <= resumed[0][1] < epochs, output[-5000:]
    curves = pd.read_csv(_output(project, dag, "train", "curves"))
    assert curves[curves["job"] == "digits-allcnn"]["epoch"].tolist() == list(range(1, epochs + 1))
    jobs = json.loads(_output(project, dag, "train", "jobs").read_text())
    assert jobs["digits-allcnn"]["status"] == "completed" and jobs["digits-allcnn"]["epochs_done"] == epochs
    assert last_run(project)["train"]["status"] == "ran"


# --- the driver killed; a second run beside a running one --------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("faults"))
    _faults_dag(project, STAGES, ["digits-mlp", "digits-allcnn"], 6)
    return project


DAG = ["--dag", "dags/faults.yaml"]


FINISHED_BEFORE_KILL: set[str] = set()  # the stages dvc.lock recorded when the second driver was killed


def test_driver_killed_while_training_takes_its_services_along_and_leaves_no_partial_file(project, tmp_path):
    checkpoints = _output(project, "dags/faults.yaml", "train", "checkpoints")
    run = Driver(project, ["run", *DAG], tmp_path / "killed.log")
    run.wait_for(lambda: any(checkpoints.glob("*.pt")), "first training checkpoint")
    started = run.sigkill()
    seconds = _assert_all_gone(started)
    print(f"{len(started)} processes of the killed driver gone in {seconds:.1f} s")
    _assert_no_partial_files(project)
    assert "train" not in _locked_stages(project)


def test_second_run_is_refused_at_once_and_the_running_one_goes_on(project, tmp_path):
    run = Driver(project, ["run", *DAG], tmp_path / "running.log")
    lock = project / ".qoeflow" / "run.lock"
    run.wait_for(lambda: f'"pid": {run.pid}' in lock.read_text() if lock.exists() else False, "run lock")
    run.wait_for(lambda: str(run.pid) in (project / ".dvc/tmp/rwlock").read_text()
                 if (project / ".dvc/tmp/rwlock").exists() else False, "DVC write lock")

    start = time.monotonic()
    second = qoeflow("run", *DAG, cwd=project, timeout=60)
    refused_in = time.monotonic() - start
    message = " ".join(second.stderr.split())
    assert second.returncode == 2, second.stderr[-3000:]
    assert refused_in < 15, f"refused after {refused_in:.1f} s"
    print(f"second run refused in {refused_in:.1f} s")
    assert "another qoeflow run is in progress in this project" in message, message
    assert f"pid {run.pid}" in message and "dags/faults.yaml" in message and "started " in message, message

    stage = qoeflow("stage", "forecast", *DAG, cwd=project, timeout=60)
    assert stage.returncode == 2 and f"pid {run.pid}" in " ".join(stage.stderr.split()), stage.stderr[-3000:]
    pull = qoeflow("pull", *DAG, cwd=project, timeout=60)  # it would overwrite the run's outputs
    assert pull.returncode == 2 and f"pid {run.pid}" in " ".join(pull.stderr.split()), pull.stderr[-3000:]

    # `dvc repro` stops at its first stage, before it deletes or runs anything, naming the run.
    repro = subprocess.run([str(BIN / "dvc"), "repro", "dags/faults/dvc.yaml"], cwd=project, env=clean_env(),
                           capture_output=True, text=True, timeout=120)
    said = repro.stdout + repro.stderr
    assert repro.returncode != 0, said[-3000:]
    assert f"(PID {run.pid})" in said and "qoeflow run --dag dags/faults.yaml" in said, said[-3000:]
    assert "Running stage" not in said, said[-3000:]
    assert run.process.poll() is None, run.output()[-5000:]

    # Not disturbed: it resumes the training jobs the killed run left, and records `train`.
    run.wait_for(lambda: "train" in _locked_stages(project), "train recorded in dvc.lock")
    assert RESUMED.search(run.output()), run.output()[-5000:]
    started = run.sigkill()
    FINISHED_BEFORE_KILL.update(_locked_stages(project))
    _assert_all_gone(started)
    _assert_no_partial_files(project)


def test_next_run_runs_only_the_stages_that_had_not_finished_and_leaves_no_process_behind(project, tmp_path):
    assert "train" in FINISHED_BEFORE_KILL, "runs after the previous test"
    run = Driver(project, ["run", *DAG], tmp_path / "next.log")
    started: dict[int, int] = {}
    commands: dict[int, str] = {}
    while run.process.poll() is None:  # every process the run starts, seen while it lives
        for pid, when in _descendants(run.pid).items():
            started[pid], commands[pid] = when, commands.get(pid) or _cmdline(pid)
        time.sleep(0.1)
    assert run.process.returncode == 0, run.output()[-5000:]
    for service in ("prefect server start", "gcs_server", "raylet/raylet", "autoscaler/_private/monitor.py"):
        assert any(service in c for c in commands.values()), f"no {service!r} among {sorted(commands.values())}"
    _assert_all_gone(started, timeout=2.0)  # stopped by the run itself, before it exited
    expected = {s: "cached" if s in FINISHED_BEFORE_KILL else "ran" for s in STAGES}
    assert {s: v["status"] for s, v in last_run(project).items()} == expected
    curves = pd.read_csv(_output(project, "dags/faults.yaml", "train", "curves"))
    assert curves.groupby("job")["epoch"].apply(list).map(lambda e: e == [1, 2, 3, 4, 5, 6]).all()
    _assert_no_partial_files(project)
    status = subprocess.run([str(BIN / "dvc"), "status", "dags/faults/dvc.yaml"], cwd=project, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
