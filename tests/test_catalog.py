"""Every artifact goes through the catalog: a corrupted one stops the stage that reads it, with the file,
the column or field and the offending rows or values in the message, and changes no output."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

import flows  # noqa: F401  registers the stages whose code lives in flows/
from tasks import REGISTRY
from tasks.catalog import CATALOG, Checkpoints, Document, Figure, ModelFiles, Page, Table, VideoIndex, Weights
from tasks.context import StageError
from tasks.runner import load_project, make_context, run_stage

SMOKE = "dags/smoke.yaml"


def _csv(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        change(pd.read_csv(path)).to_csv(path, index=False)
    return corrupt


def _json(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))
    return corrupt


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set(frame: pd.DataFrame, column: str, value) -> pd.DataFrame:
    frame[column] = frame[column].astype(float)
    frame.loc[frame.index[1], column] = value
    return frame


def _folder_to_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a folder\n")


def _truncate_first_file(folder: Path) -> None:
    _truncate(sorted(folder.glob("*.pt"))[0])


def _first_job(doc: dict) -> dict:
    return doc[sorted(doc)[0]]


# (artifact, the stage that reads it, corruption, what the message must say)
CASES = [
    ("curves", "forecast", _csv(lambda f: _set(f, "val_loss", math.nan)), ["column 'val_loss'", "job="]),
    ("curves", "allocate", _csv(lambda f: f.drop(columns=["epoch_seconds"])), ["missing column(s) ['epoch_seconds']"]),
    ("jobs", "forecast", _truncate, ["not a readable JSON document"]),
    ("jobs", "asha", _json(lambda d: _first_job(d).update(t_load=-1.0)), [".t_load': Input should be greater than 0 (got -1.0)"]),
    ("forecasts", "allocate", _csv(lambda f: _set(f, "predicted", -1e9)), ["column 'predicted'", "-1000000000", "job="]),
    ("forecasts", "allocate", _csv(lambda f: _set(f, "upper", math.nan)), ["column 'upper'", "job="]),
    ("allocation", "continue", _truncate, ["not a readable JSON document"]),
    ("allocation", "asha", _json(lambda d: d.update(budget_seconds=-5)), ["field 'budget_seconds'", "(got -5)"]),
    ("checkpoints", "continue", _folder_to_file, ["is a file; the catalog declares a folder of checkpoints"]),
    ("selection", "report", _json(lambda d: d.pop("selected_job")), ["field 'selected_job': Field required"]),
    ("scores", "report", _json(lambda d: d.update(frac=1.5)), ["field 'frac': Input should be less than 1 (got 1.5)"]),
    ("replans", "report", _json(lambda d: d["plans"][0]["jobs"]["digits-mlp"].update(target=0)),
     ["field 'plans.0.jobs.digits-mlp.target': Input should be greater than or equal to 1 (got 0)"]),
    ("forecast_figure", "report", _truncate, ["not a decodable PNG"]),
    ("plan_vs_actual", "report", _csv(lambda f: _set(f, "predicted_qoe", 2.0)), ["column 'predicted_qoe'", "job="]),
    ("asha", "report", _json(lambda d: d["peers"]["asha"].update(E_sum=-1.0)), ["field 'peers.asha.E_sum'", "(got -1.0)"]),
    ("continued_models", "compress", _truncate_first_file, ["not loadable torch files (truncated or corrupt)"]),
    ("variants", "multiexit", _csv(lambda f: _set(f, "accuracy", 1.5)), ["column 'accuracy'", "variant="]),
    ("compression", "report", _json(lambda d: _first_job(d["jobs"])["dms"].update(levels=[])),
     ["field 'jobs.", "dms.levels': List should have at least 1 item"]),
    ("exits", "report", _json(lambda d: _first_job(d["jobs"])["early_exit"].update(accuracy=math.nan)),
     ["early_exit.accuracy': Input should be a finite number"]),
    ("video_queries", "report", _csv(lambda f: _set(f, "recall", 1.5)), ["column 'recall'", "clip="]),
]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _snapshot(path: Path) -> Callable[[], None]:
    saved = path.with_name(path.name + ".saved")
    (shutil.copytree if path.is_dir() else shutil.copy2)(path, saved)

    def restore() -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        saved.rename(path)
    return restore


def test_every_artifact_is_declared_with_a_kind_and_schema():
    for task in REGISTRY.values():
        for name in task.inputs + task.optional + task.outputs:
            assert name in CATALOG, f"{task.name}: {name}"
    for name, kind in CATALOG.items():
        assert isinstance(kind, (Table, Document, Figure, Page, Weights, ModelFiles, Checkpoints, VideoIndex)), name
        if isinstance(kind, Document):
            assert kind.model.model_json_schema()["title"], name


def test_stages_read_and_write_artifacts_only_through_the_context():
    root = Path(__file__).resolve().parents[1]
    for task in REGISTRY.values():
        source = (root / (task.module.replace(".", "/") + ".py")).read_text()
        for raw in ("pd.read_csv", "json.load", "json.loads", "open(", ".read_text(", ".write_text(", "to_csv("):
            assert raw not in source, f"{task.module} uses {raw}"


@pytest.mark.parametrize("artifact,reader,corrupt,expected", CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_a_corrupted_artifact_stops_its_reader_and_changes_nothing(smoke_project, artifact, reader, corrupt, expected):
    project, _ = smoke_project
    dag, tree, params = load_project(project, SMOKE)
    relative = next(s.outs[artifact].path for s in dag.stages.values() if artifact in s.outs)
    path = project / relative
    restore = _snapshot(path)
    try:
        corrupt(path)
        before = _digest(project / "data")
        ctx = make_context(project, dag, reader, tree, params, log=lambda message: None)
        with pytest.raises(StageError) as err:
            run_stage(ctx)
        message = " ".join(str(err.value).split())
        assert relative in message, message
        for fragment in expected:
            assert fragment in message, message
        assert _digest(project / "data") == before
        assert not list((project / ".qoeflow" / "tmp").rglob("*.*")), "no temporary output is left behind"
    finally:
        restore()
