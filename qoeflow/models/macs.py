"""Model size and cost: parameter count and multiply-accumulates (MACs) of one forward pass.

MACs are counted by PyTorch's own `torch.utils.flop_counter.FlopCounterMode` (convolutions, transposed
convolutions and matrix products; one MAC = two FLOPs), so that any forward pass is counted the same
way: a module, a sliced run-time-scaled forward (DMS), a factorised or a multi-exit network.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...],
               forward: Callable[[torch.Tensor], object] | None = None) -> int:
    """MACs of one sample of ``input_shape`` (without batch dim) through ``model`` in eval mode, or through
    ``forward(x)`` when given (for forwards that take more than the input, e.g. a DMS level)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            (forward or model)(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)
