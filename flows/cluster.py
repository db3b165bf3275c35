"""Joining a Ray cluster: the project's code shipped by Ray, nodes checked for the project's dependencies,
and stages' custom resources checked against what the nodes offer.

On a cluster (`--ray-address`), Ray uploads the project folder, without its data and environments, as the
job's `working_dir`: every task runs that copy of the code, whatever the node's filesystem holds.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from flows.runtime import ServiceError

# Anchored patterns (gitignore syntax, relative to the project root): "/data/" is the project's data folder,
# never the `qoeflow/data/` package.
SHIPPED_EXCLUDES = ["/data/", "/.venv/", "/venv/", "/.git/", "/.dvc/cache/", "/.dvc/tmp/", "/.qoeflow/",
                    "/benchmarks/work/", "/dvc_plots/", "__pycache__/", "*.pyc", ".pytest_cache/"]


def shipped_code(root: Path) -> dict:
    """The `runtime_env` entries that ship the project's code to every node of a cluster."""
    return {"working_dir": str(root), "excludes": list(SHIPPED_EXCLUDES)}


def project_requirements(root: Path) -> list[str]:
    """The project's declared dependencies (`[project] dependencies` of its pyproject.toml), as written."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return []
    with open(path, "rb") as f:  # catalog-ok: the project's metadata, not an artifact
        return list(tomllib.load(f).get("project", {}).get("dependencies", []))


def unmet(requirements: list[str]) -> list[str]:
    """The requirements this Python environment does not meet, each with what it has instead."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    problems = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            problems.append(f"{req.name} is not installed (the project needs {text.split('#')[0].strip()})")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name} {have} is installed; the project needs {req.name}{req.specifier}")
    return problems


def check_nodes(requirements: list[str], timeout: float = 120.0) -> None:
    """Refuse a cluster with a node whose Python lacks one of `requirements` (or has another version), or that
    cannot run the project's tasks at all: the message names each package and each node. One small task
    per alive node, pinned to it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not requirements:
        return
    probe = ray.remote(num_cpus=0)(unmet)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(requirements)
            for n in nodes]
    ray.wait(refs, num_returns=len(refs), timeout=timeout)
    lines = []
    for node, ref in zip(nodes, refs):
        where = f"node {node.get('NodeManagerAddress', '?')} (id {node['NodeID'][:12]})"
        try:
            problems = ray.get(ref, timeout=0)
        except ray.exceptions.GetTimeoutError:
            problems = [f"did not run a task within {timeout:.0f} s"]
        except ray.exceptions.RayError as exc:  # e.g. the shipped code could not be set up there
            problems = [f"could not run a task: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"]
        if problems:
            lines.append(f"{where}: " + "; ".join(problems))
    if lines:
        raise ServiceError("the Ray cluster cannot run this project: " + " | ".join(lines)
                           + ". Install the project's dependencies on every node (pip install them, or use the "
                             "driver's image): see README, 'Running on a Ray cluster'")


def unoffered(cpus: float, gpus: float, custom: dict[str, float], offered: dict[str, float]) -> str | None:
    """Why no node can run a task that asks for these resources (None: some node can), judged from the
    cluster's total of each resource."""
    wanted = {"CPU": cpus, "GPU": gpus, **custom}
    missing = [f"{name} {amount:g} (the cluster has {offered.get(name, 0):g})" for name, amount in wanted.items()
               if amount > 0 and offered.get(name, 0) < amount]
    if not missing:
        return None
    labels = sorted(k for k in offered if k not in ("CPU", "GPU", "memory", "object_store_memory")
                    and not k.startswith(("node:", "accelerator_type:")))
    return (f"it asks Ray for {', '.join(missing)}; no node offers that (custom resources offered: "
            f"{', '.join(labels) or 'none'}). Start a node with them, e.g. `ray start --address HEAD "
            f"--resources '{{\"LABEL\": 1}}'`, or change the stage's `resources`")
