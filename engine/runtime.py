"""Runtime service: start, cancel, suspend, resume and retry process instances; read their state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.task import TaskState
from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session, defer, joinedload

from engine import modification, results, version_migration
from engine.connectors import command_scope
from engine.context import EngineContext
from engine.db import UnitOfWork
from engine.errors import ConflictError, NotAllowedError, NotFoundError, ValidationError
from engine.execution import (
    CANCELLED,
    ERROR,
    RUNNING,
    SUSPENDED,
    InstanceRecord,
    LiveInstance,
    Mutation,
    advance,
    conflicts_as_errors,
    keep_live,
    load_instance,
    mutate_instance,
    new_instance,
    open_instance,
    persist,
    retry_failed,
)
from engine.models import HumanTask, ProcessDefinition, ProcessInstance
from engine.query import Lazy, Query
from engine.serialization import check_variables, data_to_json
from engine.sla_clock import restart_clock, stop_clock
from engine.task_properties import cc_instances
from engine.tasks import check_note, completion, offered_clause, record_note, to_task


def to_instance(
    row: ProcessInstance | InstanceRecord,
    variables: dict[str, Any] | None = None,
    *,
    definition_version: int | None = None,
) -> results.ProcessInstance:
    return results.ProcessInstance(
        id=row.id,
        definition_id=row.definition_id,
        definition_key=row.definition_key,
        definition_version=definition_version if definition_version is not None else row.definition.version,
        business_key=row.business_key,
        state=row.state,
        started_by=row.started_by,
        started_at=row.started_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
        next_timer_due=row.next_timer_due,
        error_element=row.error_element,
        error_message=row.error_message,
        version=row.version,
        variables=variables,
        sla_paused_at=row.sla_paused_at,
        starter_department_id=getattr(row, "starter_department_id", None),
    )


class InstanceQuery(Query[results.ProcessInstance]):
    def id(self, instance_id: str) -> InstanceQuery:
        return self._where_key(ProcessInstance.id == instance_id)

    def definition_key(self, key: str) -> InstanceQuery:
        return self._where(ProcessInstance.definition_key == key)

    def business_key(self, key: str) -> InstanceQuery:
        return self._where(ProcessInstance.business_key == key)

    def state(self, *states: str) -> InstanceQuery:
        return self._where(ProcessInstance.state.in_(states))

    def started_by(self, user: str) -> InstanceQuery:
        return self._where(ProcessInstance.started_by == user)

    def involving(
        self, user: str, groups: Iterable[str] = (), *, starters: Iterable[str] = ()
    ) -> InstanceQuery:
        """Instances a user may see: started by them (or by ``starters``: a manager's departments),
        or with a task they handled or that is offered to them or their groups, or copied on (抄送).

        One UNION member per way of being involved (engine/query.py), each with its index."""

        def having(*criteria: Any) -> Any:
            return ProcessInstance.id.in_(select(HumanTask.instance_id).where(*criteria))

        offered_tasks = offered_clause(self._db, user, groups)

        def offered(wide: bool) -> Any:
            """Wide: the instances of the tasks offered to them. Narrow (one instance): a probe of
            that instance's own tasks, 0.3 ms; the sub-select would first hash the instances of all
            their offered tasks (PostgreSQL, 230,000 pooled: 40 ms for 1,500 offers, 190 for 80,000)."""
            if wide:
                return having(offered_tasks.shape(wide))
            return exists().where(HumanTask.instance_id == ProcessInstance.id, offered_tasks.shape(wide))

        return self._any_of(
            ProcessInstance.started_by.in_([user, *starters]),
            having(HumanTask.assignee == user),
            having(HumanTask.claimed_by == user),
            having(HumanTask.completed_by == user),
            Lazy(offered),
            ProcessInstance.id.in_(cc_instances(user)),  # copied on it (抄送): read-only
        )

    def order_by_started(self, descending: bool = True) -> InstanceQuery:
        col = ProcessInstance.started_at
        return self._order_by(col.desc() if descending else col, ProcessInstance.id)

    # -- the managers' instance list (web/manage.py; indexes in migration 0009) --------------------

    def definition_id(self, *definition_ids: int) -> InstanceQuery:
        """Instances of these definitions (a process at given versions)."""
        return self._where(ProcessInstance.definition_id.in_(definition_ids))

    def starter_departments(self, department_ids: Iterable[int]) -> InstanceQuery:
        """Instances whose starter belonged to one of these departments when they started (an
        empty list matches nothing: a manager of no department)."""
        return self._where(ProcessInstance.starter_department_id.in_(list(department_ids)))

    def started_between(self, start: datetime | None = None, end: datetime | None = None) -> InstanceQuery:
        """Started at ``start`` or later and before ``end`` (either may be left open)."""
        return self._between(ProcessInstance.started_at, start, end)

    def ended_between(self, start: datetime | None = None, end: datetime | None = None) -> InstanceQuery:
        """Ended (completed or cancelled) at ``start`` or later and before ``end``."""
        return self._between(ProcessInstance.ended_at, start, end)

    def _between(self, column: Any, start: datetime | None, end: datetime | None) -> InstanceQuery:
        if start is not None:
            self._where(column >= start)
        if end is not None:
            self._where(column < end)
        return self

    def at_step(self, element_id: str) -> InstanceQuery:
        """Instances with an open human task at this element (where they wait now)."""
        return self._where(
            ProcessInstance.id.in_(
                select(HumanTask.instance_id).where(
                    HumanTask.state == "ready", HumanTask.element_id == element_id
                )
            )
        )

    def sla_breached(self, now: datetime) -> InstanceQuery:
        """Instances with an open task past its due date at ``now`` (a paused SLA clock is not late)."""
        return self._where(
            ProcessInstance.sla_paused_at.is_(None),
            ProcessInstance.id.in_(
                select(HumanTask.instance_id).where(HumanTask.state == "ready", HumanTask.due_at <= now)
            ),
        )

    def order_by_ended(self) -> InstanceQuery:
        """Finished instances only, the most recently ended first (an index walk, migration 0009)."""
        self._where(ProcessInstance.ended_at.is_not(None))
        return self._order_by(ProcessInstance.ended_at.desc(), ProcessInstance.id)


def latest_definition(session: Session, key: str) -> ProcessDefinition:
    definition = session.scalars(
        select(ProcessDefinition)
        .where(ProcessDefinition.key == key)
        .order_by(ProcessDefinition.version.desc())
        .limit(1)
    ).first()
    if definition is None:
        raise NotFoundError(f"no process definition with key {key!r}")
    return definition


def start_instance(
    ctx: EngineContext,
    uow: UnitOfWork,
    definition: ProcessDefinition,
    *,
    business_key: str | None = None,
    variables: dict[str, Any] | None = None,
    started_by: str | None = None,
    prepare: Callable[[BpmnWorkflow], None] | None = None,
    department_id: int | None = None,
) -> InstanceRecord:
    """Create and run an instance of ``definition`` inside the caller's unit of work (not committed).

    ``prepare`` may adjust the fresh workflow before its first steps (a timer or message start).
    ``department_id``: the department the instance counts under (managers' lists and figures)
    instead of its starter's.
    """
    session = uow.session
    now = ctx.now()
    live = new_instance(
        ctx,
        session,
        definition,
        business_key=business_key,
        started_by=started_by,
        now=now,
        department_id=department_id,
    )
    data = variables or {}

    def seed() -> None:
        if prepare is not None:
            prepare(live.workflow)
        for task in live.workflow.get_tasks(state=TaskState.READY):
            task.data.update(data)

    with command_scope(session, live.row, actor=started_by, now=now):  # service tasks: same transaction
        failure = advance(live.workflow, seed)
    ctx.audit(
        session,
        "instance_started",
        actor=started_by,
        instance_id=live.row.id,
        details={
            "definition": f"{definition.key}:{definition.version}",
            "business_key": business_key,
            "variables": data_to_json(data),
        },
        at=now,
    )
    persist(ctx, session, live, actor=started_by, now=now, failure=failure)
    keep_live(ctx, uow, live)
    return live.row


class RuntimeService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def start(
        self,
        key: str,
        *,
        business_key: str | None = None,
        variables: Mapping[str, Any] | None = None,
        started_by: str | None = None,
    ) -> results.ProcessInstance:
        """Start the latest version of ``key``. Raises NotFoundError, ValidationError.

        An engine error while running the first steps leaves the instance in ``error`` (created
        and retryable); the caller sees it in the returned state.
        """
        data = check_variables(variables)
        with conflicts_as_errors(), self._ctx.db.unit_of_work() as uow:
            definition = latest_definition(uow.session, key)
            record = start_instance(
                self._ctx, uow, definition, business_key=business_key, variables=data, started_by=started_by
            )
            uow.commit()
        return to_instance(record, definition_version=definition.version)

    def start_and_complete(
        self,
        key: str,
        *,
        step: str,
        data: Mapping[str, Any],
        actor: str,
        business_key: str | None = None,
        variables: Mapping[str, Any] | None = None,
        started_by: str | None = None,
        from_json: bool = True,
        note: tuple[str, Mapping[str, Any]] | None = None,
        comment: str | None = None,
        department_id: int | None = None,
    ) -> results.ProcessInstance:
        """Start the latest version of ``key`` and complete its first human step ``step`` with
        ``data`` as ``actor``, in one transaction: the instance goes on exactly as if someone had
        completed that step in their inbox (a form filled in outside Baton: web/support.py, a
        customer's request). The result carries the instance's variables.

        ``data`` is validated against the step's form as ``TaskService.complete`` does. ``note``,
        ``(action, details)``: an audit entry of the caller's own about that step (as
        ``TaskService.record``), with ``comment`` a comment on it by ``actor``, in the same
        transaction. An engine error in the steps after ``step`` leaves the instance in ``error``
        (it stands, as a completion does). ``department_id``: the department the instance counts
        under when its starter has none (a customer). Raises NotFoundError (no such process), ValidationError
        (the form's problems, a malformed note; nothing is started), ConflictError (the process
        does not wait at ``step`` once started, or its first steps failed; nothing is started).
        """
        fixed = check_variables(variables)
        if note is not None:
            check_note(note[0], comment)
        elif comment is not None:
            raise ValidationError("a comment goes with a note")
        with conflicts_as_errors(), self._ctx.db.unit_of_work() as uow:
            session = uow.session
            definition = latest_definition(session, key)
            started = start_instance(
                self._ctx,
                uow,
                definition,
                business_key=business_key,
                variables=fixed,
                started_by=started_by,
                department_id=department_id,
            )
            if started.state != RUNNING:
                raise ConflictError(f"{key} failed before {step!r}: {started.error_message}")
            task_id = session.scalar(
                select(HumanTask.id).where(
                    HumanTask.instance_id == started.id,
                    HumanTask.element_id == step,
                    HumanTask.state == "ready",
                )
            )
            if task_id is None:
                raise ConflictError(f"{key} does not wait at {step!r} when it starts")
            row = load_instance(self._ctx, session, started.id, lock=False)
            live = open_instance(self._ctx, session, row)
            now = self._ctx.now()
            change = completion(self._ctx, task_id, actor=actor, data=data, from_json=from_json)
            with command_scope(session, row, actor=actor, now=now):  # service tasks: same transaction
                mutation = change(session, live, now)
            persist(
                self._ctx,
                session,
                live,
                actor=actor,
                now=now,
                failure=mutation.failure,
                completed=mutation.completed,
            )
            if note is not None:
                action, details = note[0], dict(note[1])
                task_row = session.get(HumanTask, task_id)
                record_note(
                    self._ctx,
                    session,
                    task_row,
                    action,
                    actor=actor,
                    details=details,
                    comment=comment,
                    now=now,
                )
            keep_live(self._ctx, uow, live)
            found = to_instance(row, _data_of(live.workflow), definition_version=definition.version)
            uow.commit()
        return found

    def cancel(
        self, instance_id: str, *, actor: str | None, reason: str | None = None
    ) -> results.ProcessInstance:
        """Cancel a running, suspended or failed instance; its open tasks close as cancelled."""

        def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
            live.workflow.cancel()
            live.row.state, live.row.ended_at = CANCELLED, now
            self._ctx.audit(
                session,
                "instance_cancelled",
                actor=actor,
                instance_id=instance_id,
                details={"reason": reason},
                at=now,
            )
            return Mutation()

        row = mutate_instance(
            self._ctx, instance_id, change, actor=actor, allowed_states=(RUNNING, SUSPENDED, ERROR)
        )
        return self.get(row.id)

    def withdraw(self, instance_id: str, *, actor: str, reason: str | None = None) -> results.ProcessInstance:
        """The starter takes a request back while nobody else has acted on it (撤回): the instance ends
        as cancelled, its open tasks close, the audit trail says ``instance_withdrawn``.

        Raises NotFoundError, NotAllowedError (only the starter may withdraw), ConflictError (someone
        other than the starter completed a task of it, or it is no longer running).
        """

        def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
            if live.row.started_by is None or live.row.started_by != actor:
                raise NotAllowedError("only the person who started a request may withdraw it")
            acted = session.execute(
                select(HumanTask.completed_by)
                .where(
                    HumanTask.instance_id == instance_id,
                    HumanTask.state == "completed",
                    or_(HumanTask.completed_by.is_(None), HumanTask.completed_by != actor),
                )
                .limit(1)
            ).first()
            if acted is not None:
                who = acted.completed_by or "someone"
                raise ConflictError(f"{who} has already acted on this request: it can no longer be withdrawn")
            live.workflow.cancel()
            live.row.state, live.row.ended_at = CANCELLED, now
            self._ctx.audit(
                session,
                "instance_withdrawn",
                actor=actor,
                instance_id=instance_id,
                details={"reason": reason},
                at=now,
            )
            return Mutation()

        mutate_instance(self._ctx, instance_id, change, actor=actor, allowed_states=(RUNNING, ERROR))
        return self.get(instance_id)

    def suspend(self, instance_id: str, *, actor: str | None) -> results.ProcessInstance:
        return self._set_state(
            instance_id, SUSPENDED, actor=actor, allowed=(RUNNING,), action="instance_suspended"
        )

    def resume(self, instance_id: str, *, actor: str | None) -> results.ProcessInstance:
        return self._set_state(
            instance_id, RUNNING, actor=actor, allowed=(SUSPENDED,), action="instance_resumed"
        )

    def _set_state(
        self, instance_id: str, state: str, *, actor: str | None, allowed: tuple[str, ...], action: str
    ) -> results.ProcessInstance:
        with conflicts_as_errors(), self._ctx.db.unit_of_work() as uow:
            row = uow.session.get(ProcessInstance, instance_id)
            if row is None:
                raise NotFoundError(f"process instance {instance_id} not found")
            if row.state not in allowed:
                raise ConflictError(f"process instance {instance_id} is {row.state}")
            now = self._ctx.now()
            before, row.state, row.updated_at = row.state, state, now
            self._ctx.audit(
                uow.session,
                action,
                actor=actor,
                instance_id=instance_id,
                details={"before": before, "after": state},
                at=now,
            )
            uow.commit()
        return self.get(instance_id)

    def retry(
        self, instance_id: str, *, actor: str | None, variables: Mapping[str, Any] | None = None
    ) -> results.ProcessInstance:
        """Run the failed steps of an errored instance again, optionally with corrected variables."""
        fixes = check_variables(variables)

        def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
            element = live.row.error_element
            retry_failed(live.workflow, fixes)
            self._ctx.audit(
                session,
                "instance_retried",
                actor=actor,
                instance_id=instance_id,
                element_id=element,
                details={"variables": data_to_json(fixes)},
                at=now,
            )
            return Mutation(failure=advance(live.workflow))

        mutate_instance(self._ctx, instance_id, change, actor=actor, allowed_states=(ERROR,))
        return self.get(instance_id)

    def pause_sla(
        self, instance_id: str, *, actor: str | None, reason: str | None = None
    ) -> results.ProcessInstance:
        """Stop the SLA clock (the ticket waits on the customer or a vendor): timers and due dates
        stand still until ``resume_sla``."""

        def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
            if live.row.sla_paused_at is not None:
                raise ConflictError("the SLA clock is already paused")
            stop_clock(self._ctx, session, live, now, actor=actor, reason=reason)
            return Mutation()

        mutate_instance(
            self._ctx, instance_id, change, actor=actor, allowed_states=(RUNNING, SUSPENDED, ERROR)
        )
        return self.get(instance_id)

    def resume_sla(
        self, instance_id: str, *, actor: str | None, reason: str | None = None, working: bool = False
    ) -> results.ProcessInstance:
        """Restart the SLA clock: every waiting timer and open task due date moves later by the pause
        (by its working time along the business calendar when ``working``: deadlines in working hours)."""

        def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
            if live.row.sla_paused_at is None:
                raise ConflictError("the SLA clock is not paused")
            restart_clock(self._ctx, session, live, now, actor=actor, reason=reason, working=working)
            return Mutation()

        mutate_instance(
            self._ctx, instance_id, change, actor=actor, allowed_states=(RUNNING, SUSPENDED, ERROR)
        )
        return self.get(instance_id)

    def get(self, instance_id: str, *, with_variables: bool = False) -> results.ProcessInstance:
        with self._ctx.db.unit_of_work(write=False) as uow:
            row = uow.session.get(
                ProcessInstance, instance_id, options=[joinedload(ProcessInstance.definition)]
            )
            if row is None:
                raise NotFoundError(f"process instance {instance_id} not found")
            variables = self._variables(uow.session, row) if with_variables else None
            return to_instance(row, variables)

    def variables(self, instance_id: str) -> dict[str, Any]:
        found = self.get(instance_id, with_variables=True)
        return found.variables or {}

    def _variables(self, session: Session, row: ProcessInstance) -> dict[str, Any]:
        """The instance's data as its most recent task sees it, plus workflow-level data."""
        if row.engine_state is None:
            return {}
        return _data_of(open_instance(self._ctx, session, row, for_change=False).workflow)

    def query(self) -> InstanceQuery:
        # a list never needs the engine state (kilobytes per row)
        stmt = select(ProcessInstance).options(
            joinedload(ProcessInstance.definition), defer(ProcessInstance.engine_state)
        )
        return InstanceQuery(self._ctx.db, stmt, to_instance)

    # -- tracking and intervention (engine/modification.py, engine/version_migration.py) ------------

    def open_tasks(self, instance_ids: Iterable[str]) -> dict[str, list[results.UserTask]]:
        """The open human tasks of several instances (a list page), oldest first, in one statement."""
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return {}
        now = self._ctx.now()
        stmt = (
            select(HumanTask)
            .options(joinedload(HumanTask.instance).load_only(ProcessInstance.sla_paused_at))
            .where(HumanTask.instance_id.in_(ids), HumanTask.state == "ready")
            .order_by(HumanTask.created_at, HumanTask.id)
        )
        found: dict[str, list[results.UserTask]] = {}
        with self._ctx.db.unit_of_work(write=False) as uow:
            for row in uow.session.scalars(stmt).unique():
                found.setdefault(row.instance_id, []).append(to_task(row, now))
        return found

    def path(self, instance_id: str) -> results.InstancePath:
        """Steps done, active and failed, and the flows taken. Raises NotFoundError."""
        return modification.instance_path(self._ctx, instance_id)

    def move_targets(self, instance_id: str) -> list[results.StepTarget]:
        """The steps of its process an instance may be moved to. Raises NotFoundError."""
        return modification.instance_targets(self._ctx, instance_id)

    def move(
        self, instance_id: str, to: Iterable[str], *, actor: str | None, reason: str | None = None
    ) -> results.ProcessInstance:
        """Cancel where a running (or failed) instance is and activate the steps ``to`` instead; data
        is kept. Raises NotFoundError, ValidationError (not a step one can move to), ConflictError."""
        modification.move_instance(self._ctx, instance_id, list(to), actor=actor, reason=reason)
        return self.get(instance_id)

    def check_migration(
        self, instance_ids: Iterable[str], *, to_version: int
    ) -> list[results.MigrationCheck]:
        """Which instances can move to ``to_version`` of their process, and why the others cannot."""
        return version_migration.check_instances(self._ctx, instance_ids, to_version=to_version)

    def migrate(self, instance_id: str, *, to_version: int, actor: str | None) -> results.ProcessInstance:
        """Move an instance to another version of its process. Raises NotFoundError, ConflictError
        (``details``: why it cannot move; nothing changed)."""
        version_migration.migrate_instance(self._ctx, instance_id, to_version=to_version, actor=actor)
        return self.get(instance_id)

    def migrate_all(
        self, instance_ids: Iterable[str], *, to_version: int, actor: str | None
    ) -> list[results.MigrationOutcome]:
        """Migrate each instance in its own transaction; those that cannot move stay, with reasons."""
        return version_migration.migrate_instances(
            self._ctx, instance_ids, to_version=to_version, actor=actor
        )


def _data_of(workflow: BpmnWorkflow) -> dict[str, Any]:
    """The instance's data as its most recent task sees it, plus workflow-level data."""
    # the newest open task's data: a task inside a sub-process never becomes the workflow's last_task
    waiting = workflow.get_tasks(state=TaskState.READY, manual=True)
    if waiting:
        last = max(waiting, key=lambda task: task.last_state_change)
    else:
        last = workflow.last_task or workflow.task_tree
    return data_to_json({**workflow.data, **last.data})
