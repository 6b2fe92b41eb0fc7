"""The employee's pages: to-do (mine + my groups'), done, started by me, and the task page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from engine.errors import ValidationError
from engine.forms import errors_from_problems, form_values, summary_of
from web.access import actionable_task, instance_query, may_act, task_query, visible_task
from web.security import current_principal, engine, login_required

bp = Blueprint("inbox", __name__)
PAGE_SIZE = 50


def _raw_form(form_data: MultiDict) -> dict:
    return {key: form_data.getlist(key) for key in form_data}


@bp.get("/inbox")
@login_required
def todo():
    principal = current_principal()
    query = task_query(principal, "all" if request.args.get("scope") == "all" else "mine").open()
    if request.args.get("scope") != "all":
        query = engine().tasks.query().offered_to(principal.username, principal.groups).open()
    if request.args.get("process"):
        query.definition(request.args["process"])
    if request.args.get("sla") in ("on_track", "warning", "breached"):
        query.sla(request.args["sla"], engine().context.now())
    {"priority": query.order_by_priority, "created": query.order_by_created}.get(
        request.args.get("sort", ""), query.order_by_due
    )()
    page = max(int(request.args.get("page", 0) or 0), 0)
    tasks = query.page(page, PAGE_SIZE)
    processes = engine().repository.query().latest_only().order_by_key().list()
    return render_template(
        "inbox/todo.html",
        tasks=tasks,
        total=query.count(),
        page=page,
        size=PAGE_SIZE,
        processes=processes,
        args=request.args,
    )


@bp.get("/inbox/done")
@login_required
def done():
    principal = current_principal()
    tasks = (
        engine()
        .tasks.query()
        .state("completed")
        .completed_by(principal.username)
        .order_by_completed()
        .page(0, PAGE_SIZE)
    )
    return render_template("inbox/done.html", tasks=tasks)


@bp.get("/inbox/started")
@login_required
def started():
    principal = current_principal()
    instances = instance_query(principal).started_by(principal.username).order_by_started().page(0, PAGE_SIZE)
    processes = engine().repository.query().latest_only().order_by_key().list()
    return render_template("inbox/started.html", instances=instances, processes=processes)


def _task_page(task_id: str, *, values=None, errors=None, status: int = 200):
    principal = current_principal()
    task = visible_task(principal, task_id)
    eng = engine()
    form = eng.tasks.form(task_id)
    instance = eng.runtime.get(task.instance_id, with_variables=True)
    history = eng.history.for_instance(task.instance_id)
    comments = eng.tasks.comments(task.instance_id)
    variables = instance.variables or {}
    if form is not None and values is None:
        values = form_values(form, data=variables)
    return render_template(
        "inbox/task.html",
        task=task,
        form=form,
        values=values or {},
        errors=errors or {},
        instance=instance,
        history=history,
        comments=comments,
        can_act=principal.is_admin or may_act(principal, task),
        summary=summary_of(variables, form) if form is not None else [],
    ), status


@bp.get("/tasks/<task_id>")
@login_required
def task(task_id: str):
    return _task_page(task_id)


@bp.post("/tasks/<task_id>/complete")
@login_required
def complete(task_id: str):
    principal = current_principal()
    actionable_task(principal, task_id)
    eng = engine()
    raw = _raw_form(request.form)
    try:
        eng.tasks.complete(task_id, actor=principal.username, data=raw, from_json=False)
    except ValidationError as exc:
        form = eng.tasks.form(task_id)
        values = form_values(form, submitted=raw) if form is not None else {}
        return _task_page(task_id, values=values, errors=errors_from_problems(exc.problems), status=422)
    return redirect(url_for("inbox.todo", done=task_id))


@bp.post("/tasks/<task_id>/<any(claim, unclaim):action>")
@login_required
def claim(task_id: str, action: str):
    principal = current_principal()
    actionable_task(principal, task_id)
    if action == "claim":
        engine().tasks.claim(task_id, user=principal.username)
    else:
        engine().tasks.unclaim(task_id, actor=principal.username)
    return redirect(url_for("inbox.task", task_id=task_id))


@bp.post("/tasks/<task_id>/transfer")
@login_required
def transfer(task_id: str):
    principal = current_principal()
    actionable_task(principal, task_id)
    to_user = request.form.get("to_user", "").strip()
    engine().identity.get_user(to_user)
    engine().tasks.transfer(
        task_id, to_user=to_user, actor=principal.username, comment=request.form.get("comment")
    )
    return redirect(url_for("inbox.todo"))


@bp.post("/tasks/<task_id>/comment")
@login_required
def comment(task_id: str):
    principal = current_principal()
    task = visible_task(principal, task_id)
    body = request.form.get("body", "").strip()
    if body:
        engine().tasks.add_comment(task.instance_id, body, author=principal.username, task_id=task_id)
    return redirect(url_for("inbox.task", task_id=task_id) + "#comments")
