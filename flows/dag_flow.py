"""The DAG as a Prefect flow whose stage tasks run on Ray.

The flow (the driver) walks the DAG: a stage whose dependencies are done is skipped when DVC says it
is up to date, otherwise its Ray tasks are submitted (one per `foreach` item, then a gather task);
independent stages and items run at once. Finished stages are committed to DVC, so `dvc repro`
sees them as up to date too. A failed stage stops its dependents only.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from prefect import flow, get_run_logger, task
from prefect.states import State
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from flows.bookkeeping import DvcBook, Outcome, ensure_dvc_repo, off_the_books, sync_dvc_file, write_summary
from flows.cluster import check_nodes, project_requirements, unoffered
from flows.progress import BOARD_PREFIX, LiveView, reporter
from flows.runtime import ray_init_kwargs
from flows.shipping import Shipment, Shipper, ShippingError, workspace
from flows.versioning import VersioningError, resolve_remote
from qoeflow.dag.spec import load_dag
from qoeflow.runlock import project_lock
from tasks import REGISTRY
from tasks.context import StageError, item_name
from tasks.runner import add_round, load_project, make_context, next_round, run_check, run_gather, run_item, run_single


class DagRunFailed(RuntimeError):
    """At least one stage failed; the message names them."""


def _context(root: str, dag_path: str, stage: str, tree: dict, board: str, round_: int = 0):
    dag = load_dag(Path(root) / dag_path)
    dag.path = dag_path
    ctx = make_context(Path(root), dag, stage, tree, log=get_run_logger().info, progress=reporter(board, stage))
    ctx.round = round_
    return ctx


@task(name="stage-item")
def item_task(root: str, dag_path: str, stage: str, tree: dict, board: str, index: int, round_: int = 0,
              ship: Shipment | None = None) -> dict:
    """One `foreach` item of a stage (in round `round_` of an iterating stage), on a Ray worker."""
    with workspace(root, dag_path, stage, f"item {index}", ship) as folder:
        summary = run_item(_context(folder.root if folder else root, dag_path, stage, tree, board, round_), index)
        return folder.finish(summary, final=False) if folder else summary


@task(name="stage-gather")
def gather_task(root: str, dag_path: str, stage: str, tree: dict, board: str, items: list[dict], round_: int = 0,
                ship: Shipment | None = None) -> dict:
    """The gather step of a `foreach` stage, on a Ray worker."""
    with workspace(root, dag_path, stage, "gather", ship) as folder:
        ctx = _context(folder.root if folder else root, dag_path, stage, tree, board, round_)
        summary = run_gather(ctx, items)
        if not summary.get("again"):
            _publish_headline(ctx)
        return folder.finish(summary, final=not summary.get("again")) if folder else summary


@task(name="stage")
def single_task(root: str, dag_path: str, stage: str, tree: dict, board: str, ship: Shipment | None = None) -> dict:
    """A stage without fan-out, on a Ray worker."""
    with workspace(root, dag_path, stage, "stage", ship) as folder:
        ctx = _context(folder.root if folder else root, dag_path, stage, tree, board)
        summary = run_single(ctx)
        _publish_headline(ctx)
        return folder.finish(summary, final=True) if folder else summary


def artifact_key(stage: str) -> str:
    """A stage's Prefect artifact key (lower-case letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-") or "stage"


def _publish_headline(ctx) -> None:
    """The finished stage's headline tables (tasks/headline.py) as a Markdown artifact on its task run, under
    the stage's key (the UI keeps each run's version). A headline that cannot be read is a warning: the
    stage's outputs are published and stay."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.headline import headline

    try:
        text = headline(ctx.root, ctx.dag, ctx.stage, ctx.tree, ctx.params)
    except Exception as exc:  # noqa: BLE001 - a report bug must not fail a stage that did its work
        get_run_logger().warning(f"stage '{ctx.stage}': no headline artifact ({type(exc).__name__}: {exc})")
        return
    if text:
        create_markdown_artifact(markdown=text, key=artifact_key(ctx.stage),
                                 description=f"stage {ctx.stage}: {ctx.spec.description or ctx.spec.task}")


def _ray_options(resources) -> dict:
    """Ray task options for a stage's `resources`."""
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
    return {**options, "resources": resources.custom} if resources.custom else options


