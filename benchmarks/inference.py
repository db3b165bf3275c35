"""Benchmarks of inference precision and layout (issue: inference benchmark), on the device this runs on.

1. Precision and layout at batch 64 for the zoo's VGG and ResNet trained on `digits` and `sprites` (the
   compression benchmark's base models, benchmarks/work/compression; trained there first if absent):
   every precision of the device's list plus `bf16+cl`, each also with batch norms folded (`+fold`);
   speedup against fp32 and fp32+cl folded alike, accuracy drop
   (goal on this CPU: bf16 with channels_last ≥ 3× fp32 for the best variant and ≥ 1.8× fp32+cl, at
   ≤ 0.5 point; on a GPU: fp16 ≥ 1.8× fp32 for the base model).
2. Greedy layer conversion (thesis 004 Algorithm 1 as meant) on validation, drop on the test split: fp16
   with the paper's 5 % budget, and a harsh format (fp32 keeping 3 mantissa bits) with a 1 % budget that
   not every layer fits; the conversion order is plotted.

`python benchmarks/inference.py [--device auto|cpu|cuda]`; results in benchmarks/results/inference-<device>.json,
.md and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression import Settings, base_model, split  # noqa: E402  (the same base models)

from qoeflow.lifecycle import precision as conversion  # noqa: E402
from qoeflow.lifecycle.finetune import accuracy  # noqa: E402
from qoeflow.models import harness  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = [(f, m) for f in ("sprites", "digits") for m in ("vgg", "resnet")]
GREEDY = (("fp16", 0.05), ("mantissa-3", 0.01))


def precision_table(device: torch.device, min_run_time: float) -> list[dict]:
    """Every precision of the device's list plus bf16+cl, each also with batch norms folded; speedups against
    fp32 and fp32+cl of the same folding, accuracy drop against plain fp32."""
    unfolded = list(dict.fromkeys([*harness.default_precisions(device), "bf16+cl"]))
    precisions = unfolded + [f"{name}+fold" for name in unfolded]
    rows = []
    for family, model in MODELS:
        data = split(family)
        base = base_model(family, model, Settings(quick=False), data)
        print(f"precisions {family}/{model} on {device}", flush=True)
        measured = harness.measure_model(base, precisions, device, [64], data.x_test, data.y_test,
                                         min_run_time=min_run_time)
        by = {r["precision"]: r for r in measured if r["error"] is None}
        for r in measured:
            ok = r["error"] is None
            fold = "+fold" if harness.precision(r["precision"]).folded else ""
            fp32, fp32_cl = by.get("fp32" + fold), by.get("fp32+cl" + fold)
            rows.append({"family": family, "model": model, "precision": r["precision"], "error": r["error"],
                         "p50_ms": r.get("p50_ms"), "accuracy": r.get("accuracy"),
                         "vs_fp32": fp32["p50_ms"] / r["p50_ms"] if ok and fp32 else None,
                         "vs_fp32_cl": fp32_cl["p50_ms"] / r["p50_ms"] if ok and fp32_cl else None,
                         "drop_points": 100 * (by["fp32"]["accuracy"] - r["accuracy"]) if ok and "fp32" in by else None,
                         "device": r["device"], "threads": r["threads"]})
    return rows


def greedy(family: str, model: str) -> list[dict]:
    data = split(family)
    base = base_model(family, model, Settings(quick=False), data)
    layers = conversion.convertible_layers(base)
    out = []
    for fmt, budget in GREEDY:
        print(f"greedy {fmt} {family}/{model}", flush=True)

        def evaluate(chosen: frozenset[str]) -> float:
            return accuracy(conversion.converted(base, sorted(chosen), fmt), data.x_val, data.y_val)

        result = conversion.greedy_conversion(layers, evaluate, budget)
        test_base = accuracy(base, data.x_test, data.y_test)
        test_final = accuracy(conversion.converted(base, result.order, fmt), data.x_test, data.y_test)
        out.append({"family": family, "model": model, "format": fmt, "budget": budget, "layers": layers,
                    "order": result.order, "val_accuracy": [result.base_accuracy] + [s.accuracy for s in result.steps],
                    "stopped": result.stopped, "test_base": test_base, "test_converted": test_final,
                    "test_drop_points": 100 * (test_base - test_final)})
    return out


def figure(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GREEDY), figsize=(6.4 * len(GREEDY), 4.2), squeeze=False)
    for ax, (fmt, budget) in zip(axes[0], GREEDY):
        for i, run in enumerate(r for r in runs if r["format"] == fmt):
            steps = range(len(run["val_accuracy"]))
            ax.plot(steps, run["val_accuracy"], marker="o", color=f"C{i}", label=f"{run['family']}/{run['model']}")
            for step, layer in enumerate(run["order"], start=1):
                ax.annotate(layer, (step, run["val_accuracy"][step]), fontsize=6, color=f"C{i}",
                            xytext=(2, 3), textcoords="offset points")
        ax.set(title=f"greedy conversion to {fmt}, budget {budget:.0%}", xlabel="layers converted",
               ylabel="validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def markdown(result: dict) -> str:
    lines = ["# Inference precision and layout benchmark", "",
             f"Command: `{result['command']}`. Device: {result['device']} (torch {torch.__version__}, "
             f"{result['threads']} thread(s)); batch 64, median of per-call timings. `+fold`: batch norms folded "
             "into the convolutions before them; a folded row's speedups are against fp32 and fp32+cl folded alike, "
             "its accuracy drop against plain fp32.", "",
             "| model | precision | p50 ms | vs fp32 | vs fp32+cl | accuracy | drop (pt) |", "| --- |" + " --- |" * 6]
    for r in result["precisions"]:
        if r["error"]:
            lines.append(f"| {r['family']}/{r['model']} | {r['precision']} | {r['error']} | | | | |")
            continue
        fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"| {r['family']}/{r['model']} | {r['precision']} | {r['p50_ms']:.2f} | {fmt(r['vs_fp32'], '.2f')}× | "
                     f"{fmt(r['vs_fp32_cl'], '.2f')}× | {100 * r['accuracy']:.1f} | {fmt(r['drop_points'], '.1f')} |")
    lines += ["", "## Greedy layer conversion (validation accuracy decides; test drop reported)", "",
              "| model | format | budget | converted | order | stopped | test drop (pt) |", "| --- |" + " --- |" * 6]
    for g in result["greedy"]:
        lines.append(f"| {g['family']}/{g['model']} | {g['format']} | {g['budget']:.0%} | {len(g['order'])}/{len(g['layers'])} | "
                     f"{', '.join(g['order'])} | {g['stopped']} | {g['test_drop_points']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=harness.DEVICES)
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args()
    device = harness.resolve_device(args.device)
    torch.set_num_threads(1)  # timing on one thread; the base models train (once) on it too
    result = {"command": " ".join(["python", "benchmarks/inference.py", *sys.argv[1:]]),
              "device": harness.device_info(device)["device"],
              "threads": torch.get_num_threads(), "precisions": precision_table(device, args.min_run_time),
              "greedy": [g for family, model in MODELS for g in greedy(family, model)]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"inference-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    figure(result["greedy"], stem.with_suffix(".png"))
    print(markdown(result))


if __name__ == "__main__":
    main()
