"""The closed loop's planning: sunk seconds are not the planner's to split, a spent budget stops every job,
and each plan says why; an iterating stage's rounds are checked."""

from __future__ import annotations

import numpy as np
import pytest

from qoeflow.lifecycle.planning import JobOutlook, QoEModel, outside_band, reasons, replan
from qoeflow.lifecycle.qoe import QoEWeights

MODEL = {"digits": QoEModel(QoEWeights({"error": 0.8, "train": 0.1, "load": 0.05, "test": 0.05}),
                            {"error": 0.05, "train": 10.0, "load": 0.01, "test": 0.001})}


def _outlook(name: str, done: int, spent: float, per_epoch: float = 1.0, top: int = 12) -> JobOutlook:
    epochs = np.arange(done, top + 1)
    error = 0.02 + 0.3 / epochs  # keeps improving: every epoch is worth buying when affordable
    return JobOutlook(name, "digits", done, top, per_epoch, 0.01, 0.001, {"error": error}, seconds_spent=spent)


def _extra(plan, outlooks) -> float:
    return sum((plan.epochs[o.name] - o.base_epochs) * o.seconds_per_epoch for o in outlooks)


def test_a_replan_splits_only_what_the_jobs_have_not_spent():
    budget = 14.0
    outlooks = [_outlook("a", 4, spent=8.0), _outlook("b", 2, spent=2.0)]
    plan, tables = replan(outlooks, MODEL, budget)
    assert _extra(plan, outlooks) <= budget - 10.0 + 1e-9  # 4 s left: the 10 s already spent are sunk
    assert _extra(plan, outlooks) == pytest.approx(4.0)  # and what is left is spent (every epoch pays here)
    assert plan.seconds_used <= budget + 1e-9
    unspent = [_outlook("a", 4, spent=0.0), _outlook("b", 2, spent=0.0)]
    assert _extra(replan(unspent, MODEL, budget)[0], unspent) > 4.0  # had nothing been spent, it would buy more
    assert [float(t.cost_seconds[0]) for t in tables] == [8.0, 2.0]  # E_all counts the sunk seconds all the same


def test_a_spent_budget_stops_every_job():
    outlooks = [_outlook("a", 4, spent=9.0), _outlook("b", 2, spent=6.0)]
    plan, tables = replan(outlooks, MODEL, 12.0)
    assert plan.epochs == {"a": 4, "b": 2}
    assert all(r.startswith("stopped: its best") for r in reasons(tables, plan.epochs).values())


def test_reasons_name_what_a_job_gets_and_why():
    outlooks = [_outlook("a", 4, spent=4.0), _outlook("b", 2, spent=2.0, top=2), _outlook("c", 3, spent=3.0)]
    plan, tables = replan(outlooks, MODEL, 11.0)
    why = reasons(tables, plan.epochs)
    assert why["b"] == "closed: stopped earlier or at its max epochs"
    funded = [n for n in "ac" if plan.epochs[n] > {"a": 4, "c": 3}[n]]
    assert funded and all(why[n].startswith(f"funded: {plan.epochs[n] - {'a': 4, 'c': 3}[n]} more epochs") for n in funded)


def test_a_value_outside_its_forecast_band_is_caught_at_its_epoch():
    band = {"metric": "error", "epochs": [2, 3, 4], "lower": [0.3, 0.2, 0.1], "upper": [0.3, 0.4, 0.3]}
    assert outside_band(band, 3, 0.25) is None and outside_band(band, 4, 0.1) is None  # inside, bounds included
    assert outside_band(band, 3, 0.45) == (0.2, 0.4) and outside_band(band, 4, 0.05) == (0.1, 0.3)
    assert outside_band(band, 5, 9.0) is None and outside_band(None, 3, 9.0) is None  # no band there: no verdict


def test_an_iterating_stage_may_only_ask_for_its_own_items():
    import flows  # noqa: F401  (registers the asha task that the smoke DAG names)
    from conftest import REPO
    from tasks.context import StageError
    from tasks.runner import load_project, make_context, next_round

    dag, tree, params = load_project(REPO, "dags/smoke.yaml")
    ctx = make_context(REPO, dag, "continue", tree, params)
    assert next_round(ctx, {"again": [0, 3]}) == [0, 3]
    assert next_round(ctx, {"outputs": []}) == []
    with pytest.raises(StageError, match=r"asked to run items \[4\] again; it has items 0..3"):
        next_round(ctx, {"again": [4]})


def test_the_peers_params_accept_are_the_schedulers_the_stage_has():
    from flows.asha import schedulers
    from qoeflow.params import PEERS

    assert set(PEERS) == set(schedulers())


def test_a_one_epoch_probe_is_forecast_from_its_epoch_0_and_planned(tmp_path):
    """A one-epoch probe: with epoch 0 (the untrained model, jobs.json `epoch0`) its forecast has two points,
    and the plan starts from the probe."""
    import json

    import pandas as pd
    import yaml
    from conftest import make_project, qoeflow
    from test_faults import _faults_dag, _output

    project = make_project(tmp_path / "p")
    dag = _faults_dag(project, ["train", "forecast", "allocate"], ["digits-mlp", "crowd-mcnn"], 1)
    spec = yaml.safe_load((project / dag).read_text())
    for stage in spec["stages"]:
        result = qoeflow("stage", stage, "--dag", dag, cwd=project, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    curves = pd.read_csv(_output(project, dag, "train", "curves"))
    assert curves.groupby("job")["epoch"].apply(list).to_dict() == {"crowd-mcnn": [1], "digits-mlp": [1]}
    jobs = json.loads(_output(project, dag, "train", "jobs").read_text())
    assert set(jobs["digits-mlp"]["epoch0"]) == {"val_loss", "accuracy", "error"}
    assert set(jobs["crowd-mcnn"]["epoch0"]) == {"val_loss", "mae", "mse"}
    assert jobs["digits-mlp"]["epoch0"]["error"] > curves.set_index("job").loc["digits-mlp", "error"]
    forecasts = pd.read_csv(_output(project, dag, "forecast", "forecasts"))
    top = {j["name"]: j["max_epochs"] for j in spec["overrides"]["train"]["jobs"]}
    for (job, metric), rows in forecasts.groupby(["job", "metric"]):
        assert rows["epoch"].tolist() == list(range(2, top[job] + 1)), (job, metric)
    allocation = json.loads(_output(project, dag, "allocate", "allocation").read_text())
    assert {name: j["base_epochs"] for name, j in allocation["jobs"].items()} == {"crowd-mcnn": 1, "digits-mlp": 1}


def test_a_backtest_where_last_is_exact_is_written_with_a_null_ratio():
    """A job that stopped on a plateau makes `last` exact (MAE 0): its ratio to `last` has no value, and the
    continue stage's scores.json says so with null rather than failing its own check on NaN."""
    import pandas as pd

    from qoeflow.schemas import ScoresDoc
    from tasks.continue_training import scores_doc

    scores = pd.DataFrame([["a", "accuracy", "last", "last", 0.0], ["a", "accuracy", "combo", "combo", 0.01],
                           ["a", "val_loss", "last", "last", 0.2], ["a", "val_loss", "combo", "combo", 0.1]],
                          columns=["job", "metric", "method", "used", "last_epoch_abs_error"])
    doc = ScoresDoc.model_validate(scores_doc(0.5, scores))
    ratios = {(s.metric, s.method): s.vs_last for s in doc.summary}
    assert ratios[("accuracy", "combo")] is None and ratios[("val_loss", "combo")] == pytest.approx(0.5)
