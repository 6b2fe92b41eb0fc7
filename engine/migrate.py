"""Create or upgrade the database schema with Alembic (``baton init``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(db_engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if db_engine is not None:
        config.set_main_option("sqlalchemy.url", db_engine.url.render_as_string(hide_password=False))
    return config


def upgrade(db_engine: Engine, revision: str = "head") -> None:
    config = alembic_config(db_engine)
    with db_engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()


def current_revision(db_engine: Engine) -> str | None:
    with db_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
