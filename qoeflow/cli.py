"""The `qoeflow` command.

This is the one entry point above the layers: `run` and `serve` import `flows` (Prefect, Ray),
`stage` imports `tasks` (no Prefect, no Ray), and `dag` needs neither. Heavy imports are lazy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_DAG = "dags/lifecycle.yaml"


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _fail(message: str, code: int = 2) -> int:
    from rich.markup import escape

    _console().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return code


def summary_table(summary: dict):
    """The end-of-run table: stage, status, seconds, outputs."""
    from rich.markup import escape
    from rich.table import Table

    colours = {"ran": "green", "cached": "cyan", "failed": "red", "blocked": "yellow", "pending": "white"}
    table = Table(title=f"qoeflow run of {summary['dag']} in {summary['wall_seconds']:.1f} s")
    for column in ("stage", "status", "seconds", "outputs", "note"):
        table.add_column(column, overflow="fold")
    for s in summary["stages"]:
        table.add_row(
            s["stage"], f"[{colours.get(s['status'], 'white')}]{s['status']}[/]", f"{s['seconds']:.1f}",
            escape("\n".join(s["outputs"])), escape(s["message"][:300]),
        )
    return table


class _Refused(Exception):
    """The command's project cannot run; its error has been printed, `code` is the exit status (`main`
    returns it)."""

    def __init__(self, code: int) -> None:
        self.code = code


def _project(args: argparse.Namespace, sets: list[str] | None = None):
    """The checked DAG, params tree and params of the command's `--dag` and `--params` (every stage task
    registered first: flows/ registers those whose code lives there); refused with the reason printed."""
    from qoeflow.dag.spec import DagError
    from qoeflow.params import ParamsError

    import flows  # noqa: F401  registers the stages whose code lives in flows/
    from tasks.runner import load_project

    try:
        return load_project(Path.cwd(), args.dag, args.params, sets)
    except (DagError, ParamsError) as exc:
        raise _Refused(_fail(str(exc))) from None


def cmd_run(args: argparse.Namespace) -> int:
    from qoeflow.runlock import ProjectBusy, run_lock

    try:
        # One run at a time per project. Taken first, so that a second run is refused at once, before
        # anything is loaded, written or started; the kernel releases it when this process ends, however it ends.
        with run_lock(Path.cwd(), args.dag) as held:
            return _run(args, held)
    except ProjectBusy as exc:
        return _fail(str(exc))


def _run(args: argparse.Namespace, held) -> int:
    root = Path.cwd()
    dag, tree, _ = _project(args, args.set)
    unknown = sorted(set(args.force) - set(dag.stages))
    if unknown:
        return _fail(f"--force: no stage(s) {unknown} in {args.dag} (stages: {', '.join(dag.stages)})")
    from qoeflow.runlock import hold_outputs

    # DVC's own write lock on every output: a `dvc repro` started beside this run stops before it
    # deletes or writes anything, naming this process.
    with hold_outputs(root, held, [out.path for stage in dag.stages.values() for out in stage.outs.values()]):
        return _run_locked(args, root, dag, tree)


def _run_locked(args: argparse.Namespace, root: Path, dag, tree: dict) -> int:
    from tasks.context import RUN_RECORD

    record = root / RUN_RECORD
    record.unlink(missing_ok=True)
    if not args.force and _nothing_to_do(root, dag, tree, args.dag):
        _console().print(summary_table(json.loads(record.read_text())))
        return _serve_ui(root, 0) if args.ui else 0
    address = args.ray_address or os.environ.get("RAY_ADDRESS") or None
    from flows.launch import RunFailed, launch
    from flows.runtime import ServiceError

    def keep_ui(address: str) -> None:  # after the run, its summary, then the UI until Ctrl-C
        if record.exists():
            _console().print(summary_table(json.loads(record.read_text())))
        print(f"Prefect UI: {address} (this run and every earlier one); Ctrl-C to stop", flush=True)
        _wait_for_interrupt()

    code = 0
    try:
        launch(root, args.dag, args.params, args.set, args.force, address, keep_ui if args.ui else None)
    except ServiceError as exc:
        return _fail(str(exc))
    except RunFailed as exc:
        code = _fail(str(exc), 1)
    if record.exists() and not args.ui:
        _console().print(summary_table(json.loads(record.read_text())))
    return code


def _wait_for_interrupt() -> None:
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number in 1..65535 (0: any free one), got {text!r}")
    return int(text)


def cmd_ui(args: argparse.Namespace) -> int:
    return _serve_ui(Path.cwd(), args.port)


def _serve_ui(root: Path, port: int) -> int:
    """The Prefect UI over the project's own Prefect database (every earlier run) until Ctrl-C."""
    from flows.runtime import ServiceError, prefect_server, reaper, recorded_flow_runs, ui_address

    runs = recorded_flow_runs(root)
    if not runs:
        return _fail(f"no run recorded in {root} yet (its Prefect database holds none): `qoeflow run` first, "
                     "or `qoeflow run --ui` to watch one in the UI")
    try:
        with reaper(root), prefect_server(root, ui=True, port=port) as url:
            print(f"Prefect UI: {ui_address(url)} ({runs} flow run{'s' * (runs != 1)} of this project); Ctrl-C to stop",
                  flush=True)
            _wait_for_interrupt()
    except ServiceError as exc:
        return _fail(str(exc))
    return 0


