"""Fine-tuning and scoring of classifiers on in-memory tensors: the one small loop that the compression
methods (D-Pruner, Tucker-2, the magnitude baseline) and multi-exit training share.

The loss is pluggable (`loss(model, x, y) -> scalar`) so that a multi-exit network (a weighted sum of its
exits' losses) or a masked network trains through the same loop. Deterministic from `seed`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
EVAL_BATCH = 512


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy of the model's logits."""
    return F.cross_entropy(model(x), y)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 1e-3,
        batch_size: int = 64, seed: int = 0, loss: Loss = cross_entropy, weight_decay: float = 0.0,
        parameters: list[nn.Parameter] | None = None,
        on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` (or only ``parameters``) with Adam for ``epochs`` over shuffled batches; returns the
    mean training loss of each epoch. Raises ``FloatingPointError`` when the loss turns NaN/inf."""
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs ≥ 0, batch_size ≥ 1 and lr > 0 required, got {epochs}, {batch_size}, {lr}")
    device = _device(model)
    optimizer = torch.optim.Adam(parameters if parameters is not None else model.parameters(), lr=lr,
                                 weight_decay=weight_decay)
    losses = []
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()  # every epoch: an `on_epoch` that scores the model leaves it in eval mode
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            value = loss(model, x[idx].to(device), y[idx].to(device))
            if not math.isfinite(value.item()):
                raise FloatingPointError(f"loss is {value.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += value.item() * len(idx)
        losses.append(total / max(len(x), 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
           batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Outputs of ``model`` (a module in eval mode, or any function of a batch) on ``x``, batch by batch, on the CPU."""
    if isinstance(model, nn.Module):
        model.eval()
        device = _device(model)
    else:
        device = torch.device("cpu")
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` whose arg-max output is the label ``y``."""
    return float((logits(model, x).argmax(dim=1) == y).double().mean()) if len(x) else math.nan
