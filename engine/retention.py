"""History retention: N days after an instance finished, its engine state goes; its history stays.

An instance that completed or was cancelled more than ``days`` ago no longer needs what only a
running instance uses: the serialized workflow (``process_instance.engine_state``, most of the
database's size), the candidates of its tasks, its jobs and message subscriptions, and, when the
policy says ``remove``, its uploaded files. Retention removes them, after writing them to one
gzip JSON file per instance when an archive directory is configured ("archive"; else "purge").

It keeps everything people read afterwards: the ``process_instance`` row (state, starter, times),
the ``human_task`` rows, comments and the audit log. Every figure of engine/measures.py is computed
from those rows only, so it is the same before and after. Each archived instance gets an
``instance_archived`` audit entry (where its state went), and each run a ``retention_run`` entry.

Runs come from ``baton retention`` or from the scheduler: a ``retention`` row in the job table,
leased like a timer job (so one scheduler process runs it), fires daily while the policy is on.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from engine import results
from engine.context import EngineContext
from engine.errors import ValidationError
from engine.execution import FINISHED, conflicts_as_errors
from engine.models import (
    Attachment,
    AuditEntry,
    HumanTask,
    Job,
    MessageSubscription,
    ProcessDefinition,
    ProcessInstance,
    TaskCandidate,
)

RETENTION_JOB = "retention"  # the kind of the job row that runs retention daily
ARCHIVE_FORMAT = "baton.instance-archive/1"
ATTACHMENT_POLICIES = ("keep", "remove")
BATCH = 100  # instances per transaction
JOB_LIMIT = 1000  # instances per scheduled firing (well within a job's lease); the rest next poll
INTERVAL = timedelta(days=1)
_LOCK = 0x62617430  # PostgreSQL advisory lock: one scheduler at a time sets up the job row

_I = ProcessInstance.__table__.c
_ELIGIBLE = (_I.state.in_(FINISHED), _I.engine_state.is_not(None))


class RetentionService:
    def __init__(self, ctx: EngineContext) -> None:
        if ctx.config.retention_attachments not in ATTACHMENT_POLICIES:
            raise ValueError(
                f"retention_attachments (BATON_RETENTION_ATTACHMENTS) must be one of "
                f"{', '.join(ATTACHMENT_POLICIES)}, not {ctx.config.retention_attachments!r}"
            )
        self._ctx = ctx

    def run(
        self,
        *,
        days: int | None = None,
        archive_dir: str | Path | None = None,
        dry_run: bool = False,
        actor: str | None = "retention",
        limit: int | None = None,
    ) -> results.RetentionReport:
        """Remove (or archive) the engine state of instances finished more than ``days`` ago.

        ``days`` and ``archive_dir`` default to the configured policy. ``dry_run`` lists what would
        go and writes nothing (no file, no row, no audit entry). At most ``limit`` instances are
        handled (None: all), oldest first. Raises ValidationError (no policy and no ``days``).
        """
        config = self._ctx.config
        days = days if days is not None else config.retention_days
        if days is None:
            raise ValidationError("history retention is off: give a number of days (BATON_RETENTION_DAYS)")
        if days < 1:
            raise ValidationError("retention needs at least 1 day")
        directory = Path(archive_dir) if archive_dir else config.retention_archive_dir
        remove_files = config.retention_attachments == "remove"
        now = self._ctx.now()
        cutoff = now - timedelta(days=days)
        ids, total = self._eligible(cutoff, limit)
        mode = "archive" if directory is not None else "purge"
        if dry_run:
            files = self._attachment_count(ids) if remove_files else 0
            return results.RetentionReport(
                days, cutoff, mode, _text(directory), True, tuple(ids), files, total - len(ids)
            )
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        done: list[str] = []
        removed_files = 0
        policy = {"days": days, "cutoff": cutoff.isoformat(), "mode": mode}
        for batch in _chunks(ids, BATCH):
            with conflicts_as_errors(), self._ctx.db.unit_of_work() as uow:
                for instance_id in batch:
                    files = _archive(
                        self._ctx, uow.session, instance_id, cutoff, directory, remove_files, actor, policy
                    )
                    if files is not None:
                        done.append(instance_id)
                        removed_files += files
                uow.commit()
        remaining = self._eligible(cutoff, 0)[1]
        with self._ctx.db.unit_of_work() as uow:
            self._ctx.audit(
                uow.session,
                "retention_run",
                actor=actor,
                details={
                    **policy,
                    "archive_dir": _text(directory),
                    "attachments": config.retention_attachments,
                    "instances": len(done),
                    "attachments_removed": removed_files,
                    "remaining": remaining,
                },
                at=now,
            )
            uow.commit()
        return results.RetentionReport(
            days, cutoff, mode, _text(directory), False, tuple(done), removed_files, remaining
        )

    def _eligible(self, cutoff: datetime, limit: int | None) -> tuple[list[str], int]:
        """The ids of up to ``limit`` instances to handle (oldest first), and how many there are."""
        where = (*_ELIGIBLE, _I.ended_at < cutoff)
        with self._ctx.db.unit_of_work(write=False) as uow:
            conn = uow.session.connection()
            total = conn.scalar(select(func.count()).select_from(ProcessInstance.__table__).where(*where))
            if limit == 0:
                return [], total
            stmt = select(_I.id).where(*where).order_by(_I.ended_at, _I.id)
            return list(conn.scalars(stmt if limit is None else stmt.limit(limit))), total

    def _attachment_count(self, ids: list[str]) -> int:
        with self._ctx.db.unit_of_work(write=False) as uow:
            return sum(
                uow.session.scalar(
                    select(func.count()).select_from(Attachment).where(Attachment.instance_id.in_(batch))
                )
                for batch in _chunks(ids, 500)
            )

    def archived(self, instance_id: str) -> results.ArchivedState | None:
        """Whether retention removed the instance's engine state: when, how and where it went."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            entry = uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.instance_id == instance_id, AuditEntry.action == "instance_archived")
                .order_by(AuditEntry.id.desc())
                .limit(1)
            ).first()
            if entry is None:
                return None
            details = entry.details or {}
            return results.ArchivedState(
                instance_id,
                entry.at,
                str(details.get("mode", "purge")),
                details.get("file"),
                int((details.get("removed") or {}).get("attachments", 0)),
            )

    def schedule(self) -> bool:
        """Keep one ``retention`` job row while a policy is set, none otherwise (schedulers call
        this when they start). Returns whether retention is scheduled."""
        ctx = self._ctx
        days = ctx.config.retention_days
        with ctx.db.unit_of_work() as uow:
            session = uow.session
            if ctx.db.dialect == "postgresql":
                session.execute(select(func.pg_advisory_xact_lock(_LOCK)))
            rows = session.scalars(select(Job).where(Job.kind == RETENTION_JOB).order_by(Job.id)).all()
            keep = rows[:1] if days is not None else []
            for row in rows[len(keep) :]:
                session.delete(row)
            now = ctx.now()
            if days is not None and not keep:
                session.add(_new_job(now))
            if (days is not None) != bool(rows):
                details = {"days": days, "archive_dir": _text(ctx.config.retention_archive_dir)}
                action = "retention_scheduled" if days is not None else "retention_unscheduled"
                ctx.audit(session, action, actor="scheduler", details=details, at=now)
            uow.commit()
        return days is not None


