"""Benchmarks of compression and multi-exit retraining (issue: compression and multi-exit).

Base models: the zoo's VGG and ResNet trained on `digits` and on `sprites` (larger val/test parts than the
lifecycle's, so one accuracy point is many samples), cached in benchmarks/work/compression. Settings are
the params' defaults (`qoeflow.params`) unless a section says otherwise. Latencies: batch 1 and 64 on the
CPU with one thread, least median of interleaved rounds of `latency.measure`.

1. D-Pruner against Torch-Pruning ℓ1 at the same MACs and fine-tuning epochs, channels unrounded and
   rounded to 8 (goal on sprites: ≥ 2.5× fewer MACs at ≤ 1 point drop, ≥ 1.5× batch-64 speedup, accuracy
   ≥ ℓ1's). D-Pruner runs with a 3-point budget so the table shows where 2.5× lands.
2. Tucker-2 at several retained variances, fine-tuned (goal: ≥ 2× fewer MACs at ≤ 1 point drop).
3. DMS: accuracy and latency at every level against Eq. (2)'s prediction (goal: within 15 %).
4. Multi-exit ResNet, 4 exits: per-exit accuracy of the MXN (with and without aggregation) against single
   exit models; exit precision/recall with cross-entropy and focal loss (Table 5.8); training and serving
   speedup against the ideal (goal ≥ 80 %); early exit (goal ≥ 2× MACs, ≥ 1.7× batch-1 latency, ≤ 0.5 pt).

`python benchmarks/compression.py [--sections dpruner,tucker,dms,multiexit] [--quick]`; results in
benchmarks/results/compression.json and .md (each section is saved as soon as it is done).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from qoeflow.data import load_split
from qoeflow.lifecycle import decomposition, dms, multiexit as mx, pruning
from qoeflow.lifecycle.finetune import accuracy, fit
from qoeflow.models import arch
from qoeflow.models.digits import BUILDERS
from qoeflow.models.latency import measure, torch_threads
from qoeflow.models.macs import count_macs
from qoeflow.params import CompressParams, MultiExitParams

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "compression"
FAMILIES = ("sprites", "digits")
SECTIONS = ("dpruner", "tucker", "dms", "multiexit")
SHAPE = (1, 32, 32)
BATCHES = (1, 64)
ROUNDINGS = (None, 8, 16)  # channel counts: free, or multiples of 8 or 16 (AVX-512 kernels work in blocks of 16)
LATENCY_THREADS = 1


class Settings:
    """Epochs and timing of one benchmark run (`quick`: tiny, to check the script end to end)."""

    def __init__(self, quick: bool, lr: float | None = None):
        self.quick = quick
        self.lr = CompressParams.model_fields["lr"].default if lr is None else lr  # D-Pruner's and Tucker-2's fine-tuning
        self.base_epochs = 2 if quick else 40
        self.rounds, self.min_run_time = (1, 0.05) if quick else (3, 0.3)
        self.dpruner_iterations = 2 if quick else 6
        self.dpruner_budget = 0.03
        self.tucker_variances = (0.7,) if quick else (0.9, 0.8, 0.7, 0.6)
        self.tucker_epochs = 1 if quick else 10
        self.exit_epochs = 1 if quick else 6
        self.thresholds = (0.5, 0.7)  # Table 5.8's two decision thresholds
        self.targets = (0.99, 0.995)  # calibrated exit precisions


def split(family: str):
    """The family's split; sprites with 1,000 validation and 2,000 test images."""
    return load_split(family, size=32, **({"n_val": 1000, "n_test": 2000} if family == "sprites" else {}))


def base_model(family: str, model: str, s: Settings, data) -> torch.nn.Module:
    """The trained base model (cached by family, model and epochs)."""
    path = WORK / f"base-{family}-{model}-{s.base_epochs}.pt"
    if path.is_file():
        return arch.read_model(path)[0]
    torch.manual_seed(0)
    net = BUILDERS[model]()
    print(f"training base {family}/{model} for {s.base_epochs} epochs", flush=True)
    fit(net, data.x_train, data.y_train, epochs=s.base_epochs, lr=1e-3, seed=0)
    WORK.mkdir(parents=True, exist_ok=True)
    arch.save_model(net.eval(), path)
    return net


