"""The declarative DAG: pydantic models for `dags/*.yaml` and their validation.

A DAG names stages; each stage runs a registered task, depends on other stages, declares the
params keys it reads, the outputs it writes (by name, under `data/`), an optional `foreach`
fan-out over a list in params, the resources each of its Ray tasks needs, and retries.

A DAG may lay params of its own over `params.yaml`: a `params_file` (a YAML file that DVC tracks as
params, so `dvc exp run -S FILE:KEY=VALUE` changes what the DAG runs), then inline `overrides`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class DagError(ValueError):
    """A DAG file that cannot run; the message names the file, the stage and the reason."""


RAY_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory")


class Resources(BaseModel):
    """What one Ray task of a stage needs: CPUs, GPUs, and `custom` Ray resources, the labels that pin a stage
    to the nodes offering them (`ray start --resources '{"LABEL": N}'`)."""

    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1.0, gt=0, le=256)
    gpus: float = Field(0.0, ge=0, le=16)
    custom: dict[str, float] = {}

    @field_validator("custom")
    @classmethod
    def _custom(cls, custom: dict[str, float]) -> dict[str, float]:
        for name, amount in custom.items():
            plain = name.replace("_", "a").replace("-", "a")
            if not name or name in RAY_BUILTIN or name.startswith("node:") or not plain.isalnum():
                raise ValueError(f"custom resource {name!r}: a label of letters, digits, '-' and '_' "
                                 f"(not {', '.join(RAY_BUILTIN)}; use cpus and gpus for those)")
            if not 0 < amount <= 10_000:
                raise ValueError(f"custom resource {name!r}: amount {amount} must be in (0, 10000]")
        return custom


class Output(BaseModel):
    """One artifact a stage writes. `metric`/`plot` tell DVC how to show it; `persist` keeps it across reruns."""

    model_config = ConfigDict(extra="forbid")
    path: str
    metric: bool = False
    plot: bool | dict[str, str] = False
    persist: bool = False

    @field_validator("path")
    @classmethod
    def _under_data(cls, path: str) -> str:
        clean = Path(path)
        if clean.is_absolute() or ".." in clean.parts or not clean.parts or clean.parts[0] != "data":
            raise ValueError(f"output path {path!r} must be a relative path under data/")
        return clean.as_posix()


class Stage(BaseModel):
    """One node of the DAG."""

    model_config = ConfigDict(extra="forbid")
    task: str
    deps: list[str] = []
    params: list[str] = []
    outs: dict[str, Output] = {}
    foreach: str | None = None
    resources: Resources = Resources()
    retries: int = Field(0, ge=0, le=10)
    description: str = ""

    @field_validator("outs", mode="before")
    @classmethod
    def _short_outs(cls, outs: Any) -> Any:
        if isinstance(outs, Mapping):
            return {name: {"path": o} if isinstance(o, str) else o for name, o in outs.items()}
        return outs


class Dag(BaseModel):
    """A whole DAG file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    dvc_dir: str = "."
    params_file: str | None = None
    overrides: dict[str, Any] = {}
    stages: dict[str, Stage]
    path: str = ""

    @field_validator("params_file")
    @classmethod
    def _params_file(cls, path: str | None) -> str | None:
        if path is None:
            return None
        clean = Path(path)
        if clean.is_absolute() or ".." in clean.parts or clean.suffix not in (".yaml", ".yml"):
            raise ValueError(f"params_file {path!r} must be a relative path to a .yaml file inside the project")
        return clean.as_posix()

    @model_validator(mode="after")
    def _non_empty(self) -> "Dag":
        if not self.stages:
            raise ValueError("a DAG needs at least one stage")
        return self

    def order(self) -> list[str]:
        """Stage names in a topological order (stable: file order among equals)."""
        return topological_order({name: s.deps for name, s in self.stages.items()})

    def downstream(self, name: str) -> set[str]:
        """Every stage that depends, directly or not, on `name`."""
        found: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for other, stage in self.stages.items():
                if current in stage.deps and other not in found:
                    found.add(other)
                    frontier.append(other)
        return found

    def upstream(self, name: str) -> list[str]:
        """Every stage `name` depends on, directly or not, nearest first."""
        found: list[str] = []
        frontier = list(self.stages[name].deps)
        while frontier:
            current = frontier.pop(0)
            if current not in found:
                found.append(current)
                frontier.extend(self.stages[current].deps)
        return found

    def custom_resources(self) -> dict[str, float]:
        """Every custom Ray resource a stage asks for, with the largest amount one task asks."""
        wanted: dict[str, float] = {}
        for stage in self.stages.values():
            for name, amount in stage.resources.custom.items():
                wanted[name] = max(wanted.get(name, 0.0), amount)
        return wanted

    def params_overrides(self, root: str | Path) -> dict[str, Any]:
        """What this DAG lays over `params.yaml`: its `params_file` (if any), then its inline `overrides`."""
        if self.params_file is None:
            return self.overrides
        from qoeflow.params import deep_merge, read_params_file

        path = Path(root) / self.params_file
        if not path.is_file():
            raise DagError(f"{self.path or self.name}: params_file {self.params_file}: no such file")
        return deep_merge(read_params_file(path), self.overrides)

    def dvc_file(self) -> str:
        """Where this DAG's exported `dvc.yaml` lives, relative to the project root."""
        return (Path(self.dvc_dir) / "dvc.yaml").as_posix()


