"""Runs that use services started beforehand: a two-node Ray cluster (`ray start --head`, then a second node
with a resources label), a Prefect server (`PREFECT_API_URL`), and `qoeflow serve` on a schedule. Also a
diverging job that must not stop the others."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, WORKER_LABEL, api_post, clean_env, last_run, make_project
from test_faults import _faults_dag, _output

STAGES = list(yaml.safe_load((Path(__file__).parents[1] / "dags/smoke.yaml").read_text())["stages"])  # all of them
PINNED = ["train", "continue", "compress", "bench"]  # on the second node; the others anywhere

pytestmark = pytest.mark.usefixtures("prefect_server")


def _flow_runs(url: str) -> list[dict]:
    """Flow runs of the server that have ended."""
    ended = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}, "limit": 200}
    return api_post(f"{url}/flow_runs/filter", ended)  # type: ignore[return-value]


def _remote(project: Path, url: str, name: str = "shared") -> None:
    """Make `url` the project's default DVC remote, in .dvc/config.local (where credentials would go)."""
    subprocess.run([str(BIN / "dvc"), "remote", "add", "--local", "-d", name, url], cwd=project, check=True,
                   capture_output=True)


def test_run_on_a_two_node_cluster_ships_the_code_and_exchanges_files_only_through_the_remote(
    tmp_path, prefect_server, ray_cluster
):
    project = make_project(tmp_path / "p")
    # the whole smoke DAG, with a diverged job carried to the end
    dag = _faults_dag(project, STAGES, ["digits-allcnn", "crowd-mcnn", "sprites-resnet"], 2)
    spec = yaml.safe_load((project / dag).read_text())
    spec["overrides"]["train"]["jobs"][0].update(optimizer="sgd", lr=1e9)  # digits-allcnn diverges
    for stage in PINNED:
        spec["stages"][stage].setdefault("resources", {})["custom"] = {WORKER_LABEL: 1}
    (project / dag).write_text(yaml.safe_dump(spec, sort_keys=False))
    _remote(project, str(tmp_path / "remote"))
    result = subprocess.run([str(BIN / "qoeflow"), "run", "--dag", dag, "--ray-address", ray_cluster], cwd=project,
                            env=clean_env(PREFECT_API_URL=prefect_server), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    output = result.stdout + result.stderr
    assert f"Connecting to an existing Ray instance at {ray_cluster}" in output
    assert "exchange outputs through DVC remote 'shared'" in output
    assert "qoeflow: running" not in output, "no live display when the output is not a terminal"
    assert "train[crowd-mcnn] epoch 2/2 train_loss" in output, "plain per-epoch log lines instead"
    assert not (project / ".qoeflow" / "prefect" / "prefect.db").exists(), "no embedded server when PREFECT_API_URL is set"
    runs = _flow_runs(prefect_server)
    assert any(r["state_type"] == "COMPLETED" and r["parameters"]["root"] == str(project) for r in runs)

    stages = last_run(project)
    assert all(stages[s]["status"] == "ran" for s in STAGES)
    for name in STAGES:  # every task ran Ray's copy of the code, in a folder of its own that began without data
        tasks = stages[name]["transfer"]["tasks"]
        assert tasks and all(str(project) not in t["folder"] and str(project) not in t["code"] for t in tasks), tasks
        assert all(t["data_at_start"] == [] for t in tasks), tasks
        if name in PINNED:
            assert all(WORKER_LABEL in t["node_labels"] for t in tasks), (name, tasks)
    for task in stages["continue"]["transfer"]["tasks"]:  # an item pulls its own checkpoint, not every job's
        checkpoints = [p for p in task["pulled"] if p.startswith("data/faults/train/checkpoints")]
        assert checkpoints == (["data/faults/train/checkpoints"] if task["piece"] == "gather" else
                               [f"data/faults/train/checkpoints/{task['item']}.pt"]), task
    assert not any("compress/models" in p for t in stages["multiexit"]["transfer"]["tasks"] if t["piece"] != "gather"
                   for p in t["pulled"]), "a multi-exit item reads no compressed model"
    assert stages["continue"]["transfer"]["pulled_bytes"] > 0 and stages["train"]["transfer"]["pushed_bytes"] > 0
    assert all(stages["continue"]["transfer"][k] > 0 for k in ("pull_seconds", "push_seconds", "land_seconds"))
    for name in STAGES:  # the driver pulled every output of every stage, and DVC agrees they are the recorded ones
        for out in yaml.safe_load((project / dag).read_text())["stages"][name]["outs"].values():
            assert (project / (out if isinstance(out, str) else out["path"])).exists(), (name, out)
    status = subprocess.run([str(BIN / "dvc"), "status", "dags/faults/dvc.yaml"], cwd=project, capture_output=True,
                            text=True, env=clean_env())
    assert "up to date" in status.stdout, status.stdout + status.stderr
    assert not list((project / ".qoeflow" / "shipping").glob("*")), "no stage's working state left behind"

    jobs = json.loads(_output(project, dag, "train", "jobs").read_text())
    assert jobs["digits-allcnn"]["status"] == "diverged" and jobs["digits-allcnn"]["epochs_done"] < 2
    assert jobs["sprites-resnet"]["status"] == "completed" and jobs["crowd-mcnn"]["status"] == "completed"
    assert "digits-allcnn" in stages["train"]["message"]
    assert "job 'digits-allcnn' has no trained model" in stages["compress"]["message"], "compressed what was trained"
    allocation = json.loads(_output(project, dag, "allocate", "allocation").read_text())
    assert "digits-allcnn" not in allocation["jobs"]


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder that refuses writes, root's included: a read-only bind mount (needs root with
    CAP_SYS_ADMIN; skipped, saying so, where `mount` is not allowed)."""
    source, target = tmp_path / "ro-source", tmp_path / "ro"
    source.mkdir()
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(target)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only remote needs a read-only bind mount: {mounted.stderr.strip()}")
    yield target
    subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("kind", ["unreachable", "read-only"])
def test_a_cluster_run_whose_remote_is_unreachable_or_read_only_fails_naming_it_and_pulls_nothing(
        kind, tmp_path, prefect_server, ray_cluster, request):
    project = make_project(tmp_path / "p")
    dag = _faults_dag(project, ["train", "forecast"], ["digits-mlp"], 1)
    # under a file, no one can create the unreachable one, root included
    url = "/dev/null/remote" if kind == "unreachable" else str(request.getfixturevalue("read_only_folder"))
    _remote(project, url, name="broken")
    result = subprocess.run([str(BIN / "qoeflow"), "run", "--dag", dag, "--ray-address", ray_cluster], cwd=project,
                            env=clean_env(PREFECT_API_URL=prefect_server), capture_output=True, text=True, timeout=600)
    message = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stderr[-3000:]
    assert "stage 'train' failed" in message, message[-3000:]
    assert f"stage 'train': pushing its outputs to DVC remote 'broken' ({url}) failed" in message, message[-3000:]
    assert ("Read-only file system" if kind == "read-only" else "/dev/null") in message, message[-3000:]
    assert last_run(project)["forecast"]["status"] == "blocked"
    assert not (project / "data").exists(), "nothing half-written reached the driver's data/"
    assert not (project / "dags/faults/dvc.lock").exists()


def test_a_cluster_whose_nodes_lack_a_dependency_is_refused_naming_the_package_and_each_node(
        tmp_path, prefect_server, ray_cluster):
    project = make_project(tmp_path / "p")
    dag = _faults_dag(project, ["train"], ["digits-mlp"], 1)
    pyproject = project / "pyproject.toml"
    extra = '    "qoeflow-absent-package>=1",\n    "numpy<1",\n'
    pyproject.write_text(pyproject.read_text().replace("dependencies = [\n", "dependencies = [\n" + extra, 1))
    result = subprocess.run([str(BIN / "qoeflow"), "run", "--dag", dag, "--ray-address", ray_cluster], cwd=project,
                            env=clean_env(PREFECT_API_URL=prefect_server), capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")][-1]
    assert "the Ray cluster cannot run this project" in message, message
    assert message.count("qoeflow-absent-package is not installed") == 2, "named on each of the two nodes"
    assert message.count("the project needs numpy<1") == 2 and "numpy 2." in message
    assert message.count("(id ") == 2
    assert not (project / "data").exists()


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
    env = clean_env(PREFECT_API_URL=prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="1")  # not every 10 s: test time
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([str(BIN / "qoeflow"), "serve", "--dag", dag, "--interval", "5",
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
