"""Stage `continue`: the closed loop of paper 000 §II-A, from the probes to the end of the budget.

The stage runs in rounds (an iterating `foreach` stage). In each round every job the plan still funds
resumes from its checkpoint and trains `allocate.replan_every` more epochs (fewer when its plan ends
sooner, or when its realised curve leaves the forecast band: then its round ends at once). After each
round, every job still open is re-forecast from its whole curve and the budget is re-planned: the
seconds every job has spent are sunk, only what remains is split; a job the new plan gives no further
epochs stops for good. When no job is funded further, a last round measures each job's model (load and
test times, test metrics), and the gather writes the curves, plan against reality, every plan with its
reasons and forecasts, and a backtest of every forecasting method on the continued curves. The loop's
state passes from round to round as a kept document (`ctx.keep`); the first round reads the allocation.
"""

from __future__ import annotations

import pandas as pd

from qoeflow.lifecycle.forecasting import BACKTEST_COLUMNS, backtest_table, forecast_table, summarise_scores, with_start
from qoeflow.lifecycle.planning import (
    JobOutlook, models_from_doc, outside_band, reasons, replan, score_job, tables_from_document,
)
from qoeflow.params import Job
from tasks.context import TMP, StageContext, StageError, remove_path
from tasks.train import curve_rows, gathered, train_job
from tasks.training_loop import train_to


def _band(table: dict, metric: str) -> dict | None:
    band = (table.get("bands") or {}).get(metric)
    return None if band is None else {"metric": metric, "epochs": table["epochs"], **band}


def _first_plan(ctx: StageContext, curves: pd.DataFrame | None = None) -> dict:
    """The loop's state before its first round: the allocation's chosen plan (and, with `curves`, each
    job's probe curve: what the gather needs; the items need only the targets and bands)."""
    doc = ctx.load("allocation")
    plan = doc["methods"][doc["chosen"]]
    tables = tables_from_document(doc)
    why = reasons(tables, plan["epochs"])
    tasks = {job.name: job.task for job in ctx.params.train.jobs}
    perf = doc["qoe_model"]["perf_metrics"]
    jobs, entry = {}, {}
    for table in tables:
        name, raw = table.name, doc["jobs"][table.name]
        base, target = int(table.epochs[0]), plan["epochs"][table.name]
        bands = raw.get("bands") or {}
        jobs[name] = {"task": tasks[name], "done": base, "target": target, "open": target > base,
                      "max_epochs": int(table.epochs[-1]), "seconds": float(table.cost_seconds[0]), "diverged_at": None,
                      "left_band": None, "band": _band(raw, perf[tasks[name]][0])}
        if curves is not None:
            rows = curves[curves["job"] == name].sort_values("epoch").dropna(axis=1, how="all")
            jobs[name]["curve"] = rows.to_dict(orient="records")
        forecast = {m: {"epochs": raw["epochs"], "predicted": values, **bands.get(m, {})}
                    for m, values in (raw.get("metrics") or {}).items()}
        entry[name] = {"done": base, "target": target, "qoe": plan["qoe"][name], "reason": why[name], "left_band": None,
                       "spent": float(table.cost_seconds[0]),
                       "seconds": float(table.cost_seconds[list(table.epochs).index(target)]), "forecast": forecast}
    sunk = doc["base_cost_seconds"]
    return {"budget": doc["budget_seconds"], "method": doc["chosen"], "qoe_model": doc["qoe_model"], "finalize": False,
            "jobs": jobs, "plans": [{"round": 0, "sunk_seconds": sunk, "remaining_seconds": doc["budget_seconds"] - sunk,
                                     "E_sum": plan["E_sum"], "jobs": entry}]}


def _state(ctx: StageContext, full: bool) -> dict:
    if ctx.round == 0:
        return _first_plan(ctx, ctx.load("curves") if full else None)
    return ctx.kept(f"round-{ctx.round}")


