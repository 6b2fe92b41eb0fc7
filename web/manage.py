"""The managers' area: track process instances and step in (issue #5).

- Instance list: filter by process, version, state, starter, the starter's department, business
  key, start and end dates, the step it waits at and a breached SLA; sort; pages that never count
  every match (one row more than a page says whether another follows); saved filters.
- Instance page: the diagram with the path taken, the active steps and a failed one marked; a
  timeline of every step (who, when, how long); the variables with secrets masked; comments; the
  audit log with before and after.
- Interventions, each one command, audited by the engine: cancel, suspend, resume, retry a failed
  instance, reassign an open task, move the instance to another step, migrate it (or a batch of
  them, after a pre-check that says which cannot move and why) to another version of its process.

Who: a manager sees and changes the instances started by people of the departments they manage
(and the departments below): the starter's department is kept on the instance when it starts
(``starter_department_id``), and today's members count too, as in web/access.py. An administrator
sees and changes everything. An instance out of reach answers 404; one a manager may see
(web/access.py: they took part in it) but not change answers 403 to a change.

Variables whose names contain one of ``SECRET_VARIABLE_NAMES`` (app config, case-insensitive
substrings; default ``SECRET_NAMES``; ``PUBLIC_NAMES`` such as ``business_key`` excepted) are shown
masked, here and in the audit log details.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import format_timedelta
from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from engine.bpmn import BPMN_NS, UnsafeXml, parse_xml
from engine.errors import BatonError, ConflictError, NotAllowedError, NotFoundError, ValidationError
from engine.results import AuditEvent, InstancePath, ProcessInstance, UserTask
from engine.runtime import InstanceQuery
from web import pages
from web.access import managed_starters, visible_instance
from web.i18n import company_zone
from web.inbox import process_diagram
from web.pages import display_names, list_url, page_index, process_names
from web.security import Principal, current_principal, engine, roles_required

bp = Blueprint("manage", __name__, url_prefix="/manage")
PAGE_SIZE = 25
MAX_BATCH = 200  # instances one migration page checks and moves
FILTER_KIND = "instances"  # saved filters of this list (the inbox keeps its own)
STATES = ("running", "suspended", "error", "completed", "cancelled")
MOVABLE_STATES = ("running", "suspended", "error")  # may change version
SORTS = ("started", "started_asc", "ended")
SECRET_NAMES = ("password", "passwd", "secret", "token", "key", "credential", "private")
PUBLIC_NAMES = ("business_key",)  # contain a secret-looking word, but are not secrets
MASK = "••••••"


# --------------------------------------------------------------------------------------------------
# Who may see and change what


def managed_departments(principal: Principal) -> tuple[int, ...] | None:
    """The departments (with those below) a manager manages; None for an administrator (all)."""
    if principal.is_admin:
        return None
    if principal.role != "manager":
        return ()
    if "managed_departments" not in g:
        managed = engine().identity.departments_managed_by(principal.username)
        g.managed_departments = tuple(d.id for d in managed)
    return g.managed_departments


def tracking_query(principal: Principal) -> InstanceQuery:
    """The instances of the principal's list: their departments' (an administrator's: all)."""
    query = engine().runtime.query()
    departments = managed_departments(principal)
    return query if departments is None else query.starter_departments(departments)


def may_manage(principal: Principal, instance: ProcessInstance) -> bool:
    departments = managed_departments(principal)
    if departments is None:
        return True
    return instance.starter_department_id in departments or instance.started_by in managed_starters(principal)


def tracked_instance(principal: Principal, instance_id: str) -> ProcessInstance:
    """An instance the principal may look at here: theirs to manage, or visible to them (404)."""
    instance = engine().runtime.get(instance_id)
    if not may_manage(principal, instance):
        visible_instance(principal, instance_id)
    return instance


def managed_instance(principal: Principal, instance_id: str) -> ProcessInstance:
    """An instance the principal may change (404 if out of sight, 403 if only visible)."""
    instance = tracked_instance(principal, instance_id)
    if not may_manage(principal, instance):
        raise NotAllowedError(
            "only a manager of the starter's department or an administrator may change this"
        )
    return instance


# --------------------------------------------------------------------------------------------------
# Secrets


def secret_names() -> tuple[str, ...]:
    names = current_app.config.get("SECRET_VARIABLE_NAMES") or SECRET_NAMES
    return tuple(n.lower() for n in names)


def is_secret(name: Any, names: tuple[str, ...]) -> bool:
    lowered = str(name).lower()
    return lowered not in PUBLIC_NAMES and any(n in lowered for n in names)


def masked(value: Any, names: tuple[str, ...] | None = None) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced, at any depth."""
    names = secret_names() if names is None else names
    if isinstance(value, Mapping):
        return {k: MASK if is_secret(k, names) else masked(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, names) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# The filter


def _day(args: Mapping[str, str], name: str, problems: list[str]) -> date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(_("Dates are written as 2026-12-31."))
        return None


def _number(args: Mapping[str, str], name: str, problems: list[str]) -> int | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    if raw.isdigit() and len(raw) < 10:
        return int(raw)
    problems.append(_("Version and department are numbers."))
    return None


@dataclass(frozen=True)
class InstanceFilter:
    """The list's filter and sort, read leniently from a query string (bad values are dropped and
    reported; the page still answers)."""

    process: str = ""
    version: int | None = None
    state: str = ""
    starter: str = ""
    department: int | None = None
    business_key: str = ""
    started_from: date | None = None
    started_to: date | None = None
    ended_from: date | None = None
    ended_to: date | None = None
    step: str = ""
    sla: str = ""  # "breached" or nothing
    sort: str = "started"
    problems: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> InstanceFilter:
        problems: list[str] = []
        state, sort = args.get("state", ""), args.get("sort", "") or "started"
        return cls(
            process=(args.get("process") or "").strip()[:255],
            version=_number(args, "version", problems),
            state=state if state in STATES else "",
            starter=(args.get("starter") or "").strip()[:150],
            department=_number(args, "department", problems),
            business_key=(args.get("business_key") or "").strip()[:255],
            started_from=_day(args, "started_from", problems),
            started_to=_day(args, "started_to", problems),
            ended_from=_day(args, "ended_from", problems),
            ended_to=_day(args, "ended_to", problems),
            step=(args.get("step") or "").strip()[:255],
            sla="breached" if args.get("sla") == "breached" else "",
            sort=sort if sort in SORTS else "started",
            problems=tuple(dict.fromkeys(problems)),
        )

    def pairs(self) -> list[tuple[str, str]]:
        """The non-default settings in a stable order (what a saved filter keeps)."""
        items = [
            ("process", self.process),
            ("version", "" if self.version is None else str(self.version)),
            ("state", self.state),
            ("starter", self.starter),
            ("department", "" if self.department is None else str(self.department)),
            ("business_key", self.business_key),
            ("started_from", self.started_from.isoformat() if self.started_from else ""),
            ("started_to", self.started_to.isoformat() if self.started_to else ""),
            ("ended_from", self.ended_from.isoformat() if self.ended_from else ""),
            ("ended_to", self.ended_to.isoformat() if self.ended_to else ""),
            ("step", self.step),
            ("sla", self.sla),
            ("sort", "" if self.sort == "started" else self.sort),
        ]
        return [(k, v) for k, v in items if v]

    def query_string(self) -> str:
        return urlencode(self.pairs())

    @property
    def active(self) -> int:
        """How many filters narrow the list (the sort does not count)."""
        return sum(1 for k, _v in self.pairs() if k != "sort")


def _start_of(day: date | None, *, after: bool = False) -> datetime | None:
    """Midnight of ``day`` (or of the day after it) in the company's time zone."""
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=1 if after else 0), time(), tzinfo=ZoneInfo(company_zone()))


