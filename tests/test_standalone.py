"""`qoeflow forecast` and `qoeflow allocate` on an engineer's own files, and their refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import qoeflow


@pytest.fixture()
def own_curves(tmp_path):
    rows = []
    for job, (a, b) in {"a": (2.0, 0.5), "b": (1.5, 0.8)}.items():
        for e in range(1, 21):
            rows.append({"job": job, "epoch": e, "loss": 0.2 + a * e ** -b})
    path = tmp_path / "curves.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_forecast_writes_every_later_epoch_with_bands(own_curves, tmp_path):
    out = tmp_path / "f.csv"
    result = qoeflow("forecast", str(own_curves), "--metric", "loss", "--until", "10", "--to", "20",
                     "--method", "parametric", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == ["job", "epoch", "predicted", "lower", "upper", "method"]
    assert sorted(table.groupby("job")["epoch"].apply(list).iloc[0]) == list(range(11, 21))
    assert (table["lower"] <= table["predicted"]).all() and (table["predicted"] <= table["upper"]).all()
    truth = 0.2 + 2.0 * 20 ** -0.5
    assert abs(table[(table.job == "a") & (table.epoch == 20)]["predicted"].iloc[0] - truth) < 0.05 * truth


def test_backtest_reports_mae_against_last(own_curves, tmp_path):
    out = tmp_path / "b.csv"
    result = qoeflow("forecast", str(own_curves), "--metric", "loss", "--backtest", "0.5", "--method", "parametric",
                     "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(out).columns) == ["job", "epoch", "actual", "predicted", "lower", "upper"]
    scores = {line.split(":")[0].strip(): float(line.split("MAE at each job's last epoch ")[1].split()[0])
              for line in result.stdout.splitlines() if "MAE at" in line}
    assert scores["parametric"] < 0.7 * scores["last"]


@pytest.mark.parametrize("args, message", [
    (["--metric", "acc", "--to", "30"], "column(s) ['acc'] absent"),
    (["--metric", "loss", "--until", "1", "--to", "30"], "1 observed point(s) of 'loss'; at least 2 needed"),
])
def test_forecast_refuses_bad_input(own_curves, tmp_path, args, message):
    result = qoeflow("forecast", str(own_curves), *args, cwd=tmp_path)
    assert result.returncode == 2 and message in " ".join(result.stderr.split())


def test_forecast_refuses_nan_in_a_curve(own_curves, tmp_path):
    table = pd.read_csv(own_curves)
    table.loc[3, "loss"] = np.nan
    table.to_csv(own_curves, index=False)
    result = qoeflow("forecast", str(own_curves), "--metric", "loss", "--to", "30", cwd=tmp_path)
    assert result.returncode == 2 and "job 'a': column 'loss' has NaN/inf at epochs [4]" in result.stderr


def _planning_files(tmp_path):
    forecasts, jobs = [], {}
    for name, final, spe in (("j1", 0.10, 2.0), ("j2", 0.20, 1.0), ("j3", 0.05, 4.0)):
        for e in range(6, 21):
            forecasts.append({"job": name, "metric": "error", "epoch": e, "predicted": final * (1 + 5 / e)})
        jobs[name] = {"task": "digits", "epochs_done": 5, "train_seconds": 5 * spe, "t_load": 0.01, "t_test": 0.001}
    pd.DataFrame(forecasts).to_csv(tmp_path / "forecasts.csv", index=False)
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    return ["--forecasts", str(tmp_path / "forecasts.csv"), "--jobs", str(tmp_path / "jobs.json")]


def test_allocate_writes_an_auditable_plan_within_budget(tmp_path):
    files = _planning_files(tmp_path)
    out = tmp_path / "allocation.json"
    result = qoeflow("allocate", *files, "--budget", "80", "--weights", "w2", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert set(doc["methods"]) == {"exact", "ga", "random", "fcfs", "average"}
    for plan in doc["methods"].values():
        assert plan["seconds_used"] <= 80 + 1e-9
    assert doc["methods"]["exact"]["E_sum"] >= max(p["E_sum"] for p in doc["methods"].values()) - 1e-9
    assert doc["jobs"]["j1"]["epochs"][0] == 5 and doc["jobs"]["j1"]["max_epochs"] == 20


@pytest.mark.parametrize("extra, message", [
    (["--budget", "10"], "is below the cost of the base epochs of all jobs (35 s)"),
    (["--budget", "80", "--weights", "0.5,0.5,0.5,0,0"], "must sum to 1"),
    (["--budget", "80", "--weights=-0.1,0.6,0.2,0.2,0.1"], "non-negative"),
])
def test_allocate_refuses_bad_input(tmp_path, extra, message):
    result = qoeflow("allocate", *_planning_files(tmp_path), *extra, cwd=tmp_path)
    assert result.returncode == 2 and message in " ".join(result.stderr.split()), result.stderr


def test_allocate_refuses_forecasts_of_an_unknown_job(tmp_path):
    files = _planning_files(tmp_path)
    jobs = json.loads((tmp_path / "jobs.json").read_text())
    del jobs["j2"]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    result = qoeflow("allocate", *files, "--budget", "80", cwd=tmp_path)
    assert result.returncode == 2 and "forecasts name job(s) ['j2']" in result.stderr


def test_deepnetqoe_example_ga_matches_exact_and_beats_baselines(tmp_path):
    result = qoeflow("allocate", "--example", "deepnetqoe", "--budget", "350000", "--weights", "w2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    e_sum = {line.split(":")[0].strip(): float(line.split("E_sum ")[1].split()[0])
             for line in result.stdout.splitlines() if "E_sum" in line}
    assert e_sum["ga"] >= 0.99 * e_sum["exact"]
    assert e_sum["ga"] >= max(e_sum["random"], e_sum["fcfs"], e_sum["average"]) - 1e-9
