"""One wrapper around the SQLAlchemy engine with explicit read and write transactions.

SQLite allows one writer at a time; a deferred transaction that reads and then writes
fails with "database is locked" however long ``busy_timeout`` is, because SQLite cannot
upgrade the lock without risking a deadlock. So every *writing* transaction starts with
``BEGIN IMMEDIATE`` (taking the write lock up front and waiting for it politely), while
reads stay deferred and run beside the writer thanks to WAL. On PostgreSQL both are plain
READ COMMITTED transactions, where a waiting conditional UPDATE re-checks its WHERE.

This is also the database's edge in the error tree: an error that means "the server is
away" (connection refused or dropped, a restart or failover, the pool exhausted, SQLite
busy or unable to open its file) leaves every ``read()``/``write()`` block as
:class:`~backend.errors.DatabaseUnavailable`, so callers retry it or tell a person to try
again in a moment; any other SQLAlchemy error (a constraint, a bug) passes unchanged.

Connections are checked with a ping when taken from the pool (``pool_pre_ping``): after
a restart of PostgreSQL every pooled connection is dead, and without the ping each of
them would fail one transaction before the pool noticed. The ping costs one round trip
per transaction (measured in docs/performance.md, "database reconnects").
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, cast

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import CursorResult, Result, make_url
from sqlalchemy.orm import Session

from ..errors import DatabaseUnavailable

log = logging.getLogger("backend.db.database.Database")

SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_SECONDS = 5
#: SQLite's OperationalErrors that mean "not now" rather than "wrong" (a missing table is
#: an OperationalError too, and retrying it would hide a bug).
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error", "unable to open database file",
                     "database or disk is full")


def is_unavailable(error: BaseException, *, sqlite: bool) -> bool:
    """Whether ``error`` means the database is away (retry later), not that the request is wrong."""
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return not sqlite or any(text in str(error.orig).lower() for text in _SQLITE_TRANSIENT)
    return False


class Database:
    """The engine plus ``read()``/``write()`` session scopes."""

    def __init__(self, url: str, *, echo: bool = False, pre_ping: bool = True) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        #: Where the database is, without credentials (for operators' logs).
        self.where = parsed.render_as_string(hide_password=True)
        if self.is_sqlite:
            self.engine = create_engine(
                url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
            )
            _install_sqlite_hooks(self.engine)
        else:
            # A bounded connect: a dead server must fail a request, not hang it.
            self.engine = create_engine(url, echo=echo, pool_pre_ping=pre_ping, pool_size=10, max_overflow=20, pool_timeout=10,
                                        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
        self._writer = self.engine.execution_options(studio_write=True)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session in a writing transaction, committed on success, rolled back on error."""
        with self._edge("write"), Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; never commits.

        Closing (rather than rolling back) ends the transaction without expiring the
        loaded objects, so callers may use them after the block.
        """
        with self._edge("read"), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextlib.contextmanager
    def _edge(self, what: str) -> Iterator[None]:
        """SQLAlchemy's "the server is away" errors become :class:`DatabaseUnavailable`."""
        try:
            yield
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            if not is_unavailable(error, sqlite=self.is_sqlite):
                raise
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:200]
            log.warning("database %s failed, the database at %s is unavailable: %s", what, self.where, reason)
            raise DatabaseUnavailable(
                "The database is not reachable right now. Please try again in a moment.",
                zh="数据库暂时无法连接，请稍后再试。",
            ) from error

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


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE statement changed."""
    return cast("CursorResult[Any]", result).rowcount
