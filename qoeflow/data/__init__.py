"""Datasets as in-memory tensor splits: real digits (sklearn) and generated crowd-counting scenes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Split:
    """Train/val/test tensors of one task; ``counts`` holds integer crowd counts per part (crowd only)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    counts: dict[str, torch.Tensor] = field(default_factory=dict)

    def part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the part ``name`` ("train", "val" or "test")."""
        if name not in PARTS:
            raise ValueError(f"unknown part '{name}' (allowed: {', '.join(PARTS)})")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


PARTS = ("train", "val", "test")

def load_split(task: str, **kwargs) -> Split:
    """The split of the family ``task`` (see qoeflow.families), built with the loader's keyword arguments."""
    from qoeflow.families import family

    return family(task).load_split(**kwargs)


__all__ = ["Split", "PARTS", "load_split"]
