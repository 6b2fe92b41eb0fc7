"""Test fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL is taken from ``BATON_TEST_POSTGRES_URL`` (default: the local server at 127.0.0.1:5432).
Without a reachable server the PostgreSQL half is skipped with a clear reason, unless
``BATON_REQUIRE_POSTGRES=1`` (set by CI), where an unreachable server fails the run instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine.context import EngineConfig
from engine.db import create_db_engine
from engine.facade import Engine
from engine.migrate import upgrade
from engine.models import Base

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_TEST_DB = f"baton_test_{os.getpid()}"  # one per test run: parallel runs must not drop each other's
REQUIRE_PG = os.environ.get("BATON_REQUIRE_POSTGRES") == "1"


def _postgres_error() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated database of this test run on the local PostgreSQL server, dropped at the end."""
    error = _postgres_error()
    if error:
        if REQUIRE_PG:
            pytest.fail(error)
        pytest.skip(error)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {PG_TEST_DB}"))
    admin.dispose()
    url = make_url(PG_ADMIN_URL).set(database=PG_TEST_DB).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once keeps the suite fast)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _truncate_postgres(url: str) -> None:
    engine = create_db_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """The URL of an empty, migrated database: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "baton.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    eng = Engine.from_url(db_url, EngineConfig(script_timeout=1.0))
    yield eng
    eng.close()


class Clock:
    """A clock tests set by hand (the engine reads the time only through ``EngineConfig.clock``)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clocked(db_url):
    """An engine on a hand-set clock, and that clock."""
    clock = Clock()
    engine = Engine.from_url(db_url, EngineConfig(clock=clock))
    yield engine, clock
    engine.close()


@pytest.fixture
def app(db_url, tmp_path):
    from web.app import create_app

    application = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "SECRET_KEY": "test",
            "SCRIPT_TIMEOUT": 1.0,
            "SCHEDULER_ENABLED": False,
        }
    )
    yield application
    application.extensions["baton.engine"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def bpmn_file(*parts: str) -> bytes:
    return ROOT.joinpath(*parts).read_bytes()


def process_bundle(name: str) -> dict[str, bytes]:
    folder = ROOT / "processes" / name
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}
