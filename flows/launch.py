"""`qoeflow run`: start (or join) the services, run the DAG flow, stop what was started."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from flows.bookkeeping import add_to_summary
from flows.runtime import check_ray_address, prefect_api, ray_init_kwargs, reaper, shutdown_ray, ui_address
from flows.warmup import warm_workers
from qoeflow.dag.spec import load_dag


class RunFailed(RuntimeError):
    """A stage failed (the message names it)."""


def launch(root: Path, dag_path: str, params_path: str, sets: list[str], force: list[str], address: str | None,
           keep_ui: Callable[[str], None] | None = None) -> None:
    """Run the DAG once as a Prefect flow on Ray; raises RunFailed naming failed stages.

    A local Ray starts while the embedded Prefect server boots; both are stopped at the end, and by the
    reaper (flows/reaper.py) if this process is killed. With `keep_ui`, the embedded server serves the
    Prefect UI from the start, and after the run (Ray stopped) `keep_ui(ui_address)` runs while it is up."""
    if address:
        check_ray_address(address)
    started_ray = []
    marks = {"start": time.perf_counter()}

    def start_ray() -> None:
        # before importing ray: it reads its settings at import
        kwargs = ray_init_kwargs(address, root=root, custom=load_dag(root / dag_path).custom_resources())
        import ray

        # "local": a new local instance, never the last `ray start` cluster of this machine that
        # ray.init() would otherwise join (someone else's, or one that is gone).
        ray.init(address=address or "local", **kwargs)
        started_ray.append(True)
        marks["ray_ready"] = time.perf_counter()
        if not address:  # a local Ray: its workers import the stage code while the Prefect server boots
            warm_workers(ray.cluster_resources().get("CPU", 1))

    def stop_ray() -> None:
        if started_ray:
            shutdown_ray()
            started_ray.clear()

    failed = None
    try:
        with reaper(root):
            try:
                with prefect_api(root, while_starting=start_ray, ui=keep_ui is not None) as url:
                    marks["api_ready"] = time.perf_counter()
                    from flows.dag_flow import DagRunFailed, with_ray

                    if address:
                        print(f"Connecting to an existing Ray instance at {address}", flush=True)
                    if keep_ui is not None:
                        print(f"Prefect UI: {ui_address(url)}", flush=True)
                    marks["flow_start"] = time.perf_counter()
                    try:
                        with_ray(address, root)(root=str(root), dag_path=dag_path, params_path=params_path, sets=sets,
                                          force=force)
                    except DagRunFailed as exc:
                        failed = RunFailed(str(exc))
                    finally:
                        marks["flow_end"] = time.perf_counter()
                    if keep_ui is not None:
                        stop_ray()
                        marks["stopped"] = time.perf_counter()
                        keep_ui(ui_address(url))
            finally:
                stop_ray()
    finally:
        marks.setdefault("stopped", time.perf_counter())
        _record_services(root, marks)
    if failed is not None:
        raise failed


def _record_services(root: Path, marks: dict[str, float]) -> None:
    """Add the seconds spent starting and stopping the services to the run record (the overhead breakdown)."""
    if "flow_end" not in marks:
        return
    start = marks["start"]
    add_to_summary(root, "services", {
        "ray_start": marks.get("ray_ready", start) - start,  # overlaps the server's start
        "prefect_api_ready": marks.get("api_ready", start) - start,
        "flow_import": marks["flow_start"] - marks.get("api_ready", start),
        "flow": marks["flow_end"] - marks["flow_start"],
        "shutdown": marks["stopped"] - marks["flow_end"],
    })
