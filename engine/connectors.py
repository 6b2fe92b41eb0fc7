"""The engine's side of BPMN service tasks: named operations (connectors), the call they run in, retries.

A service task (``spiffworkflow:serviceTaskOperator id="crm_open_ticket"``) runs the operation registered
under that name in a ``Connectors`` registry (the operations themselves live in ``integrations/``; the app
factory hands the registry to the engine through ``EngineConfig.connectors``). The operation runs inside
the command that runs the step: ``ConnectorCall.session`` is that command's session, so what it writes
commits or rolls back with the step (``command_scope`` binds it around the engine steps).

A ``ConnectorError`` fails the step: the instance goes to ``error`` at the service task. When the error
may pass (``retryable``) the same transaction schedules a ``retry`` job for the instance; the scheduler
runs the existing retry path with back-off (``engine.management``), and after the job's last attempt it
becomes an incident. A retry that succeeds, manual or scheduled, removes the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from engine.db import AUDIT_BUFFER
from engine.models import Job

if TYPE_CHECKING:
    from engine.context import EngineContext

RETRY_JOB = "retry"
FIRST_RETRY_SECONDS = 5  # then the management service's back-off: 10, 20, 40, 80 s (5 attempts)


class ConnectorError(Exception):
    """An operation failed. ``retryable``: the cause may pass (a server down), so retry later."""

    def __init__(self, message: str, *, retryable: bool = True, audit: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.audit = audit  # an audit entry (EngineContext.audit's arguments) kept although the call failed


@dataclass(frozen=True)
class CommandScope:
    """The instance command a service task runs in: its transaction and who set it going."""

    session: Session
    instance_id: str
    definition_key: str
    business_key: str | None
    started_by: str | None
    actor: str | None
    now: datetime


_SCOPE: ContextVar[CommandScope | None] = ContextVar("baton_command_scope", default=None)


@contextmanager
def command_scope(session: Session, row: Any, *, actor: str | None, now: datetime) -> Iterator[None]:
    """Bind the command (session + instance ``row``) for the service tasks its engine steps run."""
    token = _SCOPE.set(
        CommandScope(
            session=session,
            instance_id=row.id,
            definition_key=row.definition_key,
            business_key=row.business_key,
            started_by=row.started_by,
            actor=actor,
            now=now,
        )
    )
    try:
        yield
    finally:
        _SCOPE.reset(token)


@dataclass(frozen=True)
class ConnectorCall:
    """What an operation gets besides its parameters."""

    ctx: EngineContext
    scope: CommandScope
    operation: str
    data: Mapping[str, Any]  # the task's data (read it; results go back through the return value)

    @property
    def session(self) -> Session:
        return self.scope.session

    @property
    def instance_id(self) -> str:
        return self.scope.instance_id

    @property
    def actor(self) -> str | None:
        return self.scope.actor

    @property
    def now(self) -> datetime:
        return self.scope.now


Operation = Callable[[dict[str, Any], ConnectorCall], Any]


class Connectors:
    """Named operations service tasks may call."""

    def __init__(self, operations: Mapping[str, Operation] | None = None) -> None:
        self._operations: dict[str, Operation] = {}
        for name, operation in (operations or {}).items():
            self.register(name, operation)

    def register(self, name: str, operation: Operation) -> None:
        if not name or not callable(operation):
            raise ValueError(f"an operation needs a name and a callable, got {name!r}")
        self._operations[name] = operation

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._operations))

    def call(self, ctx: EngineContext, name: str, params: Mapping[str, Any], data: Mapping[str, Any]) -> str:
        """Run operation ``name`` for a service task; SpiffWorkflow wants the result as JSON text."""
        operation = self._operations.get(name)
        if operation is None:
            known = ", ".join(self.names()) or "none"
            raise ConnectorError(f"unknown operation {name!r} (known: {known})", retryable=False)
        scope = _SCOPE.get()
        if scope is None:
            raise ConnectorError(f"operation {name!r} can only run in a process instance", retryable=False)
        values = {key: _value(param) for key, param in params.items()}
        session = scope.session
        audit = session.info.setdefault(AUDIT_BUFFER, [])
        audited = len(audit)
        try:
            with (
                session.begin_nested()
            ):  # a failing operation leaves nothing behind in the step's transaction
                result = operation(values, ConnectorCall(ctx, scope, name, data))
                return json.dumps(result, default=_json_default, ensure_ascii=False)
        except BaseException as exc:
            del audit[audited:]
            if isinstance(exc, ConnectorError) and exc.audit:
                ctx.audit(session, **exc.audit)
            raise


def _value(param: Any) -> Any:
    """SpiffWorkflow passes each parameter as ``{"value": ..., "type": ...}``."""
    return param.get("value") if isinstance(param, dict) and "value" in param else param


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"an operation returned a {type(value).__name__}, which is not JSON")


def is_retryable(exc: BaseException) -> bool:
    """Whether an engine error was caused by a connector failure that may pass (walks the causes)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectorError):
            return current.retryable
        seen.add(id(current))
        current = getattr(current, "exception", None) or current.__cause__ or current.__context__
    return False


# -- the retry job (one per instance: the job table's unique (instance, kind) index) ------------------

_J = Job.__table__.c
_FIND_RETRY = select(_J.id, _J.state).where(_J.instance_id == bindparam("instance_id"), _J.kind == RETRY_JOB)
_INSERT_RETRY = insert(Job.__table__)
_REARM_RETRY = (
    update(Job.__table__)
    .where(_J.id == bindparam("b_id"))
    .values(state="pending", attempts=0, due_at=bindparam("due_at"), lease_owner=None, lease_expires_at=None)
)
_DELETE_RETRY = delete(Job.__table__).where(_J.instance_id == bindparam("instance_id"), _J.kind == RETRY_JOB)


def sync_retry_job(conn: Connection, instance_id: str, *, retry: bool, now: datetime) -> None:
    """After a command on an instance that failed or was in error: keep a retry job exactly while a
    retryable connector failure holds it in ``error``.

    ``retry``: schedule one (a job already pending, i.e. the scheduler's own retry, keeps its attempts;
    an incident is re-armed: somebody retried by hand and it failed again). Otherwise drop it: the instance
    recovered, or failed for a reason a retry cannot fix.
    """
    if not retry:
        conn.execute(_DELETE_RETRY, {"instance_id": instance_id})
        return
    due = now + timedelta(seconds=FIRST_RETRY_SECONDS)
    found = conn.execute(_FIND_RETRY, {"instance_id": instance_id}).first()
    if found is None:
        conn.execute(
            _INSERT_RETRY,
            {
                "kind": RETRY_JOB,
                "instance_id": instance_id,
                "definition_id": None,
                "due_at": due,
                "state": "pending",
                "lease_owner": None,
                "lease_expires_at": None,
                "attempts": 0,
                "max_attempts": 5,
                "last_error": None,
                "payload": None,
                "created_at": now,
            },
        )
    elif found.state == "failed":
        conn.execute(_REARM_RETRY, {"b_id": found.id, "due_at": due})
