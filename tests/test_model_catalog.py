"""The compress and multiexit stages on the session's smoke run: one model catalog whose every row is a
model file that loads with weights_only=True as a ready module; the CLI lists and loads it; bad input is
refused with a clear message and changes nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

import flows  # noqa: F401  registers the stages whose code lives in flows/
from conftest import qoeflow
from qoeflow.models import count_macs, load_variant
from qoeflow.models.arch import ModelFileError, read_model
from qoeflow.validate import MODEL_CATALOG_COLUMNS
from tasks.context import StageError
from tasks.runner import load_project, make_context, run_stage

SMOKE = "dags/smoke.yaml"
CATALOG = "data/smoke/models/catalog.csv"


@pytest.fixture(scope="module")
def project(smoke_project):
    return smoke_project[0]


@pytest.fixture(scope="module")
def catalog(project) -> pd.DataFrame:
    return pd.read_csv(project / CATALOG)


def test_the_catalog_has_a_row_per_variant_with_its_columns(project, catalog):
    _, tree, params = load_project(project, SMOKE)
    assert list(catalog.columns) == MODEL_CATALOG_COLUMNS
    for job in params.compress.jobs:
        rows = catalog[catalog["source_job"] == job]
        assert {"base", "dms", "d-pruner", "torch-pruning-l1", "tucker-2"} <= set(rows["method"]), job
        dms = rows[rows["method"] == "dms"].sort_values("variant")
        assert dms["macs"].iloc[0] == rows[rows["method"] == "base"]["macs"].iloc[0]  # level 0 is the network
        assert list(dms["macs"]) == sorted(dms["macs"], reverse=True) and dms["macs"].iloc[-1] < dms["macs"].iloc[0]
        base = rows[rows["method"] == "base"].iloc[0]
        pruned = rows[rows["method"] == "d-pruner"]
        assert (pruned["params"] < base["params"]).all() and (pruned["n_filters"] < base["n_filters"]).all()
    for job in params.multiexit.jobs:
        rows = catalog[catalog["source_job"] == job]
        exits = rows[rows["method"] == "exit"]
        assert len(exits) == len(params.multiexit.depths) and list(exits["macs"]) == sorted(exits["macs"])
        assert (rows["method"] == "early-exit").sum() == 1
    assert (catalog["device"] == "cpu").all() or torch.cuda.is_available()


def test_every_catalog_model_loads_with_weights_only_and_runs(project, catalog):
    for row in catalog.itertuples():
        saved = torch.load(project / row.path, weights_only=True)  # nothing unpickled
        assert set(saved) == {"format", "arch", "meta", "state"}
        model = load_variant(row.variant, project / CATALOG)
        with torch.no_grad():
            out = model(torch.rand(2, 1, 32, 32))
        assert out.shape == (2, 10), row.variant
        assert sum(p.numel() for p in model.parameters()) == row.params
        if row.method != "early-exit":  # the policy's MACs are a mean over the test inputs as they exit
            assert count_macs(model, (1, 32, 32)) == row.macs, row.variant  # a DMS level loads at its level


def test_an_exit_holds_only_its_path_and_the_last_runs_the_whole_base_network(catalog):
    rows = catalog.set_index("variant")
    exits = rows[rows["method"] == "exit"]
    for job, group in exits.groupby("source_job"):
        base = rows.loc[f"{job}.base"]
        last = group.iloc[-1]
        assert last["macs"] == base["macs"] and last["params"] == base["params"], job
        assert (group["params"].iloc[:-1] < base["params"]).all()


def test_cli_lists_and_loads_variants(project, catalog):
    listed = qoeflow("models", "list", "--dag", SMOKE, cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert f"{len(catalog)} variants" in listed.stdout
    assert all(variant in listed.stdout for variant in catalog["variant"]), "names are not cut when piped"
    variant = catalog["variant"].iloc[-1]
    loaded = qoeflow("models", "load", variant, "--dag", SMOKE, cwd=project)
    assert loaded.returncode == 0 and f"{variant}: EarlyExitModel" in loaded.stdout, loaded.stderr
    missing = qoeflow("models", "load", "no-such-variant", "--dag", SMOKE, cwd=project)
    assert missing.returncode == 2 and "no variant 'no-such-variant'" in missing.stderr


def _digest(project) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((project / "data").rglob("*")) if p.is_file()}


def _refused(project, stage: str, sets: list[str] | None = None) -> str:
    dag, tree, params = load_project(project, SMOKE, sets=sets)
    before = _digest(project)
    with pytest.raises(StageError) as err:
        run_stage(make_context(project, dag, stage, tree, params, log=lambda message: None))
    assert _digest(project) == before
    return " ".join(str(err.value).split())


def test_a_model_without_convolutions_is_refused(project):
    message = _refused(project, "compress", ["compress.jobs=[digits-mlp]"])
    assert "job 'digits-mlp' is a digits mlp with no convolution" in message and "params compress.jobs" in message


def test_exit_depths_the_model_does_not_have_are_refused(project):
    message = _refused(project, "multiexit", ["multiexit.depths=[1, 7]", "multiexit.weights=[1, 1]"])
    assert "job 'sprites-resnet' (resnet)" in message and "7" in message


@contextmanager
def _times_kept(*paths: Path):
    """The modification times of `paths` as they were (the shared project's report compares them with its
    run record)."""
    saved = [(p, p.stat().st_atime, p.stat().st_mtime) for p in paths]
    try:
        yield
    finally:
        for p, atime, mtime in saved:
            os.utime(p, (atime, mtime))


def test_a_truncated_checkpoint_is_a_clear_error(project):
    model = project / "data/smoke/continue/models/sprites-resnet.pt"
    saved = model.read_bytes()
    with _times_kept(model, model.parent):
        try:
            model.write_bytes(saved[: len(saved) // 2])
            message = _refused(project, "multiexit")
            assert "data/smoke/continue/models" in message and "truncated or corrupt" in message
        finally:
            model.write_bytes(saved)


def test_a_catalog_row_whose_model_file_is_missing_is_refused(project, catalog):
    path = project / catalog["path"].iloc[0]
    moved = path.with_name(path.name + ".away")
    with _times_kept(path.parent):
        shutil.move(path, moved)
        try:
            message = _refused(project, "multiexit")
            assert "model file(s) missing for 1 row(s)" in message and catalog["variant"].iloc[0] in message
            with pytest.raises(ModelFileError, match="missing"):
                load_variant(catalog["variant"].iloc[0], project / CATALOG)
        finally:
            shutil.move(moved, path)
    read_model(path)
