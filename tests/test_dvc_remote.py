"""DVC versions the artifacts: `qoeflow push` / `pull` through the default remote (a clone then has nothing to
run), copies outside git, `dvc metrics show` / `dvc plots show`, and `dvc exp run -S` on the smoke DAG.

The session's smoke project (conftest.smoke_project) is what gets pushed: its dvc.lock is committed there (its
workspace is left as it was; the experiment runs in a temporary folder) and clones, archives and copies of it
are made elsewhere. HOME points to a temporary folder, so the default remote `~/.cache/qoeflow/dvc-remote`
lands there.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tarfile

import pytest
import yaml

from conftest import BIN, SMOKE, SMOKE_STAGES, clean_env, last_run, make_project, qoeflow

ALL = list(SMOKE_STAGES)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _dvc(*args: str, cwd, env) -> subprocess.CompletedProcess:
    return _ok(subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600))


def _git(*args: str, cwd) -> subprocess.CompletedProcess:
    return _ok(subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=clean_env()))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def env(home):
    return clean_env(HOME=str(home))


@pytest.fixture(scope="module")
def project(smoke_project):
    return smoke_project[0]


@pytest.fixture(scope="module")
def clone(project, env, home, tmp_path_factory):
    """The project pushed, its dvc.lock and .dvc/config committed, then cloned and pulled elsewhere."""
    pushed = _ok(qoeflow("push", *SMOKE, cwd=project, env=env)).stdout
    remote = home / ".cache/qoeflow/dvc-remote"
    assert f"pushed to DVC remote 'qoeflow' ({remote})" in pushed
    assert "set as the default remote in .dvc/config" in pushed
    for stage in ALL:
        assert f"\n  {stage} " in pushed
    assert "data/smoke/train/checkpoints" in pushed  # persist outputs too: a clone can resume training
    assert "file(s) pushed" in pushed and "git add .dvc/config dags/smoke/dvc.lock" in pushed
    assert any(p.is_file() for p in remote.rglob("*"))
    assert "nothing new to push" in _ok(qoeflow("push", *SMOKE, cwd=project, env=env)).stdout

    _git("add", "dags/smoke/dvc.lock", ".dvc/config", cwd=project)
    _git("commit", "-qm", "smoke run", cwd=project)
    clone = tmp_path_factory.mktemp("clone") / "project"
    _git("clone", "-q", str(project), str(clone), cwd=project.parent)
    pulled = _ok(qoeflow("pull", *SMOKE, cwd=clone, env=env)).stdout
    assert f"pulled from DVC remote 'qoeflow' ({remote})" in pulled and "output(s) written" in pulled
    return clone


def test_a_clone_pulls_every_output_and_runs_nothing(project, clone, env):
    for path in ("data/smoke/train/curves.csv", "data/smoke/allocate/allocation.json", "data/smoke/report/index.html",
                 "data/smoke/train/checkpoints/digits-mlp.pt", "data/smoke/continue/checkpoints/crowd-mcnn.pt"):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    result = _ok(qoeflow("run", *SMOKE, cwd=clone, env=env))
    assert "every stage is up to date" in result.stderr
    assert "Started a local Ray instance" not in result.stdout + result.stderr
    assert {s: v["status"] for s, v in last_run(clone).items()} == {s: "cached" for s in ALL}
    # Plain DVC agrees, with the remote committed in .dvc/config.
    assert "up to date" in _dvc("status", "dags/smoke/dvc.yaml", cwd=clone, env=env).stdout


def test_a_remote_in_config_local_wins(clone, env, tmp_path):
    mine = tmp_path / "my-remote"
    _dvc("remote", "add", "-d", "--local", "mine", str(mine), cwd=clone, env=env)
    pushed = _ok(qoeflow("push", *SMOKE, cwd=clone, env=env)).stdout
    assert f"pushed to DVC remote 'mine' ({mine})" in pushed and "file(s) pushed" in pushed
    assert any(p.is_file() for p in mine.rglob("*"))
    missing = qoeflow("pull", *SMOKE, "--remote", "nope", cwd=clone, env=env)
    assert missing.returncode == 1 and "no DVC remote 'nope' (configured: mine, qoeflow)" in missing.stderr


def test_nothing_to_push_says_what_to_do(clone, env):
    result = qoeflow("push", cwd=clone, env=env)  # the lifecycle DAG never ran here
    assert result.returncode == 1
    assert "nothing to push: no stage of dags/lifecycle.yaml is recorded in dvc.lock" in " ".join(result.stderr.split())


def test_an_archive_without_git_pulls_and_runs(project, clone, env, tmp_path):
    """A downloaded archive (no .git) and a copied folder (no .git): DVC runs without git, said in one line."""
    archive = tmp_path / "archive"
    tar = _ok(subprocess.run(["git", "archive", "HEAD"], cwd=project, capture_output=True, env=clean_env())).stdout
    tarfile.open(fileobj=io.BytesIO(tar)).extractall(archive, filter="data")
    assert (archive / ".dvc/config").exists() and not (archive / ".git").exists()
    pulled = _ok(qoeflow("pull", *SMOKE, cwd=archive, env=env))
    assert "is not in a git repository, so DVC runs here without git" in pulled.stderr
    result = _ok(qoeflow("run", *SMOKE, cwd=archive, env=env))
    assert "Traceback" not in result.stderr
    assert {s: v["status"] for s, v in last_run(archive).items()} == {s: "cached" for s in ALL}

    copy = tmp_path / "copy"
    shutil.copytree(clone, copy, symlinks=True, ignore=shutil.ignore_patterns(".git", ".qoeflow", "config.local"))
    result = _ok(qoeflow("run", *SMOKE, cwd=copy, env=env))
    assert "is not in a git repository, so DVC runs here without git" in result.stderr
    assert {s: v["status"] for s, v in last_run(copy).items()} == {s: "cached" for s in ALL}


def test_a_dag_params_file_is_layered_and_tracked_by_dvc(tmp_path):
    """params.yaml, then the DAG's params_file, then its inline overrides, then --set; DVC tracks the file."""
    import flows  # noqa: F401  registers the stages whose code lives in flows/
    from qoeflow.dag.dvc_export import to_dvc
    from qoeflow.dag.spec import DagError, parse_dag
    from tasks.runner import load_project

    project = make_project(tmp_path / "p")
    dag = parse_dag((project / "dags/smoke.yaml").read_text(), "dags/smoke.yaml")
    assert dag.params_file == "dags/smoke/params.yaml"
    train = to_dvc(dag, {}, {})["stages"]["train"]
    assert train["params"] == ["train", "allocate.probe_epochs", {"dags/smoke/params.yaml": []}] and "dags/smoke.yaml" not in train["deps"]

    text = (project / "dags/smoke.yaml").read_text()
    (project / "dags/layered.yaml").write_text(text + "overrides:\n  report: {title: inline}\n")
    (project / "dags/smoke/params.yaml").write_text(
        (project / "dags/smoke/params.yaml").read_text().replace("title: qoeflow smoke run", "title: from the file"))
    _, tree, _ = load_project(project, "dags/smoke.yaml", sets=["train.jobs.0.epochs=7"])
    smoke_jobs = yaml.safe_load((project / "dags/smoke/params.yaml").read_text())["train"]["jobs"]
    assert tree["report"]["title"] == "from the file"
    assert [j["epochs"] for j in tree["train"]["jobs"]] == [7] + [j["epochs"] for j in smoke_jobs[1:]]
    assert tree["train"]["threads_per_job"] == 1  # from params.yaml, which the file does not set
    assert load_project(project, "dags/layered.yaml")[1]["report"]["title"] == "inline"

    (project / "dags/gone.yaml").write_text(text.replace("dags/smoke/params.yaml", "dags/gone/params.yaml"))
    with pytest.raises(DagError, match=r"dags/gone.yaml: params_file dags/gone/params.yaml: no such file"):
        load_project(project, "dags/gone.yaml")
    with pytest.raises(DagError, match=r"params_file '../x.yaml' must be a relative path to a .yaml file"):
        parse_dag(text.replace("dags/smoke/params.yaml", "../x.yaml"), "dags/bad.yaml")


