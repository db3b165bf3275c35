"""Running the models of Focus-style video indexing (qoeflow/lifecycle/video_index.py) on a clip's object crops,
timed: the GT-CNN's labels, the labelled sample's choice of exits and k′, ingest (cheap model and clustering),
and the confirmation of candidate centroids at query time. Arrays and modules in, figures out; no files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from qoeflow.lifecycle import finetune
from qoeflow.lifecycle import video_index as vi
from qoeflow.lifecycle.multiexit import MultiExitNet, calibrate_thresholds
from qoeflow.models.latency import steady_allocator
from qoeflow.models.macs import count_macs
from qoeflow.validate import VIDEO_METHODS

BATCH = 256  # crops per forward call
METHODS = VIDEO_METHODS  # the query workload's methods: brute force, then the indexed ones
INGESTS = {"focus": True, "multi-exit": False}  # indexed method → its cheap model is a single exit


class Ensemble(nn.Module):
    """The GT-CNN as several classifiers together: the log of their mean softmax (a larger, steadier model than
    any one of them; Focus's GT-CNN is much larger than its cheap model)."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


def ensemble_size(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> tuple[int, list[float]]:
    """How many of ``models`` (most accurate first) the GT-CNN averages: of the ensembles of the first 1, 2, …
    of them, the most accurate on the labelled ``x, y`` (the smallest of equals); (size, each size's accuracy)."""
    if not models:
        raise ValueError("an ensemble needs at least one model")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"the GT-CNN's size is chosen on labelled inputs; got {len(x)} inputs and {len(y)} labels")
    total, accuracies = 0.0, []
    for model in models:
        total = total + torch.softmax(finetune.logits(model, x, BATCH), dim=1)
        accuracies.append(float((total.argmax(1) == y).double().mean()))
    return int(np.argmax(accuracies)) + 1, accuracies


def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Top-1 class of each row of ``x``: (N,) int64."""
    return finetune.logits(model, x, BATCH).argmax(1).numpy() if len(x) else np.empty(0, np.int64)


def exit_set_macs(net: MultiExitNet, shape: tuple[int, ...]) -> dict[tuple[int, ...], int]:
    """MACs per object of every non-empty exit set (shared layers to its deepest exit, and its heads)."""
    return {s: count_macs(net, shape, forward=lambda x, s=s: vi.exit_outputs(net, x, s)[0])
            for s in vi.candidate_exit_sets(net.n_exits, single=False)}


@dataclass(frozen=True)
class Sample:
    """The labelled sample: every exit's logits on it, the GT-CNN's labels, measured unit costs and the query
    exits' thresholds calibrated against the GT-CNN."""

    logits: list[torch.Tensor]
    labels: np.ndarray
    macs: dict[tuple[int, ...], int]
    seconds_per_mac: float
    seconds_per_insert: float
    thresholds: list[float]


def label_sample(net: MultiExitNet, gt: nn.Module, x: torch.Tensor, *, exit_precision: float,
                 max_clusters: int, radius: float, validation: torch.Tensor | None = None) -> Sample:
    """The GT-CNN's labels of ``x`` and what choosing an ingest configuration needs (costs measured here:
    the full network's seconds per MAC, one clustering insertion's seconds with the sample's own features);
    the query exits' thresholds are calibrated on ``x`` and ``validation`` (more inputs), both GT-CNN-labelled."""
    labels = predict(gt, x)
    macs = exit_set_macs(net, tuple(x.shape[1:]))
    full = tuple(range(net.n_exits))
    steady_allocator()
    start = time.perf_counter()
    logits, features = vi.exit_outputs(net, x, full)
    per_mac = (time.perf_counter() - start) / max(len(x), 1) / macs[full]
    clusters = vi.IncrementalClusters(max_clusters, radius)
    start = time.perf_counter()
    clusters.add_all(vi.label_sets(logits, 1), features.numpy())
    per_insert = (time.perf_counter() - start) / max(clusters.inserts, 1)
    both = x if validation is None else torch.cat([x, validation])
    both_logits = logits if validation is None else [torch.cat([a, b]) for a, b in
                                                      zip(logits, vi.exit_outputs(net, validation, full)[0])]
    both_labels = labels if validation is None else np.concatenate([labels, predict(gt, validation)])
    thresholds = calibrate_thresholds(both_logits, torch.from_numpy(both_labels), exit_precision) if len(both) \
        else [1.0] * net.n_exits
    return Sample(logits, labels, macs, per_mac, per_insert, thresholds)


def choose(sample: Sample, *, single: bool, target: float, k_max: int) -> vi.IngestConfig:
    """The cheapest configuration reaching ``target`` recall on the sample (``single``: one exit, Focus)."""
    return vi.choose_config(sample.logits, sample.labels, sample.macs, single=single, target=target, k_max=k_max,
                            seconds_per_mac=sample.seconds_per_mac, seconds_per_insert=sample.seconds_per_insert)


@dataclass(frozen=True)
class Ingest:
    """One method's index of a clip: its configuration, clusters and measured seconds."""

    config: vi.IngestConfig
    clusters: list[vi.Cluster]
    inserts: int
    model_seconds: float
    cluster_seconds: float


def ingest(net: MultiExitNet, x: torch.Tensor, config: vi.IngestConfig, *, max_clusters: int, radius: float
           ) -> Ingest:
    """Every object of ``x`` through the cheap model of ``config``, indexed under its classes and clustered."""
    steady_allocator()
    start = time.perf_counter()
    logits, features = vi.exit_outputs(net, x, config.exits)
    sets = vi.label_sets(logits, config.k) if len(x) else np.zeros((0, 0), bool)
    model_seconds = time.perf_counter() - start
    start = time.perf_counter()
    clusters = vi.IncrementalClusters(max_clusters, radius)
    clusters.add_all(sets, features.numpy())
    found = clusters.clusters(features.numpy()) if len(x) else []
    return Ingest(config, found, clusters.inserts, model_seconds, time.perf_counter() - start)


@dataclass(frozen=True)
class Confirmation:
    """Which candidate centroids hold the asked class, and how many GT-CNN calls that took."""

    confirmed: np.ndarray
    gt_calls: int


def confirm(method: str, label: int, crops: torch.Tensor, gt: nn.Module, net: MultiExitNet | None = None,
            thresholds: Sequence[float] | None = None) -> Confirmation:
    """Focus: the GT-CNN on every candidate centroid. Multi-exit: the network's exits first (the first
    confident one answers), the GT-CNN on the centroids no exit is sure of."""
    if method == "focus":
        return Confirmation(predict(gt, crops) == label, len(crops))
    if method != "multi-exit":
        raise ValueError(f"unknown indexed method {method!r} (allowed: {', '.join(INGESTS)})")
    if net is None or thresholds is None:
        raise ValueError("the multi-exit method needs the network and its thresholds")
    answers = vi.exit_answers(net, crops, thresholds, BATCH)
    unsure = answers < 0
    if unsure.any():
        answers[unsure] = predict(gt, crops[torch.from_numpy(unsure)])
    return Confirmation(answers == label, int(unsure.sum()))


__all__ = ["METHODS", "INGESTS", "Ensemble", "ensemble_size", "predict", "exit_set_macs", "Sample", "label_sample",
           "choose", "Ingest", "ingest", "Confirmation", "confirm", "summarise"]


def summarise(queries, ingest):
    """Per clip and method over the workload: precision and recall over all its queries' frames (micro, against
    brute force and against the generator's truth), query seconds, their speedup over brute force, GT-CNN calls
    and ingest seconds per frame (0 for brute force, which indexes nothing)."""
    import pandas as pd

    q = queries.assign(hits=queries["recall"] * queries["reference_frames"],
                       truth_hits=queries["truth_precision"] * queries["frames_returned"])
    rows = []
    for (clip, method), g in q.groupby(["clip", "method"], sort=False):
        returned, reference = g["frames_returned"].sum(), g["reference_frames"].sum()
        brute = q[(q["clip"] == clip) & (q["method"] == METHODS[0])]["query_seconds"].sum()
        rows.append({"clip": clip, "method": method,
                     "precision": g["hits"].sum() / returned if returned else 1.0,
                     "recall": g["hits"].sum() / reference if reference else 1.0,
                     "truth_precision": g["truth_hits"].sum() / returned if returned else 1.0,
                     "min_precision": g["precision"].min(), "min_recall": g["recall"].min(),
                     "query_seconds": g["query_seconds"].sum(), "speedup": brute / g["query_seconds"].sum(),
                     "gt_calls": int(g["gt_calls"].sum()), "ingest_seconds_per_frame": g["ingest_seconds_per_frame"].iloc[0]})
    out = pd.DataFrame(rows)
    return out.merge(ingest[["clip", "method", "indexed", "clusters", "exits", "k"]], on=["clip", "method"], how="left")
