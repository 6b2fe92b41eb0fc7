"""What every engine service shares: database, configuration, caches, the script sandbox, the clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from engine.calendar import BusinessCalendar, script_functions
from engine.db import AUDIT_BUFFER, Database
from engine.form_cache import FormCache
from engine.live import LiveCache
from engine.scripts import BatonScriptEngine
from engine.serialization import StateSerializer
from engine.specs import SpecCache

SHARED_FORMS = Path(__file__).resolve().parents[1] / "forms"  # forms shared by several bundles


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        self.script_engine = BatonScriptEngine(timeout=config.script_timeout, functions=functions)

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
