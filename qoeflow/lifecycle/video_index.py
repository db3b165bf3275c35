"""Focus-style video indexing with a multi-exit network (thesis 004 §5.3.1; Focus, OSDI 2018).

Ingest: objects found by background subtraction, each classified by a cheap model and indexed under every
class of its top-k; objects indexed under one class are clustered by the cheap model's features. Query:
the clusters indexed under the asked class, their centroid objects checked by the ground-truth CNN (GT-CNN),
the frames of confirmed clusters' members returned.

- Objects (Focus's background subtraction): OpenCV's MOG2 per frame, opened (3×3) against noise and
  closed (3×3, twice) so one glyph's strokes make one blob; blobs of at least ``min_area`` pixels are
  objects, their bounding box their box, except blobs that touch the frame's border (an object entering or
  leaving shows part of itself, which neither model reads reliably: about 40 % of the objects of a 128×128
  sprites clip, on which the models agree 88 % of the time against 96 % inside). MOG2 starts from the first
  frame it sees, which would make every object present at the start background and leave a ghost where it
  departs; it is therefore first shown ``warmup`` frames spread over the clip, three times over: objects move
  between them, so each pixel's dominant mode is the background, with the sensor's real noise (warming up on
  the noise-free median instead left noise blobs in the first frames). The thesis does not say how Focus
  starts its subtractor; this is ours. Measured on a 1,000-frame 128×128 sprites clip: every detection lies
  on a generated object; 66 % of the objects wholly inside the frame are found (faint glyphs, ink contrast
  0.3-0.6 against noise, are missed; neighbours that overlap merge into one box).
- Crops: a square of side max(``size``, longest box side / ``fill``) centred on the box (the frame's edge
  pixels repeated beyond the border), resized to size×size by area averaging, grey levels / 255: the
  sprites family's training images hold a glyph of 0.5-0.9 × their side at the same pixel scale.
- Cheap model (§5.3.1.1): exit set S of the multi-exit network and k′; each exit of S gives its top-k′
  classes and the object is indexed under their union R. Single-exit Focus is |S| = 1. S and k′ are the
  cheapest pair whose recall (share of labelled objects whose GT-CNN label is in R) reaches the target on
  a labelled sample, the thesis's Table 5.10 protocol; "cheapest" is our estimate of ingest seconds per
  object: MACs(S) × seconds per MAC + mean |R| × seconds per clustering insertion, both measured by the
  caller (the thesis counts #indexing, the clustering calls, and times the two separately, Table 5.11).
  With no pair reaching the target, the one of highest recall is taken (then the cheapest).
- Features: the input of the final linear layer of S's deepest exit, L2-normalised.
- Clustering (Focus): per class, incremental: an object joins the nearest cluster centre of that class when
  it lies within ``radius`` of it (or when the class already has ``max_clusters``), else starts a cluster;
  a centre is the mean of its members' features. Each cluster's centroid object is the member nearest its
  final centre. Focus bounds the clusters per class (N = 100 in the thesis); how it picks a centroid object
  it does not say.
- Query confirmation (§5.3.1.2): Focus runs the GT-CNN on every candidate centroid; the multi-exit version
  first runs the network's exits on it and takes the first exit whose confidence passes its threshold
  (thresholds calibrated, by ``multiexit.calibrate_thresholds``, to a target precision against GT-CNN labels
  on labelled data: the thesis's "99 % true-positive rate"), calling the GT-CNN only when no exit is confident.
- Precision and recall are over frames (Focus's definition): of the frames returned, the share that hold the
  class in the reference answer; of the reference frames, the share returned. Both are 1 for an empty
  reference answered with nothing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from qoeflow.lifecycle.multiexit import MultiExitNet, confidence

BOX_COLUMNS = ("frame", "x", "y", "w", "h")  # detections: frame and box (left, top, width, height), pixels
WARMUP_PASSES = 3  # times the background subtractor is shown the warm-up frames


# ------------------------------------------------------------------------------------------- detection

def _check_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8 frames, or a ValueError saying what is wrong."""
    if isinstance(frames, (list, tuple)):
        shapes = {np.shape(f) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames have inconsistent sizes: {sorted(shapes)}")
        frames = np.stack(frames) if frames else np.empty((0, 0, 0), np.uint8)
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W) or (T, H, W, 1) uint8 array, got shape "
                         f"{frames.shape} {frames.dtype}")
    return frames


