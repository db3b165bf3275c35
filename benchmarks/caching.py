"""Convolutional caching benchmark (issue: inference benchmark, part 3; thesis 004 §3.4.3, Figs. 3.5-3.6).

The four crowd models trained as the lifecycle trains them (params.yaml's crowd jobs and data; cached under
benchmarks/work/caching/), run on generated static-camera clips (qoeflow/data/video.py) at 128×128 on one
thread:

1. Sweep on the low-motion clip "calm": histogram bins (threshold fixed), then the chi-square threshold
   (bins fixed), then the pixel peer's threshold; hit rate and accuracy (1 - output difference ratio)
   against each knob, the paper's crossing picked. Then the number N of cached convolutions per model at
   those knobs: the N with the largest latency cut whose output difference stays ≤ 5 %.
2. Every clip and model at the picked knobs: histogram cache and pixel-difference peer against full
   recomputation.

    python benchmarks/caching.py [--frames 200] [--quick]

Writes benchmarks/results/caching.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qoeflow.data.video import CROWD_CLIPS, crowd_clip  # noqa: E402
from qoeflow.lifecycle import caching  # noqa: E402
from qoeflow.lifecycle.training import JobSpec, TrainingJob  # noqa: E402
from qoeflow.models import build_model  # noqa: E402
from qoeflow.models.caching_bench import CacheSettings, measure_caches  # noqa: E402
from qoeflow.params import read_params_file, validate_params  # noqa: E402
from tasks.training_loop import job_split  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "caching"
RESULTS = ROOT / "benchmarks" / "results"
BINS = [2, 4, 8, 16, 32, 64]
THRESHOLDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
PIXEL_THRESHOLDS = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4]
MAX_DIFFERENCE = 0.05


def trained_models() -> dict[str, torch.nn.Module]:
    """The crowd jobs of params.yaml, trained as the lifecycle trains them (cached by model and epochs)."""
    params = validate_params(read_params_file(ROOT / "params.yaml"))
    split = None
    models = {}
    for job in (j for j in params.train.jobs if j.task == "crowd"):
        path = WORK / f"{job.model}-{job.epochs}.pt"
        model = build_model("crowd", job.model)
        if not path.is_file():
            split = split or job_split(params.train, "crowd")
            print(f"training {job.name} for {job.epochs} epochs", flush=True)
            spec = JobSpec(job.name, "crowd", job.model, job.epochs, optimizer=job.optimizer, lr=job.lr, seed=job.seed)
            trainer = TrainingJob(spec, split, threads=2, device="cpu")
            for _ in range(job.epochs):
                trainer.train_epoch()
            WORK.mkdir(parents=True, exist_ok=True)
            torch.save(trainer.model.state_dict(), path)
        model.load_state_dict(torch.load(path, weights_only=True))
        models[job.model] = model.eval()
    return models


def crossing(xs: list[float], hit: list[float], accuracy: list[float]) -> float:
    """The knob where the hit-rate and accuracy curves cross (the paper's pick): the grid value with the
    smallest |hit - accuracy|."""
    return xs[int(np.argmin(np.abs(np.asarray(hit) - np.asarray(accuracy))))]


def run(model, clip, settings: CacheSettings, detectors: dict) -> dict:
    return measure_caches(model, clip.frames, clip.clean, clip.counts(), settings, detectors)


def sweep(models: dict, clip, base: CacheSettings) -> dict:
    """Hit rate, accuracy and latency cut against bins, threshold and the pixel threshold, per model."""
    out = {}
    for name, model in models.items():
        print(f"sweep {name}", flush=True)
        n = base.n_convs if name != "mcnn" else 1
        knobs = replace(base, n_convs=n)
        rows = {"bins": [run(model, clip, knobs, {"": caching.histogram_detector(b, knobs.threshold)}) for b in BINS],
                "threshold": [run(model, clip, knobs, {"": caching.histogram_detector(knobs.bins, t)})
                              for t in THRESHOLDS],
                "pixel_threshold": [run(model, clip, knobs, {"": caching.pixel_detector(t)})
                                    for t in PIXEL_THRESHOLDS]}
        out[name] = {k: [{f: r[f] for f in ("hit_rate", "output_difference", "latency_cut", "precision", "recall")}
                         for r in v] for k, v in rows.items()}
    return out


def pick(swept: dict) -> dict:
    """The crossing of mean hit rate and mean accuracy over the models, per knob."""
    picks = {}
    for knob, xs in (("bins", BINS), ("threshold", THRESHOLDS), ("pixel_threshold", PIXEL_THRESHOLDS)):
        hit = np.mean([[r["hit_rate"] for r in s[knob]] for s in swept.values()], axis=0)
        acc = 1 - np.mean([[r["output_difference"] for r in s[knob]] for s in swept.values()], axis=0)
        picks[knob] = crossing(xs, list(hit), list(acc))
    return picks


def depth(models: dict, clip, knobs: CacheSettings) -> dict:
    """Per model and N: latency cut, output difference and hit rate of the histogram cache."""
    out = {}
    for name, model in models.items():
        total = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        if name == "mcnn":
            total //= 3  # per column
        rows = []
        for n in range(1, min(total, 7)):
            try:
                r = run(model, clip, replace(knobs, n_convs=n),
                        {"": caching.histogram_detector(knobs.bins, knobs.threshold)})
            except ValueError as exc:  # a layer the cache cannot see through
                print(f"  {name} N={n}: {exc}")
                break
            rows.append({"n": n, **{f: r[f] for f in ("cached_convs", "prefix_mac_share", "hit_rate",
                                                      "output_difference", "latency_cut", "macs_skipped")}})
        out[name] = rows
    return out


def best_depth(rows: list[dict]) -> int:
    fit = [r for r in rows if r["output_difference"] <= MAX_DIFFERENCE] or rows
    return max(fit, key=lambda r: r["latency_cut"])["n"]


def figure(swept: dict, depths: dict, picks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for ax, (knob, xs) in zip(axes, (("bins", BINS), ("threshold", THRESHOLDS), ("pixel_threshold", PIXEL_THRESHOLDS))):
        for i, (name, s) in enumerate(swept.items()):
            ax.plot(xs, [r["hit_rate"] for r in s[knob]], "-o", color=f"C{i}", label=f"{name} hit rate")
            ax.plot(xs, [1 - r["output_difference"] for r in s[knob]], "--s", color=f"C{i}", label=f"{name} accuracy")
        ax.axvline(picks[knob], color="black", linewidth=0.8)
        ax.set(xscale="log", xlabel=knob, ylabel="share", ylim=(-0.02, 1.02),
               title={"bins": "Histogram bins (Fig. 3.5)", "threshold": "Chi-square threshold (Fig. 3.6)",
                      "pixel_threshold": "Pixel-difference peer"}[knob])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    for i, (name, rows) in enumerate(depths.items()):
        axes[3].plot([r["n"] for r in rows], [r["latency_cut"] for r in rows], "-o", color=f"C{i}", label=f"{name} latency cut")
        axes[3].plot([r["n"] for r in rows], [r["output_difference"] for r in rows], ":x", color=f"C{i}",
                     label=f"{name} output difference")
    axes[3].set(xlabel="cached convolutions N", ylabel="share", title="Depth of the cache")
    axes[3].grid(alpha=0.3)
    axes[3].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def render(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Convolutional caching on generated video (thesis 004 §3.4.3)", "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s). One thread, {s['frames']} frames of "
        f"{s['height']}×{s['width']} per clip, grid {s['grid'][0]}×{s['grid'][1]}, expiry after "
        f"{s['max_age']} frames. The crowd models as params.yaml trains them. Latency: median per frame, the "
        "three methods interleaved frame by frame. Output difference: share of frames whose count moves by more "
        "than 0.5 against full recomputation. Precision and recall: the detector's changed blocks against the "
        "blocks whose noise- and drift-free pixels truly changed. Full jitter: share of frames in which full "
        "recomputation's own count moves by more than 0.5 from the previous frame (the floor under any cache's "
        "output difference).", "",
        f"Sweep on clip `calm` (figure `caching.png`): picked bins {result['picks']['bins']}, chi-square threshold "
        f"{result['picks']['threshold']}, pixel threshold {result['picks']['pixel_threshold']} (the crossing of mean "
        f"hit rate and mean accuracy over the models); N per model: "
        + ", ".join(f"{m} {n}" for m, n in result["depth_picks"].items()) + ".", "",
        "| model | clip | full ms | full jitter | hist ms | cut | hit | MACs skipped | out diff | count MAE (full) | precision | recall "
        "| pixel ms | pixel cut | pixel hit | pixel out diff | pixel precision | pixel recall |",
        "|" + " --- |" * 18]
    pct = lambda v: "–" if v != v else f"{100 * v:.1f} %"  # noqa: E731
    for r in result["rows"]:
        lines.append(f"| {r['model']} (N={r['cached_convs']}) | {r['clip']} | {r['full_latency_ms']:.2f} | "
                     f"{pct(r['full_jitter'])} | "
                     f"{r['latency_ms']:.2f} | {pct(r['latency_cut'])} | {pct(r['hit_rate'])} | {pct(r['macs_skipped'])} | "
                     f"{pct(r['output_difference'])} | {r['count_mae']:.1f} ({r['full_count_mae']:.1f}) | "
                     f"{pct(r['precision'])} | {pct(r['recall'])} | {r['pixel_latency_ms']:.2f} | "
                     f"{pct(r['pixel_latency_cut'])} | {pct(r['pixel_hit_rate'])} | {pct(r['pixel_output_difference'])} | "
                     f"{pct(r['pixel_precision'])} | {pct(r['pixel_recall'])} |")
    lines += ["", "## Depth (clip `calm`, histogram cache)", "",
              "| model | N | convs cached | prefix MAC share | hit | out diff | latency cut | MACs skipped |",
              "|" + " --- |" * 8]
    for m, rows in result["depth"].items():
        for r in rows:
            lines.append(f"| {m} | {r['n']} | {r['cached_convs']} | {pct(r['prefix_mac_share'])} | {pct(r['hit_rate'])} | "
                         f"{pct(r['output_difference'])} | {pct(r['latency_cut'])} | {pct(r['macs_skipped'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="40 frames, for trying the script")
    args = ap.parse_args()
    frames = 40 if args.quick else args.frames
    start = time.perf_counter()
    models = trained_models()
    torch.set_num_threads(1)
    base = CacheSettings(n_convs=4, grid=(8, 8), bins=16, threshold=0.01, pixel_threshold=0.15, max_age=30)
    clips = {name: crowd_clip(name, frames, 128, 128, motion, seed=0) for name, motion in CROWD_CLIPS.items()}
    swept = sweep(models, clips["calm"], base)
    picks = pick(swept)
    knobs = replace(base, bins=picks["bins"], threshold=picks["threshold"], pixel_threshold=picks["pixel_threshold"])
    depths = depth(models, clips["calm"], knobs)
    depth_picks = {m: best_depth(rows) for m, rows in depths.items()}
    rows = []
    for name, model in models.items():
        for clip in clips.values():
            print(f"clip {clip.name}: {name}", flush=True)
            chosen = replace(knobs, n_convs=depth_picks[name])
            r = run(model, clip, chosen, {"": caching.histogram_detector(chosen.bins, chosen.threshold),
                                          "pixel_": caching.pixel_detector(chosen.pixel_threshold)})
            rows.append({"model": name, "clip": clip.name, **r})
    command = "python benchmarks/caching.py" + (" --quick" if args.quick else f" --frames {frames}")
    settings = {"frames": frames, "height": 128, "width": 128, "grid": list(base.grid), "max_age": base.max_age}
    result = {"command": command, "seconds": time.perf_counter() - start, "settings": settings, "picks": picks,
              "depth_picks": depth_picks, "sweep": swept, "depth": depths, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "caching.json").write_text(json.dumps(result, indent=1, default=float))
    (RESULTS / "caching.md").write_text(render(result))
    figure(swept, depths, picks, RESULTS / "caching.png")
    print(render(result))


if __name__ == "__main__":
    main()
