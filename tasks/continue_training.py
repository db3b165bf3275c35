"""Stage `continue`: each job resumes from its training checkpoint and trains to the epochs the chosen
plan gave it (paper 000 §II-A loop); planned and realised QoE are compared, and the run's model is
selected for the stages after it."""

from __future__ import annotations

import json

import pandas as pd

from qoeflow.lifecycle.planning import score_job
from qoeflow.params import Job
from tasks.artifacts import write_curves
from tasks.context import StageContext, StageError, remove_path
from tasks.train import train_job


def _plan(ctx: StageContext) -> tuple[dict, dict[str, int]]:
    doc = json.loads(ctx.input("allocation").read_text())
    return doc, doc["methods"][doc["chosen"]]["epochs"]


def run_job(ctx: StageContext, item: dict) -> dict:
    """Train one job on from its `train` checkpoint to its planned epochs (nothing for unplanned jobs)."""
    job = Job.model_validate(item)
    _, planned = _plan(ctx)
    if job.name not in planned:
        ctx.log(f"continue[{job.name}]: not in the plan (diverged or not forecast); skipped")
        return {"job": job.name, "skipped": True}
    own = ctx.output("continued_checkpoints") / f"{job.name}.pt"
    return train_job(ctx, job, int(planned[job.name]), own, resume_from=ctx.input("checkpoints") / f"{job.name}.pt")


def gather(ctx: StageContext, summaries: list[dict]) -> dict:
    """Curves to the planned epochs, plan against reality per job, and the selected model."""
    doc, planned = _plan(ctx)
    chosen = doc["chosen"]
    frames, rows = [], []
    for name, epochs in sorted(planned.items()):
        staging = ctx.staging(name)
        if not (staging / "stats.json").exists():
            raise StageError(f"stage '{ctx.stage}': job '{name}' has no staged results; did its item task run?")
        stats = json.loads((staging / "stats.json").read_text())
        curve = pd.read_csv(staging / "curve.csv")
        frames.append(curve)
        metrics = doc["qoe_model"]["perf_metrics"][stats["task"]]
        final = curve.iloc[-1] if len(curve) else None
        realised = None
        if stats["status"] == "completed" and final is not None:
            realised = score_job(doc["qoe_model"], stats["task"], {m: final[m] for m in metrics},
                                 stats["train_seconds"], stats["t_load"], stats["t_test"])
        index = doc["jobs"][name]["epochs"].index(int(epochs))
        row = {"job": name, "task": stats["task"], "method": chosen, "planned_epochs": int(epochs),
               "epochs_done": stats["epochs_done"], "status": stats["status"],
               "planned_seconds": doc["jobs"][name]["cost_seconds"][index], "actual_seconds": stats["train_seconds"],
               "predicted_qoe": doc["methods"][chosen]["qoe"][name], "realised_qoe": realised}
        for m in metrics:
            forecast_value = doc["jobs"][name].get("metrics", {}).get(m)
            row[f"actual_{m}"] = None if final is None else float(final[m])
            if forecast_value is not None:
                row[f"predicted_{m}"] = forecast_value[index]
        rows.append(row)
    table = pd.DataFrame(rows)
    curves = pd.concat(frames, ignore_index=True)
    write_curves(curves, ctx.temp_output("continued_curves"), ctx.output("continued_curves"), ctx.root)
    table.to_csv(ctx.temp_output("plan_vs_actual"), index=False)
    scored = table.dropna(subset=["realised_qoe"])
    if scored.empty:
        raise StageError(f"stage '{ctx.stage}': no job finished its planned epochs")
    best = scored.sort_values("realised_qoe", ascending=False).iloc[0]
    selection = {"selected_job": best["job"], "task": best["task"], "realised_qoe": float(best["realised_qoe"]),
                 "method": chosen, "E_sum_planned": float(table["predicted_qoe"].sum()),
                 "E_sum_realised": float(scored["realised_qoe"].sum())}
    ctx.temp_output("selection").write_text(json.dumps(selection, indent=2))
    ctx.log(f"continue: planned E_sum {selection['E_sum_planned']:.4f}, realised {selection['E_sum_realised']:.4f}; "
            f"selected {selection['selected_job']}")
    published = ctx.publish()
    remove_path(ctx.staging())
    return {"outputs": published + [ctx.spec.outs["continued_checkpoints"].path]}
