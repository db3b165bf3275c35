"""Filter pruning: D-Pruner (thesis 004, ch. 4, Algorithm 2) and Torch-Pruning's ℓ1 magnitude baseline.

D-Pruner. Every prunable channel group (`channels.channel_groups`, rooted at convolutions; the classifier
keeps its outputs) gets a *masking block*: global average pool of the group's feature map → dense → ReLU →
dense → softmax scores over the group's filters → a binary mask that zeroes the K lowest-scored filters
(K = ratio × width, paper 20 %), multiplied into the feature map (§4.3.1, Fig. 4.2). One iteration:

1. attach the blocks to a copy P' of the network P; train the blocks alone for `block_epochs`, then blocks
   and network together for `net_epochs` (§4.3.2, "we fix the original network and train only the masking
   blocks for first few epochs and then fine-tune the whole network");
2. removal probability of filter f = share of the training images on which its mask is 0 (Alg. 2 l. 8);
3. remove the filters with probability ≥ T (paper 0.95; Alg. 2 l. 9 prints "≤", the text says "higher than")
   from P' — physically, with `channels.remove_channels` — keeping P''s learned weights (l. 14–15), drop the
   blocks, fine-tune for `finetune_epochs` (l. 16);
4. accept P'' while the validation accuracy is within `accuracy_budget` of the original's (the text's
   reading of l. 17–21, paper 1 point) and repeat; stop at the first iteration over budget, when no filter
   reaches T, or after `max_iterations`. Every iteration is kept, accepted or not.

Where the paper is vague, and what we chose:

* Where the block sits: on the output of the batch norm after each producing convolution (before the
  ReLU; on the convolution itself when no batch norm follows). A ResNet group has several producers (the
  convolutions whose outputs meet at a residual addition): one block per group scores the first producer's
  map to run in a forward pass and the same mask multiplies every producer's map, which equals masking the
  sum. Hidden width of the block: max(4, width // 4) (SE uses 1/16; our layers are narrow).
* How a hard top-K mask trains the block: straight-through. The forward multiplies by the exact binary
  mask; the backward treats it as width × softmax scores (mean 1), so a score gets the gradient of scaling
  its filter — a first-order estimate of that filter's worth on that image.
* "Fix the original network": its parameters are frozen; its batch-norm statistics keep adapting to the
  masked regime.
* Optimiser: `finetune.fit`'s Adam at `lr` (default 5e-4: at 1e-3 the accuracy after a 2-epoch fine-tune
  swings by a few points and stops the run early) instead of the paper's Nesterov SGD (0.01, momentum 0.9).
* Round where it pays (`round_to`, e.g. 8): each group's kept count is rounded *up* to a multiple of
  `round_to` (or the full width): fewer filters go, those with the lowest removal probability stay. CPU
  convolution kernels work in blocks of channels, so an unrounded width can waste much of a MACs cut
  (whether it does depends on the kernels: measure).
  So that a whole block of filters can reach T in one iteration, K is itself rounded up to a multiple of
  `round_to` (at most width − round_to; a group no wider than `round_to` is left alone).

Magnitude baseline (`magnitude_baseline`): Torch-Pruning's `MetaPruner` with
`MagnitudeImportance(p=1)` (the group ℓ1 norm), one shot, the same channel groups (roots: convolutions;
classifier ignored), a uniform ratio (or global ranking) searched — a grid, then bisection — until the
pruned network's MACs match a target (a D-Pruner result's) within `tolerance`, `round_to` passed to the
library (which rounds kept channels *down*, and leaves a group whole when that would empty it), then
fine-tuned for a given number of epochs (by default the D-Pruner result's
total epochs of training since the original, every phase counted).

Accuracies are shares in [0, 1]; the budget too (1 point = 0.01). Models are returned as plain layers
(describable by `qoeflow.models.arch`); latency is measured on the CPU at batch 1 and 64 with the threads
the caller set.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from qoeflow.lifecycle import channels, finetune
from qoeflow.models.latency import measure
from qoeflow.models.macs import count_macs, count_params

Data = tuple[torch.Tensor, torch.Tensor]
LATENCY_BATCHES = (1, 64)


# ---------------------------------------------------------------------------------------------- records

@dataclass
class Iteration:
    """One pruned network and its measurements. Iteration 0 is the original."""

    index: int
    model: nn.Module
    accuracy: float  # validation accuracy, the one the budget is checked on
    test_accuracy: float | None
    params: int
    macs: int
    filters: dict[str, int]  # kept filters per channel group (group name: its first producer)
    latency_ms: dict[int, float]  # batch size -> median ms on the CPU (empty when not measured)
    epochs: int  # passes over the training set since the original (all phases)
    accepted: bool = True
    removed: dict[str, list[int]] = field(default_factory=dict)  # indices dropped from the previous widths
    probabilities: dict[str, list[float]] = field(default_factory=dict)  # removal probability per filter
    seconds: float = 0.0  # wall time of this iteration (training, pruning, measuring)


@dataclass
class PruningResult:
    """A pruning run: the original (`iterations[0]`) and every iteration after it, with its settings."""

    method: str  # "d-pruner" or "magnitude"
    iterations: list[Iteration]
    settings: dict
    stopped: str  # why the run ended

    @property
    def original(self) -> Iteration:
        return self.iterations[0]

    @property
    def best(self) -> Iteration:
        """The last accepted iteration (the smallest network within the budget)."""
        return [it for it in self.iterations if it.accepted][-1]

    def macs_ratio(self, it: Iteration) -> float:
        """How many times fewer MACs than the original."""
        return self.original.macs / it.macs

    def speedup(self, it: Iteration, batch: int = 64) -> float:
        """Measured latency of the original over that of `it` at `batch` (nan when not measured)."""
        if batch not in it.latency_ms or batch not in self.original.latency_ms:
            return math.nan
        return self.original.latency_ms[batch] / it.latency_ms[batch]


# --------------------------------------------------------------------------------------------- helpers

def classifier(model: nn.Module) -> nn.Module:
    """The layer that produces the logits: the last convolution or linear layer in module order."""
    last = None
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last = module
    if last is None:
        raise ValueError("model has no convolution or linear layer")
    return last


def prunable_groups(model: nn.Module, example: torch.Tensor) -> list[channels.ChannelGroup]:
    """The channel groups D-Pruner and the baseline prune (the classifier's outputs excluded); a ValueError
    when there is none (e.g. an MLP)."""
    groups = channels.channel_groups(model, example, ignored=[classifier(model)])
    if not groups:
        raise ValueError(f"model ({type(model).__name__}) has no convolution whose channels can be pruned "
                         f"(D-Pruner prunes convolution filters; an MLP has none)")
    return groups


def widths(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Filters per prunable group."""
    return {g.name: g.width for g in prunable_groups(model, example)}


def round_up(kept: int, multiple: int | None, width: int) -> int:
    """`kept` rounded up to a multiple of `multiple`, at most `width` (no rounding when `multiple` is None)."""
    if not multiple:
        return kept
    return min(width, -(-kept // multiple) * multiple)


def masked_count(width: int, ratio: float, round_to: int | None = None) -> int:
    """K, the filters a group's block zeroes per image: round(ratio × width), kept in [0, width − 1];
    with `round_to`, rounded up to a multiple of it and at most width − round_to (0 when width ≤ round_to)."""
    k = min(width - 1, max(0, round(ratio * width)))
    if round_to:
        k = min(-(-k // round_to) * round_to, width - round_to)
        k = max(k, 0)
    return k


def _check_common(accuracy_budget: float | None = None, round_to: int | None = None,
                  epochs: dict[str, int] | None = None) -> None:
    if accuracy_budget is not None and not (math.isfinite(accuracy_budget) and accuracy_budget >= 0):
        raise ValueError(f"accuracy_budget must be a finite accuracy drop ≥ 0 (a share: 0.01 = 1 point), "
                         f"got {accuracy_budget}")
    if round_to is not None and (not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1):
        raise ValueError(f"round_to must be None or a positive integer, got {round_to!r}")
    for name, value in (epochs or {}).items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer ≥ 0, got {value!r}")


def _check_splits(train: Data, val: Data, test: Data | None) -> None:
    """Train and val are required (x, y) pairs; test is optional."""
    _check_data("train", train)
    _check_data("val", val)
    _check_data("test", test, required=False)


def _check_data(name: str, data: Data | None, required: bool = True) -> None:
    if data is None and not required:
        return
    if not (isinstance(data, tuple) and len(data) == 2 and len(data[0]) == len(data[1]) and len(data[0]) > 0):
        raise ValueError(f"{name} must be a non-empty (x, y) pair of tensors of equal length")


def _latencies(model: nn.Module, input_shape: tuple[int, ...], min_run_time: float) -> dict[int, float]:
    if min_run_time <= 0:
        return {}
    cpu = copy.deepcopy(model).cpu().eval()
    return {b: measure(cpu, torch.zeros((b, *input_shape)), min_run_time=min_run_time).median_ms
            for b in LATENCY_BATCHES}


def _record(index: int, model: nn.Module, val: Data, test: Data | None, input_shape: tuple[int, ...],
            example: torch.Tensor, min_run_time: float, epochs: int, **extra) -> Iteration:
    return Iteration(
        index=index, model=model, accuracy=finetune.accuracy(model, *val),
        test_accuracy=finetune.accuracy(model, *test) if test is not None else None,
        params=count_params(model), macs=count_macs(model, input_shape), filters=widths(model, example),
        latency_ms=_latencies(model, input_shape, min_run_time), epochs=epochs, **extra)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _example(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    return x[:2].detach().clone().to(_device(model))


# ------------------------------------------------------------------------------------------ masking blocks

class MaskingBlock(nn.Module):
    """SE-like scorer of one channel group: GAP → dense → ReLU → dense → softmax; zeroes its K lowest filters.

    Forward multiplies a feature map by the mask of the current forward pass (computed from the first map
    it sees after `reset`, reused for the group's other producers). Straight-through: the value is the
    binary mask, the gradient flows as if it were width × softmax scores."""

    def __init__(self, width: int, k: int, reduction: int = 4):
        super().__init__()
        if not 0 <= k < width:
            raise ValueError(f"k must lie in [0, width - 1] = [0, {width - 1}], got {k}")
        hidden = max(4, width // reduction)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.width, self.k = width, k
        self.mask: torch.Tensor | None = None

    def reset(self) -> None:
        self.mask = None

    def scores(self, fmap: torch.Tensor) -> torch.Tensor:
        """Softmax scores (N, width) of a feature map (N, width, H, W)."""
        return F.softmax(self.fc2(F.relu(self.fc1(fmap.mean(dim=(2, 3))))), dim=1)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.mask is None or self.mask.shape[0] != fmap.shape[0]:
            s = self.scores(fmap)
            hard = torch.ones_like(s)
            if self.k:
                hard.scatter_(1, s.topk(self.k, dim=1, largest=False).indices, 0.0)
            self.mask = hard + self.width * (s - s.detach())
        return fmap * self.mask[:, :, None, None]


def _mask_sites(model: nn.Module, group: channels.ChannelGroup) -> list[nn.Module]:
    """Where a group's feature map is masked: the batch norm after each producer (or the producer itself)."""
    order = {m: i for i, m in enumerate(model.modules())}
    norms = sorted((layer for _, layer, _ in group.members if isinstance(layer, nn.modules.batchnorm._BatchNorm)),
                   key=order.__getitem__)
    producers = [conv for _, conv in group.producers]
    sites = []
    for conv in producers:
        after = [bn for bn in norms if order[bn] > order[conv]]
        later = [p for p in producers if order[p] > order[conv]]
        bn = after[0] if after else None
        if bn is not None and (not later or order[bn] < min(order[p] for p in later)):
            sites.append(bn)
        else:
            sites.append(conv)
    return sites


class MaskedNetwork(nn.Module):
    """A network P' with masking blocks hooked onto its channel groups (training-time only, not saved).

    `net` is the network itself (plain layers); `detach()` removes the hooks and returns it."""

    def __init__(self, net: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None = None,
                 reduction: int = 4):
        super().__init__()
        self.net = net
        self.names: list[str] = []
        self.blocks = nn.ModuleList()
        self._handles = []
        for group in prunable_groups(net, example):
            k = masked_count(group.width, ratio, round_to)
            if k == 0:
                continue
            block = MaskingBlock(group.width, k, reduction)
            self.names.append(group.name)
            self.blocks.append(block)
            for site in _mask_sites(net, group):
                self._handles.append(site.register_forward_hook(lambda _m, _i, out, b=block: b(out)))
        self.blocks.to(_device(net))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            block.reset()
        return self.net(x)

    def detach(self) -> nn.Module:
        """Remove the hooks; the plain network."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return self.net


@torch.no_grad()
def removal_probabilities(masked: MaskedNetwork, x: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per masked group: share of the images of `x` on which each filter is masked (in eval mode)."""
    masked.eval()
    counts = [torch.zeros(b.width) for b in masked.blocks]
    device = next(masked.parameters()).device
    for i in range(0, len(x), batch_size):
        masked(x[i:i + batch_size].to(device))
        for c, block in zip(counts, masked.blocks):
            c += (block.mask.detach() == 0).sum(dim=0).float().cpu()
    return {name: c / len(x) for name, c in zip(masked.names, counts)}


def removal_plan(probabilities: dict[str, torch.Tensor], threshold: float,
                 round_to: int | None = None) -> dict[str, list[int]]:
    """Filters to drop per group: those with removal probability ≥ `threshold`; with `round_to`, only as
    many of the most probable as leave a multiple of `round_to` (or the full width). At least one stays."""
    plan = {}
    for name, p in probabilities.items():
        width = len(p)
        candidates = int((p >= threshold).sum())
        kept = round_up(max(1, width - candidates), round_to, width)
        n_drop = width - kept
        if n_drop > 0:
            order = torch.argsort(p, descending=True, stable=True)
            plan[name] = sorted(order[:n_drop].tolist())
    return plan


# ------------------------------------------------------------------------------------------------ D-Pruner

def d_pruner(model: nn.Module, train: Data, val: Data, *, test: Data | None = None, ratio: float = 0.2,
             threshold: float = 0.95, accuracy_budget: float = 0.01, block_epochs: int = 1,
             net_epochs: int = 2, finetune_epochs: int = 2, max_iterations: int = 10,
             round_to: int | None = None, lr: float = 5e-4, batch_size: int = 64, seed: int = 0,
             latency_min_run_time: float = 0.2,
             on_iteration: Callable[[Iteration], None] | None = None) -> PruningResult:
    """Algorithm 2: prune `model` (left untouched) iteration by iteration while the validation accuracy
    stays within `accuracy_budget` of the original's. `ratio` is K as a share of each group's filters,
    `threshold` T. `latency_min_run_time` ≤ 0 skips the latency measurements."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ValueError(f"threshold must lie in the open interval (0, 1) (paper 0.95), got {threshold!r}")
    if not (isinstance(ratio, (int, float)) and 0 < ratio < 1):
        raise ValueError(f"ratio (K as a share of a group's filters) must lie in (0, 1), got {ratio!r}")
    _check_common(accuracy_budget, round_to, {"block_epochs": block_epochs, "net_epochs": net_epochs,
                                              "finetune_epochs": finetune_epochs, "max_iterations": max_iterations})
    _check_splits(train, val, test)
    x, y = train
    input_shape = tuple(x.shape[1:])
    example = _example(x, model)
    start = time.perf_counter()
    current = copy.deepcopy(model)
    prunable_groups(current, example)  # refuses a model with nothing to prune before any work
    original = _record(0, current, val, test, input_shape, example, latency_min_run_time, epochs=0,
                       seconds=time.perf_counter() - start)
    iterations = [original]
    if on_iteration:
        on_iteration(original)
    settings = dict(ratio=ratio, threshold=threshold, accuracy_budget=accuracy_budget, block_epochs=block_epochs,
                    net_epochs=net_epochs, finetune_epochs=finetune_epochs, max_iterations=max_iterations,
                    round_to=round_to, lr=lr, batch_size=batch_size, seed=seed)
    per_iteration = block_epochs + net_epochs + finetune_epochs
    stopped = f"reached max_iterations={max_iterations}"
    for index in range(1, max_iterations + 1):
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + index)
            masked = MaskedNetwork(copy.deepcopy(current), example, ratio, round_to)
        if not masked.blocks:
            stopped = "no group left to mask (every group at its smallest width)"
            break
        it_seed = seed + 1000 * index
        if block_epochs:
            finetune.fit(masked, x, y, epochs=block_epochs, lr=lr, batch_size=batch_size, seed=it_seed,
                         parameters=list(masked.blocks.parameters()))
        if net_epochs:
            finetune.fit(masked, x, y, epochs=net_epochs, lr=lr, batch_size=batch_size, seed=it_seed + 1)
        probs = removal_probabilities(masked, x)
        plan = removal_plan(probs, threshold, round_to)
        pruned = masked.detach()
        if not plan:
            stopped = f"no filter reached the removal threshold {threshold}"
            break
        channels.remove_channels(pruned, example, plan, ignored=[classifier(pruned)])
        if finetune_epochs:
            finetune.fit(pruned, x, y, epochs=finetune_epochs, lr=lr, batch_size=batch_size, seed=it_seed + 2)
        pruned.eval()
        record = _record(index, pruned, val, test, input_shape, example, latency_min_run_time,
                         epochs=iterations[-1].epochs + per_iteration, removed=plan,
                         probabilities={k: v.tolist() for k, v in probs.items()})
        record.accepted = original.accuracy - record.accuracy <= accuracy_budget + 1e-9  # 0.926 − 0.916 > 0.01
        record.seconds = time.perf_counter() - start
        iterations.append(record)
        if on_iteration:
            on_iteration(record)
        if not record.accepted:
            stopped = (f"accuracy drop {original.accuracy - record.accuracy:.4f} exceeded the budget "
                       f"{accuracy_budget} at iteration {index}")
            break
        current = pruned
    return PruningResult("d-pruner", iterations, settings, stopped)


# --------------------------------------------------------------------------------- magnitude baseline

def magnitude_prune(model: nn.Module, example: torch.Tensor, ratio: float, *, round_to: int | None = None,
                    global_pruning: bool = False) -> nn.Module:
    """A copy of `model` pruned one-shot by Torch-Pruning's ℓ1 magnitude pruner at channel `ratio`
    (uniform per group, or global), over the same groups as D-Pruner (convolution roots, classifier kept)."""
    import torch_pruning as tp

    if not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
        raise ValueError(f"ratio must lie in [0, 1), got {ratio!r}")
    _check_common(round_to=round_to)
    pruned = copy.deepcopy(model).eval()
    example = example.detach().to(_device(pruned))
    prunable_groups(pruned, example)
    if ratio == 0:
        return pruned
    pruner = tp.pruner.MetaPruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=1), global_pruning=global_pruning,
        pruning_ratio=float(ratio), ignored_layers=[classifier(pruned)], round_to=round_to,
        root_module_types=[nn.Conv2d])
    with torch.enable_grad():
        pruner.step()
    return pruned


@dataclass
class MacsMatch:
    """The magnitude-pruned copy whose MACs came closest to a target, and how it was pruned."""

    model: nn.Module
    ratio: float
    global_pruning: bool
    macs: int
    error: float  # (macs − target) / target


def match_macs(model: nn.Module, example: torch.Tensor, target_macs: int, *, round_to: int | None = None,
               global_pruning: bool | None = None, tolerance: float = 0.02, grid: int = 40, refine: int = 12,
               max_ratio: float = 0.9) -> MacsMatch:
    """The magnitude-pruned copy of `model` whose MACs come closest to `target_macs`: a grid of `grid` ratios
    in (0, `max_ratio`], then bisection between the grid points that bracket the target, until within
    `tolerance` (relative). MACs are not monotone in the ratio (Torch-Pruning leaves a group whole when
    rounding would empty it), hence the grid. `global_pruning=None` tries uniform ratios, then global
    ranking when uniform ones miss. With `round_to` MACs move in steps and the tolerance may be out of
    reach: check `error`."""
    if not (isinstance(target_macs, int) and target_macs > 0):
        raise ValueError(f"target_macs must be a positive integer, got {target_macs!r}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be ≥ 0, got {tolerance!r}")
    input_shape = tuple(example.shape[1:])
    best: MacsMatch | None = None

    def trial(ratio: float, mode: bool) -> int:
        nonlocal best
        pruned = magnitude_prune(model, example, ratio, round_to=round_to, global_pruning=mode)
        macs = count_macs(pruned, input_shape)
        error = (macs - target_macs) / target_macs
        if best is None or abs(error) < abs(best.error):
            best = MacsMatch(pruned, ratio, mode, macs, error)
        return macs

    for mode in ([False, True] if global_pruning is None else [bool(global_pruning)]):
        ratios = [max_ratio * (i + 1) / grid for i in range(grid)]
        macs = [trial(r, mode) for r in ratios]
        brackets = [(ratios[i], ratios[i + 1]) for i in range(grid - 1) if macs[i] > target_macs >= macs[i + 1]]
        for lo, hi in brackets:
            for _ in range(refine):
                if abs(best.error) <= tolerance:
                    break
                mid = (lo + hi) / 2
                if trial(mid, mode) > target_macs:
                    lo = mid
                else:
                    hi = mid
        if abs(best.error) <= tolerance:
            break
    return best


def magnitude_baseline(model: nn.Module, train: Data, val: Data, *, target_macs: int, epochs: int,
                       test: Data | None = None, round_to: int | None = None, global_pruning: bool | None = None,
                       tolerance: float = 0.02, lr: float = 5e-4, batch_size: int = 64, seed: int = 0,
                       latency_min_run_time: float = 0.2) -> PruningResult:
    """Torch-Pruning ℓ1 at `target_macs` (see `match_macs`), fine-tuned `epochs`; iterations: original, pruned."""
    _check_common(round_to=round_to, epochs={"epochs": epochs})
    _check_splits(train, val, test)
    x, y = train
    input_shape = tuple(x.shape[1:])
    example = _example(x, model)
    start = time.perf_counter()
    current = copy.deepcopy(model).eval()
    original = _record(0, current, val, test, input_shape, example, latency_min_run_time, epochs=0)
    original.seconds = time.perf_counter() - start
    start = time.perf_counter()
    match = match_macs(current, example, target_macs, round_to=round_to, global_pruning=global_pruning,
                       tolerance=tolerance)
    pruned = match.model
    if epochs:
        finetune.fit(pruned, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    pruned.eval()
    before = widths(current, example)
    record = _record(1, pruned, val, test, input_shape, example, latency_min_run_time, epochs=epochs)
    record.accepted = True
    record.seconds = time.perf_counter() - start
    settings = dict(target_macs=target_macs, ratio=match.ratio, epochs=epochs, round_to=round_to,
                    global_pruning=match.global_pruning, tolerance=tolerance, lr=lr, batch_size=batch_size, seed=seed,
                    macs_error=match.error,
                    removed_filters={k: before[k] - record.filters.get(k, 0) for k in before})
    return PruningResult("magnitude", [original, record], settings, "one shot")


def magnitude_like(result: PruningResult, iteration: Iteration, train: Data, val: Data, *,
                   test: Data | None = None, round_to: int | None = None, **kwargs) -> PruningResult:
    """The magnitude baseline at the MACs of a D-Pruner `iteration` of `result`, fine-tuned for as many
    epochs as that iteration received since the original."""
    return magnitude_baseline(result.original.model, train, val, target_macs=iteration.macs,
                              epochs=iteration.epochs, test=test, round_to=round_to, **kwargs)


__all__ = ["Iteration", "PruningResult", "MaskingBlock", "MaskedNetwork", "classifier", "prunable_groups",
           "widths", "round_up", "masked_count", "removal_probabilities", "removal_plan", "d_pruner",
           "magnitude_prune", "MacsMatch", "match_macs", "magnitude_baseline", "magnitude_like"]
