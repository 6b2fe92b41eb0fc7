"""Database connections and the unit of work.

SQLite (the embedded default) runs in WAL mode, and every write transaction starts with
``BEGIN IMMEDIATE``: writers queue on the database lock up front instead of failing halfway with a
stale snapshot, which gives the same "second writer waits, then sees the new state" behaviour as
``SELECT ... FOR UPDATE`` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from engine.models import AuditEntry

_INSERT_AUDIT = insert(AuditEntry.__table__)
WRITE_OPTION = "baton_write"
AUDIT_BUFFER = "baton_audit"  # session.info key: audit rows written in one INSERT at commit


def normalize_url(url: str) -> str:
    """``postgresql://`` (what people and hosting panels write) means psycopg 3 here."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, **kwargs) -> Engine:
    """Create an SQLAlchemy engine with Baton's settings for the given database URL."""
    url = normalize_url(url)
    return configure_engine(create_engine(url, **engine_options(url, kwargs)))


def engine_options(url: str, options: dict | None = None) -> dict:
    """``create_engine`` options for a URL (also given to Flask-SQLAlchemy by the web app)."""
    options = dict(options or {})
    if make_url(url).get_backend_name() != "sqlite":
        options.setdefault("pool_recycle", 1800)  # no pre-ping: it costs a round trip per transaction
        # No server-side prepared statements: after five runs of one statement PostgreSQL may switch
        # to a generic plan, blind to the values; for an inbox ("offered to these 1,500 tasks", "in
        # these groups") that plan scanned the whole pool: 1 s instead of 45 ms. Planning each time
        # costs well under a millisecond.
        options["connect_args"] = {"prepare_threshold": None, **options.get("connect_args", {})}
    return options


def configure_engine(engine: Engine) -> Engine:
    """Apply Baton's per-connection settings to an engine (also one Flask-SQLAlchemy created)."""
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, in_memory=engine.url.database in (None, "", ":memory:"))
    return engine


def _configure_sqlite(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, see below
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """Owns the engine and hands out sessions: one for reads, one for writes (see module doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # PostgreSQL reads run in autocommit: no BEGIN/ROLLBACK round trips around one or two
        # statements (a read sees committed data statement by statement; nothing reads under a lock)
        reader = engine
        if self.dialect == "postgresql":
            reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read = sessionmaker(bind=reader, expire_on_commit=False)
        writer = engine.execution_options(**{WRITE_OPTION: True})
        self._write = sessionmaker(bind=writer, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> Database:
        return cls(create_db_engine(url, **kwargs))

    def unit_of_work(self, *, write: bool = True) -> UnitOfWork:
        return UnitOfWork(self._write if write else self._read)

    def dispose(self) -> None:
        self.engine.dispose()


class UnitOfWork:
    """One command = one transaction: rolls back unless ``commit()`` was called."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._factory = session_factory
        self.session: Session
        self._after_commit: list[Callable[[], None]] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.session.info.pop(AUDIT_BUFFER, None)
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        entries = self.session.info.pop(AUDIT_BUFFER, None)
        if entries:
            self.session.connection().execute(_INSERT_AUDIT, entries)
        self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (cache updates, notifications)."""
        self._after_commit.append(callback)
