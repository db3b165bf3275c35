"""What glibc's allocator does to CPU latency (qoeflow/models/latency.py, `steady_allocator`).

Each measurement runs in a fresh process, as a stage's worker or a benchmark starts: an untrained zoo model
(its weights do not change the time), one torch thread, `harness.time_calls` (0.5 s of calls, the first
ones included), with glibc's default thresholds (the harness's own call to `steady_allocator` switched off)
or with `steady_allocator` set before the first call; also the minor page faults per call. Modes
alternate, repeated `--repeats` times; the table gives medians.

    python benchmarks/allocator.py [--repeats 3]

Writes benchmarks/results/allocator.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CASES = [("digits", "vgg", (1, 32, 32), 16), ("digits", "vgg", (1, 32, 32), 64),
         ("digits", "resnet", (1, 32, 32), 16), ("digits", "resnet", (1, 32, 32), 64),
         ("sprites", "vgg", (1, 32, 32), 64), ("crowd", "mcnn", (3, 128, 128), 1),
         ("crowd", "csrnet", (3, 128, 128), 1)]

PROBE = r"""
import json, resource, sys
import torch
from qoeflow.models import build_model, harness
from qoeflow.models.latency import steady_allocator

family, name, shape, batch, steady = json.loads(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(0)
if steady:
    steady_allocator()
else:  # the harness sets it itself; here it must not
    harness.steady_allocator = lambda: False
model = build_model(family, name).eval()
x = torch.randn(batch, *shape)
with torch.no_grad():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    timing = harness.time_calls(model, x, min_run_time=0.5, warmup=0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / timing.calls
print(json.dumps({"p50_ms": timing.p50_ms, "faults_per_call": faults}))
"""


def probe(case: tuple, steady: bool) -> dict:
    family, name, shape, batch = case
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps([family, name, shape, batch, steady])],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    command = "python benchmarks/allocator.py" + "".join(f" {a}" for a in sys.argv[1:])
    rows = []
    for case in CASES:
        runs = {False: [], True: []}
        for _ in range(args.repeats):
            for steady in (False, True):
                runs[steady].append(probe(case, steady))
        row = {"model": f"{case[0]}/{case[1]}", "input": "×".join(map(str, case[2])), "batch": case[3]}
        for steady, key in ((False, "default"), (True, "steady")):
            row[f"{key}_ms"] = statistics.median(r["p50_ms"] for r in runs[steady])
            row[f"{key}_faults"] = statistics.median(r["faults_per_call"] for r in runs[steady])
        row["ratio"] = row["default_ms"] / row["steady_ms"]
        rows.append(row)
        print(row, flush=True)
    lines = ["# glibc's allocator and CPU latency", "",
             f"`{command}`: every figure from a fresh process, one torch thread, untrained models, median p50 of "
             f"{args.repeats} processes per mode; page faults: minor faults per call.", "",
             "| model | input | batch | glibc defaults ms | faults/call | steady_allocator ms | faults/call | ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['input']} | {r['batch']} | {r['default_ms']:.2f} | {r['default_faults']:.0f} | "
              f"{r['steady_ms']:.2f} | {r['steady_faults']:.0f} | {r['ratio']:.2f}× |" for r in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "allocator.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    (RESULTS / "allocator.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
