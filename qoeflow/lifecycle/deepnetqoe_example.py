"""The paper's worked example (§IV-B, Table II, Fig. 4): four crowd-counting models to train.

Table II gives, per model trained for 1,000 epochs on UCF-QNRF: the best MAE and MSE, the total
training time TrainT (hours, for the 1,000 epochs), the test time per image TestT (seconds) and
the model loading time LoadT (seconds). The paper does not publish the learning curves or its
normalising parameters, so this example states its own assumptions:

- candidate epoch counts 500 (the base every job gets) .. 1,000 (the maximum), step 1;
- training seconds grow linearly: cost(e) = e * TrainT * 3600 / 1000;
- MAE and MSE follow a pow3 learning curve m(e) = m_1000 * (1 + g * ((e / 1000)^-1 - 1)), which
  reaches Table II's value at 1,000 epochs and is (1 + g) times worse at 500 epochs; g = 10 % for
  BL, MCNN and SANet (which keep improving, Fig. 1) and 2 % for VGG16-Decoder (whose follow-up
  training "is meaningless", Fig. 1);
- factors e = exp(-x / scale) with scale = the median of x over the four models (all candidate
  epochs for MAE, MSE and training seconds), as ``qoe.default_scales`` proposes;
- weights: a preset of the paper (w1, w2, w3) or explicit QoE weights.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from qoeflow.lifecycle.allocation import JobTable, base_cost
from qoeflow.lifecycle.qoe import QoEModel, QoEWeights, default_scales

# name: (MAE, MSE, TrainT [h for 1,000 epochs], TestT [s per image], LoadT [s])
TABLE_II: dict[str, tuple[float, float, float, float, float]] = {
    "BL": (89.38, 161.67, 14.0, 0.2335, 15.0),
    "MCNN": (185.86, 287.15, 30.0, 0.3353, 17.0),
    "SANet": (129.91, 217.39, 50.0, 0.8294, 16.0),
    "VGG16-Decoder": (145.97, 247.94, 35.0, 0.6647, 18.0),
}
GAIN_500_TO_1000 = {"BL": 0.10, "MCNN": 0.10, "SANet": 0.10, "VGG16-Decoder": 0.02}
BASE_EPOCHS, MAX_EPOCHS = 500, 1000


def metric_curve(final: float, gain: float, epochs: np.ndarray) -> np.ndarray:
    """pow3 curve equal to `final` at 1,000 epochs and final * (1 + gain) at 500 epochs."""
    return final * (1.0 + gain * (MAX_EPOCHS / np.asarray(epochs, float) - 1.0))


def deepnetqoe_example(weights: str | Mapping[str, float] = "w1") -> tuple[list[JobTable], dict]:
    """The four Table II jobs as JobTables of predicted E_all, and meta (model, costs, budgets)."""
    w = QoEWeights.preset(weights) if isinstance(weights, str) else QoEWeights(weights)
    epochs = np.arange(BASE_EPOCHS, MAX_EPOCHS + 1)
    rows = {}
    for name, (mae, mse, train_h, test_s, load_s) in TABLE_II.items():
        g = GAIN_500_TO_1000[name]
        rows[name] = {
            "mae": metric_curve(mae, g, epochs),
            "mse": metric_curve(mse, g, epochs),
            "train_s": epochs * train_h * 3600.0 / MAX_EPOCHS,
            "load_s": load_s,
            "test_s": test_s,
        }
    scales = default_scales(
        {m: np.concatenate([r[m] for r in rows.values()]) for m in ("mae", "mse")},
        np.concatenate([r["train_s"] for r in rows.values()]),
        np.array([r["load_s"] for r in rows.values()]),
        np.array([r["test_s"] for r in rows.values()]),
    )
    model = QoEModel(w, scales)
    tables = [
        JobTable(name, epochs, r["train_s"], model.score({"mae": r["mae"], "mse": r["mse"]}, r["train_s"],
                                                         r["load_s"], r["test_s"]))
        for name, r in rows.items()
    ]
    lo, hi = base_cost(tables), float(sum(t.cost_seconds[-1] for t in tables))
    meta = {
        "weights": dict(w.weights),
        "scales": scales,
        "model": model,
        "base_cost_s": lo,
        "max_cost_s": hi,
        "budgets_s": np.linspace(lo, hi, 8),
        "table_ii": dict(TABLE_II),
        "gain_500_to_1000": dict(GAIN_500_TO_1000),
    }
    return tables, meta
