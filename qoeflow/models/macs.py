"""Model size and cost: parameter count and multiply-accumulates (MACs) of one forward pass."""

from __future__ import annotations

import math

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def _layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """MACs of one Conv2d / ConvTranspose2d / Linear call, per sample (biases not counted)."""
    batch = inputs[0].shape[0] if inputs[0].dim() > 1 else 1
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return output.numel() // batch * per_output
    if isinstance(module, nn.ConvTranspose2d):
        per_input = (module.out_channels // module.groups) * math.prod(module.kernel_size)
        return inputs[0].numel() // batch * per_input
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    return 0


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of ``model`` on one input of ``input_shape`` (without batch dim), via forward hooks on
    Conv2d (groups, dilation and stride included through the output size), ConvTranspose2d and Linear."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, inputs, output)

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return int(total)
