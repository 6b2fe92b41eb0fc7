"""Load an instance, let the engine act on it, write everything back in the same transaction.

Every command that changes an instance goes through here, so the projections (human tasks,
timer jobs, message subscriptions) and the serialized state can never disagree: they are written in
one transaction, guarded by a row lock (PostgreSQL) and the optimistic ``version`` column (always).

The projections are maintained as differences: the database mirrors what the engine was waiting
for before the command (an invariant every command keeps), so after the command only the tasks
that closed or opened are written, with no read-back of the inbox.

This is the hot path of the product (every task completion, every timer), so it talks to the
database with prepared Core statements instead of ORM objects: building a statement per call costs
more than running it (see docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from SpiffWorkflow.bpmn.specs.event_definitions.item_aware_event import SignalEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.task import Task, TaskState
from sqlalchemy import Connection, Integer, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine import task_properties
from engine.bpmn import human_task_meta
from engine.connectors import command_scope, is_retryable, sync_retry_job
from engine.context import EngineContext
from engine.db import UnitOfWork
from engine.errors import ConflictError, NotFoundError
from engine.models import (
    HumanTask,
    Job,
    MessageSubscription,
    ProcessDefinition,
    ProcessInstance,
    TaskCandidate,
    UserAccount,
)
from engine.people import org_chart, resolve_due, resolve_people, resolve_priority
from engine.serialization import FORMAT
from engine.timers import next_timer_due, timers_held

RUNNING = "running"
SUSPENDED = "suspended"
ERROR = "error"
COMPLETED = "completed"
CANCELLED = "cancelled"
FINISHED = (COMPLETED, CANCELLED)


@dataclass
class InstanceRecord:
    """The columns of one process_instance row, as the hot path reads and writes them."""

    id: str
    definition_id: int
    definition_key: str
    business_key: str | None
    state: str
    started_by: str | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    engine_state: str | None
    serializer_version: str
    next_timer_due: datetime | None
    error_element: str | None
    error_message: str | None
    sla_paused_at: datetime | None
    version: int


_I = ProcessInstance.__table__.c
_RECORD_FIELDS = [f.name for f in fields(InstanceRecord)]
_SELECT_INSTANCE = select(*(_I[name] for name in _RECORD_FIELDS)).where(_I.id == bindparam("id"))
_SELECT_INSTANCE_LOCKED = _SELECT_INSTANCE.with_for_update()
_INSTANCE_OF_TASK = (
    select(HumanTask.instance_id).where(HumanTask.id == bindparam("task_id")).scalar_subquery()
)
_SELECT_TASK_INSTANCE = select(*(_I[name] for name in _RECORD_FIELDS)).where(_I.id == _INSTANCE_OF_TASK)
_SELECT_TASK_INSTANCE_LOCKED = _SELECT_TASK_INSTANCE.with_for_update()
# the starter's department is read in the same statement (the managers' instance list filters on it),
# unless the start names the department it counts under (a customer's ticket: no account, no department)
_INSERT_INSTANCE = insert(ProcessInstance.__table__).values(
    starter_department_id=func.coalesce(
        bindparam("b_department", type_=Integer),
        select(UserAccount.department_id)
        .where(UserAccount.username == bindparam("b_starter"))
        .scalar_subquery(),
    )
)
_MUTABLE = (
    "state",
    "updated_at",
    "ended_at",
    "engine_state",
    "serializer_version",
    "next_timer_due",
    "error_element",
    "error_message",
    "sla_paused_at",
)
_UPDATE_INSTANCE = (
    update(ProcessInstance.__table__)
    .where(_I.id == bindparam("b_id"), _I.version == bindparam("b_version"))
    .values({**{name: bindparam(name) for name in _MUTABLE}, "version": bindparam("new_version")})
)
_H = HumanTask.__table__.c
_CLOSE_TASKS = (
    update(HumanTask.__table__)
    .where(_H.id.in_(bindparam("ids", expanding=True)), _H.state == "ready")
    .values(
        state=bindparam("new_state"),
        completed_by=bindparam("by"),
        completed_at=bindparam("at"),
        version=_H.version + 1,
    )
)
_INSERT_TASKS = insert(HumanTask.__table__)
_INSERT_CANDIDATES = insert(TaskCandidate.__table__)
# Candidate rows are offers: a closed task offers nothing, so its rows go (the table then holds open
# offers only, and "offered to my groups" stays a short index range however long the history).
_DELETE_CANDIDATES = delete(TaskCandidate.__table__).where(
    TaskCandidate.__table__.c.task_id.in_(bindparam("ids", expanding=True))
)
_M = MessageSubscription.__table__.c
_DELETE_SUBSCRIPTIONS = delete(MessageSubscription.__table__).where(
    _M.instance_id == bindparam("instance_id"), _M.task_id.in_(bindparam("task_ids", expanding=True))
)
_INSERT_SUBSCRIPTIONS = insert(MessageSubscription.__table__)
_J = Job.__table__.c
_DELETE_TIMER_JOB = delete(Job.__table__).where(
    _J.instance_id == bindparam("instance_id"), _J.kind == "timer"
)
_INSERT_JOB = insert(Job.__table__)


@dataclass
class Failure:
    """An engine error caught at a task: the workflow is consistent, the failed task is in ERROR."""

    element_id: str | None
    message: str
    retry: bool = False  # a connector failure that may pass: a retry job is scheduled (engine.connectors)


@dataclass
class Waits:
    """What the engine waits for; compared before/after a command to write only the differences."""

    ready: dict[str, Task] = field(default_factory=dict)  # ready human tasks by id
    # task id -> (kind, name, correlation key): kind is "message" or "signal"
    messages: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)


@dataclass
class LiveInstance:
    row: InstanceRecord
    workflow: BpmnWorkflow
    before: Waits
    is_new: bool = False
    previous_due: datetime | None = None  # timer due as loaded: the job row changes only if this does
    department_id: int | None = None  # a new instance's department, when not its starter's


@dataclass
class Mutation:
    failure: Failure | None = None
    completed: tuple[str, ...] = ()


def connection(session: Session) -> Connection:
    return session.connection()


def load_instance(
    ctx: EngineContext, session: Session, instance_id: str | None, *, lock: bool, task_id: str | None = None
) -> InstanceRecord:
    """Read an instance row, named directly or by one of its tasks (one round trip either way);
    with ``lock`` on PostgreSQL the row stays locked until the transaction ends."""
    locked = lock and ctx.db.dialect == "postgresql"
    if task_id is not None:
        stmt = _SELECT_TASK_INSTANCE_LOCKED if locked else _SELECT_TASK_INSTANCE
        found = connection(session).execute(stmt, {"task_id": task_id}).first()
        if found is None:
            raise NotFoundError(f"task {task_id} not found")
        return InstanceRecord(*found)
    stmt = _SELECT_INSTANCE_LOCKED if locked else _SELECT_INSTANCE
    found = connection(session).execute(stmt, {"id": instance_id}).first()
    if found is None:
        raise NotFoundError(f"process instance {instance_id} not found")
    return InstanceRecord(*found)


def open_instance(
    ctx: EngineContext, session: Session, row: InstanceRecord, *, for_change: bool = True
) -> LiveInstance:
    """The live workflow of a row: from the live cache when it holds this exact version (changes only)."""
    if row.engine_state is None:
        raise ConflictError(f"process instance {row.id} has no engine state any more (archived)")
    workflow = ctx.live.take(row.id, row.version) if for_change else None
    if workflow is None:
        spec, subprocess_specs = ctx.specs.get(session, row.definition_id)
        workflow = ctx.serializer.loads(row.engine_state, spec, subprocess_specs)
        workflow.script_engine = ctx.script_engine
    return LiveInstance(row, workflow, waits_of(workflow), previous_due=timer_job_due(row))


def new_instance(
    ctx: EngineContext,
    session: Session,
    definition: ProcessDefinition,
    *,
    business_key: str | None,
    started_by: str | None,
    now: datetime,
    department_id: int | None = None,
) -> LiveInstance:
    spec, subprocess_specs = ctx.specs.get(session, definition.id)
    workflow = BpmnWorkflow(spec, subprocess_specs, script_engine=ctx.script_engine)
    row = InstanceRecord(
        id=str(uuid4()),
        definition_id=definition.id,
        definition_key=definition.key,
        business_key=business_key,
        state=RUNNING,
        started_by=started_by,
        started_at=now,
        updated_at=now,
        ended_at=None,
        engine_state=None,
        serializer_version=FORMAT,
        next_timer_due=None,
        error_element=None,
        error_message=None,
        sla_paused_at=None,
        version=0,
    )
    return LiveInstance(row, workflow, Waits(), is_new=True, department_id=department_id)


def advance(workflow: BpmnWorkflow, action: Callable[[], Any] | None = None) -> Failure | None:
    """Run ``action`` then the engine steps; an error raised at a task becomes a ``Failure``.

    Errors SpiffWorkflow raises from a task leave that task in ERROR and the rest of the workflow
    consistent, so the state can be saved and retried. Anything else propagates: the caller's
    transaction rolls back and nothing is written.
    """
    try:
        with timers_held(workflow):  # due timers fire only through the scheduler: one at a time, audited
            if action is not None:
                action()
            workflow.do_engine_steps()
    except SpiffWorkflowException as exc:
        failed = _failed_task(workflow, exc)
        if failed is None:
            raise
        return Failure(failed.task_spec.bpmn_id or failed.task_spec.name, _message(exc), is_retryable(exc))
    return None


def _failed_task(workflow: BpmnWorkflow, exc: SpiffWorkflowException) -> Task | None:
    task = getattr(exc, "task", None)
    if task is not None and task.state == TaskState.ERROR:
        return task
    return next(iter(workflow.get_tasks(state=TaskState.ERROR)), None)


def _message(exc: BaseException) -> str:
    parts = [str(exc)]
    parts += [note for note in getattr(exc, "__notes__", []) if note not in parts[0]]
    return "; ".join(p for p in parts if p)[:4000]


def retry_failed(workflow: BpmnWorkflow, variables: dict[str, Any] | None = None) -> int:
    """Make the tasks that failed runnable again (with corrected data); the next engine steps run them."""
    failed = workflow.get_tasks(state=TaskState.ERROR)
    for task in failed:
        task.reset_branch(None)
        task.data.update(variables or {})
    return len(failed)


def waits_of(workflow: BpmnWorkflow) -> Waits:
    waits = Waits()
    for task in workflow.get_tasks(state=TaskState.READY, manual=True):
        waits.ready[str(task.id)] = task
    for task in workflow.event_manager.tasks.values():
        for definition in _event_definitions(task):
            if isinstance(definition, MessageEventDefinition):
                waits.messages[f"{task.id}:{definition.name}"] = (
                    "message",
                    definition.name,
                    correlation_key(task, definition),
                )
            elif isinstance(definition, SignalEventDefinition):
                waits.messages[f"{task.id}:{definition.name}"] = ("signal", definition.name, None)
    return waits


def _event_definitions(task: Task) -> list[Any]:
    definition = getattr(task.task_spec, "event_definition", None)
    if isinstance(definition, MultipleEventDefinition):
        return list(definition.event_definitions)
    return [definition] if definition is not None else []


def correlation_key(task: Task, definition: Any = None) -> str | None:
    """The key a message for this waiting task must carry (None: any message of that name).

    The correlation properties SpiffWorkflow knows for the message (``bpmn:correlationProperty``
    retrieval expressions, and spiff ``processVariableCorrelation`` expressions, which win on a
    shared name) are evaluated against the waiting task's data in the script sandbox and written as
    ``"order_id=42"`` by ``engine.messaging.format_key``, exactly as a caller's keys are. An
    expression that cannot be evaluated yet gives a key no caller can produce: the instance waits
    unreachable rather than catching messages meant for others. ``definition`` picks one message of
    a task that waits for several (event-based gateway); without it their properties are combined.
    """
    from engine.messaging import correlation_expressions, format_key, unresolved_key

    if definition is not None:
        definitions = [definition]
    else:
        definitions = [d for d in _event_definitions(task) if isinstance(d, MessageEventDefinition)]
    expressions: dict[str, str] = {}
    for message in definitions:
        expressions.update(correlation_expressions(message))
    if not expressions:
        return None
    environment = task.workflow.script_engine.environment
    values: dict[str, Any] = {}
    for name, expression in expressions.items():
        try:
            values[name] = environment.evaluate(expression, task.data)
        except Exception:  # noqa: BLE001 - missing data or a failing expression: nobody can match yet
            return unresolved_key(name)
    return format_key(values)


def persist(
    ctx: EngineContext,
    session: Session,
    live: LiveInstance,
    *,
    actor: str | None,
    now: datetime,
    failure: Failure | None = None,
    completed: Iterable[str] = (),
) -> Waits:
    """Serialize the workflow and bring every projection of it up to date (same transaction)."""
    row, workflow = live.row, live.workflow
    after = waits_of(workflow)
    task_properties.apply(ctx, session, live, after, actor=actor, now=now)  # sla pause, cc, people.*
    row.engine_state = ctx.serializer.dumps(workflow)
    row.updated_at = now
    was_error = row.state == ERROR
    if failure is not None:
        row.state = ERROR
        row.error_element, row.error_message = failure.element_id, failure.message
    elif row.state == ERROR:
        row.state, row.error_element, row.error_message = RUNNING, None, None
    if workflow.is_completed() and row.state in (RUNNING, ERROR):
        row.state, row.ended_at = COMPLETED, now
    row.next_timer_due = next_timer_due(workflow)
    conn = connection(session)
    _write_instance(conn, live)
    _sync_human_tasks(ctx, session, conn, live, after, actor=actor, now=now, completed=set(completed))
    _sync_messages(conn, row.id, live.before, after, now)
    _sync_timer_job(conn, row, live.previous_due, now)
    if was_error or failure is not None:
        sync_retry_job(conn, row.id, retry=failure is not None and failure.retry, now=now)
    if failure is not None:
        ctx.audit(
            session,
            "instance_error",
            actor=actor,
            instance_id=row.id,
            element_id=failure.element_id,
            details={"message": failure.message},
            at=now,
        )
    if row.state == COMPLETED and row.ended_at == now:
        ctx.audit(session, "instance_completed", actor=actor, instance_id=row.id, at=now)
    return after


def _write_instance(conn: Connection, live: LiveInstance) -> None:
    """Insert a new row, or update with the optimistic version check (a lost race raises)."""
    row = live.row
    if live.is_new:
        row.version = 1
        params = {name: getattr(row, name) for name in _RECORD_FIELDS}
        conn.execute(
            _INSERT_INSTANCE, {**params, "b_starter": row.started_by, "b_department": live.department_id}
        )
        live.is_new = False
        return
    params = {name: getattr(row, name) for name in _MUTABLE}
    params.update(b_id=row.id, b_version=row.version, new_version=row.version + 1)
    if conn.execute(_UPDATE_INSTANCE, params).rowcount != 1:
        raise StaleDataError(f"process instance {row.id} changed since version {row.version}")
    row.version += 1


def _sync_human_tasks(
    ctx: EngineContext,
    session: Session,
    conn: Connection,
    live: LiveInstance,
    after: Waits,
    *,
    actor: str | None,
    now: datetime,
    completed: set[str],
) -> None:
    before = live.before.ready
    closed = [task_id for task_id in before if task_id not in after.ready]
    done = [t for t in closed if t in completed]
    gone = [t for t in closed if t not in completed]
    if done:
        conn.execute(_CLOSE_TASKS, {"ids": done, "new_state": "completed", "by": actor, "at": now})
    if closed:
        conn.execute(_DELETE_CANDIDATES, {"ids": closed})
    if gone:
        conn.execute(_CLOSE_TASKS, {"ids": gone, "new_state": "cancelled", "by": None, "at": now})
        for task_id in gone:
            ctx.audit(
                session,
                "task_cancelled",
                actor=actor,
                instance_id=live.row.id,
                task_id=task_id,
                element_id=before[task_id].task_spec.bpmn_id,
                at=now,
            )
    opened = [task for task_id, task in after.ready.items() if task_id not in before]
    if not opened:
        return
    rows, candidates = [], []
    org = org_chart(session, initiator=live.row.started_by)  # manager(initiator), department_head('财务部')
    for task in opened:
        meta = human_task_meta(task.task_spec)
        task_id = str(task.id)
        assignee = next(iter(resolve_people((meta.assignee,) if meta.assignee else (), task.data, org)), None)
        users = resolve_people(meta.candidate_users, task.data, org)
        groups = resolve_people(meta.candidate_groups, task.data, org)
        if not groups and not users and assignee is None and meta.lane:
            groups = (meta.lane,)  # a lane offers its unassigned tasks to the group of the same name
        rows.append(
            {
                "id": task_id,
                "instance_id": live.row.id,
                "definition_key": live.row.definition_key,
                "element_id": task.task_spec.bpmn_id,
                "name": task.task_spec.bpmn_name or task.task_spec.bpmn_id,
                "lane": meta.lane,
                "assignee": assignee,
                "due_at": (due := resolve_due(meta.due_date, task.data, now)),
                "warn_at": warn_time(now, due),
                "priority": resolve_priority(meta.priority, task.data),
                "form_key": meta.form_key,
                "state": "ready",
                "created_at": now,
                "claimed_by": None,
                "claimed_at": None,
                "completed_by": None,
                "completed_at": None,
                "version": 1,
                "offers": {"users": list(users), "groups": list(groups)},
            }
        )
        candidates += [{"task_id": task_id, "kind": "group", "name": g} for g in groups]
        candidates += [{"task_id": task_id, "kind": "user", "name": u} for u in users]
        ctx.audit(
            session,
            "task_created",
            actor=actor,
            instance_id=live.row.id,
            task_id=task_id,
            element_id=task.task_spec.bpmn_id,
            details={"assignee": assignee, "candidate_groups": list(groups), "candidate_users": list(users)},
            at=now,
        )
    conn.execute(_INSERT_TASKS, rows)
    if candidates:
        conn.execute(_INSERT_CANDIDATES, candidates)


def warn_time(created: datetime, due: datetime | None, share: float = 0.8) -> datetime | None:
    """The SLA turns to "warning" once ``share`` of the time to the due date has passed."""
    return None if due is None else created + (due - created) * share


def _sync_messages(conn: Connection, instance_id: str, before: Waits, after: Waits, now: datetime) -> None:
    """Subscriptions mirror the message and signal events the instance waits on."""
    if before.messages == after.messages:
        return
    stale = sorted({w.split(":", 1)[0] for w, sub in before.messages.items() if after.messages.get(w) != sub})
    if stale:
        conn.execute(_DELETE_SUBSCRIPTIONS, {"instance_id": instance_id, "task_ids": stale})
    stale_tasks = set(stale)
    fresh = [
        {
            "instance_id": instance_id,
            "kind": kind,
            "message_name": name,
            "correlation_key": key,
            "task_id": w.split(":", 1)[0],
            "created_at": now,
        }
        for w, (kind, name, key) in after.messages.items()
        if before.messages.get(w) != (kind, name, key) or w.split(":", 1)[0] in stale_tasks
    ]
    if fresh:
        conn.execute(_INSERT_SUBSCRIPTIONS, fresh)


def timer_job_due(row: InstanceRecord) -> datetime | None:
    """When the instance's timer job is due: no job once finished or while its SLA clock is paused."""
    if row.state in FINISHED or row.sla_paused_at is not None:
        return None
    return row.next_timer_due


