"""Customers ask for help themselves (客户自助提交工单), like Zendesk's "Submit a request" page.

``/support/new`` is public: no account, in Simplified Chinese or English (the browser's language or
the switch in the header), one column at 375 px, plain HTML that works without JavaScript. The
customer gives their name, optionally their company, an e-mail address and/or a phone number (at
least one), the type, the priority (``normal`` unless they choose; the staff-only priorities of
``RESERVED_PRIORITIES`` are not offered), a subject and a description.

The choices, lengths and patterns come from the register step's form of the deployed ticket process
(processes/ticket/ticket_register.json), and the input is checked with the engine's JSON-Schema form
machinery (engine/forms.py), then once more by the step itself: a refused field re-renders the form
with its message and the input kept (422). A valid request starts the ticket process and completes
its ``register`` step in the same command (``RuntimeService.start_and_complete``) as the actor
``customer:<e-mail or phone>``, so the ticket goes on exactly as one a colleague registered: the SLA
decision, the CRM ticket (the customer found by e-mail, phone or name, else created, by
``crm_open_ticket``) and the agents' queue. The CRM customer is the company when one is given, else
the person. The same transaction records an audit entry ``support_request`` (who, as given, and the
client's IP address) and a comment on the step that agents read on the ticket.

Abuse: the session's CSRF token (web/security.py, 400 otherwise: the form comes back with the input
kept), a honeypot field (filled in: the thank-you page, nothing started), at most
``SUPPORT_RATE_LIMIT`` requests per address an hour (429; counted from the ``support_request``
entries, so every web worker sees the same count), a 64 KiB request limit (413). ``BATON_SUPPORT_FORM
=off`` hides it all (404). ``BATON_SUPPORT_DEPARTMENT`` names the department the customers' tickets
count under (their starter has none): its managers track them as their agents' tickets. Behind a
reverse proxy set ``BATON_PROXY_HOPS`` so the address is the client's, not the proxy's.

The confirmation page shows the ticket number (the CRM ticket's, ``T000042``, which every later mail
to the customer quotes) and, when the customer gave an e-mail address, they get the acknowledgement
``ticket_received`` in the page's language (integrations/mail.py; logged instead without
``BATON_SMTP_HOST``). A mail that cannot be sent is logged: the ticket stands.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from engine.connectors import ConnectorError
from engine.errors import ConflictError, NotFoundError, ValidationError
from engine.forms import Form, clean, errors_from_problems, form_from_schema
from engine.results import ProcessInstance
from integrations.mail import Mailer, MailSettings
from web.security import engine

bp = Blueprint("support", __name__)
log = logging.getLogger(__name__)

PROCESS, STEP = "ticket", "register"
ACTION = "support_request"  # the audit entry of each request: who (as given) and from where
CHANNEL = "support_form"  # the ticket's ``channel`` variable
RESERVED_PRIORITIES = ("urgent",)  # staff decide what is urgent (2 working hours for a complaint)
DEFAULT_PRIORITY = "normal"
HONEYPOT = "website"  # hidden from people; a bot fills it in
MAX_BYTES = 64 * 1024  # text only: 4,000 Chinese characters of description, URL-encoded, are 36 KB
WINDOW = timedelta(hours=1)  # the rate limit counts the requests of the last hour
DONE = "support_done"  # session key: what the confirmation page shows, once
ORDER = (
    "contact_name",
    "customer_company",
    "customer_email",
    "customer_phone",
    "ticket_type",
    "priority",
    "subject",
    "description",
)
_SPACES = re.compile(r"\s+")


def init_app(app: Flask) -> None:
    """Register the pages and their gate, which runs before the app's CSRF check reads any form."""
    app.before_request(_gate)
    app.register_blueprint(bp)


def _gate() -> None:
    """Switched off: 404 (even for a post without a token); else the request size limit."""
    if request.blueprint != bp.name:
        return
    if not current_app.config.get("SUPPORT_FORM", True):
        abort(404)
    request.max_content_length = MAX_BYTES


