"""Figures built from artifacts (no files here: stages save them)."""

from __future__ import annotations

import pandas as pd

from qoeflow.families import metrics_of


def curves_figure(curves: pd.DataFrame, title: str = "Training curves"):
    """One row per task family: validation loss and the task's first metric against epoch, per job."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(curves["task"].unique())
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.6 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        rows = curves[curves["task"] == task]
        metric = metrics_of(task)[0]
        for job, group in rows.groupby("job", sort=True):
            row[0].plot(group["epoch"], group["val_loss"], marker=".", label=job)
            row[1].plot(group["epoch"], group[metric], marker=".", label=job)
        row[0].set(title=f"{task}: validation loss", xlabel="epoch", ylabel="val_loss", yscale="log")
        row[1].set(title=f"{task}: validation {metric}", xlabel="epoch", ylabel=metric)
        row[1].legend(fontsize=8)
        for ax in row:
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
