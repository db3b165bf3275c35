"""DMS, dynamic model scaling (paper 002, §III-B, Algorithm 1, Fig. 6–7, Eq. 2).

Off-line, every channel group's filters are reordered by decreasing ℓ1 norm, every consumer permuted to
match (`channels.sort_by_l1`): the network computes the same function. At run time a group runs only its
first ⌈s·n⌉ (≥ 1) of n output channels, and every consumer reads only those: the weight tensors and the
batch-norm vectors are sliced (views, as in Fig. 6, where sub-matrices of the im2col GEMM are used),
the model's tensors are neither copied nor changed, and the level is an argument, never module state:
tasks at different levels share one model, concurrently.

The DMS table (Fig. 7) lists (group, factor) entries in ascending order of sensitivity; DMS level k
scales the first k entries. Eq. (2) predicts the cost of a level:

    C_scaled = Σ_{i≤k} s_{i−1}·s_i·C_i + Σ_{i>k} C_i,

generalised here to any graph of channel groups: every convolution's cost C is scaled by the factor of
the group feeding its input times the factor of the group it produces (1 for an unscaled group or the
network's input); a linear layer's cost by its input group's factor.

Where the paper is vague, and what we chose:

- "Layer" is a channel group (channels.py): the outputs of convolutions that meet at a residual addition
  move together, so all of a group's producers are scaled together. The output layer's channels (e.g.
  ALL-CNN's class convolution) are the classes: channels.py leaves them out, and a group that no layer
  reads is never scaled.
- Factors are the ratio actually run: a nominal s becomes ⌈s·n⌉/n (s·n rounded to 9 decimals first, so
  that a stored k/n gives back k). Eq. (2) uses these effective factors, so it equals the counted MACs.
- "Each layer in the table yields equal amount of savings": every entry's *marginal* saving (the MACs
  its level saves over the level before it, by Eq. 2) is made as close as channel granularity allows to
  one target Δ, so that cost falls linearly with the level (Fig. 5). Δ is either given as a share of the
  full model's MACs (`saving`), or derived from the paper's base factor 0.7 (`base_factor`): the median,
  over groups, of the MACs a group saves when it alone runs at that factor. A factor never goes below
  `min_factor` (default 0.5: Fig. 3 shows accuracy falling fast beyond half the filters) and always drops
  at least one channel; where Δ cannot be reached at `min_factor` the entry saves less (its `saving`
  says how much). Groups of one channel, or where `min_factor` keeps every channel, are left out.
- Sensitivity (the table's order) is the validation-accuracy drop when the group alone runs at the factor
  that saves Δ on its own (`probe_factor`). The entry's final factor is then set for the marginal saving
  given the entries before it; it differs from the probe only where the group neighbours an earlier entry.
- Views reach the kernels, but a convolution whose input channels are cut gets a non-contiguous weight,
  and PyTorch's CPU convolution makes it contiguous inside the call (aten::contiguous, a copy of the
  active k_out·k_in·kh·kw weights, small against the convolution itself); the paper's strided GEMM
  avoids even that. The model's tensors are never copied or changed.
- Scaled runs are for inference: batch norm normalises with its running statistics in eval mode and with
  the batch's statistics in training mode, but never updates the running statistics. Level 0 is the base
  network's own forward.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qoeflow.lifecycle import channels
from qoeflow.lifecycle.channels import ChannelGroup
from qoeflow.models.arch import composite
from qoeflow.models.digits import BasicBlock

Ties = Mapping[str, Sequence[str]]  # group name -> names of every convolution producing its channels

STATELESS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity,
             nn.Dropout)
SUPPORTED = ("Sequential", "Conv2d", "BatchNorm2d", "ReLU", "Linear", "BasicBlock",
             *(t.__name__ for t in STATELESS))


def active_channels(width: int, factor: float) -> int:
    """Channels run of a `width`-channel group at `factor`: ⌈factor·width⌉, at least 1."""
    _check_factor("factor", factor)
    return max(1, math.ceil(round(factor * width, 9)))


def _check_factor(what: str, factor: float) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ValueError(f"{what} must be a number in (0, 1], got {factor!r}")


def check_supported(model: nn.Module) -> None:
    """Raise ValueError unless `model` has a convolution and only layer types the scaled forward runs."""
    convs = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            convs += 1
            if module.groups != 1:
                raise ValueError(f"layer '{name}': grouped convolutions (groups={module.groups}) are not supported")
        elif not isinstance(module, (nn.Sequential, nn.BatchNorm2d, nn.ReLU, nn.Linear, BasicBlock, *STATELESS)):
            raise ValueError(f"layer '{name or '<model>'}' ({type(module).__name__}) is not supported by DMS "
                             f"(supported: {', '.join(SUPPORTED)})")
    if convs == 0:
        raise ValueError(f"model ({type(model).__name__}) has no Conv2d: DMS scales convolution filters")


# ---- off-line reorder ---------------------------------------------------------------------------


def scalable_groups(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups DMS may scale: every group whose channels some layer reads (not the output's)."""
    check_supported(model)
    return [g for g in channels.channel_groups(model, example) if any(s == "in" for _, _, s in g.members)]


