"""Vendors (厂商) answer an escalated ticket through a signed link, without a staff account.

Staff who may act on a task in a lane named ``vendor`` (processes/ticket: 厂商处理) issue a link for
it, on a page or through the API. The link carries an itsdangerous token signed with the app's
``SECRET_KEY`` that names that one task, the vendor and how long the link lives. It opens that task's
form and nothing else (the form's read-only fields are all of the ticket the vendor sees), and what
the vendor submits completes the task as the actor ``vendor:<name>``: the audit trail says who
answered. Issuing a link is recorded as a comment on the task, by the person who issued it, and
in the audit trail (``vendor_link_issued``: the link's id, the vendor, when it expires; never the
token).

A link stops working when it expires, when its task closes (answered, cancelled, the ticket moved
on), when it is revoked or when the secret key changes. Whoever may issue a link for a task may
revoke it, on the links page or through the API: the revocation (``vendor_link_revoked`` in the
audit trail, and a comment) ends that link and every other link issued for the task until then; a
link issued afterwards works. The audit trail is the record: links are listed, and checked when
opened, from the task's ``vendor_link_*`` entries (one indexed read by instance). A tampered link,
or one used for another task, answers 404; an expired or revoked link, or one whose task is closed,
410.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from itsdangerous import BadSignature, URLSafeTimedSerializer
from marshmallow import EXCLUDE, Schema, fields, validate

from engine.errors import ConflictError, NotFoundError, ValidationError
from engine.forms import errors_from_problems, form_values
from engine.results import AuditEvent, UserTask
from engine.tasks import Upload
from web.access import actionable_task
from web.api.common import load
from web.security import current_principal, engine, login_required

bp = Blueprint("vendor", __name__)

VENDOR_LANE = "vendor"
SALT = "baton.vendor-link"
DEFAULT_HOURS = 72
LIFETIMES = (24, 72, 168)  # hours offered on the page; the API takes 1 to MAX_HOURS
MAX_HOURS = 24 * 30
_SPACES = re.compile(r"\s+")
ISSUED, REVOKED = "vendor_link_issued", "vendor_link_revoked"  # audit actions
CLOSED_SHOWN = 20  # recently closed vendor steps listed with their links


@dataclass(frozen=True)
class VendorLink:
    id: str
    task_id: str
    vendor: str
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class IssuedLink:
    """A link as the audit trail knows it (never its token). ``state``: active, expired, revoked,
    answered (its vendor answered the step) or closed (the step closed otherwise)."""

    id: str
    vendor: str
    issued_by: str | None
    issued_at: datetime
    expires_at: datetime
    state: str = "active"
    revoked_by: str | None = None
    revoked_at: datetime | None = None


class VendorLinkInput(Schema):
    class Meta:
        unknown = EXCLUDE

    vendor = fields.String(required=True, validate=validate.Length(min=1, max=100))
    hours = fields.Integer(load_default=DEFAULT_HOURS, validate=validate.Range(min=1, max=MAX_HOURS))


class VendorLinkSchema(Schema):
    id = fields.String()
    task_id = fields.String()
    vendor = fields.String()
    url = fields.String()
    expires_at = fields.AwareDateTime()


class VendorLinkRevocationSchema(Schema):
    task_id = fields.String()
    revoked = fields.List(fields.String(), metadata={"description": "ids of the links that were active"})
    revoked_at = fields.AwareDateTime()


# for web/openapi.py: path -> method -> (summary, request, response, query parameters, status codes)
OPERATIONS = {
    "/tasks/{id}/vendor-link": {
        "post": (
            "A signed link that lets a vendor answer this vendor-lane task without an account",
            "VendorLinkInput",
            "VendorLink",
            {},
            [201, 403, 404, 409, 422],
        ),
        "delete": (
            "Revoke the vendor links issued for this task until now (a link issued afterwards works)",
            None,
            "VendorLinkRevocation",
            {},
            [200, 403, 404, 409, 422],
        ),
    },
}
SCHEMAS = {
    "VendorLinkInput": VendorLinkInput,
    "VendorLink": VendorLinkSchema,
    "VendorLinkRevocation": VendorLinkRevocationSchema,
}


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=SALT)


def _now() -> datetime:
    return datetime.now(UTC)


def vendor_name(raw: str | None) -> str:
    """One line of at most 100 characters: it becomes part of an actor name (``vendor:<name>``)."""
    name = _SPACES.sub(" ", raw or "").strip()[:100]
    if not name or not name.isprintable():
        raise ValidationError(
            "the vendor needs a name", problems=[{"field": "vendor", "message": "required"}]
        )
    return name


def linkable_task(task_id: str) -> UserTask:
    """An open vendor-lane task the caller may act on. Raises NotFoundError, NotAllowedError,
    ValidationError (not a vendor step), ConflictError (closed)."""
    task = actionable_task(current_principal(), task_id)
    if task.lane != VENDOR_LANE:
        raise ValidationError("only a step in the vendor lane can be handed to a vendor")
    if task.state != "ready":
        raise ConflictError(f"task is already {task.state}")
    return task


def issue_link(task: UserTask, vendor: str, hours: int) -> VendorLink:
    """Sign a link for ``task`` and record it, by the issuer, in the audit trail and as a comment
    (its id, never its token)."""
    issuer = current_principal().username
    link_id = secrets.token_urlsafe(9)
    token = _serializer().dumps({"t": task.id, "v": vendor, "h": hours, "by": issuer, "l": link_id})
    expires = _now() + timedelta(hours=hours)
    engine().tasks.record(
        task.id,
        ISSUED,
        actor=issuer,
        details={"link": link_id, "vendor": vendor, "expires_at": expires.isoformat()},
        comment=f"已向厂商「{vendor}」发出处理链接，有效至 {expires:%Y-%m-%d %H:%M} UTC。"
        f" / Link for vendor {vendor} issued, valid until {expires:%Y-%m-%d %H:%M} UTC.",
    )
    url = url_for("vendor.answer", task_id=task.id, token=token, _external=True)
    return VendorLink(id=link_id, task_id=task.id, vendor=vendor, url=url, expires_at=expires)


def revoke_links(task: UserTask, link_id: str | None = None) -> list[str]:
    """End every link issued for ``task`` until now (``link_id``: the one the person chose, for the
    record); the ids of those that were active. Raises NotFoundError for an unknown ``link_id``."""
    revoker = current_principal().username
    issued = issued_links([task]).get(task.id, [])
    if link_id is not None and link_id not in {link.id for link in issued}:
        raise NotFoundError(f"no vendor link {link_id} for this task")
    active = [link for link in issued if link.state == "active"]
    vendors = "、".join(sorted({link.vendor for link in active})) or "—"
    engine().tasks.record(
        task.id,
        REVOKED,
        actor=revoker,
        details={"link": link_id, "links": [link.id for link in active]},
        comment=f"已撤销此前发给厂商（{vendors}）的处理链接。"
        f" / Vendor links issued until now ({vendors}) revoked.",
    )
    return [link.id for link in active]


def issued_links(tasks: Iterable[UserTask]) -> dict[str, list[IssuedLink]]:
    """The links issued for each task, newest first, with their state: from the audit trail, one
    query by the tasks' instances (indexed)."""
    by_id = {t.id: t for t in tasks}
    if not by_id:
        return {}
    events = (
        engine()
        .history.query()
        .instances(t.instance_id for t in by_id.values())
        .action(ISSUED, REVOKED)
        .chronological()
        .list()
    )
    found: dict[str, list[AuditEvent]] = {}
    for event in events:
        if event.task_id in by_id:
            found.setdefault(event.task_id, []).append(event)
    now = _now()
    return {task_id: _links(by_id[task_id], found.get(task_id, []), now) for task_id in by_id}


