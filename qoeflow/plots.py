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


METHOD_MARKERS = {"base": "*", "dms": "o", "d-pruner": "s", "torch-pruning-l1": "x", "tucker-2": "^",
                  "exit": "D", "early-exit": "P"}


def compression_figure(variants: pd.DataFrame, details: dict):
    """Left: test accuracy against MACs of every variant, per job and method. Right: DMS, measured batch-64
    latency of each level relative to level 0 against Eq. (2)'s predicted relative cost (on the diagonal
    when the cost model holds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = {job: f"C{i}" for i, job in enumerate(sorted(variants["source_job"].unique()))}
    for (job, method), rows in variants.groupby(["source_job", "method"], sort=True):
        left.scatter(rows["macs"] / 1e6, rows["accuracy"], color=colours[job], marker=METHOD_MARKERS.get(method, "."),
                     label=f"{job} {method}", s=36)
    left.set(title="variants: test accuracy against cost", xlabel="MACs (millions)", ylabel="test accuracy",
             xscale="log")
    left.legend(fontsize=7, ncol=2)
    for job, info in sorted(details.items()):
        levels = info["dms"]["levels"]
        predicted = [lv["predicted_macs"] / levels[0]["predicted_macs"] for lv in levels]
        measured = [lv["latency_b64_ms"] / levels[0]["latency_b64_ms"] for lv in levels]
        right.plot(predicted, measured, marker="o", color=colours[job], label=job)
    right.plot([0, 1.05], [0, 1.05], color="grey", linestyle="--", linewidth=1, label="measured = Eq. (2)")
    right.set(title="DMS levels: latency against Eq. (2)", xlabel="predicted cost / level 0 (Eq. 2)",
              ylabel="measured batch-64 latency / level 0", xlim=(0, 1.05), ylim=(0, 1.3))
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def bench_figure(bench: pd.DataFrame):
    """Per device and family: median batch-1 latency against test accuracy of every variant at every
    precision, the Pareto front (no variant both faster and more accurate) joined and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = int(bench["batch"].min())
    rows = bench[bench["batch"] == batch]
    panels = sorted(rows.groupby(["device", "family"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    colours = {p: f"C{i}" for i, p in enumerate(sorted(rows["precision"].unique()))}
    for ax, (device, family) in zip(axes[0], panels):
        panel = rows[(rows["device"] == device) & (rows["family"] == family)]
        for (precision, method), group in panel.groupby(["precision", "method"], sort=True):
            ax.scatter(group["p50_ms"], group["accuracy"], color=colours[precision], s=30,
                       marker=METHOD_MARKERS.get(method, "."), label=f"{precision} {method}")
        front = panel[panel["pareto"]].sort_values("p50_ms")
        ax.plot(front["p50_ms"], front["accuracy"], color="black", linewidth=1, drawstyle="steps-post",
                label="Pareto front")
        ax.scatter(front["p50_ms"], front["accuracy"], facecolors="none", edgecolors="black", s=90)
        ax.set(title=f"{family} on {device}", xlabel=f"median latency at batch {batch} (ms)",
               ylabel="test accuracy", xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def caching_figure(caching: pd.DataFrame):
    """Per crowd job and clip: latency per frame of full recomputation, the histogram cache and the
    pixel-difference peer; and each cache's hit rate with its output difference ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r.job}\n{r.clip}" for r in caching.itertuples()]
    x = np.arange(len(caching))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9.0, 1.1 * len(caching) + 4), 4.4))
    for i, (column, name) in enumerate([("full_latency_ms", "full recomputation"), ("latency_ms", "histogram cache"),
                                        ("pixel_latency_ms", "pixel-difference cache")]):
        left.bar(x + (i - 1) * 0.27, caching[column], width=0.27, color=f"C{i}", label=name)
    left.set(ylabel="median latency per frame (ms)", title="Latency per frame")
    for i, (prefix, name) in enumerate([("", "histogram"), ("pixel_", "pixel difference")]):
        right.bar(x + (i - 0.5) * 0.4, caching[prefix + "hit_rate"], width=0.4, color=f"C{i + 1}",
                  label=f"{name}: hit rate")
        right.plot(x + (i - 0.5) * 0.4, caching[prefix + "output_difference"], "kv^"[i + 1], linestyle="none",
                   label=f"{name}: output difference ratio")
    right.set(ylabel="share", ylim=(0, 1.05), title="Hit rate and output difference")
    for ax in (left, right):
        ax.set_xticks(x, labels, fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def exits_figure(details: dict):
    """Per job: each exit's test accuracy against the MACs of the path to it, with the share of test inputs
    that stop there under the calibrated thresholds, and the early-exit policy's mean cost and accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for i, (job, info) in enumerate(sorted(details.items())):
        macs = [e["macs"] / 1e6 for e in info["exits"]]
        ax.plot(macs, [e["test_accuracy"] for e in info["exits"]], marker="D", color=f"C{i}", label=f"{job} exits")
        for e, x in zip(info["exits"], macs):
            ax.annotate(f"{e['share']:.0%}", (x, e["test_accuracy"]), textcoords="offset points", xytext=(4, -12),
                        fontsize=7, color=f"C{i}")
        early = info["early_exit"]
        ax.scatter([early["mean_macs"] / 1e6], [early["accuracy"]], marker="P", s=90, color=f"C{i}",
                   label=f"{job} early exit ({early['macs_reduction']:.1f}× fewer MACs)")
    ax.set(title="multi-exit networks: accuracy per exit (share of test inputs stopping there)",
           xlabel="MACs of the path (millions)", ylabel="test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def bandit_figure(summary: dict, title: str = "Model selection with delayed, noisy QoE feedback"):
    """Left: time-average QoE against rounds, normalised so the Oracle is 1 and the worst arm 0 (paper 001,
    Fig. 3), mean over seeds. Right: cumulative regret at the horizon per method, mean and spread over seeds,
    with each method's wall seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = summary["methods"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    for i, (name, m) in enumerate(methods.items()):
        left.plot(summary["rounds"], m["curve"], color=f"C{i}", label=name)
    left.set(xlabel="round", ylabel="normalised time-average QoE", title=f"{title} ({summary['seeds']} seeds)",
             ylim=(min(0.0, *(min(m["curve"]) for m in methods.values())), 1.05))
    left.legend(fontsize=8)
    names = list(methods)
    means = [methods[n]["regret"]["mean"] for n in names]
    spread = [methods[n]["regret"]["std"] for n in names]
    right.barh(names, means, xerr=spread, color=[f"C{i}" for i in range(len(names))])
    for y, n in enumerate(names):
        right.annotate(f" {methods[n]['seconds']['mean']:.2f} s", (means[y], y), va="center", fontsize=7)
    right.set(xlabel="cumulative regret at the horizon (expected QoE)", title="Regret and wall seconds per seed")
    right.invert_yaxis()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def video_figure(table):
    """Video indexing per clip, from ``video_run.summarise``'s table: query speedup over brute force (the
    workload's seconds), ingest seconds per frame with the clusterings (#indexing), and precision and recall
    against brute force (all queries' frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from qoeflow.validate import VIDEO_METHODS as METHODS

    clips = list(dict.fromkeys(table["clip"]))
    at = np.arange(len(clips))
    fig, (speed, cost, quality) = plt.subplots(1, 3, figsize=(15, 4.2))
    indexed = METHODS[1:]
    for i, method in enumerate(indexed):
        rows = table[table["method"] == method].set_index("clip").loc[clips]
        offset = (i - 0.5) * 0.38
        speed.bar(at + offset, rows["speedup"], 0.38, color=f"C{i + 1}", label=method)
        cost.bar(at + offset, rows["ingest_seconds_per_frame"] * 1e3, 0.38, color=f"C{i + 1}", label=method)
        for x, (n, k, exits) in zip(at + offset, rows[["indexed", "k", "exits"]].itertuples(index=False)):
            cost.annotate(f"{int(n)}\nk′{int(k)} e{exits}", (x, 0), ha="center", va="bottom", fontsize=6)
    speed.axhline(10, color="grey", ls="--", lw=0.8)
    speed.set(xticks=at, xticklabels=clips, ylabel="× faster than brute force", title="Query time, whole workload")
    cost.set(xticks=at, xticklabels=clips, ylabel="ms per frame", title="Ingest (labels: #indexing, k′, exits)")
    for i, method in enumerate(METHODS):
        rows = table[table["method"] == method].set_index("clip").loc[clips]
        quality.scatter(at + (i - 1) * 0.2, rows["precision"], marker="o", color=f"C{i}", label=f"{method} precision")
        quality.scatter(at + (i - 1) * 0.2, rows["recall"], marker="^", color=f"C{i}", label=f"{method} recall")
    quality.axhline(0.99, color="grey", ls="--", lw=0.8)
    quality.set(xticks=at, xticklabels=clips, ylabel="against brute force", title="Precision and recall (frames)")
    for ax in (speed, cost, quality):
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def replans_figure(replans: dict):
    """The closed loop: per job, the epochs each plan gave it (dashed) and the epochs it had reached
    (solid), against the training seconds spent when the plan was made; and the predicted E_sum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plans = replans["plans"]
    spent = [p["sunk_seconds"] for p in plans]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    for job in sorted(plans[0]["jobs"]):
        done = [p["jobs"][job]["done"] for p in plans]
        line = a.plot(spent, done, marker="o", label=job)[0]
        a.plot(spent, [p["jobs"][job]["target"] for p in plans], ls="--", color=line.get_color())
    a.set(title="epochs reached (solid) and planned (dashed) at each plan", xlabel="training seconds spent",
          ylabel="epochs")
    a.axvline(replans["budget_seconds"], color="grey", ls=":", label="budget")
    b.plot([p["round"] for p in plans], [p["E_sum"] for p in plans], marker="o")
    b.set(title="predicted E_sum of each plan", xlabel="plan (0: from the probes)", ylabel="E_sum")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
