"""Convolutional layer caching across video frames (thesis 004 ch. 3 §3.4.3, DeepMon).

A frame is split into a grid of blocks. A block is *reusable* when it did not change since its outputs
were cached: DeepMon's test is the chi-square distance between the block's colour histograms in this
frame and in the cached frame (``histogram_detector``); the peer is a pixel-difference test, the idea of
CBinfer and DeltaCNN (``pixel_detector``: no pixel moved by more than a threshold). For the first N
convolutional layers (the *prefix*) the outputs of reusable blocks are kept; only what a changed block
influences is recomputed, and the rest of the network (the *suffix*) runs on the assembled features.
Cached entries expire after ``max_age`` frames.

Where the thesis is vague, and what we chose:

* Edges (its Fig. 3.7): DeepMon does not reuse the border of a cached block next to a changed one. Here
  that is exact, layer by layer: every spatial layer of the prefix (with the pointwise layers after it)
  keeps its output map; the region a changed block influences is widened by each layer's own halo ``h``
  (so the neighbours' borders are refreshed too) and computed from that layer's input cropped ``h``
  wider; a crop that reaches the map's edge stops there, where the layer's own zero padding applies.
  Changed blocks of one grid row form one rectangle (equal runs of consecutive rows merge); crops of equal
  shape run as one batch; when a layer's crops would cover more than its input, it runs on all of it.
  With the true mask of changed blocks the output equals full recomputation (tested).
* A layer's halo comes from its kernel, stride, dilation and padding (both branches of a residual block),
  rounded up to a multiple of its stride, so crops keep the stride phase of the full map. Blocks must be
  multiples of the prefix's total stride.
* Histograms: ``bins`` bins per channel over [0, 1], normalised per channel; the distance is
  ½ Σ (p - q)² / (p + q), in [0, 1], averaged over the channels.
* The reference of a block is the frame whose pixels its cached outputs were computed from; it moves on
  only when the block is recomputed, so slow drift accumulates until the block misses or expires.
* "The first N convolutional layers": the top-level layers of an ``nn.Sequential`` up to the one that
  holds the N-th convolution (a residual block counts all its convolutions); in a multi-column network
  (MCNN) the first N of every column, their outputs stacked on channels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

Detector = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]
POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Sigmoid, nn.Tanh)


# ---------------------------------------------------------------- prefix and its receptive field


@dataclass(frozen=True)
class Field:
    """Input rows [o·stride + lo, o·stride + hi] feed output row o (the same for columns)."""

    stride: int = 1
    lo: int = 0
    hi: int = 0

    def then(self, kernel: int, stride: int, dilation: int, padding: int) -> "Field":
        """This field followed by a sliding-window layer."""
        return Field(self.stride * stride, self.lo - padding * self.stride,
                     self.hi + (dilation * (kernel - 1) - padding) * self.stride)

    def union(self, other: "Field") -> "Field":
        if other.stride != self.stride:
            raise ValueError(f"branches of strides {self.stride} and {other.stride} cannot be cached")
        return Field(self.stride, min(self.lo, other.lo), max(self.hi, other.hi))

    @property
    def halo(self) -> int:
        """Pixels a block needs on each side, rounded up to a multiple of the stride."""
        need = max(-self.lo, self.hi - (self.stride - 1), 0)
        return self.stride * math.ceil(need / self.stride)


def _square(value) -> int:
    pair = value if isinstance(value, tuple) else (value, value)
    if pair[0] != pair[1]:
        raise ValueError(f"caching needs square kernels, strides and paddings, got {pair}")
    return int(pair[0])


def receptive_field(module: nn.Module, start: Field = Field()) -> Field:
    """The receptive field of ``module`` (convolutions, pooling, pointwise layers, ``nn.Sequential`` and
    residual blocks with ``body`` and ``shortcut``); ValueError for a layer it cannot see through."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(module.padding, str):
            raise ValueError(f"caching needs numeric padding, got {module.padding!r} in {module}")
        dilation = _square(module.dilation) if hasattr(module, "dilation") else 1
        stride = _square(module.stride if module.stride is not None else module.kernel_size)
        return start.then(_square(module.kernel_size), stride, dilation, _square(module.padding))
    if isinstance(module, POINTWISE):
        return start
    if isinstance(module, nn.Sequential):
        for layer in module:
            start = receptive_field(layer, start)
        return start
    if hasattr(module, "body") and hasattr(module, "shortcut"):
        return receptive_field(module.body, start).union(receptive_field(module.shortcut, start))
    if isinstance(module, ColumnsPrefix):
        fields = [receptive_field(head, start) for head in module.heads]
        return fields[0] if len(fields) == 1 else functools.reduce(Field.union, fields)
    raise ValueError(f"caching cannot see through {type(module).__name__} (supported: Conv2d, pooling, "
                     "pointwise layers, nn.Sequential, residual blocks with body and shortcut)")


