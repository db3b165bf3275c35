"""Do the crowd models learn? (issue 11, item 5): each crowd job of params.yaml trained as the lifecycle
trains it (its model, optimiser, learning rate, seed and epochs; the crowd data of params.yaml), on one
thread, then its test MAE (count error, heads) against the MAE of always predicting the training set's
median count. Target: ratio ≤ 0.5 for every model.

    python benchmarks/crowd.py [--batch-size 64 8] [--epochs N] [--models mcnn resnet]

``--batch-size`` overrides the jobs' batch size (several values: one row per model and value); ``--epochs``
their epochs. Seconds per epoch are the trainer's own (training, BatchNorm recalibration and validation).
Writes benchmarks/results/crowd.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qoeflow.lifecycle.training import JobSpec, TrainingJob  # noqa: E402
from qoeflow.params import read_params_file, validate_params  # noqa: E402
from tasks.training_loop import job_split  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET = 0.5
# the same jobs before issue 11 item 5 (MCNN without BatchNorm, default-initialised density heads, BatchNorm's
# moving averages at eval, no flips), batch 64 as params.yaml, measured the same way: test MAE, s/epoch
BEFORE = {"crowd-mcnn": (11.96, 0.77), "crowd-csrnet": (10.10, 0.92), "crowd-vggdecoder": (11.04, 0.61),
          "crowd-resnet": (9.32, 0.36)}


def run(batch_sizes: list[int | None], epochs: int | None, models: list[str] | None) -> dict:
    """Train every selected crowd job once per batch size; rows of test MAE, baseline, ratio, s/epoch."""
    torch.set_num_threads(1)
    params = validate_params(read_params_file(ROOT / "params.yaml"))
    split = job_split(params.train, "crowd")
    median = split.counts["train"].double().median()
    baseline = (split.counts["test"].double() - median).abs().mean().item()
    rows = []
    for job in (j for j in params.train.jobs if j.task == "crowd" and (not models or j.model in models)):
        for batch in batch_sizes:
            spec = JobSpec(**{**job.model_dump(exclude={"max_epochs"}),
                              "batch_size": batch or job.batch_size, "epochs": epochs or job.epochs})
            trainer = TrainingJob(spec, split, threads=1, device="cpu")
            start = time.perf_counter()
            records = trainer.run()
            wall = time.perf_counter() - start
            mae = trainer.evaluate(split.x_test, split.y_test)["mae"]
            rows.append({"job": job.name, "model": job.model, "lr": spec.lr, "batch_size": spec.batch_size,
                         "epochs": spec.epochs, "test_mae": mae, "baseline_mae": baseline, "ratio": mae / baseline,
                         "val_mae": [r.metrics["mae"] for r in records],
                         "seconds_per_epoch": sum(r.epoch_seconds for r in records) / len(records),
                         "wall_seconds": wall})
            print(f"{job.name} bs {spec.batch_size}: test MAE {mae:.2f} / baseline {baseline:.2f} = {mae / baseline:.3f} "
                  f"({rows[-1]['seconds_per_epoch']:.2f} s/epoch)", flush=True)
    return {"data": params.train.data.crowd.model_dump(), "median_count": median.item(),
            "baseline_mae": baseline, "target_ratio": TARGET, "rows": rows,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine()}


def markdown(result: dict, command: str) -> str:
    """The results as a Markdown page, the command first."""
    lines = [f"# Crowd models against the median-count baseline\n", f"    {command}\n",
             f"Crowd data of params.yaml ({json.dumps(result['data'])}); test MAE of always predicting the "
             f"training set's median count ({result['median_count']:.0f}): **{result['baseline_mae']:.2f}** heads. "
             f"Target: ratio ≤ {result['target_ratio']}. One thread, torch {result['torch']}, on a shared "
             f"2-core machine (seconds are indicative).\n",
             "| job | lr | batch | epochs | test MAE | ratio | val MAE per epoch | s/epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        ok = "✓" if r["ratio"] <= result["target_ratio"] else "✗"
        curve = " ".join(f"{v:.1f}" for v in r["val_mae"])
        lines.append(f"| {r['job']} | {r['lr']:g} | {r['batch_size']} | {r['epochs']} | {r['test_mae']:.2f} | "
                     f"{r['ratio']:.3f} {ok} | {curve} | {r['seconds_per_epoch']:.2f} |")
    lines += ["", "Before this change (batch 64; same data and baseline):", "",
              "| job | test MAE | ratio | s/epoch |", "| --- | --- | --- | --- |"]
    lines += [f"| {job} | {mae:.2f} | {mae / result['baseline_mae']:.3f} | {sec:.2f} |"
              for job, (mae, sec) in BEFORE.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, nargs="+", default=[None], help="override the jobs' batch size")
    ap.add_argument("--epochs", type=int, default=None, help="override the jobs' epochs")
    ap.add_argument("--models", nargs="+", default=None, help="only these crowd models")
    ap.add_argument("--out", default="crowd", help="results file stem under benchmarks/results")
    args = ap.parse_args()
    result = run(args.batch_size, args.epochs, args.models)
    command = "python benchmarks/crowd.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"command": command, **result}, indent=1))
    (RESULTS / f"{args.out}.md").write_text(markdown(result, command.strip()))
    print(markdown(result, command.strip()))


if __name__ == "__main__":
    main()
