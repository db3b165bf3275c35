"""Run a stage, or one piece of it, in this process. `qoeflow stage` (hence `dvc repro`) runs the whole
stage here; `qoeflow run` calls the pieces from Prefect tasks on Ray workers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from qoeflow.dag.spec import Dag, check_dag, load_dag
from qoeflow.params import Params, check_chosen_jobs, effective_tree, validate_params
from tasks import REGISTRY, task_io
from tasks.context import TMP, StageContext, StageError, remove_path


def load_project(root: Path, dag_path: str, params_path: str = "params.yaml", sets: list[str] | None = None):
    """The checked DAG, the effective params tree and its validated model."""
    dag = load_dag(root / dag_path)
    dag.path = dag_path
    params_file = root / params_path
    overrides = dag.params_overrides(root)
    tree = effective_tree(params_file, overrides, sets)
    layers = " and ".join(([dag.params_file] if dag.params_file else [])
                          + ([f"{dag_path} overrides"] if dag.overrides else []) + (["--set"] if sets else []))
    source = f"{params_path} (with {layers})" if layers else params_path
    params = validate_params(tree, source)
    check_dag(dag, task_io(), tree)
    check_chosen_jobs(params, sorted({key.split(".")[0] for s in dag.stages.values() for key in s.params}), source)
    return dag, tree, params


def make_context(
    root: Path,
    dag: Dag,
    stage: str,
    tree: dict[str, Any],
    params: Params | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int, str], None] | None = None,
) -> StageContext:
    """A context for one stage of a loaded project."""
    if stage not in dag.stages:
        raise StageError(f"{dag.path}: no stage '{stage}' (stages: {', '.join(dag.stages)})")
    ctx = StageContext(root=root, dag=dag, stage=stage, params=params or validate_params(tree), tree=tree, progress=progress)
    if log is not None:
        ctx.log = log
    return ctx


def _guarded(ctx: StageContext, reads: tuple[str, ...], fn: Callable[..., dict], *args: Any) -> dict:
    start = time.perf_counter()
    ctx.require_inputs(reads)
    remove_path(ctx.root / TMP / ctx.stage)  # what an earlier, killed attempt left unpublished
    try:
        summary = dict(fn(ctx, *args) or {})
    except BaseException:
        ctx.discard()
        raise
    summary.setdefault("compute_seconds", time.perf_counter() - start)
    return summary


MAX_ROUNDS = 1000  # an iterating stage that asks for more rounds than this has a bug


def run_item(ctx: StageContext, index: int) -> dict:
    """One `foreach` item of a stage (in round `ctx.round`)."""
    task = REGISTRY[ctx.spec.task]
    return _guarded(ctx, task.item_reads(ctx.dag, ctx.stage), task.function("run_item"), ctx.items()[index])


def run_gather(ctx: StageContext, item_summaries: list[dict]) -> dict:
    """The gather step of a `foreach` stage: combines the items and publishes the outputs, or asks for
    another round: `summary["again"]` lists the indices of the items to run again (see `next_round`)."""
    task = REGISTRY[ctx.spec.task]
    summary = _guarded(ctx, task.reads(ctx.dag, ctx.stage), task.function("gather"), item_summaries)
    items = [s.get("compute_seconds", 0.0) for s in item_summaries]
    summary["critical_seconds"] = summary["compute_seconds"] + max(items, default=0.0)  # items ran side by side
    summary["compute_seconds"] = summary["compute_seconds"] + sum(items)
    return summary


def next_round(ctx: StageContext, summary: dict) -> list[int]:
    """The items a gather summary asks to run again (none: the stage is done), checked."""
    again = list(summary.get("again") or [])
    n = len(ctx.items())
    bad = [i for i in again if not isinstance(i, int) or not 0 <= i < n]
    if bad:
        raise StageError(f"stage '{ctx.stage}': its gather asked to run items {bad} again; it has items 0..{n - 1}")
    if again and ctx.round + 1 >= MAX_ROUNDS:
        raise StageError(f"stage '{ctx.stage}': still asking for more rounds after {MAX_ROUNDS}")
    return again


def add_round(total: dict | None, summary: dict) -> dict:
    """A stage's summary over its rounds so far: the last round's, with the seconds of all of them."""
    if total is None:
        return summary
    for key in ("compute_seconds", "critical_seconds"):
        summary[key] = summary.get(key, 0.0) + total.get(key, 0.0)
    return summary


def run_single(ctx: StageContext) -> dict:
    """A stage without fan-out."""
    task = REGISTRY[ctx.spec.task]
    return _guarded(ctx, task.reads(ctx.dag, ctx.stage), task.function("run"))


def run_check(ctx: StageContext) -> None:
    """The stage's `check`, if it has one: refuses the stage (StageError) before any work starts."""
    check = REGISTRY[ctx.spec.task].function("check")
    if check is not None:
        check(ctx)


def run_stage(ctx: StageContext) -> dict:
    """A whole stage in this process: its items one after another, then gather (again for each round the
    gather asks for); or its single run."""
    run_check(ctx)
    if REGISTRY[ctx.spec.task].fans_out:
        if not ctx.spec.foreach:
            raise StageError(f"{ctx.dag.path}: stage '{ctx.stage}': task '{ctx.spec.task}' needs a `foreach` list")
        indices, total = list(range(len(ctx.items()))), None
        while True:
            items = [run_item(ctx, i) for i in indices]
            total = add_round(total, run_gather(ctx, items))
            indices = next_round(ctx, total)
            if not indices:
                return total
            ctx.round += 1
    return run_single(ctx)