def timing_threads():
    """Latency is measured on one thread (steadier on a shared 2-core machine); training uses all."""
    return torch_threads(LATENCY_THREADS)


def latencies(fns: dict[str, Callable], s: Settings) -> dict[str, dict[int, float]]:
    """Median ms of each function at each batch size: the least over interleaved rounds."""
    out = {name: {b: math.inf for b in BATCHES} for name in fns}
    with timing_threads():
        for _ in range(s.rounds):
            for name, fn in fns.items():
                for b in BATCHES:
                    ms = measure(fn, torch.randn(b, *SHAPE), min_run_time=s.min_run_time).median_ms
                    out[name][b] = min(out[name][b], ms)
    return out


def _eval(model: torch.nn.Module) -> torch.nn.Module:
    return model.eval()


# ------------------------------------------------------------------------------------------- D-Pruner

def dpruner_section(family: str, model: str, s: Settings) -> dict:
    data = split(family)
    base = base_model(family, model, s, data)
    train, val, test = data.part("train"), data.part("val"), data.part("test")
    p = CompressParams.model_fields["dpruner"].default
    lr = s.lr
    runs, models = {}, {"base": base}
    for round_to in ROUNDINGS:
        tag = f"r{round_to or 1}"
        print(f"D-Pruner {family}/{model} round_to={round_to}", flush=True)
        result = pruning.d_pruner(base, train, val, test=test, ratio=p.ratio, threshold=p.threshold,
                                  accuracy_budget=s.dpruner_budget, block_epochs=p.block_epochs,
                                  net_epochs=p.net_epochs, finetune_epochs=p.finetune_epochs,
                                  max_iterations=s.dpruner_iterations, round_to=round_to, lr=lr, seed=0,
                                  latency_min_run_time=0)
        original = result.original
        picks = _picks(result)
        rows = []
        for it in result.iterations[1:]:
            models[f"{tag}-dp{it.index}"] = it.model
            row = _pruned_row(it, original, f"{tag}-dp{it.index}")
            if it.index in picks:
                print(f"  ℓ1 at the MACs of iteration {it.index}", flush=True)
                l1 = pruning.magnitude_like(result, it, train, val, test=test, round_to=round_to, lr=lr, seed=0,
                                            latency_min_run_time=0).iterations[-1]
                models[f"{tag}-l1-{it.index}"] = l1.model
                row["l1"] = _pruned_row(l1, original, f"{tag}-l1-{it.index}")
            rows.append(row)
        runs[tag] = {"round_to": round_to, "stopped": result.stopped, "iterations": rows}
    ms = latencies({k: _eval(m) for k, m in models.items()}, s)
    base_acc = accuracy(base, *test)
    control = copy.deepcopy(base)
    per_iteration = p.block_epochs + p.net_epochs + p.finetune_epochs
    fit(control, *train, epochs=per_iteration, lr=lr, seed=1)
    for run in runs.values():
        for row in run["iterations"]:
            for r in (row, row.get("l1")):
                if r:
                    r.update(_speed(ms[r.pop("key")], ms["base"]), drop_points=100 * (base_acc - r["test_accuracy"]))
    return {"family": family, "model": model, "base_test_accuracy": base_acc, "base_macs": count_macs(base, SHAPE),
            "dense_control": {"epochs": per_iteration, "test_accuracy": accuracy(control.eval(), *test)},
            "base_latency_ms": ms["base"], "settings": {**p.model_dump(), "accuracy_budget": s.dpruner_budget,
                                                        "max_iterations": s.dpruner_iterations, "lr": lr},
            "runs": runs}


def _picks(result: pruning.PruningResult) -> set[int]:
    """The iterations that get an ℓ1 twin: the last within 1 point on validation (else the first), and the
    first at ≥ 2.5× fewer MACs (else the last)."""
    its, o = result.iterations[1:], result.original
    if not its:
        return set()
    within = [it.index for it in its if o.accuracy - it.accuracy <= 0.01 + 1e-9] or [its[0].index]
    far = [it.index for it in its if o.macs / it.macs >= 2.5] or [its[-1].index]
    return {within[-1], far[0]}


def _pruned_row(it: pruning.Iteration, original: pruning.Iteration, key: str) -> dict:
    return {"key": key, "iteration": it.index, "epochs": it.epochs, "val_accuracy": it.accuracy,
            "test_accuracy": it.test_accuracy, "macs": it.macs, "macs_reduction": original.macs / it.macs,
            "params": it.params, "filters": it.filters}