def detect(frames: np.ndarray, *, min_area: int = 20, warmup: int = 60, history: int = 500,
           var_threshold: float = 16.0, inner: bool = True) -> dict[str, np.ndarray]:
    """Objects of every frame by MOG2 background subtraction: columns ``BOX_COLUMNS`` (int64), one row per blob
    (with ``inner``, only blobs that do not touch the frame's border)."""
    import cv2

    frames = _check_frames(frames)
    if min_area < 1 or warmup < 1:
        raise ValueError(f"min_area and warmup must be >= 1, got {min_area}, {warmup}")
    subtractor = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold,
                                                    detectShadows=False)
    sample = frames[np.linspace(0, len(frames) - 1, min(warmup, len(frames))).round().astype(int)]
    for frame in np.concatenate([sample] * WARMUP_PASSES):
        subtractor.apply(frame)
    kernel = np.ones((3, 3), np.uint8)
    height, width = frames.shape[1:]
    rows = []
    for t, frame in enumerate(frames):
        mask = subtractor.apply(frame)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        for x, y, w, h, area in stats[1:n]:
            if area >= min_area and not (inner and (x == 0 or y == 0 or x + w == width or y + h == height)):
                rows.append((t, x, y, w, h))
    table = np.array(rows, np.int64).reshape(-1, len(BOX_COLUMNS))
    return {c: table[:, i] for i, c in enumerate(BOX_COLUMNS)}


def crops(frames: np.ndarray, boxes: dict[str, np.ndarray], size: int = 32, fill: float = 0.9) -> torch.Tensor:
    """Each box's square crop (side max(size, longest side / fill), centred) resized to (N, 1, size, size)
    float32 in [0, 1]."""
    import cv2

    frames = _check_frames(frames)
    if size < 1 or not 0 < fill <= 1:
        raise ValueError(f"size must be >= 1 and fill in (0, 1], got {size}, {fill}")
    out = np.empty((len(boxes["frame"]), size, size), np.uint8)
    for i, (t, x, y, w, h) in enumerate(zip(*(boxes[c] for c in BOX_COLUMNS))):
        side = max(size, math.ceil(max(w, h) / fill))
        left, top = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
        rows = np.clip(np.arange(top, top + side), 0, frames.shape[1] - 1)
        cols = np.clip(np.arange(left, left + side), 0, frames.shape[2] - 1)
        patch = frames[t][np.ix_(rows, cols)]
        out[i] = patch if side == size else cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(out).unsqueeze(1).float().div_(255.0)


# ------------------------------------------------------------------------------------------ cheap model