def filtered(principal: Principal, flt: InstanceFilter, query: InstanceQuery | None = None) -> InstanceQuery:
    """The principal's instances (``query``, by default those of their list) narrowed by ``flt``,
    in its order."""
    eng = engine()
    query = tracking_query(principal) if query is None else query
    if flt.process:
        query.definition_key(flt.process)
        if flt.version is not None:
            ids = [d.id for d in eng.repository.query().key(flt.process).version(flt.version).list()]
            query.definition_id(*ids)
    if flt.state:
        query.state(flt.state)
    if flt.starter:
        query.started_by(flt.starter)
    if flt.department is not None:
        subtree = {d.id for d in eng.identity.departments().subtree_of(flt.department).list()}
        managed = managed_departments(principal)
        query.starter_departments(sorted(subtree if managed is None else subtree & set(managed)))
    if flt.business_key:
        query.business_key(flt.business_key)
    if flt.started_from or flt.started_to:
        query.started_between(_start_of(flt.started_from), _start_of(flt.started_to, after=True))
    if flt.ended_from or flt.ended_to:
        query.ended_between(_start_of(flt.ended_from), _start_of(flt.ended_to, after=True))
    if flt.step:
        query.at_step(flt.step)
    if flt.sla:
        query.sla_breached(eng.context.now())
    if flt.sort == "ended":
        return query.order_by_ended()
    return query.order_by_started(descending=flt.sort != "started_asc")


