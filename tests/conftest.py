"""Fixtures shared by the whole suite.

``db`` is parametrized over SQLite and PostgreSQL: every test that takes it runs on both.
Each backend is migrated once per session (which also tests the migrations) and emptied
before every test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backend.config import Settings
from backend.db import Database, migrate
from backend.db.models import Base

from . import s3server, services

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# ---- in CI every skip is a failure -----------------------------------------------------


def _fail_skip_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    """In CI a skip (a missing server or tool, anything) is a failure with the skip's reason."""
    if not (services.IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"{reason.removeprefix('Skipped: ')}; CI=true runs every test, so a skip is a failure"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


#: Rows of the chaos table, from the scenarios' reports (``tests/chaos/conftest.py``): this
#: conftest is the one the process printing the summary has loaded, with or without xdist.
_CHAOS_ROWS: list[tuple[dict[str, Any], int]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _CHAOS_ROWS.extend(value for name, value in report.user_properties if name == "chaos_row")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CHAOS_ROWS:
        from .chaos.checks import Row, format_table

        terminalreporter.write_sep("=", "chaos: faults injected, jobs affected, jobs lost")
        rows = [Row(**fields) for fields, _ in _CHAOS_ROWS]
        terminalreporter.write_line(format_table(rows, _CHAOS_ROWS[0][1]))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())  # a module-level importorskip skips its whole file


@pytest.fixture(scope="session")
def _sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path = tmp_path_factory.mktemp("sqlite") / "studio.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def _postgres_db() -> Iterator[Database]:
    services.require("PostgreSQL", "127.0.0.1", 5432)
    schema = f"studio_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = Database(services.POSTGRES_URL)
    with admin.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in services.POSTGRES_URL else "?"
    db = Database(f"{services.POSTGRES_URL}{sep}options=-csearch_path%3D{schema}")
    migrate.upgrade(db)
    yield db
    db.dispose()
    with admin.engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def empty_all_tables(db: Database) -> None:
    with db.write() as s:
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> Database:
    """A migrated, empty database: SQLite, then PostgreSQL."""
    database: Database = request.getfixturevalue(f"_{request.param}_db")
    empty_all_tables(database)
    return database


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing at a fresh data directory (the SQL URL comes from ``db``)."""
    return Settings(data_dir=tmp_path / "data")


# ---- the object store (Ceph RGW), started once per session when a test asks for it -------


@pytest.fixture(scope="session")
def rgw() -> Iterator["s3server.RGW"]:
    """A private Ceph RADOS Gateway (S3) for the whole session (tests/s3server.py)."""
    s3server.require()
    with s3server.rgw() as server:
        yield server


@pytest.fixture(scope="session")
def rgw_bucket(rgw: "s3server.RGW") -> str:
    """One bucket for the session; each test takes its own key prefix in it."""
    return rgw.new_bucket("studio")


def s3_settings(rgw: "s3server.RGW", bucket: str, **values: object) -> Settings:
    """Settings of an S3 asset store on ``rgw`` under a fresh key prefix."""
    return Settings(asset_store="s3", s3_endpoint=rgw.endpoint, s3_bucket=bucket, s3_region="us-east-1",
                    s3_access_key=rgw.access_key, s3_secret_key=rgw.secret_key, s3_path_style=True,
                    s3_prefix=f"t-{uuid.uuid4().hex[:10]}/", **values)  # type: ignore[arg-type]
