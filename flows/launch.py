"""`qoeflow run`: start (or join) the services, run the DAG flow, stop what was started."""

from __future__ import annotations

from pathlib import Path

from flows.runtime import check_ray_address, prefect_api, ray_init_kwargs, reaper


class RunFailed(RuntimeError):
    """A stage failed (the message names it)."""


def launch(root: Path, dag_path: str, params_path: str, sets: list[str], force: list[str], address: str | None) -> None:
    """Run the DAG once as a Prefect flow on Ray; raises RunFailed naming failed stages.

    A local Ray starts while the embedded Prefect server boots; both are stopped at the end, and by the
    reaper (flows/reaper.py) if this process is killed."""
    if address:
        check_ray_address(address)
    started_ray = []

    def start_ray() -> None:
        kwargs = ray_init_kwargs(address)  # before importing ray: it reads its settings at import
        import ray

        # "local": a new local instance, never the last `ray start` cluster of this machine that
        # ray.init() would otherwise join (someone else's, or one that is gone).
        ray.init(address=address or "local", **kwargs)
        started_ray.append(True)

    with reaper(root):
        try:
            with prefect_api(root, while_starting=start_ray):
                from flows.dag_flow import DagRunFailed, with_ray

                if address:
                    print(f"Connecting to an existing Ray instance at {address}", flush=True)
                try:
                    with_ray(address)(root=str(root), dag_path=dag_path, params_path=params_path, sets=sets,
                                      force=force)
                except DagRunFailed as exc:
                    raise RunFailed(str(exc)) from None
        finally:
            if started_ray:
                import ray

                ray.shutdown()
