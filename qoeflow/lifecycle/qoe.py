"""The DeepNetQoE experience model, Eq. (1): E_all = Σ_i ω_i · e_i, every factor e_i in (0, 1].

Factors (higher is better):

- performance, one per configured metric: a lower-is-better metric x (MAE, MSE, error, loss)
  maps to exp(-x / scale); a higher-is-better metric (accuracy, F1, ...; see
  ``HIGHER_IS_BETTER``) in [0, 1] is used as is (0 is lifted to the smallest positive float);
- ``train``: exp(-t_train / scale) of the training seconds spent to reach the epoch count;
- ``load``: exp(-t_load / scale) of the model loading seconds;
- ``test``: exp(-t_test / scale) of the test seconds per image.

The paper only says "a natural exponential with normalising parameters" that were tuned by hand.
Here every scale is explicit; ``default_scales`` proposes the median of each quantity across the
jobs (and epochs) being compared, so the median job scores e^-1 on every factor, a job twice as
slow or twice as wrong e^-2: factors of different units become comparable, and a model's score
does not depend on its units (seconds vs hours, MAE in heads vs thousands of heads).

The weights ω are user preferences (non-negative, summing to 1). ``PRESETS`` are the paper's
w1, w2, w3 over the factors (mae, mse, train, load, test) (§IV-B); ``QoEWeights.preset`` maps
the two performance slots onto other metrics, e.g. ``metrics=("error",)`` for digits puts
both performance weights on the error rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

TIME_FACTORS = ("train", "load", "test")
CROWD_FACTORS = ("mae", "mse", "train", "load", "test")
PRESETS: dict[str, list[float]] = {
    "w1": [0.1, 0.1, 0.5, 0.05, 0.25],
    "w2": [0.4, 0.4, 0.05, 0.03, 0.12],
    "w3": [0.3, 0.4, 0.01, 0.2, 0.09],
}
HIGHER_IS_BETTER = frozenset({"accuracy", "acc", "top1", "top5", "f1", "precision", "recall", "auc", "map"})
_TINY = np.finfo(float).tiny


@dataclass(frozen=True)
class QoEWeights:
    """Named, validated weights ω over factor names (time factors and metric names)."""

    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        w = {str(k): float(v) for k, v in dict(self.weights).items()}
        if not w:
            raise ValueError("QoE weights are empty: name at least one factor")
        bad = {k: v for k, v in w.items() if not np.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"QoE weights must be finite and non-negative; offending: {bad}")
        total = sum(w.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"QoE weights must sum to 1 (within 1e-6), they sum to {total:.9g}: {w}")
        object.__setattr__(self, "weights", w)

    @classmethod
    def preset(cls, name: str, metrics: Sequence[str] = ("mae", "mse")) -> "QoEWeights":
        """A paper preset; with two metrics slot i goes to metrics[i], else the performance weight is split evenly."""
        if name not in PRESETS:
            raise ValueError(f"unknown QoE weight preset {name!r} (allowed: {', '.join(PRESETS)})")
        return cls.from_slots(PRESETS[name], metrics)

    @classmethod
    def from_slots(cls, values: Sequence[float], metrics: Sequence[str] = ("mae", "mse")) -> "QoEWeights":
        """Weights from the paper's five slots [perf1, perf2, train, load, test] mapped onto `metrics`."""
        if len(values) != 5:
            raise ValueError(f"expected 5 weights (perf1, perf2, train, load, test), got {len(values)}")
        if not metrics or set(metrics) & set(TIME_FACTORS):
            raise ValueError(f"metrics must be non-empty metric names other than {TIME_FACTORS}, got {list(metrics)}")
        w: dict[str, float] = {}
        if len(metrics) == 2:
            pairs = list(zip(metrics, values[:2]))
        else:
            pairs = [(m, (values[0] + values[1]) / len(metrics)) for m in metrics]
        for m, v in pairs:
            w[m] = w.get(m, 0.0) + float(v)
        w.update(zip(TIME_FACTORS, map(float, values[2:])))
        return cls(w)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The performance factors (every name that is not a time factor)."""
        return tuple(k for k in self.weights if k not in TIME_FACTORS)


def exp_factor(x: np.ndarray | float, scale: float) -> np.ndarray:
    """exp(-x / scale) for x >= 0, kept in (0, 1]."""
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"a QoE scale must be a positive number, got {scale}")
    x = np.asarray(x, float)
    if np.any(~np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"QoE quantities must be finite and non-negative, got min {np.min(x) if x.size else x}")
    return np.maximum(np.exp(-x / scale), _TINY)


def default_scales(metrics: Mapping[str, np.ndarray], train_s: np.ndarray, load_s: np.ndarray,
                   test_s: np.ndarray) -> dict[str, float]:
    """Median of each quantity over everything passed (all jobs, all epochs); 1.0 where that is 0."""
    out = {}
    for name, x in [*metrics.items(), ("train", train_s), ("load", load_s), ("test", test_s)]:
        med = float(np.median(np.abs(np.asarray(x, float))))
        out[name] = med if np.isfinite(med) and med > 0 else 1.0
    return out


@dataclass(frozen=True)
class QoEModel:
    """Eq. (1) with explicit weights and normalising scales; vectorised over arrays (e.g. epochs)."""

    weights: QoEWeights | Mapping[str, float]
    scales: Mapping[str, float]
    higher_is_better: frozenset[str] = field(default=HIGHER_IS_BETTER)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, QoEWeights):
            object.__setattr__(self, "weights", QoEWeights(self.weights))
        need = [k for k in self.weights.weights if k not in self.higher_is_better]
        missing = [k for k in need if k not in self.scales]
        if missing:
            raise ValueError(f"QoE scales missing for factors {missing} (given: {sorted(self.scales)})")
        for k in need:
            exp_factor(0.0, float(self.scales[k]))  # validates the scale

    def factors(self, metrics: Mapping[str, np.ndarray | float], train_s: np.ndarray | float,
                load_s: np.ndarray | float, test_s: np.ndarray | float) -> dict[str, np.ndarray]:
        """Every weighted factor in (0, 1], broadcast to a common shape."""
        missing = [m for m in self.weights.metrics if m not in metrics]
        if missing:
            raise ValueError(f"metrics {missing} are weighted but not given (given: {sorted(metrics)})")
        out: dict[str, np.ndarray] = {}
        for m in self.weights.metrics:
            x = np.asarray(metrics[m], float)
            if m in self.higher_is_better:
                if np.any(~np.isfinite(x)) or np.any((x < 0) | (x > 1)):
                    raise ValueError(f"higher-is-better metric {m!r} must lie in [0, 1]")
                out[m] = np.maximum(x, _TINY)
            else:
                out[m] = exp_factor(x, float(self.scales[m]))
        for name, x in zip(TIME_FACTORS, (train_s, load_s, test_s)):
            if name in self.weights.weights:
                out[name] = exp_factor(x, float(self.scales[name]))
        arrays = np.broadcast_arrays(*out.values())
        return dict(zip(out, (np.array(a) for a in arrays)))

    def score(self, metrics: Mapping[str, np.ndarray | float], train_s: np.ndarray | float,
              load_s: np.ndarray | float, test_s: np.ndarray | float) -> np.ndarray | float:
        """E_all = Σ ω_i e_i; a float for scalar inputs, else an array."""
        f = self.factors(metrics, train_s, load_s, test_s)
        total = sum(self.weights.weights[k] * v for k, v in f.items())
        total = np.asarray(total, float)
        return float(total) if total.ndim == 0 else total
