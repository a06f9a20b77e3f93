"""The database wrapper and the migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import text

from backend.db import Database, migrate
from backend.db.models import Base


def test_migrations_match_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert migrate.current_revision(db) == migrate.head_revision(db)


def test_upgrade_is_idempotent(db: Database) -> None:
    migrate.upgrade(db)
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.head_revision(db)


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()
