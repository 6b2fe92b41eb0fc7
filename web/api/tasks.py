"""/api/v1/tasks: the inbox over HTTP (list, read with its form, claim, complete, transfer, comment)."""

from __future__ import annotations

from flask import Blueprint, request

from engine.errors import ValidationError
from web.access import SCOPES, actionable_task, task_query, visible_task
from web.api.common import choice, load, paged_ahead
from web.api.schemas import (
    CommentInput,
    CommentSchema,
    CompleteTaskInput,
    TaskDetailSchema,
    TaskSchema,
    TransferInput,
)
from web.security import current_principal, engine, login_required

bp = Blueprint("api_tasks", __name__, url_prefix="/api/v1/tasks")
SORTS = ("due", "priority", "created", "completed")
STATES = ("open", "completed", "cancelled")
TASK = TaskSchema()  # made once: building a schema costs more than dumping a task with it


@bp.get("")
@login_required
def list_tasks():
    """Tasks of the caller: scope=mine|group|all (all = everything they may see).

    The answer has ``items``, ``page``, ``size`` and ``has_more`` (another page follows); ``total``
    only with ``count=true``: counting every match costs far more than a page once an inbox holds
    tens of thousands of tasks (bench/inbox.py: ~10 ms for a page, ~0.3 s for the count).
    """
    principal = current_principal()
    scope = choice("scope", SCOPES, "all")
    query = task_query(principal, scope)
    state = choice("state", STATES, "open")
    query = query.open() if state == "open" else query.state(state)
    if request.args.get("definition_key"):
        query.definition(request.args["definition_key"])
    if request.args.get("instance_id"):
        query.instance(request.args["instance_id"])
    if request.args.get("started_by"):
        query.started_by(request.args["started_by"])
    if request.args.get("sla"):
        query.sla(choice("sla", ("on_track", "warning", "breached")), engine().context.now())
    if request.args.get("min_priority"):
        try:
            query.priority_at_least(int(request.args["min_priority"]))
        except ValueError as exc:
            raise ValidationError("min_priority must be a whole number") from exc
    sort = choice("sort", SORTS, "completed" if state == "completed" else "due")
    {
        "due": query.order_by_due,
        "priority": query.order_by_priority,
        "created": query.order_by_created,
        "completed": query.order_by_completed,
    }[sort]()
    return paged_ahead(query, TASK)


@bp.get("/<task_id>")
@login_required
def get_task(task_id: str):
    task = visible_task(current_principal(), task_id)
    form = engine().tasks.form(task_id)
    body = TaskDetailSchema().dump(task)
    body["form"] = form.schema if form is not None else None
    return body


@bp.post("/<task_id>/claim")
@login_required
def claim(task_id: str):
    principal = current_principal()
    actionable_task(principal, task_id)
    return TASK.dump(engine().tasks.claim(task_id, user=principal.username))


@bp.post("/<task_id>/unclaim")
@login_required
def unclaim(task_id: str):
    principal = current_principal()
    actionable_task(principal, task_id)
    return TASK.dump(engine().tasks.unclaim(task_id, actor=principal.username))


@bp.post("/<task_id>/complete")
@login_required
def complete(task_id: str):
    principal = current_principal()
    actionable_task(principal, task_id)
    data = load(CompleteTaskInput())["data"]
    engine().tasks.complete(task_id, actor=principal.username, data=data, from_json=True)
    return TASK.dump(engine().tasks.get(task_id))


@bp.post("/<task_id>/transfer")
@login_required
def transfer(task_id: str):
    principal = current_principal()
    actionable_task(principal, task_id)
    body = load(TransferInput())
    engine().identity.get_user(body["to_user"])  # NotFoundError for an unknown colleague
    task = engine().tasks.transfer(
        task_id, to_user=body["to_user"], actor=principal.username, comment=body["comment"]
    )
    return TASK.dump(task)


@bp.get("/<task_id>/comments")
@login_required
def comments(task_id: str):
    task = visible_task(current_principal(), task_id)
    return {
        "items": CommentSchema().dump(engine().tasks.comments(task.instance_id, task_id=task_id), many=True)
    }


@bp.post("/<task_id>/comments")
@login_required
def add_comment(task_id: str):
    principal = current_principal()
    task = visible_task(principal, task_id)
    body = load(CommentInput())["body"]
    comment = engine().tasks.add_comment(task.instance_id, body, author=principal.username, task_id=task_id)
    return CommentSchema().dump(comment), 201
