"""What every engine service shares: database, configuration, caches, the script sandbox, the clock."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from engine.calendar import BusinessCalendar, script_functions
from engine.connectors import Connectors
from engine.db import AUDIT_BUFFER, Database
from engine.form_cache import FormCache
from engine.live import LiveCache
from engine.scripts import BatonScriptEngine
from engine.serialization import StateSerializer
from engine.specs import SpecCache

SHARED_FORMS = Path(__file__).resolve().parents[1] / "forms"  # forms shared by several bundles


def utcnow() -> datetime:
    return datetime.now(UTC)


def _env_days(name: str) -> int | None:
    """Whole days from the environment; unset, empty or "off" means None (the policy is off)."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "off"):
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of days (1 or more) or 'off', not {raw!r}")
    return int(raw)


@dataclass
class EngineConfig:
    script_timeout: float = 2.0
    max_file_bytes: int = 5 * 1024 * 1024
    spec_cache_size: int = 256
    live_cache_size: int = 2000  # deserialized workflows kept between commands (0 disables)
    script_functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    calendar: BusinessCalendar | None = None  # None: working hours + the holiday files in engine/data
    shared_forms_dir: Path | None = SHARED_FORMS
    clock: Callable[[], datetime] = utcnow
    # API token -> user answers kept per process this long (0 disables): revoking a token or changing
    # a user clears this process's copies at once, other processes' within this many seconds
    token_cache_seconds: float = 5.0
    # history retention (engine/retention.py, docs/measures.md): off unless a number of days is set
    retention_days: int | None = field(default_factory=lambda: _env_days("BATON_RETENTION_DAYS"))
    retention_archive_dir: Path | None = field(
        default_factory=lambda: Path(p) if (p := os.environ.get("BATON_RETENTION_ARCHIVE_DIR")) else None
    )
    retention_attachments: str = field(
        default_factory=lambda: os.environ.get("BATON_RETENTION_ATTACHMENTS", "keep")
    )  # keep | remove
    # operations BPMN service tasks call (integrations/; web/app.py passes the default set)
    connectors: Connectors | None = None


class EngineContext:
    def __init__(self, db: Database, config: EngineConfig) -> None:
        self.db = db
        self.config = config
        self.specs = SpecCache(config.spec_cache_size)
        self.serializer = StateSerializer()
        self.live = LiveCache(config.live_cache_size)
        self.forms = FormCache(self.specs, config.shared_forms_dir)
        self.calendar = config.calendar or BusinessCalendar.default()
        functions = {
            "now": lambda: self.now().isoformat(),
            **script_functions(self.calendar),
            **config.script_functions,
        }
        self.connectors = config.connectors or Connectors()
        self.script_engine = BatonScriptEngine(
            timeout=config.script_timeout,
            functions=functions,
            services=lambda name, params, data: self.connectors.call(self, name, params, data),
        )

    def now(self) -> datetime:
        return self.config.clock()

    def audit(
        self,
        session: Session,
        action: str,
        *,
        actor: str | None,
        instance_id: str | None = None,
        task_id: str | None = None,
        element_id: str | None = None,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append one audit entry in the caller's transaction: it commits or rolls back with the change.

        Entries are buffered on the session and written in one INSERT when the unit of work commits.
        """
        session.info.setdefault(AUDIT_BUFFER, []).append(
            {
                "at": at or self.now(),
                "actor": actor,
                "action": action,
                "instance_id": instance_id,
                "task_id": task_id,
                "element_id": element_id,
                "details": details,
            }
        )
