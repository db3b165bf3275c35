"""Stage `forecast`: each job's probe curves predicted to its max epochs, with bands (paper 000 §III-B).
The methods are backtested later, on the continued curves (the `continue` stage): a probe is too short."""

from __future__ import annotations

import pandas as pd

from qoeflow.lifecycle.forecasting import forecast_table, with_start
from tasks.context import StageContext, StageError


def forecasts_figure(curves: pd.DataFrame, forecasts: pd.DataFrame, metrics: list[str]):
    """Observed curves with their forecast and band, one panel per metric (the analogue of Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for job, observed in curves.dropna(subset=[metric]).groupby("job", sort=True):
            line = ax.plot(observed["epoch"], observed[metric], marker=".", label=job)[0]
            pred = forecasts[(forecasts["job"] == job) & (forecasts["metric"] == metric)]
            if len(pred):
                ax.plot(pred["epoch"], pred["predicted"], "--", color=line.get_color())
                ax.fill_between(pred["epoch"], pred["lower"], pred["upper"], color=line.get_color(), alpha=0.15)
        ax.set(title=f"{metric}: observed (solid), forecast (dashed) and band", xlabel="epoch", ylabel=metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(ctx: StageContext) -> dict:
    """Forecast every completed job's metrics to its max epochs."""
    settings = ctx.params.forecast
    curves = ctx.load("curves")
    jobs = ctx.load("jobs")
    max_epochs = {job.name: job.max_epochs for job in ctx.params.train.jobs}
    completed = [name for name, info in jobs.items() if info["status"] == "completed"]
    missing = sorted(set(completed) - set(max_epochs))
    if missing:
        raise StageError(f"jobs {missing} of jobs.json are not in params.yaml train.jobs")
    forecasts = []
    for task, metrics in settings.metrics.items():
        rows = curves[(curves["task"] == task) & curves["job"].isin(completed)]
        if rows.empty:
            continue
        rows = with_start(rows, {name: jobs[name].get("epoch0") for name in completed})
        for metric in metrics:
            ctx.log(f"forecast: {task} {metric} ({rows['job'].nunique()} jobs, method {settings.method})")
            try:
                forecasts.append(forecast_table(rows, metric, max_epochs, method=settings.method, seed=settings.seed))
            except ValueError as exc:
                raise StageError(f"forecast of {task} '{metric}': {exc}") from None
    if not forecasts:
        raise StageError("no completed job to forecast")
    table = pd.concat(forecasts, ignore_index=True)
    ctx.save("forecasts", table)
    metrics = sorted(set(table["metric"]), key=lambda m: (m != "val_loss", m))
    ctx.save("forecast_figure", forecasts_figure(curves[curves["job"].isin(completed)], table, metrics))
    return {"outputs": ctx.publish()}