def reorder(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    """DMS's off-line step, in place: every group's filters by decreasing ℓ1 norm, consumers permuted to
    match (`channels.sort_by_l1`; the network computes the same function). Returns the scalable groups."""
    check_supported(model)
    return [g for g in channels.sort_by_l1(model, example) if any(s == "in" for _, _, s in g.members)]


def group_ties(groups: Sequence[ChannelGroup]) -> dict[str, tuple[str, ...]]:
    """Group name -> names of all its producer convolutions (scaled together)."""
    return {g.name: tuple(name for name, _ in g.producers) for g in groups}


# ---- run-time scaling by slicing ----------------------------------------------------------------


def _out_scales(scales: Mapping[str, float], ties: Ties) -> dict[str, float]:
    out = {}
    for group, factor in scales.items():
        if group not in ties:
            raise ValueError(f"scales: unknown channel group '{group}' (known: {', '.join(ties) or 'none'})")
        _check_factor(f"scale of group '{group}'", factor)
        for producer in ties[group]:
            out[producer] = factor
    return out


def _run(module: nn.Module, x: torch.Tensor, name: str, out: Mapping[str, float]) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError(f"layer '{name}': grouped convolutions are not supported")
        factor = out.get(name)
        k_out = module.out_channels if factor is None else active_channels(module.out_channels, factor)
        k_in = x.shape[1]
        weight = module.weight
        if k_out != weight.shape[0] or k_in != weight.shape[1]:
            weight = weight[:k_out, :k_in]
        bias = None if module.bias is None else module.bias[:k_out]
        return module._conv_forward(x, weight, bias)
    if isinstance(module, nn.BatchNorm2d):
        k = x.shape[1]
        batch_stats = module.training or module.running_mean is None
        mean = None if batch_stats else module.running_mean[:k]
        var = None if batch_stats else module.running_var[:k]
        weight = None if module.weight is None else module.weight[:k]
        bias = None if module.bias is None else module.bias[:k]
        return F.batch_norm(x, mean, var, weight, bias, batch_stats, 0.0, module.eps)
    if isinstance(module, nn.ReLU):
        return F.relu(x)  # never in place: the input may be the caller's tensor
    if isinstance(module, nn.Linear):
        k = x.shape[-1]
        weight = module.weight if k == module.in_features else module.weight[:, :k]
        return F.linear(x, weight, module.bias)
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            x = _run(child, x, f"{name}.{child_name}" if name else child_name, out)
        return x
    if isinstance(module, BasicBlock):
        prefix = f"{name}." if name else ""
        return F.relu(_run(module.body, x, prefix + "body", out) + _run(module.shortcut, x, prefix + "shortcut", out))
    if isinstance(module, STATELESS):
        return module(x)
    raise ValueError(f"layer '{name or '<model>'}' ({type(module).__name__}) is not supported by the scaled "
                     f"forward (supported: {', '.join(SUPPORTED)})")


def scaled_forward(model: nn.Module, x: torch.Tensor, scales: Mapping[str, float], ties: Ties) -> torch.Tensor:
    """`model(x)` with every group in `scales` (group name -> factor in (0, 1]) running only its first
    ⌈s·n⌉ output channels, on all its producers (`ties`, from `group_ties`), and its consumers reading only
    those; other groups at full width. Slices weights (views), never changes the model: thread-safe."""
    return _run(model, x, "", _out_scales(scales, ties))


# ---- Eq. (2): predicted cost ------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCost:
    """One convolution or linear layer: MACs of one sample at full width, and the groups at its ends."""

    name: str
    kind: str  # "conv" | "linear"
    macs: int
    in_group: str | None
    out_group: str | None


@dataclass(frozen=True)
class CostModel:
    """Eq. (2), generalised: per-layer MACs scaled by the effective factors of their input and output groups."""

    layers: tuple[LayerCost, ...]
    widths: Mapping[str, int]  # channels of every group

    def factor(self, group: str | None, scales: Mapping[str, float]) -> float:
        """Effective factor ⌈s·n⌉/n of `group` (1 when unscaled or None)."""
        if group is None or group not in scales:
            return 1.0
        return active_channels(self.widths[group], scales[group]) / self.widths[group]

    def conv_macs(self, scales: Mapping[str, float]) -> int:
        """Eq. (2): Σ over convolutions of s_in·s_out·C."""
        return round(sum(l.macs * self.factor(l.in_group, scales) * self.factor(l.out_group, scales)
                         for l in self.layers if l.kind == "conv"))

    def linear_macs(self, scales: Mapping[str, float]) -> int:
        """Σ over linear layers of s_in·C (their outputs are never scaled)."""
        return round(sum(l.macs * self.factor(l.in_group, scales) for l in self.layers if l.kind == "linear"))

    def macs(self, scales: Mapping[str, float]) -> int:
        """Predicted MACs of one sample: convolutions (Eq. 2) plus linear layers."""
        return self.conv_macs(scales) + self.linear_macs(scales)


def cost_model(model: nn.Module, input_shape: Sequence[int], groups: Sequence[ChannelGroup]) -> CostModel:
    """Per-layer full-width MACs of `model` on one sample of `input_shape` (measured by forward hooks),
    and which of `groups` feeds and produces each layer."""
    check_supported(model)
    out_group = {name: g.name for g in groups for name, _ in g.producers}
    in_group = {name: g.name for g in groups for name, _, side in g.members if side == "in"}
    macs: dict[str, tuple[str, int]] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
                macs[name] = ("conv", output[0].numel() * per_output)
            else:
                macs[name] = ("linear", output[0].numel() * module.in_features)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    layers = tuple(LayerCost(name, kind, m, in_group.get(name), out_group.get(name))
                   for name, (kind, m) in macs.items())
    return CostModel(layers, {g.name: g.width for g in groups})


# ---- the DMS table (Fig. 7) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One row of the DMS table."""

    group: str
    factor: float  # ratio of active channels, active / width
    active: int
    width: int
    sensitivity: float  # validation-accuracy drop with this group alone at probe_factor
    probe_factor: float
    saving: int  # MACs this entry's level saves over the level before it (Eq. 2)


@dataclass(frozen=True)
class DMSTable:
    """Entries in ascending sensitivity; level k scales the first k of them."""

    entries: tuple[Entry, ...]
    ties: dict[str, tuple[str, ...]]
    costs: CostModel
    base_accuracy: float
    target_saving: float  # Δ, MACs per entry

    def scales(self, level: int) -> dict[str, float]:
        """Group -> factor of DMS level `level` (0 = full network)."""
        _check_level(level, len(self.entries))
        return {e.group: e.factor for e in self.entries[:level]}


def _check_level(level: int, levels: int) -> None:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= levels:
        raise ValueError(f"level must be an integer in 0..{levels} (the DMS table has {levels} entries), got {level!r}")


def _is_reordered(group: ChannelGroup) -> bool:
    norms = group.l1_norms()
    return bool((norms[:-1] >= norms[1:]).all())


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scales: Mapping[str, float], ties: Ties,
              batch_size: int = 512) -> float:
    device = next(model.parameters()).device
    right = 0
    for i in range(0, len(x), batch_size):
        out = scaled_forward(model, x[i:i + batch_size].to(device), scales, ties)
        right += int((out.argmax(dim=1).cpu() == y[i:i + batch_size]).sum())
    return right / len(x)


