"""Stage `report`: the run's page, `index.html`, rendered from the templates in `tasks/templates/report/`.

The page opens with a table of contents and a table of the DAG's stages (what each does, its outputs and
when they were written, its status), then one section per stage of the DAG that the report knows, in the
DAG's order; stages absent from the DAG have no section. Numbers are formatted for people
(`qoeflow.humanize`), figures are embedded as PNG data URIs so the page is one self-contained file.

A section is a renderer here and a template: `@section("TASK", "Title")` registers a function
`(ctx, stage) -> dict` that loads the artifacts it shows (through `ctx.load`, so each is validated) and
returns what `templates/report/sections/TASK.html.j2` displays (tables as `Table`, figures as `Figure`,
plain values already formatted). A later stage (compress, bench, deploy, video...) adds one of each; a
renderer without a template of its own falls back to `sections/_generic.html.j2` (its `text`, `tables`
and `figures`).

The stage table reads only file metadata of the stages' outputs (existence, size, modification time) and,
when it describes the outputs on disk, the last `qoeflow run` record (`.qoeflow/runs/last.json`) for
each stage's status and seconds: see `stage_rows`.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from qoeflow import humanize as hz
from qoeflow.families import metrics_of
from tasks.context import StageContext

TEMPLATES = Path(__file__).parent / "templates" / "report"


# -- what templates display ------------------------------------------------------------------------


@dataclass
class Column:
    """A table column: its header, whether it holds numbers (right-aligned, tabular figures), a tooltip."""

    label: str
    numeric: bool = False
    title: str = ""


@dataclass
class Row:
    """A table row of formatted cells; `mark` names a CSS class (`chosen`, `best`, `bad`)."""

    cells: list[Any]
    mark: str = ""


@dataclass
class Table:
    """A table of already formatted cells; `note` is shown under it."""

    columns: list[Column]
    rows: list[Row]
    caption: str = ""
    note: str = ""


@dataclass
class Figure:
    """An image embedded as a data URI."""

    src: str
    alt: str
    caption: str = ""


@dataclass
class DrawnFigure:
    """A matplotlib figure drawn only when a page shows it (a stage's headline reads only the tables)."""

    draw: Callable[[], Any]
    alt: str
    caption: str = ""

    @cached_property
    def src(self) -> str:
        return matplotlib_figure(self.draw(), self.alt).src


@dataclass
class Section:
    """One stage's section: its anchor is the stage name, its template the stage's task."""

    stage: str
    task: str
    title: str
    description: str
    data: dict[str, Any] = field(default_factory=dict)


Renderer = Callable[[StageContext, str], dict[str, Any]]


@dataclass(frozen=True)
class SectionDef:
    task: str
    title: str
    render: Renderer


SECTIONS: dict[str, SectionDef] = {}


def section(task: str, title: str) -> Callable[[Renderer], Renderer]:
    """Register the renderer of the section for stages running `task`."""

    def register(render: Renderer) -> Renderer:
        SECTIONS[task] = SectionDef(task, title, render)
        return render

    return register


def png_figure(path: Path, alt: str, caption: str = "") -> Figure:
    """A PNG file (a validated artifact) as an embedded figure."""
    return Figure("data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(), alt, caption)


def matplotlib_figure(figure, alt: str, caption: str = "", dpi: int = 90) -> Figure:
    """A matplotlib figure as an embedded PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return Figure("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), alt, caption)


NBSP = "\u00a0"


def parts(*items: str) -> str:
    """`adam · lr 0.003 · batch 64`: a cell breaks between items only (spaces inside an item do not break)."""
    return " · ".join(item.replace(" ", NBSP) for item in items if item)


def metric_list(values: dict[str, Any], order: list[str] | None = None) -> str:
    """`accuracy 0.875 · error 0.125` (in the family's metric order when given)."""
    names = [m for m in (order or []) if m in values] + [m for m in values if m not in (order or [])]
    return parts(*(f"{m} {hz.number(values[m])}" for m in names))


def _provided(ctx: StageContext, name: str) -> bool:
    """Whether one of the report's dependencies writes artifact `name` (so `ctx.load(name)` can read it)."""
    return any(name in ctx.dag.stages[d].outs for d in ctx.spec.deps)


# -- sections --------------------------------------------------------------------------------------


@section("train", "Training")
def train_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    from qoeflow.plots import curves_figure

    jobs = ctx.load("jobs")
    curves = ctx.load("curves")
    columns = [
        Column("job"), Column("family"), Column("model"), Column("status"),
        Column("epochs", True, "epochs done of epochs asked"),
        Column("params", True, "parameters"),
        Column("MACs", True, "multiply-accumulates for one input"),
        Column("size", True, "model file size"),
        Column("training", True, "training seconds, all epochs"),
        Column("load", True, "time to load the model file"),
        Column("test / image", True, "median inference time per test image"),
        Column("test metrics"), Column("settings"),
    ]
    rows = []
    for name, job in jobs.items():
        config = job["config"]
        status = job["status"]
        if job.get("diverged_at_epoch"):
            status = f"{status} at epoch {job['diverged_at_epoch']}"
        settings = parts(
            str(config.get("optimizer", "")),
            f"lr {hz.number(config['lr'])}" if "lr" in config else "",
            f"batch {config['batch_size']}" if "batch_size" in config else "",
            f"seed {config['seed']}" if "seed" in config else "",
        )
        rows.append(Row([
            name, job["task"], job["model"], status,
            f"{job['epochs_done']} / {job['epochs']}" if job["epochs_done"] != job["epochs"] else str(job["epochs"]),
            hz.si(job["params"]), hz.si(job["macs"]), hz.size(job["size_bytes"]),
            hz.seconds(job["train_seconds"]), hz.milliseconds(job["t_load"]), hz.milliseconds(job["t_test"]),
            metric_list(job["test_metrics"], metrics_of(job["task"])) or hz.MISSING, settings,
        ], mark="bad" if job["status"] != "completed" else ""))
    diverged = [name for name, job in jobs.items() if job["status"] == "diverged"]
    families = sorted({job["task"] for job in jobs.values()})
    return {
        "n_jobs": len(jobs),
        "families": ", ".join(families),
        "diverged": ", ".join(diverged),
        "jobs": Table(columns, rows),
        "curves": DrawnFigure(lambda: curves_figure(curves), "validation loss and metric per epoch, per job",
                              "Validation loss (log scale) and the family's first metric per epoch."),
    }


@section("forecast", "Forecasts from the probes")
def forecast_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    return {"figure": png_figure(ctx.load("forecast_figure"), "forecast curves with bands, per job")}


def backtest_tables(scores: dict) -> dict[str, Any]:
    """The forecasting methods' backtest on the continued curves: summary by method, and per job."""
    summary = pd.DataFrame(scores["summary"])
    best = set()
    if not summary.empty:
        best = {(r.metric, r.method) for r in summary.loc[summary.groupby("metric")["mae_last_epoch"].idxmin()].itertuples()}
    rows = [Row([s["metric"], s["method"], hz.number(s["mae_last_epoch"]), hz.ratio(s.get("vs_last"))],
                mark="best" if (s["metric"], s["method"]) in best else "") for s in scores["summary"]]
    per_job = [Row([s["job"], s["metric"], s["method"], s["used"] if s["used"] != s["method"] else "",
                    hz.number(s["last_epoch_abs_error"])]) for s in scores["per_job"]]
    return {
        "frac": hz.percent(scores["frac"]),
        "summary": Table([Column("metric"), Column("method"),
                          Column("MAE at the last epoch", True, "mean over jobs of the absolute error at the last epoch"),
                          Column("vs last", True, "the MAE divided by that of the `last` method: below ×1 is better")],
                         rows, note="Bold: the lowest MAE for the metric."),
        "per_job": Table([Column("job"), Column("metric"), Column("method"),
                          Column("used", title="the method `auto` picked for this curve"),
                          Column("|error| at the last epoch", True)], per_job),
    }


@section("allocate", "Budget allocation")
def allocate_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    allocation = ctx.load("allocation")
    budget = allocation["budget_seconds"]
    chosen = allocation["chosen"]
    methods = allocation["methods"]
    method_rows = [Row([
        method + (" (chosen)" if method == chosen else ""), hz.fixed(plan["E_sum"]),
        hz.seconds(plan["seconds_used"]), hz.percent(plan["seconds_used"] / budget), hz.milliseconds(plan["solve_seconds"]),
    ], mark="chosen" if method == chosen else "") for method, plan in methods.items()]
    job_columns = [Column("job"), Column("candidate epochs", True), Column("cost at base → max", True)] + [
        Column(method, True, f"epochs given by {method}, and the job's predicted E_all") for method in methods]
    job_rows = []
    for job, table in allocation["jobs"].items():
        cells = [job, f"{table['base_epochs']}–{table['max_epochs']}",
                 f"{hz.seconds(table['cost_seconds'][0])} → {hz.seconds(table['cost_seconds'][-1])}"]
        for plan in methods.values():
            epochs = plan["epochs"].get(job)
            cells.append(hz.MISSING if epochs is None else f"{epochs} · {hz.fixed(plan['qoe'].get(job))}")
        job_rows.append(Row(cells))
    weights = Table([Column("family"), Column("weights of the QoE factors")], [
        Row([family, parts(*(f"{factor} {hz.number(w)}" for factor, w in factors.items()))])
        for family, factors in allocation["weights"].items()])
    return {
        "budget": hz.duration(budget),
        "base_cost": hz.duration(allocation["base_cost_seconds"]),
        "full_cost": hz.duration(allocation["full_cost_seconds"]),
        "chosen": chosen,
        "weights_spec": allocation["qoe_model"].get("weights_spec"),
        "methods": Table([Column("method"), Column("E_sum", True, "sum of the jobs' predicted E_all"),
                          Column("training seconds", True), Column("of the budget", True),
                          Column("solve time", True, "the optimiser's own time")], method_rows),
        "jobs": Table(job_columns, job_rows, note="Each cell: the epochs the method gives the job · the job's predicted E_all at those epochs."),
        "weights": weights,
        "figure": png_figure(ctx.load("allocation_figure"), "E_sum by method over a budget sweep"),
    }


@section("continue", "The closed loop: plans, re-plans and reality")
def continue_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    selection = ctx.load("selection")
    plan = ctx.load("plan_vs_actual")
    rows = []
    for r in plan.to_dict("records"):
        metrics = [m for m in metrics_of(r["task"]) if f"predicted_{m}" in r]
        change = parts(*(f"{m} {hz.number(r[f'predicted_{m}'])} → {hz.number(r[f'actual_{m}'])}" for m in metrics))
        rows.append(Row([
            r["job"], f"{r['planned_epochs']} → {r['epochs_done']}", r["status"],
            f"{hz.seconds(r['planned_seconds'])} → {hz.seconds(r['actual_seconds'])}",
            f"{hz.fixed(r['predicted_qoe'])} → {hz.fixed(r['replanned_qoe'])}", hz.fixed(r["realised_qoe"]),
            change or hz.MISSING,
        ], mark="chosen" if r["job"] == selection["selected_job"] else ("bad" if r["status"] != "completed" else "")))
    replans = ctx.load("replans")
    jobs = sorted(replans["plans"][0]["jobs"])
    plan_rows = [Row([str(p["round"]), hz.seconds(p["sunk_seconds"]), hz.seconds(max(p["remaining_seconds"], 0.0)),
                      hz.fixed(p["E_sum"])] + [_planned_cell(p["jobs"][job]) for job in jobs]) for p in replans["plans"]]
    last = replans["plans"][-1]["jobs"]
    return {
        "selection": {k: (hz.seconds(v) if k.endswith("seconds") else hz.fixed(v) if isinstance(v, float) else v)
                      for k, v in selection.items()},
        "replan_every": replans["replan_every"],
        "table": Table([Column("job"), Column("epochs", True, "given by the plan from the probes → done"),
                        Column("status"), Column("training", True, "planned from the probes → spent"),
                        Column("E_all predicted", True, "by the plan from the probes → by the last re-plan"),
                        Column("E_all realised", True), Column("metrics predicted (first plan) → realised")], rows,
                       note="Highlighted: the selected model."),
        "plans": Table([Column("plan", True, "0: from the probes; then one per round"), Column("spent", True),
                        Column("left", True), Column("E_sum predicted", True)] + [Column(job, True) for job in jobs],
                       plan_rows, note="Each job: epochs done → epochs planned; ⊘ a job left its forecast band "
                                       "in the round before; ✕ closed (stopped for good or at its max epochs)."),
        "reasons": Table([Column("job"), Column("why, at the last re-plan")], [Row([job, last[job]["reason"]]) for job in jobs]),
        "figure": png_figure(ctx.load("replans_figure"), "planned against realised epochs per job over the run"),
        "backtest": backtest_tables(ctx.load("scores")),
    }


def _planned_cell(job: dict) -> str:
    mark = "⊘ " if job["left_band"] else ""
    if job["reason"].startswith("closed"):
        return f"{mark}{job['done']} ✕"
    return f"{mark}{job['done']} → {job['target']}"


@section("asha", "Against Ray Tune ASHA")
def asha_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    asha = ctx.load("asha")
    planner, peers = asha["planner"], asha["peers"]
    realised: dict[str, dict] = {}
    if _provided(ctx, "plan_vs_actual"):
        realised = {r["job"]: r for r in ctx.load("plan_vs_actual").to_dict("records")}
    best = max([planner["E_sum_realised"]] + [p["E_sum"] for p in peers.values()])
    compare = [Row([f"planner ({planner['method']}), realised", hz.fixed(planner["E_sum_realised"]),
                    hz.seconds(planner["seconds_used"]), hz.MISSING],
                   mark="best" if planner["E_sum_realised"] >= best else "")]
    compare += [Row([name, hz.fixed(p["E_sum"]), hz.seconds(p["training_seconds"]), hz.seconds(p["wall_seconds"])],
                    mark="best" if p["E_sum"] >= best and planner["E_sum_realised"] < best else "")
                for name, p in peers.items()]
    compare += [Row([f"planner, {label}", hz.fixed(planner[key]), hz.MISSING, hz.MISSING])
                for label, key in (("planned from the probes", "E_sum_planned"), ("last re-plan", "E_sum_replanned"))]
    names = list(peers)
    rows = [Row([job] + [f"{peers[n]['jobs'][job]['epochs']} · {hz.fixed(peers[n]['jobs'][job]['qoe'])}" for n in names]
                + [f"{realised[job]['epochs_done']} · {hz.fixed(realised[job]['realised_qoe'])}" if job in realised
                   else hz.MISSING])
            for job in peers[names[0]]["jobs"]]
    return {
        "budget": hz.duration(asha["budget_seconds"]),
        "peers": ", ".join(names),
        "planner_best": planner["E_sum_realised"] >= best,
        "compare": Table([Column(""), Column("E_sum", True), Column("training seconds", True),
                          Column("wall", True, "with Tune's start-up")], compare),
        "jobs": Table([Column("job")] + [Column(n, True, f"epochs {n} gave the job · its E_all") for n in names]
                      + [Column("planner", True, "epochs done · realised E_all")], rows,
                      note="Each cell: epochs · E_all."),
    }


def _variant_rows(rows: pd.DataFrame, base: dict | None) -> list[Row]:
    out = []
    for r in rows.to_dict("records"):
        speedup = base["latency_b64_ms"] / r["latency_b64_ms"] if base else None
        out.append(Row([r["variant"], r["method"], hz.percent(r["accuracy"]), hz.si(r["macs"], "MACs"),
                        hz.ratio(base["macs"] / r["macs"]) if base else hz.MISSING, hz.si(r["params"]),
                        hz.size(r["size_bytes"]), hz.milliseconds(r["latency_b1_ms"] / 1e3),
                        hz.milliseconds(r["latency_b64_ms"] / 1e3), hz.ratio(speedup) if speedup else hz.MISSING],
                       mark="chosen" if r["method"] == "base" else ""))
    return out


VARIANT_COLUMNS = [Column("variant"), Column("method"), Column("test accuracy", True), Column("MACs", True),
                   Column("fewer MACs", True), Column("params", True), Column("size", True),
                   Column("latency b1", True, "median, batch 1"), Column("latency b64", True, "median, batch 64"),
                   Column("b64 speedup", True)]


@section("compress", "Compression")
def compress_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    variants = ctx.load("variants")
    details = ctx.load("compression")["jobs"]
    tables = []
    for job, rows in variants.groupby("source_job", sort=False):
        base = rows[rows["method"] == "base"].to_dict("records")
        info = details[job]
        dms = ", ".join(f"{e['group']} × {hz.fixed(e['factor'], 2)}" for e in info["dms"]["table"])
        tables.append(Table(VARIANT_COLUMNS, _variant_rows(rows, base[0] if base else None),
                            caption=f"{job}: every variant",
                            note=f"DMS table (level k scales the first k): {dms}. D-Pruner: {info['dpruner']['stopped']}."))
    return {"text": f"{len(variants)} variants of {variants['source_job'].nunique()} jobs, measured on "
                    f"{', '.join(sorted(variants['device'].unique()))}; latencies are medians.",
            "tables": tables,
            "figures": [png_figure(ctx.load("compression_figure"), "accuracy against MACs; DMS latency against Eq. 2")]}


@section("multiexit", "Multi-exit networks")
def multiexit_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    details = ctx.load("exits")["jobs"]
    catalog = ctx.load("model_catalog")
    tables = []
    for job, info in details.items():
        early = info["early_exit"]
        rows = [Row([str(i + 1), str(e["depth"]), hz.fixed(e["threshold"], 4), hz.percent(e["test_accuracy"]),
                     hz.percent(e["share"]), hz.percent(e["precision"]) if e["precision"] is not None else hz.MISSING,
                     hz.si(e["macs"], "MACs"), hz.milliseconds(e["latency_b1_ms"] / 1e3)]) for i, e in enumerate(info["exits"])]
        rows.append(Row(["early exit", "", "", hz.percent(early["accuracy"]), "", "", hz.si(early["mean_macs"], "MACs"),
                         hz.milliseconds(early["mean_ms"] / 1e3)], mark="chosen"))
        tables.append(Table(
            [Column("exit"), Column("after stage", True), Column("threshold", True), Column("test accuracy", True),
             Column("share stopping", True), Column("precision there", True), Column("MACs of path", True),
             Column("latency b1", True)], rows, caption=f"{job}: exits and the early-exit policy",
            note=f"Against the base network ({hz.percent(early['full_accuracy'])}): {hz.ratio(early['macs_reduction'])} "
                 f"fewer MACs, {hz.ratio(early['latency_reduction'])} lower batch-1 latency, "
                 f"{hz.number(early['accuracy_drop_points'])} points of accuracy lost."))
    return {"text": f"The model catalog holds {len(catalog)} variants; `qoeflow models list` prints it.",
            "tables": tables, "figures": [png_figure(ctx.load("exits_figure"), "accuracy per exit")]}


@section("bench", "Inference benchmark")
def bench_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    bench = ctx.load("bench")
    small, large = int(bench["batch"].min()), int(bench["batch"].max())
    at_large = bench[bench["batch"] == large].set_index(["device", "variant", "precision"])
    tables = []
    for (device, family), rows in bench[bench["pareto"]].groupby(["device", "family"], sort=False):
        cells = []
        for r in rows.sort_values("p50_ms").to_dict("records"):
            big = at_large.loc[(device, r["variant"], r["precision"])]
            cells.append(Row([r["variant"], r["method"], r["precision"], hz.percent(r["accuracy"]),
                              hz.milliseconds(r["p50_ms"] / 1e3), hz.milliseconds(r["p99_ms"] / 1e3),
                              hz.number(big["throughput"])]))
        tables.append(Table([Column("variant"), Column("method"), Column("precision"), Column("test accuracy", True),
                             Column(f"p50 b{small}", True), Column(f"p99 b{small}", True),
                             Column(f"samples/s b{large}", True)], cells,
                            caption=f"{family} on {device}: the Pareto front at batch {small}",
                            note="No other variant and precision is both faster and more accurate."))
    wide = bench[bench["batch"] == large].pivot_table(index=["device", "variant"], columns="precision",
                                                         values=["p50_ms", "accuracy"])
    speed = []
    for precision in bench["precision"].unique():
        ratio = (wide["p50_ms"]["fp32"] / wide["p50_ms"][precision]).dropna() if "fp32" in wide["p50_ms"] else None
        change = (wide["accuracy"][precision] - wide["accuracy"]["fp32"]).dropna() if ratio is not None else None
        speed.append(Row([precision, hz.ratio(ratio.median()) if ratio is not None else hz.MISSING,
                          hz.ratio(ratio.max()) if ratio is not None else hz.MISSING,
                          hz.number(100 * change.min()) if change is not None else hz.MISSING]))
    tables.append(Table([Column("precision"), Column(f"median speedup over fp32, b{large}", True),
                         Column("best", True), Column("worst accuracy change (points)", True)], speed,
                        caption=f"Precisions and layouts against fp32 at batch {large}, over every variant"))
    tables.append(caching_table(ctx.load("caching")))
    devices = ", ".join(sorted(bench["device"].unique()))
    return {"text": f"{bench['variant'].nunique()} variants × {bench['precision'].nunique()} precisions × "
                    f"{bench['batch'].nunique()} batch sizes on {devices} (torch {bench['torch'].iloc[0]}, "
                    f"{int(bench['threads'].iloc[0])} CPU thread(s)); latencies are per call, the device synchronised.",
            "tables": tables,
            "figures": [png_figure(ctx.load("bench_figure"), "latency against accuracy, Pareto front"),
                        png_figure(ctx.load("caching_figure"), "convolutional caching per crowd job and clip")]}


@section("deploy", "Deployment: model selection for simulated devices")
def deploy_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    summary = ctx.load("bandit_summary")
    methods = summary["methods"]
    best = max((n for n in methods if n != "oracle"), key=lambda n: methods[n]["normalised_qoe"]["mean"])
    rows = [Row([name, hz.fixed(m["normalised_qoe"]["mean"]), hz.fixed(m["normalised_qoe"]["std"]),
                 hz.number(m["regret"]["mean"]), hz.seconds(m["seconds"]["mean"]),
                 ", ".join(f"{v} ({hz.percent(s)})" for v, s in list(m["top_choices"].items())[:2])],
                mark="best" if name == best else "")
            for name, m in methods.items()]
    settings = summary["settings"]
    table = Table([Column("method"), Column("normalised QoE", True), Column("sd", True), Column("regret", True),
                   Column("seconds", True), Column("most chosen")], rows,
                  caption=f"{summary['seeds']} seeds × {summary['rounds'][-1]} rounds over {len(summary['arms'])} "
                          f"{summary['family']} variants",
                  note="Time-average QoE normalised so the Oracle (the θ of the QoE's expectation) is 1 and the worst "
                       "variant offered 0; regret in QoE against the Oracle's choices; seconds of choosing and learning "
                       "per seed.")
    qos = ctx.load("qos_summary")
    return {"text": f"Ratings arrive 1 to {settings['population']['max_delay']} rounds late; LinUCB with α = "
                    f"{settings['alpha']}, δ = {settings['delta']}, λ^η = {settings['mismatch']}. Then PI control of "
                    f"the DMS level of {qos['job']} for latency targets, {qos['settings']['periods']} monitoring periods "
                    "with a disturbance thread in the middle third.",
            "tables": [table, qos_table(qos)],
            "figures": [png_figure(ctx.load("bandit_figure"), "normalised QoE against rounds, regret per method"),
                        png_figure(ctx.load("qos_single_figure"), "DMS control of one task: latency, level, accuracy"),
                        png_figure(ctx.load("qos_figure"), "DMS control of concurrent tasks: latency, level, accuracy")]}


@section("video", "Video indexing and query with the multi-exit network")
def video_section(ctx: StageContext, stage: str) -> dict[str, Any]:
    from qoeflow.models.video_run import summarise
    from tasks.video_db import ground_truth_variants, open_index

    queries, ingest = ctx.load("video_queries"), ctx.load("video_ingest")
    table = summarise(queries, ingest)
    rows = [Row([r["clip"], r["method"], hz.percent(r["precision"], 4), hz.percent(r["recall"], 4),
                 hz.percent(r["truth_precision"], 3), hz.seconds(r["query_seconds"]), hz.ratio(r["speedup"]),
                 hz.number(r["gt_calls"]),
                 hz.MISSING if r["method"] == "brute-force" else hz.milliseconds(r["ingest_seconds_per_frame"]),
                 hz.MISSING if r["method"] == "brute-force" else f'exit {r["exits"]}, k′ {int(r["k"])}',
                 hz.MISSING if r["method"] == "brute-force" else f'{hz.number(r["indexed"])} / {hz.number(r["clusters"])}'],
                mark="bad" if min(r["precision"], r["recall"]) < 0.99 else "")
            for r in table.to_dict("records")]
    columns = [Column("clip"), Column("method"), Column("precision", True), Column("recall", True),
               Column("precision vs truth", True), Column("query time", True), Column("speedup", True),
               Column("GT-CNN calls", True), Column("ingest per frame", True), Column("cheap model"),
               Column("#indexing / clusters", True)]
    note = ("Precision and recall over the frames of all ten class queries, against brute force (the GT-CNN on every "
            "detected object); precision vs truth: against the generator's objects. Speedup: brute force's query "
            "seconds over the method's, the whole workload. Rows below 99 % are marked.")
    conn = open_index(ctx.load("video_index"))
    try:
        gt = ground_truth_variants(conn)
    finally:
        conn.close()
    return {"text": f"{queries['clip'].nunique()} generated clips, every class queried by brute force, single-exit "
                    f"Focus and the multi-exit version from one DuckDB index. The GT-CNN averages {len(gt)} "
                    f"variant{'s' if len(gt) > 1 else ''}: {', '.join(gt)}.",
            "tables": [Table(columns, rows, caption="Query workload per clip and method", note=note)],
            "figures": [png_figure(ctx.load("video_figure"), "query speedup, ingest cost, precision and recall")]}


def qos_table(qos: dict) -> Table:
    """Per experiment and task: the share of periods within 10 % of the target and the mean accuracy, with
    DMS control and without, undisturbed and disturbed."""
    rows = []
    for experiment, tasks in qos["experiments"].items():
        for task, info in tasks.items():
            cells = [experiment, task, hz.milliseconds(info["target_ms"] / 1e3)]
            for phase in ("undisturbed", "disturbed"):
                c, u = info["controlled"][phase], info["uncontrolled"][phase]
                cells += [hz.percent(c["within_10"]) + ("" if info["reachable"][phase] else " (unreachable)"),
                          "–" if c["within_10_in_reach"] is None else hz.percent(c["within_10_in_reach"]),
                          hz.percent(u["within_10"]), hz.percent(c["accuracy"])]
            rows.append(Row(cells))
    columns = [Column("experiment"), Column("task"), Column("target", True)]
    for phase in ("undisturbed", "disturbed"):
        columns += [Column(f"{phase}: within 10 %", True), Column("in reach", True), Column("no control", True),
                    Column("accuracy", True)]
    return Table(columns, rows, caption=f"DMS latency control of {qos['job']}",
                 note="Within 10 %: share of monitoring periods whose median latency lies within 10 % of the target; "
                      "in reach: the same among the periods in which the target was in reach (not those in which the "
                      "task ran at the fastest DMS level and still missed it: no level could meet it then); "
                      "accuracy: the test accuracy of the levels run, on average (no control: level 0, "
                      f"{hz.percent(qos['levels'][0]['accuracy'])}).")


def caching_table(caching) -> Table:
    """Convolutional caching per crowd job and clip: the histogram cache and the pixel peer against full
    recomputation."""
    rows = [Row([f'{r["job"]} (N={int(r["cached_convs"])})', r["clip"], hz.milliseconds(r["full_latency_ms"] / 1e3),
                 hz.milliseconds(r["latency_ms"] / 1e3), hz.percent(r["latency_cut"]), hz.percent(r["hit_rate"]),
                 hz.percent(r["output_difference"]), hz.milliseconds(r["pixel_latency_ms"] / 1e3),
                 hz.percent(r["pixel_hit_rate"]), hz.percent(r["pixel_output_difference"]),
                 hz.percent(r["full_jitter"])])
            for r in caching.to_dict("records")]
    return Table([Column("job (convs cached)"), Column("clip"), Column("full", True), Column("histogram", True),
                  Column("cut", True), Column("hits", True), Column("out diff", True), Column("pixel", True),
                  Column("pixel hits", True), Column("pixel out diff", True), Column("jitter", True)], rows,
                 caption="Convolutional caching on generated video: median latency per frame",
                 note="Histogram: DeepMon's cache; pixel: the pixel-difference peer; cut: latency saved against "
                      "full recomputation. Out diff: frames whose count moves by more than 0.5 against full "
                      "recomputation; jitter: frames whose full-recomputation count moves by more than 0.5 from the last.")


# -- the stage table -------------------------------------------------------------------------------


def _when(stamp: float, now: float) -> dict[str, str]:
    """`19:36:02` and `3 min 05 s ago` (the date too when it is not the page's day)."""
    moment = datetime.fromtimestamp(stamp)
    clock = moment.strftime("%H:%M:%S" if moment.date() == datetime.fromtimestamp(now).date() else "%Y-%m-%d %H:%M")
    ago = now - stamp
    return {"clock": clock, "ago": "just now" if ago < 1 else f"{hz.duration(round(ago))} ago"}


def _common_folder(paths: list[str]) -> str:
    """`data/smoke/train/` for outputs that all live there; empty when they do not share a folder."""
    folders = {p.rpartition("/")[0] for p in paths}
    return f"{folders.pop()}/" if len(folders) == 1 and "" not in folders else ""


STATUS_CLASSES = {"ran", "cached", "done", "writing", "older", "incomplete", "not"}  # first word of a status


def stage_rows(ctx: StageContext, now: float, anchors: set[str]) -> list[dict[str, Any]]:
    """One row per DAG stage: what it does, its outputs (size), when they were written, status and seconds.

    The status comes from the files: every output present -> `done`; an output older than an output of a
    stage it depends on -> `older than its inputs` (DVC would call it stale); none -> `not written`. The
    `qoeflow run` record (`ctx.run_record()`: written as each stage of a run ends, never a DVC dependency)
    adds a stage's status and seconds only when it was written after every output of that stage: then it
    describes the files on disk. Otherwise (a stage run since by `qoeflow stage` or `dvc repro`, a record
    of an earlier run) it is left out rather than shown wrong. Only file metadata is read here, never an
    artifact."""
    record, record_time = ctx.run_record()
    written: dict[str, float | None] = {}
    rows = []
    for name in ctx.dag.order():
        stage = ctx.dag.stages[name]
        outputs, times = [], []
        for out in stage.outs.values():
            path = ctx.root / out.path
            shown = {"path": out.path, "name": out.path.rpartition("/")[2], "size": "", "missing": False}
            outputs.append(shown)
            if name == ctx.stage:
                continue
            try:
                stat = path.stat()
            except OSError:
                shown["missing"] = True
                continue
            times.append(stat.st_mtime)
            shown["size"] = hz.size(stat.st_size) if path.is_file() else "folder"
        complete = bool(times) and len(times) == len(stage.outs)
        written[name] = max(times) if complete else None
        entry = record.get(name, {})
        seconds = hz.MISSING
        if name == ctx.stage:
            status = "writing this page"
        elif not times:
            status = "not written"
        elif not complete:
            status = "incomplete"
        elif any(written.get(d) is not None and written[d] > min(times) + 1 for d in stage.deps):
            status = "older than its inputs"
        elif entry.get("status") in ("ran", "cached") and max(times) <= record_time + 1:
            status = f"{entry['status']} (qoeflow run)"
            if entry["status"] == "ran":
                seconds = hz.seconds(entry.get("seconds"))
        else:
            status = "done"
        first = status.split(" ")[0]
        rows.append({
            "stage": name, "task": stage.task, "anchor": name if name in anchors else "",
            "description": stage.description,
            "folder": _common_folder([o["path"] for o in outputs]), "outputs": outputs,
            "status": status, "status_class": first if first in STATUS_CLASSES else "", "seconds": seconds,
            "written": (_when(written[name], now) if written[name]
                        else {"clock": "now" if name == ctx.stage else hz.MISSING, "ago": ""}),
        })
    return rows


# -- the stage -------------------------------------------------------------------------------------


def build_sections(ctx: StageContext) -> list[Section]:
    """One section per stage of the DAG, in its order, for each task the report knows; the report reads
    only the artifacts of its own dependencies, so a known stage that it does not depend on is left out."""
    sections = []
    for name in ctx.dag.order():
        stage = ctx.dag.stages[name]
        if name == ctx.stage or stage.task not in SECTIONS or name not in ctx.spec.deps:
            continue
        known = SECTIONS[stage.task]
        sections.append(Section(name, stage.task, known.title, stage.description, known.render(ctx, name)))
    return sections


def environment():
    """The Jinja environment of the report templates (autoescaped; an undefined name is an error)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render_page(ctx: StageContext, now: float | None = None) -> str:
    """The page's HTML."""
    now = time.time() if now is None else now
    sections = build_sections(ctx)
    stages = stage_rows(ctx, now, {s.stage for s in sections})
    return environment().get_template("page.html.j2").render(
        title=ctx.params.report.title,
        dag=ctx.dag,
        generated=datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S"),
        stages=stages,
        show_seconds=any(row["seconds"] != hz.MISSING for row in stages),
        sections=sections,
    )


def run(ctx: StageContext) -> dict:
    """Render the page from the validated artifacts and save `index.html`."""
    ctx.save("html", render_page(ctx))
    return {"outputs": ctx.publish()}
