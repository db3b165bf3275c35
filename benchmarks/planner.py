"""Benchmarks of the QoE budget planner (issue: QoE budget planner).

1. Forecast accuracy on a run's own curves: backtest at FRAC 0.5, MAE at each job's last epoch per
   method against `last` (goal: best ≥ 30 % below `last`; `lstm` reported beside it).
2. GA against exact over a sweep of budgets, on the run's own jobs and on the paper's worked
   example under w1, w2, w3 (goal: GA ≥ 99 % of exact at every budget).
3. Exact solve time for 8 jobs × 1,000 candidate epochs (goal ≤ 1 s), median of 5.
4. The ordering of the paper's Fig. 4(b): GA at or above random, FCFS and average at every budget.

The run's own curves and allocation come from a lifecycle run in benchmarks/work/lifecycle (made by
`benchmarks/orchestration.py --lifecycle`) or from --project. Results: benchmarks/results/planner.json, .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qoeflow.families import FAMILIES
from qoeflow.lifecycle.allocation import METHODS as ALLOCATION_METHODS
from qoeflow.lifecycle.allocation import JobTable, allocate, base_cost
from qoeflow.lifecycle.curves import METHODS as FORECAST_METHODS
from qoeflow.lifecycle.deepnetqoe_example import deepnetqoe_example
from qoeflow.lifecycle.forecasting import backtest_table, summarise_scores
from qoeflow.lifecycle.planning import tables_from_document

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
METHODS = list(FORECAST_METHODS)  # every forecasting method the code implements
BASELINES = [m for m in ALLOCATION_METHODS if m not in ("exact", "ga")]  # the paper's baselines


def forecast_accuracy(curves: pd.DataFrame, frac: float) -> list[dict]:
    rows = []
    for task, metrics in {name: f.forecast_metrics for name, f in FAMILIES.items()}.items():
        part = curves[curves["task"] == task]
        for metric in metrics:
            _, scores = backtest_table(part, metric, frac, METHODS)
            for r in summarise_scores(scores).itertuples():
                rows.append({"task": task, "metric": metric, "method": r.method, "mae_last_epoch": r.mae_last_epoch,
                             "vs_last": r.vs_last})
    return rows


def sweep(tables: list[JobTable], points: int) -> list[dict]:
    lo, hi = base_cost(tables), float(sum(t.cost_seconds[-1] for t in tables))
    out = []
    for budget in np.linspace(lo, hi, points):
        e = {m: allocate(tables, float(budget), m, seed=0).e_sum for m in ["exact", "ga", *BASELINES]}
        out.append({"budget": float(budget), **e, "ga_vs_exact": e["ga"] / e["exact"],
                    "ga_beats_baselines": all(e["ga"] >= e[b] - 1e-12 for b in BASELINES)})
    return out


def exact_timing(jobs: int = 8, epochs: int = 1000, repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    tables = []
    for j in range(jobs):
        e = np.arange(1, epochs + 1)
        q = rng.uniform(0.3, 0.9) * (1 - np.exp(-e / rng.uniform(50, 400))) - 1e-4 * rng.uniform(0, 1) * e
        tables.append(JobTable(f"j{j}", e, e * rng.uniform(0.5, 3.0), q))
    budget = 0.4 * sum(t.cost_seconds[-1] for t in tables)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        allocate(tables, budget, "exact")
        times.append(time.perf_counter() - start)
    return {"jobs": jobs, "candidates_per_job": epochs, "median_seconds": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", default=str(REPO / "benchmarks" / "work" / "lifecycle"))
    parser.add_argument("--points", type=int, default=8)
    args = parser.parse_args()
    project = Path(args.project)
    curves = pd.read_csv(project / "data/continue/curves.csv")  # the probes (data/train) are too short to backtest
    allocation = json.loads((project / "data/allocate/allocation.json").read_text())
    result = {
        "forecast_backtest_frac_0.5": forecast_accuracy(curves, 0.5),
        "sweeps": {"own jobs (" + str(allocation["qoe_model"]["weights_spec"]) + ")": sweep(tables_from_document(allocation), args.points)},
        "exact_timing": exact_timing(),
    }
    for preset in ("w1", "w2", "w3"):
        result["sweeps"][f"DeepNetQoE example ({preset})"] = sweep(deepnetqoe_example(preset)[0], args.points)
    asha = {}
    for label, path in (("default (lifecycle)", project / "data/asha/asha.json"),
                        ("smoke", project.parent / "smoke0" / "data/smoke/asha/asha.json")):
        doc = json.loads(path.read_text()) if path.exists() else {}
        if "peers" in doc:  # a run of this version (older runs had ASHA alone)
            asha[label] = {"budget_seconds": doc["budget_seconds"], "planner": doc["planner"],
                           "peers": {name: {"E_sum": p["E_sum"], "training_seconds": p["training_seconds"],
                                            "wall_seconds": p["wall_seconds"],
                                            "epochs": {k: v["epochs"] for k, v in p["jobs"].items()}}
                                     for name, p in doc["peers"].items()}}
    result["asha_vs_planner"] = asha
    plan_path = project / "data/continue/plan_vs_actual.csv"
    if plan_path.exists():
        result["plan_vs_actual"] = pd.read_csv(plan_path).to_dict(orient="records")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "planner.json").write_text(json.dumps(result, indent=2, default=float) + "\n")

    lines = ["# Planner benchmark", "", f"Command: `python benchmarks/planner.py` (curves from {project.name}).", "",
             "## Forecast backtest (observe 50 %, MAE at each job's last epoch; ratio to `last`)", "",
             "| task | metric | " + " | ".join(METHODS) + " |", "| --- | --- |" + " --- |" * len(METHODS)]
    table = pd.DataFrame(result["forecast_backtest_frac_0.5"])
    for (task, metric), group in table.groupby(["task", "metric"], sort=False):
        cells = {r.method: f"{r.mae_last_epoch:.4g} ({r.vs_last:.2f})" for r in group.itertuples()}
        lines.append(f"| {task} | {metric} | " + " | ".join(cells.get(m, "–") for m in METHODS) + " |")
    lines += ["", "## GA against exact, and Fig. 4(b) ordering, over budget sweeps", "",
              "| problem | budgets | min GA/exact | GA ≥ random, fcfs, average at every budget |", "| --- | --- | --- | --- |"]
    for name, rows in result["sweeps"].items():
        lines.append(f"| {name} | {len(rows)} | {min(r['ga_vs_exact'] for r in rows):.4f} | "
                     f"{sum(r['ga_beats_baselines'] for r in rows)}/{len(rows)} |")
    t = result["exact_timing"]
    lines += ["", f"Exact solve, {t['jobs']} jobs × {t['candidates_per_job']} candidate epochs: "
              f"median {t['median_seconds'] * 1000:.1f} ms of 5 (goal ≤ 1 s)."]
    lines += ["", "## Planner against Ray Tune's ASHA and HyperBand (same jobs, same training-seconds budget, same QoE model)",
              "", "| run | weights | budget s | planner planned (probes) | last re-plan | planner realised | planner s | peer | "
              "peer E_sum | peer training s | peer wall s | realised / peer | peer epochs |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    spec = allocation["qoe_model"]["weights_spec"]
    for label, a in result["asha_vs_planner"].items():
        pl = a["planner"]
        for name, peer in a["peers"].items():
            lines.append(f"| {label} | {spec} | {a['budget_seconds']:.1f} | {pl['E_sum_planned']:.4f} | "
                         f"{pl['E_sum_replanned']:.4f} | {pl['E_sum_realised']:.4f} | {pl['seconds_used']:.1f} | {name} | "
                         f"{peer['E_sum']:.4f} | {peer['training_seconds']:.1f} | {peer['wall_seconds']:.1f} | "
                         f"{pl['E_sum_realised'] / peer['E_sum']:.3f} | {peer['epochs']} |")
    (RESULTS / "planner.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
