"""Multi-exit networks (MXNs), thesis ch. 5 §5.2: classifiers attached along a trained backbone.

- Exits (§5.2): exit i reads the features after the backbone's top-level stage ``depths[i]`` (a
  ``nn.Sequential`` such as the zoo ResNet [stem, block, block, block, pool, flatten, linear]). The
  *feature stages* are the leading modules up to the last one holding a convolution; the rest is the
  base classifier. An exit at the last feature stage reuses (a copy of) the base classifier, so that
  exit equals the base network exactly; any other exit gets a small new head (the thesis gives none):
  average-pool down to at most 8×8 (the digits' own resolution), ``head_convs`` (2) conv-BN-ReLU 3×3 of
  ``head_width`` (24) channels, global average pool, linear. One conv or max-pooling made the early
  exits clearly weaker on digits; 24 rather than 32 channels keeps the heads' MACs, and so what
  prefix batching loses against the ideal speedup, smaller.
- Training (§5.2): L = Σ_i w_i · L_i over the exits with caller-given weights w_i ≥ 0 (BranchyNet),
  through ``finetune.fit`` with a custom loss. L_i is cross-entropy or, optionally, the focal loss
  (§5.2.3) FL(p_t) = -(1 - p_t)^γ log p_t (no α-balancing term: the thesis has none); γ = 0 is
  cross-entropy. γ may be given per exit.
- Feature aggregation (§5.2.2, Fig. 5.3): for every exit after the first, the lower-level features f1
  (what the previous exit's head reads) are max-pooled to the size of the higher-level features f2,
  concatenated with them, and a 1×1 convolution compresses the result back to f2's width; that is
  what the exit's head reads. The backbone itself is unchanged (the aggregated features feed only the
  heads). The thesis does not say how the block is initialised; we initialise the 1×1 convolution to
  pass f2 through and ignore f1 ([0 | I]), so a freshly built aggregated MXN still equals its base
  network at the last exit and training only adds what the lower features are worth.
- Exit decisions (§5.2.3): confidence = the largest softmax probability; a sample exits at exit i when
  its confidence is strictly above the threshold t_i (so any t ≥ 1 never exits; the last exit always
  answers). The thesis uses fixed thresholds (0.5, 0.7) for Table 5.8; we also calibrate thresholds on
  validation data to a target *exit precision*: exit by exit, on the samples that reach it, the lowest
  threshold such that the samples exiting there are correct at least that often (largest recall at
  that precision). Table 5.8's precision is the share of exiting samples that are correct and its
  recall the share of samples that exit, per exit on all samples.
- Serving (§5.2.4): ``forward`` computes the shared prefix once per batch and every exit's logits
  ("prefix batching"); ``early_exit`` carries only the samples that have not exited yet.
- Measurements: the ideal speedup of one MXN over its separate single-exit models (the backbone cut at
  each exit with its own head) is Σ_i MACs(cut at exit i) / MACs(full model); measured training and
  serving speedups are compared against it. The MXN's extra heads cost MACs that the ideal does not
  count, so prefix batching reaches at most Σ MACs(cut) / MACs(MXN) of it. Mean batch-1 latency of
  early exit is Σ_i share_i × the latency of the path that stops at exit i (the earlier heads and their
  decisions included), each path timed by ``latency.measure``; on a shared machine the least median of a
  few repeats is taken, and training can be timed by process CPU time (``timed_fit(clock=...)``).
- Training starts from the caller's base: a trained network (fine-tuning all layers jointly, our use)
  or a fresh one (training from scratch, the thesis's Table 5.3 protocol); the thesis's SGD schedule
  with early stopping is replaced by ``finetune.fit``'s Adam for a fixed number of epochs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qoeflow.lifecycle import finetune
from qoeflow.models.arch import composite
from qoeflow.models.digits import conv_bn
from qoeflow.models.latency import measure
from qoeflow.models.macs import count_macs

HEAD_SIZE = 8  # exit heads pool their input down to at most this many pixels a side
POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


# ----------------------------------------------------------------------------------------------- model

@composite
class Aggregate(nn.Module):
    """§5.2.2 block: ``mix(cat(pool(low), high))``, ``mix`` a 1×1 convolution back to ``high``'s width."""

    ARCH_ATTRS = ()

    def __init__(self, c_low: int, c_high: int, pool: nn.Module):
        super().__init__()
        self.pool = pool
        self.mix = nn.Conv2d(c_low + c_high, c_high, 1, bias=False)
        with torch.no_grad():  # start as the identity on `high`: [0 | I]
            self.mix.weight.zero_()
            self.mix.weight[:, c_low:, 0, 0].copy_(torch.eye(c_high))

    def forward(self, low, high):
        return self.mix(torch.cat([self.pool(low), high], dim=1))


