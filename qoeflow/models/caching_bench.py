"""Convolutional caching measured on a video clip (issue: inference benchmark, part 3): a crowd-counting model
run frame by frame with full recomputation, with DeepMon's histogram cache and with the pixel-difference
peer (qoeflow/lifecycle/caching.py), on one CPU thread or whatever the caller set.

Per clip and cache: hit rate (reused blocks over all blocks after the first frame), median latency per frame
against full recomputation, MACs skipped (each cached layer's MACs scale with the pixels it computes), the output
difference ratio (share of frames whose count moves by more than 0.5 against full recomputation), the count
error against the ground truth, and the detector's precision and recall against the truly changed blocks:
those whose noise- and drift-free pixels differ (by more than ``TRUE_CHANGE`` of the range) from the frame
that the block's cached outputs were computed from. Expired blocks are not the detector's decisions and are
left out of its precision and recall.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qoeflow.lifecycle import caching
from qoeflow.models.latency import steady_allocator

TRUE_CHANGE = 2 / 255  # clean pixels differing by more than two grey levels: the block truly changed
DIFFERENCE = 0.5       # a count moving by more than this against full recomputation is an output difference


@dataclass(frozen=True)
class CacheSettings:
    """The cache's knobs: first ``n_convs`` convolutions cached, a ``grid`` of blocks, histogram ``bins`` and
    chi-square ``threshold``, the pixel peer's ``pixel_threshold``, entries expire after ``max_age`` frames."""

    n_convs: int = 4
    grid: tuple[int, int] = (8, 8)
    bins: int = 16
    threshold: float = 0.05
    pixel_threshold: float = 0.1
    max_age: int | None = 30


def as_frames(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) uint8 → (T, 1, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).unsqueeze(1).float().div_(255.0)


def _truly_changed(clean: torch.Tensor, t: int, reference: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Blocks of frame ``t`` whose clean pixels differ from those of each block's reference frame."""
    out = torch.zeros(grid, dtype=torch.bool)
    for ref in reference.unique().tolist():
        moved = (caching.block_view(clean[t][0], grid) - caching.block_view(clean[ref][0], grid)).abs().amax(dim=(-1, -2))
        out |= (reference == ref) & (moved > TRUE_CHANGE)
    return out


class Tally:
    """Per frame of one method: count, seconds, reused blocks, share of the prefix's MACs computed, and the
    detector's decisions against the truth (true and false positives, false negatives)."""

    def __init__(self, n: int):
        self.record = {k: np.zeros(n) for k in ("count", "seconds", "reused", "computed", "tp", "fp", "fn")}

    def full(self, model: nn.Module, t: int, frame: torch.Tensor) -> None:
        start = time.perf_counter()
        out = model(frame)
        self.record["seconds"][t] = time.perf_counter() - start
        self.record["count"][t], self.record["computed"][t] = float(out.sum()), 1.0

    def cached(self, cache: caching.ConvCache, t: int, frame: torch.Tensor, clean: torch.Tensor) -> None:
        reference = None if cache.reference_frame is None else cache.reference_frame.clone()
        start = time.perf_counter()
        out, step = cache(frame)
        self.record["seconds"][t] = time.perf_counter() - start
        self.record["count"][t], self.record["reused"][t] = float(out.sum()), step.reused
        self.record["computed"][t] = step.computed
        if reference is not None:
            truth, said = _truly_changed(clean, t, reference, cache.grid), step.changed_mask
            self.record["tp"][t], self.record["fp"][t] = int((said & truth).sum()), int((said & ~truth).sum())
            self.record["fn"][t] = int((~said & truth).sum())


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def summarise(record: dict[str, np.ndarray], full_counts: np.ndarray, full_seconds: np.ndarray,
              true_counts: np.ndarray, blocks: int, prefix_macs: int, model_macs: int) -> dict:
    """The clip's figures for one cache (first frame, a full computation for every method, left out of rates)."""
    rest = slice(1, None)
    executed = model_macs - prefix_macs + prefix_macs * record["computed"][rest]
    tp, fp, fn = (record[k][rest].sum() for k in ("tp", "fp", "fn"))
    latency, full_latency = float(np.median(record["seconds"][rest])), float(np.median(full_seconds[rest]))
    return {"hit_rate": _ratio(record["reused"][rest].sum(), blocks * (len(full_counts) - 1)),
            "latency_ms": 1e3 * latency, "latency_cut": 1.0 - _ratio(latency, full_latency),
            "macs_skipped": 1.0 - float(executed.mean()) / model_macs,
            "output_difference": float(np.mean(np.abs(record["count"][rest] - full_counts[rest]) > DIFFERENCE)),
            "count_mae": float(np.mean(np.abs(record["count"] - true_counts))),
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}


def measure_caches(model: nn.Module, frames: np.ndarray, clean: np.ndarray, true_counts: np.ndarray,
                   settings: CacheSettings, detectors: dict[str, caching.Detector]) -> dict:
    """One clip through full recomputation and one cache per detector, frame by frame, as one flat row: the
    clip's and full recomputation's figures (``full_``), then each cache's prefixed by its key."""
    from qoeflow.models.macs import count_macs

    model = model.eval()
    x, x_clean = as_frames(frames), as_frames(clean)
    if len(x) < 2:
        raise ValueError(f"a clip needs at least 2 frames to measure caching, got {len(x)}")
    if len(true_counts) != len(x):
        raise ValueError(f"{len(true_counts)} true counts for {len(x)} frames")
    shape = tuple(x.shape[2:])
    prefix, _, convs = caching.split_prefix(model, settings.n_convs)
    prefix_macs, model_macs = count_macs(prefix, shape), count_macs(model, shape)
    blocks = settings.grid[0] * settings.grid[1]
    caches = {k: caching.ConvCache(model, settings.n_convs, settings.grid, d, settings.max_age)
              for k, d in detectors.items()}
    tallies = {k: Tally(len(x)) for k in ("full_", *caches)}
    steady_allocator()
    with torch.no_grad():
        for t, frame in enumerate(x):  # methods interleaved frame by frame: the machine's noise hits all alike
            tallies["full_"].full(model, t, frame)
            for name, cache in caches.items():
                tallies[name].cached(cache, t, frame, x_clean)
    full = tallies["full_"].record
    row = {"frames": len(x), "height": shape[1], "width": shape[2], "cached_convs": convs,
           "prefix_mac_share": prefix_macs / model_macs,
           "full_latency_ms": 1e3 * float(np.median(full["seconds"][1:])),
           "full_count_mae": float(np.mean(np.abs(full["count"] - true_counts))),
           # the floor under any cache's output difference: how often full recomputation's own count moves
           # by more than DIFFERENCE from one frame to the next (sensor noise, lighting drift, motion)
           "full_jitter": float(np.mean(np.abs(np.diff(full["count"])) > DIFFERENCE))}
    for name in caches:
        figures = summarise(tallies[name].record, full["count"], full["seconds"], true_counts, blocks,
                            prefix_macs, model_macs)
        row.update({name + k: v for k, v in figures.items()})
    return row


def evaluate_clip(model: nn.Module, frames: np.ndarray, clean: np.ndarray, true_counts: np.ndarray,
                  settings: CacheSettings) -> dict:
    """One clip: full recomputation, DeepMon's histogram cache (figures unprefixed) and the pixel-difference
    peer (``pixel_``)."""
    return measure_caches(model, frames, clean, true_counts, settings,
                          {"": caching.histogram_detector(settings.bins, settings.threshold),
                           "pixel_": caching.pixel_detector(settings.pixel_threshold)})