def fire_retention_job(ctx: EngineContext, job_id: int, owner: str) -> None:
    """Run retention for a leased job, then set the job for tomorrow (or the next poll if instances
    are left over); with the policy switched off, the job row goes."""
    with ctx.db.unit_of_work() as uow:
        row = uow.session.get(Job, job_id)
        if row is None or row.lease_owner != owner:
            return  # our lease ran out and another scheduler took the job over
        if ctx.config.retention_days is None:
            uow.session.delete(row)
            uow.commit()
            return
    report = RetentionService(ctx).run(actor="scheduler", limit=JOB_LIMIT)
    with ctx.db.unit_of_work() as uow:
        row = uow.session.get(Job, job_id)
        if row is not None and row.lease_owner == owner:
            now = ctx.now()
            row.due_at = now if report.remaining else now + INTERVAL
            row.attempts, row.lease_owner, row.lease_expires_at = 0, None, None
            uow.commit()


def _new_job(now: datetime) -> Job:
    return Job(
        kind=RETENTION_JOB,
        instance_id=None,
        definition_id=None,
        due_at=now,
        state="pending",
        attempts=0,
        max_attempts=5,
        created_at=now,
    )


def _archive(
    ctx: EngineContext,
    session: Session,
    instance_id: str,
    cutoff: datetime,
    directory: Path | None,
    remove_files: bool,
    actor: str | None,
    policy: dict[str, Any],
) -> int | None:
    """Archive or purge one instance in the caller's transaction; None if it no longer qualifies
    (another run got there first). Returns how many attachments went."""
    stmt = select(ProcessInstance.__table__, ProcessDefinition.version.label("definition_version")).join(
        ProcessDefinition, ProcessDefinition.id == _I.definition_id
    )
    stmt = stmt.where(_I.id == instance_id, *_ELIGIBLE)
    if ctx.db.dialect == "postgresql":
        stmt = stmt.with_for_update(of=ProcessInstance.__table__)
    found = session.execute(stmt).mappings().first()
    if found is None or found["ended_at"] is None or found["ended_at"] >= cutoff:
        return None
    tasks = select(HumanTask.id).where(HumanTask.instance_id == instance_id)
    removed = {
        "task_candidates": (TaskCandidate, TaskCandidate.task_id.in_(tasks)),
        "message_subscriptions": (MessageSubscription, MessageSubscription.instance_id == instance_id),
        "jobs": (Job, Job.instance_id == instance_id),
    }
    if remove_files:
        removed["attachments"] = (Attachment, Attachment.instance_id == instance_id)
    rows = {name: _rows(session, model, where) for name, (model, where) in removed.items()}
    details: dict[str, Any] = {
        **policy,
        "state_bytes": len(found["engine_state"]),
        "removed": {name: len(found_rows) for name, found_rows in rows.items()},
    }
    if directory is not None:
        details["file"] = str(_write_archive(directory, found, rows, ctx.now()))
    changed = session.execute(
        update(ProcessInstance.__table__)
        .where(_I.id == instance_id, _I.version == found["version"])
        .values(engine_state=None, version=found["version"] + 1)
    ).rowcount
    if changed != 1:
        return None
    for model, where in removed.values():
        session.execute(delete(model.__table__).where(where))
    ctx.audit(session, "instance_archived", actor=actor, instance_id=instance_id, details=details)
    ctx.live.discard(instance_id)
    return len(rows.get("attachments", ()))


def _rows(session: Session, model: type, where: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in session.execute(select(model.__table__).where(where)).mappings()]


def _write_archive(
    directory: Path, instance: Any, rows: dict[str, list[dict[str, Any]]], now: datetime
) -> Path:
    """One gzip JSON document per instance, under YEAR/MONTH of its end, written atomically."""
    ended: datetime = instance["ended_at"]
    folder = directory / f"{ended:%Y}" / f"{ended:%m}"
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "format": ARCHIVE_FORMAT,
        "archived_at": now.isoformat(),
        "instance": {k: _json(v) for k, v in instance.items() if k != "engine_state"},
        # exactly what the serializer wrote (restore: put it back with its serializer_version)
        "engine_state": instance["engine_state"],
        **{name: [{k: _json(v) for k, v in r.items()} for r in found] for name, found in rows.items()},
    }
    data = gzip.compress(json.dumps(document, ensure_ascii=False).encode(), mtime=0)
    target = folder / f"{instance['id']}.json.gz"
    fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    return value


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
