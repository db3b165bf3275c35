"""The training fan-out at 2, 4 and 8 jobs on the local Ray and on a two-node Ray cluster of this machine,
with what the cluster run moves through the DVC remote per stage.

Each run is a fresh project (the smoke DAG cut to `train`, `forecast`, `allocate` and `continue`, its jobs
repeated to N with new names and seeds, 2-epoch probes) run with `qoeflow run`. The cluster is started here: a head node with
1 CPU, then a second node with 1 CPU (2 CPUs in all, as the local Ray has on a 2-core machine), the
project's remote a local folder. Times are the run's wall seconds from `.qoeflow/runs/last.json`, plus
the command's own seconds.

Usage: python benchmarks/cluster_scale.py [--jobs 2 4 8]
Results: benchmarks/results/cluster_scale.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "cluster-scale"
BIN = Path(sys.executable).parent
COPIED = ["qoeflow", "tasks", "flows", "dags", "params.yaml", "pyproject.toml", "dvc.yaml"]
STAGES = ["train", "forecast", "allocate", "continue"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **extra}


def make_project(dest: Path, jobs: int) -> Path:
    """A fresh git + DVC project whose DAG is the smoke DAG's train and forecast stages over `jobs` jobs."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dvc.lock"))
        else:
            shutil.copy2(src, dest / name)
    dag = yaml.safe_load((dest / "dags/smoke.yaml").read_text().replace("data/smoke/", "data/scale/"))
    templates = yaml.safe_load((dest / "dags/smoke/params.yaml").read_text())["train"]["jobs"]
    chosen = [dict(templates[i % len(templates)], name=f"{templates[i % len(templates)]['name']}-{i}", seed=i)
              for i in range(jobs)]
    dag.update(name="scale", dvc_dir="dags/scale", overrides={"train": {"jobs": chosen}})
    dag["stages"] = {name: dag["stages"][name] for name in STAGES}
    (dest / "dags/scale.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    for command in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                    [str(BIN / "dvc"), "remote", "add", "-d", "bench", str(dest.parent / f"{dest.name}-remote")],
                    ["git", "add", "-A"], ["git", "-c", "user.email=b@q", "-c", "user.name=b", "commit", "-qm", "p"]):
        subprocess.run(command, cwd=dest, check=True, capture_output=True, env=_env())
    return dest


def run(project: Path, address: str | None) -> dict:
    command = [str(BIN / "qoeflow"), "run", "--dag", "dags/scale.yaml"] + (["--ray-address", address] if address else [])
    start = time.perf_counter()
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, env=_env(), timeout=1800)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    record = json.loads((project / ".qoeflow/runs/last.json").read_text())
    stages = {s["stage"]: s for s in record["stages"]}
    return {"command_seconds": seconds, "wall_seconds": record["wall_seconds"], "prefect": prefect_rows(project),
            "stages": {name: {"seconds": s["seconds"], "compute_seconds": s["compute_seconds"],
                              **{k: v for k, v in s.get("transfer", {}).items() if k != "tasks"},
                              "tasks": len(s.get("transfer", {}).get("tasks", []))} for name, s in stages.items()}}


def prefect_rows(project: Path) -> dict[str, int]:
    """What the run wrote into its embedded Prefect server's database: task runs, their states, logs, events."""
    with contextlib.closing(sqlite3.connect(f"file:{project / '.qoeflow/prefect/prefect.db'}?mode=ro", uri=True)) as db:
        return {table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("task_run", "task_run_state", "log", "events")}


