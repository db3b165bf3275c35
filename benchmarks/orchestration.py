"""Orchestration benchmarks of the spine (issue: the spine).

1. Overhead of the smoke DAG: end-to-end wall time of `qoeflow run` minus the stages' compute seconds.
2. A rerun with nothing changed: wall time, and no stage runs.
3. Four equal training jobs on a 2-CPU Ray run against the same four in sequence (`qoeflow stage`).
4. With --lifecycle: the default `qoeflow run` of dags/lifecycle.yaml on this machine.

Each runs in a fresh copy of the project under benchmarks/work/ (git-ignored). Results go to
benchmarks/results/orchestration.json and .md. Usage: python benchmarks/orchestration.py [--lifecycle]
"""

from __future__ import annotations

import argparse
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


def smoke_overhead(repeats: int) -> dict:
    rows = []
    for i in range(repeats):
        project = fresh(f"smoke{i}")
        wall, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/smoke.yaml"], project)
        row = _breakdown(wall, last_run(project))
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
    parser.add_argument("--only", choices=["smoke", "four_jobs", "lifecycle"], default=None,
                        help="measure one part; the others keep their last committed figures")
    args = parser.parse_args()
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    previous = RESULTS / "orchestration.json"
    result = json.loads(previous.read_text()) if previous.exists() and args.only else {}
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    if args.only in (None, "smoke"):
        result["smoke"] = smoke_overhead(args.repeats)
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
    (RESULTS / "orchestration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
