"""Stage `multiexit`: exits along the chosen trained ResNets, trained together (thesis 004 ch. 5 §5.2),
one `foreach` item per job of params `multiexit.jobs`; then the one model catalog.

Per job: a multi-exit network with exits after the params' backbone stages (the last is the base
classifier), trained on Σ w_i·L_i (cross-entropy, or focal loss), thresholds calibrated on validation to
a target exit precision; a catalog row per exit (the network cut there) and for the early-exit policy
(mean MACs and batch-1 latency over the test inputs, as they exit). The gather step writes the exits
document, the model files, a figure, and `data/models/catalog.csv`: the compress stage's variants and
these rows, one catalog that the later stages read.
"""

from __future__ import annotations

import pandas as pd

from tasks.context import StageContext, StageError, remove_path
from tasks.model_rows import (NotTrained, catalog_rows, chosen_model, gathered_jobs, skipped, staged_files,
                               variant_row)


def run_job(ctx: StageContext, name: str) -> dict:
    """The multi-exit network of one job: train, calibrate, measure; catalog rows and details."""
    import torch

    from qoeflow.lifecycle import multiexit as mx
    from qoeflow.lifecycle.finetune import accuracy
    from qoeflow.models.exits import EarlyExitModel, ExitModel

    p = ctx.params.multiexit
    try:
        job, base, split = chosen_model(ctx, name)
    except NotTrained as reason:
        return skipped(ctx, name, reason)
    shape = tuple(split.x_test.shape[1:])
    try:
        net = mx.MultiExitNet(base, p.depths, input_shape=shape, aggregate=p.aggregate, head_width=p.head_width)
    except ValueError as exc:
        raise StageError(f"stage '{ctx.stage}': job '{name}' ({job.model}): {exc}") from None
    if ctx.progress:
        ctx.progress(name, 0, p.epochs + 2, "training the exits")

    def epoch_done(epoch: int, loss: float) -> None:
        ctx.log(f"multiexit[{name}] epoch {epoch}/{p.epochs} loss {loss:.4f}")
        if ctx.progress:
            ctx.progress(name, epoch, p.epochs + 2, f"loss {loss:.4f}")

    seconds = mx.timed_fit(net, *split.part("train"), weights=p.weights, gamma=p.focal_gamma, epochs=p.epochs,
                           lr=p.lr, seed=p.seed, on_epoch=epoch_done)
    net.eval()
    thresholds = mx.calibrate_thresholds(mx.all_exit_logits(net, split.x_val), split.y_val, p.target_precision)
    test_logits = mx.all_exit_logits(net, split.x_test)
    if ctx.progress:
        ctx.progress(name, p.epochs + 1, p.epochs + 2, "measuring every exit and the policy")
    rows = [variant_row(ctx, variant=f"{name}.exit-{i + 1}", job=job, method="exit", model=ExitModel(net, i),
                        split=split, folder=name, seconds=p.latency_seconds, exit=i + 1)
            for i in range(net.n_exits)]
    report = mx.early_exit_report(net, base, split.x_test, split.y_test, thresholds, input_shape=shape,
                                  min_run_time=p.latency_seconds)
    policy = EarlyExitModel(net, thresholds)
    rows.append(variant_row(ctx, variant=f"{name}.early-exit", job=job, method="early-exit", model=policy,
                            split=split, folder=name, seconds=p.latency_seconds, accuracy=report.accuracy,
                            macs=round(report.mean_macs), latency_b1_ms=report.mean_ms,
                            sample=split.x_test, thresholds=thresholds))
    _, where = mx.route(test_logits, thresholds)
    correct = torch.stack([logits.argmax(1) == split.y_test for logits in test_logits])
    exits = []
    for e in range(net.n_exits):
        leaving = where == e
        exits.append({"depth": p.depths[e], "threshold": thresholds[e], "weight": p.weights[e],
                      "test_accuracy": float(correct[e].double().mean()),
                      "share": float(leaving.double().mean()),
                      "precision": float(correct[e][leaving].double().mean()) if leaving.any() else None,
                      "macs": int(report.path_macs[e]), "latency_b1_ms": report.path_ms[e]})
    details = {
        "family": job.task, "model": job.model, "aggregate": p.aggregate, "focal_gamma": p.focal_gamma,
        "target_precision": p.target_precision, "train_seconds": seconds, "exits": exits,
        "base_accuracy": accuracy(base, split.x_test, split.y_test),
        "early_exit": {"accuracy": report.accuracy, "full_accuracy": report.full_accuracy,
                       "mean_macs": report.mean_macs, "full_macs": report.full_macs, "mean_ms": report.mean_ms,
                       "full_ms": report.full_ms, "macs_reduction": report.macs_reduction,
                       "latency_reduction": report.latency_reduction, "accuracy_drop_points": report.accuracy_drop},
    }
    if ctx.progress:
        ctx.progress(name, p.epochs + 2, p.epochs + 2, "done")
    return {"job": name, "rows": rows, "details": details, "notes": list(ctx.notes)}


def gather(ctx: StageContext, summaries: list[dict]) -> dict:
    """The exits document, the model files and figure, and the model catalog (compress's variants and ours)."""
    from qoeflow.plots import exits_figure

    names = list(ctx.params.multiexit.jobs)
    by_job = gathered_jobs(ctx, names, summaries)
    names = list(by_job)
    rows = [r for n in names for r in by_job[n]["rows"]]
    details = {n: by_job[n]["details"] for n in names}
    ours = pd.DataFrame(catalog_rows(rows))
    catalog = pd.concat([ctx.load("variants"), ours], ignore_index=True)
    ctx.save("multiexit_models", staged_files(rows, ctx.root))
    ctx.save("exits", {"jobs": details})
    ctx.save("exits_figure", exits_figure(details))
    ctx.save("model_catalog", catalog)
    published = ctx.publish()
    remove_path(ctx.staging())
    return {"outputs": published, "notes": ctx.notes}
