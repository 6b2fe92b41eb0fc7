"""What the PostgreSQL page benchmarks (bench.inbox, bench.instances, bench.measures) share: their own
database, the shipped process, a migrated engine, the COPY columns, the timing percentiles and the
report saved next to the previous run."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PROCESS = ROOT / "processes" / "expense_approval"
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PASSWORD = "bench-pass-1"
INSTANCE_COLUMNS = (
    "id", "definition_id", "definition_key", "business_key", "state", "started_by", "started_at",
    "updated_at", "ended_at", "engine_state", "serializer_version", "next_timer_due", "error_element",
    "error_message", "sla_paused_at", "version",
)  # fmt: skip
TASK_COLUMNS = (
    "id", "instance_id", "definition_key", "element_id", "name", "lane", "assignee", "due_at", "warn_at",
    "priority", "form_key", "state", "created_at", "claimed_by", "claimed_at", "completed_by",
    "completed_at", "version",
)  # fmt: skip


def uuid4(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng``, so that a seeded load is the same every time."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def add_database_arguments(parser: argparse.ArgumentParser, database: str) -> None:
    """--postgres, --reuse and --no-save, alike in every benchmark."""
    parser.add_argument("--postgres", default=DEFAULT_PG)
    parser.add_argument("--reuse", action="store_true", help=f"keep an existing {database} database")
    parser.add_argument("--no-save", action="store_true")


def fresh_database(admin_url: str, database: str, reuse: bool) -> tuple[str, bool]:
    """The bench database URL and whether it must be loaded."""
    url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database})
        if exists and reuse:
            admin.dispose()
            return url, False
        conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {database}"))
    admin.dispose()
    return url, True


def migrated_engine(url: str):
    """An engine on ``url`` with every migration applied (the bench database starts empty)."""
    from engine.context import EngineConfig
    from engine.facade import Engine
    from engine.migrate import upgrade

    engine = Engine.from_url(url, EngineConfig())
    upgrade(engine.db.engine)
    return engine


def process_bundle() -> dict[str, bytes]:
    """The shipped expense approval's files, ready to deploy."""
    return {f.name: f.read_bytes() for f in PROCESS.iterdir() if f.is_file()}


def vacuum(pg, tables: tuple[str, ...]) -> None:
    """VACUUM ANALYZE the loaded tables (after the COPY's commit), so the planner sees their real size."""
    pg.autocommit = True
    with pg.cursor() as cur:
        for table in tables:
            cur.execute(f"VACUUM ANALYZE {table}")


def upgrade_and_count(url: str, tables: tuple[str, ...]) -> dict[str, int]:
    """Apply new (index) migrations to a reused database; the row count of each table."""
    from engine.db import create_db_engine
    from engine.migrate import upgrade

    db = create_db_engine(url)
    upgrade(db)
    with db.connect() as conn:
        counts = {table: conn.scalar(text(f"SELECT count(*) FROM {table}")) for table in tables}
    db.dispose()
    return counts


def bench_app(url: str, **config):
    """The web app on the bench database, without the scheduler."""
    from web.app import create_app

    return create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench", "SCHEDULER_ENABLED": False, **config}
    )


def logged_in(app, who: str):
    """A test client with ``who``'s session."""
    client = app.test_client()
    assert client.post("/login", data={"username": who, "password": PASSWORD}).status_code == 302
    return client


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "p95_ms": round(cuts[94] * 1e3, 2),
        "p99_ms": round(cuts[98] * 1e3, 2),
        "max_ms": round(ordered[-1] * 1e3, 2),
    }


def machine_facts() -> dict[str, str]:
    """When and where the run was, for the report."""
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
    }


def load_span(load_before: float) -> list[float]:
    """The load average before and after the timing: how busy the shared machine was."""
    return [round(load_before, 2), round(os.getloadavg()[0], 2)]


def previous_report(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def save_report(name: str, report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def verdict(figures: dict, before: dict | None, target_ms: float) -> tuple[str, str]:
    """Whether p95 meets the target, and p95 as a multiple of the previous run's."""
    ok = "yes" if figures["p95_ms"] <= target_ms else "**no**"
    vs = f"{figures['p95_ms'] / before['p95_ms']:.2f}" if before else "–"
    return ok, vs
