"""The employee's pages: to-do (mine + my groups'), done, started by me, and the task page.

- To-do: filter by process, SLA state, minimum priority and starter; sort by due date, priority or
  creation; pages of ``PAGE_SIZE``; saved filters kept on the server (when the identity service
  offers them, see ``_saved_filter_store``); bulk approval of tasks whose form is a plain decision.
- Task page: the form (errors and the user's input kept on a refused submission), a summary of the
  instance, its timeline (who did what, when), comments, claim / give back / transfer, and the
  process diagram with the current step marked (bpmn-js when its asset is built, else a list).
Who may see or act on what is decided in web/access.py.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from engine.bpmn import UnsafeXml, parse_xml
from engine.errors import (
    BatonError,
    ConflictError,
    NotAllowedError,
    NotFoundError,
    ValidationError,
)
from engine.forms import Form, errors_from_problems, form_values, summary_of
from engine.query import Query
from engine.repository import file_kind
from engine.results import AuditEvent, ProcessInstance, UserTask
from engine.tasks import Upload
from web import pages
from web.access import actionable_task, instance_query, may_act, visible_instance, visible_task
from web.pages import display_names, list_url, page_index, process_names
from web.security import Principal, current_principal, engine, login_required

bp = Blueprint("inbox", __name__)
PAGE_SIZE = 25
COUNT_CAP = 999  # badges say "999+" beyond (see _paginate)
MAX_BULK = 100  # tasks one bulk approval may complete
APPROVE = "approve"
SCOPES = ("", "mine", "group")  # "": assigned to me or offered to me / my groups (unclaimed)
SLA_STATES = ("on_track", "warning", "breached")
SORTS = ("due", "priority", "created")
BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"


def _actions() -> dict[str, str]:
    """Human-readable names of the audit actions a timeline shows (in the request's language)."""
    return {
        "instance_started": _("started the process"),
        "instance_completed": _("The process finished"),
        "instance_cancelled": _("cancelled the process"),
        "instance_suspended": _("suspended the process"),
        "instance_resumed": _("resumed the process"),
        "instance_retried": _("retried the process"),
        "instance_error": _("The process stopped on an error"),
        "task_created": _("Step opened"),
        "task_claimed": _("claimed"),
        "task_unclaimed": _("gave back"),
        "task_transferred": _("transferred"),
        "task_completed": _("completed"),
        "task_cancelled": _("Step closed without completion"),
        "task_candidates_changed": _("changed who the step is offered to"),
        "comment_added": _("commented"),
        "vendor_link_issued": _("issued a vendor link"),
        "vendor_link_revoked": _("revoked vendor links"),
        "timer_fired": _("A timer fired"),
        "start_timer_fired": _("Started on a timer"),
        "message_received": _("A message arrived"),
        "signal_received": _("A signal arrived"),
        "sla_paused": _("paused the time limit"),
        "sla_resumed": _("resumed the time limit"),
        "incident": _("An incident was recorded"),
        "instance_withdrawn": _("withdrew the request"),
        "instance_cc": _("copied people on the request"),
        "instance_moved": _("moved the process to another step"),
        "instance_migrated": _("moved the process to a new version"),
        "instance_archived": _("The process's engine state was archived"),
        "record_created": _("created a record"),
        "record_updated": _("changed a record"),
        "contract_status_changed": _("changed the contract's status"),
        "payment_status_changed": _("changed the payment's status"),
    }


def _labels(kind: str) -> dict[str, str]:
    if kind == "instance":
        return {
            "running": _("In progress"),
            "suspended": _("Suspended"),
            "error": _("Error"),
            "completed": _("Completed"),
            "cancelled": _("Cancelled"),
        }
    if kind == "task":
        return {"ready": _("Open"), "completed": _("Completed"), "cancelled": _("Cancelled")}
    return {
        "on_track": _("On track"),
        "warning": _("Due soon"),
        "breached": _("Overdue"),
        "paused": _("Paused"),
    }


@bp.app_template_global()
def label_of(kind: str, value: str | None) -> str:
    """A translated label for a state value (``instance``, ``task``, ``sla``); the value if unknown."""
    return _labels(kind).get(value or "", value or "")


# --------------------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class InboxFilter:
    """The to-do list's filter and sort, read leniently from a query string (bad values are dropped
    and reported, the page still answers)."""

    scope: str = ""
    process: str = ""
    sla: str = ""
    min_priority: int | None = None
    starter: str = ""
    sort: str = "due"
    problems: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> InboxFilter:
        problems: list[str] = []
        scope = args.get("scope", "")
        sla = args.get("sla", "")
        sort = args.get("sort", "") or "due"
        min_priority = None
        raw_priority = (args.get("min_priority") or "").strip()
        if raw_priority:
            try:
                min_priority = int(raw_priority)
                if abs(min_priority) > 1_000_000:
                    raise ValueError(raw_priority)
            except ValueError:
                min_priority = None
                problems.append(_("Minimum priority must be a whole number."))
        return cls(
            scope=scope if scope in SCOPES else "",
            process=(args.get("process") or "").strip()[:255],
            sla=sla if sla in SLA_STATES else "",
            min_priority=min_priority,
            starter=(args.get("starter") or "").strip()[:150],
            sort=sort if sort in SORTS else "due",
            problems=tuple(problems),
        )

    def pairs(self) -> list[tuple[str, str]]:
        """The non-default settings, in a stable order (what a saved filter keeps)."""
        items = [
            ("scope", self.scope),
            ("process", self.process),
            ("sla", self.sla),
            ("min_priority", "" if self.min_priority is None else str(self.min_priority)),
            ("starter", self.starter),
            ("sort", "" if self.sort == "due" else self.sort),
        ]
        return [(k, v) for k, v in items if v]

    def query_string(self) -> str:
        return urlencode(self.pairs())

    @property
    def active(self) -> int:
        """How many filters narrow the list (sort and scope do not count)."""
        return sum(1 for k, _v in self.pairs() if k not in ("sort", "scope"))


def _todo_query(principal: Principal, flt: InboxFilter):
    tasks = engine().tasks.query().open()
    if flt.scope == "mine":
        tasks.assignee(principal.username)
    elif flt.scope == "group":
        tasks.group_pool(principal.username, principal.groups)
    else:
        tasks.offered_to(principal.username, principal.groups)
    if flt.process:
        tasks.definition(flt.process)
    if flt.sla:
        tasks.sla(flt.sla, engine().context.now())
    if flt.min_priority is not None:
        tasks.priority_at_least(flt.min_priority)
    if flt.starter:
        tasks.started_by(flt.starter)
    {"priority": tasks.order_by_priority, "created": tasks.order_by_created}.get(
        flt.sort, tasks.order_by_due
    )()
    return tasks


def _paginate(query: Query, page: int) -> tuple[list[Any], str, dict[str, Any]]:
    """One page of ``query``, its badge (the total, "999+" past ``COUNT_CAP``: counting a 100,000-task
    inbox on every page would cost more than the page) and the pager: ``count`` is None when the
    total is capped, ``has_next`` comes from reading one row past the page."""
    rows = query.list(limit=PAGE_SIZE + 1, offset=page * PAGE_SIZE)
    items, has_next = rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
    total = query.count(cap=COUNT_CAP)
    capped = total > COUNT_CAP
    pages = {
        "number": page + 1,
        "count": None if capped else max((total - 1) // PAGE_SIZE, 0) + 1,
        "has_next": has_next,
    }
    return items, (f"{COUNT_CAP}+" if capped else str(total)), pages


# --------------------------------------------------------------------------------------------------
# Saved filters: kept by the identity service, per user, when it offers them.


def _saved_filter_store():
    """The identity service if it keeps saved filters (``saved_filters``, ``save_filter``,
    ``delete_filter``), else None: the page then hides the feature."""
    identity = engine().identity
    if all(hasattr(identity, name) for name in ("saved_filters", "save_filter", "delete_filter")):
        return identity
    return None


@bp.post("/inbox/filters")
@login_required
def save_filter():
    store = _saved_filter_store()
    if store is None:
        abort(404)
    principal = current_principal()
    query = InboxFilter.from_args(MultiDict(parse_qsl(request.form.get("query", "")))).query_string()
    name = request.form.get("name", "").strip()
    target = url_for("inbox.todo") + (f"?{query}" if query else "")
    try:
        if not name or len(name) > 100:
            raise ValidationError("a saved filter needs a name")
        store.save_filter(principal.username, name, query)
    except ValidationError:
        flash(_("Could not save the filter: give it a name of 1 to 100 letters or digits."), "error")
    else:
        flash(_("Filter saved: %(name)s.", name=name), "saved")
    return redirect(target)


@bp.post("/inbox/filters/<int:filter_id>/delete")
@login_required
def delete_filter(filter_id: int):
    store = _saved_filter_store()
    if store is None:
        abort(404)
    store.delete_filter(current_principal().username, filter_id)
    return redirect(url_for("inbox.todo"))


# --------------------------------------------------------------------------------------------------
# Bulk approval


def bulk_field(form: Form | None) -> str | None:
    """The field a bulk approval fills: the form's only required field, a choice offering "approve"."""
    if form is None:
        return None
    required = [f for f in form.fields if f.required and not f.readonly]
    if len(required) != 1 or required[0].kind != "select":
        return None
    choice = required[0]
    return choice.name if any(option == APPROVE for option, _label in choice.options) else None


@dataclass(frozen=True)
class BulkOutcome:
    task_id: str
    name: str
    ok: bool
    message: str


def _failure_message(error: BatonError) -> str:
    if isinstance(error, NotFoundError):
        return _("Not found, or not visible to you.")
    if isinstance(error, NotAllowedError):
        return _("This task is not assigned or offered to you.")
    if isinstance(error, ConflictError):
        return _("Someone handled it first, or it is no longer open.")
    if isinstance(error, ValidationError):
        problems = "; ".join(str(p.get("message", "")) for p in (error.details or []) if isinstance(p, dict))
        return _("The form refused the approval: open the task to complete it.") + (
            f" ({problems})" if problems else ""
        )
    return error.message


@bp.post("/inbox/bulk")
@login_required
def bulk():
    """Approve several tasks at once; each succeeds or fails on its own and the page says which."""
    principal = current_principal()
    eng = engine()
    if request.form.get("decision") != APPROVE:
        raise ValidationError(_("Unknown bulk action."))
    ids = list(dict.fromkeys(t for t in request.form.getlist("task") if t))[:MAX_BULK]
    outcomes: list[BulkOutcome] = []
    for task_id in ids:
        name = task_id
        try:
            task = actionable_task(principal, task_id)
            name = task.name or task.element_id
            choice = bulk_field(eng.tasks.form(task_id))
            if choice is None:
                raise NotAllowedError("not a plain approval")
            eng.tasks.complete(task_id, actor=principal.username, data={choice: APPROVE}, from_json=True)
        except NotAllowedError as exc:
            message = (
                _("This task's form cannot be approved in bulk: open it.")
                if exc.message == "not a plain approval"
                else _failure_message(exc)
            )
            outcomes.append(BulkOutcome(task_id, name, False, message))
        except BatonError as exc:
            outcomes.append(BulkOutcome(task_id, name, False, _failure_message(exc)))
        else:
            outcomes.append(BulkOutcome(task_id, name, True, _("Approved")))
    return render_template(
        "inbox/bulk.html",
        outcomes=outcomes,
        approved=sum(o.ok for o in outcomes),
        failed=sum(not o.ok for o in outcomes),
    )


# --------------------------------------------------------------------------------------------------
# Lists


def _instances(ids: Iterable[str]) -> dict[str, ProcessInstance]:
    found = {}
    for instance_id in dict.fromkeys(ids):
        try:
            found[instance_id] = engine().runtime.get(instance_id)
        except NotFoundError:
            continue
    return found


def _active_users(limit: int = 500) -> list[tuple[str, str]]:
    return [(u.username, u.name) for u in engine().identity.users().active().list(limit=limit)]


def _todo_url(pairs: list[tuple[str, str]]) -> str:
    return list_url("inbox.todo", pairs)


@bp.get("/inbox")
@login_required
def todo():
    principal = current_principal()
    eng = engine()
    flt = InboxFilter.from_args(request.args)
    query = _todo_query(principal, flt)
    tasks, total, pages = _paginate(query, page_index())
    instances = _instances(t.instance_id for t in tasks)
    bulk_ids = {
        t.id
        for t in tasks
        if (principal.is_admin or may_act(principal, t)) and bulk_field(eng.tasks.form(t.id)) is not None
    }
    store = _saved_filter_store()
    base = flt.query_string()
    return render_template(
        "inbox/todo.html",
        tasks=tasks,
        total=total,
        pages=pages,
        page_url=lambda n: _todo_url([*flt.pairs(), ("page", str(n))]),
        scope_url=lambda scope: _todo_url([*(p for p in flt.pairs() if p[0] != "scope"), ("scope", scope)]),
        flt=flt,
        query_string=base,
        processes=process_names(),
        instances=instances,
        people=display_names([*(i.started_by for i in instances.values()), *(t.assignee for t in tasks)]),
        users=_active_users(),
        bulk_ids=bulk_ids,
        saved_filters=store.saved_filters(principal.username) if store is not None else None,
    )


@bp.get("/inbox/done")
@login_required
def done():
    principal = current_principal()
    query = engine().tasks.query().state("completed").completed_by(principal.username).order_by_completed()
    tasks, total, pages = _paginate(query, page_index())
    instances = _instances(t.instance_id for t in tasks)
    return render_template(
        "inbox/done.html",
        tasks=tasks,
        total=total,
        pages=pages,
        page_url=lambda n: url_for("inbox.done", page=n),
        processes=process_names(),
        instances=instances,
        people=display_names(i.started_by for i in instances.values()),
    )


@bp.get("/start")
@login_required
def new_request():
    """发起: the processes a person starts by hand, newest version of each."""
    definitions = engine().repository.query().latest_only().started_by_hand().order_by_key().list()
    return render_template("inbox/start.html", definitions=definitions)


@bp.post("/start/<key>")
@login_required
def start_request(key: str):
    """Start the latest version and open the starter's first step (usually the request form)."""
    principal = current_principal()
    eng = engine()
    if eng.repository.query().key(key).latest_only().started_by_hand().first() is None:
        raise NotFoundError(f"no process {key!r} to start by hand")
    instance = eng.runtime.start(
        key, started_by=principal.username, variables={"initiator": principal.username}
    )
    mine = eng.tasks.query().instance(instance.id).open().order_by_created().list()
    first = next((t for t in mine if principal.is_admin or may_act(principal, t)), None)
    if first is not None:
        return redirect(url_for("inbox.task", task_id=first.id))
    flash(_("Started. Nothing is waiting for you: follow it here."))
    return redirect(url_for("inbox.started"))


@bp.get("/inbox/started")
@login_required
def started():
    principal = current_principal()
    eng = engine()
    query = instance_query(principal).started_by(principal.username).order_by_started()
    instances, total, pages = _paginate(query, page_index())
    on_page = {i.id for i in instances}
    waiting: dict[str, list[UserTask]] = defaultdict(list)  # where each instance is now
    for t in eng.tasks.query().open().started_by(principal.username).order_by_created().list():
        if t.instance_id in on_page:
            waiting[t.instance_id].append(t)
    latest = {}  # a task page to open for each instance: its open step, else its latest step
    for instance in instances:
        if waiting[instance.id]:
            latest[instance.id] = waiting[instance.id][0]
        else:
            tasks = eng.tasks.query().instance(instance.id).order_by_created().list()
            latest[instance.id] = tasks[-1] if tasks else None
    return render_template(
        "inbox/started.html",
        instances=instances,
        total=total,
        pages=pages,
        page_url=lambda n: url_for("inbox.started", page=n),
        processes=process_names(),
        waiting=waiting,
        latest=latest,
        people=display_names(t.assignee for ts in waiting.values() for t in ts),
    )


# --------------------------------------------------------------------------------------------------
# The task page


@dataclass(frozen=True)
class Step:
    element_id: str
    name: str
    kind: str  # event | task
    state: str  # done | current | this | todo


@dataclass
class Diagram:
    filename: str | None = None
    content: bytes = b""
    names: dict[str, str] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)  # (element id, kind) in flow order


_ACTIVITIES = {
    "task",
    "userTask",
    "manualTask",
    "serviceTask",
    "scriptTask",
    "businessRuleTask",
    "sendTask",
    "receiveTask",
    "callActivity",
    "subProcess",
    "transaction",
}
_FLOW_NODES = _ACTIVITIES | {
    "startEvent",
    "endEvent",
    "intermediateCatchEvent",
    "intermediateThrowEvent",
    "boundaryEvent",
    "exclusiveGateway",
    "parallelGateway",
    "inclusiveGateway",
    "eventBasedGateway",
    "complexGateway",
}


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def process_diagram(definition_id: int, key: str) -> Diagram:
    """The BPMN file holding process ``key`` of a definition, its element names and flow order."""
    for filename, content in sorted(engine().repository.files(definition_id).items()):
        if file_kind(filename) != "bpmn":
            continue
        try:
            root = parse_xml(content)
        except UnsafeXml:
            continue
        process = next((p for p in root.iter(f"{{{BPMN_NS}}}process") if p.get("id") == key), None)
        if process is None:
            continue
        diagram = Diagram(filename, content)
        nodes: dict[str, str] = {}
        following: dict[str, list[str]] = defaultdict(list)
        starts: list[str] = []
        for element in process.iter():
            kind, element_id = _local(element.tag), element.get("id")
            if not element_id:
                continue
            if element.get("name"):
                diagram.names[element_id] = element.get("name")
            if kind == "sequenceFlow":
                following[element.get("sourceRef", "")].append(element.get("targetRef", ""))
            elif kind in _FLOW_NODES:
                nodes[element_id] = kind
                parent = element.getparent()
                if kind == "startEvent" and parent is process:
                    starts.append(element_id)
                elif kind == "startEvent" and parent is not None and parent.get("id"):
                    following[parent.get("id")].append(element_id)  # into a sub-process
                if kind == "boundaryEvent" and element.get("attachedToRef"):
                    following[element.get("attachedToRef")].append(element_id)
        seen: dict[str, None] = {}
        queue = deque(starts)
        while queue:
            element_id = queue.popleft()
            if element_id in seen or element_id not in nodes:
                continue
            seen[element_id] = None
            queue.extend(following.get(element_id, ()))
        for element_id in nodes:  # anything unreachable, in document order
            seen.setdefault(element_id, None)
        diagram.order = [(element_id, nodes[element_id]) for element_id in seen]
        return diagram
    return Diagram()


def _steps(
    diagram: Diagram, instance_tasks: list[UserTask], task: UserTask, ran: Iterable[str] = ()
) -> list[Step]:
    """The process's steps in order, each done, current or to do; ``ran``: elements the engine
    completed (script and service steps leave no human task behind)."""
    current = {t.element_id for t in instance_tasks if t.state == "ready"}
    done = {t.element_id for t in instance_tasks if t.state == "completed"} | set(ran)
    steps = []
    for element_id, kind in diagram.order:
        if kind not in _ACTIVITIES and kind not in ("startEvent", "endEvent"):
            continue
        if element_id == task.element_id and task.state == "ready":
            state = "this"
        elif element_id in current:
            state = "current"
        elif element_id in done or kind == "startEvent":
            state = "done"
        else:
            state = "todo"
        name = diagram.names.get(element_id, element_id)
        steps.append(Step(element_id, name, "task" if kind in _ACTIVITIES else "event", state))
    return steps


# Things that happen to the process rather than being done by someone: shown without an actor.
PASSIVE = {
    "task_created",
    "task_cancelled",
    "instance_completed",
    "instance_error",
    "timer_fired",
    "start_timer_fired",
    "message_received",
    "signal_received",
    "incident",
}


@dataclass(frozen=True)
class TimelineEntry:
    event: AuditEvent
    passive: bool
    actor: str | None
    action: str
    step: str | None
    detail: str | None
    items: list[tuple[str, str]]


def _timeline(
    history: list[AuditEvent], names: Mapping[str, str], forms: Mapping[str, Form | None]
) -> list[TimelineEntry]:
    people = display_names(
        [e.actor for e in history]
        + [str((e.details or {}).get("after") or "") for e in history if e.action == "task_transferred"]
    )
    entries = []
    actions = _actions()
    for event in history:
        details = event.details or {}
        detail, items = None, []
        if event.action == "task_transferred":
            to_user = details.get("after")
            detail = _("to %(user)s", user=people.get(to_user, to_user)) if to_user else None
            if details.get("comment"):
                detail = f"{detail or ''} · {details['comment']}".strip(" ·")
        elif event.action == "instance_error":
            detail = str(details.get("message") or "") or None
        elif event.action == "task_completed" and isinstance(details.get("data"), dict):
            form = forms.get(event.element_id or "")
            items = summary_of(details["data"], form) if form is not None else []
        action = actions.get(event.action)
        entries.append(
            TimelineEntry(
                event=event,
                passive=event.action in PASSIVE,
                actor=people.get(event.actor, event.actor) if event.actor else None,
                action=action or event.action.replace("_", " "),
                step=names.get(event.element_id, event.element_id) if event.element_id else None,
                detail=detail,
                items=items,
            )
        )
    return entries


def _forms_by_element(instance_tasks: list[UserTask]) -> dict[str, Form | None]:
    forms: dict[str, Form | None] = {}
    for t in instance_tasks:
        if t.element_id not in forms:
            forms[t.element_id] = engine().tasks.form(t.id)
    return forms


def _instance_summary(
    variables: Mapping[str, Any], instance_tasks: list[UserTask], forms: Mapping[str, Form | None]
) -> list[tuple[str, str]]:
    """The instance's data as people entered it: the fields of each form filled so far, in order."""
    summary: list[tuple[str, str]] = []
    seen: set[str] = set()
    for t in instance_tasks:
        form = forms.get(t.element_id)
        if t.state != "completed" or form is None:
            continue
        fresh = {name: value for name, value in variables.items() if name not in seen}
        summary.extend(summary_of(fresh, form))
        seen.update(f.name for f in form.fields)
    return summary


def _task_page(
    task_id: str,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
    transfer_error: str | None = None,
    comment_error: str | None = None,
    action_error: str | None = None,
):
    principal = current_principal()
    task = visible_task(principal, task_id)
    eng = engine()
    form = eng.tasks.form(task_id)
    instance = eng.runtime.get(task.instance_id, with_variables=True)
    variables = instance.variables or {}
    instance_tasks = eng.tasks.query().instance(task.instance_id).order_by_created().list()
    forms = _forms_by_element(instance_tasks)
    history = eng.history.for_instance(task.instance_id)
    diagram = process_diagram(instance.definition_id, instance.definition_key)
    can_act = task.state == "ready" and (principal.is_admin or may_act(principal, task))
    if form is not None and values is None and can_act:
        values = form_values(form, data=variables)
    submitted = None  # what this task was completed with (a done task shows it read-only)
    if task.state == "completed" and form is not None:
        event = next(
            (e for e in reversed(history) if e.task_id == task.id and e.action == "task_completed"), None
        )
        data = (event.details or {}).get("data") if event is not None else None
        submitted = form_values(form, data=data) if isinstance(data, dict) else None
    steps = _steps(diagram, instance_tasks, task, eng.runtime.path(task.instance_id).completed)
    comments = eng.tasks.comments(task.instance_id)
    people = display_names(
        [
            instance.started_by,
            task.assignee,
            task.completed_by,
            *(t.assignee for t in instance_tasks),
            *(c.author for c in comments),
        ]
    )
    return render_template(
        "inbox/task.html",
        task=task,
        form=form,
        values=values or {},
        errors=errors or {},
        submitted=submitted,
        instance=instance,
        process_name=diagram.names.get(instance.definition_key)
        or process_names().get(instance.definition_key),
        summary=_instance_summary(variables, instance_tasks, forms),
        timeline=_timeline(history, diagram.names, forms),
        comments=comments,
        steps=steps,
        diagram_url=url_for("inbox.diagram", task_id=task.id) if diagram.filename else None,
        viewer=pages.viewer_available() and diagram.filename is not None,
        current_ids=" ".join(s.element_id for s in steps if s.state in ("this", "current")),
        done_ids=" ".join(s.element_id for s in steps if s.state == "done"),
        can_act=can_act,
        can_give_back=can_act and bool(task.assignee) and _has_candidates(task),
        people=people,
        users=_active_users() if can_act else [],
        transfer_error=transfer_error,
        comment_error=comment_error,
        action_error=action_error,
    ), status


def _has_candidates(task: UserTask) -> bool:
    return bool(task.candidate_users or task.candidate_groups)


@bp.get("/tasks/<task_id>")
@login_required
def task(task_id: str):
    return _task_page(task_id)


@bp.get("/tasks/<task_id>/diagram.bpmn")
@login_required
def diagram(task_id: str):
    """The BPMN XML of the task's process (what the diagram viewer draws)."""
    task = visible_task(current_principal(), task_id)
    instance = engine().runtime.get(task.instance_id)
    found = process_diagram(instance.definition_id, instance.definition_key)
    if found.filename is None:
        raise NotFoundError(f"no diagram for process {instance.definition_key}")
    response = Response(found.content, mimetype="application/xml")
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _raw_form(form_data: MultiDict) -> dict:
    return {key: form_data.getlist(key) for key in form_data if key != "csrf_token"}


@bp.post("/tasks/<task_id>/complete")
@login_required
def complete(task_id: str):
    principal = current_principal()
    task = actionable_task(principal, task_id)
    eng = engine()
    raw = _raw_form(request.form)
    uploads = {
        name: Upload(upload.filename or "", upload.mimetype, upload.read())
        for name, upload in request.files.items()
        if upload.filename
    }
    try:
        eng.tasks.complete(task_id, actor=principal.username, data=raw, from_json=False, uploads=uploads)
    except ValidationError as exc:
        form = eng.tasks.form(task_id)
        values = form_values(form, submitted=request.form) if form is not None else {}
        errors = errors_from_problems(exc.problems) or {"": [exc.message]}
        return _task_page(task_id, values=values, errors=errors, status=422)
    flash(_("Submitted: %(name)s.", name=task.name or task.element_id), "done")
    return redirect(url_for("inbox.todo"))


@bp.get("/attachments/<int:attachment_id>")
@login_required
def attachment(attachment_id: int):
    """Download a file uploaded with a form, for those who may see its instance."""
    meta, content = engine().tasks.attachment(attachment_id)
    visible_instance(current_principal(), meta.instance_id)
    return Response(
        content,
        mimetype="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(meta.filename)}",
            "X-Content-Type-Options": "nosniff",
        },
    )