def feature_stages(base: nn.Module) -> int:
    """Number of leading top-level modules of ``base`` up to the last one that holds a convolution."""
    if not isinstance(base, nn.Sequential):
        raise ValueError(f"base must be an nn.Sequential of stages (a zoo model), got {type(base).__name__}")
    convs = [i for i, m in enumerate(base) if any(isinstance(s, nn.Conv2d) for s in m.modules())]
    if not convs:
        raise ValueError("base has no convolutional stage to attach exits to")
    return convs[-1] + 1


def _check_depths(depths: Sequence[int], stages: int) -> list[int]:
    allowed = f"stage indices in [0, {stages - 1}]"
    try:
        out = [int(d) for d in depths]
    except (TypeError, ValueError):
        raise ValueError(f"depths must be a list of {allowed}, got {depths!r}") from None
    if not out:
        raise ValueError(f"depths must name at least one exit ({allowed}), got {list(depths)}")
    if any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) for d in depths):
        raise ValueError(f"depths must be integers ({allowed}), got {list(depths)}")
    bad = [d for d in out if not 0 <= d < stages]
    if bad:
        raise ValueError(f"depths {bad} do not exist in the model: allowed are {allowed} (the feature stages), "
                         f"got {out}")
    if len(set(out)) != len(out):
        raise ValueError(f"depths must not repeat a stage, got {out}")
    if out != sorted(out):
        raise ValueError(f"depths must be sorted in increasing order, got {out}")
    return out


