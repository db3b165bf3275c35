"""Bad input gets a clear error before anything starts, and loses nothing."""

from __future__ import annotations

import time

import pytest

from conftest import clean_env, free_port, make_project, qoeflow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("bad"))


def _refused(project, *args, env=None, code=2):
    start = time.monotonic()
    result = qoeflow(*args, cwd=project, env=env, timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode == code, result.stderr[-2000:]
    assert not (project / "data").exists(), "nothing may be written"
    return " ".join(result.stderr.split())


def test_malformed_yaml(project):
    (project / "dags/bad.yaml").write_text("name: bad\nstages: [oops\n")
    assert "dags/bad.yaml: malformed YAML" in _refused(project, "run", "--dag", "dags/bad.yaml")


def test_cycle(project):
    text = (project / "dags/smoke.yaml").read_text().replace("    task: train\n", "    task: train\n    deps: [report]\n")
    (project / "dags/cycle.yaml").write_text(text)
    message = _refused(project, "run", "--dag", "dags/cycle.yaml")
    assert "dags/cycle.yaml" in message and "cycle between stages" in message


def test_unknown_task(project):
    text = (project / "dags/smoke.yaml").read_text().replace("task: report", "task: reprot")
    (project / "dags/typo.yaml").write_text(text)
    message = _refused(project, "dag", "check", "--dag", "dags/typo.yaml")
    assert "stage 'report': unknown task 'reprot'" in message


def test_param_out_of_range(project):
    message = _refused(project, "run", "--dag", "dags/smoke.yaml", "--set", "train.jobs.0.epochs=-3")
    assert "train.jobs.0.epochs: Input should be greater than 0 (got -3)" in message


def test_unknown_force_stage(project):
    message = _refused(project, "run", "--dag", "dags/smoke.yaml", "--force", "trian")
    assert "--force: no stage(s) ['trian']" in message


def test_missing_input_artifact(project):
    message = _refused(project, "stage", "report", "--dag", "dags/smoke.yaml", code=1)
    assert "input data/smoke/train/curves.csv (output 'curves' of stage 'train') is missing" in message


def test_unreachable_ray_address(project):
    address = f"127.0.0.1:{free_port()}"
    message = _refused(project, "run", "--dag", "dags/smoke.yaml", "--ray-address", address)
    assert f"Ray address {address} is unreachable" in message


def test_unreachable_prefect_api(project):
    url = f"http://127.0.0.1:{free_port()}/api"
    message = _refused(project, "run", "--dag", "dags/smoke.yaml", env=clean_env(PREFECT_API_URL=url))
    assert f"PREFECT_API_URL={url} is unreachable" in message


@pytest.mark.parametrize("assignment, message", [
    ("allocate.probe_epochs=0", "allocate.probe_epochs: Input should be greater than or equal to 1 (got 0)"),
    ("allocate.probe_epochs=9", "allocate.probe_epochs (9) must be smaller than every job's max_epochs: "
                                "train.jobs.0 (digits-mlp) has max_epochs 9"),
    ("allocate.replan_every=0", "allocate.replan_every: Input should be greater than or equal to 1 (got 0)"),
])
def test_probe_and_replan_settings(project, assignment, message):
    assert message in _refused(project, "run", "--dag", "dags/smoke.yaml", "--set", assignment)


def test_a_budget_below_the_probes_is_refused_before_training(project):
    """The train stage times a few steps of each job before any trains, and refuses with the numbers."""
    result = qoeflow("run", "--dag", "dags/smoke.yaml", "--set", "allocate.budget_seconds=0.001", cwd=project)
    message = " ".join(result.stderr.split()) + " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "allocate.budget_seconds (0.001 s) is less than the probes of 2 epochs would cost: about" in message
    assert "digits-mlp" in message and "sprites-resnet" in message
    assert not (project / "data").exists(), "no job may have trained"
