"""Stage `bench`: every variant of the model catalog at every precision and batch size on one device
(issue: inference benchmark), then convolutional caching on generated video. One task, measuring one thing
after another, so that no two measurements share the machine. Params `bench`: the device (`auto` takes CUDA
where present), the precisions (default: the device's own list, qoeflow/models/harness.py), batch sizes, CPU
threads and timing per measurement; `bench.caching`: the trained crowd jobs, the clips and the cache's knobs.
Writes the validated tables `bench.csv` (Pareto front of batch-1 latency against accuracy marked per device
and family) and `caching.csv` (one row per crowd job and clip), and their figures. `qoeflow bench` measures
the catalog the same way without a run (`measure`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from qoeflow.params import Params
from tasks.context import StageContext, StageError

if TYPE_CHECKING:
    import pandas as pd


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


def measure_caching(ctx: StageContext) -> pd.DataFrame:
    """One row per trained crowd job of params bench.caching.jobs and clip: full recomputation, the histogram
    cache and the pixel-difference peer on the CPU (qoeflow/models/caching_bench.py). A job the plan left
    untrained is noted and skipped."""
    import pandas as pd
    import torch

    from qoeflow.data.video import CROWD_CLIPS, crowd_clip
    from qoeflow.models.caching_bench import CacheSettings, evaluate_clip
    from tasks.model_rows import NotTrained, trained_job

    settings = ctx.params.bench.caching
    unknown = [name for name in settings.clips if name not in CROWD_CLIPS]
    if unknown:
        raise StageError(f"stage '{ctx.stage}': params bench.caching.clips: unknown clip(s) {unknown} "
                         f"(known: {', '.join(CROWD_CLIPS)})")
    torch.set_num_threads(ctx.params.bench.threads)
    knobs = CacheSettings(1, tuple(settings.grid), settings.bins, settings.threshold, settings.pixel_threshold,
                          settings.max_age)
    clips = [crowd_clip(name, settings.frames, settings.height, settings.width, CROWD_CLIPS[name], settings.seed)
             for name in settings.clips]
    rows = []
    for name in settings.jobs:
        try:
            job, model, _ = trained_job(ctx, name)
        except NotTrained as reason:
            ctx.note(f"caching: {reason}; skipped")
            continue
        if job.model not in settings.n_convs:
            raise StageError(f"stage '{ctx.stage}': params bench.caching.n_convs has no entry for model "
                             f"'{job.model}' (job {name})")
        for clip in clips:
            ctx.log(f"bench: caching {name} on clip {clip.name}")
            try:
                row = evaluate_clip(model, clip.frames, clip.clean, clip.counts(),
                                    replace(knobs, n_convs=settings.n_convs[job.model]))
            except ValueError as exc:
                raise StageError(f"stage '{ctx.stage}': params bench.caching on {name}: {exc}") from None
            rows.append({"job": name, "model": job.model, "clip": clip.name, "grid": "x".join(map(str, knobs.grid)),
                         "bins": knobs.bins, "threshold": knobs.threshold, "pixel_threshold": knobs.pixel_threshold,
                         "max_age": knobs.max_age, **row, "device": "cpu", "threads": torch.get_num_threads()})
    from qoeflow.validate import CACHING_COLUMNS

    return pd.DataFrame(rows, columns=CACHING_COLUMNS)


def run(ctx: StageContext) -> dict:
    """Measure the catalog; a precision the device cannot run is noted and left out of the table."""
    from qoeflow.plots import bench_figure, caching_figure

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
    caching = measure_caching(ctx)
    if caching.empty:
        raise StageError(f"stage '{ctx.stage}': no crowd job of params bench.caching.jobs has a trained model")
    ctx.save("caching", caching)
    ctx.save("caching_figure", caching_figure(caching))
    return {"outputs": ctx.publish(), "notes": ctx.notes, "rows": len(table), "device": str(device),
            "caching_rows": len(caching)}