# --------------------------------------------------------------------------------------------------
# Shared bits of the pages


def _departments(principal: Principal) -> dict[int, str]:
    """Departments to choose from (a manager's own, with those below) and to show, by id."""
    everything = {d.id: d.path for d in engine().identity.departments().list()}
    managed = managed_departments(principal)
    if managed is None:
        return dict(sorted(everything.items(), key=lambda item: item[1]))
    return {i: everything[i] for i in sorted(managed, key=lambda i: everything.get(i, "")) if i in everything}


def _versions(key: str) -> list[int]:
    return sorted({d.version for d in engine().repository.query().key(key).list()}, reverse=True)


def _list_url(pairs: list[tuple[str, str]]) -> str:
    return list_url("manage.instances", pairs)


def _human_steps(key: str) -> list[tuple[str, str]]:
    """(element id, name) of the user and manual tasks of a process's latest version."""
    try:
        latest = engine().repository.latest(key)
    except NotFoundError:
        return []
    known = current_app.extensions.setdefault("baton.manage.steps", {})  # a deployed version never changes
    if latest.id not in known:
        diagram = process_diagram(latest.id, key)
        human = ("userTask", "manualTask")
        known[latest.id] = [(e, diagram.names.get(e, e)) for e, kind in diagram.order if kind in human]
    return known[latest.id]


def _action_labels() -> dict[str, str]:
    """What an audit action says in the request's language (unknown ones show their code)."""
    return {
        "instance_started": _("started the process"),
        "instance_completed": _("The process finished"),
        "instance_cancelled": _("cancelled the process"),
        "instance_suspended": _("suspended the process"),
        "instance_resumed": _("resumed the process"),
        "instance_retried": _("retried the process"),
        "instance_error": _("The process stopped on an error"),
        "instance_moved": _("moved the process to another step"),
        "instance_migrated": _("moved the process to another version"),
        "task_created": _("Step opened"),
        "task_claimed": _("claimed"),
        "task_unclaimed": _("gave back"),
        "task_transferred": _("transferred"),
        "task_completed": _("completed"),
        "task_cancelled": _("Step closed without completion"),
        "comment_added": _("commented"),
        "vendor_link_issued": _("issued a vendor link"),
        "vendor_link_revoked": _("revoked vendor links"),
        "timer_fired": _("A timer fired"),
        "message_received": _("A message arrived"),
        "signal_received": _("A signal arrived"),
        "sla_paused": _("paused the time limit"),
        "sla_resumed": _("resumed the time limit"),
        "incident": _("An incident was recorded"),
    }


# --------------------------------------------------------------------------------------------------
# The list


