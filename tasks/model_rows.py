"""What the compression and multi-exit stages share: the trained model a job left, its data, and the
catalog row of a model variant (accuracy, size, MACs, measured latency) with its model file staged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from qoeflow.params import Job
from tasks.context import StageContext, StageError
from tasks.training_loop import job_split

LATENCY_BATCHES = (1, 64)


class NotTrained(StageError):
    """A chosen job left no trained model (it diverged, or the plan left it out): skipped, not fatal."""


def trained_job(ctx: StageContext, name: str, weights: str = "continued_models"):
    """The job `name` of params train.jobs, its trained model (eval mode, CPU) and its data split."""
    import torch

    from qoeflow.models import build_model

    job = next((j for j in ctx.params.train.jobs if j.name == name), None)
    if job is None:
        raise StageError(f"stage '{ctx.stage}': '{name}' is not a training job")
    file = ctx.load(weights) / f"{name}.pt"
    if not file.is_file():
        raise NotTrained(f"stage '{ctx.stage}': job '{name}' has no trained model in "
                         f"{file.parent.relative_to(ctx.root)} (it diverged, or the plan left it out)")
    split = job_split(ctx.params.train, job.task)
    model = build_model(job.task, job.model, size=split.x_train.shape[-1])
    model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    return job, model.eval(), split


def chosen_model(ctx: StageContext, name: str):
    """A chosen job's trained convolutional model and data, on this worker's share of threads; raises
    `NotTrained` for a job without a model and refuses one without a convolution."""
    import torch

    torch.set_num_threads(ctx.params.train.threads_per_job)
    job, model, split = trained_job(ctx, name)
    require_convolutions(ctx, job, model)
    return job, model, split


def skipped(ctx: StageContext, name: str, reason: NotTrained) -> dict:
    """The item summary of a job without a trained model: noted for the run's summary, nothing else."""
    ctx.note(f"{reason}; skipped")
    return {"job": name, "skipped": str(reason), "notes": list(ctx.notes)}


def gathered_jobs(ctx: StageContext, names: list[str], summaries: list[dict]) -> dict[str, dict]:
    """The item summaries of the jobs that produced rows; their notes kept; refused when none did."""
    by_job = {s["job"]: s for s in summaries}
    for n in names:
        ctx.notes.extend(note for note in by_job.get(n, {}).get("notes", []) if note not in ctx.notes)
    done = {n: by_job[n] for n in names if "rows" in by_job.get(n, {})}
    if not done:
        raise StageError(f"stage '{ctx.stage}': none of the jobs {names} has a trained model to work on")
    return done


def require_convolutions(ctx: StageContext, job: Job, model) -> None:
    """Refuse a model with no convolution (the MLP): there is nothing to prune, scale or decompose."""
    from torch import nn

    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise StageError(f"stage '{ctx.stage}': job '{job.name}' is a {job.task} {job.model} with no convolution; "
                         f"choose convolutional jobs in params {ctx.stage}.jobs")


def structure(model) -> tuple[int, int]:
    """(layers with weights, convolution filters) of a module."""
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return len(layers), sum(m.out_channels for m in layers if isinstance(m, nn.Conv2d))


def variant_row(ctx: StageContext, *, variant: str, job: Job, method: str, model, split, folder: str,
                forward: Callable | None = None, filters: int | None = None, seconds: float = 0.2,
                accuracy: float | None = None, macs: int | None = None, latency_b1_ms: float | None = None,
                sample=None, **extra: Any) -> dict:
    """Stage `model` as `<variant>.pt` (architecture + weights) and return its catalog row: test accuracy,
    parameters, MACs and median latency at batch 1 and 64 of `forward` (default: the model), on this machine,
    timed on random inputs or on the first images of `sample` (inputs decide where an early exit stops).
    `accuracy`, `macs` and `latency_b1_ms` replace what is measured here when the caller knows better
    (an early-exit policy's are means over the test inputs)."""
    import torch

    from qoeflow.lifecycle.finetune import accuracy as score
    from qoeflow.models import count_macs, count_params
    from qoeflow.models.arch import save_model
    from qoeflow.models.latency import measure

    fn = forward or model
    model.eval()
    file = ctx.staging(folder) / f"{variant}.pt"
    size = save_model(model, file, {"variant": variant, "job": job.name, "method": method, **extra})
    shape = tuple(split.x_test.shape[1:])
    latency = {b: measure(fn, torch.rand((b, *shape)) if sample is None else sample[:b], min_run_time=seconds)
               for b in LATENCY_BATCHES}
    n_layers, n_filters = structure(model)
    return {
        "variant": variant, "family": job.task, "source_job": job.name, "method": method,
        "accuracy": score(fn, split.x_test, split.y_test) if accuracy is None else accuracy,
        "params": count_params(model), "macs": count_macs(model, shape, forward=fn) if macs is None else macs,
        "size_bytes": size, "latency_b64_ms": latency[64].median_ms,
        "latency_b1_ms": latency[1].median_ms if latency_b1_ms is None else latency_b1_ms,
        "n_layers": n_layers, "n_filters": n_filters if filters is None else filters,
        "path": f"{ctx.spec.outs[_models_output(ctx)].path}/{variant}.pt", "device": latency[1].device,
        "_file": file.relative_to(ctx.root).as_posix(),  # relative: the gather may run in another folder
    }


def _models_output(ctx: StageContext) -> str:
    from tasks import REGISTRY
    from tasks.catalog import ModelFiles, kind_of

    return next(n for n in REGISTRY[ctx.spec.task].outputs if isinstance(kind_of(n), ModelFiles))


def staged_files(rows: list[dict], root: Path) -> dict[str, bytes]:
    """File name -> bytes of the model files the rows staged in the project at `root`."""
    return {Path(r["_file"]).name: (root / r["_file"]).read_bytes() for r in rows}


def catalog_rows(rows: list[dict]) -> list[dict]:
    """The rows in the catalog's column order, without their staging bookkeeping."""
    from qoeflow.validate import MODEL_CATALOG_COLUMNS

    return [{c: r[c] for c in MODEL_CATALOG_COLUMNS} for r in rows]