class Cluster:
    """Two Ray nodes on this machine, 1 CPU each."""

    def __init__(self, temp: Path, port: int = 6399) -> None:
        self.address, self.temp = f"127.0.0.1:{port}", temp
        self.env = _env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
        ray = str(BIN / "ray")
        subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false",
                        "--disable-usage-stats", f"--temp-dir={temp}"], env=self.env, check=True, capture_output=True)
        subprocess.run([ray, "start", "--address", self.address, "--num-cpus", "1", "--disable-usage-stats",
                        "--dashboard-agent-listen-port", "52501", "--dashboard-agent-grpc-port", "52502",
                        "--runtime-env-agent-port", "52503", "--metrics-export-port", "52504"],
                       env={**self.env, "RAY_AUTH_MODE": "token"}, check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=self.env, capture_output=True)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    results: dict[str, dict] = {}
    for jobs in args.jobs:
        results[f"local-{jobs}"] = run(make_project(WORK / f"local-{jobs}", jobs), None)
        print(f"local, {jobs} jobs: {results[f'local-{jobs}']['wall_seconds']:.1f} s", flush=True)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="ray-")))  # short: Ray's socket paths must fit 107 bytes
    try:
        for jobs in args.jobs:
            results[f"cluster-{jobs}"] = run(make_project(WORK / f"cluster-{jobs}", jobs), cluster.address)
            print(f"two nodes, {jobs} jobs: {results[f'cluster-{jobs}']['wall_seconds']:.1f} s", flush=True)
    finally:
        cluster.stop()
    (RESULTS / "cluster_scale.json").write_text(json.dumps({"jobs": args.jobs, "runs": results}, indent=1) + "\n")
    lines = ["# Training fan-out: local Ray against a two-node cluster", "",
             f"Command: `python benchmarks/cluster_scale.py --jobs {' '.join(map(str, args.jobs))}`. DAG: the smoke "
             "DAG's `train` (one Ray task per job, 2-epoch probes, then a gather), `forecast`, `allocate` and "
             "`continue` (the closed loop: items per job and round); 2 CPUs in both "
             "setups (one 2-CPU local Ray; two 1-CPU nodes of this machine). One run each, fresh project.", "",
             "| jobs | local run s | local train s | cluster run s | cluster train s | cluster / local (run) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for jobs in args.jobs:
        local, clu = results[f"local-{jobs}"], results[f"cluster-{jobs}"]
        lines.append(f"| {jobs} | {local['wall_seconds']:.1f} | {local['stages']['train']['seconds']:.1f} | "
                     f"{clu['wall_seconds']:.1f} | {clu['stages']['train']['seconds']:.1f} | "
                     f"{clu['wall_seconds'] / local['wall_seconds']:.2f} |")
    lines += ["", "Stage seconds, local / cluster: " + "; ".join(
        f"{jobs} jobs: " + ", ".join(f"{st} {results[f'local-{jobs}']['stages'][st]['seconds']:.1f}/"
                                     f"{results[f'cluster-{jobs}']['stages'][st]['seconds']:.1f}" for st in STAGES)
        for jobs in args.jobs) + "."]
    lines += ["", "Rows the runs wrote into their Prefect database (task runs, task run states, logs, events), local / "
              "cluster: " + "; ".join(f"{jobs} jobs: " + " / ".join(
                  ", ".join(str(v) for v in results[f"{mode}-{jobs}"]["prefect"].values()) for mode in ("local", "cluster"))
                  for jobs in args.jobs) + "."]
    lines += ["", "What the cluster runs moved, per stage (MiB; seconds spent by the tasks pulling inputs and pushing "
              "outputs, and by the driver landing the stage):", "",
              "| jobs | stage | tasks | inputs pulled MiB | pull s | outputs pushed MiB | push s | state to tasks MiB "
              "| state from tasks MiB | driver pull s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for jobs in args.jobs:
        for stage, s in results[f"cluster-{jobs}"]["stages"].items():
            lines.append(f"| {jobs} | {stage} | {s['tasks']} | {_mib(s.get('pulled_bytes', 0))} | "
                         f"{s.get('pull_seconds', 0):.2f} | {_mib(s.get('pushed_bytes', 0))} | {s.get('push_seconds', 0):.2f} | "
                         f"{_mib(s.get('state_in_bytes', 0))} | {_mib(s.get('state_out_bytes', 0))} | "
                         f"{s.get('land_seconds', 0):.2f} |")
    (RESULTS / "cluster_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