def _allowed(width: int, k_min: int, round_to: int | None) -> list[int]:
    """Active-channel counts a group of `width` may take: [k_min, width−1], multiples of `round_to` if given."""
    return [k for k in range(width - 1, k_min - 1, -1) if round_to is None or k % round_to == 0]


def _closest(costs: CostModel, scales: dict[str, float], group: str, allowed: Sequence[int],
             target: float) -> tuple[int, int]:
    """The active-channel count of `group` among `allowed` (descending) whose saving over `scales` is
    closest to `target` (ties: the gentler), and that saving."""
    width = costs.widths[group]
    before = costs.macs(scales)
    best = None
    for k in allowed:
        saving = before - costs.macs({**scales, group: k / width})
        if best is None or abs(saving - target) < abs(best[1] - target):
            best = (k, saving)
    return best


def build_table(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, *, saving: float | None = None,
                base_factor: float = 0.7, min_factor: float = 0.5, round_to: int | None = None) -> DMSTable:
    """The DMS table of a reordered `model` (see `reorder`) from validation data. Each entry saves about
    Δ MACs over the level before it: Δ = `saving` × full MACs, or, without `saving`, the median over groups
    of what a group alone saves at `base_factor`. Factors stay in [`min_factor`, 1) and drop ≥ 1 channel;
    with `round_to`, active channels are multiples of it (CPU convolution kernels work in blocks of 8 or
    16 channels: other counts waste much of a MACs cut), and groups with no such count are left whole."""
    for what, value in (("base_factor", base_factor), ("min_factor", min_factor)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"{what} must be a number in (0, 1), got {value!r}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to must be a positive integer or None, got {round_to!r}")
    if saving is not None and (isinstance(saving, bool) or not isinstance(saving, (int, float)) or not 0 < saving < 1):
        raise ValueError(f"saving must be a share of the model's MACs in (0, 1) or None, got {saving!r}")
    if len(x_val) == 0 or len(x_val) != len(y_val):
        raise ValueError(f"x_val and y_val must be non-empty and of equal length, got {len(x_val)} and {len(y_val)}")
    check_supported(model)
    device = next(model.parameters()).device
    example = x_val[:1].to(device)
    groups = scalable_groups(model, example)
    unordered = [g.name for g in groups if not _is_reordered(g)]
    if unordered:
        raise ValueError(f"model is not reordered (groups {unordered} are not in decreasing ℓ1 order): "
                         f"call reorder(model, example) first")
    ties = group_ties(groups)
    costs = cost_model(model, tuple(x_val.shape[1:]), groups)
    full = costs.macs({})
    allowed = {g.name: _allowed(g.width, active_channels(g.width, min_factor), round_to) for g in groups}
    candidates = [g.name for g in groups if allowed[g.name]]
    if not candidates:
        rounded = f" and round_to={round_to}" if round_to else ""
        raise ValueError(f"no channel group can be scaled at min_factor={min_factor}{rounded} (every group would "
                         f"keep all its channels)")
    if saving is not None:
        target = saving * full
    else:
        target = statistics.median(full - costs.macs({g: active_channels(costs.widths[g], base_factor)
                                                      / costs.widths[g]}) for g in candidates)
    was_training = model.training
    model.eval()
    try:
        base = _accuracy(model, x_val, y_val, {}, ties)
        probes, drops = {}, {}
        for g in candidates:
            k, _ = _closest(costs, {}, g, allowed[g], target)
            probes[g] = k / costs.widths[g]
            drops[g] = base - _accuracy(model, x_val, y_val, {g: probes[g]}, ties)
    finally:
        model.train(was_training)
    order = sorted(candidates, key=lambda g: drops[g])  # stable: ties keep the model's order
    entries, scales = [], {}
    for g in order:
        k, gain = _closest(costs, scales, g, allowed[g], target)
        width = costs.widths[g]
        scales[g] = k / width
        entries.append(Entry(g, k / width, k, width, drops[g], probes[g], gain))
    return DMSTable(tuple(entries), {g: ties[g] for g in order}, costs, base, float(target))


