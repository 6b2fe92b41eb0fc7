"""Runtime service: start, cancel, suspend, resume and retry process instances; read their state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.task import TaskState
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, joinedload

from engine import results
from engine.context import EngineContext
from engine.db import UnitOfWork
from engine.errors import ConflictError, NotFoundError
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
    mutate_instance,
    new_instance,
    open_instance,
    persist,
    retry_failed,
)
from engine.models import HumanTask, ProcessDefinition, ProcessInstance, TaskCandidate
from engine.query import Query
from engine.serialization import check_variables, data_to_json
from engine.timers import shift_timers


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
    )


class InstanceQuery(Query[results.ProcessInstance]):
    def id(self, instance_id: str) -> InstanceQuery:
        return self._where(ProcessInstance.id == instance_id)

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
        or with a task they handled or that is offered to them or their groups."""
        tasks = select(HumanTask.instance_id).where(
            or_(
                HumanTask.assignee == user,
                HumanTask.completed_by == user,
                HumanTask.claimed_by == user,
                and_(
                    HumanTask.assignee.is_(None),
                    HumanTask.id.in_(
                        select(TaskCandidate.task_id).where(
                            or_(
                                and_(TaskCandidate.kind == "user", TaskCandidate.name == user),
                                and_(TaskCandidate.kind == "group", TaskCandidate.name.in_(list(groups))),
                            )
                        )
                    ),
                ),
            )
        )
        return self._where(
            or_(ProcessInstance.started_by.in_([user, *starters]), ProcessInstance.id.in_(tasks))
        )

    def order_by_started(self, descending: bool = True) -> InstanceQuery:
        col = ProcessInstance.started_at
        return self._order_by(col.desc() if descending else col, ProcessInstance.id)


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
) -> InstanceRecord:
    """Create and run an instance of ``definition`` inside the caller's unit of work (not committed).

    ``prepare`` may adjust the fresh workflow before its first steps (a timer or message start).
    """
    session = uow.session
    now = ctx.now()
    live = new_instance(ctx, session, definition, business_key=business_key, started_by=started_by, now=now)
    data = variables or {}

    def seed() -> None:
        if prepare is not None:
            prepare(live.workflow)
        for task in live.workflow.get_tasks(state=TaskState.READY):
            task.data.update(data)

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


def shift_open_task_dues(session: Session, instance_id: str, delta: timedelta) -> None:
    """Move the due and warning times of an instance's open tasks (a paused SLA clock)."""
    rows = session.execute(
        select(HumanTask.id, HumanTask.due_at, HumanTask.warn_at).where(
            HumanTask.instance_id == instance_id, HumanTask.state == "ready", HumanTask.due_at.is_not(None)
        )
    ).all()
    for task_id, due_at, warn_at in rows:
        session.execute(
            update(HumanTask)
            .where(HumanTask.id == task_id)
            .values(
                due_at=due_at + delta,
                warn_at=warn_at + delta if warn_at else None,
                version=HumanTask.version + 1,
            )
            .execution_options(synchronize_session=False)
        )


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
            live.row.sla_paused_at = now
            self._ctx.audit(
                session,
                "sla_paused",
                actor=actor,
                instance_id=instance_id,
                details={"reason": reason},
                at=now,
            )
            return Mutation()

        mutate_instance(
            self._ctx, instance_id, change, actor=actor, allowed_states=(RUNNING, SUSPENDED, ERROR)
        )
        return self.get(instance_id)

    def resume_sla(
        self, instance_id: str, *, actor: str | None, reason: str | None = None
    ) -> results.ProcessInstance:
        """Restart the SLA clock: every waiting timer and open task due date moves later by the pause."""

        def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
            paused_at = live.row.sla_paused_at
            if paused_at is None:
                raise ConflictError("the SLA clock is not paused")
            delta = now - paused_at
            shift_timers(live.workflow, delta)
            shift_open_task_dues(session, instance_id, delta)
            live.row.sla_paused_at = None
            self._ctx.audit(
                session,
                "sla_resumed",
                actor=actor,
                instance_id=instance_id,
                details={"reason": reason, "paused_seconds": round(delta.total_seconds(), 3)},
                at=now,
            )
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
        workflow = open_instance(self._ctx, session, row, for_change=False).workflow
        last = workflow.last_task or workflow.task_tree
        return data_to_json({**workflow.data, **last.data})

    def query(self) -> InstanceQuery:
        return InstanceQuery(
            self._ctx.db, select(ProcessInstance).options(joinedload(ProcessInstance.definition)), to_instance
        )