def _nothing_to_do(root: Path, dag, tree: dict, dag_path: str) -> bool:
    """True (and a run record written) when DVC says every stage is up to date: then no Prefect server
    or Ray is started at all, as `dvc repro` would do nothing."""
    import time

    from flows.bookkeeping import DvcBook, Outcome, dvc_text, ensure_scm, off_the_books, write_summary

    start = time.perf_counter()
    dvc_file = root / dag.dvc_file()
    if not (root / ".dvc").is_dir() or not dvc_file.exists() or dvc_file.read_text() != dvc_text(root, dag):
        return False
    ensure_scm(root)
    if off_the_books(root, dag, tree):
        return False
    book = DvcBook(root, dag)
    outcomes = []
    for name in dag.order():
        if book.stale_reasons(name):
            return False
        outs = [o.path for o in dag.stages[name].outs.values()]
        outcomes.append(Outcome(name, "cached", outputs=outs, message="up to date"))
    write_summary(root, dag_path, time.perf_counter() - start, outcomes)
    _console().print(f"{dag_path}: every stage is up to date; nothing to run", highlight=False)
    return True


def cmd_stage(args: argparse.Namespace) -> int:
    from qoeflow.runlock import ProjectBusy, run_lock

    try:
        # Refused while a `qoeflow run` (or another stage) runs in this project; in a process that holds
        # the lock, or one that process started, the lock is entered again, not waited for.
        with run_lock(Path.cwd(), args.dag):
            return _stage(args)
    except ProjectBusy as exc:
        return _fail(str(exc))


def _stage(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from qoeflow.dag.spec import DagError
    from qoeflow.params import ParamsError
    from tasks.context import StageError

    root = Path.cwd()
    dag, tree, params = _project(args)
    from tasks.runner import make_context, run_stage

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=_console(), transient=False) as progress:
        bars: dict[str, int] = {}

        def on_progress(key: str, done: int, total: int, note: str) -> None:
            if key not in bars:
                bars[key] = progress.add_task(escape(f"{args.name}[{key}]"), total=total, note="")
            progress.update(bars[key], completed=done, total=total, note=escape(note))

        try:
            def log(message: str) -> None:
                progress.console.log(message, markup=False, highlight=False)

            ctx = make_context(root, dag, args.name, tree, params, log=log, progress=on_progress)
            summary = run_stage(ctx)
        except (StageError, DagError, ParamsError) as exc:
            return _fail(f"stage '{args.name}' failed: {exc}", 1)
    _console().print(f"stage [bold]{args.name}[/] ran in {summary['compute_seconds']:.1f} s: "
                     f"{', '.join(summary.get('outputs', []))}", highlight=False)
    for note in summary.get("notes", []):
        _console().print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    return 0


def cmd_dag(args: argparse.Namespace) -> int:
    root = Path.cwd()
    dag, _, _ = _project(args)
    if args.action == "check":
        print(f"{args.dag}: OK ({len(dag.stages)} stages: {' -> '.join(dag.order())})")
        return 0
    if args.action == "show":
        for name in dag.order():
            stage = dag.stages[name]
            extra = f" foreach {stage.foreach}" if stage.foreach else ""
            print(f"{name}  (task {stage.task}{extra}; cpus {stage.resources.cpus:g}, gpus {stage.resources.gpus:g})")
            print(f"  deps:   {', '.join(stage.deps) or '-'}")
            print(f"  params: {', '.join(stage.params) or '-'}")
            for out_name, out in stage.outs.items():
                print(f"  out {out_name}: {out.path}")
        return 0
    from flows.bookkeeping import dvc_text

    path = root / dag.dvc_file()
    text = dvc_text(root, dag)
    if args.check:
        if not path.exists() or path.read_text() != text:
            return _fail(f"{dag.dvc_file()} is out of sync with {args.dag}; run `qoeflow dag export-dvc --dag {args.dag}`", 1)
        print(f"{dag.dvc_file()}: in sync with {args.dag}")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {dag.dvc_file()} ({len(dag.stages)} stages)")
    return 0