def _head_parts(head: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """An exit head split into (everything before its final linear layer, that layer)."""
    if not isinstance(head, nn.Sequential) or not isinstance(head[-1], nn.Linear):
        raise ValueError(f"an exit head must be an nn.Sequential ending in nn.Linear, got {type(head).__name__}")
    return head[:-1], head[-1]


@torch.no_grad()
def exit_outputs(net: MultiExitNet, x: torch.Tensor, exits: Sequence[int], batch_size: int = 256
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Logits of the exits ``exits`` (the shared layers run once, up to the deepest of them, and only their
    heads) and the deepest one's features (input of its final linear layer, L2-normalised)."""
    exits = sorted(set(int(e) for e in exits))
    if not exits or exits[0] < 0 or exits[-1] >= net.n_exits:
        raise ValueError(f"exits must be a non-empty subset of 0..{net.n_exits - 1}, got {list(exits)}")
    net.eval()
    heads = [_head_parts(net.heads[e]) for e in exits]
    logits: list[list[torch.Tensor]] = [[] for _ in exits]
    features = []
    for start in range(0, len(x), batch_size):
        for j, (inputs, (body, linear)) in enumerate(zip(net.head_inputs(x[start:start + batch_size], exits), heads)):
            feature = body(inputs)
            logits[j].append(linear(feature))
        features.append(nn.functional.normalize(feature.flatten(1), dim=1))  # the deepest exit's, last in the loop
    if not features:
        return [torch.empty(0, 0) for _ in exits], torch.empty(0, 0)
    return [torch.cat(parts) for parts in logits], torch.cat(features)


def label_sets(logits: Sequence[torch.Tensor], k: int) -> np.ndarray:
    """(N, classes) bool: the union over the given exits of each object's top-``k`` classes."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k' (top-k classes per exit) must be an integer >= 1, got {k!r}")
    if not logits:
        raise ValueError("label_sets needs the logits of at least one exit")
    n, classes = logits[0].shape
    sets = np.zeros((n, classes), bool)
    rows = np.arange(n)[:, None]
    for lg in logits:
        sets[rows, lg.topk(min(int(k), classes), dim=1).indices.numpy()] = True
    return sets


@dataclass(frozen=True)
class IngestConfig:
    """Exits whose top-``k`` classes index an object; the recall and mean labels per object on the sample,
    MACs per object and the estimated ingest seconds per object."""

    exits: tuple[int, ...]
    k: int
    recall: float
    labels: float
    macs: int
    cost: float


def candidate_exit_sets(n_exits: int, single: bool) -> list[tuple[int, ...]]:
    """Single exits (Focus) or every non-empty subset of the exits (the multi-exit version)."""
    if single:
        return [(e,) for e in range(n_exits)]
    return [s for r in range(1, n_exits + 1) for s in itertools.combinations(range(n_exits), r)]


def choose_config(logits: Sequence[torch.Tensor], labels: np.ndarray, macs: dict[tuple[int, ...], int], *,
                  single: bool, target: float, k_max: int, seconds_per_mac: float, seconds_per_insert: float
                  ) -> IngestConfig:
    """The cheapest (exit set, k′) reaching recall ``target`` on labelled objects: ``logits`` holds every exit's
    logits on them, ``labels`` their GT-CNN labels, ``macs`` the MACs per object of each candidate set."""
    if not 0 < target <= 1:
        raise ValueError(f"the recall target must lie in (0, 1], got {target}")
    if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or k_max < 1:
        raise ValueError(f"k' must be an integer >= 1, got {k_max!r}")
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    options = []
    for exits in candidate_exit_sets(len(logits), single):
        for k in range(1, int(k_max) + 1):
            sets = label_sets([logits[e] for e in exits], k)
            recall = float(sets[rows, labels].mean()) if len(labels) else 1.0
            mean_labels = float(sets.sum(1).mean()) if len(labels) else float(k)
            cost = macs[exits] * seconds_per_mac + mean_labels * seconds_per_insert
            options.append(IngestConfig(exits, k, recall, mean_labels, int(macs[exits]), cost))
    reaching = [o for o in options if o.recall >= target]
    if reaching:
        return min(reaching, key=lambda o: (o.cost, o.exits, o.k))
    return min(options, key=lambda o: (-o.recall, o.cost, o.exits, o.k))


# -------------------------------------------------------------------------------------------- clustering

@dataclass
class _ClassClusters:
    sums: list[np.ndarray] = field(default_factory=list)
    members: list[list[int]] = field(default_factory=list)
    centres: np.ndarray | None = None


@dataclass(frozen=True)
class Cluster:
    """One cluster of one class: its members (object indices), centroid object, size."""

    label: int
    members: tuple[int, ...]
    centroid: int


class IncrementalClusters:
    """Per-class incremental clustering of objects by feature: join the nearest centre within ``radius``
    (or the nearest at all once a class has ``max_clusters``), else start a cluster; centres are means."""

    def __init__(self, max_clusters: int, radius: float):
        if isinstance(max_clusters, bool) or not isinstance(max_clusters, (int, np.integer)) or max_clusters < 1:
            raise ValueError(f"max_clusters must be an integer >= 1, got {max_clusters!r}")
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0, got {radius!r}")
        self.max_clusters, self.radius = int(max_clusters), float(radius)
        self._classes: dict[int, _ClassClusters] = {}
        self.inserts = 0

    def add(self, label: int, feature: np.ndarray, obj: int) -> None:
        """Index object ``obj`` (with ``feature``) under class ``label``."""
        self.inserts += 1
        c = self._classes.setdefault(int(label), _ClassClusters())
        if c.centres is not None:
            distances = np.linalg.norm(c.centres - feature, axis=1)
            j = int(distances.argmin())
            if distances[j] <= self.radius or len(c.members) >= self.max_clusters:
                c.sums[j] = c.sums[j] + feature
                c.members[j].append(obj)
                c.centres[j] = c.sums[j] / len(c.members[j])
                return
        c.sums.append(np.array(feature, np.float64))
        c.members.append([obj])
        row = np.array(feature, np.float64)[None]
        c.centres = row if c.centres is None else np.vstack([c.centres, row])

    def add_all(self, sets: np.ndarray, features: np.ndarray) -> None:
        """Index every object (row of ``sets``, in order) under each of its classes."""
        for obj, row in enumerate(sets):
            for label in np.flatnonzero(row):
                self.add(int(label), features[obj], obj)

    def clusters(self, features: np.ndarray) -> list[Cluster]:
        """Every cluster, class by class, with its centroid object (the member nearest its centre)."""
        out = []
        for label in sorted(self._classes):
            c = self._classes[label]
            for members, centre in zip(c.members, c.centres):
                idx = np.asarray(members)
                nearest = idx[int(np.linalg.norm(features[idx] - centre, axis=1).argmin())]
                out.append(Cluster(label, tuple(int(m) for m in members), int(nearest)))
        return out


# ------------------------------------------------------------------------------------------------ query

@torch.no_grad()
def exit_answers(net: MultiExitNet, x: torch.Tensor, thresholds: Sequence[float], batch_size: int = 256
                 ) -> np.ndarray:
    """Each row's label from the first exit whose confidence passes its threshold (the last exit's included),
    carrying only the rows not yet answered to the next stage (``MultiExitNet.early_exit``); -1 where no exit
    is confident."""
    if len(thresholds) != net.n_exits:
        raise ValueError(f"one threshold per exit ({net.n_exits}) required, got {len(thresholds)}")
    net.eval()
    out = np.full(len(x), -1, np.int64)
    for start in range(0, len(x), batch_size):
        logits, where = net.early_exit(x[start:start + batch_size], thresholds)
        conf, pred = (v.numpy() for v in confidence(logits))
        sure = (where.numpy() < net.n_exits - 1) | (conf > thresholds[-1])
        out[start:start + len(logits)] = np.where(sure, pred, -1)
    return out


def precision_recall(returned: set[int] | Sequence[int], reference: set[int] | Sequence[int]) -> tuple[float, float]:
    """Frame-level (precision, recall) of ``returned`` against ``reference``; 1 where a set is empty."""
    returned, reference = set(returned), set(reference)
    hits = len(returned & reference)
    return (hits / len(returned) if returned else 1.0, hits / len(reference) if reference else 1.0)


__all__ = ["BOX_COLUMNS", "detect", "crops", "exit_outputs", "label_sets", "IngestConfig", "candidate_exit_sets",
           "choose_config", "Cluster", "IncrementalClusters", "exit_answers", "precision_recall"]
