"""Stage `train`: the training jobs of `params.yaml`, one `foreach` item each (paper 000 §II-A).

Each job trains epoch by epoch, checkpointing after every epoch (`data/train/checkpoints/JOB.pt`,
persisted across runs), and resumes from its checkpoint when asked for more epochs with otherwise
unchanged settings. A job whose loss turns NaN/inf is recorded as diverged; the others carry on.
The gather step writes `curves.csv`, `jobs.json`, the final model files and a figure.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from qoeflow.params import Job
from qoeflow.validate import CURVE_COLUMNS, TASK_METRICS
from tasks.artifacts import write_curves, write_jobs
from tasks.context import StageContext, StageError, remove_path, write_atomic_bytes

METRIC_COLUMNS = {task: list(metrics) for task, metrics in TASK_METRICS.items()}


@lru_cache(maxsize=4)
def _split(task: str, data_json: str):
    from qoeflow.data import load_split

    return load_split(task, **json.loads(data_json))


def _fingerprint(job: Job, data_json: str) -> str:
    settings = job.model_dump(exclude={"epochs", "max_epochs"})
    return hashlib.sha256(json.dumps([settings, data_json], sort_keys=True).encode()).hexdigest()[:16]


def _load_checkpoint(path: Path, fingerprint: str, epochs: int) -> dict | None:
    import torch

    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # unreadable: start afresh rather than fail
    if state.get("fingerprint") != fingerprint or state.get("epochs_done", 0) > epochs:
        return None
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic_bytes(path, buffer.getvalue())


def _record_row(job: Job, record: Any, cumulative: float) -> dict:
    return {
        "job": job.name,
        "task": job.task,
        "model": job.model,
        "epoch": record.epoch,
        "train_loss": record.train_loss,
        "val_loss": record.val_loss,
        "epoch_seconds": record.epoch_seconds,
        "cumulative_seconds": cumulative,
        **{m: record.metrics[m] for m in METRIC_COLUMNS[job.task]},
    }


def _median_load_seconds(model_file: Path, job: Job, size: int, repeats: int) -> float:
    import torch

    from qoeflow.models import build_model

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model = build_model(job.task, job.model, size=size)
        model.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_job(ctx: StageContext, item: dict) -> dict:
    """Train one job to its epochs (resuming when possible); stage its curve, stats and model file."""
    job = Job.model_validate(item)
    return train_job(ctx, job, job.epochs, ctx.output("checkpoints") / f"{job.name}.pt")


def train_job(ctx: StageContext, job: Job, epochs: int, checkpoint: Path, resume_from: Path | None = None) -> dict:
    """Train `job` to `epochs`, checkpointing to `checkpoint` every epoch; resume from it (or from
    `resume_from` when it has none that fits). Stages curve.csv, stats.json and model.pt under the
    stage's staging folder for the job."""
    import torch

    from qoeflow.lifecycle.training import Diverged, JobSpec, TrainingJob, test_latency
    from qoeflow.models import count_macs, count_params, input_shape

    settings = ctx.params.train
    data = getattr(settings.data, job.task).model_dump()
    data_json = json.dumps(data, sort_keys=True)
    torch.set_num_threads(settings.threads_per_job)
    split = _split(job.task, data_json)
    trainer = TrainingJob(JobSpec(**job.model_dump(exclude={"max_epochs"})), split, threads=settings.threads_per_job)

    fingerprint = _fingerprint(job, data_json)
    state = _load_checkpoint(checkpoint, fingerprint, epochs)
    if state is None and resume_from is not None:
        state = _load_checkpoint(resume_from, fingerprint, epochs)
    diverged_at = None

    def save() -> None:
        _save_checkpoint(checkpoint, {"fingerprint": fingerprint, "epochs_done": trainer.epochs_done,
                                      "diverged_at": diverged_at, "trainer": trainer.state_dict()})

    if state is not None:
        trainer.load_state_dict(state["trainer"])
        diverged_at = state.get("diverged_at")
        if trainer.epochs_done:
            ctx.log(f"{ctx.stage}[{job.name}] resuming from epoch {trainer.epochs_done} checkpoint")

    while diverged_at is None and trainer.epochs_done < epochs:
        try:
            record = trainer.train_epoch()
        except Diverged as exc:
            diverged_at = exc.epoch
            ctx.log(f"{ctx.stage}[{job.name}] DIVERGED at epoch {exc.epoch} (loss {exc.value}); job stopped, others carry on")
        else:
            metric = METRIC_COLUMNS[job.task][0]
            ctx.log(
                f"{ctx.stage}[{job.name}] epoch {record.epoch}/{epochs} train_loss {record.train_loss:.4f} "
                f"val_loss {record.val_loss:.4f} {metric} {record.metrics[metric]:.4f} ({record.epoch_seconds:.2f}s)"
            )
            if ctx.progress:
                ctx.progress(job.name, record.epoch, epochs, f"loss {record.train_loss:.4f}")
        save()
    if not checkpoint.exists():  # resumed from elsewhere with nothing left to train: keep a checkpoint of our own
        save()

    staging = ctx.staging(job.name)
    rows, cumulative = [], 0.0
    for record in trainer.history[:epochs]:
        cumulative += record.epoch_seconds
        rows.append(_record_row(job, record, cumulative))
    columns = list(CURVE_COLUMNS) + METRIC_COLUMNS[job.task]
    pd.DataFrame(rows, columns=columns).to_csv(staging / "curve.csv", index=False)

    model_file = staging / "model.pt"
    torch.save(trainer.model.state_dict(), model_file)
    shape = input_shape(job.task, data["size"])
    test_metrics = trainer.evaluate(split.x_test, split.y_test) if diverged_at is None else {}
    stats = {
        "task": job.task,
        "model": job.model,
        "config": job.model_dump(),
        "params": count_params(trainer.model),
        "macs": count_macs(trainer.model, shape),
        "size_bytes": model_file.stat().st_size,
        "t_load": _median_load_seconds(model_file, job, data["size"], settings.t_test_repeats),
        "t_test": test_latency(trainer.model, split.x_test, repeats=settings.t_test_repeats),
        "status": "diverged" if diverged_at is not None else "completed",
        "diverged_at_epoch": diverged_at,
        "epochs": epochs,
        "epochs_done": trainer.epochs_done,
        "train_seconds": cumulative,
        "test_metrics": {k: float(v) for k, v in test_metrics.items()},
    }
    (staging / "stats.json").write_text(json.dumps(stats, indent=2))
    return {"job": job.name, "status": stats["status"], "epochs_done": trainer.epochs_done}


