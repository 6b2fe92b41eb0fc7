"""CRM pages (customers, contacts, contracts, payments, tickets) and who may see or change a record.

Visibility is the engine's (``engine.records``: own records, the departments one manages, records of the
process instances one takes part in; administrators everything). Changing a record is for its owner, the
managers of its department and administrators; reviewing (approving a contract or a payment) is for those
managers and administrators, never for the record's owner. A record one may not see answers 404, one
that one may see but not change answers 403 (the rule of web/access.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from flask_babel import format_decimal
from flask_babel import gettext as _

from engine.errors import NotAllowedError
from engine.records import (
    CONTRACT_STATUSES,
    PAYMENT_STATUSES,
    TICKET_PRIORITIES,
    TICKET_STATUSES,
    TICKET_TYPES,
    Viewer,
)
from web.access import managed_starters
from web.pages import page_index
from web.security import Principal, current_principal, engine, login_required

bp = Blueprint("records", __name__, url_prefix="/crm")
PAGE_SIZE = 25
RESOURCES = {"customers": "customer", "contacts": "contact", "contracts": "contract", "payments": "payment",
             "tickets": "ticket"}  # fmt: skip
RESOURCE_OF = {kind: resource for resource, kind in RESOURCES.items()}


# -- who may see and change what ----------------------------------------------------------------------


def record_viewer(principal: Principal) -> Viewer:
    """The engine's view of the signed-in user (cached for the request)."""
    if "record_viewer" not in g:
        departments: tuple[int, ...] = ()
        if principal.role == "manager":
            managed = engine().identity.departments_managed_by(principal.username)
            departments = tuple(d.id for d in managed)
        g.record_viewer = Viewer(
            username=principal.username,
            groups=principal.groups,
            is_admin=principal.is_admin,
            departments=departments,
            starters=managed_starters(principal),
        )
    return g.record_viewer


def visible_record(principal: Principal, kind: str, record_id: int) -> Any:
    """The record, or NotFoundError (unknown, or not the principal's to see)."""
    return engine().records.get(kind, record_id, viewer=record_viewer(principal))


def may_edit(viewer: Viewer, record: Any) -> bool:
    return (
        viewer.is_admin
        or record.owner == viewer.username
        or (record.department_id is not None and record.department_id in viewer.departments)
        or (record.kind == "ticket" and record.assignee == viewer.username)
    )


def may_review(viewer: Viewer, record: Any) -> bool:
    """Approve or reject a contract or a payment: never one's own."""
    if record.owner == viewer.username and not viewer.is_admin:
        return False
    return viewer.is_admin or (
        record.department_id is not None and record.department_id in viewer.departments
    )


def may_assign(viewer: Viewer) -> bool:
    """Give records to somebody else (set ``owner``): managers and administrators."""
    return viewer.is_admin or bool(viewer.departments)


def editable_record(principal: Principal, kind: str, record_id: int) -> Any:
    record = visible_record(principal, kind, record_id)
    if not may_edit(record_viewer(principal), record):
        raise NotAllowedError(
            f"only the owner of this {kind}, their manager or an administrator may change it"
        )
    return record


# -- labels (in the request's language) ---------------------------------------------------------------


def _labels() -> dict[str, str]:
    return {
        # kinds
        "customer": _("Customer"),
        "contact": _("Contact"),
        "contract": _("Contract"),
        "payment": _("Payment"),
        "ticket": _("Ticket"),
        # contract and payment statuses
        "draft": _("Draft"),
        "in_review": _("In review"),
        "approved": _("Approved"),
        "rejected": _("Rejected"),
        "pending": _("Pending review"),
        # ticket statuses, types, priorities
        "open": _("Open"),
        "in_progress": _("In progress"),
        "escalated": _("Escalated"),
        "resolved": _("Resolved"),
        "closed": _("Closed"),
        "consultation": _("Consultation"),
        "suggestion": _("Suggestion"),
        "complaint": _("Complaint"),
        "repair": _("Repair"),
        "low": _("Low"),
        "normal": _("Normal"),
        "high": _("High"),
        "urgent": _("Urgent"),
        # instalments
        "paid": _("Paid"),
        "partly_paid": _("Partly paid"),
        "due": _("Not yet due"),
        "overdue": _("Past due"),
    }


@bp.app_template_global()
def record_url(kind: str, record_id: int) -> str:
    return url_for("records.detail", resource=RESOURCE_OF[kind], record_id=record_id)


@bp.app_template_filter("money")
def money_text(value: Decimal | None) -> str:
    """An amount with thousands separators and two decimals, as the request's language writes it."""
    return "" if value is None else format_decimal(value, format="#,##0.00")


@bp.app_template_global()
def record_label(value: str | None) -> str:
    """A translated label for a record status, type, priority or kind; the value itself if unknown."""
    return _labels().get(value or "", value or "")