def _links(task: UserTask, events: list[AuditEvent], now: datetime) -> list[IssuedLink]:
    links: list[IssuedLink] = []
    for event in events:
        details = event.details or {}
        if event.action == ISSUED:
            expires = datetime.fromisoformat(str(details.get("expires_at")))
            vendor = str(details.get("vendor") or "")
            links.append(IssuedLink(str(details.get("link")), vendor, event.actor, event.at, expires))
        else:  # a revocation ends every link issued before it
            links = [
                link if link.revoked_at else replace(link, revoked_by=event.actor, revoked_at=event.at)
                for link in links
            ]
    return [replace(link, state=_state(link, task, now)) for link in reversed(links)]


def _state(link: IssuedLink, task: UserTask, now: datetime) -> str:
    if link.revoked_at is not None:
        return "revoked"
    if task.state == "ready":
        return "active" if now <= link.expires_at else "expired"
    if (task.completed_at or now) > link.expires_at:
        return "expired"
    return "answered" if task.completed_by == f"vendor:{link.vendor}" else "closed"


def _revoked(task: UserTask, link_id: Any, signed_at: datetime) -> bool:
    """Whether a revocation for the task came after the link was issued (audit order; a link
    without an id, signed before links had ids, by its signing time)."""
    events = engine().history.query().instance(task.instance_id).task(task.id).action(ISSUED, REVOKED).list()
    revocations = [e for e in events if e.action == REVOKED]
    if not revocations:
        return False
    last = max(revocations, key=lambda e: e.id)
    issued = [e for e in events if e.action == ISSUED and (e.details or {}).get("link") == link_id]
    if link_id and issued:
        return issued[0].id < last.id
    return signed_at <= last.at


