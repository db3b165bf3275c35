"""Stage `video`: Focus-style indexing and query of generated clips with a multi-exit network (thesis 004
§5.3.1; the algorithms in qoeflow/lifecycle/video_index.py, the timed model runs in qoeflow/models/video_run.py).

Per clip of params `video.clips` (a sprites clip whose glyphs are the classifiers' unseen test handwriting):
objects by background subtraction; the first `video.sample` share of them labelled by the GT-CNN, which picks
each indexed method's exits and k′ and, with the sprites validation images, calibrates the multi-exit query
thresholds; ingest by single-exit Focus and by the multi-exit version into `data/video/index.duckdb`. Then the
workload: every class on every clip by
brute force (the GT-CNN on every object, the reference), Focus and the multi-exit version, each query through
SQL; `queries.csv` (precision and recall against brute force and against the generator's truth, seconds,
GT-CNN calls), `ingest.csv` and a figure. `qoeflow video query` answers from the index afterwards.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.context import StageContext, StageError

CROP = 32  # object crops are CROP×CROP, the sprites family's input
FAMILY = "sprites"  # the clips show sprites: the family whose models can read them


def models(catalog: pd.DataFrame, catalog_path: Path, root: Path, p, labelled=None, log=None):
    """(multi-exit job, its MultiExitNet, GT-CNN variants, GT-CNN): the job's `JOB.early-exit` network and the
    GT-CNN, an `Ensemble` of params `video.ground_truth` (or of the `video.ensemble` most accurate sprites
    variants that are neither exits nor DMS levels; `auto`: as many of them as are most accurate on the
    ``labelled`` (inputs, labels), the sprites validation split); jobs and variants of the sprites family only."""
    from qoeflow.models.variants import load_variant
    from qoeflow.models.video_run import Ensemble, ensemble_size

    policies = catalog[(catalog["method"] == "early-exit") & (catalog["family"] == FAMILY)]
    jobs = list(dict.fromkeys(policies["source_job"]))
    job = jobs[0] if p.job is None and jobs else p.job
    if job not in jobs:
        raise StageError(f"{catalog_path}: no multi-exit network of {FAMILY} job '{job}' (video.job; the clips show "
                         f"{FAMILY}); {FAMILY} jobs with one: {', '.join(jobs) or 'none'} (params multiexit.jobs)")
    ours = catalog[catalog["family"] == FAMILY]
    if p.ground_truth is None:
        others = ours[~ours["method"].isin(["exit", "early-exit", "dms"])]
        if others.empty:
            raise StageError(f"{catalog_path}: no {FAMILY} model but the multi-exit network's exits to be the GT-CNN")
        variants = others.sort_values("accuracy", ascending=False, kind="stable")["variant"].tolist()
        if p.ensemble != "auto":
            variants = variants[:p.ensemble]
    else:
        variants = list(p.ground_truth)
        unknown = [v for v in variants if v not in set(ours["variant"])]
        if unknown:
            raise StageError(f"{catalog_path}: no {FAMILY} variant {', '.join(unknown)} (video.ground_truth)")
    net = load_variant(f"{job}.early-exit", catalog_path, root).net
    members = [load_variant(v, catalog_path, root) for v in variants]
    if p.ground_truth is None and p.ensemble == "auto":
        if labelled is None:
            raise ValueError("video.ensemble 'auto' chooses the GT-CNN on labelled inputs; none were given")
        size, accuracies = ensemble_size(members, *labelled)
        variants, members = variants[:size], members[:size]
        if log:
            log(f"video: GT-CNN of the {size} most accurate {FAMILY} variants (validation accuracy of the first 1, "
                f"2, … averaged: {', '.join(f'{a:.4f}' for a in accuracies)})")
    return job, net, variants, Ensemble(members).eval()


def make_clip(spec, p, glyph_seed: int):
    """A clip of params `video.clips`, its glyphs from the test part of the classifiers' glyph split."""
    from qoeflow.data.video import Motion, sprites_clip

    motion = Motion(spec.objects, spec.moving, spec.speed, spec.turnover)
    return sprites_clip(spec.name, frames=spec.frames, height=p.height, width=p.width, motion=motion, seed=spec.seed,
                        glyph_seed=glyph_seed, classes=spec.classes)