@bp.after_request
def _headers(response: Response) -> Response:
    """A public page with a CSRF token: never cached or framed; the confirmation is not indexed."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.endpoint != "support.new":
        response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


# -- the form ------------------------------------------------------------------------------------------


def _type_labels() -> dict[str, str]:
    return {
        "consultation": _("Question"),
        "suggestion": _("Suggestion"),
        "complaint": _("Complaint"),
        "repair": _("Repair or service request"),
    }


def _priority_labels() -> dict[str, str]:
    return {"low": _("Low"), "normal": _("Normal"), "high": _("High"), "urgent": _("Urgent")}


def _options(prop: Mapping[str, Any], labels: Mapping[str, str], leave_out: tuple[str, ...] = ()) -> dict:
    """An enum property's choices minus ``leave_out``, labelled in the page's language (a value a
    designer added later keeps the register form's own label)."""
    choices = [value for value in prop.get("enum") or () if value not in leave_out]
    own = prop.get("x-labels") if isinstance(prop.get("x-labels"), Mapping) else {}
    return {"enum": choices, "x-labels": {v: labels.get(v) or own.get(v) or str(v) for v in choices}}


def _text(prop: Mapping[str, Any] | None, title: str, **extra: Any) -> dict[str, Any]:
    kept = {
        k: v for k, v in (prop or {}).items() if k in ("type", "minLength", "maxLength", "pattern", "format")
    }
    return {"type": "string", **kept, "title": title, **extra}


def customer_form() -> Form:
    """The customer's form, from the register step's form of the latest ticket process: its
    choices, lengths and patterns, the customer's words. Raises NotFoundError (no ticket process)."""
    eng = engine()
    definition = eng.repository.latest(PROCESS)
    register = eng.repository.form(definition.id, STEP)
    props: Mapping[str, Any] = (register.schema.get("properties") or {}) if register is not None else {}
    name = props.get("customer_name") or {"maxLength": 200}
    priority = props.get("priority") or {}
    schema = {
        "type": "object",
        "required": ["contact_name", "ticket_type", "priority", "subject", "description"],
        "x-order": list(ORDER),
        "properties": {
            "contact_name": _text(name, _("Your name"), minLength=1),
            "customer_company": _text(name, _("Company"), minLength=0),
            "customer_email": _text(props.get("customer_email"), _("E-mail"), format="email"),
            "customer_phone": _text(props.get("customer_phone"), _("Phone")),
            "ticket_type": {
                "type": "string",
                "title": _("What is it about?"),
                **_options(props.get("ticket_type") or {}, _type_labels()),
            },
            "priority": {
                "type": "string",
                "title": _("Priority"),
                "default": priority.get("default") or DEFAULT_PRIORITY,
                **_options(priority, _priority_labels(), RESERVED_PRIORITIES),
            },
            "subject": _text(props.get("subject"), _("Subject")),
            "description": _text(props.get("description"), _("Description"), **{"x-widget": "textarea"}),
        },
    }
    return form_from_schema(schema, name="support")


def _messages(form: Form) -> dict[str, str]:
    """What to say about a refused field, in the page's language (the engine's messages are
    bilingual, for staff)."""

    def sized(name: str) -> tuple[Any, Any]:
        field = form.field(name)
        return (field.min_length or 1, field.max_length) if field is not None else (1, None)

    subject, description = sized("subject"), sized("description")
    return {
        "contact_name": _("Enter your name (up to %(max)s characters).", max=sized("contact_name")[1]),
        "customer_company": _("Up to %(max)s characters, please.", max=sized("customer_company")[1]),
        "customer_email": _("Enter an e-mail address such as name@example.com."),
        "customer_phone": _("Enter a phone number: digits, spaces and + - ( ), at least 5."),
        "ticket_type": _("Choose what your request is about."),
        "priority": _("Choose a priority."),
        "subject": _("Enter a subject of %(min)s to %(max)s characters.", min=subject[0], max=subject[1]),
        "description": _(
            "Describe your request in %(min)s to %(max)s characters.", min=description[0], max=description[1]
        ),
    }  # fmt: skip


def read_request(form: Form, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The customer's request, checked against ``form``; ValidationError with each refused field
    (``problems``: field and the message in the page's language)."""
    messages = _messages(form)
    problems: dict[str, str] = {}
    try:
        data = clean(form, raw)
    except ValidationError as exc:
        for problem in exc.problems or ():
            field = str(problem.get("field") or "")
            problems.setdefault(field, messages.get(field) or str(problem.get("message") or ""))
        data = {}
    if not any(str(raw.get(name) or "").strip() for name in ("customer_email", "customer_phone")):
        reach = _("Give an e-mail address or a phone number (or both), so that we can reach you.")
        problems.setdefault("customer_email", reach)
        problems.setdefault("customer_phone", reach)
    if problems:
        ordered = [{"field": name, "message": problems.pop(name)} for name in ORDER if name in problems]
        raise ValidationError("the request is incomplete", problems=ordered + _rest(problems))
    return {name: _one_line(value) if name != "description" else value for name, value in data.items()}


def _rest(problems: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"field": name, "message": message} for name, message in problems.items()]


def _one_line(value: Any) -> Any:
    return _SPACES.sub(" ", value).strip() if isinstance(value, str) else value


# -- opening the ticket --------------------------------------------------------------------------------


def customer_actor(customer: Mapping[str, Any]) -> str:
    """``customer:<e-mail or phone>``: who the audit trail says acted (a username has no colon)."""
    return f"customer:{customer.get('customer_email') or customer.get('customer_phone')}"[:150]


def client_address() -> str:
    """The client's IP address (the proxy's X-Forwarded-For when ``BATON_PROXY_HOPS`` says so)."""
    return request.remote_addr or "unknown"


def over_limit(address: str) -> bool:
    """Whether ``address`` sent ``SUPPORT_RATE_LIMIT`` requests in the last hour (0: no limit)."""
    limit = int(current_app.config.get("SUPPORT_RATE_LIMIT", 10))
    if limit <= 0:
        return False
    since = datetime.now(UTC) - WINDOW
    found = engine().history.query().action(ACTION).since(since).detail("ip", address)
    return found.count(cap=limit) >= limit


def open_ticket(customer: Mapping[str, Any], address: str) -> ProcessInstance:
    """Start the ticket process and register the customer's request as the customer, in one command.

    Raises ValidationError (the register step refused the data: problems by the register form's
    field names), NotFoundError (no ticket process), ConflictError (it does not start at register)."""
    actor = customer_actor(customer)
    name, company = customer["contact_name"], customer.get("customer_company")
    register = {
        "customer_name": company or name,
        "customer_email": customer.get("customer_email"),
        "customer_phone": customer.get("customer_phone"),
        **{key: customer[key] for key in ("ticket_type", "priority", "subject", "description")},
    }
    register = {key: value for key, value in register.items() if value not in (None, "")}
    who = {
        key: customer.get(key)
        for key in ("contact_name", "customer_company", "customer_email", "customer_phone")
    }
    given = [str(value) for value in who.values() if value]
    return engine().runtime.start_and_complete(
        PROCESS,
        department_id=support_department(),
        step=STEP,
        data=register,
        actor=actor,
        started_by=actor,
        variables={"initiator": actor, "channel": CHANNEL, "contact_name": name, "customer_company": company},
        note=(ACTION, {"ip": address, "customer": who, "locale": _locale()}),
        comment=f"客户通过自助页面提交（{'，'.join(given)}；IP {address}）。"
        f" / Submitted by the customer on the support page ({', '.join(given)}; IP {address}).",
    )  # fmt: skip


def support_department() -> int | None:
    """The department customers' tickets count under (``BATON_SUPPORT_DEPARTMENT``, a name or path):
    its managers track them and see them in their figures, as the tickets their agents register.
    None (unset, or unknown: logged) leaves them to administrators."""
    name = (current_app.config.get("SUPPORT_DEPARTMENT") or "").strip()
    if not name:
        return None
    try:
        return engine().identity.get_department(name).id
    except (NotFoundError, ValidationError) as exc:
        log.warning("BATON_SUPPORT_DEPARTMENT %r: %s", name, exc)
        return None


def _locale() -> str:
    return "en" if str(get_locale()) == "en" else "zh_CN"


def acknowledge(instance: ProcessInstance, customer: Mapping[str, Any], number: str | None) -> None:
    """Mail the customer that their request arrived, in the page's language; a failure is logged."""
    email = customer.get("customer_email")
    if not email or not number:
        return
    values = {"number": number, "subject": customer.get("subject"), "name": customer.get("contact_name")}
    try:
        Mailer(MailSettings.from_env()).send(
            "ticket_received", email, locale=_locale(), values=values, instance_id=instance.id
        )
    except (ConnectorError, ValueError) as exc:  # ValueError: a wrong BATON_SMTP_* setting
        log.warning("acknowledgement of %s to %s not sent: %s", number, email, exc)


# -- the pages -----------------------------------------------------------------------------------------


def _form_page(form: Form, values: Mapping[str, Any], errors: Mapping[str, list[str]], status: int = 200):
    retry = None
    if status == 429:
        retry = str(int(WINDOW.total_seconds()))
    response = make_response(
        render_template("support/new.html", form=form, values=values, errors=errors, honeypot=HONEYPOT),
        status,
    )
    if retry:
        response.headers["Retry-After"] = retry
    return response


def _submitted(raw: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(raw.get(name) or "") for name in ORDER}


@bp.route("/support/new", methods=["GET", "POST"])
def new():
    form = customer_form()
    if request.method == "GET":
        return _form_page(form, {"priority": form.field("priority").default or DEFAULT_PRIORITY}, {})
    address = client_address()
    if over_limit(address):
        message = _(
            "You have sent several requests in a short time. Please try again in an hour, or call us."
        )
        return _form_page(form, _submitted(request.form), {"": [message]}, 429)
    if request.form.get(HONEYPOT):
        log.info("support form: honeypot filled in from %s, nothing started", address)
        session[DONE] = {"number": None, "email": None}
        return redirect(url_for("support.done"))
    try:
        customer = read_request(form, request.form)
    except ValidationError as exc:
        return _form_page(form, _submitted(request.form), errors_from_problems(exc.problems or ()), 422)
    try:
        instance = open_ticket(customer, address)
    except ValidationError as exc:  # the register step's form asks for more than this form did
        log.warning("support form: the register step refused a request: %s", exc.problems)
        errors = errors_from_problems(_renamed(exc.problems, customer))
        return _form_page(form, _submitted(request.form), errors, 422)
    except ConflictError:
        log.exception("support form: the ticket process could not register a request")
        message = _("Your request could not be registered just now. Please try again later, or call us.")
        return _form_page(form, _submitted(request.form), {"": [message]}, 503)
    number = (instance.variables or {}).get("ticket_number")
    acknowledge(instance, customer, number)
    session[DONE] = {"number": number, "email": customer.get("customer_email")}
    return redirect(url_for("support.done"))


def _renamed(problems: Any, customer: Mapping[str, Any]) -> list[dict[str, str]]:
    """The register step's problems by this form's field names, with a general message (the step's
    own are bilingual, for staff; a field this form lacks is named at the top)."""
    names = {"customer_name": "customer_company" if customer.get("customer_company") else "contact_name"}
    general = _("Please check this field.")
    found = [{"field": names.get(str(p.get("field")), str(p.get("field") or "")), "message": general}
             for p in problems or ()]  # fmt: skip
    return found or [{"field": "", "message": general}]


@bp.get("/support/done")
def done():
    """The confirmation after a request (shown once: a reload goes back to a fresh form)."""
    shown = session.pop(DONE, None)
    if not isinstance(shown, dict):
        return redirect(url_for("support.new"))
    return render_template("support/done.html", number=shown.get("number"), email=shown.get("email"))


@bp.errorhandler(BadRequest)
def _bad_request(error: BadRequest):
    """A form without the session's token (expired, or sent from elsewhere): the form again, input kept."""
    if request.endpoint != "support.new" or request.method != "POST":
        return _message_page(error.code or 400, error.description or "")
    message = _("The form expired or came from another page. Check your input and send it again.")
    return _form_page(customer_form(), _submitted(request.form), {"": [message]}, 400)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge):
    return _message_page(
        413, _("Your request is too long. Please shorten the description and send it again.")
    )


def _message_page(status: int, message: str):
    return render_template("support/message.html", message=message, status=status), status
