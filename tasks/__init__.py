"""Stages: one module per stage. Each reads its inputs and params, calls the library, and writes its
outputs atomically. No prefect, no ray: the same code runs under `qoeflow run` and `dvc repro`.

`REGISTRY` maps a task name (the `task:` of a DAG stage) to its `TaskDef`. Task modules are imported
lazily so that listing or checking a DAG does not pay for torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class TaskDef:
    """What a stage task reads, writes and runs.

    A task either has `run(ctx) -> summary`, or, for `foreach` stages, `run_item(ctx, item) -> summary`
    for each item and `gather(ctx, item_summaries) -> summary`.
    """

    name: str
    module: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    entry: dict[str, str] = field(default_factory=dict)

    def function(self, kind: str) -> Callable[..., Any] | None:
        """The task's `run`, `run_item` or `gather` function, imported on first use."""
        if kind not in self.entry:
            return None
        return getattr(importlib.import_module(self.module), self.entry[kind])

    @property
    def fans_out(self) -> bool:
        return "run_item" in self.entry


_COMMON_CODE = ("tasks/__init__.py", "tasks/context.py", "tasks/artifacts.py")

REGISTRY: dict[str, TaskDef] = {
    "train": TaskDef(
        name="train",
        module="tasks.train",
        outputs=("curves", "jobs", "checkpoints", "models", "figure"),
        code=_COMMON_CODE + ("tasks/train.py", "qoeflow/lifecycle/training.py", "qoeflow/models", "qoeflow/data"),
        entry={"run_item": "run_job", "gather": "gather_jobs"},
    ),
    "forecast": TaskDef(
        name="forecast",
        module="tasks.forecast",
        inputs=("curves", "jobs"),
        outputs=("forecasts", "backtest", "scores", "forecast_figure"),
        code=_COMMON_CODE + ("tasks/forecast.py", "qoeflow/lifecycle/curves.py", "qoeflow/lifecycle/forecasting.py"),
        entry={"run": "run"},
    ),
    "allocate": TaskDef(
        name="allocate",
        module="tasks.allocate",
        inputs=("curves", "jobs", "forecasts"),
        outputs=("allocation", "allocation_figure"),
        code=_COMMON_CODE + ("tasks/allocate.py", "qoeflow/lifecycle/allocation.py", "qoeflow/lifecycle/qoe.py",
                             "qoeflow/lifecycle/planning.py"),
        entry={"run": "run"},
    ),
    "continue": TaskDef(
        name="continue",
        module="tasks.continue_training",
        inputs=("allocation", "checkpoints"),
        outputs=("continued_curves", "plan_vs_actual", "selection", "continued_checkpoints"),
        code=_COMMON_CODE + ("tasks/continue_training.py", "tasks/train.py", "qoeflow/lifecycle/training.py",
                             "qoeflow/lifecycle/planning.py", "qoeflow/models", "qoeflow/data"),
        entry={"run_item": "run_job", "gather": "gather"},
    ),
    "asha": TaskDef(  # Ray Tune by nature, so its code lives in flows/ (see flows/asha.py)
        name="asha",
        module="flows.asha",
        inputs=("allocation", "selection", "jobs"),
        outputs=("asha",),
        code=_COMMON_CODE + ("flows/asha.py", "tasks/train.py", "qoeflow/lifecycle/training.py",
                             "qoeflow/lifecycle/planning.py", "qoeflow/models", "qoeflow/data"),
        entry={"run": "run"},
    ),
    "report": TaskDef(
        name="report",
        module="tasks.report",
        inputs=("curves", "jobs", "forecast_figure", "scores", "allocation_figure", "allocation", "plan_vs_actual",
                "selection", "asha"),
        outputs=("html",),
        code=_COMMON_CODE + ("tasks/report.py",),
        entry={"run": "run"},
    ),
}


def task_io() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Task name -> (inputs, outputs), for DAG checks."""
    return {name: (t.inputs, t.outputs) for name, t in REGISTRY.items()}
