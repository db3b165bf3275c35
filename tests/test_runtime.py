"""The run's services start fast: a project's first Prefect server starts from the machine's empty,
migrated template database instead of migrating its own; a user's database is never touched."""

from __future__ import annotations

import sqlite3

from flows.runtime import _keep_template, _seed_database, _template_path


def _database(path, rows: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table alembic_version (version_num text)")
        db.executemany("insert into alembic_version values (?)", [(f"v{i}",) for i in range(rows)])


def test_the_first_migrated_database_becomes_the_template_for_new_projects(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    assert not _seed_database(first, env), "no template yet: the first project migrates its own"
    _database(first / "prefect.db", 3)
    _keep_template(first, env)
    template = _template_path(env)
    assert template.is_file() and template.parent == tmp_path / "cache" / "qoeflow"
    assert _seed_database(second, env)
    with sqlite3.connect(second / "prefect.db") as db:
        assert db.execute("select count(*) from alembic_version").fetchone() == (3,)
    _database(tmp_path / "other.db", 9)
    (second / "prefect.db").write_bytes((tmp_path / "other.db").read_bytes())
    assert not _seed_database(second, env), "an existing project database is kept"
    _keep_template(second, env)
    with sqlite3.connect(template) as db:
        assert db.execute("select count(*) from alembic_version").fetchone() == (3,), "the template is kept once"


def test_a_database_of_the_users_choosing_is_left_alone(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db/prefect"}
    assert _template_path(env) is None
    assert not _seed_database(tmp_path, env)
