"""Stage `bench`: every variant of the model catalog at every precision and batch size on one device
(issue: inference benchmark). One task, measuring variant after variant, so that no two measurements share
the machine. Params `bench`: the device (`auto` takes CUDA where present), the precisions (default: the
device's own list, qoeflow/models/harness.py), batch sizes, CPU threads and timing per measurement.
Writes the validated table `bench.csv` (Pareto front of batch-1 latency against accuracy marked per device
and family) and its figure. `qoeflow bench` measures the same way without a run (`measure`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from qoeflow.params import Params
from tasks.context import StageContext, StageError


def measure(params: Params, catalog, root: Path, progress: Callable[[int, int, str], None] | None = None):
    """(table, failures, device): the catalog's variants (model files under `root`) measured as params
    `bench` say, on each family's test split of params `train`. Raises ValueError for a device this
    machine lacks."""
    import torch

    from qoeflow.models import harness
    from qoeflow.models.benchmark import bench_catalog
    from tasks.training_loop import job_split

    settings = params.bench
    device = harness.resolve_device(settings.device)
    torch.set_num_threads(settings.threads)

    def test_data(family: str):
        split = job_split(params.train, family)
        return split.x_test, split.y_test

    table, failures = bench_catalog(catalog, root, test_data, device=device,
                                    precisions=list(settings.precisions or harness.default_precisions(device)),
                                    batches=list(settings.batches), min_run_time=settings.min_run_time,
                                    progress=progress)
    return table, failures, device


def run(ctx: StageContext) -> dict:
    """Measure the catalog; a precision the device cannot run is noted and left out of the table."""
    from qoeflow.plots import bench_figure

    catalog = ctx.load("model_catalog")

    def progress(done: int, total: int, variant: str) -> None:
        if ctx.progress:
            ctx.progress("bench", done, total, variant)
        if done < total:
            ctx.log(f"bench: {variant} ({done + 1}/{total})")

    try:
        table, failures, device = measure(ctx.params, catalog, ctx.root, progress)
    except ValueError as exc:
        raise StageError(f"stage '{ctx.stage}': params bench.device: {exc}") from None
    for failure in failures:
        ctx.note(f"bench: {failure}")
    if table.empty:
        raise StageError(f"stage '{ctx.stage}': no variant ran at any precision on {device}")
    ctx.save("bench", table)
    ctx.save("bench_figure", bench_figure(table))
    return {"outputs": ctx.publish(), "notes": ctx.notes, "rows": len(table), "device": str(device)}
