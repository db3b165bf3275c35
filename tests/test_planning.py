"""The budget planner's promises: exact is the optimum, GA is within 1 % of it, every plan fits the
budget and the bounds, and the QoE model behaves as Eq. (1) says."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qoeflow.lifecycle.allocation import JobTable, allocate, base_cost
from qoeflow.lifecycle.planning import JobOutlook, qoe_models, qoe_tables, score_job, weights_for
from qoeflow.lifecycle.qoe import QoEWeights


def _random_tables(rng: np.random.Generator, jobs: int, candidates: int) -> list[JobTable]:
    tables = []
    for j in range(jobs):
        epochs = np.arange(5, 5 + candidates)
        cost = np.cumsum(rng.uniform(0.5, 3.0, candidates)) + 5
        qoe = np.clip(rng.uniform(0.2, 0.6) + np.cumsum(rng.normal(0.01, 0.03, candidates)), 0.01, 1)
        tables.append(JobTable(f"j{j}", epochs, cost, qoe))
    return tables


def _brute_force(tables: list[JobTable], budget: float) -> float:
    best = -np.inf
    for idx in itertools.product(*(range(len(t.epochs)) for t in tables)):
        if sum(t.cost_seconds[i] for t, i in zip(tables, idx)) <= budget:
            best = max(best, sum(t.qoe[i] for t, i in zip(tables, idx)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_exact_matches_brute_force_on_small_problems(seed):
    rng = np.random.default_rng(seed)
    tables = _random_tables(rng, 3, 7)
    full = sum(t.cost_seconds[-1] for t in tables)
    for budget in np.linspace(base_cost(tables), full, 5):
        plan = allocate(tables, float(budget), "exact")
        assert plan.e_sum == pytest.approx(_brute_force(tables, float(budget)), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_ga_is_within_one_percent_of_exact(seed):
    rng = np.random.default_rng(100 + seed)
    tables = _random_tables(rng, int(rng.integers(4, 9)), 60)
    full = sum(t.cost_seconds[-1] for t in tables)
    for budget in np.linspace(base_cost(tables), full, 4):
        exact = allocate(tables, float(budget), "exact").e_sum
        ga = allocate(tables, float(budget), "ga", seed=seed).e_sum
        assert ga >= 0.99 * exact


@pytest.mark.parametrize("method", ["exact", "ga", "random", "fcfs", "average"])
def test_every_method_respects_budget_and_bounds(method):
    tables = _random_tables(np.random.default_rng(7), 5, 30)
    budget = base_cost(tables) + 20.0
    plan = allocate(tables, budget, method, seed=1)
    assert plan.seconds_used <= budget + 1e-9
    for t in tables:
        assert t.epochs[0] <= plan.epochs[t.name] <= t.epochs[-1]


def test_fcfs_fills_jobs_in_their_order():
    tables = _random_tables(np.random.default_rng(3), 3, 20)
    budget = base_cost(tables) + (tables[0].cost_seconds[-1] - tables[0].cost_seconds[0]) + 1e-6
    plan = allocate(tables, budget, "fcfs")
    assert plan.epochs["j0"] == tables[0].epochs[-1]
    assert plan.epochs["j2"] == tables[2].epochs[0]


def test_budget_below_base_cost_names_both_numbers():
    tables = _random_tables(np.random.default_rng(0), 2, 5)
    with pytest.raises(ValueError, match=r"budget 1 s is below the cost of the base epochs of all jobs \(\d"):
        allocate(tables, 1.0, "exact")


def test_weights_presets_and_validation():
    w = weights_for("w1", ["error"])
    assert w.weights == pytest.approx({"error": 0.2, "train": 0.5, "load": 0.05, "test": 0.25})
    with pytest.raises(ValueError, match="sum to 1"):
        weights_for([0.5, 0.5, 0.5, 0.0, 0.0], ["mae", "mse"])
    with pytest.raises(ValueError, match="non-negative"):
        QoEWeights({"mae": 1.2, "train": -0.2})


def test_qoe_tables_reward_better_metrics_and_charge_training_time():
    fast_good = JobOutlook("a", "crowd", 2, 4, 1.0, 0.1, 0.01, {"mae": np.array([5.0, 4.0, 3.0]), "mse": np.array([30.0, 20.0, 10.0])})
    slow_bad = JobOutlook("b", "crowd", 2, 4, 5.0, 0.1, 0.01, {"mae": np.array([9.0, 9.0, 9.0]), "mse": np.array([90.0, 90.0, 90.0])})
    models, doc = qoe_models([fast_good, slow_bad], "w2", {"crowd": ["mae", "mse"]})
    a, b = qoe_tables([fast_good, slow_bad], models)
    assert np.all(a.qoe > b.qoe)
    assert np.all(np.diff(b.qoe) < 0)  # no metric gain: every extra epoch only costs
    assert np.all((a.qoe > 0) & (a.qoe <= 1))
    realised = score_job(doc, "crowd", {"mae": 3.0, "mse": 10.0}, 4.0, 0.1, 0.01)
    assert realised == pytest.approx(a.qoe[-1])