def gather_jobs(ctx: StageContext, summaries: list[dict]) -> dict:
    """Combine the staged jobs into the stage's outputs, validate them, and publish atomically."""
    from qoeflow.plots import curves_figure

    jobs = [Job.model_validate(item) for item in ctx.items()]
    frames, stats = [], {}
    models_tmp = ctx.temp_output("models")
    models_tmp.mkdir(parents=True)
    for job in jobs:
        staging = ctx.staging(job.name)
        if not (staging / "stats.json").exists():
            raise StageError(f"stage '{ctx.stage}': job '{job.name}' has no staged results; did its item task run?")
        curve = pd.read_csv(staging / "curve.csv")
        if len(curve):
            frames.append(curve)
        stats[job.name] = json.loads((staging / "stats.json").read_text())
        shutil.copy2(staging / "model.pt", models_tmp / f"{job.name}.pt")
    if all(s["status"] == "diverged" for s in stats.values()):
        raise StageError(f"stage '{ctx.stage}': every job diverged ({', '.join(stats)}); nothing to carry on with")

    curves = pd.concat(frames, ignore_index=True)
    write_curves(curves, ctx.temp_output("curves"), ctx.output("curves"), ctx.root)
    write_jobs(stats, ctx.temp_output("jobs"), ctx.output("jobs"), ctx.root)
    figure = curves_figure(curves, title=f"{ctx.dag.name}: training curves")
    figure_tmp = ctx.temp_output("figure")
    figure.savefig(figure_tmp, format="png", dpi=90)

    keep = {f"{job.name}.pt" for job in jobs}
    for stale in ctx.output("checkpoints").glob("*.pt"):
        if stale.name not in keep:
            stale.unlink()
    published = ctx.publish()
    remove_path(ctx.staging())
    diverged = sorted(n for n, s in stats.items() if s["status"] == "diverged")
    return {"outputs": published + [ctx.spec.outs["checkpoints"].path], "diverged": diverged}
