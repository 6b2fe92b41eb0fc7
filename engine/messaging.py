"""Messages and signals from outside: routed through the subscription index, delivered as one command.

A message goes to exactly one receiver. ``message_subscription`` (kept by ``engine.execution``)
says which instance task waits for which message name and correlation key, so routing is one
indexed query: one match is delivered through ``mutate_instance``; several are a conflict; none
starts a new instance when the latest version of a process has a message start event of that name,
and is otherwise a "not found". A signal goes to every subscribed instance, each in its own
command (one failing instance does not stop the rest), and starts one instance of every process
whose latest version has a signal start event of that name.

Correlation keys. SpiffWorkflow defines a message's correlation properties with
``bpmn:correlationProperty`` (one ``retrievalExpression`` per message, evaluated against the
message *payload*) and the spiff extension ``spiffworkflow:processVariableCorrelation``
(evaluated against the waiting task's data). Baton evaluates both against the waiting task's data to
index the instance (``execution.correlation_key``) and writes the values as sorted
``name=value`` pairs joined by commas, values through ``str()`` (``"order_id=42"``). A caller's
``keys`` (named by correlation property id) are written the same way, so ``{"order_id": 42}`` and
``{"order_id": "42"}`` reach the same instance. A message without keys reaches only a receiver
without correlation properties.

Where the payload lands. The payload handed to SpiffWorkflow is ``{**keys, **variables}`` (the
keys travel in the message so that retrieval expressions naming them evaluate, as SpiffWorkflow
does when it catches). With ``spiffworkflow:messageVariable`` on the message event definition the
whole payload lands in that one variable (SpiffWorkflow does it). Without it SpiffWorkflow 3.2.0's
spiff flavour keeps the payload in internal data only, so Baton merges it into the catching task's
data, from where following tasks see it: the variables always, the keys only where the data has no
variable of that name (a waiting instance keeps its own value, an instance started by the message
learns its key). For an event-based gateway the gateway task is the catching task. Signals: with
``spiffworkflow:variableName`` on the ``bpmn:signal`` the variables land in that variable,
otherwise they are merged the same way.

SpiffWorkflow keeps checking correlations itself once an instance has caught a correlated message
(``workflow.correlations``, raw values): Baton hands it the values it recorded wherever the key
strings agree, so the index stays the one place that decides where a message goes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.util import BpmnEvent
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition, SignalEventDefinition
from SpiffWorkflow.task import Task, TaskState
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.context import EngineContext
from engine.errors import BatonError, ConflictError, NotFoundError, ValidationError
from engine.execution import (
    LiveInstance,
    Mutation,
    advance,
    conflicts_as_errors,
    mutate_instance,
    task_by_id,
)
from engine.models import MessageSubscription, ProcessDefinition
from engine.runtime import start_instance
from engine.serialization import data_to_json

log = logging.getLogger(__name__)

MESSAGE = "message"
SIGNAL = "signal"
_KEY_LENGTH = 255  # message_subscription.correlation_key
_SHOWN = 5  # instance ids named in a conflict


@dataclass(frozen=True)
class MessageResult:
    """Where a message went: the instance that caught it, or the instance it started."""

    instance_id: str
    started: bool


# --------------------------------------------------------------------------------------------------
# Correlation keys (also used by execution.correlation_key, so index and callers agree)
# --------------------------------------------------------------------------------------------------


def correlation_expressions(definition: Any) -> dict[str, str]:
    """Correlation property id -> expression of a message event definition (empty: uncorrelated)."""
    found: dict[str, str] = {}
    for prop in getattr(definition, "correlation_properties", None) or ():
        if prop.retrieval_expression:
            found[prop.name] = prop.retrieval_expression
    for prop in getattr(definition, "process_correlations", None) or ():
        if prop.retrieval_expression:
            found[prop.name] = prop.retrieval_expression
    return found


def format_key(values: Mapping[str, Any] | None) -> str | None:
    """``{"region": "eu", "order_id": 42}`` -> ``"order_id=42,region=eu"``; None for no values.

    Commas and backslashes in values are escaped, so different values never give the same key; a
    key longer than the column is replaced by its SHA-256 (``#`` prefix, which no name starts with).
    """
    if not values:
        return None
    text = ",".join(f"{name}={_escape(str(value))}" for name, value in sorted(values.items()))
    if len(text) > _KEY_LENGTH:
        return "#" + hashlib.sha256(text.encode()).hexdigest()
    return text


def unresolved_key(name: str) -> str:
    """The key of a receiver whose correlation property ``name`` cannot be evaluated: matches nothing."""
    return f"!unresolved:{name}"[:_KEY_LENGTH]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"a {what} needs a name")
    return name


def _check_keys(keys: Mapping[str, Any] | None) -> dict[str, Any]:
    if keys is None:
        return {}
    if not isinstance(keys, Mapping):
        raise ValidationError("correlation keys must be an object of name -> value")
    for name in keys:
        if not isinstance(name, str) or not name or any(c in name for c in "=,\\") or name[0] in "!#":
            raise ValidationError(f"invalid correlation key name {name!r}")
    return dict(keys)


def _check_variables(variables: Mapping[str, Any] | None) -> dict[str, Any]:
    if variables is None:
        return {}
    if not isinstance(variables, Mapping) or not all(
        isinstance(k, str) and k.isidentifier() for k in variables
    ):
        raise ValidationError("variables must be an object whose names are identifiers")
    return dict(variables)


def _describe(name: str, key: str | None) -> str:
    return f"message {name!r}" + (f" with key {key}" if key else " without a correlation key")


# --------------------------------------------------------------------------------------------------
# Delivery into one live workflow
# --------------------------------------------------------------------------------------------------


def _definitions(task: Task) -> list[Any]:
    definition = getattr(task.task_spec, "event_definition", None)
    if isinstance(definition, MultipleEventDefinition):
        return list(definition.event_definitions)
    return [definition] if definition is not None else []


def _event(kind: str, name: str, payload: dict[str, Any], receiver: Any, workflow: BpmnWorkflow) -> BpmnEvent:
    """The event as SpiffWorkflow's own sender would build it (same spiff classes as the parser)."""
    if kind == SIGNAL:
        return BpmnEvent(SignalEventDefinition(name), payload=payload)
    try:
        correlations = receiver.calculate_correlations(
            workflow.script_engine, receiver.correlation_properties, payload
        )
    except Exception as exc:  # noqa: BLE001 - a retrieval expression the payload does not satisfy
        expressions = ", ".join(f"{n}: {e}" for n, e in correlation_expressions(receiver).items())
        raise ValidationError(
            f"message {name!r}: the receiver's correlation properties ({expressions}) cannot be "
            f"read from the message ({exc.__class__.__name__}: {exc}); pass what they need as keys "
            "or variables"
        ) from exc
    # Baton matched the message by key strings; SpiffWorkflow compares the raw values it recorded for
    # the instance (42 vs "42"): hand it its own values where the strings agree.
    for key_name, values in correlations.items():
        recorded = workflow.correlations.get(key_name)
        if recorded is not None and format_key(recorded) == format_key(values):
            correlations[key_name] = recorded
    return BpmnEvent(MessageEventDefinition(name), payload=payload, correlations=correlations)


def deliver(task: Task, kind: str, name: str, keys: Mapping[str, Any], variables: Mapping[str, Any]) -> bool:
    """Let one waiting task catch the event, as SpiffWorkflow's event manager does for each match.

    Returns False when the task does not wait for it (any more). The payload is ``{**keys,
    **variables}``; when the event definition names no variable for it, Baton merges it into the
    task's data, keys only where the data has no such variable yet (see the module doc).
    """
    if task.state != TaskState.WAITING:
        return False
    wanted = SignalEventDefinition if kind == SIGNAL else MessageEventDefinition
    receiver = next((d for d in _definitions(task) if type(d) is wanted and d.name == name), None)
    if receiver is None:
        return False
    workflow = task.workflow.top_workflow
    event = _event(kind, name, deepcopy({**keys, **variables}), receiver, workflow)
    if not task.task_spec.catches(task, event):
        if kind == MESSAGE and workflow.correlations:
            raise ConflictError(
                f"message {name!r} does not match the correlations SpiffWorkflow recorded for this "
                f"instance ({data_to_json(workflow.correlations)})"
            )
        return False
    task.task_spec.catch(task, event)
    task.task_spec._update(task)  # noqa: SLF001 - what EventManager.catch does after catch()
    variable = receiver.variable if kind == SIGNAL else receiver.message_var
    if variable is None:
        task.data.update(deepcopy({k: v for k, v in keys.items() if k not in task.data}))
        task.data.update(deepcopy(dict(variables)))
    return True


def _prime_start(
    element_id: str, kind: str, name: str, keys: Mapping[str, Any], variables: Mapping[str, Any]
) -> Callable[[BpmnWorkflow], None]:
    """``prepare`` for start_instance: the fresh workflow's start event catches the event."""

    def prepare(workflow: BpmnWorkflow) -> None:
        workflow.do_engine_steps()  # the start event now waits for its message or signal
        waiting = [
            t
            for t in list(workflow.event_manager.tasks.values())
            if t.task_spec.bpmn_id == element_id and t.workflow is workflow
        ]
        if not waiting or not deliver(waiting[0], kind, name, keys, variables):
            raise ConflictError(f"start event {element_id!r} does not wait for {kind} {name!r}")

    return prepare


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Delivery:
    """One message or signal as the caller sent it."""

    kind: str  # MESSAGE or SIGNAL
    name: str
    keys: dict[str, Any]
    variables: dict[str, Any]
    actor: str | None

    def into(self, task: Task) -> bool:
        return deliver(task, self.kind, self.name, self.keys, self.variables)

    def start_at(self, element_id: str) -> Callable[[BpmnWorkflow], None]:
        return _prime_start(element_id, self.kind, self.name, self.keys, self.variables)

    def audit(
        self,
        ctx: EngineContext,
        session: Session,
        instance_id: str,
        element_id: str | None,
        now: datetime,
        *,
        started: str | None = None,
    ) -> None:
        details: dict[str, Any] = {
            "name": self.name,
            "keys": data_to_json(self.keys),
            "variables": data_to_json(self.variables),
        }
        if started:
            details["started"] = started
        ctx.audit(
            session,
            f"{self.kind}_received",
            actor=self.actor,
            instance_id=instance_id,
            element_id=element_id,
            details=details,
            at=now,
        )


@dataclass(frozen=True)
class _Start:
    """A process whose latest version starts on the event."""

    definition_id: int
    label: str  # key:version
    element_id: str


class MessageService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def correlate(
        self,
        name: str,
        *,
        keys: Mapping[str, Any] | None = None,
        variables: Mapping[str, Any] | None = None,
        actor: str | None,
    ) -> MessageResult:
        """Deliver message ``name`` to the one instance waiting for it with these correlation keys,
        or start an instance on a message start event of that name.

        Raises ValidationError (bad input, or the receiver's correlation expressions cannot read
        the message), NotFoundError (nobody waits and no process starts on it), ConflictError
        (several receivers match, or the receiver changed first: try again).
        """
        name = _check_name(name, MESSAGE)
        key_values = _check_keys(keys)
        data = _check_variables(variables)
        key = format_key(key_values)
        receivers = self._subscribed(MESSAGE, name, key)
        if len(receivers) > 1:
            instances = sorted({instance_id for instance_id, _ in receivers})
            shown = ", ".join(instances[:_SHOWN]) + (", ..." if len(instances) > _SHOWN else "")
            raise ConflictError(
                f"{len(receivers)} receivers wait for {_describe(name, key)} (instances {shown}); "
                "a message goes to exactly one: correlate it with a key"
            )
        delivery = _Delivery(MESSAGE, name, key_values, data, actor)
        if receivers:
            instance_id, task_id = receivers[0]
            self._deliver(instance_id, [task_id], delivery)
            return MessageResult(instance_id, started=False)
        starts = self._start_events(MESSAGE, name)
        if not starts:
            raise NotFoundError(f"no instance waits for {_describe(name, key)}, and no process starts on it")
        if len(starts) > 1:
            labels = ", ".join(s.label for s in starts)
            raise ConflictError(f"several processes start on message {name!r} ({labels}); rename one")
        return MessageResult(self._start(starts[0], delivery), started=True)

    def broadcast_signal(
        self, name: str, *, variables: Mapping[str, Any] | None = None, actor: str | None
    ) -> list[str]:
        """Throw signal ``name`` to every instance waiting for it and start every process whose latest
        version has a signal start event of that name.

        Returns the instances reached (waiting ones first, then started ones); nobody listening is
        not an error. An instance that cannot take the signal (suspended, changed meanwhile...) or
        a process that cannot start is skipped, and audited as ``signal_failed``.
        """
        name = _check_name(name, SIGNAL)
        delivery = _Delivery(SIGNAL, name, {}, _check_variables(variables), actor)
        by_instance: dict[str, list[str]] = {}
        for instance_id, task_id in self._subscribed(SIGNAL, name, None, any_key=True):
            by_instance.setdefault(instance_id, []).append(task_id)
        reached: list[str] = []
        for instance_id, task_ids in by_instance.items():
            try:
                self._deliver(instance_id, task_ids, delivery)
            except Exception as exc:  # noqa: BLE001 - one instance must not stop the broadcast
                self._failed(delivery, exc, instance_id=instance_id)
            else:
                reached.append(instance_id)
        for start in self._start_events(SIGNAL, name):
            try:
                reached.append(self._start(start, delivery))
            except Exception as exc:  # noqa: BLE001 - nor one process that cannot start
                self._failed(delivery, exc, definition=start.label)
        return reached

    # ----------------------------------------------------------------------------------------------

    def _subscribed(
        self, kind: str, name: str, key: str | None, *, any_key: bool = False
    ) -> list[tuple[str, str]]:
        """(instance id, task id) of the matching subscriptions, oldest first."""
        m = MessageSubscription
        stmt = select(m.instance_id, m.task_id).where(m.kind == kind, m.message_name == name)
        if not any_key:
            stmt = stmt.where(m.correlation_key == key if key is not None else m.correlation_key.is_(None))
        with self._ctx.db.unit_of_work(write=False) as uow:
            return [(i, t) for i, t in uow.session.execute(stmt.order_by(m.id)).all()]

    def _start_events(self, kind: str, name: str) -> list[_Start]:
        """The processes whose latest version has a start event of this kind and name."""
        d = ProcessDefinition
        latest = select(d.key, func.max(d.version).label("version")).group_by(d.key).subquery()
        stmt = (
            select(d.id, d.key, d.version, d.start_events)
            .join(latest, (d.key == latest.c.key) & (d.version == latest.c.version))
            .order_by(d.key)
        )
        found = []
        with self._ctx.db.unit_of_work(write=False) as uow:
            for definition_id, key, version, events in uow.session.execute(stmt):
                element = next(
                    (
                        e["element_id"]
                        for e in events or ()
                        if e.get("kind") == kind and e.get("name") == name
                    ),
                    None,
                )
                if element is not None:
                    found.append(_Start(definition_id, f"{key}:{version}", element))
        return found

    def _deliver(self, instance_id: str, task_ids: list[str], delivery: _Delivery) -> None:
        """One command on the instance: its subscribed tasks catch the event, then the engine runs."""
        ctx = self._ctx

        def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
            caught = [
                task
                for task in (task_by_id(live.workflow, task_id) for task_id in task_ids)
                if task is not None and delivery.into(task)
            ]
            if not caught:
                raise ConflictError(
                    f"process instance {instance_id} no longer waits for {delivery.kind} {delivery.name!r}; "
                    "try again"
                )
            for task in caught:
                delivery.audit(ctx, session, instance_id, task.task_spec.bpmn_id, now)
            return Mutation(failure=advance(live.workflow))

        mutate_instance(ctx, instance_id, change, actor=delivery.actor)

    def _start(self, start: _Start, delivery: _Delivery) -> str:
        """Start an instance whose start event catches the event: one unit of work."""
        ctx = self._ctx
        with conflicts_as_errors(), ctx.db.unit_of_work() as uow:
            definition = uow.session.get(ProcessDefinition, start.definition_id)
            if definition is None:
                raise NotFoundError(f"process definition {start.label} not found")
            record = start_instance(
                ctx, uow, definition, started_by=delivery.actor, prepare=delivery.start_at(start.element_id)
            )
            delivery.audit(ctx, uow.session, record.id, start.element_id, ctx.now(), started=start.label)
            uow.commit()
        return record.id

    def _failed(self, delivery: _Delivery, exc: Exception, **where: str) -> None:
        """Audit a signal that could not reach an instance or start a process (own transaction)."""
        if not isinstance(exc, BatonError):
            log.exception("signal %r failed for %s", delivery.name, where)
        message = exc.message if isinstance(exc, BatonError) else f"{exc.__class__.__name__}: {exc}"
        instance_id = where.pop("instance_id", None)
        with self._ctx.db.unit_of_work() as uow:
            self._ctx.audit(
                uow.session,
                "signal_failed",
                actor=delivery.actor,
                instance_id=instance_id,
                details={"name": delivery.name, "error": message[:2000], **where},
            )
            uow.commit()