@bp.get("/instances")
@roles_required("manager")
def instances():
    principal = current_principal()
    eng = engine()
    flt = InstanceFilter.from_args(request.args)
    if not flt.problems and any(not v for v in request.args.values()):
        return redirect(_list_url(flt.pairs()))  # the form sends every field: keep the address short
    page = page_index()
    found = filtered(principal, flt).list(limit=PAGE_SIZE + 1, offset=page * PAGE_SIZE)
    items, has_next = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    waiting = eng.runtime.open_tasks(i.id for i in items)
    now = eng.context.now()
    return render_template(
        "manage/instances.html",
        items=items,
        waiting=waiting,
        late={i for i, tasks in waiting.items() if any(t.due_at and t.due_at <= now for t in tasks)},
        pages={"number": page + 1, "count": None, "has_next": has_next},
        page_url=lambda n: _list_url([*flt.pairs(), ("page", str(n))]),
        flt=flt,
        query_string=flt.query_string(),
        processes=process_names(),
        versions=_versions(flt.process) if flt.process else [],
        steps=_human_steps(flt.process) if flt.process else [],
        departments=_departments(principal),
        people=display_names(
            [*(i.started_by for i in items), *(t.assignee for ts in waiting.values() for t in ts)]
        ),
        saved_filters=eng.identity.saved_filters(principal.username, kind=FILTER_KIND),
    )


@bp.post("/instances/filters")
@roles_required("manager")
def save_filter():
    principal = current_principal()
    query = InstanceFilter.from_args(MultiDict(parse_qsl(request.form.get("query", "")))).query_string()
    name = request.form.get("name", "").strip()
    try:
        engine().identity.save_filter(principal.username, name, query, kind=FILTER_KIND)
    except ValidationError:
        flash(_("Could not save the filter: give it a name of 1 to 100 letters or digits."), "error")
    else:
        flash(_("Filter saved: %(name)s.", name=name), "saved")
    return redirect(url_for("manage.instances") + (f"?{query}" if query else ""))


@bp.post("/instances/filters/<int:filter_id>/delete")
@roles_required("manager")
def delete_filter(filter_id: int):
    engine().identity.delete_filter(current_principal().username, filter_id)
    return redirect(url_for("manage.instances"))


# --------------------------------------------------------------------------------------------------
# The instance page


@dataclass(frozen=True)
class TimelineRow:
    """One line of the timeline: a step (a human task) or something that happened to the instance."""

    at: datetime
    title: str
    who: str | None = None
    ended: datetime | None = None
    took: str | None = None
    state: str | None = None  # a step's: ready | completed | cancelled
    detail: str | None = None


@dataclass(frozen=True)
class AuditRow:
    event: AuditEvent
    actor: str | None
    action: str
    step: str | None
    before: str | None
    after: str | None
    details: list[tuple[str, str]]


@dataclass(frozen=True)
class StepMark:
    element_id: str
    name: str
    state: str  # done | current | error | todo


_INSTANCE_EVENTS = {  # audit actions the timeline shows besides the steps themselves
    "instance_started",
    "instance_completed",
    "instance_cancelled",
    "instance_suspended",
    "instance_resumed",
    "instance_retried",
    "instance_error",
    "instance_moved",
    "instance_migrated",
    "timer_fired",
    "message_received",
    "signal_received",
    "sla_paused",
    "sla_resumed",
    "incident",
}


def _took(start: datetime, end: datetime | None) -> str | None:
    return format_timedelta(end - start, threshold=1.1) if end is not None else None


def _timeline(
    tasks: list[UserTask], history: list[AuditEvent], people: Mapping[str, str], names: Mapping[str, str]
) -> list[TimelineRow]:
    labels = _action_labels()
    rows = []
    for t in tasks:
        who = t.completed_by or t.assignee
        offered = ", ".join((*t.candidate_users, *t.candidate_groups))
        rows.append(
            TimelineRow(
                at=t.created_at,
                title=t.name or t.element_id,
                who=people.get(who, who) if who else (offered or None),
                ended=t.completed_at if t.state != "ready" else None,
                took=_took(t.created_at, t.completed_at) if t.state != "ready" else None,
                state=t.state,
            )
        )
    for e in history:
        if e.action not in _INSTANCE_EVENTS:
            continue
        details = masked(e.details or {})
        detail = details.get("reason") or details.get("message")
        if e.action in ("instance_moved", "instance_migrated"):
            before, after = details.get("before"), details.get("after")
            detail = f"{_plain(before, names)} → {_plain(after, names)}" + (f" · {detail}" if detail else "")
        step = (
            names.get(e.element_id, e.element_id) if e.element_id and e.action != "instance_moved" else None
        )
        rows.append(
            TimelineRow(
                at=e.at,
                title=labels.get(e.action, e.action) + (f" · {step}" if step else ""),
                who=people.get(e.actor, e.actor) if e.actor else None,
                detail=str(detail) if detail else None,
            )
        )
    return sorted(rows, key=lambda r: (r.at, r.state is not None))  # what happened, then the steps it opened


