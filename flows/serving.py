"""Serve a DAG's flow as a Prefect deployment on a schedule (`qoeflow serve`)."""

from __future__ import annotations

from pathlib import Path

from flows.dag_flow import dag_flow


def serve(root: Path, dag_path: str, params_path: str, *, cron: str | None, interval: float | None, name: str) -> None:
    """Block, running the DAG whenever its schedule says; each run skips what is up to date."""
    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of cron or interval")
    parameters = {"root": str(root), "dag_path": dag_path, "params_path": params_path, "sets": [], "force": []}
    dag_flow.serve(  # each run takes the project's run lock (see dag_flow)
        name=name,
        cron=cron,
        interval=interval,
        parameters=parameters,
        description=f"qoeflow DAG {dag_path} in {root}",
        print_starting_message=True,
        limit=1,  # runs of one project never overlap
    )