# -- staff: issue a link -------------------------------------------------------------------------------


@bp.get("/vendor/links")
@login_required
def links():
    """The open vendor steps the caller may hand out and the caller's recently closed ones, each with
    the links issued for it and their state."""
    principal = current_principal()
    eng = engine()
    offered = eng.tasks.query().offered_to(principal.username, principal.groups).open()
    tasks = [t for t in offered.order_by_created().list(limit=500) if t.lane == VENDOR_LANE]
    held = eng.tasks.query().assignee(principal.username).state("completed", "cancelled")
    closed = [t for t in held.order_by_completed().list(limit=200) if t.lane == VENDOR_LANE][:CLOSED_SHOWN]
    # which ticket each step belongs to: its number and subject, so several can be told apart
    instances = {
        i: eng.runtime.get(i, with_variables=True) for i in {t.instance_id for t in [*tasks, *closed]}
    }
    links_of = issued_links([*tasks, *closed])
    closed = [t for t in closed if links_of.get(t.id)]  # closed steps matter for their links only
    return render_template(
        "vendor/links.html", tasks=tasks, closed=closed, instances=instances, links_of=links_of
    )


@bp.post("/vendor/tasks/<task_id>/links/<link_id>/revoke")
@login_required
def revoke(task_id: str, link_id: str):
    """Revoke a link (and every other link issued for the step until now) from the links page."""
    task = linkable_task(task_id)
    revoke_links(task, link_id)
    flash(_("Revoked: the links issued for this step until now no longer work. A new link will."), "done")
    return redirect(url_for("vendor.links"))


@bp.route("/vendor/tasks/<task_id>/link", methods=["GET", "POST"])
@login_required
def new_link(task_id: str):
    task = linkable_task(task_id)
    variables = engine().runtime.variables(task.instance_id)
    issued, error = None, None
    if request.method == "POST":
        try:
            hours = int(request.form.get("hours", DEFAULT_HOURS))
            if hours not in LIFETIMES:
                raise ValueError(hours)
            issued = issue_link(task, vendor_name(request.form.get("vendor")), hours)
        except ValueError:
            error = _("Choose how long the link works.")
        except ValidationError:
            error = _("The vendor needs a name.")
    vendor = request.form.get("vendor") or str(variables.get("vendor") or "")
    email = str(variables.get("vendor_email") or "")
    mailto = _mailto(email, variables, issued) if issued is not None else None
    return render_template(
        "vendor/link.html",
        task=task,
        vendor=vendor,
        email=email,
        ticket=variables.get("ticket_number") or "",
        subject=variables.get("subject") or "",
        issued=issued,
        mailto=mailto,
        error=error,
        lifetimes=LIFETIMES,
        default_hours=DEFAULT_HOURS,
    ), (422 if error else 200)


