"""The task families: one registry that every layer reads (params, validation, training, plots,
forecast bounds, the QoE model). Adding a family means adding one `Family` here, plus its data
generator and model zoo modules.

Importable without torch: loaders and model zoos are imported on first use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class Metric:
    """A validation metric of a family: its direction and the range its values take."""

    name: str
    higher_is_better: bool
    low: float = 0.0
    high: float = math.inf


@dataclass(frozen=True)
class Family:
    """A task family: its data (loader and settings), its model zoo, its metrics and its kind of loss.

    `kind` is "classification" (cross-entropy, accuracy/error from the arg-max) or "density"
    (summed squared error of a density map, count MAE/MSE from the map's sum); training implements both.
    """

    name: str
    description: str
    kind: str
    data: type[BaseModel]
    loader: Callable[[], Callable]  # returns the function that builds a Split from the data settings
    zoo: Callable[[], dict[str, Callable]]  # returns the model builders: name -> builder(size=...)
    models: tuple[str, ...]
    metrics: tuple[Metric, ...]
    channels: int
    default_size: int
    forecast_metrics: tuple[str, ...]  # default curves the forecaster predicts
    qoe_metrics: tuple[str, ...]  # default performance factors of the QoE model

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def load_split(self, **settings: Any):
        """The family's train/val/test split (imports torch)."""
        return self.loader()(**settings)

    def builders(self) -> dict[str, Callable]:
        """Model name -> builder (imports torch)."""
        return self.zoo()


# Loaders and zoos import torch: each is imported when first used, by a plain import statement (so that
# the stages' code dependencies, derived from imports, include them).
def _digits_loader() -> Callable:
    from qoeflow.data.digits import digits_split

    return digits_split


def _digits_zoo() -> dict[str, Callable]:
    from qoeflow.models.digits import BUILDERS

    return BUILDERS


def _crowd_loader() -> Callable:
    from qoeflow.data.crowd import crowd_split

    return crowd_split


def _crowd_zoo() -> dict[str, Callable]:
    from qoeflow.models.crowd import BUILDERS

    return BUILDERS


def _sprites_loader() -> Callable:
    from qoeflow.data.sprites import sprites_split

    return sprites_split


def _sprites_zoo() -> dict[str, Callable]:
    from qoeflow.models.digits import BUILDERS

    return BUILDERS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DigitsData(_Strict):
    size: int = Field(32, ge=8, le=128)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 0
    limit: int | None = Field(None, ge=50)


class CrowdData(_Strict):
    n_train: int = Field(256, ge=4)
    n_val: int = Field(64, ge=2)
    n_test: int = Field(64, ge=2)
    size: int = Field(64, ge=16, le=256)
    min_count: int = Field(5, ge=0)
    max_count: int = Field(60, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _counts(self) -> "CrowdData":
        if self.min_count > self.max_count:
            raise ValueError(f"min_count ({self.min_count}) must not exceed max_count ({self.max_count})")
        if self.size % 8:
            raise ValueError(f"size ({self.size}) must be a multiple of 8")
        return self


class SpritesData(_Strict):
    n_train: int = Field(4000, ge=10)
    n_val: int = Field(500, ge=10)
    n_test: int = Field(500, ge=10)
    size: int = Field(32, ge=8, le=128)
    seed: int = 0
    scale_min: float = Field(0.5, gt=0, le=1)  # digit side, as a share of the image side
    scale_max: float = Field(0.9, gt=0, le=1)
    contrast_min: float = Field(0.3, ge=0, le=1)  # |ink - mean background under it|
    contrast_max: float = Field(0.6, ge=0, le=1)
    noise: float = Field(0.04, ge=0, le=0.5)  # std of the Gaussian pixel noise
    texture: float = Field(0.2, ge=0, le=1)  # photo contrast kept around mid-grey (1: raw photo, 0: flat)
    max_zoom: float = Field(4.0, ge=1, le=13)  # largest photo crop, in image sides

    @model_validator(mode="after")
    def _ranges(self) -> "SpritesData":
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must not exceed scale_max ({self.scale_max})")
        if self.contrast_min > self.contrast_max:
            raise ValueError(f"contrast_min ({self.contrast_min}) must not exceed contrast_max ({self.contrast_max})")
        return self


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        name="digits", description="scikit-learn's bundled 8×8 handwritten digits, upscaled", kind="classification",
        data=DigitsData, loader=_digits_loader, zoo=_digits_zoo,
        models=("mlp", "vgg", "resnet", "allcnn"),
        metrics=(Metric("accuracy", True, 0.0, 1.0), Metric("error", False, 0.0, 1.0)),
        channels=1, default_size=32, forecast_metrics=("val_loss", "error"), qoe_metrics=("error",),
    ),
    Family(
        name="crowd", description="generated crowd-counting scenes over photo textures", kind="density",
        data=CrowdData, loader=_crowd_loader, zoo=_crowd_zoo,
        models=("mcnn", "csrnet", "vggdecoder", "resnet"),
        metrics=(Metric("mae", False), Metric("mse", False)),
        channels=3, default_size=64, forecast_metrics=("val_loss", "mae", "mse"), qoe_metrics=("mae", "mse"),
    ),
    Family(
        name="sprites", description="the digits at varied scale, contrast and position over photo crops, with noise",
        kind="classification", data=SpritesData, loader=_sprites_loader, zoo=_sprites_zoo,
        models=("mlp", "vgg", "resnet", "allcnn"),
        metrics=(Metric("accuracy", True, 0.0, 1.0), Metric("error", False, 0.0, 1.0)),
        channels=1, default_size=32, forecast_metrics=("val_loss", "error"), qoe_metrics=("error",),
    ),
)}
NAMES: tuple[str, ...] = tuple(FAMILIES)
LOSSES = (Metric("train_loss", False), Metric("val_loss", False))


def family(name: str) -> Family:
    """The family `name`; a clear error listing the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown task family '{name}' (allowed: {', '.join(NAMES)})")
    return FAMILIES[name]


def metrics_of(name: str) -> list[str]:
    """The metric columns of a family, in registry order."""
    return list(family(name).metric_names)


def all_metrics() -> dict[str, Metric]:
    """Every metric and loss by name (a metric shared by families must agree on its direction and range)."""
    found: dict[str, Metric] = {m.name: m for m in LOSSES}
    for f in FAMILIES.values():
        for m in f.metrics:
            if m.name in found and found[m.name] != m:
                raise ValueError(f"metric '{m.name}' is declared twice with different directions or ranges")
            found[m.name] = m
    return found


def metric_range(name: str) -> tuple[float, float]:
    """The range of a metric or loss; [0, inf) for names no family declares."""
    metric = all_metrics().get(name)
    return (metric.low, metric.high) if metric else (0.0, math.inf)


def higher_is_better() -> frozenset[str]:
    """Names of the metrics where higher is better."""
    return frozenset(name for name, m in all_metrics().items() if m.higher_is_better)
