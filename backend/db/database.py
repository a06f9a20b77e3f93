"""One wrapper around the SQLAlchemy engine with explicit read and write transactions.

SQLite allows one writer at a time; a deferred transaction that reads and then writes
fails with "database is locked" however long ``busy_timeout`` is, because SQLite cannot
upgrade the lock without risking a deadlock. So every *writing* transaction starts with
``BEGIN IMMEDIATE`` (taking the write lock up front and waiting for it politely), while
reads stay deferred and run beside the writer thanks to WAL. On PostgreSQL both are plain
READ COMMITTED transactions, where a waiting conditional UPDATE re-checks its WHERE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """The engine plus ``read()``/``write()`` session scopes."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.engine = create_engine(
                url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
            )
            _install_sqlite_hooks(self.engine)
        else:
            self.engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self._writer = self.engine.execution_options(studio_write=True)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session in a writing transaction, committed on success, rolled back on error."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; never commits.

        Closing (rather than rolling back) ends the transaction without expiring the
        loaded objects, so callers may use them after the block.
        """
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _install_sqlite_hooks(engine: Engine) -> None:
    # The recipe from SQLAlchemy's SQLite dialect docs: switch off pysqlite's own
    # transaction handling so that we decide how each transaction begins.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        mode = "IMMEDIATE" if conn.get_execution_options().get("studio_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")
