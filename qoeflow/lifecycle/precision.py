"""Greedy conversion of layers to a reduced number format (thesis 004 §2.5.4, Algorithm 1, as it was
meant): start with every layer in fp32; repeatedly convert the one layer whose conversion, on top of
those already converted, costs the least validation accuracy, while the total drop against fp32 stays
within the budget; stop when no remaining layer fits.

The printed algorithm never updates its loss and never stops when no layer fits; here the loss is the
measured drop of the whole partly converted network, and the loop ends when nothing fits. Accuracy effects
are simulated exactly on any device: a converted layer's weights, inputs and outputs are rounded to the
reduced format (`fp16`, `bf16`, or `fp32` with its mantissa truncated to a few bits, a harsh format that
tests the selection on models where every layer fits fp16).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

FORMATS = ("fp16", "bf16")  # and "mantissa-N": fp32 keeping N of its 23 mantissa bits


def rounder(fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function rounding a float32 tensor to `fmt` and back (fp16, bf16, or `mantissa-N`, 0 ≤ N ≤ 23,
    by truncation)."""
    if fmt == "fp16":
        return lambda x: x.to(torch.float16).to(x.dtype)
    if fmt == "bf16":
        return lambda x: x.to(torch.bfloat16).to(x.dtype)
    match = re.fullmatch(r"mantissa-(\d+)", str(fmt))
    if match and int(match.group(1)) <= 23:
        mask = -(1 << (23 - int(match.group(1))))  # keep the sign, exponent and the top N mantissa bits

        def truncate(x: torch.Tensor) -> torch.Tensor:
            return (x.float().contiguous().view(torch.int32) & mask).view(torch.float32).to(x.dtype)

        return truncate
    raise ValueError(f"unknown number format {fmt!r} (known: {', '.join(FORMATS)}, mantissa-N with 0 ≤ N ≤ 23)")


def convertible_layers(model: nn.Module) -> list[str]:
    """Names of the layers Algorithm 1 chooses among: convolutions and linear layers, in model order."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def converted(model: nn.Module, layers: Sequence[str], fmt: str) -> nn.Module:
    """A copy of `model` whose `layers` compute in `fmt`: weights rounded once, inputs and outputs rounded
    on every call (forward hooks); the rest stays fp32."""
    round_ = rounder(fmt)
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"no layer(s) {unknown} in the model (convertible: {', '.join(convertible_layers(model))})")
    for name in layers:
        layer = modules[name]
        with torch.no_grad():
            for p in layer.parameters(recurse=False):
                p.copy_(round_(p))
        layer.register_forward_pre_hook(lambda m, args: tuple(round_(a) if torch.is_tensor(a) else a for a in args))
        layer.register_forward_hook(lambda m, args, output: round_(output))
    return out


@dataclass(frozen=True)
class Step:
    """One conversion: the layer, the network's accuracy with it and every earlier one converted, the drop
    against fp32, and each candidate's drop at this step."""

    layer: str
    accuracy: float
    drop: float
    candidates: dict[str, float]


@dataclass(frozen=True)
class Conversion:
    """What Algorithm 1 chose: the fp32 accuracy, the steps in order, why it stopped."""

    budget: float
    base_accuracy: float
    steps: tuple[Step, ...]
    stopped: str

    @property
    def order(self) -> list[str]:
        return [s.layer for s in self.steps]


def greedy_conversion(layers: Sequence[str], evaluate: Callable[[frozenset[str]], float], budget: float
                      ) -> Conversion:
    """Algorithm 1 with its intent: `evaluate(converted layers)` is the validation accuracy of the network
    with those layers in the reduced format; `budget` is the largest total accuracy drop allowed (the
    paper's L, 0.05). Ties go to the earlier layer of `layers`."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget <= 1:
        raise ValueError(f"budget (accuracy loss L) must lie in [0, 1], got {budget!r}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {list(layers)}")
    base = evaluate(frozenset())
    done: list[str] = []
    steps: list[Step] = []
    remaining = list(layers)
    stopped = "every layer converted"
    while remaining:
        drops = {layer: base - evaluate(frozenset([*done, layer])) for layer in remaining}
        best = min(remaining, key=lambda layer: drops[layer])  # min keeps the first of equal drops
        if drops[best] > budget + 1e-12:
            stopped = f"no remaining layer fits the budget {budget} (the least drop would be {drops[best]:.4f})"
            break
        done.append(best)
        remaining.remove(best)
        steps.append(Step(best, base - drops[best], drops[best], drops))
    return Conversion(float(budget), base, tuple(steps), stopped)


__all__ = ["FORMATS", "rounder", "convertible_layers", "converted", "Step", "Conversion", "greedy_conversion"]