def cmd_versioning(args: argparse.Namespace) -> int:
    """`qoeflow push` / `qoeflow pull`: every stage output the DAG's dvc.lock records, to or from a DVC remote;
    refused while a run goes on in the project (a pull would overwrite its outputs)."""
    from qoeflow.runlock import ProjectBusy, run_lock

    try:
        with run_lock(Path.cwd(), args.dag):
            return _versioning(args)
    except ProjectBusy as exc:
        return _fail(str(exc))


def _versioning(args: argparse.Namespace) -> int:
    root = Path.cwd()
    dag, _, _ = _project(args)
    from flows import versioning

    try:
        lines = getattr(versioning, args.command)(root, dag, args.remote)
    except versioning.VersioningError as exc:
        return _fail(str(exc), 1)
    print("\n".join(lines))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    root = Path.cwd()
    dag, _, _ = _project(args)
    from flows.runtime import ServiceError, check_ray_address, prefect_api, reaper, ui_address

    try:
        if os.environ.get("RAY_ADDRESS"):
            check_ray_address(os.environ["RAY_ADDRESS"])
        # Each scheduled run takes the project's run lock (flows/serving.py); the reaper stops the
        # server and the runs' processes if this process is killed.
        with reaper(root), prefect_api(root, ui=True) as url:
            from flows.serving import serve

            print(f"serving {args.dag} on Prefect API {url}, UI {ui_address(url)}; Ctrl-C to stop", flush=True)
            serve(root, args.dag, args.params, cron=args.cron, interval=args.interval, name=args.name or dag.name)
    except ServiceError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from tasks.context import StageError
    from tasks.standalone import forecast_command

    try:
        print(forecast_command(args.curves, args.metric, args.to, args.until, args.method, args.backtest, args.output,
                               level=args.level))
    except StageError as exc:
        return _fail(str(exc))
    return 0


def cmd_allocate(args: argparse.Namespace) -> int:
    from tasks.context import StageError
    from tasks.standalone import allocate_command

    try:
        print(allocate_command(args.forecasts, args.jobs, args.curves, args.budget, args.weights,
                               args.method or ["exact", "ga", "random", "fcfs", "average"], args.example, args.output))
    except StageError as exc:
        return _fail(str(exc))
    return 0


def _catalog_path(dag) -> Path:
    for stage in dag.stages.values():
        if "model_catalog" in stage.outs:
            return Path(stage.outs["model_catalog"].path)
    raise _Refused(_fail(f"{dag.path}: no stage writes a model catalog (output 'model_catalog')"))


def cmd_models(args: argparse.Namespace) -> int:
    """`qoeflow models list` prints the DAG's model catalog; `qoeflow models load VARIANT` loads one variant
    the way `qoeflow.models.load_variant` does and prints what it is."""
    from rich.table import Table

    from qoeflow import humanize as h
    from qoeflow.models import variants

    dag, _, _ = _project(args)
    catalog = _catalog_path(dag)
    try:
        rows = variants.read_catalog(catalog)
        if args.action == "list":
            table = Table(title=f"{catalog}: {len(rows)} variants")
            shown = {"variant": str, "method": str, "accuracy": h.percent, "params": h.si,
                     "macs": lambda v: h.si(v, "MACs"), "size_bytes": h.size,
                     "latency_b1_ms": lambda v: h.milliseconds(v / 1e3),
                     "latency_b64_ms": lambda v: h.milliseconds(v / 1e3), "device": str}
            for column in shown:
                table.add_column(column, justify="left" if shown[column] is str else "right")
            for row in rows.to_dict("records"):
                table.add_row(*(fmt(row[c]) for c, fmt in shown.items()))
            from rich.console import Console

            # to stdout; piped or logged, wide enough that variant names are not cut
            Console(width=None if sys.stdout.isatty() else 200).print(table)
            return 0
        if not args.variant:
            return _fail("models load needs a VARIANT (see `qoeflow models list`)")
        from qoeflow.models import count_params, load_variant

        model = load_variant(args.variant, catalog, Path.cwd())
        print(f"{args.variant}: {type(model).__name__} with {count_params(model):,} parameters, from {catalog}")
        print(model)
        return 0
    except (FileNotFoundError, KeyError, ValueError) as exc:
        return _fail(str(exc).strip("'\""))


