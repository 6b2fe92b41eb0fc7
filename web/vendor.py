"""Vendors (厂商) answer an escalated ticket through a signed link, without a staff account.

Staff who may act on a task in a lane named ``vendor`` (processes/ticket: 厂商处理) issue a link for
it, on a page or through the API. The link carries an itsdangerous token signed with the app's
``SECRET_KEY`` that names that one task, the vendor and how long the link lives. It opens that task's
form and nothing else (the form's read-only fields are all of the ticket the vendor sees), and what
the vendor submits completes the task as the actor ``vendor:<name>``: the audit trail says who
answered. Issuing a link is recorded as a comment on the task, by the person who issued it.

A link stops working when it expires, when its task closes (answered, cancelled, the ticket moved
on) or when the secret key changes. A tampered link, or one used for another task, answers 404; an
expired link, or one whose task is closed, 410.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, make_response, render_template, request, url_for
from flask_babel import gettext as _
from itsdangerous import BadSignature, URLSafeTimedSerializer
from marshmallow import EXCLUDE, Schema, fields, validate

from engine.errors import ConflictError, NotFoundError, ValidationError
from engine.forms import errors_from_problems, form_values
from engine.results import UserTask
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


@dataclass(frozen=True)
class VendorLink:
    task_id: str
    vendor: str
    url: str
    expires_at: datetime


class VendorLinkInput(Schema):
    class Meta:
        unknown = EXCLUDE

    vendor = fields.String(required=True, validate=validate.Length(min=1, max=100))
    hours = fields.Integer(load_default=DEFAULT_HOURS, validate=validate.Range(min=1, max=MAX_HOURS))


class VendorLinkSchema(Schema):
    task_id = fields.String()
    vendor = fields.String()
    url = fields.String()
    expires_at = fields.AwareDateTime()


# for web/openapi.py: path -> method -> (summary, request, response, query parameters, status codes)
OPERATIONS = {
    "/tasks/{id}/vendor-link": {
        "post": (
            "A signed link that lets a vendor answer this vendor-lane task without an account",
            "VendorLinkInput",
            "VendorLink",
            {},
            [201, 403, 404, 409, 422],
        )
    },
}
SCHEMAS = {"VendorLinkInput": VendorLinkInput, "VendorLink": VendorLinkSchema}


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
    """Sign a link for ``task`` and record it as a comment by the issuer (no secret in the comment)."""
    issuer = current_principal().username
    token = _serializer().dumps({"t": task.id, "v": vendor, "h": hours, "by": issuer})
    expires = _now() + timedelta(hours=hours)
    engine().tasks.add_comment(
        task.instance_id,
        f"已向厂商「{vendor}」发出处理链接，有效至 {expires:%Y-%m-%d %H:%M} UTC。"
        f" / Link for vendor {vendor} issued, valid until {expires:%Y-%m-%d %H:%M} UTC.",
        author=issuer,
        task_id=task.id,
    )
    url = url_for("vendor.answer", task_id=task.id, token=token, _external=True)
    return VendorLink(task.id, vendor, url, expires)


# -- staff: issue a link -------------------------------------------------------------------------------


@bp.get("/vendor/links")
@login_required
def links():
    """The open vendor steps the caller may hand out."""
    principal = current_principal()
    offered = engine().tasks.query().offered_to(principal.username, principal.groups).open()
    tasks = [t for t in offered.order_by_created().list(limit=500) if t.lane == VENDOR_LANE]
    # which ticket each step belongs to: its number and subject, so several can be told apart
    instances = {i: engine().runtime.get(i, with_variables=True) for i in {t.instance_id for t in tasks}}
    return render_template("vendor/links.html", tasks=tasks, instances=instances)


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
