"""Stage `compress`: the chosen trained models made smaller and faster, one `foreach` item per job of
params `compress.jobs` (papers 002 §III-B and 004 ch. 3–4).

Per job: the base model; DMS (filters reordered by ℓ1 norm, one stored model run at every level of its
DMS table); D-Pruner iterations within the accuracy budget; Torch-Pruning's ℓ1 pruning at the MACs of
D-Pruner's smallest network with the same fine-tuning; Tucker-2. Every variant is a catalog row with
its model file; the gather step writes the variants table, the model files, the details (DMS table and
Eq. 2 against measurement, D-Pruner iterations, Tucker-2 layers) and a figure.
"""

from __future__ import annotations

import math
import time

import pandas as pd

from tasks.context import StageContext, remove_path
from tasks.model_rows import (NotTrained, catalog_rows, chosen_model, gathered_jobs, skipped, staged_files,
                               variant_row)

STEPS = ("base", "dms", "d-pruner", "magnitude", "tucker-2")


def run_job(ctx: StageContext, name: str) -> dict:
    """Every compressed variant of one job: rows, staged model files and details."""
    from qoeflow.lifecycle import decomposition, dms, pruning

    settings = ctx.params.compress
    try:
        job, base, split = chosen_model(ctx, name)
    except NotTrained as reason:
        return skipped(ctx, name, reason)
    train, val, test = split.part("train"), split.part("val"), split.part("test")
    shape = tuple(split.x_test.shape[1:])
    timing = settings.latency_seconds
    rows, details, seconds = [], {"family": job.task, "model": job.model}, {}

    def step(i: int, what: str) -> float:
        if ctx.progress:
            ctx.progress(name, i, len(STEPS), what)
        ctx.log(f"compress[{name}]: {what}")
        return time.perf_counter()

    def row(variant: str, method: str, model, **kwargs) -> dict:
        rows.append(variant_row(ctx, variant=f"{name}.{variant}", job=job, method=method, model=model, split=split,
                                folder=name, seconds=timing, **kwargs))
        return rows[-1]

    start = step(0, "base model")
    row("base", "base", base)
    seconds["base"] = time.perf_counter() - start

    start = step(1, "DMS: reorder filters, build the table, measure every level")
    net, table = dms.make_dms(base, *val, saving=settings.dms.saving, base_factor=settings.dms.base_factor,
                              min_factor=settings.dms.min_factor, round_to=settings.dms.round_to)
    costs = dms.level_costs(net, shape, latency=True, min_run_time=timing)
    for cost in costs:
        row(f"dms-L{cost.level}", "dms", dms.DMSLevel(net, cost.level), filters=_dms_filters(net, table, cost.level),
            level=cost.level)
    details["dms"] = {
        "base_accuracy": table.base_accuracy, "target_saving": table.target_saving,
        "table": [{"group": e.group, "factor": e.factor, "active": e.active, "width": e.width,
                   "sensitivity": e.sensitivity, "saving": e.saving} for e in table.entries],
        "levels": [{"level": c.level, "predicted_macs": c.predicted_macs, "counted_macs": c.counted_macs,
                    "latency_b1_ms": c.latency_ms[1], "latency_b64_ms": c.latency_ms[64]} for c in costs],
    }
    seconds["dms"] = time.perf_counter() - start

    start = step(2, "D-Pruner: masking blocks, removal probabilities, prune, fine-tune")
    p = settings.dpruner
    result = pruning.d_pruner(base, train, val, test=test, ratio=p.ratio, threshold=p.threshold,
                              accuracy_budget=p.accuracy_budget, block_epochs=p.block_epochs, net_epochs=p.net_epochs,
                              finetune_epochs=p.finetune_epochs, max_iterations=p.max_iterations,
                              round_to=p.round_to, lr=settings.lr, seed=settings.seed, latency_min_run_time=timing)
    kept = [it for it in result.iterations[1:] if it.accepted]
    for it in kept:
        row(f"dpruner-{it.index}", "d-pruner", it.model, accuracy=it.test_accuracy, iteration=it.index)
    details["dpruner"] = {"stopped": result.stopped, "iterations": [_iteration(it) for it in result.iterations]}
    seconds["d-pruner"] = time.perf_counter() - start

    start = step(3, "Torch-Pruning ℓ1 at D-Pruner's MACs")
    if kept:
        baseline = pruning.magnitude_like(result, kept[-1], train, val, test=test, round_to=p.round_to,
                                          lr=settings.lr, seed=settings.seed, latency_min_run_time=timing)
        pruned = baseline.iterations[-1]
        row("l1-prune", "torch-pruning-l1", pruned.model, accuracy=pruned.test_accuracy)
        details["magnitude"] = {"target_macs": kept[-1].macs, **_iteration(pruned),
                                "ratio": baseline.settings["ratio"], "macs_error": baseline.settings["macs_error"]}
    else:
        ctx.note(f"compress[{name}]: D-Pruner kept no iteration within the accuracy budget; no ℓ1 baseline")
    seconds["magnitude"] = time.perf_counter() - start

    start = step(4, "Tucker-2: ranks by retained variance, fine-tune")
    t = settings.tucker
    tucker, layers = decomposition.decompose(base, t.variance, input_shape=shape)
    before = _accuracy(tucker, val)
    decomposition.fine_tune(tucker, *train, epochs=t.finetune_epochs, lr=settings.lr, seed=settings.seed)
    row("tucker2", "tucker-2", tucker, variance=t.variance)
    details["tucker"] = {"variance": t.variance, "val_accuracy_before_finetune": before,
                         "val_accuracy_after_finetune": _accuracy(tucker, val),
                         "layers": [_layer(layer) for layer in layers]}
    seconds["tucker-2"] = time.perf_counter() - start
    if ctx.progress:
        ctx.progress(name, len(STEPS), len(STEPS), "done")
    details["seconds"] = seconds
    return {"job": name, "rows": rows, "details": details, "notes": list(ctx.notes)}


