"""Warm the local Ray's workers while the Prefect server boots.

A fresh Ray worker pays for its imports (Prefect's task engine, torch, pandas, the stage modules:
seconds) on its first stage task. Submitted right after Ray starts,
one warm-up task per CPU makes the workers pay that while the embedded Prefect server is still booting;
Ray reuses the same worker processes for the stage tasks that follow.
"""

from __future__ import annotations

import importlib

# What every stage task needs (the first stages' items above all); Great Expectations is left to the
# first stage that checks a table: on 2 cores, building its context on every worker costs more than it saves.
WARM_MODULES = ("torch", "pandas", "prefect.task_engine", "prefect_ray", "flows.dag_flow", "tasks.train")


def _warm() -> None:
    for name in WARM_MODULES:
        importlib.import_module(name)


def warm_workers(cpus: int) -> list:
    """Start one warm-up task per CPU (not waited for: the run goes on meanwhile); their refs."""
    import ray

    warm = ray.remote(num_cpus=1)(_warm)
    return [warm.options(name="qoeflow-warmup").remote() for _ in range(max(int(cpus), 1))]
