"""The model zoo: digit classifiers and crowd-density regressors, MAC and parameter counting."""

from __future__ import annotations

from torch import nn

from qoeflow.families import FAMILIES, family
from qoeflow.models.macs import count_macs, count_params

_BUILDERS = {name: f.builders() for name, f in FAMILIES.items()}
MODELS: dict[str, tuple[str, ...]] = {task: tuple(builders) for task, builders in _BUILDERS.items()}


def _check_task(task: str) -> None:
    family(task)


def input_shape(task: str, size: int | None = None) -> tuple[int, int, int]:
    """Shape of one input of ``task`` (no batch dim): (1, size, size) for digits, (3, size, size) for crowd."""
    _check_task(task)
    size = family(task).default_size if size is None else size
    return (family(task).channels, size, size)


def build_model(task: str, name: str, size: int | None = None, **kwargs) -> nn.Module:
    """A fresh (randomly initialised from torch's global RNG) model ``name`` of ``task``.

    ``size`` is the input side (default 32 for digits, 64 for crowd); only the digits ``mlp`` depends
    on it, crowd models need it divisible by 8."""
    _check_task(task)
    if name not in _BUILDERS[task]:
        raise ValueError(f"unknown model '{name}' for task '{task}' (allowed: {', '.join(MODELS[task])})")
    size = family(task).default_size if size is None else size
    if task == "crowd" and size % 8:
        raise ValueError(f"crowd models need an input size divisible by 8, got {size}")
    return _BUILDERS[task][name](size=size, **kwargs)


def load_variant(variant: str, catalog=None, root=None) -> nn.Module:
    """A variant of the model catalog as a ready module (see qoeflow/models/variants.py)."""
    from qoeflow.models import variants

    return variants.load_variant(variant, catalog or variants.DEFAULT_CATALOG, root)


__all__ = ["MODELS", "build_model", "input_shape", "count_macs", "count_params", "load_variant"]