# ---- the scalable network ---------------------------------------------------------------------------


@composite
class DMSNet(nn.Module):
    """A reordered network with its DMS table; `forward(x, level)` runs DMS level `level` (0 = the
    network itself). Levels are arguments, never state: tasks at different levels may share one DMSNet."""

    ARCH_ATTRS = ("table", "ties")

    def __init__(self, net: nn.Module, table: DMSTable | Sequence[tuple[str, float]], ties: Ties | None = None):
        super().__init__()
        check_supported(net)
        if isinstance(table, DMSTable):
            ties = table.ties
            table = [(e.group, e.factor) for e in table.entries]
        if ties is None:
            raise ValueError("ties must be given with a table of (group, factor) pairs")
        self.net = net
        self.train(net.training)  # the wrapper takes the network's mode
        self.table = [[str(group), float(factor)] for group, factor in table]
        self.ties = [[group, list(ties[group])] for group, _ in self.table if group in ties]
        known = {group for group, _ in self.ties}
        for group, factor in self.table:
            if group not in known:
                raise ValueError(f"table: group '{group}' has no entry in ties")
            _check_factor(f"table factor of group '{group}'", factor)

    @property
    def levels(self) -> int:
        """The highest DMS level (the number of table entries)."""
        return len(self.table)

    def scales(self, level: int) -> dict[str, float]:
        """Group -> factor at DMS level `level`."""
        _check_level(level, len(self.table))
        return {group: factor for group, factor in self.table[:level]}

    def forward(self, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        scales = self.scales(level)
        if not scales:
            return self.net(x)
        return scaled_forward(self.net, x, scales, {group: producers for group, producers in self.ties})


@composite
class DMSLevel(nn.Module):
    """One DMS level of a shared DMSNet as a model of its own (`forward(x)` runs `net` at `level`): what a
    catalog row of that level loads. Wrapping copies nothing: every level may wrap the same DMSNet."""

    ARCH_ATTRS = ("level",)

    def __init__(self, net: DMSNet, level: int):
        super().__init__()
        _check_level(level, net.levels)
        self.net, self.level = net, int(level)
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.level)


