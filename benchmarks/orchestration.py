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


def smoke_overhead(repeats: int) -> dict:
    rows = []
    for i in range(repeats):
        project = fresh(f"smoke{i}")
        wall, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/smoke.yaml"], project)
        stages = last_run(project)["stages"]
        compute = sum(s["compute_seconds"] for s in stages)
        rerun, _ = timed([str(BIN / "qoeflow"), "run", "--dag", "dags/smoke.yaml"], project)
        statuses = sorted({s["status"] for s in last_run(project)["stages"]})
        rows.append({"wall": wall, "compute": compute, "overhead": wall - compute, "rerun": rerun,
                     "rerun_statuses": statuses})
    return {
        "runs": rows,
        "median_wall_seconds": statistics.median(r["wall"] for r in rows),
        "median_compute_seconds": statistics.median(r["compute"] for r in rows),
        "median_overhead_seconds": statistics.median(r["overhead"] for r in rows),
        "median_rerun_seconds": statistics.median(r["rerun"] for r in rows),
        "rerun_statuses": sorted({s for r in rows for s in r["rerun_statuses"]}),
    }


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
    s, f = result["smoke"], result["four_jobs"]
    lines = [
        "# Orchestration benchmark",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}. "
        "Command: `python benchmarks/orchestration.py --lifecycle` (parts rerun with `--only PART`).",
        "",
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| smoke DAG end-to-end wall (median of {args.repeats}) | {s['median_wall_seconds']:.1f} s | |",
        f"| smoke DAG stage compute (median) | {s['median_compute_seconds']:.1f} s | |",
        f"| orchestration overhead = wall - compute (median) | {s['median_overhead_seconds']:.1f} s | ≤ 10 s |",
        f"| rerun with nothing changed (median) | {s['median_rerun_seconds']:.1f} s, statuses {s['rerun_statuses']} | ≤ 10 s, no stage runs |",
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
