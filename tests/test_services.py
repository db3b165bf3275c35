"""Runs that use services started beforehand: a Ray cluster (`ray start --head`), a Prefect server
(`PREFECT_API_URL`), and `qoeflow serve` on a schedule. Also a diverging job that must not stop the others."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from conftest import BIN, api_post, clean_env, last_run, make_project
from test_faults import _faults_dag, _output

STAGES = ["train", "forecast", "allocate", "continue", "compress"]

pytestmark = pytest.mark.usefixtures("prefect_server")


def _flow_runs(url: str) -> list[dict]:
    """Flow runs of the server that have ended."""
    ended = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}, "limit": 200}
    return api_post(f"{url}/flow_runs/filter", ended)  # type: ignore[return-value]


def test_run_joins_a_ray_cluster_and_an_existing_prefect_server_with_a_diverging_job(
    tmp_path, prefect_server, ray_cluster
):
    project = make_project(tmp_path / "p")
    # the smoke DAG up to the first stage after the closed loop (a diverged job must be carried that far)
    dag = _faults_dag(project, STAGES, ["digits-mlp", "digits-allcnn", "crowd-mcnn", "sprites-resnet"], 2)
    env = clean_env(PREFECT_API_URL=prefect_server)
    diverge = ["--set", "train.jobs.1.optimizer=sgd", "--set", "train.jobs.1.lr=1e9"]
    result = subprocess.run([str(BIN / "qoeflow"), "run", "--dag", dag, "--ray-address", ray_cluster,
                             *diverge], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    output = result.stdout + result.stderr
    assert f"Connecting to an existing Ray instance at {ray_cluster}" in output
    assert "qoeflow: running" not in output, "no live display when the output is not a terminal"
    assert "train[digits-mlp] epoch 2/2 train_loss" in output, "plain per-epoch log lines instead"
    assert not (project / ".qoeflow" / "prefect" / "prefect.db").exists(), "no embedded server when PREFECT_API_URL is set"

    runs = _flow_runs(prefect_server)
    assert any(r["state_type"] == "COMPLETED" and r["parameters"]["root"] == str(project) for r in runs)

    jobs = json.loads(_output(project, dag, "train", "jobs").read_text())
    assert jobs["digits-allcnn"]["status"] == "diverged" and jobs["digits-allcnn"]["epochs_done"] < 2
    assert jobs["digits-mlp"]["status"] == "completed" and jobs["crowd-mcnn"]["status"] == "completed"
    stages = last_run(project)
    assert stages["train"]["status"] == "ran" and "digits-allcnn" in stages["train"]["message"]
    assert all(stages[s]["status"] == "ran" for s in STAGES if s != "train")
    assert "job 'digits-allcnn' has no trained model" in stages["compress"]["message"], "compressed what was trained"
    allocation = json.loads(_output(project, dag, "allocate", "allocation").read_text())
    assert "digits-allcnn" not in allocation["jobs"]
    # --set runs are off the books: dvc.lock does not claim these outputs match params.yaml.
    assert not (project / "dags/faults/dvc.lock").exists()


def _train_only_dag(project) -> str:
    """The smoke DAG cut down to its training stage with one job: serving is what is under test here."""
    text = (project / "dags/smoke.yaml").read_text().replace("data/smoke/", "data/served/")
    dag = yaml.safe_load(text.replace("dags/smoke", "dags/served"))
    dag["name"] = "served"
    dag["params_file"] = "dags/smoke/params.yaml"  # the smoke params, with its first job only
    jobs = yaml.safe_load((project / "dags/smoke/params.yaml").read_text())["train"]["jobs"]
    dag["overrides"] = {"train": {"jobs": jobs[:1]}}
    dag["stages"] = {"train": dag["stages"]["train"]}
    (project / "dags/served.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    return "dags/served.yaml"


def test_serve_runs_the_dag_on_its_interval(tmp_path, prefect_server):
    project = make_project(tmp_path / "p")
    dag = _train_only_dag(project)
    env = clean_env(PREFECT_API_URL=prefect_server)
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([str(BIN / "qoeflow"), "serve", "--dag", dag, "--interval", "20",
                              "--name", "smoke-test"], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 420
        done = None
        while time.monotonic() < deadline and done is None:
            time.sleep(3)
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            for run in _flow_runs(prefect_server):
                if run["parameters"].get("root") == str(project) and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
                    done = run
        assert done is not None, (tmp_path / "serve.log").read_text()[-4000:]
        assert done["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
        assert done["deployment_id"] is not None
        assert json.loads((project / "data/served/train/jobs.json").read_text())["digits-mlp"]["status"] == "completed"
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()