def make_dms(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, *, saving: float | None = None,
             base_factor: float = 0.7, min_factor: float = 0.5, round_to: int | None = None
             ) -> tuple[DMSNet, DMSTable]:
    """A DMSNet from a copy of `model` (left as it is): reorder, then build the table on validation data."""
    check_supported(model)
    net = copy.deepcopy(model)
    reorder(net, x_val[:1].to(next(net.parameters()).device))
    table = build_table(net, x_val, y_val, saving=saving, base_factor=base_factor, min_factor=min_factor,
                        round_to=round_to)
    return DMSNet(net, table), table


# ---- cost of every level ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelCost:
    """Predicted (Eq. 2) and counted MACs of one sample at one DMS level, and latencies when measured."""

    level: int
    predicted_conv_macs: int  # Eq. (2)
    predicted_macs: int  # Eq. (2) plus linear layers
    counted_macs: int  # count_macs of the level's forward
    latency_ms: dict[int, float] | None  # batch size -> median milliseconds
    device: str | None


def level_costs(net: DMSNet, input_shape: Sequence[int], *, latency: bool = False,
                batch_sizes: Sequence[int] = (1, 64), min_run_time: float = 0.2) -> list[LevelCost]:
    """Every level of `net`: Eq. (2)'s prediction, counted MACs and, with `latency`, the median latency
    at each of `batch_sizes` (`latency.measure`, with torch's current thread count)."""
    from qoeflow.models.latency import measure
    from qoeflow.models.macs import count_macs

    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    param = next(net.parameters())
    groups = scalable_groups(net.net, torch.zeros((1, *input_shape), device=param.device))
    costs = cost_model(net.net, input_shape, groups)
    was_training = net.training
    net.eval()
    out = []
    try:
        for level in range(net.levels + 1):
            scales = net.scales(level)
            counted = count_macs(net, tuple(input_shape), forward=lambda x, level=level: net(x, level))
            times, device = None, None
            if latency:
                times = {}
                for b in batch_sizes:
                    m = measure(lambda x, level=level: net(x, level),
                                torch.randn((b, *input_shape), device=param.device), min_run_time=min_run_time)
                    times[b], device = m.median_ms, m.device
            out.append(LevelCost(level, costs.conv_macs(scales), costs.macs(scales), counted, times, device))
    finally:
        net.train(was_training)
    return out