def _plain(value: Any, names: Mapping[str, str] | None = None) -> str:
    """A detail value in one line (element ids shown by name)."""
    names = names or {}
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v, names) for v in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v, names)}" for k, v in value.items()) or "—"
    text = str(value)
    return names.get(text, text)[:500]


def _audit(history: list[AuditEvent], people: Mapping[str, str], names: Mapping[str, str]) -> list[AuditRow]:
    labels = _action_labels()
    rows = []
    for e in reversed(history):  # newest first
        details = masked(e.details or {})
        has_change = "before" in details or "after" in details
        rows.append(
            AuditRow(
                event=e,
                actor=people.get(e.actor, e.actor) if e.actor else None,
                action=labels.get(e.action, e.action.replace("_", " ")),
                step=names.get(e.element_id, e.element_id) if e.element_id else None,
                before=_plain(details.get("before"), names) if has_change else None,
                after=_plain(details.get("after"), names) if has_change else None,
                details=[(k, _plain(v, names)) for k, v in details.items() if k not in ("before", "after")],
            )
        )
    return rows


def _marks(order: list[tuple[str, str]], names: Mapping[str, str], path: InstancePath) -> list[StepMark]:
    """The process's steps in flow order with where the instance is (the list next to or instead
    of the diagram)."""
    marks = []
    for element_id, kind in order:
        if kind.endswith("Gateway") or kind == "boundaryEvent":
            continue
        if element_id in path.errored:
            state = "error"
        elif element_id in path.active:
            state = "current"
        elif element_id in path.completed:
            state = "done"
        else:
            state = "todo"
        marks.append(StepMark(element_id, names.get(element_id, element_id), state))
    return marks


def taken_flows(content: bytes, key: str, taken: Iterable[tuple[str, str]]) -> list[str]:
    """The ids of the sequence flows of process ``key`` joining the (source, target) pairs."""
    try:
        root = parse_xml(content)
    except UnsafeXml:
        return []
    pairs = set(taken)
    flows = []
    for process in root.iter(f"{{{BPMN_NS}}}process"):
        if process.get("id") != key:
            continue
        for flow in process.iter(f"{{{BPMN_NS}}}sequenceFlow"):
            if (flow.get("sourceRef"), flow.get("targetRef")) in pairs and flow.get("id"):
                flows.append(flow.get("id"))
    return flows


@bp.get("/instances/<instance_id>")
@roles_required("manager")
def instance(instance_id: str):
    principal = current_principal()
    eng = engine()
    tracked_instance(principal, instance_id)
    found = eng.runtime.get(instance_id, with_variables=True)
    can_manage = may_manage(principal, found)
    path = eng.runtime.path(instance_id)
    diagram = process_diagram(found.definition_id, found.definition_key)
    tasks = eng.tasks.query().instance(instance_id).order_by_created().list()
    history = eng.history.for_instance(instance_id)
    comments = eng.tasks.comments(instance_id)
    people = display_names(
        [found.started_by, *(t.assignee for t in tasks), *(t.completed_by for t in tasks)]
        + [e.actor for e in history]
        + [c.author for c in comments]
    )
    versions = _versions(found.definition_key)
    newer = [v for v in versions if v != found.definition_version]
    check = None
    if can_manage and newer and found.state in MOVABLE_STATES and versions[0] != found.definition_version:
        check = next(iter(eng.runtime.check_migration([instance_id], to_version=versions[0])), None)
    live = found.state in ("running", "error")
    return render_template(
        "manage/instance.html",
        instance=found,
        process_name=process_names().get(found.definition_key, found.definition_key),
        department=_departments_by_id().get(found.starter_department_id or -1),
        can_manage=can_manage,
        path=path,
        marks=_marks(diagram.order, diagram.names, path),
        names=diagram.names,
        diagram_url=url_for("manage.diagram", instance_id=instance_id) if diagram.filename else None,
        viewer=pages.viewer_available() and diagram.filename is not None,
        flows=taken_flows(diagram.content, found.definition_key, path.taken) if diagram.filename else [],
        open_tasks=[t for t in tasks if t.state == "ready"],
        timeline=_timeline(tasks, history, people, diagram.names),
        audit=_audit(history, people, diagram.names),
        variables=[(k, _shown(v)) for k, v in sorted(masked(found.variables or {}).items())],
        comments=comments,
        people=people,
        targets=eng.runtime.move_targets(instance_id) if can_manage and live else [],
        versions=newer,
        check=check,
        archived=eng.retention.archived(instance_id) if found.state in ("completed", "cancelled") else None,
        users=[(u.username, u.name) for u in eng.identity.users().active().list(limit=500)]
        if can_manage
        else [],
    )