def index_clip(conn, name: str, clip, net, gt, p, log, validation) -> dict:
    """Detect, sample, choose and ingest one clip into the open index; what the workload needs of it."""
    import torch

    from qoeflow.lifecycle import video_index as vi
    from qoeflow.models import video_run as vr
    from tasks.video_db import insert

    start = time.perf_counter()
    boxes = vi.detect(clip.frames, min_area=p.min_area)
    x = vi.crops(clip.frames, boxes, CROP)
    detect_seconds = time.perf_counter() - start
    n = len(x)
    steps, height, width = clip.frames.shape[:3]
    insert(conn, "clips", pd.DataFrame([{"clip": name, "frames": steps, "height": height, "width": width,
                                         "objects": n, "detect_seconds": detect_seconds}]))
    insert(conn, "objects", pd.DataFrame({"clip": name, "object_id": np.arange(n), **{c: boxes[c] for c in vi.BOX_COLUMNS}}))
    sample = vr.label_sample(net, gt, x[:max(1, math.ceil(p.sample * n))], exit_precision=p.exit_precision,
                             max_clusters=p.max_clusters, radius=p.radius, validation=validation)
    ingests = {}
    for method, single in vr.INGESTS.items():
        config = vr.choose(sample, single=single, target=p.recall_target, k_max=p.k_max)
        result = ingests[method] = vr.ingest(net, x, config, max_clusters=p.max_clusters, radius=p.radius)
        clusters = result.clusters
        crops = (x[[c.centroid for c in clusters]] * 255).round().to(torch.uint8).numpy() if clusters \
            else np.zeros((0, 1, CROP, CROP), np.uint8)
        ids = np.arange(len(clusters))
        insert(conn, "clusters", pd.DataFrame({"clip": name, "method": method, "cluster_id": ids,
                                               "centroid": [c.centroid for c in clusters],
                                               "size": [len(c.members) for c in clusters],
                                               "crop": [c.tobytes() for c in crops]}))
        insert(conn, "class_clusters", pd.DataFrame({"clip": name, "method": method,
                                                     "class": [c.label for c in clusters], "cluster_id": ids}))
        members = [(i, m) for i, c in zip(ids, clusters) for m in c.members]
        insert(conn, "members", pd.DataFrame({"clip": name, "method": method, "cluster_id": [i for i, _ in members],
                                              "object_id": [m for _, m in members]}))
        log(f"video[{name}]: {method} exits {'+'.join(str(e + 1) for e in config.exits)} k′ {config.k}: sample "
            f"recall {config.recall:.3f}, {result.inserts} indexed, {len(clusters)} clusters")
    found = {"x": x, "frames": boxes["frame"], "detect_seconds": detect_seconds, "ingests": ingests,
             "thresholds": sample.thresholds, "steps": steps, "sample": len(sample.labels)}
    found["ingest"] = rows = pd.DataFrame(ingest_rows(name, found))
    insert(conn, "ingests", rows.assign(thresholds=[json.dumps(sample.thresholds) if m == "multi-exit" else None
                                                    for m in rows["method"]]))
    return found


@dataclass(frozen=True)
class Answer:
    """A query's frames (sorted), candidate clusters, GT-CNN calls and seconds (SQL and models)."""

    frames: list[int]
    candidates: int
    gt_calls: int
    seconds: float


def answer(conn, clip: str, method: str, label: int, gt, net=None, exit_thresholds=None, size: int = 32) -> Answer:
    """The frames of ``clip`` holding class ``label`` by ``method``'s index: candidate clusters by SQL, their
    centroids confirmed (qoeflow/models/video_run.py `confirm`), the members' frames by SQL."""
    import torch

    from qoeflow.models.video_run import confirm

    start = time.perf_counter()
    rows = conn.execute("SELECT c.cluster_id, c.crop FROM class_clusters m JOIN clusters c "
                        "USING (clip, method, cluster_id) WHERE m.clip = ? AND m.method = ? AND m.class = ? "
                        "ORDER BY c.cluster_id", [clip, method, int(label)]).fetchall()
    if not rows:
        return Answer([], 0, 0, time.perf_counter() - start)
    ids = [r[0] for r in rows]
    crops = torch.from_numpy(np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), 1, size, size)
                             .astype(np.float32) / 255.0)
    result = confirm(method, int(label), crops, gt, net, exit_thresholds)
    chosen = [i for i, ok in zip(ids, result.confirmed) if ok]
    frames = [r[0] for r in conn.execute(
        "SELECT DISTINCT o.frame FROM members m JOIN objects o USING (clip, object_id) WHERE m.clip = ? AND "
        "m.method = ? AND list_contains(?, m.cluster_id) ORDER BY o.frame", [clip, method, chosen]).fetchall()] \
        if chosen else []
    return Answer(frames, len(ids), result.gt_calls, time.perf_counter() - start)


