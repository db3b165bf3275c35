"""A multi-exit network's exits as models of their own, for the model catalog: one exit alone (the
shared layers up to it and its head, nothing after), and the early-exit policy (every exit, with the
calibrated thresholds that decide where each input stops)."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from qoeflow.lifecycle.multiexit import MultiExitNet
from qoeflow.models.arch import composite


@composite
class ExitModel(nn.Module):
    """Exit `index` of a multi-exit network: a copy cut after that exit's stage, with only that exit's head
    (the other heads never run on this path: placeholders keep the indices)."""

    ARCH_ATTRS = ("index",)

    def __init__(self, net: MultiExitNet, index: int):
        super().__init__()
        if not 0 <= index < net.n_exits:
            raise ValueError(f"exit index must lie in [0, {net.n_exits - 1}], got {index}")
        cut = copy.deepcopy(net)
        cut.stages = nn.ModuleList(list(cut.stages)[: net.depths[index] + 1])
        cut.heads = nn.ModuleList([nn.Identity() for _ in range(index)] + [cut.heads[index]])
        cut.mixers = nn.ModuleList(list(cut.mixers)[:index])
        cut.depths = tuple(net.depths[: index + 1])
        self.net, self.index = cut, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.exit_logits(x, self.index)


@composite
class EarlyExitModel(nn.Module):
    """The early-exit policy: each input answers at its first exit whose confidence passes its threshold."""

    ARCH_ATTRS = ("thresholds",)

    def __init__(self, net: MultiExitNet, thresholds: Sequence[float]):
        super().__init__()
        if len(thresholds) != net.n_exits:
            raise ValueError(f"one threshold per exit ({net.n_exits}) required, got {len(thresholds)}")
        self.net, self.thresholds = copy.deepcopy(net), [float(t) for t in thresholds]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.early_exit(x, self.thresholds)[0]