def _shown(value: Any) -> str:
    """A variable's value as text: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _departments_by_id() -> dict[int, str]:
    return {d.id: d.path for d in engine().identity.departments().list()}


@bp.get("/instances/<instance_id>/diagram.bpmn")
@roles_required("manager")
def diagram(instance_id: str):
    """The BPMN XML of the instance's version (what the diagram viewer draws)."""
    found = tracked_instance(current_principal(), instance_id)
    drawn = process_diagram(found.definition_id, found.definition_key)
    if drawn.filename is None:
        raise NotFoundError(f"no diagram for process {found.definition_key}")
    response = Response(drawn.content, mimetype="application/xml")
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


# --------------------------------------------------------------------------------------------------
# Interventions: each checks the principal, runs one engine command (audited there), and comes back
# to the instance page with what happened.


def _back(instance_id: str, anchor: str = ""):
    return redirect(url_for("manage.instance", instance_id=instance_id) + anchor)


def _refused(error: BatonError) -> str:
    if isinstance(error, ConflictError):
        reasons = "; ".join(str(d) for d in (error.details or []))
        return _("Not done: the instance changed or is in the wrong state.") + (
            f" ({reasons})" if reasons else ""
        )
    if isinstance(error, ValidationError):
        return _("Not done: %(reason)s", reason=error.message)
    return error.message


@bp.post("/instances/<instance_id>/<any(cancel, suspend, resume, retry):action>")
@roles_required("manager")
def control(instance_id: str, action: str):
    principal = current_principal()
    managed_instance(principal, instance_id)
    runtime = engine().runtime
    actor, reason = principal.username, request.form.get("reason", "").strip()[:2000] or None
    try:
        {
            "cancel": lambda: runtime.cancel(instance_id, actor=actor, reason=reason),
            "suspend": lambda: runtime.suspend(instance_id, actor=actor),
            "resume": lambda: runtime.resume(instance_id, actor=actor),
            "retry": lambda: runtime.retry(instance_id, actor=actor),
        }[action]()
    except (ConflictError, ValidationError) as exc:
        flash(_refused(exc), "error")
    else:
        done = {
            "cancel": _("The process was cancelled."),
            "suspend": _("The process was suspended."),
            "resume": _("The process was resumed."),
            "retry": _("The failed step was run again."),
        }
        flash(done[action], "saved")
    return _back(instance_id)


@bp.post("/instances/<instance_id>/move")
@roles_required("manager")
def move(instance_id: str):
    principal = current_principal()
    managed_instance(principal, instance_id)
    targets = [t for t in request.form.getlist("target") if t]
    reason = request.form.get("reason", "").strip()[:2000] or None
    try:
        engine().runtime.move(instance_id, targets, actor=principal.username, reason=reason)
    except (ConflictError, ValidationError) as exc:
        flash(_refused(exc), "error")
    else:
        flash(_("The process was moved."), "saved")
    return _back(instance_id)


