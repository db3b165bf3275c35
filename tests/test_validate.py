"""The Great Expectations suites catch what would poison later stages, and say where."""

from __future__ import annotations

import pandas as pd
import pytest

from qoeflow.schemas import JobsDoc, check_document
from qoeflow.validate import ArtifactError, check_curves


def check_jobs(jobs: dict, label: str = "jobs.json") -> None:
    check_document(JobsDoc, jobs, label)


def _curves() -> pd.DataFrame:
    rows = []
    for job, task in (("a", "digits"), ("b", "crowd")):
        for epoch in (1, 2, 3):
            row = {"job": job, "task": task, "model": "m", "epoch": epoch, "train_loss": 1.0 / epoch,
                   "val_loss": 1.1 / epoch, "epoch_seconds": 0.5, "cumulative_seconds": 0.5 * epoch}
            row.update({"accuracy": 0.5, "error": 0.5} if task == "digits" else {"mae": 3.0, "mse": 12.0})
            rows.append(row)
    return pd.DataFrame(rows)


def _jobs() -> dict:
    base = {"model": "m", "config": {}, "params": 10, "macs": 100, "size_bytes": 1000, "t_load": 0.01, "t_test": 0.001,
            "status": "completed", "epochs": 3, "epochs_done": 3, "train_seconds": 1.5}
    return {"a": {"task": "digits", **base, "test_metrics": {"accuracy": 0.9, "error": 0.1}},
            "b": {"task": "crowd", **base, "test_metrics": {"mae": 3.0, "mse": 12.0}}}


def test_good_artifacts_pass():
    check_curves(_curves())
    check_jobs(_jobs())


def test_nan_and_negative_losses_name_column_and_rows():
    df = _curves()
    df.loc[1, "val_loss"] = float("nan")
    df.loc[4, "train_loss"] = -2.0
    with pytest.raises(ArtifactError) as err:
        check_curves(df, "data/train/curves.csv")
    message = str(err.value)
    assert message.startswith("data/train/curves.csv: ")
    assert "column 'val_loss'" in message and "job=a, epoch=2" in message
    assert "column 'train_loss'" in message and "job=b, epoch=2" in message


def test_infinite_loss_is_refused():
    df = _curves()
    df.loc[0, "train_loss"] = float("inf")
    with pytest.raises(ArtifactError, match="column 'train_loss'"):
        check_curves(df)


def test_epochs_must_be_contiguous_from_one():
    df = _curves().drop(index=1)  # job a: epochs 1, 3
    with pytest.raises(ArtifactError, match=r"column 'epoch \(contiguous from 1 per job\)'.*job=a, epoch=3"):
        check_curves(df)


def test_metrics_out_of_range_and_missing_columns():
    df = _curves()
    df.loc[0, "accuracy"] = 1.5
    with pytest.raises(ArtifactError, match=r"column 'accuracy'.*job=a, epoch=1"):
        check_curves(df)
    with pytest.raises(ArtifactError, match=r"missing column\(s\) \['mae'\]"):
        check_curves(_curves().drop(columns=["mae"]))


def test_jobs_with_bad_status_or_zero_time_are_refused():
    jobs = _jobs()
    jobs["a"]["status"] = "exploded"
    jobs["b"]["t_test"] = 0.0
    with pytest.raises(ArtifactError) as err:
        check_jobs(jobs, "jobs.json")
    message = str(err.value)
    assert message.startswith("jobs.json: ")
    assert "field 'a.status'" in message and "'exploded'" in message
    assert "field 'b.t_test': Input should be greater than 0 (got 0.0)" in message


def test_completed_jobs_must_have_all_their_epochs():
    jobs = _jobs()
    jobs["a"]["epochs_done"] = 2
    with pytest.raises(ArtifactError, match=r"field 'a': a completed job must have all its epochs: epochs_done 2 of 3"):
        check_jobs(jobs)
