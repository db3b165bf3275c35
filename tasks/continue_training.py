"""Stage `continue`: each job resumes from its training checkpoint and trains to the epochs the chosen
plan gave it (paper 000 §II-A loop); planned and realised QoE are compared, and the run's model is
selected for the stages after it."""

from __future__ import annotations

import pandas as pd

from qoeflow.lifecycle.planning import score_job
from qoeflow.params import Job
from tasks.context import StageContext, StageError, remove_path
from tasks.train import gathered, train_job


def _plan(ctx: StageContext) -> tuple[dict, dict[str, int]]:
    doc = ctx.load("allocation")
    return doc, doc["methods"][doc["chosen"]]["epochs"]


def run_job(ctx: StageContext, item: dict) -> dict:
    """Train one job on from its `train` checkpoint to its planned epochs (nothing for unplanned jobs)."""
    job = Job.model_validate(item)
    _, planned = _plan(ctx)
    if job.name not in planned:
        ctx.log(f"continue[{job.name}]: not in the plan (diverged or not forecast); skipped")
        return {"job": job.name, "skipped": True}
    own = ctx.output("continued_checkpoints") / f"{job.name}.pt"
    return train_job(ctx, job, int(planned[job.name]), own, resume_from=ctx.load("checkpoints") / f"{job.name}.pt")


def gather(ctx: StageContext, summaries: list[dict]) -> dict:
    """Curves to the planned epochs, plan against reality per job, and the selected model."""
    doc, planned = _plan(ctx)
    chosen = doc["chosen"]
    names = sorted(planned)
    curves, stats, model_files = gathered(ctx, summaries, names)
    rows = []
    for name in names:
        info, curve = stats[name], curves[curves["job"] == name]
        metrics = doc["qoe_model"]["perf_metrics"][info["task"]]
        final = curve.iloc[-1] if len(curve) else None
        realised = None
        if info["status"] == "completed" and final is not None:
            realised = score_job(doc["qoe_model"], info["task"], {m: final[m] for m in metrics},
                                 info["train_seconds"], info["t_load"], info["t_test"])
        index = doc["jobs"][name]["epochs"].index(int(planned[name]))
        row = {"job": name, "task": info["task"], "method": chosen, "planned_epochs": int(planned[name]),
               "epochs_done": info["epochs_done"], "status": info["status"],
               "planned_seconds": doc["jobs"][name]["cost_seconds"][index], "actual_seconds": info["train_seconds"],
               "predicted_qoe": doc["methods"][chosen]["qoe"][name], "realised_qoe": realised}
        for m in metrics:
            forecast_value = (doc["jobs"][name].get("metrics") or {}).get(m)
            row[f"actual_{m}"] = None if final is None else float(final[m])
            if forecast_value is not None:
                row[f"predicted_{m}"] = forecast_value[index]
        rows.append(row)
    table = pd.DataFrame(rows)
    scored = table.dropna(subset=["realised_qoe"])
    if scored.empty:
        raise StageError(f"stage '{ctx.stage}': no job finished its planned epochs")
    best = scored.sort_values("realised_qoe", ascending=False).iloc[0]
    selection = {"selected_job": best["job"], "task": best["task"], "realised_qoe": float(best["realised_qoe"]),
                 "method": chosen, "E_sum_planned": float(table["predicted_qoe"].sum()),
                 "E_sum_realised": float(scored["realised_qoe"].sum())}
    ctx.save("continued_curves", curves)
    ctx.save("plan_vs_actual", table)
    ctx.save("selection", selection)
    ctx.save("continued_models", model_files)
    ctx.log(f"continue: planned E_sum {selection['E_sum_planned']:.4f}, realised {selection['E_sum_realised']:.4f}; "
            f"selected {selection['selected_job']}")
    published = ctx.publish()
    remove_path(ctx.staging())
    return {"outputs": published + [ctx.spec.outs["continued_checkpoints"].path], "notes": ctx.notes}
