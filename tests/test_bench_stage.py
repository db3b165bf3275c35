"""The bench stage on the session's smoke run: every catalog variant at every precision and batch size of
params, validated; layouts that compute the same function score the same; the Pareto front is exactly the
undominated rows; caching is measured per crowd job and clip; `qoeflow bench` measures the catalog without a run and refuses a device it cannot use."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import flows  # noqa: F401  (registers the asha task that the smoke DAG names)
from conftest import qoeflow
from qoeflow.models import harness
from qoeflow.validate import BENCH_COLUMNS, CACHING_COLUMNS, check_bench, check_caching
from tasks.runner import load_project

SMOKE = "dags/smoke.yaml"


@pytest.fixture(scope="module")
def project(smoke_project):
    return smoke_project[0]


@pytest.fixture(scope="module")
def bench(project) -> pd.DataFrame:
    table = pd.read_csv(project / "data/smoke/bench/bench.csv")
    check_bench(table)
    return table


def test_every_variant_is_measured_at_every_precision_and_batch(project, bench):
    _, _, params = load_project(project, SMOKE)
    catalog = pd.read_csv(project / "data/smoke/models/catalog.csv")
    device = harness.resolve_device(params.bench.device)
    precisions = params.bench.precisions or harness.default_precisions(device)
    assert list(bench.columns) == BENCH_COLUMNS
    expected = {(v, p, b) for v in catalog["variant"] for p in precisions for b in params.bench.batches}
    assert set(zip(bench["variant"], bench["precision"], bench["batch"])) == expected
    assert (bench["device_type"] == device.type).all() and (bench["threads"] == params.bench.threads).all()
    assert (project / "data/smoke/bench/bench.png").read_bytes()[:4] == b"\x89PNG"


def test_a_layout_change_keeps_each_variants_accuracy(bench):
    assert {"fp32", "fp32+cl"} <= set(bench["precision"]), "the smoke DAG's bench.precisions must hold this pair"
    accuracy = bench.pivot_table(index="variant", columns="precision", values="accuracy")
    assert (accuracy["fp32+cl"] - accuracy["fp32"]).abs().max() <= 0.02  # same function, other memory layout


def test_the_pareto_front_is_exactly_the_undominated_rows(bench):
    small = bench[bench["batch"] == bench["batch"].min()]
    assert not bench[bench["batch"] != bench["batch"].min()]["pareto"].any()
    for _, group in small.groupby(["device", "family"]):
        points = list(zip(group["p50_ms"], group["accuracy"]))
        for (latency, accuracy), on_front in zip(points, group["pareto"]):
            beaten = any(l <= latency and a >= accuracy and (l < latency or a > accuracy) for l, a in points)
            assert on_front == (not beaten)
        assert group["pareto"].any()


def test_cli_measures_the_catalog_without_a_run(project, tmp_path):
    out = tmp_path / "one.csv"
    result = qoeflow("bench", "--dag", SMOKE, "--device", "cpu", "--set", "bench.precisions=[fp32]",
                     "--set", "bench.batches=[2]", "-o", str(out), cwd=project)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    catalog = pd.read_csv(project / "data/smoke/models/catalog.csv")
    assert sorted(table["variant"]) == sorted(catalog["variant"]) and set(table["batch"]) == {2}
    assert "Pareto front" in result.stdout


def test_cli_refuses_devices_it_cannot_use(project):
    unknown = qoeflow("bench", "--dag", SMOKE, "--device", "tpu", cwd=project)
    assert unknown.returncode == 2 and "invalid choice: 'tpu'" in unknown.stderr
    bad_param = qoeflow("bench", "--dag", SMOKE, "--set", "bench.device=tpu", cwd=project)
    assert bad_param.returncode == 2 and "bench.device" in bad_param.stderr
    if not torch.cuda.is_available():
        cuda = qoeflow("bench", "--dag", SMOKE, "--device", "cuda", cwd=project)
        assert cuda.returncode == 2 and "no CUDA device" in cuda.stderr


def test_caching_has_one_validated_row_per_crowd_job_and_clip(project):
    _, _, params = load_project(project, SMOKE)
    caching = pd.read_csv(project / "data/smoke/bench/caching.csv")
    check_caching(caching)
    assert list(caching.columns) == CACHING_COLUMNS
    settings = params.bench.caching
    assert sorted(zip(caching["job"], caching["clip"])) == sorted((j, c) for j in settings.jobs for c in settings.clips)
    assert (caching["frames"] == settings.frames).all() and (caching["threads"] == params.bench.threads).all()
    assert (project / "data/smoke/bench/caching.png").read_bytes()[:4] == b"\x89PNG"
