"""Serve a DAG's flow as a Prefect deployment on a schedule (`qoeflow serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.dag_flow import dag_flow
from qoeflow.dag.spec import load_dag
from qoeflow.runlock import project_lock


@flow(name=dag_flow.name, log_prints=True, task_runner=dag_flow.task_runner)
def scheduled_dag_flow(
    root: str,
    dag_path: str = "dags/lifecycle.yaml",
    params_path: str = "params.yaml",
    sets: list[str] | None = None,
    force: list[str] | None = None,
) -> dict[str, Any]:
    """One scheduled run: the DAG flow under the project's run lock, as `qoeflow run` holds it. A run
    that finds the project busy (a `qoeflow run`, a `dvc repro` stage) fails at once naming it."""
    dag = load_dag(Path(root) / dag_path)
    outputs = [out.path for stage in dag.stages.values() for out in stage.outs.values()]
    with project_lock(Path(root), dag_path, outputs, command=f"qoeflow serve: scheduled run of {dag_path}"):
        return dag_flow.fn(root=root, dag_path=dag_path, params_path=params_path, sets=sets, force=force)


def serve(root: Path, dag_path: str, params_path: str, *, cron: str | None, interval: float | None, name: str) -> None:
    """Block, running the DAG whenever its schedule says; each run skips what is up to date."""
    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of cron or interval")
    parameters = {"root": str(root), "dag_path": dag_path, "params_path": params_path, "sets": [], "force": []}
    scheduled_dag_flow.serve(
        name=name,
        cron=cron,
        interval=interval,
        parameters=parameters,
        description=f"qoeflow DAG {dag_path} in {root}",
        print_starting_message=True,
        limit=1,  # runs of one project never overlap
    )
