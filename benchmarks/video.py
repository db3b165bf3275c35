"""Video indexing benchmark (issue: video indexing and query with multi-exit networks; thesis 004 §5.3.1).

Runs the video stage's procedure (tasks/video.py: detection, the labelled sample's choice of exits and k′,
ingest by single-exit Focus and by the multi-exit version into a DuckDB index, then every class queried by
brute force, Focus and the multi-exit version) over a lifecycle run's model catalog, with params.yaml's
`video` settings, and reports against the issue's goals:

- precision and recall against brute force ≥ 99 % for every method on every clip (and against the
  generator's truth);
- query time over the workload (ingest excluded): Focus ≥ 10× faster than brute force, the multi-exit
  version ≥ 1.5× faster than Focus;
- ingest seconds per frame, multi-exit against Focus (the thesis: 1.06-1.41×), and #indexing per clip;
- scaling: query time against clip length (1×, 2×, 4× the frames of the first clip);
- the clustering radius's trade-off between query speed and precision/recall on the first clip;
- the GT-CNN's size (the first n of its candidate variants averaged) on the first clip: what the GT-CNN
  costs against the cheap network sets how much the multi-exit version can save.

    python benchmarks/video.py [--project DIR] [--scales 1 2 4] [--radii 0.05 0.1 0.15 0.2 0.3] [--ensembles 1 3 5]

DIR holds a lifecycle run's `data/` (default: this checkout; `make bench` passes the project
`benchmarks/orchestration.py --lifecycle` has just run). Writes benchmarks/results/video.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qoeflow.models.video_run import summarise  # noqa: E402
from qoeflow.params import read_params_file, validate_params  # noqa: E402
from tasks.catalog import kind_of  # noqa: E402
from tasks.training_loop import job_split  # noqa: E402
from tasks.video import FAMILY, index_and_query, models  # noqa: E402
from tasks.video_db import create  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def run_clips(clips: list, p, params, net, gt, validation) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stage's ingest and workload over `clips` (params ClipParams), in a throwaway index."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = create(Path(tmp) / "index.duckdb", {"ground_truth_variants": "[]", "crop": 32})
        try:
            return index_and_query(conn, p.model_copy(update={"clips": clips}), params.train.data.sprites.seed, net,
                                   gt, validation, lambda message: None,
                                   lambda _, i, n, what: print(f"  {what}", flush=True))
        finally:
            conn.close()


def goals(table: pd.DataFrame) -> pd.DataFrame:
    """Per clip: the ratios the issue sets goals on."""
    rows = []
    for clip, g in table.groupby("clip", sort=False):
        m = g.set_index("method")
        rows.append({"clip": clip,
                     "min_precision": g["precision"].min(), "min_recall": g["recall"].min(),
                     "focus_speedup": m.loc["focus", "speedup"],
                     "multi_exit_over_focus": m.loc["focus", "query_seconds"] / m.loc["multi-exit", "query_seconds"],
                     "ingest_focus_over_multi_exit": m.loc["focus", "ingest_seconds_per_frame"]
                     / m.loc["multi-exit", "ingest_seconds_per_frame"],
                     "indexing_focus": int(m.loc["focus", "indexed"]), "indexing_multi_exit": int(m.loc["multi-exit", "indexed"])})
    return pd.DataFrame(rows)


def figure(scaling: pd.DataFrame, radii: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (method, g) in enumerate(scaling.groupby("method", sort=False)):
        left.plot(g["frames"], g["query_seconds"], "o-", color=f"C{i}", label=method)
    left.set(xscale="log", yscale="log", xlabel="frames", ylabel="query seconds, whole workload",
             title="Query time against clip length")
    for i, method in enumerate(("focus", "multi-exit")):
        g = radii[radii["method"] == method]
        right.plot(g["speedup"], g[["precision", "recall"]].min(axis=1), "o-", color=f"C{i + 1}", label=method)
        for r, x, y in zip(g["radius"], g["speedup"], g[["precision", "recall"]].min(axis=1)):
            right.annotate(f"r={r:g}", (x, y), fontsize=7)
    right.axhline(0.99, color="grey", ls="--", lw=0.8)
    right.axvline(10, color="grey", ls=":", lw=0.8)
    right.set(xlabel="speedup over brute force", ylabel="min(precision, recall)", title="Clustering radius trade-off")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ensemble_sweep(sizes: list[int], spec, p, params, catalog, catalog_path: Path, project: Path, split) -> pd.DataFrame:
    """The first clip with GT-CNNs of the first n candidate variants, n in ``sizes``: per size and indexed method,
    the workload's figures and the multi-exit version's query speedup over Focus."""
    from qoeflow.models.macs import count_macs

    rows = []
    for size in sizes:
        print(f"GT-CNN of {size}", flush=True)
        setting = p.model_copy(update={"ensemble": size})
        _, net, variants, gt = models(catalog, catalog_path, project, setting)
        if len(variants) < size:
            continue
        ingest, queries = run_clips([spec], setting, params, net, gt, split.x_val)
        t = summarise(queries, ingest).set_index("method")
        focus_over_me = t.loc["focus", "query_seconds"] / t.loc["multi-exit", "query_seconds"]
        for method, r in t.iterrows():
            rows.append({"ensemble": size, "gt_macs_over_net": count_macs(gt, (1, 32, 32)) / count_macs(net, (1, 32, 32)),
                         "method": method, **{k: r[k] for k in ("precision", "recall", "truth_precision",
                                                                "query_seconds", "speedup", "gt_calls")},
                         "multi_exit_over_focus": focus_over_me})
    return pd.DataFrame(rows)


def markdown(table, goal, scaling, radii, sizes, p, gt_variants, job) -> str:
    fmt = {"floatfmt": ".4g"}
    return "\n".join([
        "# Video indexing benchmark", "",
        f"`python benchmarks/video.py` over the lifecycle catalog; multi-exit network {job}.early-exit, GT-CNN the "
        f"ensemble {', '.join(gt_variants)}; params.yaml `video` (radius {p.radius}, max clusters {p.max_clusters}, "
        f"recall target {p.recall_target}, k′ ≤ {p.k_max}, exit precision {p.exit_precision}); one torch thread.", "",
        "## Per clip and method", "", table.round(4).to_markdown(index=False, **fmt), "",
        "## Goals per clip", "", goal.round(4).to_markdown(index=False, **fmt), "",
        "## Scaling (first clip at 1×, 2×, 4× the frames)", "", scaling.round(4).to_markdown(index=False, **fmt), "",
        "## Clustering radius (first clip)", "", radii.round(4).to_markdown(index=False, **fmt), "",
        "## GT-CNN size (first clip; the first n candidate variants averaged, MACs against the multi-exit network's "
        "full path)", "", sizes.round(4).to_markdown(index=False, **fmt), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=str(ROOT))
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--radii", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--ensembles", type=int, nargs="+", default=[1, 3, 5])
    args = parser.parse_args()
    project = Path(args.project)
    params = validate_params(read_params_file(ROOT / "params.yaml"), "params.yaml")
    p = params.video
    catalog_path = project / "data" / "models" / "catalog.csv"
    catalog = kind_of("model_catalog").load(catalog_path, str(catalog_path), root=project)
    split = job_split(params.train, FAMILY)
    job, net, gt_variants, gt = models(catalog, catalog_path, project, p, (split.x_val, split.y_val), print)
    validation = split.x_val
    print("clips of params.yaml", flush=True)
    ingest, queries = run_clips(p.clips, p, params, net, gt, validation)
    table = summarise(queries, ingest)
    goal = goals(table)
    spec = p.clips[0]
    scaling = []
    for scale in args.scales:
        print(f"scaling ×{scale}", flush=True)
        longer = spec.model_copy(update={"frames": spec.frames * scale, "name": f"{spec.name}-x{scale}"})
        i, q = run_clips([longer], p, params, net, gt, validation)
        for r in summarise(q, i).to_dict("records"):
            scaling.append({"scale": scale, "frames": spec.frames * scale, **r})
    radii = []
    for radius in args.radii:
        print(f"radius {radius}", flush=True)
        setting = p.model_copy(update={"radius": radius})
        i, q = run_clips([spec], setting, params, net, gt, validation)
        radii += [{"radius": radius, **r} for r in summarise(q, i).to_dict("records") if r["method"] != "brute-force"]
    scaling, radii = pd.DataFrame(scaling), pd.DataFrame(radii)
    sizes = ensemble_sweep(args.ensembles, spec, p, params, catalog, catalog_path, project, split)
    RESULTS.mkdir(parents=True, exist_ok=True)
    keep = ["method", "precision", "recall", "query_seconds", "speedup", "gt_calls", "clusters"]
    (RESULTS / "video.md").write_text(markdown(table, goal, scaling[["scale", "frames", *keep]],
                                               radii[["radius", *keep, "ingest_seconds_per_frame"]], sizes, p, gt_variants,
                                               job))
    (RESULTS / "video.json").write_text(json.dumps({"clips": table.to_dict("records"), "goals": goal.to_dict("records"),
                                                    "scaling": scaling.to_dict("records"),
                                                    "radii": radii.to_dict("records"),
                                                    "ensembles": sizes.to_dict("records")}, indent=1, default=str))
    figure(scaling, radii).savefig(RESULTS / "video.png", dpi=90)
    print((RESULTS / "video.md").read_text())


if __name__ == "__main__":
    main()
