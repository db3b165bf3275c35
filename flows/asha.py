"""Stage `asha`: what an engineer would use instead of the planner, Ray Tune's schedulers (the peers of
`asha.peers`: ASHA, and synchronous HyperBand).

The same jobs run as Tune trials from scratch (the same training code), `max_t` each job's max
epochs, one trial at a time and the planner's total budget in training seconds as the peer's budget.
Each epoch reports the job's E_all under the planner's recorded QoE model; the scheduler stops (or,
HyperBand, pauses) trials whose E_all lags. A paused trial resumes from its own checkpoint of the
training loop, so no epoch is trained twice. The epochs each job received are scored with the same QoE
model and compared with the planner's realised E_sum. BOHB is not among the peers: it searches a
configuration space, and these trials are fixed jobs. This stage's code lives in flows/ because it *is*
Ray (Tune); it does no orchestration.
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

    def report(record, trainer) -> None:
        seconds = sum(r.epoch_seconds for r in trainer.history)  # a resumed trial counts its earlier epochs
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


def schedulers():
    """Peer name -> its Tune scheduler given the largest max epochs (`asha.peers` chooses among them)."""
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    return {"asha": lambda max_t: ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=1, reduction_factor=2),
            "hyperband": lambda max_t: HyperBandScheduler(time_attr="epoch", max_t=max_t, reduction_factor=2)}


def _run_peer(name: str, configs: list[dict], budget: float, max_t: int, storage: Path, labels: list[str]) -> dict:
    """One peer's trials within the budget; per job the epochs it reached, its E_all and training seconds.
    The trials ask for a sliver of each custom resource in `labels` (the stage's): a stage pinned to a node
    keeps its trials, and their checkpoints in `storage`, there."""
    from ray import tune

    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": 1, **{label: 0.001 for label in labels}}),
        param_space={"job_config": tune.grid_search([{**c, "storage": str(storage)} for c in configs])},
        tune_config=tune.TuneConfig(metric="qoe", mode="max", scheduler=schedulers()[name](max_t),
                                    max_concurrent_trials=1,
                                    trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0, stop=_TrainingBudget(budget)),
    )
    results = tuner.fit()
    per_job = {c["job"]["name"]: {"epochs": 0, "qoe": 0.0, "train_seconds": 0.0} for c in configs}
    for result in results:
        metrics = result.metrics or {}
        per_job[result.config["job_config"]["job"]["name"]] = {
            "epochs": int(metrics.get("epoch", 0)), "qoe": float(metrics.get("qoe", 0.0)),
            "train_seconds": float(metrics.get("train_seconds", 0.0))}
    return {"wall_seconds": time.perf_counter() - start, "jobs": per_job,
            "training_seconds": sum(j["train_seconds"] for j in per_job.values()),
            "E_sum": sum(j["qoe"] for j in per_job.values())}


def run(ctx: StageContext) -> dict:
    """Run the jobs under each peer within the planner's budget and score what they received."""
    import ray

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
    configs = [{
        "job": job.model_dump(), "train": ctx.params.train.model_dump(),
        "perf_metrics": model_doc["perf_metrics"][job.task], "qoe_model": model_doc,
        "t_load": jobs_stats[job.name]["t_load"], "t_test": jobs_stats[job.name]["t_test"],
    } for job in planned]
    budget = float(allocation["budget_seconds"])
    peers = {}
    for name in ctx.params.asha.peers:
        storage = Path(ctx.staging("tune", name)).resolve()
        remove_path(storage)  # trials start from scratch: no checkpoint of an earlier run may be resumed
        storage.mkdir(parents=True)
        peers[name] = _run_peer(name, configs, budget, max(j.max_epochs for j in planned), storage,
                                sorted(ctx.spec.resources.custom))
        remove_path(storage)
        ctx.log(f"asha: {name} E_sum {peers[name]['E_sum']:.4f} in {peers[name]['wall_seconds']:.1f} s against the "
                f"planner's realised {selection['E_sum_realised']:.4f}; epochs "
                f"{({k: v['epochs'] for k, v in peers[name]['jobs'].items()})}")
    doc = {"budget_seconds": budget, "peers": peers,
           "planner": {"method": selection["method"], "E_sum_realised": selection["E_sum_realised"],
                       "E_sum_planned": selection["E_sum_planned"], "E_sum_replanned": selection["E_sum_replanned"],
                       "seconds_used": selection["seconds_used"]}}
    ctx.save("asha", doc)
    return {"outputs": ctx.publish()}
