"""DMS latency-control benchmark (issue: deployment simulation, part 2; paper 002 §IV-C, Figs. 11–14).

The digits VGG trained for 40 epochs (as benchmarks/compression.py trains it; cached under benchmarks/work/qos/),
made a DMSNet with the compress stage's DMS params, its test accuracy per level. Then, at each batch size,
the deploy stage's experiment with params.yaml's `deploy.qos` (one task alone, then all tasks together, each
with PI control and at level 0 always, a matrix-multiplying thread in the middle third): per task and phase
the share of periods within 10 % of the target, and whether some level reaches the target (by the level
profiles measured undisturbed and disturbed). Goal: ≥ 80 % within 10 % for every task, with and without
disturbance, where the target is reachable.

    python benchmarks/qos.py [--batches 16 64] [--periods 150]

Writes benchmarks/results/qos.{md,json} and qos-<batch>.png (the concurrent experiment).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qoeflow.data import load_split  # noqa: E402
from qoeflow.lifecycle import dms  # noqa: E402
from qoeflow.lifecycle.finetune import fit  # noqa: E402
from qoeflow.models import arch  # noqa: E402
from qoeflow.models.digits import BUILDERS  # noqa: E402
from qoeflow.models.qos_run import Disturbance, experiment, experiment_summary, level_accuracy, plot_qos  # noqa: E402
from qoeflow.params import read_params_file, validate_params  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "qos"
RESULTS = ROOT / "benchmarks" / "results"
EPOCHS = 40


def trained_vgg(data) -> torch.nn.Module:
    path = WORK / f"digits-vgg-{EPOCHS}.pt"
    if path.is_file():
        return arch.read_model(path)[0]
    torch.manual_seed(0)
    net = BUILDERS["vgg"]()
    print(f"training digits/vgg for {EPOCHS} epochs", flush=True)
    fit(net, data.x_train, data.y_train, epochs=EPOCHS, lr=1e-3, seed=0)
    WORK.mkdir(parents=True, exist_ok=True)
    arch.save_model(net.eval(), path)
    return net


def rows(summary: dict) -> list[str]:
    out = []
    for name, tasks in summary["experiments"].items():
        for task, info in tasks.items():
            cells = [name, task, f"{info['target_ms']:.2f}"]
            for phase in ("undisturbed", "disturbed"):
                c, u = info["controlled"][phase], info["uncontrolled"][phase]
                reach = "" if info["reachable"][phase] else " (unreachable)"
                cells += [f"{c['within_10']:.0%}{reach}", f"{u['within_10']:.0%}", f"{c['accuracy']:.2f}"]
            out.append("| " + " | ".join(cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--periods", type=int, default=150)
    args = ap.parse_args()
    command = "python benchmarks/qos.py" + "".join(f" {a}" for a in sys.argv[1:])
    params = validate_params(read_params_file(ROOT / "params.yaml"))
    p, c = params.deploy.qos, params.compress.dms
    data = load_split("digits", size=32)
    net, _ = dms.make_dms(trained_vgg(data), data.x_val, data.y_val, saving=c.saving, base_factor=c.base_factor,
                          min_factor=c.min_factor, round_to=c.round_to)
    accuracy = level_accuracy(net, data.x_test, data.y_test)
    lines = ["# DMS latency control (paper 002 §IV-C)", "", f"`{command}`: digits VGG ({EPOCHS} epochs), "
             f"{net.levels} DMS levels, test accuracy per level {[round(a, 3) for a in accuracy]}; "
             f"{args.periods} periods × {p.inferences} inferences per task, targets {p.targets} × level 0's "
             f"latency, {p.disturbance_threads} disturbance thread(s), {p.threads} torch thread(s).", ""]
    results = {"command": command, "accuracy": accuracy, "batches": {}}
    for batch in args.batches:
        x = torch.randn((batch, 1, 32, 32), generator=torch.Generator().manual_seed(0))
        print(f"batch {batch}", flush=True)
        result = experiment(net, p.targets, p.single, x, accuracy, periods=args.periods, inferences=p.inferences,
                            disturbance=Disturbance(threads=p.disturbance_threads), threads=p.threads, speed=p.speed)
        summary = experiment_summary(result, accuracy)
        results["batches"][batch] = summary
        concurrent = result.records[result.records["experiment"] == "concurrent"].drop(columns="experiment")
        plot_qos(concurrent).savefig(RESULTS / f"qos-{batch}.png", dpi=80)
        lines += [f"## Batch {batch} ({result.seconds:.0f} s)", "",
                  "Level latency (ms), undisturbed / disturbed: " + ", ".join(
                      f"L{lv['level']} {lv['latency_ms']:.2f}/{lv['disturbed_latency_ms']:.2f}"
                      for lv in summary["levels"]), "",
                  "| experiment | task | target ms | undisturbed: within 10 % | no control | accuracy "
                  "| disturbed: within 10 % | no control | accuracy |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *rows(summary), ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "qos.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "qos.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
