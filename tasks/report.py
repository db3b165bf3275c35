"""Stage `report`: one HTML page with the run's plots and tables."""

from __future__ import annotations

import base64
import html
import io

from qoeflow.validate import jobs_frame
from tasks.artifacts import read_curves, read_jobs
from tasks.context import StageContext


def _figure_tag(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


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
{shown.to_html(index=False, float_format=lambda v: f"{v:.4g}")}
<h2>Training curves</h2>
{_figure_tag(curves_figure(curves))}
</body></html>
"""
    tmp = ctx.temp_output("html")
    tmp.write_text(page)
    return {"outputs": ctx.publish()}