def _mailto(email: str, variables: dict[str, Any], link: VendorLink) -> str:
    """A ``mailto:`` the agent's own mail program sends (Baton keeps no vendor addresses)."""
    number, subject = variables.get("ticket_number") or "", variables.get("subject") or ""
    title = f"请协助处理工单 {number}：{subject} / Please handle ticket {number}: {subject}"
    body = (
        f"{variables.get('vendor_brief') or ''}\n\n请在此回复 / Reply here:\n{link.url}\n\n"
        f"有效至 / Valid until: {link.expires_at:%Y-%m-%d %H:%M} UTC\n"
    )
    return f"mailto:{quote(email)}?subject={quote(title)}&body={quote(body)}"


@bp.post("/api/v1/tasks/<task_id>/vendor-link")
@login_required
def api_new_link(task_id: str):
    """Issue a vendor link for an open vendor-lane task: ``{"vendor": "...", "hours": 72}``."""
    task = linkable_task(task_id)
    body = load(VendorLinkInput())
    link = issue_link(task, vendor_name(body["vendor"]), body["hours"])
    return VendorLinkSchema().dump(link), 201


@bp.delete("/api/v1/tasks/<task_id>/vendor-link")
@login_required
def api_revoke_links(task_id: str):
    """Revoke every vendor link issued for an open vendor-lane task until now."""
    task = linkable_task(task_id)
    revoked = revoke_links(task)
    return VendorLinkRevocationSchema().dump({"task_id": task.id, "revoked": revoked, "revoked_at": _now()})


# -- the vendor: open the link, answer -----------------------------------------------------------------


class LinkRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _open(task_id: str, token: str) -> tuple[UserTask, str]:
    """The task a link opens and the vendor's name, or ``LinkRefused`` (404 invalid, 410 gone)."""
    try:
        payload, signed_at = _serializer().loads(token, return_timestamp=True)
    except BadSignature:
        raise LinkRefused(404, _("This link is not valid.")) from None
    if not isinstance(payload, dict) or payload.get("t") != task_id or not payload.get("v"):
        raise LinkRefused(404, _("This link is not valid."))
    hours = payload.get("h")
    if not isinstance(hours, int) or _now() - signed_at > timedelta(hours=min(hours, MAX_HOURS)):
        raise LinkRefused(410, _("This link has expired. Ask us for a new one."))
    try:
        task = engine().tasks.get(task_id)
    except NotFoundError:
        raise LinkRefused(404, _("This link is not valid.")) from None
    if task.lane != VENDOR_LANE:
        raise LinkRefused(404, _("This link is not valid."))
    if task.state != "ready":
        raise LinkRefused(410, _("This request has been answered or closed already. Thank you."))
    if _revoked(task, payload.get("l"), signed_at):
        raise LinkRefused(410, _("This link has been withdrawn. Ask us for a new one."))
    return task, str(payload["v"])


def _private(response: Response) -> Response:
    """The token is in the URL: keep it out of referrers, caches and search engines."""
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return _private(make_response(render_template(template, **context), status))


@bp.route("/vendor/<task_id>/<token>", methods=["GET", "POST"])
def answer(task_id: str, token: str):
    try:
        task, vendor = _open(task_id, token)
    except LinkRefused as refused:
        return _page("vendor/message.html", refused.status, message=refused.message, tone="error")
    eng = engine()
    form = eng.tasks.form(task_id)
    variables = eng.runtime.variables(task.instance_id)
    values = form_values(form, data=variables) if form is not None else {}
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        uploads = {
            name: Upload(upload.filename or "", upload.mimetype, upload.read())
            for name, upload in request.files.items()
            if upload.filename
        }
        raw = {key: request.form.getlist(key) for key in request.form if key != "csrf_token"}
        try:
            eng.tasks.complete(task_id, actor=f"vendor:{vendor}", data=raw, from_json=False, uploads=uploads)
        except ValidationError as exc:
            values = form_values(form, data=variables, submitted=request.form) if form is not None else {}
            errors, status = errors_from_problems(exc.problems) or {"": [exc.message]}, 422
        except ConflictError:
            message = _("This request has been answered or closed already. Thank you.")
            return _page("vendor/message.html", 410, message=message, tone="error")
        else:
            return _page("vendor/message.html", message=_("Thank you: your answer was sent."), tone="notice")
    return _page(
        "vendor/task.html", status, task=task, form=form, values=values, errors=errors, vendor=vendor
    )