def cmd_bench(args: argparse.Namespace) -> int:
    """`qoeflow bench`: the bench stage's measurements of the DAG's model catalog on a device of this
    machine, without a run (on a GPU machine: `--device cuda`), written to `-o` and summarised."""
    from rich.table import Table

    from qoeflow import humanize as h
    from qoeflow.validate import ArtifactError, check_bench
    from tasks.bench import measure
    from tasks.catalog import kind_of

    sets = list(args.set) + ([f"bench.device={args.device}"] if args.device else [])
    dag, _, params = _project(args, sets)
    catalog = _catalog_path(dag)
    if not catalog.is_file():
        return _fail(f"{catalog}: no model catalog yet; run the DAG through its `multiexit` stage")

    def progress(done: int, total: int, variant: str) -> None:
        if done < total:
            print(f"[{done + 1}/{total}] {variant}", flush=True)

    output = Path(args.output) if args.output else None
    try:
        rows = kind_of("model_catalog").load(catalog, str(catalog), root=Path.cwd())  # checked; files must exist
        table, failures, device = measure(params, rows, Path.cwd(), progress)
        output = output or Path(f"bench-{device.type}.csv")
        check_bench(table, str(output))
    except (ArtifactError, ValueError) as exc:
        return _fail(str(exc))
    for failure in failures:
        print(f"skipped: {failure}")
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    small = int(table["batch"].min())
    front = table[table["pareto"]].sort_values(["family", "p50_ms"])
    summary = Table(title=f"{output}: {len(table)} measurements on {table['device'].iloc[0]}; "
                          f"the Pareto front at batch {small}")
    for column in ("family", "variant", "precision", "accuracy", "p50", "p99"):
        summary.add_column(column, justify="right" if column in ("accuracy", "p50", "p99") else "left")
    for r in front.to_dict("records"):
        summary.add_row(r["family"], r["variant"], r["precision"], h.percent(r["accuracy"]),
                        h.milliseconds(r["p50_ms"] / 1e3), h.milliseconds(r["p99_ms"] / 1e3))
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 200).print(summary)
    return 0


