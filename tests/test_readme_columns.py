"""The README's artifact table promises the columns of the tables whose suites fix them: each list it
prints is the suite's own (qoeflow/validate.py), so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qoeflow import validate

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("path, columns", [("data/models/catalog.csv", validate.MODEL_CATALOG_COLUMNS),
                                           ("data/bench/bench.csv", validate.BENCH_COLUMNS),
                                           ("data/bench/caching.csv", validate.CACHING_COLUMNS),
                                           ("data/video/ingest.csv", validate.VIDEO_INGEST_COLUMNS),
                                           ("data/video/queries.csv", validate.VIDEO_QUERY_COLUMNS)])
def test_the_readme_lists_each_tables_columns_as_its_suite_does(path, columns):
    row = next(line for line in README.splitlines() if line.startswith(f"| `{path}`"))
    listed = re.match(r"\| `[^`]+`(?:, `[^`]+`)* \| `([a-z0-9_,]+)`", row)
    assert listed and listed.group(1).split(",") == columns
