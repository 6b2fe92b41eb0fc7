"""Task service: the human tasks people claim, complete and hand over."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from SpiffWorkflow.task import TaskState
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session, joinedload

from engine import results
from engine.bpmn import human_task_meta
from engine.context import EngineContext
from engine.db import Database
from engine.errors import ConflictError, NotFoundError, ValidationError
from engine.execution import LiveInstance, Mutation, advance, conflicts_as_errors, mutate_instance, task_by_id
from engine.forms import Form, clean
from engine.models import Attachment as AttachmentRow
from engine.models import Comment as CommentRow
from engine.models import HumanTask, ProcessInstance, TaskCandidate
from engine.query import Lazy, Query
from engine.serialization import check_variables, data_to_json


def sla_state(
    due_at: datetime | None, warn_at: datetime | None, now: datetime, paused: bool = False
) -> str | None:
    if due_at is None:
        return None
    if paused:
        return "paused"
    if now >= due_at:
        return "breached"
    if warn_at is not None and now >= warn_at:
        return "warning"
    return "on_track"


def to_task(row: HumanTask, now: datetime | None = None) -> results.UserTask:
    return results.UserTask(
        id=row.id,
        instance_id=row.instance_id,
        definition_key=row.definition_key,
        element_id=row.element_id,
        name=row.name,
        lane=row.lane,
        assignee=row.assignee,
        candidate_users=tuple((row.offers or {}).get("users", ())),
        candidate_groups=tuple((row.offers or {}).get("groups", ())),
        due_at=row.due_at,
        warn_at=row.warn_at,
        sla_state=sla_state(
            row.due_at, row.warn_at, now or datetime.now(UTC), row.instance.sla_paused_at is not None
        ),
        priority=row.priority,
        form_key=row.form_key,
        state=row.state,
        created_at=row.created_at,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        completed_by=row.completed_by,
        completed_at=row.completed_at,
        version=row.version,
    )


class TaskQuery(Query[results.UserTask]):
    def id(self, task_id: str) -> TaskQuery:
        return self._where_key(HumanTask.id == task_id)

    def open(self) -> TaskQuery:
        return self._where(HumanTask.state == "ready")

    def state(self, *states: str) -> TaskQuery:
        return self._where(HumanTask.state.in_(states))

    def completed_by(self, user: str) -> TaskQuery:
        return self._where(HumanTask.completed_by == user)

    def instance(self, instance_id: str) -> TaskQuery:
        return self._where_key(HumanTask.instance_id == instance_id)

    def assignee(self, user: str) -> TaskQuery:
        return self._where(HumanTask.assignee == user)

    def unassigned(self) -> TaskQuery:
        return self._where(HumanTask.assignee.is_(None))

    def candidate_user(self, user: str) -> TaskQuery:
        return self._where(HumanTask.id.in_(_candidates("user", [user])))

    def candidate_groups(self, *groups: str) -> TaskQuery:
        return self._where(HumanTask.id.in_(_candidates("group", groups)))

    def offered_to(self, user: str, groups: Iterable[str] = ()) -> TaskQuery:
        """Tasks a user may take: assigned to them, or unassigned and offered to them or their groups."""
        return self._any_of(HumanTask.assignee == user, offered_clause(self._db, user, groups))

    def group_pool(self, user: str, groups: Iterable[str] = ()) -> TaskQuery:
        """Unassigned tasks offered to the user or one of their groups (the group inbox)."""
        return self._any_of(offered_clause(self._db, user, groups))

    def visible_to(self, user: str, groups: Iterable[str] = (), *, starters: Iterable[str] = ()) -> TaskQuery:
        """Tasks a user may see: offered to them (as above), ones they handled, and the tasks of
        instances started by them or by ``starters`` (a manager's departments).

        One UNION member per way of seeing a task (engine/query.py), each with its index."""
        people = [user, *starters]
        return self._any_of(
            HumanTask.assignee == user,
            HumanTask.claimed_by == user,
            HumanTask.completed_by == user,
            offered_clause(self._db, user, groups),
            HumanTask.instance_id.in_(
                select(ProcessInstance.id).where(ProcessInstance.started_by.in_(people))
            ),
        )

    def definition(self, key: str) -> TaskQuery:
        return self._where(HumanTask.definition_key == key)

    def priority_at_least(self, priority: int) -> TaskQuery:
        return self._where(HumanTask.priority >= priority)

    def started_by(self, user: str) -> TaskQuery:
        return self._where(
            HumanTask.instance_id.in_(select(ProcessInstance.id).where(ProcessInstance.started_by == user))
        )

    def order_by_priority(self) -> TaskQuery:
        return self._order_by(HumanTask.priority.desc(), *self._due_first(), HumanTask.id)

    def _due_first(self) -> tuple[Any, ...]:
        """Due date ascending, tasks without one last. PostgreSQL: ``NULLS LAST``, the order of its
        indexes on due_at (so a page is an index walk); SQLite stores NULLs first either way."""
        if self._db.dialect == "postgresql":
            return (HumanTask.due_at.asc().nulls_last(),)
        return (HumanTask.due_at.is_(None), HumanTask.due_at)

    def order_by_completed(self) -> TaskQuery:
        return self._order_by(HumanTask.completed_at.desc(), HumanTask.id)

    def element(self, element_id: str) -> TaskQuery:
        return self._where(HumanTask.element_id == element_id)

    def sla(self, state: str, now: datetime) -> TaskQuery:
        """Open tasks by SLA state at ``now``: on_track, warning or breached (paused clocks excluded)."""
        # a probe of the task's own instance, not a list of every running instance
        running = exists().where(
            ProcessInstance.id == HumanTask.instance_id, ProcessInstance.sla_paused_at.is_(None)
        )
        if state == "breached":
            return self._where(HumanTask.due_at <= now, running)
        if state == "warning":
            return self._where(HumanTask.warn_at <= now, HumanTask.due_at > now, running)
        if state == "on_track":
            return self._where(
                or_(HumanTask.due_at.is_(None), and_(HumanTask.due_at > now, HumanTask.warn_at > now)),
                running,
            )
        raise ValidationError(f"unknown SLA state {state!r}: on_track, warning or breached")

    def order_by_due(self) -> TaskQuery:
        return self._order_by(*self._due_first(), HumanTask.created_at, HumanTask.id)

    def order_by_created(self) -> TaskQuery:
        return self._order_by(HumanTask.created_at, HumanTask.id)


_ACTION = re.compile(r"[a-z][a-z0-9_]{2,49}")


def _comment_body(body: str | None) -> str:
    body = (body or "").strip()
    if not body or len(body) > 5000:
        raise ValidationError("a comment needs 1 to 5000 characters")
    return body


#: up to this many open offers, "offered to me" is matched by the ids themselves (see offered_clause)
FEW_OFFERS = 2000


def offered_clause(db: Database, user: str, groups: Iterable[str]) -> Lazy:
    """Unassigned tasks whose candidates include the user or one of their groups: a ``Lazy``
    branch (engine/query.py), its shape chosen when the query runs.

    - Narrow (one task, one instance's tasks): a correlated EXISTS, a primary-key probe of each of
      the handful of rows. Nothing is read first: a visibility check is one statement.
    - Wide (an inbox page, a count): the shape depends on how many open offers the user has
      (task_candidate holds open offers only), read first with one short index-only query:
      up to ``FEW_OFFERS`` (an ordinary colleague: ~1,500 among 230,000 pooled tasks) the ids
      themselves, ``id IN (...)``, a primary-key lookup each (left to itself, PostgreSQL hashed
      them and scanned the whole unassigned pool: 75 ms at 230,000, growing with the pool); beyond,
      the EXISTS: PostgreSQL walks the open tasks in page order probing each one's candidates and
      stops after a page (~140 probes for 80,000 offers); an ``id IN`` list that long cannot stop
      early.
    """
    groups = list(groups)
    names = and_(TaskCandidate.kind == "user", TaskCandidate.name == user)
    if groups:
        names = or_(names, and_(TaskCandidate.kind == "group", TaskCandidate.name.in_(groups)))
    probed = and_(HumanTask.assignee.is_(None), exists().where(TaskCandidate.task_id == HumanTask.id, names))

    def build(wide: bool) -> Any:
        if not wide:
            return probed
        with db.unit_of_work(write=False) as uow:
            ids = uow.session.scalars(select(TaskCandidate.task_id).where(names).limit(FEW_OFFERS + 1)).all()
        if len(ids) <= FEW_OFFERS:
            return and_(HumanTask.assignee.is_(None), HumanTask.id.in_(sorted(set(ids))))
        return probed

    return Lazy(build)


def _candidates(kind: str, names) -> Any:
    return select(TaskCandidate.task_id).where(
        TaskCandidate.kind == kind, TaskCandidate.name.in_(list(names))
    )


class TaskService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def query(self) -> TaskQuery:
        now = self._ctx.now()
        stmt = select(HumanTask).options(
            # to_task needs the instance's SLA pause only, not its engine state (kilobytes per row)
            joinedload(HumanTask.instance).load_only(ProcessInstance.sla_paused_at),
        )
        return TaskQuery(self._ctx.db, stmt, lambda row: to_task(row, now))

    def get(self, task_id: str) -> results.UserTask:
        """Raises NotFoundError. (One statement, no engine state read.)"""
        found = self.query().id(task_id).first()
        if found is None:
            raise NotFoundError(f"task {task_id} not found")
        return found

    def claim(self, task_id: str, *, user: str, actor: str | None = None) -> results.UserTask:
        """Take an open task. Raises ConflictError if someone else holds it or it is closed."""

        def change(row: HumanTask, now: datetime) -> dict[str, Any]:
            if row.assignee and row.assignee != user:
                raise ConflictError(f"task is already claimed by {row.assignee}")
            before = row.assignee
            row.assignee, row.claimed_by, row.claimed_at = user, user, now
            return {"before": before, "after": user}

        return self._update_task(task_id, change, action="task_claimed", actor=actor or user)

    def unclaim(self, task_id: str, *, actor: str) -> results.UserTask:
        def change(row: HumanTask, now: datetime) -> dict[str, Any]:
            before = row.assignee
            row.assignee, row.claimed_by, row.claimed_at = None, None, None
            return {"before": before, "after": None}

        return self._update_task(task_id, change, action="task_unclaimed", actor=actor)

    def transfer(
        self, task_id: str, *, to_user: str, actor: str, comment: str | None = None
    ) -> results.UserTask:
        """Hand an open task to another user (转交); it lands in their inbox, assigned to them."""
        if not to_user:
            raise ValidationError("transfer needs a user to hand the task to")

        def change(row: HumanTask, now: datetime) -> dict[str, Any]:
            before = row.assignee
            row.assignee, row.claimed_by, row.claimed_at = to_user, to_user, now
            return {"before": before, "after": to_user, "comment": comment}

        return self._update_task(task_id, change, action="task_transferred", actor=actor)

    def _update_task(self, task_id: str, change, *, action: str, actor: str) -> results.UserTask:
        with conflicts_as_errors(), self._ctx.db.unit_of_work() as uow:
            row = _row(uow.session, task_id)
            _require_open(row)
            now = self._ctx.now()
            details = change(row, now)
            audit_task(self._ctx, uow.session, row, action, actor=actor, details=details, now=now)
            uow.session.flush()
            result = to_task(row, now)
            uow.commit()
        return result

    def comments(self, instance_id: str, *, task_id: str | None = None) -> list[results.Comment]:
        """Comments on an instance (or on one of its tasks), oldest first."""
        stmt = select(CommentRow).where(CommentRow.instance_id == instance_id).order_by(CommentRow.id)
        if task_id is not None:
            stmt = stmt.where(CommentRow.task_id == task_id)
        with self._ctx.db.unit_of_work(write=False) as uow:
            return [_to_comment(row) for row in uow.session.scalars(stmt)]

    def add_comment(
        self, instance_id: str, body: str, *, author: str, task_id: str | None = None
    ) -> results.Comment:
        body = _comment_body(body)
        with self._ctx.db.unit_of_work() as uow:
            if uow.session.get(ProcessInstance, instance_id) is None:
                raise NotFoundError(f"process instance {instance_id} not found")
            row = _add_comment(self._ctx, uow.session, instance_id, task_id, author, body, self._ctx.now())
            result = _to_comment(row)
            uow.commit()
        return result

    def record(
        self,
        task_id: str,
        action: str,
        *,
        actor: str,
        details: dict[str, Any] | None = None,
        comment: str | None = None,
    ) -> None:
        """Audit something done about a task outside the engine (web/vendor.py: a vendor link issued
        or revoked), with an optional comment on the task by ``actor``, in one transaction.

        ``action`` is the caller's own name (lower case and underscores, at most 50 characters).
        Raises NotFoundError (unknown task), ValidationError (a malformed action, or a comment
        outside 1 to 5000 characters)."""
        check_note(action, comment)
        with self._ctx.db.unit_of_work() as uow:
            row = uow.session.get(HumanTask, task_id)
            if row is None:
                raise NotFoundError(f"task {task_id} not found")
            record_note(
                self._ctx,
                uow.session,
                row,
                action,
                actor=actor,
                details=details,
                comment=comment,
                now=self._ctx.now(),
            )
            uow.commit()

    def attachment(self, attachment_id: int) -> tuple[results.Attachment, bytes]:
        """An uploaded file and its bytes (callers check that the reader may see its instance)."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            row = uow.session.get(AttachmentRow, attachment_id)
            if row is None:
                raise NotFoundError(f"attachment {attachment_id} not found")
            meta = results.Attachment(
                row.id,
                row.instance_id,
                row.task_id,
                row.field,
                row.filename,
                row.content_type,
                row.size,
                row.uploaded_by,
                row.created_at,
            )
            return meta, bytes(row.content)

    def form(self, task_id: str) -> Form | None:
        """The form a task is completed with (None: the task takes no form)."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            row = _row(uow.session, task_id)
            return self._ctx.forms.get(uow.session, row.instance.definition_id, row.element_id)

    def complete(
        self,
        task_id: str,
        *,
        actor: str,
        data: Mapping[str, Any] | None = None,
        from_json: bool = True,
        uploads: Mapping[str, Upload] | None = None,
    ) -> None:
        """Complete an open task with submitted data and run the process on to its next wait state.

        The data is parsed and validated against the task's form first (``from_json=False`` for
        raw HTML form fields): nothing unvalidated reaches task data. Raises ValidationError (with
        field problems), NotFoundError, ConflictError (already completed, instance not running, or
        a concurrent change won; exactly one of several concurrent completions succeeds). An engine
        error in the steps that follow leaves the instance in ``error`` (the completion stands).
        """
        change = completion(self._ctx, task_id, actor=actor, data=data, from_json=from_json, uploads=uploads)
        mutate_instance(self._ctx, None, change, actor=actor, task_id=task_id)


def check_note(action: str, comment: str | None) -> None:
    """Raises ValidationError for what ``record_note`` would refuse (before any transaction)."""
    if not _ACTION.fullmatch(action):
        raise ValidationError(f"not an audit action name: {action!r}")
    if comment is not None:
        _comment_body(comment)


def record_note(
    ctx: EngineContext,
    session: Session,
    row: HumanTask,
    action: str,
    *,
    actor: str,
    details: dict[str, Any] | None,
    comment: str | None,
    now: datetime,
) -> None:
    """An audit entry of the caller's own about a task (and a comment on it by ``actor``), in the
    caller's transaction (``TaskService.record``, ``RuntimeService.start_and_complete``); the
    action and comment checked by ``check_note`` first."""
    check_note(action, comment)
    if comment is not None:
        _add_comment(ctx, session, row.instance_id, row.id, actor, _comment_body(comment), now)
    audit_task(ctx, session, row, action, actor=actor, details=details, now=now)


def audit_task(
    ctx: EngineContext,
    session: Session,
    row: HumanTask,
    action: str,
    *,
    actor: str | None,
    details: dict[str, Any] | None,
    now: datetime,
) -> None:
    """An audit entry about one task (its instance, id and element)."""
    ctx.audit(
        session,
        action,
        actor=actor,
        instance_id=row.instance_id,
        task_id=row.id,
        element_id=row.element_id,
        details=details,
        at=now,
    )


def _add_comment(
    ctx: EngineContext,
    session: Session,
    instance_id: str,
    task_id: str | None,
    author: str,
    body: str,
    now: datetime,
) -> CommentRow:
    row = CommentRow(instance_id=instance_id, task_id=task_id, author=author, body=body, created_at=now)
    session.add(row)
    session.flush()
    ctx.audit(
        session,
        "comment_added",
        actor=author,
        instance_id=instance_id,
        task_id=task_id,
        details={"comment": row.id},
        at=now,
    )
    return row


Change = Callable[[Session, LiveInstance, datetime], Mutation]


def completion(
    ctx: EngineContext,
    task_id: str,
    *,
    actor: str,
    data: Mapping[str, Any] | None,
    from_json: bool,
    uploads: Mapping[str, Upload] | None = None,
) -> Change:
    """The change that completes an open task (``TaskService.complete``; ``RuntimeService.
    start_and_complete`` runs it in the command that starts the instance)."""
    submitted = dict(data or {})
    uploads = {name: u for name, u in (uploads or {}).items() if u.filename}
    files = {name: (u.filename, len(u.content), u.content_type) for name, u in uploads.items()}

    def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
        task = task_by_id(live.workflow, task_id)
        if task is None or task.state != TaskState.READY or task_id not in live.before.ready:
            raise ConflictError("task is no longer open")
        form = ctx.forms.get(session, live.row.definition_id, task.task_spec.bpmn_id)
        if form is not None:
            cleaned = clean(form, submitted, files=files, from_json=from_json)
        else:
            cleaned = check_variables(submitted)
        for name, upload in uploads.items():
            if name in cleaned:
                cleaned[name] = _store(session, live.row.id, task_id, name, upload, actor, now)
        variable = human_task_meta(task.task_spec).form_variable
        values = {variable: cleaned} if variable else cleaned

        def run() -> None:
            task.data.update(values)
            task.run()

        failure = advance(live.workflow, run)
        ctx.audit(
            session,
            "task_completed",
            actor=actor,
            instance_id=live.row.id,
            task_id=task_id,
            element_id=task.task_spec.bpmn_id,
            details={"data": data_to_json(values)},
            at=now,
        )
        return Mutation(failure=failure, completed=(task_id,))

    return change


@dataclass(frozen=True)
class Upload:
    """A file sent with a form, before it is validated and stored."""

    filename: str
    content_type: str | None
    content: bytes


def _store(
    session: Session, instance_id: str, task_id: str, field: str, upload: Upload, actor: str, now: datetime
) -> dict[str, Any]:
    """Keep an uploaded file (same transaction as the completion); task data gets this reference."""
    row = AttachmentRow(
        instance_id=instance_id,
        task_id=task_id,
        field=field,
        filename=upload.filename[:255],
        content_type=upload.content_type,
        size=len(upload.content),
        sha256=hashlib.sha256(upload.content).hexdigest(),
        content=upload.content,
        uploaded_by=actor,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return {
        "attachment_id": row.id,
        "filename": row.filename,
        "size": row.size,
        "content_type": row.content_type,
    }


def _to_comment(row: CommentRow) -> results.Comment:
    return results.Comment(row.id, row.instance_id, row.task_id, row.author, row.body, row.created_at)


def _row(session: Session, task_id: str) -> HumanTask:
    row = session.get(HumanTask, task_id)
    if row is None:
        raise NotFoundError(f"task {task_id} not found")
    return row


def _require_open(row: HumanTask) -> None:
    if row.state != "ready":
        raise ConflictError(f"task is already {row.state}")