def _speed(ms: dict[int, float], base_ms: dict[int, float]) -> dict:
    return {"latency_ms": ms, **{f"speedup_b{b}": base_ms[b] / ms[b] for b in BATCHES}}


# --------------------------------------------------------------------------------------------- Tucker-2

def tucker_section(family: str, model: str, s: Settings) -> dict:
    data = split(family)
    base = base_model(family, model, s, data)
    lr = s.lr
    base_acc, base_macs = accuracy(base, *data.part("test")), count_macs(base, SHAPE)
    rows, models = [], {"base": base}
    for variance in s.tucker_variances:
        print(f"Tucker-2 {family}/{model} variance {variance}", flush=True)
        net, layers = decomposition.decompose(base, variance, input_shape=SHAPE)
        before = accuracy(net, *data.part("test"))
        start = time.perf_counter()
        decomposition.fine_tune(net, data.x_train, data.y_train, epochs=s.tucker_epochs, lr=lr, seed=0)
        after = accuracy(net, *data.part("test"))
        models[f"v{variance}"] = net.eval()
        rows.append({"key": f"v{variance}", "variance": variance, "finetune_epochs": s.tucker_epochs,
                     "finetune_seconds": time.perf_counter() - start, "test_accuracy_before_finetune": before,
                     "test_accuracy": after, "drop_points": 100 * (base_acc - after),
                     "macs": count_macs(net, SHAPE), "macs_reduction": base_macs / count_macs(net, SHAPE),
                     "params": sum(p.numel() for p in net.parameters()),
                     "layers": [{"name": l.name, "ranks": list(l.ranks), "macs_before": l.macs_before,
                                 "macs_after": l.macs_after, "decomposed": l.decomposed} for l in layers],
                     "max_error": max((l.error for l in layers if l.decomposed), default=0.0),
                     "max_error_tensorly": max((l.error_tensorly for l in layers
                                                if l.decomposed and not math.isnan(l.error_tensorly)), default=0.0)})
    ms = latencies(models, s)
    for row in rows:
        row.update(_speed(ms[row.pop("key")], ms["base"]))
    return {"family": family, "model": model, "base_test_accuracy": base_acc, "base_macs": base_macs, "lr": lr,
            "base_latency_ms": ms["base"], "variances": rows}


# ------------------------------------------------------------------------------------------------- DMS

def dms_section(family: str, model: str, s: Settings) -> dict:
    data = split(family)
    base = base_model(family, model, s, data)
    p = CompressParams.model_fields["dms"].default
    tables = {}
    for round_to in ROUNDINGS:
        print(f"DMS {family}/{model} round_to={round_to}", flush=True)
        try:
            net, table = dms.make_dms(base, data.x_val, data.y_val, saving=p.saving, base_factor=p.base_factor,
                                      min_factor=p.min_factor, round_to=round_to)
        except ValueError as exc:
            tables[f"r{round_to or 1}"] = {"round_to": round_to, "refused": str(exc)}
            continue
        tables[f"r{round_to or 1}"] = _dms_levels(net.eval(), table, data, s) | {"round_to": round_to}
    return {"family": family, "model": model, "settings": p.model_dump(), "tables": tables}


def conv_share(fn: Callable, batch: int, calls: int = 20) -> float:
    """Share of `fn`'s CPU time spent in convolution kernels (torch.profiler, one thread): Eq. (2) models
    only these."""
    from torch.profiler import profile

    x = torch.randn(batch, *SHAPE)
    with timing_threads(), torch.no_grad():
        fn(x)
        with profile() as prof:
            for _ in range(calls):
                fn(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if "convolution" in e.key) / total