@bp.post("/instances/<instance_id>/reassign")
@roles_required("manager")
def reassign(instance_id: str):
    """Hand any open task of the instance to someone (a manager's 转交, audited as a transfer)."""
    principal = current_principal()
    managed_instance(principal, instance_id)
    eng = engine()
    task_id = request.form.get("task", "")
    task = eng.tasks.get(task_id)
    if task.instance_id != instance_id:
        raise NotFoundError(f"task {task_id} not found")
    to_user = request.form.get("to_user", "").strip()
    comment = request.form.get("comment", "").strip()[:1000] or None
    try:
        colleague = eng.identity.get_user(to_user) if to_user else None
        if colleague is None or not colleague.is_active:
            raise ValidationError(_("choose an active user by username"))
        eng.tasks.transfer(task_id, to_user=colleague.username, actor=principal.username, comment=comment)
    except NotFoundError:
        flash(_refused(ValidationError(_("choose an active user by username"))), "error")
    except (ConflictError, ValidationError) as exc:
        flash(_refused(exc), "error")
    else:
        flash(
            _("%(name)s was handed to %(user)s.", name=task.name or task.element_id, user=colleague.name),
            "saved",
        )
    return _back(instance_id, "#steps")


@bp.post("/instances/<instance_id>/migrate")
@roles_required("manager")
def migrate(instance_id: str):
    principal = current_principal()
    managed_instance(principal, instance_id)
    try:
        version = int(request.form.get("to_version", ""))
        engine().runtime.migrate(instance_id, to_version=version, actor=principal.username)
    except ValueError:
        flash(_refused(ValidationError(_("choose a version"))), "error")
    except (ConflictError, ValidationError, NotFoundError) as exc:
        flash(_refused(exc), "error")
    else:
        flash(_("The process now runs on version %(version)s.", version=version), "saved")
    return _back(instance_id)


@bp.post("/instances/<instance_id>/comment")
@roles_required("manager")
def comment(instance_id: str):
    principal = current_principal()
    tracked_instance(principal, instance_id)
    try:
        engine().tasks.add_comment(instance_id, request.form.get("body", ""), author=principal.username)
    except ValidationError:
        flash(_("A comment needs 1 to 5000 characters."), "error")
    return _back(instance_id, "#comments")


# --------------------------------------------------------------------------------------------------
# Migrating a batch


def _batch_args(source: Mapping[str, str]) -> tuple[str, int | None]:
    key = (source.get("process") or "").strip()[:255]
    raw = (source.get("to_version") or "").strip()
    return key, int(raw) if raw.isdigit() and len(raw) < 10 else None


@bp.get("/migrations")
@roles_required("manager")
def migrations():
    """Pick a process and a version: its instances on other versions, each with the pre-check."""
    principal = current_principal()
    key, version = _batch_args(request.args)
    processes = process_names()
    versions = _versions(key) if key in processes else []
    if versions and version not in versions:
        version = versions[0]
    checks = []
    if versions:
        others = [d.id for d in engine().repository.query().key(key).list() if d.version != version]
        candidates = (
            tracking_query(principal)
            .definition_key(key)
            .state(*MOVABLE_STATES)
            .definition_id(*others)
            .order_by_started()
            .list(limit=MAX_BATCH)
        )
        checks = engine().runtime.check_migration([i.id for i in candidates], to_version=version)
    return render_template(
        "manage/migrations.html",
        processes=processes,
        key=key,
        versions=versions,
        version=version,
        checks=checks,
        outcomes=None,
        limit=MAX_BATCH,
    )


@bp.post("/migrations")
@roles_required("manager")
def migrate_batch():
    principal = current_principal()
    key, version = _batch_args(request.form)
    if version is None:
        raise ValidationError(_("choose a version"))
    ids, outcomes = [], {}
    for instance_id in dict.fromkeys(request.form.getlist("instance")[:MAX_BATCH]):
        try:
            managed_instance(principal, instance_id)
        except (NotFoundError, NotAllowedError):
            outcomes[instance_id] = (False, (_("Not found, or not visible to you."),))
        else:
            ids.append(instance_id)
    for outcome in engine().runtime.migrate_all(ids, to_version=version, actor=principal.username):
        outcomes[outcome.instance_id] = (outcome.migrated, outcome.problems)
    return render_template(
        "manage/migrations.html",
        processes=process_names(),
        key=key,
        versions=_versions(key),
        version=version,
        checks=[],
        outcomes=outcomes,
        moved=sum(1 for ok, _problems in outcomes.values() if ok),
        limit=MAX_BATCH,
    )
