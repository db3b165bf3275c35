"""Models as data: an architecture description in plain JSON types plus a state dict.

Every saved model (base, pruned, sliced, factorised, multi-exit) is a file that loads with
`torch.load(..., weights_only=True)`: `{"format", "arch", "meta", "state"}` where `arch` is the JSON text
of `describe(model)`. Nothing is unpickled: `build(arch)` rebuilds the module tree from a fixed set of
torch layer types and from our own composite classes (registered with `@composite`), whose forward uses
only their children and the plain attributes they list in `ARCH_ATTRS`.
"""

from __future__ import annotations

import importlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Callable

from torch import nn

FORMAT = "qoeflow-model/1"


class ModelFileError(ValueError):
    """A model file that cannot be loaded: missing, truncated, corrupt, or not ours."""


def _conv_args(m: nn.Conv2d) -> dict:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
            "stride": list(m.stride), "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
            "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}


def _bn_args(m: nn.BatchNorm2d) -> dict:
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
            "track_running_stats": m.track_running_stats}


def _pool_args(m: nn.MaxPool2d | nn.AvgPool2d) -> dict:
    keys = ("kernel_size", "stride", "padding", "ceil_mode") + (("dilation",) if isinstance(m, nn.MaxPool2d) else ())
    return {k: getattr(m, k) for k in keys}


# type name -> (class, arguments of an instance); the arguments rebuild it with `cls(**args)`
LEAVES: dict[str, tuple[type[nn.Module], Callable[[Any], dict]]] = {
    "Conv2d": (nn.Conv2d, _conv_args),
    "ConvTranspose2d": (nn.ConvTranspose2d, lambda m: {**_conv_args(m), "output_padding": list(m.output_padding)}),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_args),
    "BatchNorm1d": (nn.BatchNorm1d, _bn_args),
    "Linear": (nn.Linear, lambda m: {"in_features": m.in_features, "out_features": m.out_features,
                                     "bias": m.bias is not None}),
    "ReLU": (nn.ReLU, lambda m: {"inplace": m.inplace}),
    "MaxPool2d": (nn.MaxPool2d, _pool_args),
    "AvgPool2d": (nn.AvgPool2d, _pool_args),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, lambda m: {"output_size": m.output_size}),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, lambda m: {"output_size": m.output_size}),
    "Flatten": (nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    "Identity": (nn.Identity, lambda m: {}),
    "Dropout": (nn.Dropout, lambda m: {"p": m.p}),
    "Upsample": (nn.Upsample, lambda m: {"scale_factor": m.scale_factor, "mode": m.mode}),
}
CONTAINERS: dict[str, type[nn.Module]] = {"Sequential": nn.Sequential, "ModuleList": nn.ModuleList,
                                          "ModuleDict": nn.ModuleDict}
COMPOSITES: dict[str, type[nn.Module]] = {}


def composite(cls: type[nn.Module]) -> type[nn.Module]:
    """Register a module class of ours as describable: rebuilt from its children and its `ARCH_ATTRS`."""
    COMPOSITES[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def describe(module: nn.Module) -> dict:
    """The architecture of ``module`` as plain JSON types (no weights)."""
    kind = type(module)
    name = kind.__name__
    if name in LEAVES and LEAVES[name][0] is kind:
        return {"type": name, "args": {k: _plain(v) for k, v in LEAVES[name][1](module).items()}}
    children = [[child_name, describe(child)] for child_name, child in module.named_children()]
    if name in CONTAINERS and CONTAINERS[name] is kind:
        return {"type": name, "children": children}
    key = f"{kind.__module__}.{kind.__qualname__}"
    if key not in COMPOSITES:
        raise TypeError(f"cannot describe a {key}: not a known layer type and not registered with @composite "
                        f"(qoeflow/models/arch.py)")
    attrs = {a: _plain(getattr(module, a)) for a in getattr(kind, "ARCH_ATTRS", ())}
    return {"type": key, "children": children, "attrs": attrs}


def _composite_class(key: str) -> type[nn.Module]:
    if key not in COMPOSITES:
        module_name = key.rsplit(".", 1)[0]
        if not module_name.startswith("qoeflow."):
            raise ModelFileError(f"unknown module type '{key}' (only qoeflow's own composites are rebuilt)")
        importlib.import_module(module_name)  # its @composite decorators register it
    if key not in COMPOSITES:
        raise ModelFileError(f"unknown module type '{key}'")
    return COMPOSITES[key]


def build(desc: dict) -> nn.Module:
    """A fresh module with the architecture ``desc`` (from `describe`); its weights are uninitialised noise."""
    kind = desc["type"]
    if kind in LEAVES:
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in desc["args"].items()}
        return LEAVES[kind][0](**args)
    children = [(name, build(child)) for name, child in desc.get("children", [])]
    if kind in CONTAINERS:
        container = CONTAINERS[kind]()
        for name, child in children:
            container.add_module(name, child)
        return container
    cls = _composite_class(kind)
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for name, child in children:
        module.add_module(name, child)
    for attr, value in desc.get("attrs", {}).items():
        setattr(module, attr, tuple(value) if isinstance(value, list) else value)
    return module


def to_bytes(model: nn.Module, meta: dict | None = None) -> bytes:
    """The file contents of ``model`` with its architecture and JSON ``meta``."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "arch": json.dumps(describe(model)), "meta": json.dumps(meta or {}),
                "state": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}, buffer)
    return buffer.getvalue()


def save_model(model: nn.Module, path: Path, meta: dict | None = None) -> int:
    """Write ``model`` to ``path`` (a new file); returns its size in bytes."""
    data = to_bytes(model, meta)
    Path(path).write_bytes(data)
    return len(data)


def read_model(path: Path) -> tuple[nn.Module, dict]:
    """The model saved at ``path`` (eval mode, CPU) and its meta; a clear `ModelFileError` when it cannot be."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a torch file (truncated or corrupt)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a qoeflow model file (no '{FORMAT}' format tag)")
    try:
        model = build(json.loads(saved["arch"]))
        model.load_state_dict(saved["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: architecture and weights do not match ({str(exc)[:200]})") from None
    return model.eval(), json.loads(saved["meta"])
