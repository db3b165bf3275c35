"""Stages: one module per stage. Each reads its inputs and params, calls the library, and writes its
outputs atomically. No prefect, no ray: the same code runs under `qoeflow run` and `dvc repro`.

`REGISTRY` maps a task name (the `task:` of a DAG stage) to its `TaskDef`: the artifacts it reads and
writes (declared in the catalog, tasks/catalog.py) and its entry points. Its code dependencies are not
listed: they are derived from its module's imports (qoeflow/dag/codedeps.py). Task modules are imported
lazily so that listing or checking a DAG does not pay for torch. A stage that is Ray by nature (Ray
Tune) lives in flows/ and registers itself there with `register`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from qoeflow.dag.spec import Dag
from tasks.catalog import CATALOG


@dataclass(frozen=True)
class TaskDef:
    """What a stage task reads, writes and runs.

    A task either has `run(ctx) -> summary`, or, for `foreach` stages, `run_item(ctx, item) -> summary`
    for each item and `gather(ctx, item_summaries) -> summary` (whose summary may ask for another round of
    items: `{"again": [item indices]}`). An optional `check(ctx)` runs once before anything else and raises
    StageError to refuse the stage before work starts. `inputs` must come from the stage's
    dependencies; `optional` inputs are read when a dependency writes them (the report shows what exists).

    `item_files` says what of a folder artifact one item reads (an input) or keeps (a persisted output): a
    file name inside the folder with `{item}` for the item's name (`{item}.pt`), or None for nothing of it.
    A task that declares it also promises that an item reads, of its staging folder, only the kept documents
    at its top and its own sub-folder `{item}/`. On a cluster an item's task gets only those files
    (flows/shipping.py); the gather gets everything.
    """

    name: str
    module: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    entry: dict[str, str] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    item_files: dict[str, str | None] = field(default_factory=dict)  # artifact -> one item's file name, or None

    def reads(self, dag: Dag, stage: str) -> tuple[str, ...]:
        """What the task reads as DAG stage `stage`: its inputs and the optional ones its dependencies write."""
        provided = {out for dep in dag.stages[stage].deps if dep in dag.stages for out in dag.stages[dep].outs}
        return self.inputs + tuple(name for name in self.optional if name in provided)

    def item_reads(self, dag: Dag, stage: str) -> tuple[str, ...]:
        """What one `foreach` item reads: `reads`, less the folders whose `item_files` entry is None."""
        return tuple(n for n in self.reads(dag, stage) if not (n in self.item_files and self.item_files[n] is None))

    def function(self, kind: str) -> Callable[..., Any] | None:
        """The task's `check`, `run`, `run_item` or `gather` function, imported on first use."""
        if kind not in self.entry:
            return None
        return getattr(importlib.import_module(self.module), self.entry[kind])

    @property
    def fans_out(self) -> bool:
        return "run_item" in self.entry


REGISTRY: dict[str, TaskDef] = {}


def register(task: TaskDef) -> TaskDef:
    """Add a stage task to the registry (a stage that is Ray by nature registers itself from flows/)."""
    for name in task.inputs + task.optional + task.outputs:
        if name not in CATALOG:
            raise ValueError(f"task '{task.name}': artifact '{name}' is not declared in the catalog (tasks/catalog.py)")
    for name, pattern in task.item_files.items():
        if name not in task.inputs + task.optional + task.outputs or not CATALOG[name].folder:
            raise ValueError(f"task '{task.name}': item_files names '{name}', which is not a folder it reads or writes")
        if pattern is not None and "{item}" not in pattern:
            raise ValueError(f"task '{task.name}': item_files name {pattern!r} of '{name}' lacks '{{item}}'")
    REGISTRY[task.name] = task
    return task


register(TaskDef(
    name="train",
    module="tasks.train",
    outputs=("curves", "jobs", "checkpoints", "models", "figure"),
    entry={"check": "check_budget", "run_item": "run_job", "gather": "gather_jobs"},
    item_files={"checkpoints": "{item}.pt"},
))
register(TaskDef(
    name="forecast",
    module="tasks.forecast",
    inputs=("curves", "jobs"),
    outputs=("forecasts", "forecast_figure"),
    entry={"run": "run"},
))
register(TaskDef(
    name="allocate",
    module="tasks.allocate",
    inputs=("curves", "jobs", "forecasts"),
    outputs=("allocation", "allocation_figure"),
    entry={"run": "run"},
))
register(TaskDef(
    name="continue",
    module="tasks.continue_training",
    inputs=("allocation", "checkpoints", "curves", "jobs"),
    outputs=("continued_curves", "plan_vs_actual", "selection", "continued_models", "continued_checkpoints",
             "replans", "replans_figure", "backtest", "scores"),
    entry={"run_item": "run_job", "gather": "gather"},
    item_files={"checkpoints": "{item}.pt", "continued_checkpoints": "{item}.pt"},
))
register(TaskDef(
    name="compress",
    module="tasks.compress",
    inputs=("continued_models",),
    outputs=("variants", "compressed_models", "compression", "compression_figure"),
    entry={"run_item": "run_job", "gather": "gather"},
    item_files={"continued_models": "{item}.pt"},
))
register(TaskDef(
    name="multiexit",
    module="tasks.multiexit",
    inputs=("continued_models", "variants", "compressed_models"),  # variants rows name compressed files
    outputs=("multiexit_models", "exits", "exits_figure", "model_catalog"),
    entry={"run_item": "run_job", "gather": "gather"},
    item_files={"continued_models": "{item}.pt", "compressed_models": None},
))
register(TaskDef(
    name="bench",
    module="tasks.bench",
    inputs=("model_catalog", "compressed_models", "multiexit_models", "continued_models"),
    outputs=("bench", "bench_figure", "caching", "caching_figure"),
    entry={"run": "run"},
))
register(TaskDef(
    name="deploy",
    module="tasks.deploy",
    inputs=("model_catalog", "compressed_models", "multiexit_models"),  # the catalog's rows name their files
    outputs=("bandit_summary", "bandit_figure", "qos_summary", "qos_figure", "qos_single_figure"),
    entry={"run_item": "run_seed", "gather": "gather"},
))
register(TaskDef(
    name="video",
    module="tasks.video",
    inputs=("model_catalog", "compressed_models", "multiexit_models"),  # the catalog's rows name their files
    outputs=("video_index", "video_ingest", "video_queries", "video_figure"),
    entry={"run": "run"},
))
register(TaskDef(
    name="report",
    module="tasks.report",
    optional=("curves", "jobs", "forecast_figure", "scores", "allocation_figure", "allocation", "plan_vs_actual",
              "replans", "replans_figure",
              "selection", "variants", "compression", "compression_figure", "exits", "model_catalog", "exits_figure",
              "compressed_models", "multiexit_models",  # the model files that variants and model_catalog rows name
              "bench", "bench_figure", "caching", "caching_figure", "asha", "bandit_summary", "bandit_figure",
              "qos_summary", "qos_figure", "qos_single_figure", "video_index", "video_ingest", "video_queries",
              "video_figure"),
    outputs=("html",),
    entry={"run": "run"},
))


def task_io() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Task name -> (inputs, outputs), for DAG checks."""
    return {name: (t.inputs, t.outputs) for name, t in REGISTRY.items()}