def _shipper(root: Path, dag) -> Shipper | None:
    """On a cluster (Ray ships the project's code: flows/cluster.py), the stage tasks' files travel through the
    project's DVC remote; every node must have the project's dependencies. None on a local Ray."""
    from flows.runtime import ServiceError, is_loopback

    if not ray.get_runtime_context().runtime_env.get("working_dir"):
        return None
    logger = get_run_logger()
    check_nodes(project_requirements(root))
    try:
        remote = resolve_remote(root)
    except VersioningError as exc:
        raise ServiceError(str(exc)) from None
    logger.info("on a cluster: stage tasks run in the code Ray shipped, in folders of their own, and exchange "
                "outputs through DVC remote '%s' (%s)", remote.name, remote.url)
    nodes = {n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive")}
    if "://" not in remote.url and not all(is_loopback(address) for address in nodes):
        logger.warning("DVC remote '%s' is a folder (%s): every node must see it at that path (a shared mount); "
                       "on a cluster of machines use object storage (README, 'Running on a Ray cluster')",
                       remote.name, remote.url)
    return Shipper(root, dag, remote)


class _Clock:
    """Adds the seconds spent in each kind of driver work to `timings` (the overhead breakdown of a run)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, key: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start


class _StageRun:
    """A stage in flight: its phase, its round (iterating `foreach` stages), its Prefect futures, and the
    summary of its rounds so far."""

    def __init__(self, name: str, phase: str, futures: list) -> None:
        self.name, self.phase, self.futures = name, phase, futures
        self.start = time.perf_counter()
        self.round, self.total = 0, None


def _failure_message(state: State) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # result unavailable: fall back on the state's message
        exc = err
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name


@flow(
    name="qoeflow-dag",
    log_prints=True,
    # "local": a Ray of its own (scheduled runs), never the last `ray start` cluster that ray.init() would join
    # (on a cluster, the project shipped is the current folder: `qoeflow serve` runs in the project's root)
    task_runner=RayTaskRunner(address=os.environ.get("RAY_ADDRESS") or "local",
                              init_kwargs=ray_init_kwargs(os.environ.get("RAY_ADDRESS"), root=Path.cwd())),
)
def dag_flow(
    root: str,
    dag_path: str = "dags/lifecycle.yaml",
    params_path: str = "params.yaml",
    sets: list[str] | None = None,
    force: list[str] | None = None,
) -> dict[str, Any]:
    """Run a qoeflow DAG: every stale stage on Ray, every fresh one skipped; under the project's run lock
    (`qoeflow run` holds it already; a scheduled run of `qoeflow serve` takes it here, and fails at once
    naming the holder when the project is busy)."""
    started = time.perf_counter()
    root_path = Path(root)
    dag, tree, _ = load_project(root_path, dag_path, params_path, sets)
    outputs = [out.path for stage in dag.stages.values() for out in stage.outs.values()]
    with project_lock(root_path, dag_path, outputs, command=f"qoeflow: a scheduled run of {dag_path}"):
        return _run_dag(root, dag_path, dag, tree, force, started)


def _run_dag(root: str, dag_path: str, dag, tree: dict, force: list[str] | None, started: float) -> dict[str, Any]:
    """The flow's body: walk the DAG, submit the stale stages, commit what ran, record the run."""
    logger = get_run_logger()
    root_path = Path(root)
    unknown = sorted(set(force or []) - set(dag.stages))
    if unknown:
        raise ValueError(f"--force: no stage(s) {unknown} in {dag_path} (stages: {', '.join(dag.stages)})")
    if ensure_dvc_repo(root_path):
        logger.info("initialised a DVC repository in %s", root_path)
    if sync_dvc_file(root_path, dag):
        logger.info("wrote %s from %s", dag.dvc_file(), dag_path)
    book = DvcBook(root_path, dag)
    shipper = _shipper(root_path, dag)
    timings: dict[str, float] = {"prepare": time.perf_counter() - started}
    clock = _Clock(timings)
    off_books = off_the_books(root_path, dag, tree)
    if off_books:
        logger.warning("params differ from params.yaml for %s: these run and are not recorded in dvc.lock", sorted(off_books))

    outcomes = {name: Outcome(name, "pending") for name in dag.order()}
    running: dict[str, _StageRun] = {}
    view = LiveView(f"{BOARD_PREFIX}{uuid.uuid4().hex[:12]}", enabled=sys.stderr.isatty())

    def submit(name: str) -> None:
        stage = dag.stages[name]
        ship = None
        try:
            with clock("check"):
                wanted = stage.resources
                why = unoffered(wanted.cpus, wanted.gpus, wanted.custom, ray.cluster_resources())
                if why:
                    raise StageError(f"stage '{name}' cannot be scheduled: {why}")
                run_check(make_context(root_path, dag, name, tree, log=logger.info))
            if shipper is not None:
                shipper.begin(name)
                ship = shipper.shipment(name)
        except (StageError, ShippingError) as exc:
            outcome = outcomes[name]
            outcome.status, outcome.message = "failed", str(exc)
            logger.error("stage %s refused: %s", name, outcome.message)
            record()
            return
        args = (root, dag_path, name, tree, view.board_name)
        view.stage_started(name)
        with remote_options(**_ray_options(stage.resources)):
            if REGISTRY[stage.task].fans_out:
                running[name] = _StageRun(name, "items", [])
                submit_items(running[name], range(len(make_context(root_path, dag, name, tree).items())), ship)
            else:
                futures = [single_task.with_options(retries=stage.retries, task_run_name=name)
                           .submit(*args, ship=ship)]
                running[name] = _StageRun(name, "single", futures)

    def submit_items(run: _StageRun, indices, ship: Shipment | None) -> None:
        stage = dag.stages[run.name]
        items = make_context(root_path, dag, run.name, tree).items()
        suffix = f" round {run.round}" if run.round else ""
        run.futures = []
        for i in indices:
            label = item_name(items[i])
            mine = shipper.for_item(ship, run.name, label) if shipper is not None and ship is not None else None
            run.futures.append(item_task.with_options(retries=stage.retries, task_run_name=f"{run.name}[{label}]{suffix}")
                               .submit(root, dag_path, run.name, tree, view.board_name, i, run.round, ship=mine))
        run.phase = "items"

    def schedule() -> None:
        for name, outcome in outcomes.items():
            if outcome.status != "pending" or name in running:
                continue
            deps = dag.stages[name].deps
            bad = [d for d in deps if outcomes[d].status in ("failed", "blocked")]
            if bad:
                outcome.status, outcome.message = "blocked", f"upstream stage '{bad[0]}' did not succeed"
                continue
            if any(outcomes[d].status not in ("ran", "cached") for d in deps):
                continue
            if name not in (force or []) and name not in off_books:
                with clock("dvc_status"):
                    reasons = book.stale_reasons(name)
                if not reasons:
                    outcome.status = "cached"
                    outcome.outputs = [o.path for o in dag.stages[name].outs.values()]
                    logger.info("stage %s: up to date, skipped", name)
                    if shipper is not None:  # the stages after it, on other nodes, pull its outputs from the remote
                        try:
                            with clock("dvc_push"):
                                book.push(name, shipper.remote)
                        except VersioningError as exc:
                            outcome.status, outcome.message = "failed", str(exc)
                            logger.error("stage %s: %s", name, exc)
                    continue
                logger.info("stage %s: stale (%s)", name, "; ".join(reasons)[:300])
            logger.info("stage %s: submitting to Ray", name)
            with clock("submit"):
                submit(name)

    def fail(run: _StageRun, message: str) -> None:
        outcome = outcomes[run.name]
        del running[run.name]
        view.stage_ended(run.name)
        outcome.status, outcome.seconds, outcome.message = "failed", time.perf_counter() - run.start, message
        logger.error("stage %s FAILED: %s", run.name, message)
        record()

    def advance(run: _StageRun) -> None:
        states = [f.state for f in run.futures]
        failed = [s for s in states if not s.is_completed()]
        outcome = outcomes[run.name]
        if failed:
            fail(run, _failure_message(failed[0]))
            return
        with clock("results"):
            results = [f.result() for f in run.futures]
        ship = None
        if shipper is not None and (run.phase == "items" or results[0].get("again")):
            try:
                with clock("state"):  # what the items (or the round) changed, for the next step
                    results = [shipper.keep(run.name, r) for r in results]
                    ship = shipper.shipment(run.name)
            except ShippingError as exc:
                fail(run, str(exc))
                return
        if run.phase == "items":
            resources = dag.stages[run.name].resources
            with remote_options(**_ray_options(resources.model_copy(update={"cpus": 1, "gpus": 0}))), clock("submit"):
                run.futures = [
                    gather_task.with_options(task_run_name=f"{run.name}[gather]").submit(
                        root, dag_path, run.name, tree, view.board_name, results, run.round, ship=ship)
                ]
            run.phase = "gather"
            return
        if run.phase == "gather":
            run.total = add_round(run.total, results[0])
            ctx = make_context(root_path, dag, run.name, tree)
            ctx.round = run.round
            try:
                again = next_round(ctx, run.total)
            except StageError as exc:
                fail(run, str(exc))
                return
            if again:
                run.round += 1
                logger.info("stage %s: round %d, items %s", run.name, run.round, again)
                with remote_options(**_ray_options(dag.stages[run.name].resources)), clock("submit"):
                    submit_items(run, again, ship)
                return
            results = [run.total]
        summary = results[0]
        if shipper is not None:
            try:
                with clock("land"):
                    shipper.land(book, run.name, summary, record=run.name not in off_books)
            except VersioningError as exc:
                fail(run, str(exc))
                return
            outcome.transfer = shipper.transfer.pop(run.name, {})
        elif run.name not in off_books:
            with clock("dvc_commit"):
                book.commit(run.name)
        del running[run.name]
        view.stage_ended(run.name)
        outcome.status = "ran"
        outcome.seconds = time.perf_counter() - run.start
        outcome.compute_seconds = float(summary.get("compute_seconds", 0.0))
        outcome.critical_seconds = float(summary.get("critical_seconds", outcome.compute_seconds))
        outcome.outputs = list(summary.get("outputs", []))
        notes = ([f"diverged: {', '.join(summary['diverged'])}"] if summary.get("diverged") else []) + list(summary.get("notes", []))
        outcome.message = "; ".join(notes)
        logger.info("stage %s: ran in %.1f s", run.name, outcome.seconds)
        record()

    def record() -> None:  # the run so far, for the stages that come next (the report shows it)
        write_summary(root_path, dag_path, time.perf_counter() - started, [o for o in outcomes.values()
                                                                         if o.status != "pending"], timings)

    finished: set = set()  # Ray object refs whose task has ended
    with view:
        schedule()
        while running:
            # Block on the refs still pending only: a ref already done would make ray.wait return at once,
            # and the loop would hammer the Prefect API with state reads (measured: server at 70 % CPU).
            pending = [f.wrapped_future for r in running.values() for f in r.futures if f.wrapped_future not in finished]
            if pending:
                with clock("waiting"):
                    ready, _ = ray.wait(pending, num_returns=1, timeout=0.5 if view.enabled else 5.0)
                if ready:
                    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                finished.update(ready)
            view.refresh()
            for run in list(running.values()):
                if all(f.wrapped_future in finished for f in run.futures):
                    with clock("results"):
                        for f in run.futures:
                            f.wait(timeout=0)  # records the final state Ray returned
                    advance(run)
            schedule()

    summary = write_summary(root_path, dag_path, time.perf_counter() - started, list(outcomes.values()), timings)
    bad = [o for o in outcomes.values() if o.status == "failed"]
    if bad:
        raise DagRunFailed("; ".join(f"stage '{o.stage}' failed: {o.message}" for o in bad))
    return summary


def with_ray(address: str | None, root: Path):
    """The flow bound to a Ray task runner: a local Ray sized to this machine, or the cluster at `address`
    (the project at `root` shipped to its nodes)."""
    runner = RayTaskRunner(address=address, init_kwargs=ray_init_kwargs(address, root=root))
    return dag_flow.with_options(task_runner=runner)