def ingest_rows(name: str, found: dict) -> list[dict]:
    """ingest.csv's rows of one clip: per indexed method its configuration and seconds per frame."""
    rows = []
    for method, result in found["ingests"].items():
        seconds = found["detect_seconds"] + result.model_seconds + result.cluster_seconds
        rows.append({"clip": name, "method": method, "frames": found["steps"], "objects": len(found["x"]),
                     "sample_objects": found["sample"], "exits": "+".join(str(e + 1) for e in result.config.exits),
                     "k": result.config.k, "sample_recall": result.config.recall,
                     "labels_per_object": result.config.labels, "macs_per_object": result.config.macs,
                     "indexed": result.inserts, "clusters": len(result.clusters),
                     "detect_seconds": found["detect_seconds"], "model_seconds": result.model_seconds,
                     "cluster_seconds": result.cluster_seconds, "ingest_seconds_per_frame": seconds / found["steps"]})
    return rows


def workload(conn, name: str, clip, found: dict, net, gt, repeats: int = 1) -> list[dict]:
    """Every class on one clip by every method: queries.csv's rows (an indexed query's seconds: the median of
    ``repeats`` runs after a warm-up run)."""
    from qoeflow.data.sprites import CLASSES
    from qoeflow.lifecycle.video_index import precision_recall
    from qoeflow.models.video_run import INGESTS, predict

    truth = pd.DataFrame({"frame": clip.objects["frame"], "label": clip.objects["label"]})
    per_frame = found["ingest"].set_index("method")["ingest_seconds_per_frame"].to_dict()
    start = time.perf_counter()
    labels = predict(gt, found["x"])  # the brute-force scan: the same for every class, so run once and charged to each
    scan = time.perf_counter() - start
    rows = []
    for label in range(CLASSES):
        start = time.perf_counter()
        reference = sorted(set(found["frames"][labels == label].tolist()))
        brute = {"frames": reference, "candidates": len(found["x"]), "gt_calls": len(found["x"]),
                 "seconds": scan + time.perf_counter() - start}
        answers = {"brute-force": brute}
        for method in INGESTS:  # a warm-up run (a new batch shape's first runs cost more), then `repeats` timed
            result, *timed = [answer(conn, name, method, label, gt, net, found["thresholds"], CROP)
                              for _ in range(1 + repeats)]
            answers[method] = {"frames": result.frames, "candidates": result.candidates, "gt_calls": result.gt_calls,
                               "seconds": float(np.median([r.seconds for r in timed]))}
        truth_frames = set(truth.loc[truth["label"] == label, "frame"].tolist())
        for method, a in answers.items():
            precision, recall = precision_recall(a["frames"], reference)
            truth_precision, truth_recall = precision_recall(a["frames"], truth_frames)
            rows.append({"clip": name, "class": label, "method": method, "precision": precision, "recall": recall,
                         "truth_precision": truth_precision, "truth_recall": truth_recall,
                         "query_seconds": a["seconds"], "gt_calls": a["gt_calls"], "candidates": a["candidates"],
                         "frames_returned": len(a["frames"]), "reference_frames": len(reference),
                         "ingest_seconds_per_frame": per_frame.get(method, 0.0)})
    return rows


