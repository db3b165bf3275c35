"""The parts of a cluster run that need no cluster: what Ray ships, which resources a stage can get, the
working state that travels between a stage's tasks, and a finished stage landed from the DVC remote.
The runs on a two-node cluster are in test_services.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, clean_env
from flows.bookkeeping import DvcBook
from flows.cluster import shipped_code, unmet, unoffered
from flows.runtime import ray_init_kwargs
from flows.shipping import ShippingError, pack, unpack
from flows.versioning import Remote, VersioningError
from qoeflow.dag.spec import Dag


def test_the_shipped_code_leaves_out_the_data_folder_but_not_the_data_package():
    from ray._private.runtime_env.packaging import _get_excludes

    root = Path("/project")
    excluded = _get_excludes(root, shipped_code(root)["excludes"])
    for path in ("data/train/curves.csv", ".venv/bin/python", ".git/HEAD", ".dvc/cache/files/md5/ab/cd",
                 ".qoeflow/runs/last.json", "tasks/__pycache__/train.cpython-311.pyc"):
        assert excluded(root / path), path
    for path in ("qoeflow/data/digits.py", "tasks/train.py", ".dvc/config", "dags/smoke/params.yaml", "pyproject.toml"):
        assert not excluded(root / path), path


def test_a_local_ray_offers_every_label_the_dag_asks_for_and_a_cluster_gets_the_code():
    local = ray_init_kwargs(None, root=Path("/project"), custom={"gpu_box": 1.0})
    assert local["resources"] == {"gpu_box": local["num_cpus"] * 1.0}
    assert "working_dir" not in local["runtime_env"], "a local Ray works in the project folder"
    cluster = ray_init_kwargs("127.0.0.1:6379", root=Path("/project"), custom={"gpu_box": 1.0})
    assert cluster["runtime_env"]["working_dir"] == "/project" and "resources" not in cluster


def test_a_stage_asking_for_what_no_node_offers_is_named_with_what_is_offered():
    offered = {"CPU": 3.0, "memory": 1e9, "node:10.0.0.2": 1.0, "worker_b": 8.0}
    assert unoffered(1, 0, {"worker_b": 1}, offered) is None
    why = unoffered(1, 0, {"gpu_box": 1}, offered)
    assert "gpu_box 1 (the cluster has 0)" in why and "custom resources offered: worker_b" in why
    assert "GPU 1 (the cluster has 0)" in unoffered(1, 1, {}, offered)


def test_unmet_requirements_name_the_package_and_what_is_installed():
    problems = unmet(["numpy>=1", "numpy<1", "qoeflow-absent-package==2", "pytest; python_version < '3'"])
    assert problems[0].startswith("numpy 2.") and problems[0].endswith("the project needs numpy<1")
    assert problems[1] == "qoeflow-absent-package is not installed (the project needs qoeflow-absent-package==2)"
    assert len(problems) == 2, "a requirement whose marker does not apply is skipped"


def test_working_state_travels_as_a_tar_and_a_too_large_one_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "a"
    (source / ".qoeflow/staging/train/job").mkdir(parents=True)
    (source / ".qoeflow/staging/train/job/model.pt").write_bytes(b"x" * 1000)
    data = pack(source, [".qoeflow/staging/train/job/model.pt"], "stage 'train'")
    assert unpack(data, tmp_path / "b") == 1
    assert (tmp_path / "b/.qoeflow/staging/train/job/model.pt").read_bytes() == b"x" * 1000
    monkeypatch.setattr("flows.shipping.MAX_STATE_BYTES", 999)
    with pytest.raises(ShippingError, match="stage 'train': 0 MiB of working state, over the 0 MiB"):
        pack(source, [".qoeflow/staging/train/job/model.pt"], "stage 'train'")


def _dvc_project(path: Path, remote: Path) -> None:
    path.mkdir()
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": {"cmd": "true", "outs": ["data/out.txt"]}}}))
    for command in (["init", "--no-scm", "-q"], ["remote", "add", "-d", "store", str(remote)]):
        subprocess.run([str(BIN / "dvc"), *command], cwd=path, check=True, capture_output=True, env=clean_env())


@pytest.mark.parametrize("record", [True, False])
def test_a_stage_committed_elsewhere_lands_from_the_remote_recorded_or_off_the_books(tmp_path, record):
    from dvc.repo import Repo

    remote = tmp_path / "remote"
    worker, driver = tmp_path / "worker", tmp_path / "driver"
    _dvc_project(worker, remote)
    _dvc_project(driver, remote)
    (worker / "data").mkdir()
    (worker / "data/out.txt").write_text("made on a node")
    with Repo(str(worker)) as repo:
        repo.commit(f"{worker}/dvc.yaml:make", force=True)
        repo.push(targets=[f"{worker}/dvc.yaml:make"], remote="store")
    entry = yaml.safe_load((worker / "dvc.lock").read_text())["stages"]["make"]
    dag = Dag(name="t", stages={"make": {"task": "make", "outs": {"out": "data/out.txt"}}})

    DvcBook(driver, dag).receive("make", entry, Remote("store", str(remote)), record=record)
    assert (driver / "data/out.txt").read_text() == "made on a node"
    assert (driver / "dvc.lock").exists() == record, "off the books: dvc.lock stays as it was (absent)"


def test_a_stage_that_cannot_be_pulled_leaves_dvc_lock_and_the_workspace_as_they_were(tmp_path):
    driver = tmp_path / "driver"
    _dvc_project(driver, tmp_path / "empty-remote")
    entry = {"cmd": "true", "outs": [{"path": "data/out.txt", "hash": "md5", "md5": "0" * 32, "size": 3}]}
    dag = Dag(name="t", stages={"make": {"task": "make", "outs": {"out": "data/out.txt"}}})
    with pytest.raises(VersioningError, match=r"pulling the outputs of stage 'make' from DVC remote 'store'"):
        DvcBook(driver, dag).receive("make", entry, Remote("store", str(tmp_path / "empty-remote")), record=True)
    assert not (driver / "dvc.lock").exists()
    assert not [p for p in driver.rglob("data/*") if p.is_file()], "no output file written"


def test_a_commit_records_what_dvc_commit_would_and_a_failed_write_leaves_dvc_lock_whole(tmp_path, monkeypatch):
    from dvc.repo import Repo

    ours, dvcs = tmp_path / "ours", tmp_path / "dvcs"
    dag = Dag(name="t", stages={"make": {"task": "make", "outs": {"out": "data/out.txt"}}})
    for project in (ours, dvcs):
        _dvc_project(project, tmp_path / "remote")
        (project / "data").mkdir()
        (project / "data/out.txt").write_text("made")
    with Repo(str(dvcs)) as repo:
        repo.commit(f"{dvcs}/dvc.yaml:make", force=True)
    entry = DvcBook(ours, dag).commit("make")
    assert entry == yaml.safe_load((dvcs / "dvc.lock").read_text())["stages"]["make"]
    assert yaml.safe_load((ours / "dvc.lock").read_text()) == yaml.safe_load((dvcs / "dvc.lock").read_text())
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=ours, capture_output=True, text=True, env=clean_env())
    assert "up to date" in status.stdout, status.stdout + status.stderr

    before = (ours / "dvc.lock").read_bytes()
    (ours / "data/out.txt").write_text("made again")

    def half_then_full(self, data: bytes) -> None:  # the disk fills up in the middle of the write
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr("pathlib.Path.write_bytes", half_then_full)
    with pytest.raises(OSError, match="disk full"):
        DvcBook(ours, dag).commit("make")
    monkeypatch.undo()
    assert (ours / "dvc.lock").read_bytes() == before, "the old dvc.lock, whole"
    assert sorted(p.name for p in ours.iterdir() if "lock" in p.name) == ["dvc.lock"], "no half-written sibling"


@pytest.mark.parametrize("custom, message", [
    ({"CPU": 1}, "custom resource 'CPU': a label of letters"),
    ({"node:10.0.0.2": 1}, "custom resource 'node:10.0.0.2'"),
    ({"gpu box": 1}, "custom resource 'gpu box'"),
    ({"gpu_box": 0}, "amount 0.0 must be in (0, 10000]"),
])
def test_a_dag_refuses_a_custom_resource_that_is_not_a_label(custom, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        Dag(name="t", stages={"train": {"task": "train", "resources": {"cpus": 1, "custom": custom}}})
    assert message in str(info.value)
    dag = Dag(name="t", stages={"a": {"task": "train", "resources": {"custom": {"gpu_box": 1}}},
                                "b": {"task": "train", "resources": {"custom": {"gpu_box": 2, "x-1": 0.5}}}})
    assert dag.custom_resources() == {"gpu_box": 2, "x-1": 0.5}


def test_an_item_gets_only_its_own_files_of_the_folders_its_task_declares():
    from flows.shipping import item_inputs, item_keeps
    from qoeflow.dag.spec import load_dag

    dag = load_dag(Path(__file__).parents[1] / "dags/smoke.yaml")
    keeps = item_keeps(dag, "continue", "digits-mlp")
    assert keeps(".qoeflow/staging/continue/round-2.json"), "the kept documents of every round"
    assert keeps(".qoeflow/staging/continue/digits-mlp/model.pt") and keeps(".qoeflow/runs/last.json")
    assert keeps("data/smoke/continue/checkpoints/digits-mlp.pt")
    assert not keeps("data/smoke/continue/checkpoints/digits-mlp2.pt"), "a name that only begins alike"
    assert not keeps(".qoeflow/staging/continue/crowd-mcnn/model.pt")
    assert not keeps("data/smoke/continue/checkpoints/crowd-mcnn.pt")
    assert item_keeps(dag, "deploy", "0") is None, "a task that declares nothing: its items get everything"
    pulls = dict(item_inputs(dag, "continue", "digits-mlp"))
    assert pulls["data/smoke/train/checkpoints"] == "data/smoke/train/checkpoints/digits-mlp.pt"
    assert pulls["data/smoke/allocate/allocation.json"] == "data/smoke/allocate/allocation.json"
    assert dict(item_inputs(dag, "continue", ""))["data/smoke/train/checkpoints"] == "data/smoke/train/checkpoints"
    assert "data/smoke/compress/models" not in dict(item_inputs(dag, "multiexit", "sprites-resnet")), \
        "an item that reads none of a folder pulls none of it"


@pytest.mark.parametrize("item_files, message", [
    ({"curves": "{item}.pt"}, "not a folder it reads or writes"),
    ({"models": "{item}.pt"}, "not a folder it reads or writes"),
    ({"checkpoints": "all.pt"}, "lacks '{item}'"),
])
def test_a_task_refuses_item_files_it_cannot_have(item_files, message):
    from tasks import TaskDef, register

    task = TaskDef(name="t", module="tasks.continue_training", inputs=("curves", "checkpoints"), item_files=item_files)
    with pytest.raises(ValueError, match=message):
        register(task)


def test_the_readme_names_every_task_whose_items_get_only_their_own_files():
    import re

    from tasks import REGISTRY

    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    sentence = re.search(r"An item of ((?:`\w+`,? (?:or )?)+)pulls and gets only its own", readme)
    assert sentence, "the README's sentence on item_files"
    assert set(re.findall(r"`(\w+)`", sentence.group(1))) == {n for n, t in REGISTRY.items() if t.item_files}