def _dms_levels(net: dms.DMSNet, table: dms.DMSTable, data, s: Settings) -> dict:
    costs = dms.level_costs(net, SHAPE)
    ms = latencies({c.level: (lambda x, level=c.level: net(x, level)) for c in costs}, s)
    share = conv_share(lambda x: net(x, 0), 64)
    full, levels = costs[0], []
    for c in costs:
        with torch.no_grad():
            correct = sum(int((net(xb, c.level).argmax(1) == yb).sum())
                          for xb, yb in zip(data.x_test.split(500), data.y_test.split(500)))
        ratio = c.predicted_conv_macs / full.predicted_conv_macs
        predicted = {b: ms[0][b] * c.predicted_macs / full.predicted_macs for b in BATCHES}
        conv_only = ms[0][64] * (1 - share + share * ratio)
        levels.append({"level": c.level, "test_accuracy": correct / len(data.y_test),
                       "predicted_macs": c.predicted_macs, "counted_macs": c.counted_macs, "latency_ms": ms[c.level],
                       "eq2_latency_ms": predicted, "eq2_conv_share_latency_b64_ms": conv_only,
                       "eq2_conv_share_error_b64": ms[c.level][64] / conv_only - 1,
                       **{f"eq2_error_b{b}": ms[c.level][b] / predicted[b] - 1 for b in BATCHES}})
    return {"table": [{"group": e.group, "factor": e.factor, "active": e.active, "width": e.width,
                       "val_drop": e.sensitivity} for e in table.entries], "levels": levels,
            "conv_share_of_time_b64": share}


# ------------------------------------------------------------------------------------------ multi-exit

def multiexit_section(family: str, model: str, s: Settings) -> dict:
    data = split(family)
    base = base_model(family, model, s, data)
    p = MultiExitParams.model_fields
    depths, weights = p["depths"].default, p["weights"].default
    head, lr = p["head_width"].default, p["lr"].default
    x_test, y_test = data.part("test")

    def train(net: torch.nn.Module, gamma: float = 0.0) -> float:
        return mx.timed_fit(net, data.x_train, data.y_train, weights=[1.0] * net.n_exits, gamma=gamma,
                            epochs=s.exit_epochs, lr=lr, seed=0)

    nets, seconds = {}, {}
    for name, aggregate, gamma in (("ce", False, 0.0), ("ce+aggregate", True, 0.0), ("focal", False, 2.0)):
        print(f"multi-exit {family}/{model} {name}", flush=True)
        nets[name] = mx.MultiExitNet(base, depths, input_shape=SHAPE, aggregate=aggregate, head_width=head)
        seconds[name] = mx.timed_fit(nets[name], data.x_train, data.y_train, weights=weights, gamma=gamma,
                                     epochs=s.exit_epochs, lr=lr, seed=0)
        nets[name].eval()
    singles, single_s = [], []
    for d in depths:
        print(f"single exit {family}/{model} depth {d}", flush=True)
        net = mx.single_exit(base, d, input_shape=SHAPE, head_width=head)
        single_s.append(train(net))
        singles.append(net.eval())
    ideal = mx.ideal_speedup(singles, base, SHAPE)
    training = mx.training_speedup(seconds["ce"], single_s, ideal)
    x32 = x_test[:32]
    with timing_threads():
        serving = mx.serving_speedup(nets["ce"], singles, x32, ideal, min_run_time=s.min_run_time, repeats=s.rounds)
    per_exit = {name: mx.exit_accuracies(net, x_test, y_test) for name, net in nets.items()}
    per_exit["single"] = [mx.exit_accuracies(net, x_test, y_test)[0] for net in singles]
    logits = {name: mx.all_exit_logits(nets[name], x_test) for name in ("ce", "focal")}
    decisions = {name: {str(t): [vars(d) for d in mx.exit_decisions(lg, y_test, t)] for t in s.thresholds}
                 for name, lg in logits.items()}
    early = {}
    for target in s.targets:
        val_logits = mx.all_exit_logits(nets["ce"], data.x_val)
        thresholds = mx.calibrate_thresholds(val_logits, data.y_val, target)
        with timing_threads():
            r = mx.early_exit_report(nets["ce"], base, x_test, y_test, thresholds, input_shape=SHAPE,
                                     min_run_time=s.min_run_time, repeats=s.rounds)
        early[str(target)] = {"thresholds": thresholds, "exit_shares": r.exit_shares, "accuracy": r.accuracy,
                              "full_accuracy": r.full_accuracy, "accuracy_drop_points": r.accuracy_drop,
                              "mean_macs": r.mean_macs, "full_macs": r.full_macs, "macs_reduction": r.macs_reduction,
                              "mean_ms": r.mean_ms, "full_ms": r.full_ms, "latency_reduction": r.latency_reduction}
    return {"family": family, "model": model, "depths": depths, "epochs": s.exit_epochs, "head_width": head,
            "base_test_accuracy": accuracy(base, x_test, y_test), "per_exit_accuracy": per_exit,
            "exit_decisions": decisions, "ideal_speedup": ideal,
            "training": {"multi_s": training.multi_s, "singles_s": training.singles_s, "measured": training.measured,
                         "share_of_ideal": training.share_of_ideal},
            "serving_b32": {"multi_s": serving.multi_s, "singles_s": serving.singles_s, "measured": serving.measured,
                            "share_of_ideal": serving.share_of_ideal},
            "early_exit": early}


