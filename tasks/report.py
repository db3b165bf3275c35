"""Stage `report`: one HTML page with the run's plots and tables."""

from __future__ import annotations

import base64
import html
import io
import json

import pandas as pd

from qoeflow.validate import jobs_frame
from tasks.artifacts import read_curves, read_jobs
from tasks.context import StageContext


def _figure_tag(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _png_tag(path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–")


def _planning_section(ctx: StageContext) -> str:
    """Forecast backtest, allocation by method, and plan against reality."""
    scores = json.loads(ctx.input("scores").read_text())
    allocation = json.loads(ctx.input("allocation").read_text())
    selection = json.loads(ctx.input("selection").read_text())
    asha = json.loads(ctx.input("asha").read_text())
    asha_jobs = ", ".join(f"{j}: {v['epochs']}" for j, v in asha["jobs"].items())
    methods = pd.DataFrame([{"method": m, **{k: v for k, v in p.items() if k in ("E_sum", "seconds_used", "solve_seconds")},
                             "epochs": ", ".join(f"{j}: {e}" for j, e in p["epochs"].items())}
                            for m, p in allocation["methods"].items()])
    return f"""
<h2>Forecasts (backtest at {scores['frac']:.0%} of each curve)</h2>
{_table(pd.DataFrame(scores['summary']))}
{_png_tag(ctx.input("forecast_figure"))}
<h2>Budget allocation: {allocation['budget_seconds']:.1f} s, chosen method <code>{allocation['chosen']}</code></h2>
{_table(methods)}
{_png_tag(ctx.input("allocation_figure"))}
<h2>Plan against reality</h2>
<p>Selected model: <b>{html.escape(str(selection['selected_job']))}</b> (realised E_all {selection['realised_qoe']:.4f});
planned E_sum {selection['E_sum_planned']:.4f}, realised {selection['E_sum_realised']:.4f}.</p>
{_table(pd.read_csv(ctx.input("plan_vs_actual")))}
<h2>Against Ray Tune ASHA with the same budget</h2>
<p>ASHA (from scratch, {asha['budget_seconds']:.1f} s budget, {asha['wall_seconds']:.1f} s wall): E_sum
{asha['E_sum']:.4f} with epochs {html.escape(asha_jobs)}; the planner's realised E_sum {selection['E_sum_realised']:.4f}.</p>
"""


def run(ctx: StageContext) -> dict:
    """Read the validated artifacts and write `index.html`."""
    from qoeflow.plots import curves_figure

    curves = read_curves(ctx.input("curves"), ctx.root)
    jobs = read_jobs(ctx.input("jobs"), ctx.root)
    table = jobs_frame(jobs)
    for name, info in jobs.items():
        for metric, value in info.get("test_metrics", {}).items():
            table.loc[table["job"] == name, f"test_{metric}"] = value
    shown = table.drop(columns=[c for c in ("diverged_at_epoch",) if c in table])
    title = html.escape(ctx.params.report.title)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>
<p>DAG <code>{html.escape(ctx.dag.path)}</code>: {len(jobs)} training jobs,
{int((table['status'] == 'diverged').sum())} diverged.</p>
<h2>Training jobs</h2>
{_table(shown)}
<h2>Training curves</h2>
{_figure_tag(curves_figure(curves))}
{_planning_section(ctx)}
</body></html>
"""
    tmp = ctx.temp_output("html")
    tmp.write_text(page)
    return {"outputs": ctx.publish()}