def run_job(ctx: StageContext, item: dict) -> dict:
    """One job's round: train toward its target (at most `replan_every` epochs), or, in the last round,
    measure its model."""
    job = Job.model_validate(item)
    state = _state(ctx, full=False)
    mine = state["jobs"].get(job.name)
    if mine is None:
        ctx.log(f"continue[{job.name}]: not in the plan (diverged or not forecast); skipped")
        return {"job": job.name, "skipped": True}
    own = ctx.output("continued_checkpoints") / f"{job.name}.pt"
    probe = ctx.load("checkpoints") / f"{job.name}.pt"
    if state["finalize"]:
        return train_job(ctx, job, mine["done"], own, resume_from=probe)  # trains nothing: the checkpoint is at `done`
    if not mine["open"]:
        return {"job": job.name, "skipped": True}
    goal = min(mine["target"], mine["done"] + ctx.params.allocate.replan_every)
    band, left = mine["band"], {}

    def outside(record) -> bool:
        value = record.metrics[band["metric"]] if band else 0.0
        bounds = outside_band(band, record.epoch, value)
        if bounds is not None:
            left["epoch"] = record.epoch
            ctx.log(f"continue[{job.name}]: {band['metric']} {value:.4g} at epoch {record.epoch} left its forecast "
                    f"band [{bounds[0]:.4g}, {bounds[1]:.4g}]; re-planning")
        return bounds is not None

    def progress(record, trainer) -> None:
        if ctx.progress:
            ctx.progress(job.name, record.epoch, goal, f"round {ctx.round}, loss {record.train_loss:.4f}")

    def start(done: int) -> None:
        if ctx.progress:
            ctx.progress(job.name, done, goal, f"round {ctx.round}")

    outcome = train_to(job, ctx.params.train, goal, own, ctx.root / TMP / "checkpoints", resume_from=probe,
                       log=ctx.log, on_start=start, on_epoch=progress, stop_when=outside, label=ctx.stage)
    trainer = outcome.trainer
    return {"job": job.name, "done": trainer.epochs_done, "diverged_at": outcome.diverged_at,
            "curve": curve_rows(job, trainer, trainer.epochs_done), "left_band": left.get("epoch"),
            "notes": outcome.notes}


def _outlooks(ctx: StageContext, state: dict) -> list[JobOutlook]:
    """Where every job stands: open jobs forecast from their whole curve to their max epochs, the others
    fixed where they stopped."""
    settings, jobs_stats = ctx.params.forecast, ctx.load("jobs")
    perf = state["qoe_model"]["perf_metrics"]
    for job in state["jobs"].values():
        job["open"] = job["open"] and job["done"] < job["max_epochs"]
    open_jobs = {n: j for n, j in state["jobs"].items() if j["open"]}
    curves = pd.DataFrame([row for j in open_jobs.values() for row in j["curve"]])
    if not curves.empty:
        curves = with_start(curves, {n: jobs_stats[n].get("epoch0") for n in open_jobs})
    forecasts = []
    for task in sorted({j["task"] for j in open_jobs.values()}):
        rows = curves[curves["task"] == task]
        for metric in perf[task]:
            try:
                forecasts.append(forecast_table(rows, metric, {n: j["max_epochs"] for n, j in open_jobs.items()},
                                                method=settings.method, seed=settings.seed))
            except ValueError as exc:
                raise StageError(f"continue: re-forecast of {task} '{metric}': {exc}") from None
    table = pd.concat(forecasts, ignore_index=True) if forecasts else None
    outlooks = []
    for name, job in state["jobs"].items():
        last, metrics, job["forecast"] = job["curve"][-1], {}, {}
        for metric in perf[job["task"]]:
            now = float(last[metric])
            metrics[metric] = [now]
            if job["open"]:
                pred = table[(table["job"] == name) & (table["metric"] == metric)].sort_values("epoch")
                metrics[metric] += pred["predicted"].astype(float).tolist()
                job["forecast"][metric] = {"epochs": [job["done"]] + pred["epoch"].astype(int).tolist(),
                                           "predicted": metrics[metric],
                                           "lower": [now] + pred["lower"].astype(float).tolist(),
                                           "upper": [now] + pred["upper"].astype(float).tolist()}
        top = job["max_epochs"] if job["open"] else job["done"]
        seconds_per_epoch = float(pd.Series([r["epoch_seconds"] for r in job["curve"]]).median())
        stats = jobs_stats[name]
        outlooks.append(JobOutlook(name, job["task"], job["done"], top, seconds_per_epoch, float(stats["t_load"]),
                                   float(stats["t_test"]), {m: pd.Series(v).to_numpy(float) for m, v in metrics.items()},
                                   seconds_spent=float(job["seconds"])))
    return outlooks