@bp.post("/tasks/<task_id>/<any(claim, unclaim):action>")
@login_required
def claim(task_id: str, action: str):
    principal = current_principal()
    task = actionable_task(principal, task_id)
    try:
        if action == "claim":
            engine().tasks.claim(task_id, user=principal.username)
        elif not _has_candidates(task):
            raise NotAllowedError("assigned directly")
        else:
            engine().tasks.unclaim(task_id, actor=principal.username)
    except NotAllowedError:
        message = _("This task was assigned to you directly: transfer it to a colleague instead.")
        return _task_page(task_id, action_error=message, status=403)
    except ConflictError:
        return _task_page(
            task_id, action_error=_("Someone handled it first, or it is no longer open."), status=409
        )
    return redirect(url_for("inbox.task", task_id=task_id))


@bp.post("/tasks/<task_id>/transfer")
@login_required
def transfer(task_id: str):
    principal = current_principal()
    task = actionable_task(principal, task_id)
    to_user = request.form.get("to_user", "").strip()
    comment = request.form.get("comment", "").strip() or None
    try:
        if not to_user:
            raise ValidationError("no user")
        colleague = engine().identity.get_user(to_user)
        if not colleague.is_active:
            raise ValidationError("frozen")
        if colleague.username == principal.username:
            raise ValidationError("self")
    except (NotFoundError, ValidationError):
        message = _("Choose an active colleague by username (not yourself).")
        return _task_page(task_id, transfer_error=message, status=422)
    try:
        engine().tasks.transfer(
            task_id, to_user=colleague.username, actor=principal.username, comment=comment
        )
    except ConflictError:
        return _task_page(
            task_id, action_error=_("Someone handled it first, or it is no longer open."), status=409
        )
    flash(_("%(name)s was transferred to %(user)s.", name=task.name or task.element_id, user=colleague.name))
    return redirect(url_for("inbox.todo"))


@bp.post("/tasks/<task_id>/comment")
@login_required
def comment(task_id: str):
    principal = current_principal()
    task = visible_task(principal, task_id)
    body = request.form.get("body", "").strip()
    if not body or len(body) > 5000:
        return _task_page(task_id, comment_error=_("A comment needs 1 to 5000 characters."), status=422)
    engine().tasks.add_comment(task.instance_id, body, author=principal.username, task_id=task_id)
    return redirect(url_for("inbox.task", task_id=task_id) + "#comments")
