"""CRM operations for BPMN service tasks: processes read and write records (docs/connectors.md).

Each operation writes through ``engine.records.RecordWriter`` in the transaction of the step that calls
it, so the record rules (frozen contracts, approved payments only, ...) and the audit trail are the same as
for the REST API; the records it touches are linked to the instance. Refusals are permanent failures
(``retryable=False``): retrying cannot make an approved contract editable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError

from engine.connectors import ConnectorCall, ConnectorError, Operation
from engine.db import AUDIT_BUFFER
from engine.errors import BatonError, ConflictError, ValidationError
from engine.models import AuditEntry, CrmContract, CrmCustomer, CrmInstalment, UserAccount
from engine.records import (
    RecordWriter,
    RefusedChange,
    money,
    reference,
    to_contract,
    to_ticket,
)

TICKET_FIELDS = ("status", "assignee", "vendor", "rating", "priority", "resolution")


def _writer(call: ConnectorCall) -> RecordWriter:
    return RecordWriter(
        call.ctx,
        call.session,
        actor=call.actor,
        instance_id=call.instance_id,
        via=call.operation,
        now=call.now,
    )


@contextmanager
def _failures(operation: str) -> Iterator[None]:
    """Record rules broken by a process are permanent failures; a concurrent edit may pass."""
    try:
        yield
    except RefusedChange as exc:
        raise ConnectorError(exc.message, retryable=False, audit=exc.audit) from exc
    except BatonError as exc:
        problems = "; ".join(
            f"{p.get('field')}: {p.get('message')}" for p in exc.details or () if isinstance(p, Mapping)
        )
        detail = f" ({problems})" if problems else ""
        raise ConnectorError(f"{operation}: {exc.message}{detail}", retryable=False) from exc
    except StaleDataError as exc:
        raise ConnectorError(f"{operation}: someone changed the record at the same time") from exc


def _id(params: Mapping[str, Any], name: str) -> int:
    value = params.get(name)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConnectorError(f"parameter {name!r} must be a record id, got {value!r}", retryable=False)
    return value


def _user_or_none(call: ConnectorCall, username: Any) -> str | None:
    """A username that exists, else None (an instance started by the scheduler has no owner)."""
    if not isinstance(username, str) or not username:
        return None
    found = call.session.scalar(select(UserAccount.username).where(UserAccount.username == username))
    return found


def _owner(params: Mapping[str, Any], call: ConnectorCall) -> str | None:
    """The ``owner`` parameter, else whoever started the instance (when that is a user)."""
    if params.get("owner"):
        return params["owner"]  # checked by the writer: an unknown user is a permanent failure
    return _user_or_none(call, call.scope.started_by)


def _ticket_result(row: Any) -> dict[str, Any]:
    ticket = to_ticket(row)
    return {
        "ticket_id": ticket.id,
        "number": ticket.number,
        "status": ticket.status,
        "priority": ticket.priority,
        "type": ticket.type,
        "assignee": ticket.assignee,
        "vendor": ticket.vendor,
        "rating": ticket.rating,
        "customer_id": ticket.customer_id,
        "subject": ticket.subject,
    }


# -- the operations ----------------------------------------------------------------------------------


def get_contract(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any] | None:
    """The contract; with ``required`` false an unknown id gives None (a form's typo, not a failure)."""
    writer = _writer(call)
    contract_id = _id(params, "contract_id")
    if params.get("required") is False and call.session.get(CrmContract, contract_id) is None:
        return None
    with _failures(call.operation):
        row = writer.row("contract", contract_id)
        return asdict(to_contract(row, writer.today))


def set_contract_status(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    with _failures(call.operation):
        row, previous = _writer(call).set_contract_status(
            _id(params, "contract_id"), params.get("status"), params.get("reason")
        )
    return {"id": row.id, "status": row.status, "previous": previous}


def record_payment(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    writer = _writer(call)
    values = {
        "contract_id": _id(params, "contract_id"),
        "amount": params.get("amount"),
        "received_on": params.get("received_on") or writer.today,
        "method": params.get("method"),
        "reference": params.get("reference"),
        "owner": _owner(params, call),
    }
    with _failures(call.operation):
        row = writer.create("payment", values)
    return {"payment_id": row.id, "status": row.status, "contract_id": row.contract_id}


def set_payment_status(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    with _failures(call.operation):
        row, previous = _writer(call).set_payment_status(
            _id(params, "payment_id"), params.get("status"), params.get("reason")
        )
    collected = call.session.scalar(select(CrmContract.collected).where(CrmContract.id == row.contract_id))
    return {
        "payment_id": row.id,
        "status": row.status,
        "previous": previous,
        "contract_id": row.contract_id,
        "collected": money(collected),
    }


def open_ticket(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    writer = _writer(call)
    owner = _owner(params, call)
    with _failures(call.operation):
        customer_id = _customer(params, writer, owner)
        row = writer.create(
            "ticket",
            {
                "customer_id": customer_id,
                "type": params.get("type"),
                "priority": params.get("priority") or "normal",
                "subject": params.get("subject"),
                "description": params.get("description"),
                "assignee": params.get("assignee"),
                "vendor": params.get("vendor"),
                "owner": owner,
            },
        )
    return {
        "ticket_id": row.id,
        "number": to_ticket(row).number,
        "customer_id": customer_id,
        "status": row.status,
    }


def _customer(params: Mapping[str, Any], writer: RecordWriter, owner: str | None) -> int:
    """``customer_id``, else the one customer with that e-mail, phone or name, else a new customer."""
    if params.get("customer_id") not in (None, ""):
        return writer.row("customer", _id(params, "customer_id")).id
    nested = params.get("customer") if isinstance(params.get("customer"), Mapping) else {}
    fields = {
        key: str(params.get(f"customer_{key}") or nested.get(key) or "").strip()
        for key in ("name", "phone", "email")
    }
    if not any(fields.values()):
        raise ConnectorError(
            "crm_open_ticket needs customer_id or customer_name/customer_phone/customer_email",
            retryable=False,
        )
    for key in ("email", "phone", "name"):
        if fields[key]:
            column = getattr(CrmCustomer, key)
            found = writer.session.scalars(select(CrmCustomer.id).where(column == fields[key]).limit(2)).all()
            if len(found) == 1:
                writer.link("customer", found[0])
                return found[0]
    if not fields["name"]:
        raise ConnectorError("no customer matches: give customer_name to create one", retryable=False)
    created = writer.create("customer", {**{k: v for k, v in fields.items() if v}, "owner": owner})
    return created.id


def update_ticket(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    changes = {name: params[name] for name in TICKET_FIELDS if name in params}
    with _failures(call.operation):
        row = _writer(call).update("ticket", _id(params, "ticket_id"), changes)
    return _ticket_result(row)


def get_ticket(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    with _failures(call.operation):
        row = _writer(call).row("ticket", _id(params, "ticket_id"))
    return {**_ticket_result(row), "description": row.description, "resolution": row.resolution}


# -- reviews: contract drafts, payment corrections, overdue instalments (processes/contract_review,
#    processes/payment_audit) --------------------------------------------------------------------------

CONTRACT_DRAFT_FIELDS = ("customer_id", "title", "amount", "currency", "signed_on", "owner", "items", "plan")
PAYMENT_FIELDS = ("amount", "received_on", "method", "reference")
ITEM_COLUMNS = ("product", "quantity", "unit_price", "description")
PLAN_COLUMNS = ("due_on", "amount", "note")
OVERDUE_REMINDED = "instalment_overdue_reminded"
_SEPARATOR = re.compile(r"\s*[,，\t|｜]\s*")
_LINE_FIELD = re.compile(r"^(items|plan)\.(\d+)$")


def _text_lines(text: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """A form's textarea, one line per item (``产品, 数量, 单价, 说明``): the lists the record takes."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [
        dict(zip(columns, _SEPARATOR.split(line, maxsplit=len(columns) - 1), strict=False)) for line in lines
    ]


def _problems(details: Any, text_fields: set[str]) -> list[dict[str, str]]:
    """The record's field problems; a line of a textarea is named by its number from 1 (``items line 2``)."""
    out = []
    for problem in details or ():
        if not isinstance(problem, Mapping):
            continue
        field, message = str(problem.get("field") or ""), str(problem.get("message") or "")
        match = _LINE_FIELD.match(field)
        if match and match.group(1) in text_fields:
            field = f"{match.group(1)} line {int(match.group(2)) + 1}"
        out.append({"field": field, "message": message})
    return out


def save_contract(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    """Create a draft contract, or change one (``contract_id``, optional ``version``) while it is a draft.

    What the record rules refuse in the author's input is an answer, not a failure: ``saved`` false with
    the ``problems`` (``conflict`` true when the contract changed since ``version`` was read), so the
    process can send its form back. A frozen or archived contract is a permanent failure (audited).
    """
    values = {name: params[name] for name in CONTRACT_DRAFT_FIELDS if params.get(name) is not None}
    text_fields = set()
    for name, columns in (("items", ITEM_COLUMNS), ("plan", PLAN_COLUMNS)):
        if isinstance(values.get(name), str):
            values[name] = _text_lines(values[name], columns)
            text_fields.add(name)
    writer = _writer(call)
    audit = call.session.info.setdefault(AUDIT_BUFFER, [])
    audited = len(audit)
    try:
        with call.session.begin_nested():  # refused input leaves nothing behind, even half a change
            if params.get("contract_id") in (None, ""):
                row = writer.create("contract", {"owner": _owner(params, call), **values})
            else:
                version = params.get("version")
                row = writer.update(
                    "contract",
                    _id(params, "contract_id"),
                    values,
                    version=int(version) if version not in (None, "") else None,
                )
    except (ValidationError, ConflictError) as exc:
        del audit[audited:]
        if isinstance(exc, RefusedChange):
            raise ConnectorError(exc.message, retryable=False, audit=exc.audit) from exc
        conflict = not isinstance(exc, ValidationError)
        problems = _problems(exc.details, text_fields) or [{"field": "", "message": exc.message}]
        return {"saved": False, "conflict": conflict, "problems": problems, "contract": None}
    except StaleDataError:
        del audit[audited:]
        problems = [{"field": "", "message": "someone changed the contract at the same time"}]
        return {"saved": False, "conflict": True, "problems": problems, "contract": None}
    except BatonError as exc:
        del audit[audited:]
        raise ConnectorError(f"{call.operation}: {exc.message}", retryable=False) from exc
    contract = asdict(to_contract(row, writer.today))
    return {"saved": True, "conflict": False, "problems": [], "contract": contract}


def correct_payment(params: dict[str, Any], call: ConnectorCall) -> dict[str, Any]:
    """Change a payment its review sent back (amount, date, method, reference); a rejected one goes back
    to ``pending`` for the next review."""
    changes = {name: params[name] for name in PAYMENT_FIELDS if name in params}
    writer = _writer(call)
    with _failures(call.operation):
        row = writer.update("payment", _id(params, "payment_id"), changes)
        if row.status == "rejected":
            row, _ = writer.set_payment_status(row.id, "pending")
    return {"payment_id": row.id, "status": row.status, "contract_id": row.contract_id}


def claim_overdue_instalments(params: dict[str, Any], call: ConnectorCall) -> list[dict[str, Any]]:
    """The overdue instalments of approved contracts whose owner was not reminded of them yet, each one
    claimed in the step's transaction (audit entry ``instalment_overdue_reminded``): a later run does not
    return it again, so a daily reminder mails each instalment once. At most ``limit`` (default 200)."""
    limit = params.get("limit") or 200
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 1000:
        raise ConnectorError("parameter 'limit' must be a number from 1 to 1000", retryable=False)
    writer = _writer(call)
    today = writer.today
    due = (  # the rule of RecordQuery.overdue: what fell due before today is more than was collected
        select(func.coalesce(func.sum(CrmInstalment.amount), 0))
        .where(CrmInstalment.contract_id == CrmContract.id, CrmInstalment.due_on < today)
        .scalar_subquery()
    )
    contracts = call.session.scalars(
        select(CrmContract)
        .options(joinedload(CrmContract.customer), selectinload(CrmContract.plan))
        .where(CrmContract.status == "approved", CrmContract.owner.is_not(None), due > CrmContract.collected)
        .order_by(CrmContract.id)
    ).all()
    refs = [reference("contract", row.id) for row in contracts]
    reminded = {
        (details.get("record"), details.get("instalment"), details.get("due_on"))
        for details in call.session.scalars(
            select(AuditEntry.details).where(
                AuditEntry.action == OVERDUE_REMINDED, AuditEntry.details["record"].as_string().in_(refs)
            )
        )
        if isinstance(details, Mapping)
    }
    claimed: list[dict[str, Any]] = []
    for row in contracts:
        contract = to_contract(row, today)
        for number, instalment in enumerate(contract.plan, start=1):
            key = (reference("contract", row.id), number, instalment.due_on.isoformat())
            if instalment.state != "overdue" or key in reminded or len(claimed) >= limit:
                continue
            found = {
                "contract_id": contract.id,
                "number": contract.number,
                "title": contract.title,
                "customer_name": contract.customer_name,
                "owner": contract.owner,
                "currency": contract.currency,
                "instalment": number,
                "due_on": instalment.due_on.isoformat(),
                "amount": str(instalment.amount),
                "paid": str(instalment.paid),
                "outstanding": str(instalment.amount - instalment.paid),
                "days_overdue": (today - instalment.due_on).days,
            }
            call.ctx.audit(
                call.session,
                OVERDUE_REMINDED,
                actor=call.actor,
                instance_id=call.instance_id,
                details={"record": key[0], "instalment": number, "due_on": key[2], "owner": contract.owner,
                         "outstanding": found["outstanding"], "via": call.operation},
                at=call.now,
            )  # fmt: skip
            writer.link("contract", contract.id)
            claimed.append(found)
    return claimed


OPERATIONS: dict[str, Operation] = {
    "crm_get_contract": get_contract,
    "crm_set_contract_status": set_contract_status,
    "crm_record_payment": record_payment,
    "crm_set_payment_status": set_payment_status,
    "crm_open_ticket": open_ticket,
    "crm_update_ticket": update_ticket,
    "crm_get_ticket": get_ticket,
    "crm_save_contract": save_contract,
    "crm_correct_payment": correct_payment,
    "crm_claim_overdue_instalments": claim_overdue_instalments,
}
