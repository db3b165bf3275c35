"""From forecasts and job stats to the QoE tables of Eq. (2), the plans of every method, and budget sweeps.

Shared by the `allocate` stage and the `qoeflow allocate` command. The QoE model per job uses its
task's performance metrics (digits: error; crowd: MAE and MSE, as configured) and the paper's five
weight slots; every normalising scale is the median of that quantity over all jobs and candidate
epochs (see `qoeflow.lifecycle.qoe`), and is recorded so that realised QoE is scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from qoeflow.families import higher_is_better
from qoeflow.lifecycle.allocation import JobTable, Plan, allocate, base_cost
from qoeflow.lifecycle.qoe import PRESETS, QoEModel, QoEWeights


@dataclass(frozen=True)
class JobOutlook:
    """What the planner knows of one job: measured times and its metric curves from base to max epochs.

    `base_epochs` are done and their `seconds_spent` (default base × seconds per epoch) are sunk: they
    count in the job's training time (the QoE's train factor) but are no longer the planner's to split."""

    name: str
    task: str
    base_epochs: int
    max_epochs: int
    seconds_per_epoch: float
    t_load: float
    t_test: float
    metrics: Mapping[str, np.ndarray]  # metric -> values at epochs base..max
    seconds_spent: float | None = None

    @property
    def epochs(self) -> np.ndarray:
        return np.arange(self.base_epochs, self.max_epochs + 1)

    def cost(self) -> np.ndarray:
        """Cumulative training seconds at each candidate epoch: the sunk seconds, then per-epoch seconds."""
        spent = self.base_epochs * self.seconds_per_epoch if self.seconds_spent is None else self.seconds_spent
        return spent + (self.epochs - self.base_epochs) * self.seconds_per_epoch


def weights_for(spec: str | Sequence[float], metrics: Sequence[str]) -> QoEWeights:
    """A preset name (w1, w2, w3) or five slots [perf1, perf2, train, load, test], mapped onto `metrics`."""
    if isinstance(spec, str):
        return QoEWeights.preset(spec, metrics)
    slots = [float(v) for v in spec]
    QoEWeights(dict(zip(("perf1", "perf2", "train", "load", "test"), slots)))  # the slots themselves: ≥ 0, sum 1
    return QoEWeights.from_slots(slots, metrics)


def parse_weights(text: str) -> str | list[float]:
    """`w1` or `0.1,0.1,0.5,0.05,0.25` from the command line."""
    if text in PRESETS:
        return text
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"weights must be a preset ({', '.join(PRESETS)}) or 5 comma-separated numbers, got {text!r}") from None


def qoe_models(outlooks: Sequence[JobOutlook], weights: str | Sequence[float],
               perf_metrics: Mapping[str, Sequence[str]]) -> tuple[dict[str, QoEModel], dict]:
    """One QoE model per task, with scales shared by all jobs; and a JSON-able description of them."""
    pooled: dict[str, list[np.ndarray]] = {}
    for o in outlooks:
        for m in perf_metrics[o.task]:
            pooled.setdefault(m, []).append(np.asarray(o.metrics[m], float))
        pooled.setdefault("train", []).append(o.cost())
        pooled.setdefault("load", []).append(np.array([o.t_load]))
        pooled.setdefault("test", []).append(np.array([o.t_test]))
    scales = {}
    for name, arrays in pooled.items():
        median = float(np.median(np.abs(np.concatenate(arrays))))
        scales[name] = median if np.isfinite(median) and median > 0 else 1.0
    models = {}
    for task in sorted({o.task for o in outlooks}):
        models[task] = QoEModel(weights_for(weights, perf_metrics[task]), scales, higher_is_better())
    doc = {"scales": scales, "weights": {t: dict(m.weights.weights) for t, m in models.items()},
           "weights_spec": weights if isinstance(weights, str) else list(weights),
           "perf_metrics": {t: list(perf_metrics[t]) for t in models}}
    return models, doc


def qoe_tables(outlooks: Sequence[JobOutlook], models: Mapping[str, QoEModel]) -> list[JobTable]:
    """Per job: candidate epochs base..max, cumulative training seconds, predicted E_all."""
    tables = []
    for o in outlooks:
        epochs, cost = o.epochs, o.cost()
        metrics = {m: np.maximum(np.asarray(v, float), 0.0) for m, v in o.metrics.items()}
        qoe = models[o.task].score(metrics, cost, o.t_load, o.t_test)
        tables.append(JobTable(o.name, epochs, cost, np.broadcast_to(qoe, epochs.shape)))
    return tables


def models_from_doc(model_doc: Mapping) -> dict[str, QoEModel]:
    """The QoE model per task that a plan recorded (its weights and scales), to score later plans alike."""
    return {task: QoEModel(weights, model_doc["scales"], higher_is_better())
            for task, weights in model_doc["weights"].items()}


def replan(outlooks: Sequence[JobOutlook], models: Mapping[str, QoEModel], budget: float, method: str = "exact",
           seed: int = 0) -> tuple[Plan, list[JobTable]]:
    """A new plan from where the jobs are: each outlook starts at the epochs a job has done (a job that may
    not train on has base = max), the seconds spent so far are sunk, and only `budget` − spent is split.
    When the jobs have already spent the whole budget, every job stops where it is."""
    tables = qoe_tables(outlooks, models)
    return allocate(tables, max(float(budget), base_cost(tables)), method, seed=seed), tables