def _print_bandit(summary: dict, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{output}: {summary['seeds']} seeds, {summary['rounds'][-1]} rounds; QoE normalised so the "
                        "Oracle is 1 and the worst arm 0")
    for column in ("method", "normalised QoE", "± sd", "regret", "seconds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, m in summary["methods"].items():
        table.add_row(name, f"{m['normalised_qoe']['mean']:.3f}", f"{m['normalised_qoe']['std']:.3f}",
                      f"{m['regret']['mean']:.1f}", f"{m['seconds']['mean']:.2f}")
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    theta = summary["methods"]["linucb"].get("theta", {})
    if "distance" in theta:
        print(f"linucb θ̂ (mean over seeds) {theta['mean']}; ‖θ̂ − θ‖ mean {theta['distance']['mean']:.3f}, "
              f"max {theta['distance']['max']:.3f}")


def cmd_bandit(args: argparse.Namespace) -> int:
    """`qoeflow bandit --paper`: paper 001's Table II simulation; `qoeflow bandit`: the deploy stage's
    simulation over the DAG's model catalog, outside a run. Both write summary.json and figure.png to `-o`."""
    from qoeflow.validate import ArtifactError
    from tasks.context import StageError

    if args.seeds < 1:
        return _fail(f"--seeds must be at least 1, got {args.seeds}")
    output = Path(args.output or ("bandit-paper" if args.paper else "bandit"))
    try:
        if args.paper:
            from tasks.deploy import paper_command

            summary = paper_command(args.seeds, output, args.peer or [])
        else:
            from tasks.catalog import kind_of
            from tasks.deploy import catalog_command

            dag, _, params = _project(args, list(args.set))
            catalog = _catalog_path(dag)
            if not catalog.is_file():
                return _fail(f"{catalog}: no model catalog yet; run the DAG through its `multiexit` stage")
            rows = kind_of("model_catalog").load(catalog, str(catalog), root=Path.cwd())
            p = params.deploy.bandit
            if args.peer is not None:
                p = p.model_copy(update={"peers": args.peer})
            summary = catalog_command(rows, p, args.seeds, output)
    except (ArtifactError, StageError, ValueError) as exc:
        return _fail(str(exc))
    _print_bandit(summary, output / "summary.json")
    return 0


def _ranges(frames: Sequence[int]) -> str:
    """Sorted frame numbers as runs: 3-7, 9, 12-15."""
    runs: list[list[int]] = []
    for f in frames:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


def cmd_video(args: argparse.Namespace) -> int:
    """`qoeflow video query --class C [--clip NAME]`: the frames holding class C, answered from the video stage's
    index (the GT-CNN checks candidate centroids; no video is read again)."""
    from qoeflow.validate import ArtifactError
    from tasks.catalog import kind_of
    from tasks.context import StageError
    from tasks.video import query_command
    from tasks.video_db import VideoIndexError

    dag, _, _ = _project(args)
    if "video" not in dag.stages or "video_index" not in dag.stages["video"].outs:
        return _fail(f"{dag.path}: no stage 'video' writing a video index")
    index = Path(args.index or dag.stages["video"].outs["video_index"].path)
    catalog = _catalog_path(dag)
    try:
        if not catalog.is_file():
            return _fail(f"{catalog}: no model catalog; run the DAG through its `multiexit` stage")
        rows = kind_of("model_catalog").load(catalog, str(catalog), root=Path.cwd())
        answers = query_command(index, rows, catalog, Path.cwd(), args.label, args.clip, args.method)
    except (ArtifactError, StageError, VideoIndexError, ValueError) as exc:
        return _fail(str(exc))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"class {args.label} by {args.method} from {index}")
    for column in ("clip", "frames", "candidate clusters", "GT-CNN calls", "seconds", "frame numbers"):
        table.add_column(column, justify="left" if column in ("clip", "frame numbers") else "right")
    for name, a in answers:
        table.add_row(name, str(len(a.frames)), str(a.candidates), str(a.gt_calls), f"{a.seconds:.3f}",
                      _ranges(a.frames))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qoeflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the DAG as a Prefect flow with its stages on Ray")
    run.add_argument("--dag", default=DEFAULT_DAG)
    run.add_argument("--params", default="params.yaml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param (repeatable)")
    run.add_argument("--ray-address", default=None, help="join this Ray cluster (default: RAY_ADDRESS or a local Ray)")
    run.add_argument("--force", action="append", default=[], metavar="STAGE", help="rerun this stage even if up to date")
    run.add_argument("--ui", action="store_true",
                     help="serve the Prefect UI during the run and after it, until Ctrl-C")
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser("ui", help="the Prefect UI over this project's runs (every earlier run), until Ctrl-C")
    ui.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: a free one)")
    ui.set_defaults(func=cmd_ui)

    stage = sub.add_parser("stage", help="run one stage in this process (what dvc.yaml calls)")
    stage.add_argument("name")
    stage.add_argument("--dag", default=DEFAULT_DAG)
    stage.add_argument("--params", default="params.yaml")
    stage.set_defaults(func=cmd_stage)

    dag = sub.add_parser("dag", help="check, show or export a DAG")
    dag.add_argument("action", choices=["check", "show", "export-dvc"])
    dag.add_argument("--dag", default=DEFAULT_DAG)
    dag.add_argument("--params", default="params.yaml")
    dag.add_argument("--check", action="store_true", help="with export-dvc: exit 1 when the committed dvc.yaml differs")
    dag.set_defaults(func=cmd_dag)

    for verb, where in (("push", "to"), ("pull", "from")):
        versioning = sub.add_parser(verb, help=f"{verb} the outputs the DAG's dvc.lock records {where} a DVC remote")
        versioning.add_argument("--dag", default=DEFAULT_DAG)
        versioning.add_argument("--params", default="params.yaml")
        versioning.add_argument("-r", "--remote", default=None,
                                help="a configured DVC remote (default: DVC's default, else ~/.cache/qoeflow/dvc-remote)")
        versioning.set_defaults(func=cmd_versioning)

    models = sub.add_parser("models", help="list the model catalog, or load one variant")
    models.add_argument("action", choices=["list", "load"])
    models.add_argument("variant", nargs="?", default=None)
    models.add_argument("--dag", default=DEFAULT_DAG)
    models.add_argument("--params", default="params.yaml")
    models.set_defaults(func=cmd_models)

    bench = sub.add_parser("bench", help="measure the model catalog's variants on a device, as the bench stage does")
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="default: params bench.device")
    bench.add_argument("--dag", default=DEFAULT_DAG)
    bench.add_argument("--params", default="params.yaml")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param, e.g. bench.precisions=[fp32,fp16] (repeatable)")
    bench.add_argument("-o", "--output", default=None, help="the table to write (default: bench-<device>.csv)")
    bench.set_defaults(func=cmd_bench)

    bandit = sub.add_parser("bandit", help="contextual-bandit model selection with delayed, noisy QoE feedback")
    bandit.add_argument("--paper", action="store_true", help="paper 001's synthetic setting (Table II), not the catalog")
    bandit.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default 20)")
    bandit.add_argument("--peer", action="append", choices=["contextualbandits", "mabwiser"], default=None,
                        help="run a peer LinUCB on the same stream (repeatable; default: none with --paper, "
                             "params deploy.bandit.peers otherwise)")
    bandit.add_argument("--dag", default=DEFAULT_DAG)
    bandit.add_argument("--params", default="params.yaml")
    bandit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. deploy.bandit.rounds=2000 (repeatable)")
    bandit.add_argument("-o", "--output", default=None, help="folder for summary.json and figure.png "
                                                             "(default: bandit-paper/ or bandit/)")
    bandit.set_defaults(func=cmd_bandit)

    video = sub.add_parser("video", help="video indexing with the multi-exit network: query the video stage's index")
    video_sub = video.add_subparsers(dest="action", required=True)
    query = video_sub.add_parser("query", help="the frames holding one class, answered from the index")
    query.add_argument("--class", dest="label", type=int, required=True, help="the class (a digit, 0-9)")
    query.add_argument("--clip", default=None, help="one clip of the index (default: every clip)")
    query.add_argument("--method", default="multi-exit", choices=["multi-exit", "focus"],
                       help="whose index answers (default: multi-exit)")
    query.add_argument("--index", default=None, help="the index file (default: the DAG's video stage output)")
    query.add_argument("--dag", default=DEFAULT_DAG)
    query.add_argument("--params", default="params.yaml")
    query.set_defaults(func=cmd_video)

    serve = sub.add_parser("serve", help="serve the DAG's flow as a Prefect deployment on a schedule")
    serve.add_argument("--dag", default=DEFAULT_DAG)
    serve.add_argument("--params", default="params.yaml")
    serve.add_argument("--name", default=None, help="deployment name (default: the DAG's name)")
    when = serve.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", default=None, help="cron expression, e.g. '0 3 * * *'")
    when.add_argument("--interval", type=float, default=None, help="seconds between runs")
    serve.set_defaults(func=cmd_serve)

    fc = sub.add_parser("forecast", help="forecast learning curves of a CSV (job,epoch,<metric>)")
    fc.add_argument("curves")
    fc.add_argument("--metric", required=True)
    fc.add_argument("--until", type=int, default=None, help="use only epochs up to this one")
    fc.add_argument("--to", type=int, default=None, help="predict up to this epoch")
    fc.add_argument("--backtest", type=float, default=None, metavar="FRAC",
                    help="observe the first FRAC of each curve, predict the rest, score against `last`")
    fc.add_argument("--method", default="auto", choices=["last", "parametric", "lstm", "combo", "auto"])
    fc.add_argument("--level", type=float, default=0.8, help="share of future values the band claims to hold (0.8)")
    fc.add_argument("-o", "--output", default=None)
    fc.set_defaults(func=cmd_forecast)

    al = sub.add_parser("allocate", help="split a training budget across jobs to maximise total QoE")
    al.add_argument("--forecasts", default=None, help="CSV job,metric,epoch,predicted[,lower,upper]")
    al.add_argument("--jobs", default=None, help="jobs.json (task, epochs_done, train_seconds, t_load, t_test)")
    al.add_argument("--curves", default=None, help="curves.csv, for the metrics at each job's base epoch")
    al.add_argument("--budget", type=float, default=None, help="total training seconds")
    al.add_argument("--weights", default="w1", help="w1 | w2 | w3 | five numbers perf1,perf2,train,load,test")
    al.add_argument("--method", action="append", default=None, help="exact, ga, random, fcfs, average (repeatable)")
    al.add_argument("--example", default=None, choices=["deepnetqoe"], help="the paper's four crowd-counting models")
    al.add_argument("-o", "--output", default=None)
    al.set_defaults(func=cmd_allocate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _Refused as refused:
        return refused.code


if __name__ == "__main__":
    sys.exit(main())
