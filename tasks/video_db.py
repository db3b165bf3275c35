"""The video index: one DuckDB file (stage `video`), readable with plain SQL.

Tables (schema ``SCHEMA_VERSION``):

- ``meta(key, value)``: the schema version, the GT-CNN's and the multi-exit network's catalog variants and
  model files, the crop size;
- ``clips(clip, frames, height, width, objects, detect_seconds)``;
- ``objects(clip, object_id, frame, x, y, w, h)``: every detected object, its box in pixels;
- ``ingests``: ingest.csv's row of each clip and indexed method (its exits, k′, #indexing, clusters, seconds)
  and, for the multi-exit method, the query-time exit thresholds (JSON);
- ``clusters(clip, method, cluster_id, centroid, size, crop)``: each cluster's centroid object and its crop
  (size×size grey levels, bytes), so that a query needs neither the video nor the cheap model;
- ``class_clusters(clip, method, class, cluster_id)``: the index, class → clusters;
- ``members(clip, method, cluster_id, object_id)``.

Every stage's catalog reads this module (the index's schema is checked where it is loaded), so it holds the
schema and plain SQL only; queries that run models live with the stage (tasks/video.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
TABLES: dict[str, str] = {
    "meta": "key VARCHAR PRIMARY KEY, value VARCHAR",
    "clips": "clip VARCHAR PRIMARY KEY, frames INTEGER, height INTEGER, width INTEGER, objects INTEGER, "
             "detect_seconds DOUBLE",
    "objects": "clip VARCHAR, object_id INTEGER, frame INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER, "
               "PRIMARY KEY (clip, object_id)",
    "ingests": "clip VARCHAR, method VARCHAR, frames INTEGER, objects INTEGER, sample_objects INTEGER, exits VARCHAR, "
               "k INTEGER, sample_recall DOUBLE, labels_per_object DOUBLE, macs_per_object BIGINT, indexed INTEGER, "
               "clusters INTEGER, detect_seconds DOUBLE, model_seconds DOUBLE, cluster_seconds DOUBLE, "
               "ingest_seconds_per_frame DOUBLE, thresholds VARCHAR, PRIMARY KEY (clip, method)",
    "clusters": "clip VARCHAR, method VARCHAR, cluster_id INTEGER, centroid INTEGER, size INTEGER, crop BLOB, "
                "PRIMARY KEY (clip, method, cluster_id)",
    "class_clusters": "clip VARCHAR, method VARCHAR, class INTEGER, cluster_id INTEGER",
    "members": "clip VARCHAR, method VARCHAR, cluster_id INTEGER, object_id INTEGER",
}
REBUILD = "run `qoeflow stage video` (or `dvc repro video`) to build it"


class VideoIndexError(ValueError):
    """The index file is missing, unreadable or of another schema; the message names the file and the fix."""


def create(path: Path, meta: dict[str, Any]):
    """A new index at ``path`` (a new file) with every table and the meta rows; the open connection."""
    import duckdb

    conn = duckdb.connect(str(path))
    for name, columns in TABLES.items():
        conn.execute(f"CREATE TABLE {name} ({columns})")
    rows = {"schema_version": SCHEMA_VERSION, **meta}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in rows.items()])
    return conn


def insert(conn, table: str, frame) -> None:
    """Append a DataFrame's rows (columns in the table's order) to ``table``."""
    if len(frame):
        conn.register("incoming", frame)
        conn.execute(f"INSERT INTO {table} SELECT * FROM incoming")
        conn.unregister("incoming")


def open_index(path: Path):
    """A read-only connection to the index at ``path``, its schema checked; VideoIndexError naming the file otherwise."""
    import duckdb

    path = Path(path)
    if not path.is_file():
        raise VideoIndexError(f"video index {path} does not exist; {REBUILD}")
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise VideoIndexError(f"video index {path} cannot be opened, truncated or corrupt ({str(exc)[:160]}); "
                          f"{REBUILD}") from None
    try:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        version = dict(conn.execute("SELECT key, value FROM meta").fetchall()).get("schema_version") \
            if "meta" in tables else None
    except duckdb.Error as exc:
        conn.close()
        raise VideoIndexError(f"video index {path} cannot be read ({str(exc)[:160]}); {REBUILD}") from None
    if version != str(SCHEMA_VERSION) or not set(TABLES) <= tables:
        conn.close()
        raise VideoIndexError(f"video index {path} has schema {version or 'unknown'} (tables: {', '.join(sorted(tables))}),"
                          f" this qoeflow reads schema {SCHEMA_VERSION}; {REBUILD}")
    return conn


def meta(conn) -> dict[str, str]:
    """The index's meta rows: key → value."""
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def clip_names(conn) -> list[str]:
    """The clips of the index, by name."""
    return [r[0] for r in conn.execute("SELECT clip FROM clips ORDER BY clip").fetchall()]


def ground_truth_variants(conn) -> list[str]:
    """The catalog variants of the GT-CNN the index was built with."""
    return json.loads(meta(conn)["ground_truth_variants"])  # catalog-ok: a JSON column of the index, not a file


def thresholds(conn, clip: str) -> list[float] | None:
    """The multi-exit method's query-time exit thresholds for ``clip``."""
    row = conn.execute("SELECT thresholds FROM ingests WHERE clip = ? AND method = 'multi-exit'", [clip]).fetchone()
    return json.loads(row[0]) if row and row[0] else None  # catalog-ok: a JSON column of the index, not a file
