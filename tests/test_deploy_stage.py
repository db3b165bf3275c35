"""`qoeflow bandit` over the smoke run's model catalog, outside a run: the deploy stage's simulation, its
summary checked as the stage's is, and a family the catalog lacks refused by name."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import SMOKE, qoeflow


@pytest.fixture(scope="module")
def project(smoke_project):
    return smoke_project[0]


def test_cli_simulates_the_catalog_without_a_run(project, tmp_path):
    from tasks.catalog import kind_of

    out = tmp_path / "bandit"
    result = qoeflow("bandit", *SMOKE, "--seeds", "2", "--set", "deploy.bandit.rounds=200", "--peer", "mabwiser",
                     "-o", str(out), cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = kind_of("bandit_summary").load(out / "summary.json", "summary.json")
    kind_of("bandit_figure").load(out / "figure.png", "figure.png")
    catalog = pd.read_csv(project / "data/smoke/models/catalog.csv")
    family = catalog["family"].value_counts().index[0]
    assert (summary["mode"], summary["family"], summary["seeds"], summary["rounds"][-1]) == ("deployment", family, 2, 200)
    assert summary["arms"] == catalog.loc[catalog["family"] == family, "variant"].tolist()
    assert set(summary["methods"]) == {"linucb", "oracle", "random", "static", "mabwiser"}
    assert "linucb" in result.stdout and "normalised QoE" in result.stdout


def test_cli_refuses_a_family_the_catalog_lacks(project):
    result = qoeflow("bandit", *SMOKE, "--seeds", "1", "--set", "deploy.bandit.family=nope", cwd=project)
    assert result.returncode == 2
    assert "no variant of family 'nope'" in result.stdout + result.stderr