def outside_band(band: Mapping | None, epoch: int, value: float) -> tuple[float, float] | None:
    """The band `(lower, upper)` at `epoch` when `value` lies outside it, else None (also without a band or
    when the band does not reach `epoch`). `band`: {"epochs", "lower", "upper"} lists, as a plan records it."""
    if band is None or epoch not in band["epochs"]:
        return None
    i = list(band["epochs"]).index(epoch)
    low, high = float(band["lower"][i]), float(band["upper"][i])
    return None if low <= value <= high else (low, high)


def reasons(tables: Sequence[JobTable], epochs: Mapping[str, int]) -> dict[str, str]:
    """Why each job got the epochs a plan gave it, in words (gains in predicted E_all over stopping now)."""
    out = {}
    for t in tables:
        target = epochs[t.name]
        now = float(t.qoe[0])
        if len(t.epochs) == 1:
            out[t.name] = "closed: stopped earlier or at its max epochs"
        elif target > t.epochs[0]:
            j = int(np.flatnonzero(t.epochs == target)[0])
            out[t.name] = (f"funded: {target - int(t.epochs[0])} more epochs ({t.cost_seconds[j] - t.cost_seconds[0]:.3g} s) "
                           f"for {float(t.qoe[j]) - now:+.4f} E_all")
        else:
            best = int(np.argmax(t.qoe))
            gain = float(t.qoe[best]) - now
            out[t.name] = ("stopped: no further epochs raise its forecast E_all" if gain <= 0 else
                           f"stopped: its best {gain:+.4f} E_all ({int(t.epochs[best]) - int(t.epochs[0])} more epochs, "
                           f"{t.cost_seconds[best] - t.cost_seconds[0]:.3g} s) is worth less than what the budget left buys elsewhere")
    return out


def score_job(model_doc: Mapping, task: str, metrics: Mapping[str, float], train_s: float, t_load: float,
              t_test: float) -> float:
    """E_all of realised numbers under the recorded QoE model (same weights and scales as the plan)."""
    model = QoEModel(model_doc["weights"][task], model_doc["scales"], higher_is_better())
    return float(model.score({k: max(float(v), 0.0) for k, v in metrics.items()}, train_s, t_load, t_test))


def default_budget(tables: Sequence[JobTable], fraction: float) -> float:
    """The seconds already spent (the tables' base cost) plus `fraction` of what training every job on to
    its max epochs would add: never less than what is sunk."""
    base = base_cost(tables)
    return base + fraction * (float(sum(t.cost_seconds[-1] for t in tables)) - base)


def plan_doc(plan: Plan) -> dict:
    return {"epochs": plan.epochs, "qoe": plan.qoe, "E_sum": plan.e_sum, "seconds_used": plan.seconds_used,
            "solve_seconds": plan.solve_seconds}


def allocation_document(tables: Sequence[JobTable], budget: float, methods: Sequence[str], chosen: str,
                        model_doc: Mapping, seed: int = 0, sweep_points: int = 8,
                        predicted_metrics: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> dict:
    """The allocation.json content: the tables (with the predicted metrics behind them), one plan per
    method, the chosen method, a budget sweep."""
    if chosen not in methods:
        raise ValueError(f"chosen method {chosen!r} is not among the methods run {list(methods)}")
    plans = {m: allocate(tables, budget, m, seed=seed) for m in methods}
    base = base_cost(tables)
    full = float(sum(t.cost_seconds[-1] for t in tables))
    budgets = np.linspace(base, full, max(sweep_points, 2))
    sweep = []
    for b in budgets:
        row = {"budget_seconds": float(b)}
        for m in methods:
            p = allocate(tables, float(b), m, seed=seed)
            row[m] = {"E_sum": p.e_sum, "qoe": p.qoe, "epochs": p.epochs}
        sweep.append(row)
    return {
        "budget_seconds": float(budget),
        "base_cost_seconds": base,
        "full_cost_seconds": full,
        "weights": dict(model_doc["weights"]),
        "qoe_model": dict(model_doc),
        "jobs": {
            t.name: {"epochs": t.epochs.tolist(), "cost_seconds": t.cost_seconds.tolist(), "qoe": t.qoe.tolist(),
                     "base_epochs": int(t.epochs[0]), "max_epochs": int(t.epochs[-1]),
                     **({"metrics": {m: list(map(float, v)) for m, v in predicted_metrics[t.name].items()}}
                        if predicted_metrics and t.name in predicted_metrics else {})}
            for t in tables
        },
        "methods": {m: plan_doc(p) for m, p in plans.items()},
        "chosen": chosen,
        "sweep": sweep,
    }


def tables_from_document(doc: Mapping) -> list[JobTable]:
    """Re-build the optimiser's tables from an allocation.json, e.g. to audit or re-solve a plan."""
    return [JobTable(name, np.array(j["epochs"]), np.array(j["cost_seconds"]), np.array(j["qoe"]))
            for name, j in doc["jobs"].items()]
