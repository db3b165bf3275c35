"""The planner against its peers (Ray Tune's ASHA and HyperBand) under the paper's weights w1, w2, w3.

One project per DAG (benchmarks/work/peers-<dag>): the probes are trained once (`qoeflow stage train`,
`forecast`), then for each weight preset `qoe.weights` is set in the project's params.yaml and
`allocate`, `continue` and `asha` are run as `qoeflow stage` (what `dvc repro` runs): the same jobs, the
same training-seconds budget and the same QoE model for the planner and every peer.

Usage: python benchmarks/planner_peers.py [--dag smoke|lifecycle ...] [--weights w1 w2 w3] [--set KEY=VALUE ...]
(--set: a params override in the DAG's params file, e.g. allocate.probe_epochs=1; recorded in the rows)
Results: benchmarks/results/planner_peers.json and .md (a run keeps the rows of other DAGs and other --set).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import clean_env, make_project  # noqa: E402

DAGS = {"smoke": ("dags/smoke.yaml", "data/smoke", "dags/smoke/params.yaml"),
        "lifecycle": ("dags/lifecycle.yaml", "data", "params.yaml")}


def stage(project: Path, dag: str, name: str) -> float:
    start = time.perf_counter()
    result = subprocess.run([str(BIN / "qoeflow"), "stage", name, "--dag", dag], cwd=project, env=clean_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"qoeflow stage {name} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - start


def set_weights(project: Path, preset: str) -> None:
    params = project / "params.yaml"
    text, count = re.subn(r"(?m)^(  weights: )\S+", rf"\g<1>{preset}", params.read_text(), count=1)
    if count != 1:
        raise SystemExit("params.yaml has no `qoe.weights:` line to set")
    params.write_text(text)


def override(path: Path, settings: dict[str, str]) -> None:
    """Set dotted keys (values parsed as YAML) in a params file."""
    doc = yaml.safe_load(path.read_text()) or {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def run_dag(name: str, weights: list[str], settings: dict[str, str]) -> list[dict]:
    dag, data, params = DAGS[name]
    project = WORK / f"peers-{name}"
    shutil.rmtree(project, ignore_errors=True)
    make_project(project)
    if settings:
        override(project / params, settings)
    probe_seconds = stage(project, dag, "train") + stage(project, dag, "forecast")
    rows = []
    for preset in weights:
        set_weights(project, preset)
        seconds = {s: stage(project, dag, s) for s in ("allocate", "continue", "asha")}
        doc = json.loads((project / data / "asha" / "asha.json").read_text())
        planner = doc["planner"]
        for peer, run in doc["peers"].items():
            rows.append({
                "dag": name, "weights": preset, "budget_seconds": doc["budget_seconds"],
                "planned": planner["E_sum_planned"], "replanned": planner["E_sum_replanned"],
                "realised": planner["E_sum_realised"], "planner_seconds": planner["seconds_used"],
                "set": settings, "peer": peer, "peer_E_sum": run["E_sum"], "peer_training_seconds": run["training_seconds"],
                "ratio": planner["E_sum_realised"] / run["E_sum"] if run["E_sum"] else float("inf"),
                "peer_epochs": {job: j["epochs"] for job, j in sorted(run["jobs"].items())},
                "stage_seconds": {"probes": probe_seconds, **seconds}})
        print(f"{name} {preset}: planner realised {planner['E_sum_realised']:.4f}; "
              + ", ".join(f"{p} {r['E_sum']:.4f}" for p, r in doc["peers"].items()), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["# Planner against its peers under w1, w2, w3", "",
             "Command: `python benchmarks/planner_peers.py [--dag D] [--set K=V ...]` (probes once per DAG, then "
             "`allocate`, `continue`, `asha` per weight preset; same jobs, budget and QoE model for all). A DAG "
             "label lists the params set for the run (otherwise the DAG's defaults). `planned`: E_sum of the "
             "first plan, from the probes; `last re-plan`: of the closed loop's last plan; `realised`: of the "
             "epochs the jobs reached; `planner s`, `peer training s`: training seconds in all, probes included; "
             "a job a peer never reached scores 0.", "",
             "| DAG | weights | budget s | planned | last re-plan | realised | planner s | peer | peer E_sum "
             "| peer training s | realised / peer | peer epochs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        label = r["dag"] + "".join(f" {k}={v}" for k, v in r.get("set", {}).items())
        lines.append(f"| {label} | {r['weights']} | {r['budget_seconds']:.1f} | {r['planned']:.4f} | "
                     f"{r['replanned']:.4f} | {r['realised']:.4f} | {r['planner_seconds']:.1f} | {r['peer']} | "
                     f"{r['peer_E_sum']:.4f} | {r['peer_training_seconds']:.1f} | {r['ratio']:.3f} | "
                     f"{' '.join(f'{k}:{v}' for k, v in r['peer_epochs'].items())} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dag", nargs="+", choices=list(DAGS), default=list(DAGS))
    parser.add_argument("--weights", nargs="+", default=["w1", "w2", "w3"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    out = RESULTS / "planner_peers.json"
    kept = [r for r in (json.loads(out.read_text()) if out.exists() else [])  # other DAGs' and settings' rows
            if r["dag"] not in args.dag or r.get("set", {}) != settings]
    rows = kept + [row for name in args.dag for row in run_dag(name, args.weights, settings)]
    out.write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "planner_peers.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