def index_and_query(conn, p, glyph_seed: int, net, gt, validation, log, progress=None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every clip of params `p` (`video`) generated, indexed into the open index and queried: ingest.csv's and
    queries.csv's tables."""
    from qoeflow.models.latency import torch_threads

    ingest, queries = [], []
    with torch_threads(p.threads):
        for i, spec in enumerate(p.clips):
            if progress:
                progress("video", i, len(p.clips), f"{spec.name}: generating and indexing")
            clip = make_clip(spec, p, glyph_seed)
            found = index_clip(conn, spec.name, clip, net, gt, p, log, validation)
            ingest.append(found["ingest"])
            if progress:
                progress("video", i, len(p.clips), f"{spec.name}: {len(found['x'])} objects, querying")
            queries += workload(conn, spec.name, clip, found, net, gt, p.repeats)
    return pd.concat(ingest, ignore_index=True), pd.DataFrame(queries)


def run(ctx: StageContext) -> dict:
    """Index every clip, run the query workload, write the index, the tables and the figure."""
    from qoeflow.models.video_run import summarise
    from qoeflow.plots import video_figure
    from tasks.training_loop import job_split
    from tasks.video_db import create

    p = ctx.params.video
    catalog = ctx.load("model_catalog")
    split = job_split(ctx.params.train, FAMILY)
    job, net, gt_variants, gt = models(catalog, ctx.input("model_catalog"), ctx.root, p, (split.x_val, split.y_val),
                                       ctx.log)
    validation = split.x_val
    staged = ctx.staging() / "index.duckdb"
    staged.unlink(missing_ok=True)
    conn = create(staged, {"multi_exit_job": job, "multi_exit_variant": f"{job}.early-exit",
                           "ground_truth_variants": json.dumps(gt_variants), "crop": CROP})
    try:
        ingest, queries = index_and_query(conn, p, ctx.params.train.data.sprites.seed, net, gt, validation, ctx.log,
                                          ctx.progress)
    finally:
        conn.close()
    ctx.save("video_index", staged)
    ctx.save("video_ingest", ingest)
    ctx.save("video_queries", queries)
    ctx.save("video_figure", video_figure(summarise(queries, ingest)))
    totals = queries.groupby("method")["query_seconds"].sum()
    ctx.log("video: query seconds over the workload: " + ", ".join(f"{m} {s:.2f}" for m, s in totals.items()))
    if ctx.progress:
        ctx.progress("video", len(p.clips), len(p.clips), "done")
    return {"outputs": ctx.publish(), "notes": ctx.notes, "clips": len(p.clips), "queries": len(queries)}


def ground_truth_of(conn, catalog: pd.DataFrame, catalog_path: Path, root: Path):
    """The GT-CNN the index was built with (its variants from the index's meta), loaded from the catalog."""
    from qoeflow.models.variants import load_variant
    from qoeflow.models.video_run import Ensemble
    from tasks.video_db import ground_truth_variants

    variants = ground_truth_variants(conn)
    missing = [v for v in variants if v not in set(catalog["variant"])]
    if missing:
        raise StageError(f"{catalog_path}: the index's GT-CNN variants {', '.join(missing)} are not in the catalog; "
                         "rebuild the index with `qoeflow stage video`")
    return Ensemble([load_variant(v, catalog_path, root) for v in variants]).eval()


def query_command(index: Path, catalog: pd.DataFrame, catalog_path: Path, root: Path, label: int,
                  clip: str | None, method: str) -> list[tuple[str, object]]:
    """`qoeflow video query`: (clip, Answer) for class `label` on `clip` (or every clip of the index), by
    `method`'s index; the video is not read again. StageError for a bad class, clip or method."""
    from qoeflow.data.sprites import CLASSES
    from qoeflow.models.variants import load_variant
    from qoeflow.models.video_run import INGESTS
    from tasks.video_db import clip_names, meta, open_index, thresholds

    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < CLASSES:
        raise StageError(f"--class must be a class of the {FAMILY} family, 0-{CLASSES - 1}; got {label!r}")
    if method not in INGESTS:
        raise StageError(f"--method must be one of {', '.join(INGESTS)}; got {method!r}")
    conn = open_index(index)
    try:
        names = clip_names(conn)
        if clip is not None and clip not in names:
            raise StageError(f"{index}: no clip '{clip}' (clips: {', '.join(names) or 'none'})")
        gt = ground_truth_of(conn, catalog, catalog_path, root)
        net = load_variant(meta(conn)["multi_exit_variant"], catalog_path, root).net if method == "multi-exit" \
            else None
        size = int(meta(conn)["crop"])
        return [(name, answer(conn, name, method, label, gt, net, thresholds(conn, name), size))
                for name in ([clip] if clip else names)]
    finally:
        conn.close()