def test_metrics_and_plots_show_what_the_stages_declare(project, env, tmp_path):
    metrics = json.loads(_dvc("metrics", "show", "--json", cwd=project, env=env).stdout)[""]["data"]
    for path in ("train/jobs.json", "continue/scores.json", "allocate/allocation.json", "continue/selection.json",
                 "asha/asha.json"):
        assert metrics[f"data/smoke/{path}"]["data"], path
    assert metrics["data/smoke/train/jobs.json"]["data"]["digits-mlp"]["epochs_done"] == 2

    html = tmp_path / "plots"
    _dvc("plots", "show", "-o", str(html), cwd=project, env=env)
    page = (html / "index.html").read_text()
    plots = json.loads(_dvc("plots", "show", "--json", cwd=project, env=env).stdout)
    # The lifecycle DAG never ran in this copy: its plots are the only ones missing.
    assert all(not e["source"].startswith("data/smoke/") for e in plots.get("errors") or []), plots["errors"]
    for path in ("train/curves.csv", "train/curves.png", "forecast/forecasts.png", "allocate/allocation.png",
                 "continue/curves.csv"):
        assert f"data/smoke/{path}" in plots["data"]
        assert f"data_smoke_{path.replace('/', '_')}" in page or f"data/smoke/{path}" in page


def test_exp_run_sets_a_smoke_param_and_exp_show_lists_its_metrics(project, env):
    params = (project / "dags/smoke/params.yaml").read_text()
    # --temp: the experiment runs in a temporary copy and leaves the shared project's workspace as it was.
    _dvc("exp", "run", "--temp", "dags/smoke/dvc.yaml:train", "-S", "dags/smoke/params.yaml:allocate.probe_epochs=3",
         "-n", "probe-3", cwd=project, env=env)
    assert (project / "dags/smoke/params.yaml").read_text() == params
    shown = _dvc("exp", "show", "--csv", "--drop", ".*", "--keep", "Experiment|digits-mlp.epochs_done",
                 cwd=project, env=env).stdout
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown))}
    assert rows["probe-3"]["digits-mlp.epochs_done"] == "3" and rows[""]["digits-mlp.epochs_done"] == "2"
    exps = json.loads(_dvc("exp", "show", "--json", cwd=project, env=env).stdout)
    exp = next(e for base in exps for e in base.get("experiments") or [] if e["name"] == "probe-3")["revs"][0]
    assert exp["data"]["params"]["dags/smoke/params.yaml"]["data"]["allocate"]["probe_epochs"] == 3
    assert exp["data"]["metrics"]["data/smoke/allocate/allocation.json"]["data"]  # every metric file is listed
