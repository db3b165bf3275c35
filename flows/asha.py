"""Stage `asha`: what an engineer would use instead of the planner, Ray Tune's ASHA scheduler.

The same jobs run as Tune trials from scratch (the same training code), `max_t` each job's max
epochs, one trial at a time and the planner's total budget in seconds as Tune's time budget. Each
epoch reports the job's E_all under the planner's recorded QoE model; ASHA stops trials whose E_all
lags. The epochs each job received are scored with the same QoE model and compared with the planner's
realised E_sum. This stage's code lives in flows/ because it *is* Ray (Tune); it does no orchestration.
"""

from __future__ import annotations

import time
from pathlib import Path

from ray.tune.stopper import Stopper

from qoeflow.lifecycle.planning import score_job
from qoeflow.params import Job, TrainParams
from tasks.context import StageContext, StageError, remove_path
from tasks.training_loop import train_to


def _trainable(trial: dict) -> None:
    """One Tune trial: the checkpointed training loop from scratch (checkpoints in the trial's own folder),
    reporting the job's E_all after each epoch."""
    from ray import tune

    config = trial["job_config"]
    job = Job.model_validate(config["job"])
    settings = TrainParams.model_validate(config["train"])
    folder = Path(config["storage"]) / "checkpoints"
    seconds = 0.0

    def report(record, trainer) -> None:
        nonlocal seconds
        seconds += record.epoch_seconds
        metrics = {m: record.metrics[m] for m in config["perf_metrics"]}
        qoe = score_job(config["qoe_model"], job.task, metrics, seconds, config["t_load"], config["t_test"])
        tune.report({"qoe": qoe, "epoch": record.epoch, "train_seconds": seconds, **metrics})

    train_to(job, settings, job.max_epochs, folder / f"{job.name}.pt", folder / "tmp", on_epoch=report, label="asha",
             log=lambda message: None)


class _TrainingBudget(Stopper):
    """A Tune stopper: stop everything once the trials' training seconds add up to the budget (the same
    seconds the planner counts; Tune's own start-up time is not charged)."""

    def __init__(self, budget: float) -> None:
        self.budget, self.spent = budget, {}  # trial id -> training seconds so far

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.spent[trial_id] = float(result.get("train_seconds", 0.0))
        return False

    def stop_all(self) -> bool:
        return sum(self.spent.values()) >= self.budget


def run(ctx: StageContext) -> dict:
    """Run the jobs under ASHA within the planner's budget and score what they received."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from flows.runtime import ray_init_kwargs

    allocation = ctx.load("allocation")
    selection = ctx.load("selection")
    jobs_stats = ctx.load("jobs")
    if not ray.is_initialized():  # `qoeflow stage asha` (dvc repro): a local Ray on loopback, started here
        ray.init(**ray_init_kwargs(None))
    model_doc = allocation["qoe_model"]
    planned = [job for job in ctx.params.train.jobs if job.name in allocation["jobs"]]
    if not planned:
        raise StageError("asha: no planned job to run")
    storage = Path(ctx.staging("tune")).resolve()
    remove_path(storage)  # trials start from scratch: no checkpoint of an earlier run may be resumed
    storage.mkdir(parents=True)
    configs = [{
        "job": job.model_dump(), "train": ctx.params.train.model_dump(), "storage": str(storage),
        "perf_metrics": model_doc["perf_metrics"][job.task], "qoe_model": model_doc,
        "t_load": jobs_stats[job.name]["t_load"], "t_test": jobs_stats[job.name]["t_test"],
    } for job in planned]
    budget = float(allocation["budget_seconds"])
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(j.max_epochs for j in planned),
                              grace_period=1, reduction_factor=2)
    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": 1}),
        param_space={"job_config": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(metric="qoe", mode="max", scheduler=scheduler, max_concurrent_trials=1,
                                    trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
        run_config=tune.RunConfig(storage_path=str(storage), name="asha", verbose=0,
                                  stop=_TrainingBudget(budget)),
    )
    results = tuner.fit()
    wall = time.perf_counter() - start
    per_job = {}
    for result in results:
        name = result.config["job_config"]["job"]["name"]
        metrics = result.metrics or {}
        per_job[name] = {"epochs": int(metrics.get("epoch", 0)), "qoe": float(metrics.get("qoe", 0.0)),
                         "train_seconds": float(metrics.get("train_seconds", 0.0))}
    for job in planned:
        per_job.setdefault(job.name, {"epochs": 0, "qoe": 0.0, "train_seconds": 0.0})
    doc = {"budget_seconds": budget, "wall_seconds": wall,
           "training_seconds": sum(j["train_seconds"] for j in per_job.values()), "jobs": per_job,
           "E_sum": sum(j["qoe"] for j in per_job.values()),
           "planner": {"method": selection["method"], "E_sum_realised": selection["E_sum_realised"],
                       "E_sum_planned": selection["E_sum_planned"]}}
    ctx.save("asha", doc)
    remove_path(storage)
    ctx.log(f"asha: E_sum {doc['E_sum']:.4f} in {wall:.1f} s against the planner's realised "
            f"{selection['E_sum_realised']:.4f}; epochs {({k: v['epochs'] for k, v in per_job.items()})}")
    return {"outputs": ctx.publish()}
