"""Stage `train`: the training jobs of `params.yaml`, one `foreach` item each (paper 000 §II-A).

Each job runs the checkpointed training loop (tasks/training_loop.py): checkpoints after every epoch in
`data/train/checkpoints/JOB.pt` (persisted across runs), resumes when asked for more epochs with
otherwise unchanged settings; a diverged job is recorded and the others carry on. An item returns its
curve and stats; the gather step writes `curves.csv`, `jobs.json`, the model files and a figure.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pandas as pd

from qoeflow.families import FAMILIES, metrics_of
from qoeflow.params import Job
from qoeflow.validate import CURVE_COLUMNS
from tasks.context import TMP, StageContext, StageError, remove_path
from tasks.training_loop import data_settings, job_split, train_to


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


def check_budget(ctx: StageContext) -> None:
    """Refuse, before any job trains, an `allocate.budget_seconds` below what the probes would cost (each
    job's epoch timed from a few training steps)."""
    budget = ctx.params.allocate.budget_seconds
    if budget is None:
        return
    import torch

    from qoeflow.lifecycle.training import JobSpec, TrainingJob, estimate_epoch_seconds

    settings, probe = ctx.params.train, ctx.params.allocate.probe_epochs
    threads = torch.get_num_threads()
    try:
        costs = {}
        for item in ctx.items():
            job = Job.model_validate(item)
            trainer = TrainingJob(JobSpec(**job.model_dump(exclude={"max_epochs"})), job_split(settings, job.task),
                                  threads=settings.threads_per_job)
            costs[job.name] = probe * estimate_epoch_seconds(trainer)
    finally:
        torch.set_num_threads(threads)
    total = sum(costs.values())
    if budget < total:
        each = ", ".join(f"{name} {seconds:.3g} s" for name, seconds in costs.items())
        raise StageError(f"allocate.budget_seconds ({budget:.6g} s) is less than the probes of {probe} epochs would "
                         f"cost: about {total:.3g} s ({each}; timed from a few training steps). Raise the budget or "
                         f"lower allocate.probe_epochs.")


def run_job(ctx: StageContext, item: dict) -> dict:
    """Train one job's probe, `allocate.probe_epochs` epochs (resuming when possible): what the plan starts from."""
    job = Job.model_validate(item)
    return train_job(ctx, job, ctx.params.allocate.probe_epochs, ctx.output("checkpoints") / f"{job.name}.pt")


def curve_rows(job: Job, trainer, epochs: int) -> list[dict]:
    """The curves.csv rows of a job's first `epochs` epochs (cumulative seconds from its first epoch)."""
    rows, cumulative = [], 0.0
    for record in trainer.history[:epochs]:
        cumulative += record.epoch_seconds
        rows.append({"job": job.name, "task": job.task, "model": job.model, "epoch": record.epoch,
                     "train_loss": record.train_loss, "val_loss": record.val_loss,
                     "epoch_seconds": record.epoch_seconds, "cumulative_seconds": cumulative,
                     **{m: record.metrics[m] for m in metrics_of(job.task)}})
    return rows


def train_job(ctx: StageContext, job: Job, epochs: int, checkpoint: Path, resume_from: Path | None = None) -> dict:
    """Train `job` to `epochs` with the checkpointed loop; stage its model file; return its curve rows and
    stats (what `jobs.json` holds for it) for the gather step."""
    import torch

    from qoeflow.lifecycle.training import JobSpec, test_latency, untrained_validation
    from qoeflow.models import count_macs, count_params, input_shape

    settings = ctx.params.train

    def progress(record, trainer) -> None:
        if ctx.progress:
            ctx.progress(job.name, record.epoch, epochs, f"loss {record.train_loss:.4f}")

    def start(done: int) -> None:  # the clock starts before the first epoch: its end gives a first estimate
        if ctx.progress and done < epochs:
            ctx.progress(job.name, done, epochs, "starting")

    outcome = train_to(job, settings, epochs, checkpoint, ctx.root / TMP / "checkpoints", resume_from=resume_from,
                       log=ctx.log, on_start=start, on_epoch=progress, label=ctx.stage)
    ctx.notes.extend(outcome.notes)
    trainer, diverged_at = outcome.trainer, outcome.diverged_at
    rows = curve_rows(job, trainer, epochs)
    cumulative = rows[-1]["cumulative_seconds"] if rows else 0.0

    model_file = ctx.staging(job.name) / "model.pt"
    torch.save(trainer.model.state_dict(), model_file)
    data = data_settings(settings, job.task)
    split = job_split(settings, job.task)
    test_metrics = trainer.evaluate(split.x_test, split.y_test) if diverged_at is None else {}
    stats = {
        "task": job.task,
        "model": job.model,
        "config": job.model_dump(),
        "params": count_params(trainer.model),
        "macs": count_macs(trainer.model, input_shape(job.task, data["size"])),
        "size_bytes": model_file.stat().st_size,
        "t_load": _median_load_seconds(model_file, job, data["size"], settings.t_test_repeats),
        "t_test": test_latency(trainer.model, split.x_test, repeats=settings.t_test_repeats),
        "status": "diverged" if diverged_at is not None else "completed",
        "diverged_at_epoch": diverged_at,
        "epochs": epochs,
        "epochs_done": trainer.epochs_done,
        "train_seconds": cumulative,
        "test_metrics": {k: float(v) for k, v in test_metrics.items()},
        "epoch0": untrained_validation(JobSpec(**job.model_dump(exclude={"max_epochs"})), split),
    }
    return {"job": job.name, "status": stats["status"], "epochs_done": trainer.epochs_done, "curve": rows,
            "stats": stats, "model_file": model_file.relative_to(ctx.root).as_posix(), "notes": list(ctx.notes)}


def gathered(ctx: StageContext, summaries: list[dict], names: list[str]) -> tuple[pd.DataFrame, dict, dict]:
    """The curves table, the stats and the staged model files of the jobs `names`, from their item summaries."""
    by_job = {s["job"]: s for s in summaries if "stats" in s}
    missing = [n for n in names if n not in by_job]
    if missing:
        raise StageError(f"stage '{ctx.stage}': job(s) {missing} have no results; did their item tasks run?")
    for name in names:
        ctx.notes.extend(n for n in by_job[name].get("notes", []) if n not in ctx.notes)
    frames = [pd.DataFrame(by_job[n]["curve"]) for n in names if by_job[n]["curve"]]
    present = {by_job[n]["stats"]["task"] for n in names}
    metrics = [m for f in FAMILIES.values() if f.name in present for m in f.metric_names]
    columns = list(CURVE_COLUMNS) + list(dict.fromkeys(metrics))  # families may share a metric
    curves = pd.concat(frames, ignore_index=True).reindex(columns=columns) if frames else pd.DataFrame(columns=columns)
    return curves, {n: by_job[n]["stats"] for n in names}, {n: ctx.root / by_job[n]["model_file"] for n in names}


def gather_jobs(ctx: StageContext, summaries: list[dict]) -> dict:
    """Combine the jobs into the stage's outputs, checked by the catalog, and publish them atomically."""
    from qoeflow.plots import curves_figure

    names = [Job.model_validate(item).name for item in ctx.items()]
    curves, stats, model_files = gathered(ctx, summaries, names)
    if all(s["status"] == "diverged" for s in stats.values()):
        raise StageError(f"stage '{ctx.stage}': every job diverged ({', '.join(stats)}); nothing to carry on with")
    ctx.save("curves", curves)
    ctx.save("jobs", stats)
    ctx.save("models", model_files)
    ctx.save("figure", curves_figure(curves, title=f"{ctx.dag.name}: training curves"))
    keep = {f"{name}.pt" for name in names}
    for stale in ctx.output("checkpoints").glob("*.pt"):
        if stale.name not in keep:
            stale.unlink()
    published = ctx.publish()
    remove_path(ctx.staging())
    diverged = sorted(n for n, s in stats.items() if s["status"] == "diverged")
    return {"outputs": published + [ctx.spec.outs["checkpoints"].path], "diverged": diverged, "notes": ctx.notes}
