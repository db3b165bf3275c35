"""`qoeflow forecast` and `qoeflow allocate` on an engineer's own files, outside any DAG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from qoeflow.families import FAMILIES
from qoeflow.lifecycle.allocation import METHODS, base_cost
from qoeflow.lifecycle.curves import DEFAULT_LEVEL, MIN_POINTS
from qoeflow.lifecycle.forecasting import band_coverage, backtest_table, forecast_table, summarise_scores
from qoeflow.lifecycle.planning import allocation_document, parse_weights, qoe_models, qoe_tables
from tasks.allocate import outlooks
from tasks.context import StageError

DEFAULT_PERF = {name: list(f.qoe_metrics) for name, f in FAMILIES.items()}  # the registry's QoE metrics


def _read_csv(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)  # catalog-ok: a file the user names on the command line, not an artifact
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise StageError(f"{path}: cannot read as CSV: {exc}") from None


def forecast_command(curves_path: str, metric: str, to: int | None, until: int | None, method: str,
                     backtest: float | None, out: str | None, level: float = DEFAULT_LEVEL) -> str:
    """Forecast (or backtest) one metric of every job in a `job,epoch,<metric>` CSV, with bands claiming
    `level`; returns a report (with the band coverage when backtesting)."""
    curves = _read_csv(curves_path)
    try:
        if not 0.0 < level < 1.0:
            raise ValueError(f"--level must be in (0, 1), got {level}")
        if backtest is not None:
            methods = [method] if method == "last" else ["last", method]
            rows, scores = backtest_table(curves, metric, backtest, methods, level=level)
            if rows.empty:
                raise ValueError(f"no job has enough epochs to observe {backtest:.0%} (≥ {MIN_POINTS} points) and predict the rest")
            table = rows.drop(columns=["metric", "method"])[rows["method"] == method]
            summary = summarise_scores(scores)
            cover = band_coverage(rows).set_index("method")["coverage"]
            text = "\n".join(f"{r.method:>10}: MAE at each job's last epoch {r.mae_last_epoch:.5g} ({r.vs_last:.2f} × last); "
                             f"{cover.get(r.method, float('nan')):.0%} of held-back points inside the {level:.0%} band"
                             for r in summary.itertuples())
        else:
            if to is None:
                raise ValueError("--to EPOCH is required (or use --backtest FRAC)")
            table = forecast_table(curves, metric, to, until=until, method=method, level=level).drop(columns=["metric"])
            text = f"{len(table)} predictions for {table['job'].nunique()} job(s), epochs up to {to}, {level:.0%} bands"
    except (ValueError, TypeError) as exc:  # bad curves (too short, NaN, repeated epochs) name their job
        raise StageError(f"{curves_path}: {exc}") from None
    if out:
        table.to_csv(out, index=False)
        text += f"\nwrote {out}"
    else:
        text = table.to_csv(index=False) + text
    return text


def allocate_command(forecasts_path: str | None, jobs_path: str | None, curves_path: str | None, budget: float | None,
                     weights: str, methods: Sequence[str], example: str | None, out: str | None) -> str:
    """Split a training budget; returns a report table (and writes the allocation JSON with -o)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise StageError(f"--method: unknown {unknown} (allowed: {', '.join(METHODS)})")
    try:
        spec = parse_weights(weights)
        if example:
            tables, model_doc = _example(example, spec)
        else:
            if not (forecasts_path and jobs_path):
                raise ValueError("give --forecasts and --jobs (or --example deepnetqoe)")
            jobs = json.loads(Path(jobs_path).read_text())  # catalog-ok: the user's --jobs file, not an artifact
            forecasts = _read_csv(forecasts_path)
            missing = sorted(set(forecasts["job"]) - set(jobs))
            if missing:
                raise ValueError(f"forecasts name job(s) {missing} that {jobs_path} does not have")
            curves = _read_csv(curves_path) if curves_path else None
            look = outlooks(curves, forecasts, jobs, DEFAULT_PERF)
            models, model_doc = qoe_models(look, spec, DEFAULT_PERF)
            tables = qoe_tables(look, models)
        if budget is None:
            raise ValueError(f"--budget SECONDS is required (the base epochs cost {base_cost(tables):.6g} s)")
        doc = allocation_document(tables, budget, list(methods), methods[0], model_doc)
    except (ValueError, OSError, KeyError) as exc:
        raise StageError(str(exc)) from None
    if out:
        Path(out).write_text(json.dumps(doc, indent=2))
    lines = [f"budget {doc['budget_seconds']:.6g} s (base epochs cost {doc['base_cost_seconds']:.6g} s, "
             f"all to max {doc['full_cost_seconds']:.6g} s)"]
    for method, plan in doc["methods"].items():
        lines.append(f"{method:>8}: E_sum {plan['E_sum']:.4f}  seconds {plan['seconds_used']:.6g}  "
                     f"solve {plan['solve_seconds'] * 1000:.1f} ms  epochs {plan['epochs']}")
    return "\n".join(lines) + (f"\nwrote {out}" if out else "")


def _example(name: str, spec) -> tuple[list, dict]:
    from qoeflow.lifecycle.deepnetqoe_example import deepnetqoe_example
    from qoeflow.lifecycle.planning import weights_for

    if name != "deepnetqoe":
        raise ValueError(f"unknown example {name!r} (known: deepnetqoe)")
    weights = spec if isinstance(spec, str) else dict(weights_for(spec, ("mae", "mse")).weights)
    tables, meta = deepnetqoe_example(weights)
    return tables, {"weights": {"crowd": meta["weights"]}, "scales": meta["scales"], "weights_spec": spec,
                    "perf_metrics": {"crowd": ["mae", "mse"]}}