def _dms_filters(net, table, level: int) -> int:
    """Convolution filters a DMS level runs: a scaled group's producers run only its active channels."""
    from torch import nn

    scaled = {e.group: e.active for e in table.entries[:level]}
    group_of = {layer.name: layer.out_group for layer in table.costs.layers}
    return sum(scaled.get(group_of.get(n), m.out_channels)
               for n, m in net.net.named_modules() if isinstance(m, nn.Conv2d))


def _accuracy(model, data) -> float:
    from qoeflow.lifecycle.finetune import accuracy

    return accuracy(model, *data)


def _iteration(it) -> dict:
    return {"index": it.index, "accepted": it.accepted, "val_accuracy": it.accuracy, "test_accuracy": it.test_accuracy,
            "params": it.params, "macs": it.macs, "filters": it.filters, "epochs": it.epochs,
            "latency_ms": {str(b): ms for b, ms in it.latency_ms.items()}, "seconds": it.seconds}


def _layer(layer) -> dict:
    return {"name": layer.name, "ranks": list(layer.ranks), "retained": list(layer.retained),
            "macs_before": layer.macs_before, "macs_after": layer.macs_after, "decomposed": layer.decomposed,
            "error": layer.error, "error_tensorly": None if math.isnan(layer.error_tensorly) else layer.error_tensorly}


def gather(ctx: StageContext, summaries: list[dict]) -> dict:
    """The variants table, the model files, the details and the figure of every job."""
    from qoeflow.plots import compression_figure

    names = list(ctx.params.compress.jobs)
    by_job = gathered_jobs(ctx, names, summaries)
    names = list(by_job)
    rows = [r for n in names for r in by_job[n]["rows"]]
    table = pd.DataFrame(catalog_rows(rows))
    details = {n: by_job[n]["details"] for n in names}
    ctx.save("variants", table)
    ctx.save("compressed_models", staged_files(rows, ctx.root))
    ctx.save("compression", {"jobs": details})
    ctx.save("compression_figure", compression_figure(table, details))
    published = ctx.publish()
    remove_path(ctx.staging())
    return {"outputs": published, "notes": ctx.notes}
