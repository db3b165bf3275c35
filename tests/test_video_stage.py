"""The video stage of the smoke run: its DuckDB index holds the clip's objects, clusters and class map and answers
plain SQL; the query workload's table; `qoeflow video query` answers from the index alone; and a missing,
truncated or older index, an unknown class or clip are refused with what to run."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from conftest import SMOKE, qoeflow

INDEX = "data/smoke/video/index.duckdb"


@pytest.fixture(scope="module")
def project(smoke_project):
    return smoke_project[0]


def test_the_index_holds_the_clip_and_answers_sql(project):
    import duckdb

    with duckdb.connect(str(project / INDEX), read_only=True) as conn:
        clips = conn.execute("SELECT clip, frames, objects FROM clips").fetchall()
        assert clips == [("tiny", 120, conn.execute("SELECT count(*) FROM objects").fetchone()[0])]
        for method, indexed, clusters in conn.execute("SELECT method, indexed, clusters FROM ingests").fetchall():
            assert method in ("focus", "multi-exit")
            assert conn.execute("SELECT count(*) FROM class_clusters WHERE method = ?", [method]).fetchone()[0] == clusters
            assert conn.execute("SELECT count(*) FROM members m JOIN objects o USING (clip, object_id) "
                                "WHERE method = ?", [method]).fetchone()[0] == indexed
            # every cluster's centroid is one of its members, and its crop is a 32×32 grey image
            assert conn.execute("SELECT count(*) FROM clusters c WHERE method = ? AND NOT EXISTS (SELECT 1 FROM "
                                "members m WHERE m.clip = c.clip AND m.method = c.method AND m.cluster_id = c.cluster_id"
                                " AND m.object_id = c.centroid)", [method]).fetchone()[0] == 0
            assert {len(r[0]) for r in conn.execute("SELECT crop FROM clusters WHERE method = ?", [method]).fetchall()} \
                <= {32 * 32}


def test_the_workload_covers_every_class_and_method(project):
    from tasks.catalog import kind_of

    queries = kind_of("video_queries").load(project / "data/smoke/video/queries.csv", "queries.csv")
    assert len(queries) == 10 * 3 and set(queries["method"]) == {"brute-force", "focus", "multi-exit"}
    brute = queries[queries["method"] == "brute-force"]
    assert (brute["precision"] == 1).all() and (brute["recall"] == 1).all()  # the reference is brute force
    ingest = kind_of("video_ingest").load(project / "data/smoke/video/ingest.csv", "ingest.csv")
    assert set(ingest["method"]) == {"focus", "multi-exit"} and (ingest["k"] >= 1).all()
    assert (ingest.loc[ingest["method"] == "focus", "exits"].astype(str).str.count(r"\+") == 0).all()  # one exit


def test_query_answers_from_the_index_as_the_stage_did(project):
    queries = pd.read_csv(project / "data/smoke/video/queries.csv")
    row = queries[queries["method"] == "multi-exit"].sort_values("frames_returned").iloc[-1]
    result = qoeflow("video", "query", "--class", str(row["class"]), "--clip", "tiny", *SMOKE, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(t for t in result.stdout.splitlines() if "tiny" in t)
    assert line.split("│")[2].strip() == str(row["frames_returned"])


def test_bad_queries_are_refused_with_what_to_run(project, tmp_path):
    import duckdb

    from tasks.catalog import kind_of
    from tasks.context import StageError
    from tasks.video import query_command
    from tasks.video_db import VideoIndexError

    missing = qoeflow("video", "query", "--class", "1", "--index", str(tmp_path / "none.duckdb"), *SMOKE, cwd=project)
    assert missing.returncode == 2 and "does not exist" in missing.stdout + missing.stderr
    assert "qoeflow stage video" in missing.stdout + missing.stderr
    catalog_path = project / "data/smoke/models/catalog.csv"
    catalog = kind_of("model_catalog").load(catalog_path, "catalog.csv", root=project)

    def query(index, label=1, clip=None):
        return query_command(index, catalog, catalog_path, project, label, clip, "multi-exit")

    truncated = tmp_path / "truncated.duckdb"
    truncated.write_bytes((project / INDEX).read_bytes()[:5000])
    with pytest.raises(VideoIndexError, match=f"{truncated}.*qoeflow stage video"):
        query(truncated)
    old = tmp_path / "old.duckdb"
    shutil.copy(project / INDEX, old)
    with duckdb.connect(str(old)) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(VideoIndexError, match=r"has schema 0 .*qoeflow stage video"):
        query(old)
    with pytest.raises(StageError, match="0-9"):
        query(project / INDEX, label=12)
    with pytest.raises(StageError, match=r"no clip 'nope' \(clips: tiny\)"):
        query(project / INDEX, clip="nope")


def test_the_gt_cnn_is_the_most_accurate_variants_and_the_report_names_them(project):
    import duckdb

    from tasks.catalog import kind_of
    from tasks.video_db import ground_truth_variants

    with duckdb.connect(str(project / INDEX), read_only=True) as conn:
        gt = ground_truth_variants(conn)
    catalog = kind_of("model_catalog").load(project / "data/smoke/models/catalog.csv", "catalog.csv", root=project)
    candidates = catalog[(catalog["family"] == "sprites") & ~catalog["method"].isin(["exit", "early-exit", "dms"])]
    ranked = candidates.sort_values("accuracy", ascending=False, kind="stable")["variant"].tolist()
    assert gt and gt == ranked[:len(gt)]  # a leading run of the most accurate (its length chosen on validation)
    page = (project / "data/smoke/report/index.html").read_text()
    assert f"The GT-CNN averages {len(gt)} variant" in page and ", ".join(gt) in page
