"""Management service: the jobs table (timers now), leased by schedulers through the database.

Several scheduler processes may run against one PostgreSQL database: each leases a batch of due
jobs with ``FOR UPDATE SKIP LOCKED`` (on SQLite, ``BEGIN IMMEDIATE`` makes the lease a single
writer's), fires them one instance command at a time, and releases the lease. A crashed process's
lease expires and another process picks the job up; a job that keeps failing backs off and, after
its last attempt, becomes a ``failed`` incident for a manager to look at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update

from engine.context import EngineContext
from engine.errors import ConflictError, NotFoundError
from engine.execution import RUNNING, LiveInstance, Mutation, advance, conflicts_as_errors, mutate_instance
from engine.models import Job, ProcessDefinition, ProcessInstance
from engine.runtime import latest_definition, start_instance
from engine.start_events import next_run, prime_timer_start
from engine.timers import collapse_missed_cycles, waiting_timers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeasedJob:
    id: int
    kind: str
    instance_id: str | None
    due_at: datetime
    attempts: int


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    ok: bool
    error: str | None = None


class ManagementService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def acquire_due_jobs(self, owner: str, *, limit: int = 50, lease_seconds: float = 60) -> list[LeasedJob]:
        """Lease up to ``limit`` due jobs for ``owner``; nobody else fires them until the lease ends."""
        ctx = self._ctx
        with ctx.db.unit_of_work() as uow:
            now = ctx.now()
            stmt = (
                select(Job)
                .where(
                    Job.state == "pending",
                    Job.due_at <= now,
                    or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
                )
                .order_by(Job.due_at)
                .limit(limit)
            )
            if ctx.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            jobs = list(uow.session.scalars(stmt))
            expires = now + timedelta(seconds=lease_seconds)
            for job in jobs:
                job.lease_owner, job.lease_expires_at = owner, expires
            leased = [LeasedJob(j.id, j.kind, j.instance_id, j.due_at, j.attempts) for j in jobs]
            uow.commit()
        return leased

    def fire(self, job: LeasedJob, owner: str) -> JobOutcome:
        """Run one leased job. Failures are recorded on the job (retry with back-off, then incident)."""
        try:
            if job.kind == "timer" and job.instance_id:
                self._fire_timers(job.instance_id)
            elif job.kind == "start_timer":
                self._fire_start_timer(job, owner)
            else:
                raise ValueError(f"unknown job kind {job.kind!r}")
        except ConflictError as exc:
            if self._instance_state(job.instance_id) not in (RUNNING, None):
                self._postpone(job, owner, seconds=30)  # suspended: look again later, no attempt used
                return JobOutcome(job.id, True, str(exc))
            self._record_failure(job, owner, str(exc))
            return JobOutcome(job.id, False, str(exc))
        except NotFoundError:
            self._release(job, owner)
            return JobOutcome(job.id, True)
        except Exception as exc:  # noqa: BLE001 - a job must never take the scheduler down
            log.exception("job %s failed", job.id)
            self._record_failure(job, owner, f"{exc.__class__.__name__}: {exc}")
            return JobOutcome(job.id, False, str(exc))
        self._release(job, owner)
        return JobOutcome(job.id, True)

    def _fire_timers(self, instance_id: str) -> None:
        """Fire the instance's due timers; every timer that fired is audited once, by element.

        Reminder cycles missed while no scheduler ran are collapsed first, so a long outage gives
        one reminder, not a burst of them.
        """
        ctx = self._ctx

        def change(session, live: LiveInstance, now: datetime) -> Mutation:
            skipped = collapse_missed_cycles(live.workflow, now)
            before = waiting_timers(live.workflow)
            failure = advance(live.workflow, live.workflow.refresh_timers)
            after = waiting_timers(live.workflow)
            for task_id, (element_id, value) in before.items():
                if task_id not in after or after[task_id][1] != value:
                    details = {"skipped_cycles": skipped[task_id]} if skipped.get(task_id) else None
                    ctx.audit(
                        session,
                        "timer_fired",
                        actor="scheduler",
                        instance_id=instance_id,
                        task_id=task_id,
                        element_id=element_id,
                        details=details,
                        at=now,
                    )
            return Mutation(failure=failure)

        mutate_instance(ctx, instance_id, change, actor="scheduler")

    def _fire_start_timer(self, job: LeasedJob, owner: str) -> None:
        """Start an instance and re-schedule the job in one transaction: never lost, never doubled."""
        ctx = self._ctx
        with conflicts_as_errors(), ctx.db.unit_of_work() as uow:
            session = uow.session
            row = session.get(Job, job.id, with_for_update=ctx.db.dialect == "postgresql")
            if row is None or row.lease_owner != owner:
                return  # our lease ran out and another scheduler took the job over
            definition = session.get(ProcessDefinition, row.definition_id)
            if definition is None or latest_definition(session, definition.key).id != definition.id:
                session.delete(row)  # a newer version took over the schedule
                uow.commit()
                return
            now = ctx.now()
            payload = dict(row.payload or {})
            element_id = payload.get("element_id")
            record = start_instance(
                ctx,
                uow,
                definition,
                started_by="scheduler",
                prepare=lambda workflow: prime_timer_start(workflow, element_id, now),
            )
            due, skipped = next_run(row.due_at, payload, now)
            ctx.audit(
                session,
                "start_timer_fired",
                actor="scheduler",
                instance_id=record.id,
                element_id=element_id,
                details={
                    "definition": f"{definition.key}:{definition.version}",
                    "skipped_cycles": skipped,
                    "next": due.isoformat() if due else None,
                },
                at=now,
            )
            if due is None:
                session.delete(row)
            else:
                row.due_at, row.payload, row.attempts = due, payload, 0
                row.lease_owner, row.lease_expires_at = None, None
            uow.commit()

    def _instance_state(self, instance_id: str | None) -> str | None:
        if instance_id is None:
            return None
        with self._ctx.db.unit_of_work(write=False) as uow:
            return uow.session.scalar(select(ProcessInstance.state).where(ProcessInstance.id == instance_id))

    def _owned(self, job: LeasedJob, owner: str):
        return and_(Job.id == job.id, Job.lease_owner == owner)

    def _release(self, job: LeasedJob, owner: str) -> None:
        """Free the lease if the job row survived the command (it is replaced when timers change)."""
        with self._ctx.db.unit_of_work() as uow:
            uow.session.execute(
                update(Job).where(self._owned(job, owner)).values(lease_owner=None, lease_expires_at=None)
            )
            uow.commit()

    def _postpone(self, job: LeasedJob, owner: str, *, seconds: float) -> None:
        with self._ctx.db.unit_of_work() as uow:
            uow.session.execute(
                update(Job)
                .where(self._owned(job, owner))
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    due_at=self._ctx.now() + timedelta(seconds=seconds),
                )
            )
            uow.commit()

    def _record_failure(self, job: LeasedJob, owner: str, error: str) -> None:
        ctx = self._ctx
        with ctx.db.unit_of_work() as uow:
            row = uow.session.get(Job, job.id)
            if row is None or row.lease_owner != owner:
                return
            now = ctx.now()
            row.attempts += 1
            row.last_error = error[:4000]
            row.lease_owner, row.lease_expires_at = None, None
            if row.attempts >= row.max_attempts:
                row.state = "failed"
                ctx.audit(
                    uow.session,
                    "incident",
                    actor="scheduler",
                    instance_id=row.instance_id,
                    details={"job": row.id, "kind": row.kind, "error": row.last_error},
                    at=now,
                )
            else:
                row.due_at = now + timedelta(seconds=min(2**row.attempts * 5, 3600))
            uow.commit()

    def failed_jobs(self) -> list[dict]:
        """Incidents: jobs that used up their attempts."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            rows = uow.session.scalars(select(Job).where(Job.state == "failed").order_by(Job.id))
            return [
                {
                    "id": j.id,
                    "kind": j.kind,
                    "instance_id": j.instance_id,
                    "attempts": j.attempts,
                    "error": j.last_error,
                }
                for j in rows
            ]