# ---------------------------------------------------------------------------------------------- report

RUNS = {"dpruner": (dpruner_section, ("vgg", "resnet")), "tucker": (tucker_section, ("vgg", "resnet")),
        "dms": (dms_section, ("vgg", "resnet")), "multiexit": (multiexit_section, ("resnet",))}


def _x(v: float) -> str:
    return f"{v:.2f}×"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def render(result: dict) -> str:
    """The results (as read back from JSON: string keys) as Markdown: the goals, met or missed with their
    figures, then every table."""
    env = result["environment"]
    lines = ["# Compression and multi-exit benchmark", "",
             "Commands: " + "; ".join(f"{', '.join(s for s, c in result['commands'].items() if c == command)}: "
                                     f"`{command}`" for command in dict.fromkeys(result["commands"].values()))
             + f". torch {env['torch']}, CPU; latency on "
             f"{env['latency_threads']} thread, training on {env['training_threads']}; "
             f"base models trained {env['base_epochs']} epochs; latency = least median of interleaved rounds.", ""]
    goals: list[str] = []
    for r in result.get("dpruner", []):
        name = f"{r['family']}/{r['model']}"
        lines += [f"## D-Pruner against Torch-Pruning ℓ1: {name}", "",
                  f"Base: test accuracy {_pct(r['base_test_accuracy'])} %, {r['base_macs']:,} MACs, latency "
                  f"{r['base_latency_ms']['1']:.3f} ms (b1), {r['base_latency_ms']['64']:.2f} ms (b64). "
                  f"K = {r['settings']['ratio']}, T = {r['settings']['threshold']}, epochs per iteration "
                  f"{r['settings']['block_epochs']}+{r['settings']['net_epochs']}+{r['settings']['finetune_epochs']}, "
                  f"Adam lr {r['settings']['lr']:g}. Control: the unpruned base fine-tuned as one iteration is "
                  f"({r['dense_control']['epochs']} epochs) scores {_pct(r['dense_control']['test_accuracy'])} %.", "",
                  "| channels | iter | epochs | val acc | test acc | drop (pt) | MACs cut | b1 speedup | b64 speedup "
                  "| ℓ1 test acc | ℓ1 drop | ℓ1 MACs cut | ℓ1 b64 speedup |", "|" + " --- |" * 13]
        for run in r["runs"].values():
            label = f"round to {run['round_to']}" if run["round_to"] else "unrounded"
            for it in run["iterations"]:
                l1 = it.get("l1")
                twin = (f"{_pct(l1['test_accuracy'])} | {l1['drop_points']:.1f} | {_x(l1['macs_reduction'])} | "
                        f"{_x(l1['speedup_b64'])}") if l1 else "– | – | – | –"
                lines.append(f"| {label} | {it['iteration']} | {it['epochs']} | {_pct(it['val_accuracy'])} | "
                             f"{_pct(it['test_accuracy'])} | {it['drop_points']:.1f} | {_x(it['macs_reduction'])} | "
                             f"{_x(it['speedup_b1'])} | {_x(it['speedup_b64'])} | {twin} |")
        lines += [""] + [f"{'Rounded to ' + str(run['round_to']) if run['round_to'] else 'Unrounded'}: stopped, "
                         f"{run['stopped']}." for run in r["runs"].values()]
        within = [it for run in r["runs"].values() for it in run["iterations"] if it["drop_points"] <= 1.0]
        best = max(within, key=lambda it: it["macs_reduction"], default=None)
        paired = [it for run in r["runs"].values() for it in run["iterations"] if it.get("l1")]
        wins = sum(it["test_accuracy"] >= it["l1"]["test_accuracy"] for it in paired)
        goals.append(f"D-Pruner {name}: most MACs cut within 1 test point "
                     + (f"{_x(best['macs_reduction'])} (b64 speedup {_x(best['speedup_b64'])}); " if best else "none; ")
                     + f"goal ≥ 2.50× and ≥ 1.50×: {'met' if best and best['macs_reduction'] >= 2.5 and best['speedup_b64'] >= 1.5 else 'missed'}; "
                     f"accuracy ≥ ℓ1's at the same MACs in {wins} of {len(paired)} pairs")
        lines.append("")
    for r in result.get("tucker", []):
        name = f"{r['family']}/{r['model']}"
        lines += [f"## Tucker-2: {name}", "",
                  f"Base: test accuracy {_pct(r['base_test_accuracy'])} %, {r['base_macs']:,} MACs; fine-tuning "
                  f"with Adam at lr {r.get('lr', 0):g}.", "",
                  "| retained variance | MACs cut | params | test acc before fine-tune | after | drop (pt) | "
                  "b1 speedup | b64 speedup | largest layer error (ours / TensorLy's) |", "|" + " --- |" * 9]
        for v in r["variances"]:
            lines.append(f"| {v['variance']} | {_x(v['macs_reduction'])} | {v['params']:,} | "
                         f"{_pct(v['test_accuracy_before_finetune'])} | {_pct(v['test_accuracy'])} | "
                         f"{v['drop_points']:.1f} | {_x(v['speedup_b1'])} | {_x(v['speedup_b64'])} | "
                         f"{v['max_error']:.3f} / {v['max_error_tensorly']:.3f} |")
        ok = [v for v in r["variances"] if v["drop_points"] <= 1.0]
        best = max(ok, key=lambda v: v["macs_reduction"], default=None)
        goals.append(f"Tucker-2 {name}: most MACs cut within 1 point "
                     + (f"{_x(best['macs_reduction'])} at variance {best['variance']} (b64 {_x(best['speedup_b64'])}); "
                        if best else "none; ")
                     + f"goal ≥ 2×: {'met' if best and best['macs_reduction'] >= 2 else 'missed'}")
        lines.append("")
    for r in result.get("dms", []):
        name = f"{r['family']}/{r['model']}"
        for doc in r["tables"].values():
            label = f"channels in multiples of {doc['round_to']}" if doc["round_to"] else "any channel count"
            lines += [f"## DMS: {name}, {label}", ""]
            if "refused" in doc:
                lines += [f"No table: {doc['refused']}", ""]
                continue
            share = doc["conv_share_of_time_b64"]
            lines += ["Table (in level order): "
                      + ", ".join(f"{e['group']} ×{e['factor']:.2f} ({e['active']}/{e['width']})" for e in doc["table"]),
                      "", f"At batch 64 convolutions take {100 * share:.0f} % of the full network's CPU time "
                      "(torch.profiler). Eq. 2 scales the whole latency by MACs; 'conv share' scales only the "
                      "convolutions' share.", "",
                      "| level | test acc | MACs (counted) | Eq. 2 MACs | b1 ms | Eq. 2 b1 ms | error | "
                      "b64 ms | Eq. 2 b64 ms | error | conv-share error |", "|" + " --- |" * 11]
            for lv in doc["levels"]:
                lines.append(f"| {lv['level']} | {_pct(lv['test_accuracy'])} | {lv['counted_macs']:,} | "
                             f"{lv['predicted_macs']:,} | {lv['latency_ms']['1']:.3f} | {lv['eq2_latency_ms']['1']:.3f} | "
                             f"{100 * lv['eq2_error_b1']:+.0f} % | "
                             f"{lv['latency_ms']['64']:.2f} | {lv['eq2_latency_ms']['64']:.2f} | "
                             f"{100 * lv['eq2_error_b64']:+.0f} % | {100 * lv['eq2_conv_share_error_b64']:+.0f} % |")
            worst = {k: max(abs(lv[k]) for lv in doc["levels"])
                     for k in ("eq2_error_b1", "eq2_error_b64", "eq2_conv_share_error_b64")}
            goals.append(f"DMS {name} ({label}): largest |measured/Eq. 2 − 1| b1 {100 * worst['eq2_error_b1']:.0f} %, "
                         f"b64 {100 * worst['eq2_error_b64']:.0f} % (goal ≤ 15 %: "
                         f"{'met' if max(worst['eq2_error_b1'], worst['eq2_error_b64']) <= 0.15 else 'missed'}); "
                         f"Eq. 2 on the convolutions' share of time, b64: {100 * worst['eq2_conv_share_error_b64']:.0f} %")
            lines.append("")
    for r in result.get("multiexit", []):
        name = f"{r['family']}/{r['model']}"
        acc = r["per_exit_accuracy"]
        lines += [f"## Multi-exit: {name}", "",
                  f"Exits after stages {r['depths']}, {r['epochs']} epochs each network, head width {r['head_width']}; "
                  f"base test accuracy {_pct(r['base_test_accuracy'])} %.", "",
                  "| exit (depth) | " + " | ".join(acc) + " |", "|" + " --- |" * (len(acc) + 1)]
        for e, d in enumerate(r["depths"]):
            lines.append(f"| {e + 1} ({d}) | " + " | ".join(_pct(v[e]) for v in acc.values()) + " |")
        lines += ["", "Exit decisions, confidence > threshold (precision / recall, %):", "",
                  "| loss | threshold | " + " | ".join(f"exit {e + 1}" for e in range(len(r["depths"]))) + " |",
                  "|" + " --- |" * (len(r["depths"]) + 2)]
        for loss, by_t in r["exit_decisions"].items():
            for t, ds in by_t.items():
                lines.append(f"| {loss} | {t} | " + " | ".join(
                    f"{_pct(d['precision']) if d['precision'] == d['precision'] else '–'} / {_pct(d['recall'])}"
                    for d in ds) + " |")
        tr, sv = r["training"], r["serving_b32"]
        lines += ["", f"Ideal speedup Σ MACs(cut at exit i) / MACs(full) = {_x(r['ideal_speedup'])}; training "
                  f"{_x(tr['measured'])} ({100 * tr['share_of_ideal']:.0f} % of ideal: {tr['multi_s']:.1f} s against "
                  f"{sum(tr['singles_s']):.1f} s); serving, batch 32 with prefix batching, {_x(sv['measured'])} "
                  f"({100 * sv['share_of_ideal']:.0f} % of ideal).", "",
                  "| target precision | exit shares | accuracy | drop (pt) | mean MACs cut | mean b1 latency cut |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for target, e in r["early_exit"].items():
            lines.append(f"| {target} | {', '.join(f'{v:.2f}' for v in e['exit_shares'])} | {_pct(e['accuracy'])} | "
                         f"{e['accuracy_drop_points']:.2f} | {_x(e['macs_reduction'])} | {_x(e['latency_reduction'])} |")
        ok = [e for e in r["early_exit"].values() if e["accuracy_drop_points"] <= 0.5]
        best = max(ok, key=lambda e: e["latency_reduction"], default=None)
        goals.append(f"Multi-exit {name}: training {100 * tr['share_of_ideal']:.0f} %, serving "
                     f"{100 * sv['share_of_ideal']:.0f} % of ideal (goal ≥ 80 %); early exit within 0.5 point "
                     + (f"{_x(best['macs_reduction'])} MACs, {_x(best['latency_reduction'])} b1 latency "
                        f"(goal ≥ 2× and ≥ 1.7×: {'met' if best['macs_reduction'] >= 2 and best['latency_reduction'] >= 1.7 else 'missed'})"
                        if best else "at no calibrated target (missed)"))
        lines.append("")
    return "\n".join(lines[:4] + ["## Goals", ""] + [f"- {g}" for g in goals] + [""] + lines[4:]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="tiny epochs and timing: checks the script, not the methods")
    parser.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: params compress.lr's)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    s = Settings(args.quick, args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "compression.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    command = " ".join(["python", "benchmarks/compression.py", *sys.argv[1:]])
    result["environment"] = {"torch": torch.__version__, "latency_threads": LATENCY_THREADS,
                             "training_threads": torch.get_num_threads(),
                             "base_epochs": s.base_epochs, "quick": s.quick}
    for section in args.sections.split(","):
        fn, models = RUNS[section]
        start = time.perf_counter()
        result[section] = [fn(f, m, s) for f in args.families.split(",") for m in models]
        result.setdefault("commands", {})[section] = command
        print(f"{section}: {time.perf_counter() - start:.0f} s", flush=True)
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        (out / "compression.md").write_text(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