class ColumnsPrefix(nn.Module):
    """The first layers of each parallel column (a multi-column network), outputs stacked on channels."""

    def __init__(self, heads: list[nn.Sequential]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=1)


class ColumnsSuffix(nn.Module):
    """The rest of each column on its share of the stacked channels, then the network's fusion layer."""

    def __init__(self, tails: list[nn.Sequential], widths: list[int], fuse: nn.Module):
        super().__init__()
        self.tails, self.widths, self.fuse = nn.ModuleList(tails), widths, fuse

    def forward(self, x):
        parts = torch.split(x, self.widths, dim=1)
        return self.fuse(torch.cat([tail(part) for tail, part in zip(self.tails, parts)], dim=1))


def _cut(layers: list[nn.Module], n_convs: int) -> tuple[int, int]:
    """(layers to keep, convolutions they hold) for the first ``n_convs`` convolutions of ``layers``."""
    counts = [sum(isinstance(m, nn.Conv2d) for m in layer.modules()) for layer in layers]
    if not 1 <= n_convs <= sum(counts):
        raise ValueError(f"n_convs must lie in [1, {sum(counts)}] (the model's convolutions), got {n_convs}")
    seen = 0
    for cut, count in enumerate(counts, start=1):
        seen += count
        if seen >= n_convs:
            return cut, seen
    raise AssertionError("unreachable")


def _out_channels(layers: list[nn.Module]) -> int:
    return [m for layer in layers for m in layer.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def split_prefix(model: nn.Module, n_convs: int) -> tuple[nn.Module, nn.Module, int]:
    """(prefix, suffix, convolutions in the prefix): for an ``nn.Sequential``, its top-level layers up to the
    one holding its ``n_convs``-th convolution, and the rest; for a multi-column network (``columns`` of
    ``nn.Sequential`` and a ``fuse`` layer, as MCNN), the first ``n_convs`` convolutions of every column."""
    if isinstance(model, nn.Sequential):
        layers = list(model)
        cut, seen = _cut(layers, n_convs)
        prefix, suffix = nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])
    elif isinstance(getattr(model, "columns", None), nn.ModuleList) and hasattr(model, "fuse"):
        cuts = [_cut(list(column), n_convs) for column in model.columns]
        heads = [nn.Sequential(*list(column)[:cut]) for column, (cut, _) in zip(model.columns, cuts)]
        tails = [nn.Sequential(*list(column)[cut:]) for column, (cut, _) in zip(model.columns, cuts)]
        prefix = ColumnsPrefix(heads)
        suffix = ColumnsSuffix(tails, [_out_channels(list(head)) for head in heads], model.fuse)
        seen = sum(s for _, s in cuts)
    else:
        raise ValueError(f"caching splits an nn.Sequential model or a multi-column one (columns + fuse), "
                         f"got {type(model).__name__}")
    receptive_field(prefix)  # refuse now what cannot be cached
    # new wrappers start in training mode; a later .train()/.eval() on them reaches the model's layers
    return prefix.train(model.training), suffix.train(model.training), seen


