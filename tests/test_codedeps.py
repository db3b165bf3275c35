"""A stage's code dependencies are derived from its imports, and DVC (hence `qoeflow run`) follows them:
touching a file a stage imports makes it stale, touching one it does not import leaves it fresh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import flows  # noqa: F401  registers the stages whose code lives in flows/
from conftest import BIN, REPO, clean_env
from flows.bookkeeping import stage_code
from qoeflow.dag.codedeps import module_closure
from qoeflow.dag.spec import load_dag
from tasks import REGISTRY

LIFECYCLE = load_dag(REPO / "dags/lifecycle.yaml")


def _code(stage: str) -> set[str]:
    return set(stage_code(REPO, LIFECYCLE.stages[stage].task))


def test_imports_are_followed_transitively_and_lazily():
    # the spine's misses: train and report import validate.py (through the catalog) and params.py;
    # continue and asha score with qoe.py through planning.py
    for stage in ("train", "report"):
        assert {"qoeflow/validate.py", "qoeflow/params.py", "tasks/catalog.py"} <= _code(stage)
    for stage in ("continue", "asha"):
        assert {"qoeflow/lifecycle/qoe.py", "qoeflow/lifecycle/planning.py"} <= _code(stage)
    # a loader imported inside a function (families.py) is followed too
    assert {"qoeflow/data/digits.py", "qoeflow/models/crowd.py"} <= _code("train")
    assert "tasks/training_loop.py" in _code("asha") and "flows/asha.py" in _code("asha")
    assert "tasks/templates/report/page.html.j2" in _code("report")  # a module's templates are its code
    assert not any("templates" in path for path in _code("train"))


def test_only_project_files_that_are_imported():
    for stage in LIFECYCLE.stages:
        code = _code(stage)
        assert all((REPO / path).is_file() for path in code)
        assert all(path.split("/")[0] in ("qoeflow", "tasks", "flows") for path in code)
        assert all(path.endswith(".py") or "/templates/" in path for path in code)
        assert "qoeflow/cli.py" not in code
    assert "tasks/report.py" not in _code("train")
    assert "flows/asha.py" not in _code("report")
    assert "tasks/train.py" not in _code("forecast")


def test_relative_and_package_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..other import g\n    return g\n")
    (pkg / "other.py").write_text("import os\nimport json\n")
    (pkg / "unused.py").write_text("")
    assert module_closure(tmp_path, ["pkg.sub"]) == ["pkg/__init__.py", "pkg/other.py", "pkg/sub/__init__.py",
                                                     "pkg/sub/leaf.py"]


def _stale(project: Path) -> set[str]:
    result = subprocess.run([str(BIN / "dvc"), "status", "--json", "dags/smoke/dvc.yaml"], cwd=project, env=clean_env(),
                            capture_output=True, text=True, check=True)
    return {name.split(":")[-1] for name in json.loads(result.stdout or "{}")}


def test_touching_an_imported_file_makes_exactly_its_importers_stale(smoke_project):
    project, _ = smoke_project
    dag = load_dag(project / "dags/smoke.yaml")
    assert _stale(project) == set()
    code = {name: set(stage_code(project, stage.task)) for name, stage in dag.stages.items()}
    touched = sorted({REGISTRY[stage.task].module.replace(".", "/") + ".py" for stage in dag.stages.values()})
    touched += ["qoeflow/validate.py", "qoeflow/lifecycle/qoe.py", "qoeflow/plots.py"]
    for path in touched:
        file = project / path
        original = file.read_bytes()
        try:
            file.write_bytes(original + b"\n# touched\n")
            expected = {name for name, files in code.items() if path in files}
            assert expected, path
            assert _stale(project) == expected, path
        finally:
            file.write_bytes(original)
    unrelated = project / "qoeflow" / "scratch_unused.py"
    unrelated.write_text("X = 1\n")
    try:
        assert _stale(project) == set()
    finally:
        unrelated.unlink()
    assert _stale(project) == set()


@pytest.mark.parametrize("dag", ["dags/lifecycle.yaml", "dags/smoke.yaml"])
def test_exported_deps_are_the_derived_ones(dag):
    import yaml

    loaded = load_dag(REPO / dag)
    exported = yaml.safe_load((REPO / loaded.dvc_file()).read_text())["stages"]
    for name, stage in loaded.stages.items():
        deps = set(exported[name]["deps"])
        assert set(stage_code(REPO, stage.task)) <= deps
        assert not {d for d in deps if d.endswith((".py", ".j2"))} - set(stage_code(REPO, stage.task))
