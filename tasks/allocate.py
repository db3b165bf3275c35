"""Stage `allocate`: split the training budget across the jobs to maximise total QoE (paper 000 §IV-A,
Eqs. 1–2), by every method, with the paper's Fig. 4 as plots."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from qoeflow.lifecycle.allocation import base_cost
from qoeflow.lifecycle.planning import (
    JobOutlook, allocation_document, default_budget, qoe_models, qoe_tables,
)
from qoeflow.lifecycle.qoe import PRESETS
from tasks.context import StageContext, StageError


def outlooks(curves: pd.DataFrame | None, forecasts: pd.DataFrame, jobs: Mapping[str, dict],
             perf_metrics: Mapping[str, Sequence[str]]) -> list[JobOutlook]:
    """Per forecast job: its last observed metrics followed by the forecast to max epochs, and its times.

    Without curves, the value at the base epoch is taken as the first forecast point."""
    result = []
    for name in sorted(forecasts["job"].unique()):
        if name not in jobs:
            raise ValueError(f"forecasts name job '{name}', which jobs.json does not have (jobs: {sorted(jobs)})")
        info = jobs[name]
        base = int(info["epochs_done"])
        if base < 1 or info["train_seconds"] <= 0:
            raise ValueError(f"job '{name}' has no measured training epoch")
        metrics, top = {}, base
        for metric in perf_metrics[info["task"]]:
            pred = forecasts[(forecasts["job"] == name) & (forecasts["metric"] == metric)].sort_values("epoch")
            if pred.empty:
                raise ValueError(f"job '{name}': no forecast of '{metric}' (forecast metrics must include it)")
            if curves is None:
                start = float(pred["predicted"].iloc[0])
            else:
                observed = curves[(curves["job"] == name) & (curves["epoch"] == base)]
                if observed.empty or metric not in observed:
                    raise ValueError(f"job '{name}': no observed '{metric}' at its base epoch {base}")
                start = float(observed[metric].iloc[0])
            metrics[metric] = np.concatenate([[start], pred["predicted"].to_numpy(float)])
            top = int(pred["epoch"].iloc[-1])
        result.append(JobOutlook(name, info["task"], base, top, info["train_seconds"] / base,
                                 float(info["t_load"]), float(info["t_test"]), metrics))
    return result


def forecast_bands(forecasts: pd.DataFrame, outlook: Sequence[JobOutlook]) -> dict[str, dict[str, dict[str, list]]]:
    """Per job and performance metric, the forecast band at epochs base..max (at base: the observed value),
    which the continue stage watches: a job whose realised curve leaves it is re-planned at once."""
    bands = {}
    for o in outlook:
        bands[o.name] = {}
        for metric, values in o.metrics.items():
            pred = forecasts[(forecasts["job"] == o.name) & (forecasts["metric"] == metric)].sort_values("epoch")
            bands[o.name][metric] = {side: [float(values[0])] + pred[side].astype(float).tolist()
                                     for side in ("lower", "upper")}
    return bands


def allocation_figure(doc: Mapping, outlook: list[JobOutlook], perf_metrics: Mapping[str, Sequence[str]]):
    """Fig. 4 of the paper: (a) E_all vs epochs of one job under w1–w3, (b) E_sum vs budget per method,
    (c) per-job E_all of the chosen plan across budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4.5))
    first = outlook[0]
    for preset in PRESETS:
        models, _ = qoe_models(outlook, preset, perf_metrics)
        table = qoe_tables([first], models)[0]
        a.plot(table.epochs, table.qoe, label=preset)
    a.set(title=f"(a) E_all of {first.name} by epochs", xlabel="epochs", ylabel="E_all")
    budgets = [row["budget_seconds"] for row in doc["sweep"]]
    for method in doc["methods"]:
        b.plot(budgets, [row[method]["E_sum"] for row in doc["sweep"]], marker="o", label=method)
    b.axvline(doc["budget_seconds"], color="grey", ls=":", label="budget")
    b.set(title="(b) total QoE against budget", xlabel="budget (s)", ylabel="E_sum")
    chosen = doc["chosen"]
    for job in doc["jobs"]:
        c.plot(budgets, [row[chosen]["qoe"][job] for row in doc["sweep"]], marker=".", label=job)
    c.set(title=f"(c) E_all per job under {chosen}", xlabel="budget (s)", ylabel="E_all")
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(ctx: StageContext) -> dict:
    """Build the QoE tables from the forecasts and solve Eq. (2) with every configured method."""
    settings, qoe = ctx.params.allocate, ctx.params.qoe
    curves = ctx.load("curves")
    jobs = ctx.load("jobs")
    forecasts = ctx.load("forecasts")
    try:
        outlook = outlooks(curves, forecasts, jobs, qoe.metrics)
        models, model_doc = qoe_models(outlook, qoe.weights, qoe.metrics)
        tables = qoe_tables(outlook, models)
        budget = settings.budget_seconds or default_budget(tables, settings.budget_fraction)
        if budget < base_cost(tables):  # only an explicit budget can be (the default adds to what is sunk)
            spent = ", ".join(f"{t.name} {t.cost_seconds[0]:.3g} s" for t in tables)
            raise ValueError(f"allocate.budget_seconds: a budget of {budget:.6g} s is less than the probes already "
                             f"cost ({base_cost(tables):.6g} s: {spent})")
        doc = allocation_document(tables, budget, settings.methods, settings.chosen, model_doc,
                                  seed=settings.seed, sweep_points=settings.sweep_points,
                                  predicted_metrics={o.name: o.metrics for o in outlook})
        for name, bands in forecast_bands(forecasts, outlook).items():
            doc["jobs"][name]["bands"] = bands
    except ValueError as exc:
        raise StageError(f"allocate: {exc}") from None
    ctx.save("allocation", doc)
    ctx.save("allocation_figure", allocation_figure(doc, outlook, qoe.metrics))
    for method, plan in doc["methods"].items():
        ctx.log(f"allocate {method:>8}: E_sum {plan['E_sum']:.4f}, {plan['seconds_used']:.1f} of {budget:.1f} s, "
                f"epochs {plan['epochs']}")
    return {"outputs": ctx.publish(), "chosen": doc["chosen"]}