def _replan(ctx: StageContext, state: dict) -> dict:
    """Re-forecast the open jobs and split what remains of the budget; close the jobs the plan stops."""
    outlooks = _outlooks(ctx, state)
    plan, tables = replan(outlooks, models_from_doc(state["qoe_model"]), state["budget"], state["method"],
                          seed=ctx.params.allocate.seed)
    why = reasons(tables, plan.epochs)
    cost = {t.name: float(t.cost_seconds[list(t.epochs).index(plan.epochs[t.name])]) for t in tables}
    sunk = sum(j["seconds"] for j in state["jobs"].values())
    entry = {"round": ctx.round + 1, "sunk_seconds": sunk, "remaining_seconds": state["budget"] - sunk,
             "E_sum": plan.e_sum, "jobs": {}}
    for name, job in state["jobs"].items():
        target = plan.epochs[name]
        if job["open"]:
            job["target"], job["open"] = target, target > job["done"]
            metric = state["qoe_model"]["perf_metrics"][job["task"]][0]
            f = job["forecast"][metric]
            job["band"] = {"metric": metric, "epochs": f["epochs"], "lower": f["lower"], "upper": f["upper"]}
        entry["jobs"][name] = {"done": job["done"], "target": target, "qoe": plan.qoe[name], "reason": why[name],
                               "left_band": job["left_band"], "spent": job["seconds"], "seconds": cost[name],
                               "forecast": job.pop("forecast")}
    return entry


def gather(ctx: StageContext, summaries: list[dict]) -> dict:
    """After a round: record where the jobs are, re-plan, and ask for the next round; after the last one,
    write the stage's outputs."""
    state = _state(ctx, full=True)
    if state["finalize"]:
        return _finish(ctx, state, summaries)
    for s in summaries:
        if s.get("skipped"):
            continue
        job = state["jobs"][s["job"]]
        job.update(done=s["done"], curve=s["curve"], left_band=s["left_band"], diverged_at=s["diverged_at"])
        job["seconds"] = s["curve"][-1]["cumulative_seconds"] if s["curve"] else 0.0
        if s["diverged_at"] is not None:
            job["open"] = False
        ctx.notes.extend(n for n in s.get("notes", []) if n not in ctx.notes)
    entry = _replan(ctx, state)
    state["plans"].append(entry)
    funded = [name for name, job in state["jobs"].items() if job["open"]]
    ctx.log(f"continue: re-plan {entry['round']}: {entry['remaining_seconds']:.1f} s of {state['budget']:.1f} s left, "
            f"predicted E_sum {entry['E_sum']:.4f}; funded {({n: state['jobs'][n]['target'] for n in funded})}")
    state["finalize"] = not funded
    ctx.keep(f"round-{ctx.round + 1}", state)
    index = {Job.model_validate(item).name: i for i, item in enumerate(ctx.items())}
    return {"again": sorted(index[name] for name in (funded or state["jobs"]))}