def _sync_timer_job(conn: Connection, row: InstanceRecord, previous: datetime | None, now: datetime) -> None:
    """Keep exactly one pending timer job per instance, due at its earliest timer."""
    due = timer_job_due(row)
    if due == previous:
        return
    conn.execute(_DELETE_TIMER_JOB, {"instance_id": row.id})
    if due is not None:
        conn.execute(
            _INSERT_JOB,
            {
                "kind": "timer",
                "instance_id": row.id,
                "definition_id": None,
                "due_at": due,
                "state": "pending",
                "lease_owner": None,
                "lease_expires_at": None,
                "attempts": 0,
                "max_attempts": 5,
                "last_error": None,
                "created_at": now,
            },
        )


def task_by_id(workflow: BpmnWorkflow, task_id: str) -> Task | None:
    try:
        return workflow.get_task_from_id(UUID(task_id))
    except Exception:  # noqa: BLE001 - SpiffWorkflow raises its own TaskNotFoundException or KeyError
        return None


@contextmanager
def conflicts_as_errors() -> Iterator[None]:
    """A lost optimistic-lock race surfaces as ConflictError, whatever the database said."""
    try:
        yield
    except StaleDataError as exc:
        raise ConflictError("someone else changed this process instance first; reload and try again") from exc
    except IntegrityError as exc:
        raise ConflictError(f"conflicting change: {exc.orig}") from exc


