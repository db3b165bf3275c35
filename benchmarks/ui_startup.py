"""Start-up of the embedded Prefect server with the UI off (what `qoeflow run` starts) and on (`qoeflow run
--ui`, `qoeflow ui`, `qoeflow serve`): seconds from launch until its API answers, alternating the two,
in one project whose database is already migrated (as after a project's first run).

Usage: python benchmarks/ui_startup.py [--repeats N]
Results: benchmarks/results/ui_startup.json and .md (medians, and the ratio on / off).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "ui-startup"
sys.path.insert(0, str(REPO))
from flows.runtime import prefect_server  # noqa: E402


def start_seconds(root: Path, ui: bool) -> float:
    start = time.perf_counter()
    with prefect_server(root, ui=ui):
        ready = time.perf_counter() - start
    return ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    start_seconds(WORK, ui=True)  # migrates the database and unpacks the UI's files once, like a first run
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for ui in (False, True):
            times["on" if ui else "off"].append(start_seconds(WORK, ui))
    medians = {k: statistics.median(v) for k, v in times.items()}
    doc = {"repeats": args.repeats, "seconds": times, "median": medians, "ratio_on_off": medians["on"] / medians["off"]}
    (RESULTS / "ui_startup.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Embedded Prefect server start-up, UI off and on", "",
             f"Command: `python benchmarks/ui_startup.py --repeats {args.repeats}` (alternating; seconds from "
             "launch until the API answers its health check; database already migrated).", "",
             "| UI | median s | min s | max s |", "| --- | --- | --- | --- |"]
    for key, values in times.items():
        lines.append(f"| {key} | {medians[key]:.2f} | {min(values):.2f} | {max(values):.2f} |")
    lines += ["", f"Ratio of medians, on / off: {doc['ratio_on_off']:.2f}."]
    (RESULTS / "ui_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
