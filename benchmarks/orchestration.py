"""Orchestration benchmarks of the spine (issue: the spine).

1. Overhead of the smoke DAG: end-to-end wall time of `qoeflow run` minus the stages' compute seconds.
2. A rerun with nothing changed: wall time, and no stage runs.
3. Four equal training jobs on a 2-CPU Ray run against the same four in sequence (`qoeflow stage`).
4. With --lifecycle: the default `qoeflow run` of dags/lifecycle.yaml on this machine.
5. The one-off floor: a DAG of one stage with one tiny item, its wall time, compute and the CPU-seconds the
   whole machine spent (services, workers and all) while it ran.

The smoke runs' handovers (a stage's first task start after its last dependency's last task ended; a gather's
start after its items ended) come from the task runs the run's own Prefect server recorded.

Each runs in a fresh copy of the project under benchmarks/work/ (git-ignored). Results go to
benchmarks/results/orchestration.json and .md. Usage: python benchmarks/orchestration.py [--lifecycle]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
RESULTS = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import clean_env, make_project  # noqa: E402


def timed(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=clean_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return seconds, result


def last_run(project: Path) -> dict:
    return json.loads((project / ".qoeflow/runs/last.json").read_text())


def fresh(name: str) -> Path:
    target = WORK / name
    shutil.rmtree(target, ignore_errors=True)
    return make_project(target)


def _breakdown(wall: float, record: dict) -> dict:
    """Where the seconds of one `qoeflow run` went (see flows/launch.py and flows/dag_flow.py timings)."""
    stages = [s for s in record["stages"] if s["status"] == "ran"]
    critical = sum(s.get("critical_seconds") or s["compute_seconds"] for s in stages)
    services, driver = record.get("services", {}), record.get("timings", {})
    in_flow = services.get("flow", 0.0)
    process = wall - sum(v for k, v in services.items() if k != "ray_start")
    return {
        "wall": wall, "compute_sum": sum(s["compute_seconds"] for s in stages), "critical_compute": critical,
        "overhead": wall - critical, "stages_ran": len(stages),
        "process_start_and_exit": process,  # interpreter, imports, lock, DVC check before launch, exit
        "prefect_api_ready": services.get("prefect_api_ready", 0.0), "ray_start": services.get("ray_start", 0.0),
        "flow_import": services.get("flow_import", 0.0), "shutdown": services.get("shutdown", 0.0),
        "in_flow_overhead": in_flow - critical,
        "driver": {k: v for k, v in driver.items() if k != "waiting"},
        "dispatch": sum(s["seconds"] - (s.get("critical_seconds") or s["compute_seconds"]) for s in stages),
        "per_stage_in_flow": (in_flow - critical) / max(len(stages), 1),
    }


def task_runs(project: Path) -> tuple[list[dict], float]:
    """The last flow run's task runs as the run's Prefect server recorded them (its SQLite database, read after
    the run): name, start and end in seconds from the flow run's start; and the flow run's length."""
    import sqlite3
    from datetime import datetime

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    with contextlib.closing(sqlite3.connect(project / ".qoeflow/prefect/prefect.db")) as db:
        flow_id, begun, ended = db.execute("SELECT id, start_time, end_time FROM flow_run ORDER BY created DESC LIMIT 1").fetchone()
        rows = db.execute("SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ? AND start_time IS NOT NULL",
                          (flow_id,)).fetchall()
    zero = at(begun)
    runs = [{"name": n, "start": (at(a) - zero).total_seconds(), "end": (at(b) - zero).total_seconds()} for n, a, b in rows if b]
    return sorted(runs, key=lambda r: r["start"]), (at(ended) - zero).total_seconds()


def handovers(project: Path, dag_path: str) -> dict:
    """Seconds between a piece of work ending and the next one starting, from the Prefect task runs:
    a stage after its dependencies (their last task's end, or if the machine's CPUs filled up meanwhile, the last end of a task before it, to
    its first task's start: DVC commit and status, the next submission, Ray dispatch, Prefect's task-run start)
    and a gather after its items. The first stage's counts from the flow run's start."""
    dag = yaml.safe_load((project / dag_path).read_text())["stages"]
    runs, flow_seconds = task_runs(project)
    tasks = {name: [r for r in runs if r["name"] == name or r["name"].startswith(f"{name}[")] for name in dag}
    first = {name: min(r["start"] for r in t) for name, t in tasks.items() if t}
    last = {name: max(r["end"] for r in t) for name, t in tasks.items() if t}
    cpus = os.cpu_count() or 1

    def since(name: str) -> float:  # its deps' last end; if the machine filled up meanwhile, the last CPU freed
        ready, begun = max((last[d] for d in dag[name].get("deps", [])), default=0.0), first[name]
        moments = [ready] + [r["start"] for r in runs if ready < r["start"] < begun]
        if any(sum(r["start"] <= m < r["end"] for r in runs) >= cpus for m in moments):
            return max(r["end"] for r in runs if ready <= r["end"] <= begun)
        return ready

    stage = {name: first[name] - since(name) for name in first}
    gather = []
    for name, t in tasks.items():
        items = []
        for r in t:
            if r["name"].startswith(f"{name}[gather]"):
                if items:
                    gather.append(r["start"] - max(i["end"] for i in items))
                items = []
            else:
                items.append(r)
    return {"stage": stage, "gather": gather, "after_last_task": flow_seconds - max(last.values())}


def smoke_overhead(repeats: int) -> dict:
    rows = []
    for i in range(repeats):
        project = fresh(f"smoke{i}")
        wall, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/smoke.yaml"], project)
        row = _breakdown(wall, last_run(project))
        row["handovers"] = handovers(project, "dags/smoke.yaml")
        rerun, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/smoke.yaml"], project)
        row.update(rerun=rerun, rerun_statuses=sorted({s["status"] for s in last_run(project)["stages"]}))
        rows.append(row)
    return {"runs": rows, "median": medians(rows), "rerun_statuses": sorted({s for r in rows for s in r["rerun_statuses"]})}


def medians(rows: list[dict]) -> dict:
    """The median of every number over the runs (and of each driver timing)."""
    median = {k: statistics.median(r[k] for r in rows) for k, v in rows[0].items() if isinstance(v, (int, float))}
    median["driver"] = {k: statistics.median(r["driver"].get(k, 0.0) for r in rows) for k in rows[0]["driver"]}
    return median


def four_jobs(epochs: int) -> dict:
    project = fresh("four")
    text = (project / "dags/smoke.yaml").read_text().replace("data/smoke/", "data/four/")
    dag = yaml.safe_load(text.replace("dags/smoke", "dags/four"))
    job = {"task": "digits", "model": "vgg", "epochs": epochs, "lr": 0.002}
    dag["name"] = "four"
    dag["stages"] = {"train": dag["stages"]["train"]}  # the training stage alone is measured
    dag["params_file"] = "dags/smoke/params.yaml"  # the smoke params, with four jobs on the whole digits set
    dag["overrides"] = {"train": {"data": {"digits": {"limit": None}}, "jobs": [{"name": f"vgg-{i}", **job} for i in range(4)]}}
    (project / "dags/four.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    ray_wall, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/four.yaml"], project)
    train = next(s for s in last_run(project)["stages"] if s["stage"] == "train")
    shutil.rmtree(project / "data/four/train/checkpoints")
    seq_wall, _ = timed([str(BIN / "qoeflow"), "stage", "train", "--dag", "dags/four.yaml"], project)
    return {
        "jobs": 4, "model": "digits vgg", "epochs": epochs, "threads_per_job": 1,
        "ray_train_stage_seconds": train["seconds"],
        "ray_whole_run_seconds": ray_wall,
        "sequential_stage_command_seconds": seq_wall,
        "speedup_train_stage": seq_wall / train["seconds"],
    }


def busy_cpu_seconds() -> float:
    """CPU-seconds this machine has spent busy (all processes, all cores) since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def one_stage(repeats: int) -> dict:
    """The one-off cost of a run: the smoke DAG cut to its train stage with one job of one epoch."""
    project = fresh("one")
    dag = yaml.safe_load((project / "dags/smoke.yaml").read_text().replace("data/smoke/", "data/one/"))
    dag.update(name="one", dvc_dir="dags/one", stages={"train": dag["stages"]["train"]})
    dag["overrides"] = {"train": {"jobs": [{"name": "digits-mlp", "task": "digits", "model": "mlp", "epochs": 1,
                                            "max_epochs": 2, "lr": 0.003}]}, "allocate": {"probe_epochs": 1}}
    (project / "dags/one.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    rows = []
    for _ in range(repeats):
        busy = busy_cpu_seconds()
        wall, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/one.yaml", "--force", "train"], project)
        cpu = busy_cpu_seconds() - busy
        record = last_run(project)
        compute = record["stages"][0]["compute_seconds"]
        rows.append({"wall": wall, "compute": compute, "overhead": wall - compute, "cpu_seconds": cpu,
                     "cpu_floor_of_overhead": (cpu - compute) / (os.cpu_count() or 1),
                     **{k: v for k, v in record["services"].items()}})
    return {"runs": rows, "median": {k: statistics.median(r[k] for r in rows) for k in rows[0]}}


def lifecycle() -> dict:
    project = fresh("lifecycle")
    wall, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/lifecycle.yaml"], project)
    stages = last_run(project)["stages"]
    return {"wall_seconds": wall, "stages": {s["stage"]: round(s["seconds"], 1) for s in stages}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lifecycle", action="store_true", help="also time the default lifecycle run")
    parser.add_argument("--only", choices=["smoke", "one_stage", "four_jobs", "lifecycle"], default=None,
                        help="measure one part; the others keep their last committed figures")
    args = parser.parse_args()
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    previous = RESULTS / "orchestration.json"
    result = json.loads(previous.read_text()) if previous.exists() and args.only else {}
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    if args.only in (None, "smoke"):
        result["smoke"] = smoke_overhead(args.repeats)
    if args.only in (None, "one_stage"):
        result["one_stage"] = one_stage(args.repeats)
    if args.only in (None, "four_jobs"):
        result["four_jobs"] = four_jobs(args.epochs)
    if args.only == "lifecycle" or (args.only is None and args.lifecycle):
        result["lifecycle"] = lifecycle()
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(result, indent=2) + "\n")
    s, f = result["smoke"]["median"], result["four_jobs"]
    d = s["driver"]
    lines = [
        "# Orchestration benchmark",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}. "
        "Command: `python benchmarks/orchestration.py --lifecycle` (parts rerun with `--only PART`).",
        "",
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| smoke DAG end-to-end wall (median of {args.repeats}) | {s['wall']:.1f} s | |",
        f"| smoke DAG compute on the critical path (longest item per stage, stages in a chain) | {s['critical_compute']:.1f} s | |",
        f"| smoke DAG compute, all items summed | {s['compute_sum']:.1f} s | |",
        f"| **orchestration overhead = wall - critical compute** | **{s['overhead']:.1f} s** | ≤ 8 s |",
        f"| of which: process start, imports, lock and DVC check, exit | {s['process_start_and_exit']:.1f} s | |",
        f"| of which: Prefect API ready (embedded server; Ray starts meanwhile: {s['ray_start']:.1f} s) | {s['prefect_api_ready']:.1f} s | |",
        f"| of which: importing the flow | {s['flow_import']:.1f} s | |",
        f"| of which: inside the flow, beyond compute ({s['stages_ran']:.0f} stages) | {s['in_flow_overhead']:.1f} s = {s['per_stage_in_flow']:.2f} s per stage | ≤ 0.5 s per stage |",
        f"| inside the flow: DVC status / DVC commit / submitting / results / prepare | {d.get('dvc_status', 0):.2f} / {d.get('dvc_commit', 0):.2f} / {d.get('submit', 0):.2f} / {d.get('results', 0):.2f} / {d.get('prepare', 0):.2f} s | |",
        f"| inside the flow: Ray dispatch, worker imports, Prefect task runs (stage seconds - critical compute) | {s['dispatch']:.1f} s | |",
        f"| of which: shutdown (Ray, server, log drain) | {s['shutdown']:.1f} s | |",
        f"| rerun with nothing changed (median) | {s['rerun']:.1f} s, statuses {result['smoke']['rerun_statuses']} | ≤ 10 s, no stage runs |",
        f"| 4 equal jobs ({f['model']}, {f['epochs']} epochs): sequential `qoeflow stage train` | {f['sequential_stage_command_seconds']:.1f} s | |",
        f"| 4 equal jobs: train stage on 2-CPU Ray | {f['ray_train_stage_seconds']:.1f} s | |",
        f"| speed-up | {f['speedup_train_stage']:.2f}× | ≥ 1.6× |",
    ]
    if "lifecycle" in result:
        lines.append(f"| `qoeflow run` of dags/lifecycle.yaml | {result['lifecycle']['wall_seconds']:.0f} s | ≤ 15 min |")
    if "one_stage" in result:
        o = result["one_stage"]["median"]
        lines += [
            "",
            f"The one-off cost, a DAG of one stage with one 1-epoch job (`--only one_stage`, median of {len(result['one_stage']['runs'])}):",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| wall / stage compute / overhead | {o['wall']:.1f} / {o['compute']:.1f} / {o['overhead']:.1f} s |",
            f"| Ray start / Prefect API ready / flow import / in the flow / shutdown | {o['ray_start']:.1f} / {o['prefect_api_ready']:.1f} / "
            f"{o['flow_import']:.1f} / {o['flow']:.1f} / {o['shutdown']:.1f} s |",
            f"| CPU-seconds the machine spent busy during the run | {o['cpu_seconds']:.1f} |",
            f"| of which beyond compute, spread over {result['machine']['cpus']} CPUs: the overhead's floor | {o['cpu_floor_of_overhead']:.1f} s |",
        ]
    if "handovers" in result["smoke"]["runs"][0]:
        runs = [r["handovers"] for r in result["smoke"]["runs"]]
        stages = list(runs[0]["stage"])
        gathers = [g for r in runs for g in r["gather"]]
        lines += [
            "",
            "Handovers in the smoke runs, from the task runs Prefect recorded (median over the runs; a stage's counts from its "
            "dependencies' last task end, or from the last task end before it when the CPUs were full; the first stage's "
            "from the flow run's start, while the workers finish warming up):",
            "",
            "| " + " | ".join(stages) + " | gather after its items (median, max) | flow end after the last task |",
            "| " + " | ".join("---" for _ in range(len(stages) + 2)) + " |",
            "| " + " | ".join(f"{statistics.median(r['stage'][n] for r in runs if n in r['stage']):.2f}" for n in stages)
            + f" | {statistics.median(gathers):.2f}, {max(gathers):.2f} | {statistics.median(r['after_last_task'] for r in runs):.2f} |",
        ]
    (RESULTS / "orchestration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
