"""Management service: the jobs table (timers now), leased by schedulers through the database.

Several scheduler processes may run against one PostgreSQL database: each leases a batch of due
jobs with ``FOR UPDATE SKIP LOCKED`` (on SQLite, ``BEGIN IMMEDIATE`` makes the lease a single
writer's) and fires each in one instance command. That command's transaction also replaces the
instance's timer job row (see ``engine.execution``), so a timer's effects, its audit entry and the
end of its job commit together: a firing is never lost and never doubled. A crashed process's
lease expires and another process picks the job up; a job that keeps failing backs off and, after
its last attempt, becomes a ``failed`` incident for a manager to look at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update

from engine.connectors import RETRY_JOB, sync_retry_job
from engine.context import EngineContext
from engine.errors import ConflictError, NotFoundError
from engine.execution import (
    ERROR,
    RUNNING,
    LiveInstance,
    Mutation,
    advance,
    conflicts_as_errors,
    mutate_instance,
    persist,
    timer_job_due,
)
from engine.models import Job, ProcessDefinition, ProcessInstance
from engine.retention import RETENTION_JOB, fire_retention_job
from engine.runtime import RuntimeService, latest_definition, start_instance
from engine.start_events import next_run, prime_timer_start
from engine.timers import due_timers, is_cycle, skip_cycles, timers_held, waiting_timers

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


_MAX_FIRINGS = 100  # timers fired in one command at most (a loop of past-due timers must end)
_J = Job.__table__.c
_DUE_JOBS = (
    select(_J.id)
    .where(
        _J.state == "pending",
        _J.due_at <= bindparam("now"),
        or_(_J.lease_expires_at.is_(None), _J.lease_expires_at < bindparam("now")),
    )
    .order_by(_J.due_at)
    .limit(bindparam("limit"))
)
_DUE_JOBS_LOCKED = _DUE_JOBS.with_for_update(skip_locked=True)
_LEASE = (
    update(Job.__table__)
    .where(_J.id.in_(bindparam("ids", expanding=True)))
    .values(lease_owner=bindparam("owner"), lease_expires_at=bindparam("expires"))
    .returning(_J.id, _J.kind, _J.instance_id, _J.due_at, _J.attempts)
)
_RELEASE = (
    update(Job.__table__)
    .where(_J.id == bindparam("b_id"), _J.lease_owner == bindparam("b_owner"))
    .values(lease_owner=None, lease_expires_at=None)
)
_POSTPONE = _RELEASE.values(due_at=bindparam("due_at"))


def due_jobs_query():
    """The statement that finds due jobs (for EXPLAIN: ``now`` and ``limit`` are its parameters)."""
    return _DUE_JOBS


class ManagementService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def acquire_due_jobs(self, owner: str, *, limit: int = 50, lease_seconds: float = 60) -> list[LeasedJob]:
        """Lease up to ``limit`` due jobs for ``owner``; nobody else fires them until the lease ends.

        A short transaction of two statements (pick, lease): PostgreSQL skips the rows another
        scheduler is leasing right now (``FOR UPDATE SKIP LOCKED``), SQLite holds the write lock
        (``BEGIN IMMEDIATE``).
        The query walks the ``(state, due_at)`` index from the oldest due job and stops at ``limit``:
        jobs not due yet, failed jobs and instances without timers are never read.
        """
        ctx = self._ctx
        locking = ctx.db.dialect == "postgresql"
        if not locking and not self._anything_due():
            return []  # SQLite: an empty poll takes no write lock away from the web requests
        with ctx.db.unit_of_work() as uow:
            conn, now = uow.session.connection(), ctx.now()
            picked = conn.execute(_DUE_JOBS_LOCKED if locking else _DUE_JOBS, {"now": now, "limit": limit})
            ids = list(picked.scalars())
            if not ids:
                return []
            expires = now + timedelta(seconds=lease_seconds)
            rows = conn.execute(_LEASE, {"ids": ids, "owner": owner, "expires": expires}).all()
            uow.commit()
        leased = [LeasedJob(r.id, r.kind, r.instance_id, r.due_at, r.attempts) for r in rows]
        return sorted(leased, key=lambda job: (job.due_at, job.id))

    def _anything_due(self) -> bool:
        with self._ctx.db.unit_of_work(write=False) as uow:
            params = {"now": self._ctx.now(), "limit": 1}
            return uow.session.connection().execute(_DUE_JOBS, params).first() is not None

    def fire(self, job: LeasedJob, owner: str) -> JobOutcome:
        """Run one leased job. Failures are recorded on the job (retry with back-off, then incident)."""
        try:
            if job.kind == "timer" and job.instance_id:
                if not self._fire_timers(job.instance_id):
                    return JobOutcome(job.id, True)  # the firing replaced (or removed) the job row
            elif job.kind == "start_timer":
                self._fire_start_timer(job, owner)
            elif job.kind == RETENTION_JOB:
                fire_retention_job(self._ctx, job.id, owner)
            elif job.kind == RETRY_JOB and job.instance_id:
                error = self._retry_step(job.instance_id)
                if error is not None:
                    self._record_failure(job, owner, error)  # back off; after the last attempt: incident
                    return JobOutcome(job.id, False, error)
                return JobOutcome(job.id, True)  # the retry (or the clean-up) removed the job row
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

    def _fire_timers(self, instance_id: str) -> bool:
        """Fire the instance's due timers in due order; every timer that fired is audited once.

        Returns whether the job row outlived the command (nothing changed the due time); otherwise
        the command replaced or removed the row in its own transaction and there is no lease left.

        After an outage (no scheduler ran for a while) the missed occurrences are replayed in
        order, but each timer fires at most once per command: a reminder cycle's missed
        occurrences collapse into one firing (``skipped_cycles`` in the audit entry), and only
        the occurrences due before the next other timer count, so an interrupting SLA that was
        due in the middle of the outage still cuts the cycle off where it would have. When
        several timers fire, the projections (inbox, audit) are written after each one, in the
        same transaction: a reminder opened and then cancelled by an escalation is on record.
        """
        ctx = self._ctx
        outcome = {"loaded_due": None}

        def change(session, live: LiveInstance, now: datetime) -> Mutation:
            outcome["loaded_due"] = live.previous_due
            if getattr(live.row, "sla_paused_at", None) is not None:
                return Mutation()  # the SLA clock stands still: its timers wait for resume_sla
            fired: dict[str, dict] = {}  # task id -> the details of its firing, in firing order
            failure = None
            for _ in range(_MAX_FIRINGS):
                pending = [(d, t) for d, t in due_timers(live.workflow, now) if str(t.id) not in fired]
                if not pending:
                    break
                due, task = pending[0]
                skipped = skip_cycles(task, pending[1][0] if len(pending) > 1 else now)
                if fired:  # a second timer in this command: record the first one's effects first
                    live.before = persist(ctx, session, live, actor="scheduler", now=now)
                    live.previous_due = timer_job_due(live.row)
                task_id = str(task.id)
                element_id, value = waiting_timers(live.workflow)[task_id]
                with timers_held(live.workflow):
                    failure = advance(live.workflow, lambda task=task: task.task_spec._update(task))
                fired[task_id] = details = {"due": due.isoformat()}
                if skipped:
                    details["skipped_cycles"] = skipped
                after = waiting_timers(live.workflow).get(task_id)
                if after is None or after[1] != value:
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
                if failure is not None:
                    break
            # A cycle that fired here and is due again: the rest of the outage is skipped, not fired.
            # (The audit entry is still in this transaction's buffer: its details are completed here.)
            for _, task in due_timers(live.workflow, now):
                details = fired.get(str(task.id))
                more = skip_cycles(task, now, keep_due=False) if details is not None and is_cycle(task) else 0
                if more:
                    details["skipped_cycles"] = details.get("skipped_cycles", 0) + more
            return Mutation(failure=failure)

        row = mutate_instance(ctx, instance_id, change, actor="scheduler")
        return timer_job_due(row) == outcome["loaded_due"]

    def _retry_step(self, instance_id: str) -> str | None:
        """Run a failed service task again through the instances' retry path (engine.connectors);
        returns why it failed again, or None (it worked, or there is nothing left to retry)."""
        if self._instance_state(instance_id) != ERROR:  # retried by hand, or cancelled meanwhile
            with self._ctx.db.unit_of_work() as uow:
                sync_retry_job(uow.session.connection(), instance_id, retry=False, now=self._ctx.now())
                uow.commit()
            return None
        instance = RuntimeService(self._ctx).retry(instance_id, actor="scheduler")
        return (instance.error_message or "the step failed again") if instance.state == ERROR else None

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

    def _release(self, job: LeasedJob, owner: str) -> None:
        """Free the lease if the job row survived the command (it is replaced when timers change)."""
        with self._ctx.db.unit_of_work() as uow:
            uow.session.connection().execute(_RELEASE, {"b_id": job.id, "b_owner": owner})
            uow.commit()

    def _postpone(self, job: LeasedJob, owner: str, *, seconds: float) -> None:
        due = self._ctx.now() + timedelta(seconds=seconds)
        with self._ctx.db.unit_of_work() as uow:
            uow.session.connection().execute(_POSTPONE, {"b_id": job.id, "b_owner": owner, "due_at": due})
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
