"""Reading and writing the shared artifacts, each checked by its Great Expectations suite both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from qoeflow import validate
from tasks.context import StageError


def _label(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def read_curves(path: Path, root: Path | None = None) -> pd.DataFrame:
    """`curves.csv`, validated."""
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise StageError(f"{_label(path, root)}: cannot read as CSV: {exc}") from None
    _check(validate.check_curves, df, path, root)
    return df


def write_curves(df: pd.DataFrame, tmp: Path, final: Path, root: Path | None = None) -> None:
    """Validate, then write `curves.csv` to its temporary path."""
    _check(validate.check_curves, df, final, root)
    df.to_csv(tmp, index=False)


def read_jobs(path: Path, root: Path | None = None) -> dict[str, Any]:
    """`jobs.json`, validated."""
    try:
        jobs = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageError(f"{_label(path, root)}: cannot read as JSON: {exc}") from None
    _check(validate.check_jobs, jobs, path, root)
    return jobs


def write_jobs(jobs: dict[str, Any], tmp: Path, final: Path, root: Path | None = None) -> None:
    """Validate, then write `jobs.json` to its temporary path."""
    _check(validate.check_jobs, jobs, final, root)
    tmp.write_text(json.dumps(jobs, indent=2, sort_keys=True) + "\n")


def _check(check, artifact: Any, path: Path, root: Path | None) -> None:
    try:
        check(artifact, _label(path, root))
    except validate.ArtifactError as exc:
        raise StageError(f"validation failed: {exc}") from None
