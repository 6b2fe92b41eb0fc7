"""The engine facade: one object holding the lifecycle services, built from a database URL.

Nothing here knows about Flask: a web request, a scheduler job and a CLI command all build or
share an ``Engine`` and call the same services.
"""

from __future__ import annotations

from engine.context import EngineConfig, EngineContext
from engine.db import Database
from engine.history import HistoryService
from engine.identity import IdentityService
from engine.management import ManagementService
from engine.measures import MeasureService
from engine.messaging import MessageService
from engine.records import RecordService
from engine.repository import RepositoryService
from engine.retention import RetentionService
from engine.runtime import RuntimeService
from engine.tasks import TaskService


class Engine:
    def __init__(self, db: Database, config: EngineConfig | None = None) -> None:
        self.context = EngineContext(db, config or EngineConfig())
        self.db = db
        self.repository = RepositoryService(self.context)
        self.runtime = RuntimeService(self.context)
        self.tasks = TaskService(self.context)
        self.history = HistoryService(self.context)
        self.identity = IdentityService(self.context)
        self.management = ManagementService(self.context)
        self.messages = MessageService(self.context)
        self.records = RecordService(self.context)
        self.measures = MeasureService(self.context)
        self.retention = RetentionService(self.context)

    @classmethod
    def from_url(cls, url: str, config: EngineConfig | None = None, **engine_kwargs) -> Engine:
        return cls(Database.from_url(url, **engine_kwargs), config)

    def close(self) -> None:
        self.db.dispose()
