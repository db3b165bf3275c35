"""Channel groups: the output channels of a network that must move together, found once by
Torch-Pruning's dependency graph, and the three things done to them — rank, reorder, remove.

A group is rooted at a convolution's output channels and holds every layer those channels reach: the
batch norms after it, the next layers' input channels and, in a ResNet, every convolution whose output
meets it at a residual addition (they are pruned or reordered together). DMS reorders groups by ℓ1
norm; D-Pruner and the magnitude baseline remove channels of groups. Layers named in `ignored` (for
example a classifier) keep their output channels; by default the network's output layer is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn


@dataclass
class ChannelGroup:
    """One group of coupled channels of `model`."""

    producers: list[tuple[str, nn.Conv2d]]  # convolutions whose output channels these are
    members: list[tuple[str, nn.Module, str]]  # (name, layer, "out" | "in") for every layer they touch
    width: int

    @property
    def name(self) -> str:
        """The group's name: its first producer's."""
        return self.producers[0][0]

    def l1_norms(self) -> torch.Tensor:
        """Importance of each channel: ℓ1 norm of its filters, summed over the group's producers."""
        return sum(conv.weight.detach().abs().flatten(1).sum(dim=1) for _, conv in self.producers)


def _graph(model: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    finally:
        model.train(was_training)


def _handler_side(handler) -> str:
    name = getattr(handler, "__name__", type(handler).__name__)
    return "in" if "in_channels" in name else "out"


def output_layer(model: nn.Module) -> nn.Module:
    """The layer that produces the network's outputs (the last convolution or linear layer): its output
    channels are the classes, never pruned."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError(f"a {type(model).__name__} with no convolution or linear layer has no channels to group")
    return layers[-1]


def _ignored(model: nn.Module, ignored: Iterable[nn.Module] | None) -> list[nn.Module]:
    return [output_layer(model)] if ignored is None else list(ignored)


def channel_groups(model: nn.Module, example: torch.Tensor,
                   ignored: Iterable[nn.Module] | None = None) -> list[ChannelGroup]:
    """The groups of coupled convolution output channels of `model`, in the order their first producer
    appears in the model; `example` is one input batch; `ignored` defaults to the output layer."""
    ignored = _ignored(model, ignored)
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    graph = _graph(model, example)
    groups = []
    for group in graph.get_all_groups(root_module_types=[nn.Conv2d], ignored_layers=list(ignored)):
        members, producers, width = [], [], 0
        for dep, idxs in group:
            layer = dep.target.module
            if layer not in names:
                continue  # an operation (add, relu, reshape), not a layer
            side = _handler_side(dep.handler)
            members.append((names[layer], layer, side))
            if side == "out" and isinstance(layer, nn.Conv2d):
                producers.append((names[layer], layer))
                width = len(idxs)
        if producers:
            producers.sort(key=lambda p: order[p[0]])
            groups.append(ChannelGroup(producers, members, width))
    return sorted(groups, key=lambda g: order[g.name])


def _take(tensor: torch.Tensor | None, dim: int, order: torch.Tensor) -> None:
    if tensor is not None:
        tensor.data = tensor.data.index_select(dim, order).contiguous()


@torch.no_grad()
def permute(group: ChannelGroup, order: torch.Tensor) -> None:
    """Reorder the group's channels in place so that new channel i is old channel `order[i]`, in every
    member layer: the network computes the same function."""
    order = torch.as_tensor(order, dtype=torch.long)
    if sorted(order.tolist()) != list(range(group.width)):
        raise ValueError(f"group '{group.name}': order must be a permutation of 0..{group.width - 1}")
    for name, layer, side in group.members:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if side == "out":
                _take(layer.weight, 0, order)
                _take(layer.bias, 0, order)
            elif getattr(layer, "groups", 1) == 1:
                if layer.weight.shape[1] != group.width:
                    raise NotImplementedError(f"layer '{name}' reads {layer.weight.shape[1]} features from a "
                                              f"{group.width}-channel group (flattened maps are not supported)")
                _take(layer.weight, 1, order)
            else:
                raise NotImplementedError(f"layer '{name}': grouped convolutions are not supported")
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            for tensor in (layer.weight, layer.bias, layer.running_mean, layer.running_var):
                _take(tensor, 0, order)
        else:
            raise NotImplementedError(f"layer '{name}' ({type(layer).__name__}) cannot be reordered")


def sort_by_l1(model: nn.Module, example: torch.Tensor, ignored: Iterable[nn.Module] | None = None) -> list[ChannelGroup]:
    """Reorder every group's channels by decreasing ℓ1 norm (DMS's off-line step); returns the groups."""
    groups = channel_groups(model, example, ignored)
    for group in groups:
        permute(group, torch.argsort(group.l1_norms(), descending=True, stable=True))
    return groups


def remove_channels(model: nn.Module, example: torch.Tensor, plan: dict[str, list[int]],
                    ignored: Iterable[nn.Module] | None = None) -> nn.Module:
    """Physically remove channels, in place: `plan` maps a group's name (its first producer) to the
    channel indices to drop. Every member layer shrinks with it. Returns `model`."""
    import torch_pruning as tp

    names = dict(model.named_modules())
    unknown = sorted(set(plan) - {g.name for g in channel_groups(model, example, ignored)})
    if unknown:
        raise ValueError(f"no channel group named {unknown}")
    graph = _graph(model, example)
    protected = set(_ignored(model, ignored))
    for name, drop in plan.items():
        conv = names[name]
        if conv in protected:
            raise ValueError(f"group '{name}' is the output layer or ignored; its channels cannot be removed")
        drop = sorted(set(int(i) for i in drop))
        if not drop:
            continue
        if len(drop) >= conv.out_channels or min(drop) < 0 or max(drop) >= conv.out_channels:
            raise ValueError(f"group '{name}': cannot drop {len(drop)} of {conv.out_channels} channels "
                             f"(indices must lie in 0..{conv.out_channels - 1} and keep at least one)")
        graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()
    return model