def topological_order(deps: Mapping[str, list[str]]) -> list[str]:
    """Kahn's algorithm; raises DagError naming a cycle."""
    remaining = {name: set(d) for name, d in deps.items()}
    order: list[str] = []
    while remaining:
        ready = [n for n, d in remaining.items() if not d]
        if not ready:
            raise DagError(f"cycle between stages: {' -> '.join(_find_cycle(remaining))}")
        for name in ready:
            order.append(name)
            del remaining[name]
        for d in remaining.values():
            d.difference_update(ready)
    return order


def _find_cycle(remaining: Mapping[str, set[str]]) -> list[str]:
    start = next(iter(remaining))
    path = [start]
    while True:
        nxt = sorted(remaining[path[-1]])[0]
        if nxt in path:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)


def _format_validation(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "stages":
            where = f"stage '{loc[1]}': "
            loc = loc[2:]
        key = ".".join(str(p) for p in loc)
        reason = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{where}{key + ': ' if key else ''}{reason}")
    return "; ".join(lines)


def parse_dag(text: str, path: str = "<dag>") -> Dag:
    """Parse DAG YAML text into a `Dag` (structure only; see `check_dag` for the cross-checks)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DagError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise DagError(f"{path}: expected a mapping with 'name' and 'stages', got {type(raw).__name__}")
    try:
        dag = Dag.model_validate({**raw, "path": path})
    except ValidationError as exc:
        raise DagError(f"{path}: {_format_validation(exc)}") from None
    return dag


def load_dag(path: str | Path) -> Dag:
    """Read and parse a DAG file."""
    p = Path(path)
    if not p.is_file():
        raise DagError(f"{p}: no such DAG file")
    return parse_dag(p.read_text(), str(path))


def _has_key(tree: Any, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def lookup(tree: Any, dotted: str) -> Any:
    """The value at a dotted key (`train.jobs.0.epochs`) of nested dicts and lists."""
    node = tree
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def check_dag(
    dag: Dag,
    tasks: Mapping[str, tuple[Collection[str], Collection[str]]],
    params: Mapping[str, Any],
) -> None:
    """Cross-check a DAG against the task registry and the params tree.

    `tasks` maps each registered task name to (the inputs it reads, the outputs it writes).
    Raises DagError naming the file, the stage and the reason.
    """
    where = dag.path or dag.name
    problems: list[str] = []
    writers: dict[str, str] = {}
    for name, stage in dag.stages.items():
        if stage.task not in tasks:
            problems.append(f"stage '{name}': unknown task '{stage.task}' (known: {', '.join(sorted(tasks))})")
            continue
        for dep in stage.deps:
            if dep not in dag.stages:
                problems.append(f"stage '{name}': depends on missing stage '{dep}'")
        for key in stage.params + ([stage.foreach] if stage.foreach else []):
            if not _has_key(params, key):
                problems.append(f"stage '{name}': params key '{key}' is absent from params.yaml")
        if stage.foreach and _has_key(params, stage.foreach) and not isinstance(lookup(params, stage.foreach), list):
            problems.append(f"stage '{name}': foreach key '{stage.foreach}' is not a list")
        inputs, outputs = tasks[stage.task]
        missing = sorted(set(outputs) - set(stage.outs))
        extra = sorted(set(stage.outs) - set(outputs))
        if missing:
            problems.append(f"stage '{name}': task '{stage.task}' writes outputs {missing} that the stage does not declare")
        if extra:
            problems.append(f"stage '{name}': outputs {extra} are not written by task '{stage.task}' (it writes {sorted(outputs)})")
        for out in stage.outs.values():
            if out.path in writers:
                problems.append(f"stages '{writers[out.path]}' and '{name}' both write {out.path}")
            writers[out.path] = name
        for needed in inputs:
            providers = [d for d in stage.deps if d in dag.stages and needed in dag.stages[d].outs]
            if len(providers) != 1:
                problems.append(
                    f"stage '{name}': task '{stage.task}' reads '{needed}', which must come from exactly one of its deps "
                    f"(found {len(providers)} among {stage.deps})"
                )
    paths = sorted(writers)
    for a, b in zip(paths, paths[1:]):
        if b.startswith(a + "/"):
            problems.append(f"output {b} (stage '{writers[b]}') lies inside output {a} (stage '{writers[a]}')")
    if problems:
        raise DagError(f"{where}: " + "; ".join(problems))
    try:
        dag.order()
    except DagError as exc:
        raise DagError(f"{where}: {exc}") from None


def input_path(dag: Dag, stage_name: str, input_name: str) -> str:
    """Path of the upstream output that `stage_name` reads as `input_name`."""
    for dep in dag.stages[stage_name].deps:
        out = dag.stages[dep].outs.get(input_name)
        if out is not None:
            return out.path
    raise DagError(f"{dag.path}: stage '{stage_name}' has no dependency providing '{input_name}'")