# ---------------------------------------------------------------- change detectors


def block_view(frame: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) → (gh, gw, C, bh·bw): the pixels of each block of the grid."""
    channels, height, width = frame.shape
    gh, gw = grid
    return (frame.reshape(channels, gh, height // gh, gw, width // gw)
            .permute(1, 3, 0, 2, 4).reshape(gh, gw, channels, -1))


def check_grid(shape: tuple[int, int], grid: tuple[int, int], multiple: int = 1) -> tuple[int, int]:
    """The block size (bh, bw) of ``grid`` on a frame of ``shape`` (H, W); ValueError unless the grid divides
    the frame into blocks whose sides are multiples of ``multiple``."""
    (height, width), (gh, gw) = shape, grid
    if gh < 1 or gw < 1 or height % gh or width % gw:
        raise ValueError(f"a {gh}×{gw} grid does not divide a {height}×{width} frame into equal blocks")
    bh, bw = height // gh, width // gw
    if bh % multiple or bw % multiple:
        raise ValueError(f"blocks of {bh}×{bw} pixels are not multiples of the cached layers' stride {multiple}")
    return bh, bw


def block_histograms(frame: torch.Tensor, grid: tuple[int, int], bins: int) -> torch.Tensor:
    """Per block and channel, the normalised histogram of values in [0, 1]: (gh, gw, C, bins)."""
    if bins < 2:
        raise ValueError(f"a histogram needs at least 2 bins, got {bins}")
    check_grid(tuple(frame.shape[-2:]), grid)
    blocks = block_view(frame, grid)
    index = (blocks * bins).long().clamp_(0, bins - 1)
    cells = blocks.shape[:3].numel()
    offsets = torch.arange(cells).reshape(*blocks.shape[:3], 1) * bins
    counts = torch.bincount((index + offsets).flatten(), minlength=cells * bins)
    return counts.reshape(*blocks.shape[:3], bins).float() / blocks.shape[-1]


def chi_square(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """½ Σ (p - q)² / (p + q) over the last dim (0 where both are 0), averaged over channels: (gh, gw)."""
    total = p + q
    terms = torch.where(total > 0, (p - q) ** 2 / total.clamp_min(1e-12), torch.zeros_like(total))
    return 0.5 * terms.sum(-1).mean(-1)


def histogram_detector(bins: int, threshold: float) -> Detector:
    """Changed blocks (gh, gw bool): chi-square distance of colour histograms ≥ ``threshold``."""
    if bins < 2:
        raise ValueError(f"a histogram needs at least 2 bins, got {bins}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"the chi-square threshold must lie in [0, 1], got {threshold}")

    def changed(frame: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return chi_square(block_histograms(frame, grid, bins), block_histograms(reference, grid, bins)) >= threshold

    return changed


def pixel_detector(threshold: float) -> Detector:
    """Changed blocks (gh, gw bool): some pixel moved by more than ``threshold`` (values in [0, 1])."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"the pixel threshold must lie in [0, 1], got {threshold}")

    def changed(frame: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return (block_view(frame, grid) - block_view(reference, grid)).abs().amax(dim=(-1, -2)) > threshold

    return changed


def exact_detector(frame: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The true mask: blocks in which any value differs."""
    return (block_view(frame, grid) != block_view(reference, grid)).any(dim=-1).any(dim=-1)


# ---------------------------------------------------------------- the cache


def row_rectangles(changed: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Changed blocks as rectangles (row0, row1, col0, col1), half-open, in block units: runs of one row,
    merged with identical runs of the rows below."""
    rectangles: list[list[int]] = []
    open_runs: dict[tuple[int, int], list[int]] = {}
    for row, line in enumerate(changed.tolist()):
        runs, col = [], 0
        while col < len(line):
            if line[col]:
                start = col
                while col < len(line) and line[col]:
                    col += 1
                runs.append((start, col))
            col += 1
        still_open = {}
        for run in runs:
            rect = open_runs.get(run)
            if rect is not None and rect[1] == row:
                rect[1] = row + 1
            else:
                rect = [row, row + 1, *run]
                rectangles.append(rect)
            still_open[run] = rect
        open_runs = still_open
    return [tuple(r) for r in rectangles]


@dataclass
class Step:
    """What one frame cost: blocks reused, changed (by the detector), expired, and the share of the
    prefix's MACs computed (1: as much as a full recomputation)."""

    reused: int
    changed: int
    expired: int
    computed: float
    changed_mask: torch.Tensor = field(repr=False)


def _floor(v: int, m: int) -> int:
    return v - v % m


def _ceil(v: int, m: int) -> int:
    return -_floor(-v, m)


class Unit:
    """One spatial layer of a prefix chain with the pointwise layers after it, its field and its cached
    output map."""

    def __init__(self, layers: list[nn.Module]):
        self.module = nn.Sequential(*layers).train(layers[0].training)  # the model's mode, not the wrapper's default
        self.field = receptive_field(self.module)
        self.copy_input = isinstance(layers[0], POINTWISE)  # an in-place first layer must not touch the cache
        self.output: torch.Tensor | None = None
        self.macs = 0

    def full(self, x: torch.Tensor) -> torch.Tensor:
        self.output = self.module(x.clone() if self.copy_input else x)
        return self.output

    def update(self, x: torch.Tensor, rects: list[tuple[int, int, int, int]]) -> tuple[list, float]:
        """Recompute the outputs that the dirty ``rects`` of input ``x`` (top, bottom, left, right, half-open,
        pixels of ``x``) influence; (dirty rects of the output, share of this layer's MACs computed). Crops of
        equal shape run as one batch; when the crops would cover more than ``x``, the layer runs on all of it."""
        height, width = x.shape[-2:]
        stride, halo = self.field.stride, self.field.halo
        jobs = set()
        for t, b, l, r in rects:  # the outputs influenced (aligned to the stride), then the crop that determines them
            ot, ob = _floor(max(t - halo, 0), stride), min(_ceil(b + halo, stride), height)
            ol, orr = _floor(max(l - halo, 0), stride), min(_ceil(r + halo, stride), width)
            jobs.add(((ot, ob, ol, orr), (max(ot - halo, 0), min(ob + halo, height), max(ol - halo, 0),
                                           min(orr + halo, width))))
        outputs = sorted({(ot // stride, ob // stride, ol // stride, orr // stride) for (ot, ob, ol, orr), _ in jobs})
        area = sum((cb - ct) * (cr - cl) for _, (ct, cb, cl, cr) in jobs)
        if area >= height * width:
            self.full(x)
            return outputs, 1.0
        groups: dict[tuple, list] = {}
        for out, crop in jobs:
            (ot, ob, ol, orr), (ct, cb, cl, cr) = out, crop
            groups.setdefault((cb - ct, cr - cl, ot - ct, ol - cl, ob - ot, orr - ol), []).append((out, crop))
        for (_, _, dt, dl, oh, ow), members in groups.items():
            batch = torch.cat([x[..., ct:cb, cl:cr] for _, (ct, cb, cl, cr) in members])
            y = self.module(batch)
            dt, dl, oh, ow = dt // stride, dl // stride, oh // stride, ow // stride
            for i, ((ot, _, ol, _), _) in enumerate(members):
                ot, ol = ot // stride, ol // stride
                self.output[..., ot:ot + oh, ol:ol + ow] = y[i:i + 1, :, dt:dt + oh, dl:dl + ow]
        return outputs, area / (height * width)


def _units(chain: nn.Sequential) -> list[Unit]:
    """A chain's layers grouped as units: each spatial layer with the pointwise layers that follow it."""
    groups: list[list[nn.Module]] = []
    for layer in chain:
        if groups and isinstance(layer, POINTWISE):
            groups[-1].append(layer)
        else:
            groups.append([layer])
    return [Unit(g) for g in groups]


class ConvCache:
    """Runs ``model`` frame by frame, reusing the first ``n_convs`` convolutions' outputs of unchanged blocks.

    ``detector(frame, reference, grid)`` names the changed blocks; blocks older than ``max_age`` frames are
    recomputed whatever it says (``None``: never expire). Frames are (1, C, H, W) tensors of one shape.
    Every layer of the prefix keeps its output map; a changed region is recomputed layer by layer, each
    layer widening it by its own halo (DeepMon's per-layer edges, Fig. 3.7)."""

    def __init__(self, model: nn.Module, n_convs: int, grid: tuple[int, int], detector: Detector,
                 max_age: int | None = None):
        if max_age is not None and max_age < 1:
            raise ValueError(f"max_age must be at least 1 frame (or None), got {max_age}")
        self.prefix, self.suffix, self.convs = split_prefix(model, n_convs)
        self.field = receptive_field(self.prefix)
        heads = self.prefix.heads if isinstance(self.prefix, ColumnsPrefix) else [self.prefix]
        self.chains = [_units(head) for head in heads]
        self.grid, self.detector, self.max_age = (int(grid[0]), int(grid[1])), detector, max_age
        self.reset()

    def reset(self) -> None:
        """Forget every cached frame."""
        self.reference: torch.Tensor | None = None
        self.age: torch.Tensor | None = None
        self.reference_frame: torch.Tensor | None = None  # per block: index of the frame its outputs came from
        self.frames_seen = 0

    def _features(self) -> torch.Tensor:
        last = [chain[-1].output for chain in self.chains]
        return (last[0] if len(last) == 1 else torch.cat(last, dim=1)).clone()  # a copy: the suffix may work in place

    def _count_macs(self, frame: torch.Tensor) -> None:
        from qoeflow.models.macs import count_macs

        for chain in self.chains:
            x = frame
            for unit in chain:
                unit.macs = count_macs(unit.module, tuple(x.shape[1:]))
                x = unit.module(x.clone())

    @torch.no_grad()
    def __call__(self, frame: torch.Tensor) -> tuple[torch.Tensor, Step]:
        if frame.dim() != 4 or frame.shape[0] != 1:
            raise ValueError(f"frames are (1, C, H, W) tensors, got shape {tuple(frame.shape)}")
        bh, bw = check_grid(tuple(frame.shape[-2:]), self.grid, self.field.stride)
        index, self.frames_seen = self.frames_seen, self.frames_seen + 1
        if self.reference is None or self.reference.shape != frame.shape:
            self._count_macs(frame)
            for chain in self.chains:
                x = frame
                for unit in chain:
                    x = unit.full(x)
            self.reference, self.age = frame.clone(), torch.zeros(self.grid, dtype=torch.long)
            self.reference_frame = torch.full(self.grid, index, dtype=torch.long)
            everything = torch.ones(self.grid, dtype=torch.bool)
            return self.suffix(self._features()), Step(0, everything.numel(), 0, 1.0, everything)
        changed = self.detector(frame[0], self.reference[0], self.grid)
        expired = (self.age + 1 >= self.max_age) & ~changed if self.max_age else torch.zeros_like(changed)
        recompute = changed | expired
        rects = [(r0 * bh, r1 * bh, c0 * bw, c1 * bw) for r0, r1, c0, c1 in row_rectangles(recompute)]
        macs = total = 0.0
        for chain in self.chains:
            x, dirty = frame, rects
            for unit in chain:
                if not dirty:
                    break
                dirty, share = unit.update(x, dirty)
                macs, x = macs + share * unit.macs, unit.output
            total += sum(unit.macs for unit in chain)
        self.age += 1
        self.age[recompute] = 0
        self.reference_frame[recompute] = index
        for t, b, l, r in rects:
            self.reference[..., t:b, l:r] = frame[..., t:b, l:r]
        step = Step(int((~recompute).sum()), int(changed.sum()), int(expired.sum()), macs / total if total else 0.0,
                    changed)
        return self.suffix(self._features()), step
