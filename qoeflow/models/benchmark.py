"""The inference benchmark of a model catalog: every variant at every precision and batch size on one
device (qoeflow/models/harness.py), as one table with each family's Pareto front of batch-1 latency
against accuracy marked. Shared by the `bench` stage and `qoeflow bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from qoeflow.models import harness
from qoeflow.models.arch import read_model
from qoeflow.validate import BENCH_COLUMNS

Data = tuple[torch.Tensor, torch.Tensor]


def bench_catalog(catalog: pd.DataFrame, root: Path, test_data: Callable[[str], Data], *, device: torch.device,
                  precisions: list[str], batches: list[int], min_run_time: float,
                  progress: Callable[[int, int, str], None] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The benchmark table of `catalog`'s variants (model files under `root`; `test_data(family)` gives a
    family's test split) and the precisions that failed, as messages."""
    rows, failures = [], []
    for i, row in enumerate(catalog.itertuples()):
        if progress:
            progress(i, len(catalog), str(row.variant))
        model, _ = read_model(Path(root) / str(row.path))
        x, y = test_data(str(row.family))
        for r in harness.measure_model(model, precisions, device, batches, x, y, min_run_time=min_run_time):
            error = r.pop("error")
            if error:
                failures.append(f"{row.variant} at {r['precision']}: {error}")
                continue
            rows.append({"variant": row.variant, "family": row.family, "method": row.method, "macs": row.macs, **r})
    if progress:
        progress(len(catalog), len(catalog), "done")
    table = pd.DataFrame(rows, columns=[c for c in BENCH_COLUMNS if c != "pareto"])
    return with_pareto(table)[BENCH_COLUMNS], failures


def with_pareto(table: pd.DataFrame, batch: int | None = None) -> pd.DataFrame:
    """`table` with column `pareto`: per device and family, the rows at `batch` (default: the smallest
    measured) that no other row beats on median latency and accuracy."""
    out = table.copy()
    out["pareto"] = False
    if out.empty:
        return out
    batch = int(out["batch"].min()) if batch is None else batch
    for _, group in out[out["batch"] == batch].groupby(["device", "family"]):
        front = harness.pareto_front(group["p50_ms"].tolist(), group["accuracy"].tolist())
        out.loc[group.index, "pareto"] = front
    return out