def _backtest(ctx: StageContext, curves: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Every configured forecasting method backtested on the continued curves (those long enough)."""
    settings = ctx.params.forecast
    tables, scores = [], []
    for task, metrics in settings.metrics.items():
        rows = curves[curves["task"] == task]
        for metric in metrics if len(rows) else []:
            try:
                bt, sc = backtest_table(rows, metric, settings.backtest_frac, settings.backtest_methods, settings.seed)
            except ValueError as exc:
                raise StageError(f"continue: backtest of {task} '{metric}': {exc}") from None
            tables.append(bt)
            scores.append(sc)
    score_table = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(
        columns=["job", "metric", "method", "used", "last_epoch_abs_error"])
    backtest = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=BACKTEST_COLUMNS)
    return backtest, scores_doc(settings.backtest_frac, score_table)


def scores_doc(frac: float, score_table: pd.DataFrame) -> dict:
    """`scores.json`'s content: the per-method summary (no ratio, null, where `last` was exact) and every score."""
    summary = summarise_scores(score_table)
    summary = summary.astype(object).where(summary.notna(), None)
    return {"frac": frac, "summary": summary.to_dict(orient="records"),
            "per_job": score_table.to_dict(orient="records")}


def _finish(ctx: StageContext, state: dict, summaries: list[dict]) -> dict:
    """Curves to the epochs each job reached, plan against reality per job, every plan, the backtest, and
    the selected model."""
    from qoeflow.plots import replans_figure

    first, last = state["plans"][0], state["plans"][-1]
    names = sorted(state["jobs"])
    curves, stats, model_files = gathered(ctx, summaries, names)
    model_doc, probes = state["qoe_model"], ctx.load("jobs")
    rows = []
    for name in names:
        info, curve = stats[name], curves[curves["job"] == name]
        metrics = model_doc["perf_metrics"][info["task"]]
        final = curve.iloc[-1] if len(curve) else None
        realised = None
        if info["status"] == "completed" and final is not None:
            # load and test times as the plan scored them (the probe's: same network, and a second measurement
            # under other jobs' load would only add noise to the comparison)
            realised = score_job(model_doc, info["task"], {m: final[m] for m in metrics}, info["train_seconds"],
                                 probes[name]["t_load"], probes[name]["t_test"])
        planned = first["jobs"][name]
        row = {"job": name, "task": info["task"], "method": state["method"], "planned_epochs": planned["target"],
               "replanned_epochs": last["jobs"][name]["target"], "epochs_done": info["epochs_done"],
               "status": info["status"], "planned_seconds": planned["seconds"],
               "actual_seconds": info["train_seconds"], "predicted_qoe": planned["qoe"],
               "replanned_qoe": last["jobs"][name]["qoe"], "realised_qoe": realised}
        for m in metrics:
            row[f"actual_{m}"] = None if final is None else float(final[m])
            forecast = planned["forecast"].get(m)
            if forecast:
                row[f"predicted_{m}"] = forecast["predicted"][forecast["epochs"].index(planned["target"])]
        rows.append(row)
    table = pd.DataFrame(rows)
    scored = table.dropna(subset=["realised_qoe"])
    if scored.empty:
        raise StageError(f"stage '{ctx.stage}': no job finished its planned epochs")
    best = scored.sort_values("realised_qoe", ascending=False).iloc[0]
    selection = {"selected_job": best["job"], "task": best["task"], "realised_qoe": float(best["realised_qoe"]),
                 "method": state["method"], "E_sum_planned": float(first["E_sum"]), "E_sum_replanned": float(last["E_sum"]),
                 "E_sum_realised": float(scored["realised_qoe"].sum()), "budget_seconds": float(state["budget"]),
                 "seconds_used": float(table["actual_seconds"].sum()), "replans": len(state["plans"]) - 1}
    backtest, scores = _backtest(ctx, curves)
    replans = {"budget_seconds": state["budget"], "replan_every": ctx.params.allocate.replan_every,
               "method": state["method"], "plans": state["plans"]}
    ctx.save("continued_curves", curves)
    ctx.save("plan_vs_actual", table)
    ctx.save("selection", selection)
    ctx.save("continued_models", model_files)
    ctx.save("replans", replans)
    ctx.save("replans_figure", replans_figure(replans))
    ctx.save("backtest", backtest)
    ctx.save("scores", scores)
    ctx.log(f"continue: planned E_sum {selection['E_sum_planned']:.4f}, last re-plan {selection['E_sum_replanned']:.4f}, "
            f"realised {selection['E_sum_realised']:.4f} after {selection['replans']} re-plans; "
            f"{selection['seconds_used']:.1f} of {selection['budget_seconds']:.1f} s; selected {selection['selected_job']}")
    published = ctx.publish()
    remove_path(ctx.staging())
    return {"outputs": published + [ctx.spec.outs["continued_checkpoints"].path], "notes": ctx.notes}
