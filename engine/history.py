"""History service: the read-only audit trail of every state change."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from engine import results
from engine.context import EngineContext
from engine.models import AuditEntry
from engine.query import Query


def to_event(row: AuditEntry) -> results.AuditEvent:
    return results.AuditEvent(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        instance_id=row.instance_id,
        task_id=row.task_id,
        element_id=row.element_id,
        details=row.details,
    )


class AuditQuery(Query[results.AuditEvent]):
    def instance(self, instance_id: str) -> AuditQuery:
        return self._where(AuditEntry.instance_id == instance_id)

    def instances(self, instance_ids: Iterable[str]) -> AuditQuery:
        return self._where(AuditEntry.instance_id.in_(sorted(set(instance_ids))))

    def task(self, task_id: str) -> AuditQuery:
        return self._where(AuditEntry.task_id == task_id)

    def action(self, *actions: str) -> AuditQuery:
        return self._where(AuditEntry.action.in_(actions))

    def actor(self, actor: str) -> AuditQuery:
        return self._where(AuditEntry.actor == actor)

    def since(self, at: datetime) -> AuditQuery:
        """Entries at ``at`` or later (the indexed ``at`` column)."""
        return self._where(AuditEntry.at >= at)

    def detail(self, name: str, value: str) -> AuditQuery:
        """Entries whose ``details`` hold ``name`` with this text value (narrow by action and time first:
        the details are not indexed)."""
        return self._where(AuditEntry.details[name].as_string() == value)

    def chronological(self) -> AuditQuery:
        return self._order_by(AuditEntry.id)


class HistoryService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def query(self) -> AuditQuery:
        return AuditQuery(self._ctx.db, select(AuditEntry), to_event)

    def for_instance(self, instance_id: str) -> list[results.AuditEvent]:
        return self.query().instance(instance_id).chronological().list()