def _downsample(h_from: int, w_from: int, h_to: int, w_to: int) -> nn.Module:
    if (h_from, w_from) == (h_to, w_to):
        return nn.Identity()
    if h_from % h_to == 0 and w_from % w_to == 0 and h_from // h_to == w_from // w_to:
        return nn.MaxPool2d(h_from // h_to)
    return nn.AdaptiveMaxPool2d((h_to, w_to))


def exit_head(channels: int, size: int, width: int, classes: int, convs: int = 2, pool: str = "avg"
              ) -> nn.Sequential:
    """A small exit head: ``pool`` ("avg" or "max") down to ≤ HEAD_SIZE a side, ``convs`` conv-BN-ReLU 3×3
    of ``width`` channels, global average pool, linear."""
    if pool not in POOLS:
        raise ValueError(f"head pool must be one of {sorted(POOLS)}, got {pool!r}")
    k = size // HEAD_SIZE
    down = POOLS[pool](k) if k > 1 else nn.Identity()
    layers = [conv_bn(channels if i == 0 else width, width) for i in range(convs)]
    return nn.Sequential(down, *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


@composite
class MultiExitNet(nn.Module):
    """A copy of ``base``'s feature stages up to the deepest exit, one head per exit (the base classifier
    at the last feature stage) and, with ``aggregate``, one §5.2.2 block per exit after the first.
    ``forward(x)`` returns every exit's logits (shared layers computed once)."""

    ARCH_ATTRS = ("depths", "aggregate")

    def __init__(self, base: nn.Module, depths: Sequence[int], *, input_shape: tuple[int, ...] = (1, 32, 32),
                 aggregate: bool = False, head_width: int = 24, head_convs: int = 2, head_pool: str = "avg"):
        super().__init__()
        stages = feature_stages(base)
        depths = _check_depths(depths, stages)
        if head_width < 1 or head_convs < 1:
            raise ValueError(f"head_width and head_convs must be positive, got {head_width}, {head_convs}")
        if head_pool not in POOLS:
            raise ValueError(f"head_pool must be one of {sorted(POOLS)}, got {head_pool!r}")
        was_training = base.training
        base.eval()
        with torch.no_grad():
            param = next(base.parameters(), None)
            example = torch.zeros((1, *input_shape), device=param.device if param is not None else "cpu")
            classes = int(base(example).shape[1])
            x, shapes = example, []
            for module in list(base)[:stages]:
                x = module(x)
                shapes.append(tuple(x.shape[1:]))
        base.train(was_training)
        for d in depths:
            if len(shapes[d]) != 3:
                raise ValueError(f"depth {d} gives features of shape {shapes[d]}, not (channels, height, width)")
        self.depths = tuple(depths)
        self.aggregate = bool(aggregate)
        self.stages = nn.ModuleList(copy.deepcopy(m) for m in list(base)[:depths[-1] + 1])
        heads = []
        for d in depths:
            c, h, _ = shapes[d]
            heads.append(copy.deepcopy(nn.Sequential(*list(base)[stages:])) if d == stages - 1
                         else exit_head(c, h, head_width, classes, head_convs, head_pool))
        self.heads = nn.ModuleList(heads)
        self.mixers = nn.ModuleList(
            Aggregate(shapes[lo][0], shapes[hi][0], _downsample(*shapes[lo][1:], *shapes[hi][1:]))
            for lo, hi in zip(depths, depths[1:])) if self.aggregate else nn.ModuleList()
        self.to(example.device).train(was_training)

    @property
    def n_exits(self) -> int:
        return len(self.depths)

    def _features(self, e: int, low, high):
        return self.mixers[e - 1](low, high) if self.aggregate and e > 0 else high

    def head_inputs(self, x: torch.Tensor, exits: Sequence[int]) -> list[torch.Tensor]:
        """What the heads of ``exits`` (sorted, distinct indices) read: the shared layers run once, up to the
        deepest of them (with their aggregation blocks); no head runs."""
        exits = list(exits)
        if not exits or exits != sorted(set(exits)) or exits[0] < 0 or exits[-1] >= self.n_exits:
            raise ValueError(f"exits must be sorted distinct indices in [0, {self.n_exits - 1}], got {exits}")
        out = []
        low = None
        e = 0
        for i, stage in enumerate(self.stages[:self.depths[exits[-1]] + 1]):
            x = stage(x)
            if i == self.depths[e]:
                low = self._features(e, low, x)
                if e in exits:
                    out.append(low)
                e += 1
        return out

    def forward(self, x):
        return [head(f) for head, f in zip(self.heads, self.head_inputs(x, range(self.n_exits)))]

    def exit_logits(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Logits of exit ``index`` alone: the prefix up to it (and its aggregation blocks), no other head."""
        if not 0 <= index < self.n_exits:
            raise ValueError(f"exit index must lie in [0, {self.n_exits - 1}], got {index}")
        return self.heads[index](self.head_inputs(x, [index])[0])

    def _thresholds(self, thresholds: Sequence[float]) -> list[float]:
        t = [float(v) for v in thresholds]
        if len(t) != self.n_exits or any(math.isnan(v) for v in t):
            raise ValueError(f"thresholds must be {self.n_exits} numbers (one per exit, the last unused), "
                             f"got {list(thresholds)}")
        return t

    def early_exit_one(self, x: torch.Tensor, thresholds: Sequence[float]) -> tuple[torch.Tensor, int]:
        """One sample (batch of 1): logits of the first exit whose confidence is above its threshold, and
        that exit's index (the last exit answers when none is)."""
        t = self._thresholds(thresholds)
        if x.shape[0] != 1:
            raise ValueError(f"early_exit_one takes a batch of one sample, got {x.shape[0]}")
        low = None
        e = 0
        last = self.n_exits - 1
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == self.depths[e]:
                low = self._features(e, low, x)
                out = self.heads[e](low)
                if e == last or float(confidence(out)[0][0]) > t[e]:
                    return out, e
                e += 1
        raise AssertionError("unreachable: the last exit always answers")

    def early_exit(self, x: torch.Tensor, thresholds: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: each sample's logits at its first confident exit and that exit's index; only samples
        that have not exited yet are carried to the next stage."""
        t = self._thresholds(thresholds)
        n = x.shape[0]
        last = self.n_exits - 1
        where = torch.full((n,), last, dtype=torch.long, device=x.device)
        alive = torch.arange(n, device=x.device)
        out = None
        low = None
        e = 0
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i != self.depths[e]:
                continue
            low = self._features(e, low, x)
            logits = self.heads[e](low)
            if out is None:
                out = logits.new_zeros((n, logits.shape[1]))
            if e == last:
                out[alive] = logits
                break
            done = confidence(logits)[0] > t[e]
            out[alive[done]] = logits[done]
            where[alive[done]] = e
            keep = ~done
            if not bool(keep.any()):
                break
            alive, x, low = alive[keep], x[keep], low[keep]
            e += 1
        return out, where


def single_exit(base: nn.Module, depth: int, *, input_shape: tuple[int, ...] = (1, 32, 32),
                head_width: int = 24, head_convs: int = 2, head_pool: str = "avg") -> MultiExitNet:
    """The single-exit baseline: ``base`` cut after stage ``depth`` with its own head (the base classifier
    at the last feature stage), to be trained on its own."""
    return MultiExitNet(base, [depth], input_shape=input_shape, head_width=head_width, head_convs=head_convs,
                        head_pool=head_pool)


# -------------------------------------------------------------------------------------------- training

def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss -(1 - p_t)^γ log p_t (§5.2.3); γ = 0 is cross-entropy."""
    if not gamma >= 0:
        raise ValueError(f"focal gamma must be ≥ 0, got {gamma}")
    log_pt = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return (-(1 - log_pt.exp()).clamp_min(0).pow(gamma) * log_pt).mean()


def _check_weights(weights: Sequence[float], n: int) -> list[float]:
    w = [float(v) for v in weights]
    if len(w) != n:
        raise ValueError(f"weights must have one entry per exit ({n}), got {len(w)}: {list(weights)}")
    if any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w}")
    return w


def _check_gammas(gamma: float | Sequence[float], n: int) -> list[float]:
    g = [float(gamma)] * n if isinstance(gamma, (int, float)) else [float(v) for v in gamma]
    if len(g) != n or any(not math.isfinite(v) or v < 0 for v in g):
        raise ValueError(f"gamma must be one number ≥ 0 or one per exit ({n}), got {gamma!r}")
    return g


def exit_loss(model: MultiExitNet, weights: Sequence[float], gamma: float | Sequence[float] = 0.0
              ) -> finetune.Loss:
    """The loss Σ_i w_i · L_i of ``model``'s exits, L_i the focal loss with γ_i (cross-entropy at γ = 0)."""
    w = _check_weights(weights, model.n_exits)
    g = _check_gammas(gamma, model.n_exits)

    def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(wi * focal_loss(out, y, gi) for wi, gi, out in zip(w, g, m(x)) if wi > 0)

    return loss


def fit_multi_exit(model: MultiExitNet, x: torch.Tensor, y: torch.Tensor, *, weights: Sequence[float],
                   gamma: float | Sequence[float] = 0.0, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                   seed: int = 0, on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train every parameter of ``model`` on Σ w_i · L_i (``finetune.fit``); the mean loss of each epoch."""
    return finetune.fit(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                        loss=exit_loss(model, weights, gamma), on_epoch=on_epoch)


def timed_fit(model: MultiExitNet, x: torch.Tensor, y: torch.Tensor, *,
              clock: Callable[[], float] = time.perf_counter, **kwargs) -> float:
    """Seconds spent in ``fit_multi_exit(model, x, y, **kwargs)`` by ``clock`` (wall time by default;
    ``time.process_time`` counts only this process's CPU time, steadier on a shared machine)."""
    start = clock()
    fit_multi_exit(model, x, y, **kwargs)
    return clock() - start


def _ms(fn: Callable[[torch.Tensor], object], x: torch.Tensor, min_run_time: float, repeats: int) -> float:
    """Least median milliseconds of ``repeats`` ``latency.measure`` runs (the least disturbed one)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    return min(measure(fn, x, min_run_time=min_run_time).median_ms for _ in range(repeats))


# ------------------------------------------------------------------------------------ exit decisions

def confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(largest softmax probability in float64, arg-max class) of each row."""
    return F.softmax(logits.double(), dim=1).max(dim=1)


@torch.no_grad()
def all_exit_logits(model: MultiExitNet, x: torch.Tensor, batch_size: int = finetune.EVAL_BATCH
                    ) -> list[torch.Tensor]:
    """Every exit's logits on ``x`` (eval mode, batch by batch, on the CPU)."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    return [torch.cat([p[e].float().cpu() for p in parts]) for e in range(model.n_exits)]


def exit_accuracies(model: MultiExitNet, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Accuracy of each exit on all of ``x``."""
    return [float((lg.argmax(1) == y).double().mean()) for lg in all_exit_logits(model, x)]


def _check_target(target_precision: float) -> float:
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must lie in (0, 1], got {target_precision}")
    return float(target_precision)


def _threshold(conf: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest t with precision of {conf > t} ≥ target (1.0, never exit, when no non-empty set has it)."""
    if conf.size == 0:
        return 1.0
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order].astype(float)
    hits = np.cumsum(ok)
    count = np.arange(1, len(c) + 1)
    ends = np.flatnonzero(np.append(c[1:] != c[:-1], True))  # a set {conf ≥ c_k} ends where the value changes
    good = ends[hits[ends] >= target * count[ends] - 1e-9]
    if good.size == 0:
        return 1.0
    return float(np.nextafter(c[good[-1]], -np.inf))  # conf > t ⇔ conf ≥ c_k


def calibrate_thresholds(exit_logits: Sequence[torch.Tensor], y: torch.Tensor, target_precision: float
                         ) -> list[float]:
    """Per-exit thresholds, exit by exit on the samples that reach that exit, so that the samples exiting
    there are correct at least ``target_precision`` of the time on this data (largest recall that does)."""
    target = _check_target(target_precision)
    y = y.cpu().numpy()
    remaining = np.arange(len(y))
    thresholds = []
    for logits in exit_logits:
        conf, pred = (v.numpy() for v in confidence(logits.cpu()[torch.from_numpy(remaining)]))
        t = _threshold(conf, pred == y[remaining], target)
        thresholds.append(t)
        remaining = remaining[~(conf > t)]
    return thresholds


def route(exit_logits: Sequence[torch.Tensor], thresholds: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Early exit replayed on precomputed logits: (prediction, exit index) of each sample."""
    n_exits = len(exit_logits)
    if len(thresholds) != n_exits:
        raise ValueError(f"thresholds must be {n_exits} numbers (one per exit), got {list(thresholds)}")
    n = len(exit_logits[0])
    where = torch.full((n,), n_exits - 1, dtype=torch.long)
    pred = exit_logits[-1].argmax(1).clone()
    open_ = torch.ones(n, dtype=torch.bool)
    for e in range(n_exits - 1):
        conf, p = confidence(exit_logits[e])
        take = open_ & (conf > float(thresholds[e]))
        pred[take], where[take] = p[take], e
        open_ &= ~take
    return pred, where


@dataclass(frozen=True)
class ExitDecision:
    """Table 5.8 at one exit: precision = share of exiting samples that are correct, recall = share that exit."""

    threshold: float
    precision: float
    recall: float
    exited: int


def exit_decisions(exit_logits: Sequence[torch.Tensor], y: torch.Tensor, threshold: float) -> list[ExitDecision]:
    """Precision and recall of the decision "confidence > threshold" at every exit, each on all samples."""
    out = []
    for logits in exit_logits:
        conf, pred = confidence(logits)
        take = conf > threshold
        n = int(take.sum())
        precision = float((pred[take] == y[take]).double().mean()) if n else math.nan
        out.append(ExitDecision(float(threshold), precision, n / max(len(y), 1), n))
    return out


# -------------------------------------------------------------------------------------- measurements

def exit_macs(model: MultiExitNet, input_shape: tuple[int, ...] = (1, 32, 32)) -> list[int]:
    """MACs of each exit alone (its prefix, its aggregation blocks, its head)."""
    return [count_macs(model, input_shape, forward=lambda x, e=e: model.exit_logits(x, e))
            for e in range(model.n_exits)]


def _forced(n: int, e: int) -> list[float]:
    return [math.inf] * e + [-1.0] + [math.inf] * (n - e - 1)


def path_macs(model: MultiExitNet, input_shape: tuple[int, ...] = (1, 32, 32)) -> list[int]:
    """MACs of one sample's early-exit run that stops at exit i (the heads of the earlier exits included)."""
    n = model.n_exits
    return [count_macs(model, input_shape, forward=lambda x, e=e: model.early_exit_one(x, _forced(n, e)))
            for e in range(n)]


def ideal_speedup(singles: Sequence[nn.Module], full: nn.Module, input_shape: tuple[int, ...] = (1, 32, 32)
                  ) -> float:
    """Σ_i MACs(model cut at exit i) / MACs(full model): what one MXN saves over separate models at best."""
    if not singles:
        raise ValueError("singles must hold at least one single-exit model")
    return sum(count_macs(m, input_shape) for m in singles) / count_macs(full, input_shape)


@dataclass(frozen=True)
class Speedup:
    """A measured speedup of the MXN over its separate single-exit models, and the ideal one."""

    multi_s: float
    singles_s: tuple[float, ...]
    ideal: float

    @property
    def measured(self) -> float:
        return sum(self.singles_s) / self.multi_s

    @property
    def share_of_ideal(self) -> float:
        return self.measured / self.ideal


def training_speedup(multi_s: float, singles_s: Sequence[float], ideal: float) -> Speedup:
    """Training seconds of the MXN against the sum over the single-exit models'."""
    if not multi_s > 0 or any(not s > 0 for s in singles_s) or not ideal > 0:
        raise ValueError(f"times and ideal must be positive, got {multi_s}, {list(singles_s)}, {ideal}")
    return Speedup(float(multi_s), tuple(float(s) for s in singles_s), float(ideal))


@torch.no_grad()
def serving_speedup(model: MultiExitNet, singles: Sequence[nn.Module], x: torch.Tensor, ideal: float, *,
                    min_run_time: float = 0.2, repeats: int = 1) -> Speedup:
    """Prefix batching: one ``model(x)`` (every exit's output) against running each single-exit model on
    ``x``; seconds per batch, the least median of ``repeats`` rounds of ``latency.measure`` over all models."""
    model.eval()
    for s in singles:
        s.eval()
    rounds = [[_ms(m, x, min_run_time, 1) / 1e3 for m in (model, *singles)] for _ in range(max(repeats, 1))]
    best = [min(r[i] for r in rounds) for i in range(len(singles) + 1)]
    return training_speedup(best[0], best[1:], ideal)


@dataclass(frozen=True)
class EarlyExitReport:
    """Early exit against the full network on one data set: accuracy, mean MACs and batch-1 latency."""

    accuracy: float
    full_accuracy: float
    exit_shares: tuple[float, ...]
    path_macs: tuple[int, ...]
    path_ms: tuple[float, ...]
    full_macs: int
    full_ms: float

    @property
    def mean_macs(self) -> float:
        return float(np.dot(self.exit_shares, self.path_macs))

    @property
    def mean_ms(self) -> float:
        return float(np.dot(self.exit_shares, self.path_ms))

    @property
    def macs_reduction(self) -> float:
        return self.full_macs / self.mean_macs

    @property
    def latency_reduction(self) -> float:
        return self.full_ms / self.mean_ms

    @property
    def accuracy_drop(self) -> float:
        """Full-network accuracy minus early-exit accuracy, in percentage points."""
        return 100 * (self.full_accuracy - self.accuracy)


@torch.no_grad()
def early_exit_report(model: MultiExitNet, full: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      thresholds: Sequence[float], *, input_shape: tuple[int, ...] = (1, 32, 32),
                      min_run_time: float = 0.2, repeats: int = 1) -> EarlyExitReport:
    """Run ``model.early_exit`` on ``x``; time (least median of ``repeats`` ``latency.measure`` runs) and
    count the batch-1 path to each exit and ``full``."""
    model.eval()
    full.eval()
    full_fn = (lambda v: full(v)[-1]) if isinstance(full, MultiExitNet) else full
    device = next(model.parameters()).device
    full_device = next(full.parameters()).device
    full_pred = torch.cat([full_fn(x[i:i + finetune.EVAL_BATCH].to(full_device)).argmax(1).cpu()
                           for i in range(0, len(x), finetune.EVAL_BATCH)])
    preds, wheres = [], []
    for i in range(0, len(x), finetune.EVAL_BATCH):
        logits, where = model.early_exit(x[i:i + finetune.EVAL_BATCH].to(device), thresholds)
        preds.append(logits.argmax(1).cpu())
        wheres.append(where.cpu())
    pred, where = torch.cat(preds), torch.cat(wheres)
    n = model.n_exits
    shares = tuple(float((where == e).double().mean()) for e in range(n))
    x1 = x[:1].to(device)
    path_ms = tuple(_ms(lambda v, e=e: model.early_exit_one(v, _forced(n, e)), x1, min_run_time, repeats)
                    for e in range(n))
    return EarlyExitReport(
        accuracy=float((pred == y.cpu()).double().mean()),
        full_accuracy=float((full_pred == y.cpu()).double().mean()),
        exit_shares=shares, path_macs=tuple(path_macs(model, input_shape)), path_ms=path_ms,
        full_macs=count_macs(full, input_shape),
        full_ms=_ms(full_fn, x[:1].to(full_device), min_run_time, repeats))
