"""`dvc repro` runs the exported DAG and skips exactly what is up to date, in agreement with `qoeflow run`.

The project is a copy of the session's smoke project after its `qoeflow run` (git, DVC cache and outputs
with it): a from-scratch `dvc repro` of the smoke DAG took 177 s of the suite, and `dvc repro` after a
`qoeflow run` must run nothing anyway."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from conftest import BIN, REPO, clean_env, make_project, qoeflow

DVC_FILE = "dags/smoke/dvc.yaml"


def _repro(project) -> str:
    result = subprocess.run([str(BIN / "dvc"), "repro", DVC_FILE], cwd=project, capture_output=True, text=True,
                            env=clean_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(?:[^']*:)?([a-z]+)'", output))


@pytest.fixture(scope="module")
def project(smoke_project, tmp_path_factory):
    copy = tmp_path_factory.mktemp("repro") / "project"
    shutil.copytree(smoke_project[0], copy, symlinks=True, ignore=shutil.ignore_patterns(".qoeflow"))
    return copy


def test_committed_dvc_files_are_in_sync_with_their_dags():
    for dag in ("dags/lifecycle.yaml", "dags/smoke.yaml"):
        result = qoeflow("dag", "export-dvc", "--dag", dag, "--check", cwd=REPO)
        assert result.returncode == 0, result.stderr


def test_export_check_fails_on_a_stale_dvc_file(tmp_path):
    project = make_project(tmp_path / "p")
    path = project / "dvc.yaml"
    path.write_text(path.read_text().replace("qoeflow stage report", "qoeflow stage reportx"))
    result = qoeflow("dag", "export-dvc", "--check", cwd=project)
    assert result.returncode == 1 and "out of sync" in result.stderr


def test_repro_after_a_qoeflow_run_runs_nothing(project):
    assert _ran(_repro(project)) == set()


def test_param_change_reruns_exactly_the_dependents(project):
    params = project / "params.yaml"
    tree = yaml.safe_load(params.read_text())
    tree["report"]["title"] = "another title"
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert _ran(_repro(project)) == {"report"}

    tree["video"]["radius"] = 0.2  # an inner stage's param: that stage and what depends on it, nothing before
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert _ran(_repro(project)) == {"video", "report"}
    assert _ran(_repro(project)) == set()
    # qoeflow agrees with what DVC ran: nothing to do, no services started.
    result = qoeflow("run", "--dag", "dags/smoke.yaml", cwd=project)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "up to date" in result.stderr
