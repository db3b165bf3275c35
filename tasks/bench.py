"""Stage `bench`: every variant of the model catalog at every precision and batch size on one device
(issue: inference benchmark). One task, measuring variant after variant, so that no two measurements share
the machine. Params `bench`: the device (`auto` takes CUDA where present), the precisions (default: the
device's own list, qoeflow/models/harness.py), batch sizes, CPU threads and timing per measurement.
Writes the validated table `bench.csv` (Pareto front of batch-1 latency against accuracy marked per device
and family) and its figure."""

from __future__ import annotations

from tasks.context import StageContext, StageError


def run(ctx: StageContext) -> dict:
    """Measure the catalog; a precision the device cannot run is noted and left out of the table."""
    import torch

    from qoeflow.models import harness
    from qoeflow.models.benchmark import bench_catalog
    from qoeflow.plots import bench_figure
    from tasks.training_loop import job_split

    p = ctx.params.bench
    try:
        device = harness.resolve_device(p.device)
    except ValueError as exc:
        raise StageError(f"stage '{ctx.stage}': params bench.device: {exc}") from None
    torch.set_num_threads(p.threads)
    catalog = ctx.load("model_catalog")
    precisions = list(p.precisions or harness.default_precisions(device))

    def test_data(family: str):
        split = job_split(ctx.params.train, family)
        return split.x_test, split.y_test

    def progress(done: int, total: int, variant: str) -> None:
        if ctx.progress:
            ctx.progress("bench", done, total, variant)
        if done < total:
            ctx.log(f"bench: {variant} ({done + 1}/{total}) at {', '.join(precisions)} on {device}")

    table, failures = bench_catalog(catalog, ctx.root, test_data, device=device, precisions=precisions,
                                    batches=list(p.batches), min_run_time=p.min_run_time, progress=progress)
    for failure in failures:
        ctx.note(f"bench: {failure}")
    if table.empty:
        raise StageError(f"stage '{ctx.stage}': no variant ran at any of {precisions} on {device}")
    ctx.save("bench", table)
    ctx.save("bench_figure", bench_figure(table))
    return {"outputs": ctx.publish(), "notes": ctx.notes, "rows": len(table), "device": str(device)}
