"""The model catalog as a user meets it: list the variants a run produced and load one as a ready module.

The catalog (`data/models/catalog.csv`, written by the `multiexit` stage from its own variants and the
`compress` stage's) has one row per variant; its `path` column names the variant's model file from the
project root. Model files hold an architecture description and a state dict (qoeflow/models/arch.py), so
loading never unpickles code.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch import nn

from qoeflow.models.arch import ModelFileError, read_model

DEFAULT_CATALOG = Path("data/models/catalog.csv")


def read_catalog(catalog: Path = DEFAULT_CATALOG) -> pd.DataFrame:
    """The catalog's rows; a clear error when there is none yet."""
    catalog = Path(catalog)
    if not catalog.is_file():
        raise FileNotFoundError(f"{catalog}: no model catalog yet; run the DAG through its `multiexit` stage "
                                f"(qoeflow run, or dvc repro)")
    return pd.read_csv(catalog)


def load_variant(variant: str, catalog: Path = DEFAULT_CATALOG, root: Path | None = None) -> nn.Module:
    """The catalog's `variant` as a module in eval mode on the CPU (model paths are relative to `root`,
    by default the folder holding `data/`)."""
    catalog = Path(catalog)
    rows = read_catalog(catalog)
    match = rows[rows["variant"] == variant]
    if match.empty:
        raise KeyError(f"no variant '{variant}' in {catalog} (it has: {', '.join(rows['variant'])})")
    root = Path(root) if root is not None else _project_root(catalog)
    path = root / str(match.iloc[0]["path"])
    if not path.is_file():
        raise ModelFileError(f"{catalog}: the model file of variant '{variant}' is missing: {path}")
    model, _ = read_model(path)
    return model


def _project_root(catalog: Path) -> Path:
    """The folder above the `data/` folder that holds the catalog (the current folder when there is none)."""
    for parent in catalog.resolve().parents:
        if parent.name == "data":
            return parent.parent
    return Path.cwd()