def _history_labels() -> dict[str, str]:
    """Audit actions and record fields as a record's history shows them."""
    return {
        "record_created": _("created the record"),
        "record_updated": _("changed the record"),
        "contract_status_changed": _("changed the status"),
        "payment_status_changed": _("changed the status"),
        "contract_change_refused": _("tried to change it: refused"),
        "payment_change_refused": _("tried to change it: refused"),
        "name": _("Name"),
        "title": _("Title"),
        "number": _("Number"),
        "amount": _("Amount"),
        "currency": _("Currency"),
        "signed_on": _("Signed on"),
        "owner": _("Owner"),
        "department_id": _("Department"),
        "status": _("Status"),
        "items": _("Items"),
        "plan": _("Payment plan"),
        "phone": _("Phone"),
        "email": _("E-mail"),
        "address": _("Address"),
        "industry": _("Industry"),
        "notes": _("Notes"),
        "type": _("Type"),
        "priority": _("Priority"),
        "subject": _("Subject"),
        "description": _("Description"),
        "assignee": _("Assignee"),
        "vendor": _("Vendor"),
        "rating": _("Satisfaction"),
        "resolution": _("Resolution"),
        "customer_id": _("Customer"),
        "contact_id": _("Contact"),
        "contract_id": _("Contract"),
        "received_on": _("Received on"),
        "method": _("Method"),
        "reference": _("Reference"),
    }


@bp.app_template_global()
def history_label(value: str) -> str:
    """A translated audit action or field name of a record's history; the name itself if unknown."""
    return _history_labels().get(value, value)


def _titles() -> dict[str, str]:
    return {
        "customers": _("Customers"),
        "contacts": _("Contacts"),
        "contracts": _("Contracts"),
        "payments": _("Payments"),
        "tickets": _("Tickets"),
    }


# -- pages ----------------------------------------------------------------------------------------------

FILTERS = {  # the choices each list can be narrowed by (besides the text search)
    "contract": {"status": CONTRACT_STATUSES, "overdue": ("1",)},
    "payment": {"status": PAYMENT_STATUSES},
    "ticket": {"status": TICKET_STATUSES, "type": TICKET_TYPES, "priority": TICKET_PRIORITIES},
}


def _kind(resource: str) -> str:
    if resource not in RESOURCES:
        abort(404)
    return RESOURCES[resource]


@bp.get("")
@login_required
def index():
    return redirect(url_for("records.listing", resource="customers"))


@bp.get("/<resource>")
@login_required
def listing(resource: str):
    kind = _kind(resource)
    principal = current_principal()
    records = engine().records
    query = records.query(kind).visible_to(record_viewer(principal))
    chosen: dict[str, str] = {}
    for name, allowed in FILTERS.get(kind, {}).items():
        value = request.args.get(name, "")
        if value in allowed:
            chosen[name] = value
            if name == "overdue":
                query.overdue(records.today())
            else:
                getattr(query, name)(value)
    text = (request.args.get("q") or "").strip()[:100]
    if text:
        query.search(text)
    if request.args.get("mine"):
        query.owner(principal.username)
    total = query.count()
    page = page_index()
    items = query.newest_first().page(page, PAGE_SIZE)
    args = {**chosen, **({"q": text} if text else {})}
    return render_template(
        "records/list.html",
        kind=kind,
        resource=resource,
        title=_titles()[resource],
        titles=_titles(),
        items=items,
        total=total,
        filters=FILTERS.get(kind, {}),
        chosen=chosen,
        text=text,
        pages={"number": page + 1, "count": max((total - 1) // PAGE_SIZE, 0) + 1},
        page_url=lambda n: url_for("records.listing", resource=resource, page=n, **args),
    )


@bp.get("/<resource>/<int:record_id>")
@login_required
def detail(resource: str, record_id: int):
    kind = _kind(resource)
    principal = current_principal()
    viewer = record_viewer(principal)
    record = visible_record(principal, kind, record_id)
    records = engine().records
    related: dict[str, list[Any]] = {}
    if kind == "customer":
        for other in ("contact", "contract", "ticket"):
            related[other] = (
                records.query(other).visible_to(viewer).customer(record_id).newest_first().page(0, 50)
            )
    elif kind == "contract":
        related["payment"] = (
            records.query("payment").visible_to(viewer).contract(record_id).newest_first().list()
        )
    return render_template(
        f"records/{kind}.html",
        kind=kind,
        resource=resource,
        record=record,
        titles=_titles(),
        related=related,
        instances=records.instances_of(kind, record_id),
        history=records.history(kind, record_id),
        can_edit=may_edit(viewer, record),
        can_track=(principal.is_admin or principal.role == "manager")
        and "manage.instance" in current_app.view_functions,
    )
