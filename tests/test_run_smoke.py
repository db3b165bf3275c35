"""The smoke DAG through `qoeflow run`: a real embedded Prefect server, a real local Ray, DVC bookkeeping.

The tests of this module share the session's smoke project (conftest.smoke_project) and run in file
order: first run, cached rerun, forced stage, corrupted artifact.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import BIN, SMOKE, SMOKE_STAGES, clean_env, last_run, qoeflow

ALL = list(SMOKE_STAGES)


@pytest.fixture(scope="module")
def project(smoke_project):
    return smoke_project[0]


@pytest.fixture(scope="module")
def first_run(smoke_project):
    return smoke_project[1]


def test_first_run_trains_every_job_and_writes_the_artifacts(project, first_run):
    stages = last_run(project)
    assert {s: v["status"] for s, v in stages.items()} == {s: "ran" for s in ALL}
    record = json.loads((project / ".qoeflow/runs/last.json").read_text())
    assert {"dvc_status", "dvc_commit", "submit"} <= set(record["timings"])
    assert {"prefect_api_ready", "ray_start", "flow", "shutdown"} <= set(record["services"])
    assert all(0 < s["critical_seconds"] <= s["compute_seconds"] + 1e-6 for s in stages.values())
    curves = pd.read_csv(project / "data/smoke/train/curves.csv")
    expected = ["job", "task", "model", "epoch", "train_loss", "val_loss", "epoch_seconds", "cumulative_seconds",
                "accuracy", "error", "mae", "mse"]
    assert list(curves.columns) == expected
    smoke_jobs = yaml.safe_load((project / "dags/smoke/params.yaml").read_text())["train"]["jobs"]
    assert sorted(curves["job"].unique()) == sorted(j["name"] for j in smoke_jobs)
    assert curves.groupby("job")["epoch"].apply(list).map(lambda e: e == [1, 2]).all()  # the probes
    jobs = json.loads((project / "data/smoke/train/jobs.json").read_text())
    for name, info in jobs.items():
        assert info["status"] == "completed" and info["epochs_done"] == 2, name
        assert info["macs"] > 0 and info["params"] > 0 and info["size_bytes"] > 0
        assert 0 < info["t_load"] < 5 and 0 < info["t_test"] < 5
        assert (project / f"data/smoke/train/checkpoints/{name}.pt").exists()
    assert "<h1>qoeflow smoke run</h1>" in (project / "data/smoke/report/index.html").read_text()
    assert (project / "dags/smoke/dvc.lock").exists()
    allocation = json.loads((project / "data/smoke/allocate/allocation.json").read_text())
    assert set(allocation["methods"]) == {"exact", "ga", "random", "fcfs", "average"}
    exact = allocation["methods"]["exact"]
    assert exact["seconds_used"] <= allocation["budget_seconds"] + 1e-9
    assert all(exact["E_sum"] >= p["E_sum"] - 1e-9 for p in allocation["methods"].values())
    plan = pd.read_csv(project / "data/smoke/continue/plan_vs_actual.csv")
    assert (plan["epochs_done"] == plan["replanned_epochs"]).all()  # every job reached what the last plan gave it
    continued = pd.read_csv(project / "data/smoke/continue/curves.csv")
    assert continued.groupby("job")["epoch"].max().to_dict() == dict(zip(plan["job"], plan["epochs_done"]))
    asha = json.loads((project / "data/smoke/asha/asha.json").read_text())
    assert asha["peers"]["asha"]["training_seconds"] > 0 and asha["peers"]["asha"]["E_sum"] > 0
    deploy = json.loads((project / "data/smoke/deploy/bandit_summary.json").read_text())
    catalog = pd.read_csv(project / "data/smoke/models/catalog.csv")
    family = catalog["family"].value_counts().index[0]  # params: the family with the most variants
    assert (deploy["mode"], deploy["seeds"], deploy["family"]) == ("deployment", 2, family)
    assert set(deploy["methods"]) == {"linucb", "oracle", "random", "static", "contextualbandits"}
    assert deploy["arms"] == catalog.loc[catalog["family"] == family, "variant"].tolist()
    qos = json.loads((project / "data/smoke/deploy/qos_summary.json").read_text())
    job = catalog.loc[catalog["method"] == "dms", "source_job"].iloc[0]  # params: the first job with DMS variants
    assert qos["job"] == job and set(qos["experiments"]) == {"single", "concurrent"}
    assert set(qos["experiments"]["concurrent"]) == {"A", "B", "C"} and set(qos["experiments"]["single"]) == {"A"}
    levels = catalog[(catalog["source_job"] == job) & (catalog["method"] == "dms")]
    assert [lv["accuracy"] for lv in qos["levels"]] == levels["accuracy"].tolist()


def test_the_closed_loop_splits_only_what_remains_and_stopped_jobs_train_no_further(project, first_run):
    replans = json.loads((project / "data/smoke/continue/replans.json").read_text())
    budget, plans = replans["budget_seconds"], replans["plans"]
    assert len(plans) >= 2 and [p["round"] for p in plans] == list(range(len(plans)))
    for p in plans:
        jobs = p["jobs"].values()
        assert p["sunk_seconds"] == pytest.approx(sum(j["spent"] for j in jobs))  # every second spent is sunk
        assert p["remaining_seconds"] == pytest.approx(budget - p["sunk_seconds"])
        assert sum(j["seconds"] - j["spent"] for j in jobs) <= max(p["remaining_seconds"], 0.0) + 1e-9
    done = pd.read_csv(project / "data/smoke/continue/plan_vs_actual.csv").set_index("job")["epochs_done"]
    for job in plans[0]["jobs"]:
        stopped = next((k for k, p in enumerate(plans) if p["jobs"][job]["target"] == p["jobs"][job]["done"]), None)
        assert stopped is not None, f"{job}: the last plan gives every job what it has"
        at = plans[stopped]["jobs"][job]["done"]
        assert all(p["jobs"][job]["done"] == at for p in plans[stopped:]) and done[job] == at, job
    funded = [j for p in plans for j in p["jobs"].values() if j["target"] > j["done"]]
    assert all(j["reason"].startswith("funded: ") for j in funded)


def test_ray_workers_and_driver_report_to_one_prefect_api(project, first_run):
    db = project / ".qoeflow" / "prefect" / "prefect.db"
    with sqlite3.connect(db) as conn:
        flows = conn.execute("select state_type from flow_run").fetchall()
        tasks = dict(conn.execute("select name, state_type from task_run").fetchall())
    assert flows == [("COMPLETED",)]
    for name in ("train[digits-mlp]", "train[digits-allcnn]", "train[crowd-mcnn]", "train[gather]", "forecast",
                 "allocate", "continue[crowd-mcnn]", "continue[gather]", "compress[sprites-resnet]", "asha",
                 "deploy[0]", "deploy[gather]", "report"):  # items named by their job (compress.jobs), or seed
        assert tasks.get(name) == "COMPLETED", tasks
    assert "Started a local Ray instance" in first_run.stderr + first_run.stdout


def test_a_terminal_shows_a_live_line_per_running_job(first_run):
    screen = first_run.stdout
    assert "qoeflow: running" in screen
    for job in ("digits-mlp", "digits-allcnn", "crowd-mcnn"):  # a fast job may be caught only when done
        assert re.search(rf"train\[{job}\]\s+(epoch [12]/2|done)\s+loss \d", screen), job
    # the columns of a job line; the estimate of what is left (drawn only between two epochs, which a
    # loaded machine can miss in a 2-epoch probe) is checked on a drawn table in test_progress_view.py
    assert re.search(r"stage / job\s+progress\s+elapsed\s+remaining", screen)
    assert re.search(r"qoeflow run of dags/smoke.yaml in [0-9.]+ s", screen), "the summary table stays"


def test_rerun_with_nothing_changed_runs_no_stage(project, first_run):
    before = (project / "data/smoke/train/curves.csv").stat().st_mtime_ns
    result = qoeflow("run", *SMOKE, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {s: v["status"] for s, v in last_run(project).items()} == {s: "cached" for s in ALL}
    assert (project / "data/smoke/train/curves.csv").stat().st_mtime_ns == before


def test_force_reruns_only_that_stage(project, first_run):
    train_before = (project / "data/smoke/train/curves.csv").stat().st_mtime_ns
    result = qoeflow("run", *SMOKE, "--force", "report", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {s: v["status"] for s, v in last_run(project).items()} == {**{s: "cached" for s in ALL}, "report": "ran"}
    assert (project / "data/smoke/train/curves.csv").stat().st_mtime_ns == train_before


def test_corrupted_curves_stop_the_next_stage_and_keep_its_outputs(project, first_run):
    curves_path = project / "data/smoke/train/curves.csv"
    curves = pd.read_csv(curves_path)
    curves.loc[curves.index[1], "val_loss"] = float("nan")
    curves.loc[curves.index[2], "train_loss"] = -1.0
    curves.to_csv(curves_path, index=False)
    forecasts = project / "data/smoke/forecast/forecasts.csv"
    forecasts_before = forecasts.read_bytes()
    # The corrupted file is accepted as train's output (as a user committing it would), so train is up to date.
    subprocess.run([str(BIN / "dvc"), "commit", "-f", "dags/smoke/dvc.yaml:train"], cwd=project, check=True,
                   capture_output=True, env=clean_env())
    result = qoeflow("run", *SMOKE, cwd=project)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "stage 'forecast' failed" in message
    assert "data/smoke/train/curves.csv" in message
    assert "column 'val_loss'" in message and "column 'train_loss'" in message
    row = curves.iloc[1]
    assert f"job={row['job']}, epoch={row['epoch']}" in message
    stages = last_run(project)
    assert stages["train"]["status"] == "cached" and stages["forecast"]["status"] == "failed"
    assert all(stages[s]["status"] == "blocked" for s in ALL[ALL.index("allocate"):])
    assert forecasts.read_bytes() == forecasts_before

    direct = qoeflow("stage", "forecast", *SMOKE, cwd=project)
    assert direct.returncode == 1 and "column 'val_loss'" in direct.stderr


def test_a_truncated_checkpoint_is_reported_and_the_job_trains_from_scratch(project, first_run):
    checkpoint = project / "data/smoke/train/checkpoints/digits-mlp.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    result = qoeflow("stage", "train", *SMOKE, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    output = " ".join(result.stderr.split())
    assert "note: train[digits-mlp]: checkpoint digits-mlp.pt is unreadable" in output
    assert "training restarts from scratch" in output
    assert "train[digits-allcnn] resuming from epoch 2 checkpoint" in output
    curves = pd.read_csv(project / "data/smoke/train/curves.csv")
    assert curves[curves["job"] == "digits-mlp"]["epoch"].tolist() == [1, 2]


def test_hyperband_runs_as_a_peer_with_the_same_budget(project, first_run):
    """`asha.peers` picks the Tune schedulers; the lifecycle runs HyperBand beside ASHA (the smoke DAG only
    ASHA, for time), so it is run here once, on the smoke jobs."""
    params = project / "dags/smoke/params.yaml"
    text = params.read_text()
    params.write_text(text.replace("  peers: [asha]  ", "  peers: [hyperband]  "))
    try:
        result = qoeflow("stage", "asha", *SMOKE, cwd=project, timeout=600)
    finally:
        params.write_text(text)
    assert result.returncode == 0, result.stderr[-3000:]
    asha = json.loads((project / "data/smoke/asha/asha.json").read_text())
    assert list(asha["peers"]) == ["hyperband"]
    peer = asha["peers"]["hyperband"]
    jobs = {j["name"]: j for j in yaml.safe_load(text)["train"]["jobs"]}
    assert peer["E_sum"] > 0 and peer["training_seconds"] > 0 and set(peer["jobs"]) <= set(jobs)
    assert all(0 <= j["epochs"] <= jobs[name]["max_epochs"] for name, j in peer["jobs"].items())