def keep_live(ctx: EngineContext, uow: UnitOfWork, live: LiveInstance) -> None:
    """Once the command commits, cache the workflow at the row's new version for the next command."""
    row = live.row
    if row.state in FINISHED:
        return
    uow.after_commit(lambda: ctx.live.put(row.id, row.version, live.workflow))


def mutate_instance(
    ctx: EngineContext,
    instance_id: str | None,
    change: Callable[[Session, LiveInstance, datetime], Mutation],
    *,
    actor: str | None,
    allowed_states: tuple[str, ...] = (RUNNING,),
    task_id: str | None = None,
) -> InstanceRecord:
    """The one path for commands on an existing instance: lock, load, change, persist, commit.

    The instance is named directly or through one of its tasks (``task_id``), resolved inside the
    same transaction. ``change`` acts on the live workflow and returns what to record; an engine
    failure it reports puts the instance in ``error`` with the element and message (committed).
    """
    with conflicts_as_errors(), ctx.db.unit_of_work() as uow:
        session = uow.session
        row = load_instance(ctx, session, instance_id, lock=True, task_id=task_id)
        if row.state not in allowed_states:
            raise ConflictError(f"process instance {row.id} is {row.state}")
        live = open_instance(ctx, session, row)
        now = ctx.now()
        with command_scope(session, row, actor=actor, now=now):  # service tasks write in this transaction
            mutation = change(session, live, now)
        persist(
            ctx, session, live, actor=actor, now=now, failure=mutation.failure, completed=mutation.completed
        )
        keep_live(ctx, uow, live)
        uow.commit()
        return row
