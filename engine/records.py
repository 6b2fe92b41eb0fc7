"""CRM records: customers, contacts, contracts (line items, payment plan), payments and tickets.

``engine.records`` reads them through fluent queries (scoped with ``visible_to(viewer)``) and changes them
with one unit of work per command; ``RecordWriter`` does the same work inside a caller's transaction (the
CRM connectors, ``integrations/crm.py``, write in the command that runs a service task). Every change is
audited (action, actor, ``details.record`` = ``"contract:42"``, before/after values). Rules kept here,
whoever calls (docs/records.md):

- Contracts move ``draft → in_review → approved | rejected | draft`` (and ``draft → rejected``). Only a
  draft can be edited; an approved contract is frozen and a rejected one archived: an attempt to change
  either is refused (ConflictError) and the attempt is audited.
- A contract's collected amount is the sum of its APPROVED payments; payments are recorded against
  approved contracts only, and an approved payment is final.
- The payment plan's instalments are paid in due-date order from the collected amount; an instalment
  not fully paid after its due date is overdue (dates in the company's time zone).
- Money is ``Decimal`` with two places (``Numeric(14, 2)``), never float.

Visibility (the web layer adds who may change what): administrators see everything; others see the
records they own (tickets: also those assigned to them), those of the departments they manage, and those
belonging to a process instance they take part in, linked by a connector call of that instance
(``crm_record_link``). A business key ``"<type>:<id>"`` lists the instance on the record's page, but
grants nobody access: anyone may start an instance with any business key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Self

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError

from engine import results
from engine.context import EngineContext
from engine.errors import ConflictError, NotFoundError, ValidationError
from engine.history import to_event
from engine.models import (
    AuditEntry,
    CrmContact,
    CrmContract,
    CrmContractItem,
    CrmCustomer,
    CrmInstalment,
    CrmPayment,
    CrmRecordLink,
    CrmTicket,
    ProcessInstance,
    UserAccount,
)
from engine.query import Query
from engine.runtime import InstanceQuery, to_instance

CONTRACT_STATUSES = ("draft", "in_review", "approved", "rejected")
CONTRACT_MOVES = {
    "draft": ("in_review", "rejected"),
    "in_review": ("draft", "approved", "rejected"),
    "approved": (),  # frozen
    "rejected": (),  # archived
}
PAYMENT_STATUSES = ("pending", "approved", "rejected")
PAYMENT_MOVES = {"pending": ("approved", "rejected"), "rejected": ("pending",), "approved": ()}
TICKET_TYPES = ("consultation", "suggestion", "complaint", "repair")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
TICKET_STATUSES = ("open", "in_progress", "escalated", "resolved", "closed")
CENT = Decimal("0.01")
MAX_MONEY = Decimal("999999999999.99")  # Numeric(14, 2)


class RefusedChange(ConflictError):
    """A change of a frozen or archived record. The change rolls back; the attempt itself must be
    audited (``audit``: the keyword arguments of ``EngineContext.audit``) outside of it."""

    def __init__(self, message: str, *, audit: dict[str, Any]) -> None:
        super().__init__(message)
        self.audit = audit


# -- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Whose records a query may return: built by the web layer from the signed-in user."""

    username: str
    groups: tuple[str, ...] = ()
    is_admin: bool = False
    departments: tuple[int, ...] = ()  # the departments they manage, with those below
    starters: tuple[str, ...] = ()  # the people of those departments (instances they started)


@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    industry: str | None
    phone: str | None
    email: str | None
    address: str | None
    notes: str | None
    owner: str | None
    department_id: int | None
    created_at: datetime
    updated_at: datetime
    version: int
    kind = "customer"


@dataclass(frozen=True)
class Contact:
    id: int
    customer_id: int
    customer_name: str
    name: str
    title: str | None
    phone: str | None
    email: str | None
    notes: str | None
    owner: str | None
    department_id: int | None
    created_at: datetime
    updated_at: datetime
    version: int
    kind = "contact"


@dataclass(frozen=True)
class ContractItem:
    product: str
    description: str | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Instalment:
    due_on: date
    amount: Decimal
    note: str | None
    paid: Decimal  # the part of the collected amount that went to this instalment (due-date order)
    state: str  # paid | partly_paid | due | overdue


@dataclass(frozen=True)
class Contract:
    id: int
    number: str | None
    title: str
    customer_id: int
    customer_name: str
    status: str
    amount: Decimal
    currency: str
    collected: Decimal  # approved payments only
    outstanding: Decimal
    overdue: bool
    signed_on: date | None
    reject_reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    owner: str | None
    department_id: int | None
    created_at: datetime
    updated_at: datetime
    version: int
    items: tuple[ContractItem, ...]
    plan: tuple[Instalment, ...]
    kind = "contract"


@dataclass(frozen=True)
class Payment:
    id: int
    contract_id: int
    contract_number: str | None
    amount: Decimal
    received_on: date
    method: str | None
    reference: str | None
    status: str
    review_note: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    owner: str | None
    department_id: int | None
    created_at: datetime
    updated_at: datetime
    version: int
    kind = "payment"


@dataclass(frozen=True)
class Ticket:
    id: int
    number: str
    customer_id: int | None
    customer_name: str | None
    contact_id: int | None
    type: str
    priority: str
    status: str
    subject: str
    description: str | None
    assignee: str | None
    vendor: str | None
    rating: int | None
    resolution: str | None
    closed_at: datetime | None
    owner: str | None
    department_id: int | None
    created_at: datetime
    updated_at: datetime
    version: int
    kind = "ticket"


Record = Customer | Contact | Contract | Payment | Ticket


def ticket_number(ticket_id: int) -> str:
    return f"T{ticket_id:06d}"


def reference(kind: str, record_id: int) -> str:
    """How audit entries and business keys name a record: ``"contract:42"``."""
    return f"{kind}:{record_id}"


def money(value: Decimal | int | float | str | None) -> Decimal:
    return Decimal(value if value is not None else 0).quantize(CENT, rounding=ROUND_HALF_UP)


def allocate(plan: Iterable[CrmInstalment], collected: Decimal, today: date) -> tuple[Instalment, ...]:
    """Spread the collected amount over the instalments in due-date order: paid, partly paid, due, overdue."""
    left = money(collected)
    out = []
    for row in sorted(plan, key=lambda i: (i.due_on, i.position)):
        amount = money(row.amount)
        paid = min(left, amount)
        left -= paid
        if paid >= amount:
            state = "paid"
        elif row.due_on < today:
            state = "overdue"
        else:
            state = "partly_paid" if paid else "due"
        out.append(Instalment(row.due_on, amount, row.note, paid, state))
    return tuple(out)


def to_customer(row: CrmCustomer) -> Customer:
    return Customer(
        row.id, row.name, row.industry, row.phone, row.email, row.address, row.notes,
        row.owner, row.department_id, row.created_at, row.updated_at, row.version,
    )  # fmt: skip


def to_contact(row: CrmContact) -> Contact:
    return Contact(
        row.id, row.customer_id, row.customer.name, row.name, row.title, row.phone, row.email, row.notes,
        row.owner, row.department_id, row.created_at, row.updated_at, row.version,
    )  # fmt: skip


def to_contract(row: CrmContract, today: date) -> Contract:
    collected = money(row.collected)
    plan = allocate(row.plan, collected, today)
    items = tuple(
        ContractItem(i.product, i.description, money(i.quantity), money(i.unit_price), money(i.amount))
        for i in row.items
    )
    return Contract(
        row.id, row.number, row.title, row.customer_id, row.customer.name, row.status, money(row.amount),
        row.currency, collected, money(row.amount) - collected,
        row.status == "approved" and any(i.state == "overdue" for i in plan),
        row.signed_on, row.reject_reason, row.decided_by, row.decided_at, row.owner, row.department_id,
        row.created_at, row.updated_at, row.version, items, plan,
    )  # fmt: skip


def to_payment(row: CrmPayment) -> Payment:
    return Payment(
        row.id, row.contract_id, row.contract.number, money(row.amount), row.received_on, row.method,
        row.reference, row.status, row.review_note, row.reviewed_by, row.reviewed_at, row.owner,
        row.department_id, row.created_at, row.updated_at, row.version,
    )  # fmt: skip


def to_ticket(row: CrmTicket) -> Ticket:
    return Ticket(
        row.id, ticket_number(row.id), row.customer_id, row.customer.name if row.customer else None,
        row.contact_id, row.type, row.priority, row.status, row.subject, row.description, row.assignee,
        row.vendor, row.rating, row.resolution, row.closed_at, row.owner, row.department_id,
        row.created_at, row.updated_at, row.version,
    )  # fmt: skip


# -- fields: what each kind accepts, checked the same way for the API and for connectors -------------


@dataclass(frozen=True)
class _Field:
    type: str  # text | money | quantity | date | int | choice | user | ref
    size: int = 0  # text: maximum length
    required: bool = False
    choices: tuple[str, ...] = ()
    ref: type | None = None  # ref: the model the id points to
    create_only: bool = False


_TEXT = _Field("text", 200)
_NOTES = _Field("text", 10_000)
_OWNER = _Field("user")
FIELDS: dict[str, dict[str, _Field]] = {
    "customer": {
        "name": _Field("text", 200, required=True),
        "industry": _Field("text", 100),
        "phone": _Field("text", 50),
        "email": _Field("text", 255),
        "address": _Field("text", 500),
        "notes": _NOTES,
        "owner": _OWNER,
    },
    "contact": {
        "customer_id": _Field("ref", required=True, ref=CrmCustomer),
        "name": _Field("text", 200, required=True),
        "title": _Field("text", 100),
        "phone": _Field("text", 50),
        "email": _Field("text", 255),
        "notes": _NOTES,
        "owner": _OWNER,
    },
    "contract": {
        "customer_id": _Field("ref", required=True, ref=CrmCustomer),
        "number": _Field("text", 50),
        "title": _Field("text", 200, required=True),
        "amount": _Field("money"),
        "currency": _Field("text", 3),
        "signed_on": _Field("date"),
        "owner": _OWNER,
    },
    "payment": {
        "contract_id": _Field("ref", required=True, ref=CrmContract, create_only=True),
        "amount": _Field("money", required=True),
        "received_on": _Field("date", required=True),
        "method": _Field("text", 50),
        "reference": _Field("text", 100),
        "owner": _OWNER,
    },
    "ticket": {
        "customer_id": _Field("ref", ref=CrmCustomer),
        "contact_id": _Field("ref", ref=CrmContact),
        "type": _Field("choice", required=True, choices=TICKET_TYPES),
        "priority": _Field("choice", choices=TICKET_PRIORITIES),
        "status": _Field("choice", choices=TICKET_STATUSES),
        "subject": _Field("text", 200, required=True),
        "description": _NOTES,
        "assignee": _Field("user"),
        "vendor": _TEXT,
        "rating": _Field("int"),
        "resolution": _NOTES,
        "owner": _OWNER,
    },
}
MODELS: dict[str, type] = {
    "customer": CrmCustomer,
    "contact": CrmContact,
    "contract": CrmContract,
    "payment": CrmPayment,
    "ticket": CrmTicket,
}
KINDS = tuple(MODELS)
_EAGER: dict[str, tuple] = {
    "customer": (),
    "contact": (joinedload(CrmContact.customer),),
    "contract": (
        joinedload(CrmContract.customer),
        selectinload(CrmContract.items),
        selectinload(CrmContract.plan),
    ),
    "payment": (joinedload(CrmPayment.contract),),
    "ticket": (joinedload(CrmTicket.customer),),
}


def to_money(value: Any, *, positive: bool = False) -> Decimal:
    """Money from a Decimal, an int or a decimal string (a float goes through its shortest repr)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ValueError("must be an amount such as 1200.50")
    try:
        amount = Decimal(str(value).strip() if not isinstance(value, Decimal) else value)
    except InvalidOperation as exc:
        raise ValueError("must be an amount such as 1200.50") from exc
    if not amount.is_finite() or amount != amount.quantize(CENT, rounding=ROUND_HALF_UP):
        raise ValueError("must be an amount with at most two decimal places")
    amount = amount.quantize(CENT)
    if amount < 0 or amount > MAX_MONEY or (positive and amount == 0):
        raise ValueError("must be more than 0" if positive else "must be between 0 and 999999999999.99")
    return amount


def to_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError("must be a date such as 2026-12-31")


def _convert(session: Session, name: str, spec: _Field, value: Any) -> Any:
    """One field's value, converted; raises ValueError with the problem."""
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        if spec.required:
            raise ValueError("is required")
        return None
    if spec.type == "text":
        if not isinstance(value, str):
            raise ValueError("must be text")
        if len(value) > spec.size:
            raise ValueError(f"must be at most {spec.size} characters")
        return value
    if spec.type == "money":
        return to_money(value, positive=name == "amount" and spec.required)
    if spec.type == "date":
        return to_date(value)
    if spec.type == "choice":
        if value not in spec.choices:
            raise ValueError(f"must be one of: {', '.join(spec.choices)}")
        return value
    if spec.type in ("int", "ref"):
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.isdigit())
        ):
            raise ValueError("must be a whole number")
        number = int(value)
        if name == "rating" and not 1 <= number <= 5:
            raise ValueError("must be from 1 to 5")
        if spec.type == "ref" and session.get(spec.ref, number) is None:
            raise ValueError(f"no {name.removesuffix('_id')} {number}")
        return number
    if spec.type == "user":
        if (
            not isinstance(value, str)
            or session.scalar(select(UserAccount.id).where(UserAccount.username == value)) is None
        ):
            raise ValueError(f"no user {value!r}")
        return value
    raise AssertionError(spec.type)


def _snapshot(value: Any) -> Any:
    """A JSON-safe copy for the audit log."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    return value


# -- writing --------------------------------------------------------------------------------------------


class RecordWriter:
    """Changes records inside the caller's transaction: the service's units of work and the connectors.

    ``instance_id``: the process instance acting (connectors); each record it touches is linked to it.
    """

    def __init__(
        self,
        ctx: EngineContext,
        session: Session,
        *,
        actor: str | None,
        instance_id: str | None = None,
        via: str | None = None,
        now: datetime | None = None,
    ) -> None:
        self.ctx = ctx
        self.session = session
        self.actor = actor
        self.instance_id = instance_id
        self.via = via  # the operation, for the audit entry
        self.now = now or ctx.now()

    @property
    def today(self) -> date:
        return self.now.astimezone(self.ctx.calendar.hours.zone).date()

    # -- generic create / update --

    def create(self, kind: str, values: Mapping[str, Any]) -> Any:
        """Insert a record. Raises ValidationError (field problems), ConflictError."""
        model = MODELS[kind]
        clean = self._clean(kind, values, creating=True)
        owner = clean.get("owner")
        row = model(**clean, created_at=self.now, updated_at=self.now)
        row.department_id = self._department_of(owner)
        if kind == "contract":
            row.status, row.currency = "draft", (clean.get("currency") or "CNY").upper()
            self._set_lines(row, values, creating=True)
        elif kind == "payment":
            contract = self.session.get(CrmContract, row.contract_id)
            if contract.status != "approved":
                raise ConflictError("payments can only be recorded against approved contracts")
            row.status = "pending"
        elif kind == "ticket":
            row.priority = row.priority or "normal"
            row.status = row.status or "open"
            row.closed_at = self.now if row.status == "closed" else None
        self.session.add(row)
        self.session.flush()
        if kind == "contract" and not row.number:
            row.number = f"C{row.id:06d}"
            self.session.flush()
        self._audit("record_created", kind, row.id, None, self._state(kind, row))
        self.link(kind, row.id)
        return row

    def update(
        self, kind: str, record_id: int, values: Mapping[str, Any], *, version: int | None = None
    ) -> Any:
        """Change some fields. Raises NotFoundError, ValidationError, ConflictError (stale ``version``,
        or a record that may not change: a contract past draft, a reviewed payment)."""
        row = self.row(kind, record_id)
        if version is not None and version != row.version:
            raise ConflictError(f"{kind} {record_id} was changed by someone else (version {row.version})")
        self._check_editable(kind, row)
        clean = self._clean(kind, values, creating=False)
        before = self._state(kind, row)
        for name, value in clean.items():
            setattr(row, name, value)
        if "owner" in clean:
            row.department_id = self._department_of(clean["owner"])
        if kind == "contract":
            self._set_lines(row, values, creating=False)
        if kind == "ticket" and "status" in clean:
            row.closed_at = (row.closed_at or self.now) if row.status == "closed" else None
        after = self._state(kind, row)
        changed = [k for k in after if after[k] != before.get(k)]
        if changed:
            row.updated_at = self.now
            self.session.flush()
            self._audit(
                "record_updated",
                kind,
                row.id,
                {k: before.get(k) for k in changed},
                {k: after[k] for k in changed},
            )
        self.link(kind, row.id)
        return row

    # -- statuses --

    def set_contract_status(
        self, contract_id: int, status: str, reason: str | None = None
    ) -> tuple[Any, str]:
        """Move a contract (see CONTRACT_MOVES); returns the row and its previous status.
        Raises NotFoundError, ValidationError (status, missing reason), ConflictError (not allowed)."""
        row = self.row("contract", contract_id)
        _check_choice("status", status, CONTRACT_STATUSES)
        reason = (reason or "").strip() or None
        previous = row.status
        if status == previous:
            return row, previous  # a repeated call (a retried step) changes nothing
        if status not in CONTRACT_MOVES[previous]:
            self._refuse("contract", row, f"status {previous} -> {status}")
        if status == "rejected" and reason is None:
            raise ValidationError("a rejection needs a reason", problems=[_problem("reason", "is required")])
        row.status, row.updated_at = status, self.now
        if status in ("approved", "rejected"):
            row.decided_by, row.decided_at = self.actor, self.now
        if status == "rejected":
            row.reject_reason = reason
        self.session.flush()
        self._audit(
            "contract_status_changed",
            "contract",
            row.id,
            {"status": previous},
            {"status": status},
            reason=reason,
        )
        self.link("contract", row.id)
        return row, previous

    def set_payment_status(self, payment_id: int, status: str, reason: str | None = None) -> tuple[Any, str]:
        """Review a payment (see PAYMENT_MOVES); returns the row and its previous status."""
        row = self.row("payment", payment_id)
        _check_choice("status", status, PAYMENT_STATUSES)
        reason = (reason or "").strip() or None
        previous = row.status
        if status == previous:
            return row, previous
        if status not in PAYMENT_MOVES[previous]:
            self._refuse("payment", row, f"status {previous} -> {status}")
        if status == "rejected" and reason is None:
            raise ValidationError("a rejection needs a reason", problems=[_problem("reason", "is required")])
        row.status, row.updated_at = status, self.now
        row.review_note = reason
        if status == "pending":
            row.reviewed_by, row.reviewed_at = None, None
        else:
            row.reviewed_by, row.reviewed_at = self.actor, self.now
        self.session.flush()
        self._audit(
            "payment_status_changed",
            "payment",
            row.id,
            {"status": previous},
            {"status": status},
            reason=reason,
            contract=reference("contract", row.contract_id),
        )
        self.link("payment", row.id)
        return row, previous

    # -- helpers --

    def row(self, kind: str, record_id: Any) -> Any:
        model = MODELS[kind]
        found = self.session.get(model, record_id) if isinstance(record_id, int) else None
        if found is None:
            raise NotFoundError(f"{kind} {record_id} not found")
        return found

    def link(self, kind: str, record_id: int) -> None:
        """Remember that the acting instance touched this record (its page lists the instance)."""
        if self.instance_id is None:
            return
        key = {"record_type": kind, "record_id": record_id, "instance_id": self.instance_id}
        if self.session.get(CrmRecordLink, key) is None:
            self.session.add(CrmRecordLink(**key, created_at=self.now))

    def _clean(self, kind: str, values: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        fields = FIELDS[kind]
        clean: dict[str, Any] = {}
        problems = []
        for name, spec in fields.items():
            if name not in values:
                if creating and spec.required:
                    problems.append(_problem(name, "is required"))
                continue
            if spec.create_only and not creating:
                problems.append(_problem(name, "cannot be changed"))
                continue
            try:
                clean[name] = _convert(self.session, name, spec, values[name])
            except ValueError as exc:
                problems.append(_problem(name, str(exc)))
        if problems:
            raise ValidationError(f"the {kind} is invalid", problems=problems)
        return clean

    def _set_lines(self, row: CrmContract, values: Mapping[str, Any], *, creating: bool) -> None:
        """Line items and payment plan (replaced as a whole); the amount follows the items."""
        problems = []
        if "items" in values:
            items = _lines(values["items"], _item, "items", problems)
            if items is not None:
                row.items = [CrmContractItem(position=n, **item) for n, item in enumerate(items)]
        if "plan" in values:
            plan = _lines(values["plan"], _instalment, "plan", problems)
            if plan is not None:
                row.plan = [CrmInstalment(position=n, **line) for n, line in enumerate(plan)]
        if problems:
            raise ValidationError("the contract is invalid", problems=problems)
        if row.items:
            total = sum((money(i.amount) for i in row.items), Decimal("0.00"))
            if (
                "amount" in values
                and values["amount"] not in (None, "")
                and to_money(values["amount"]) != total
            ):
                problems.append(_problem("amount", f"must equal the sum of the items ({total})"))
            row.amount = total
        elif row.amount is None:
            problems.append(_problem("amount", "is required (or give items)"))
        if row.plan and row.amount is not None:
            planned = sum((money(i.amount) for i in row.plan), Decimal("0.00"))
            if planned != money(row.amount):
                problems.append(_problem("plan", f"instalments add up to {planned}, not {money(row.amount)}"))
        if problems:
            raise ValidationError("the contract is invalid", problems=problems)

    def _check_editable(self, kind: str, row: Any) -> None:
        if kind == "contract" and row.status != "draft":
            if row.status == "in_review":
                raise ConflictError("a contract in review cannot be edited: send it back to draft first")
            self._refuse(kind, row, "edit")
        if kind == "payment" and row.status == "approved":
            self._refuse(kind, row, "edit")

    def _refuse(self, kind: str, row: Any, attempt: str) -> None:
        """Refuse a change of a frozen (approved) or archived record; the caller audits the attempt."""
        state = "frozen" if row.status == "approved" else "archived"
        details = {"record": reference(kind, row.id), "attempt": attempt, "status": row.status}
        if self.via:
            details["via"] = self.via
        raise RefusedChange(
            f"{kind} {row.id} is {row.status} ({state}): it cannot be changed ({attempt})",
            audit={
                "action": f"{kind}_change_refused",
                "actor": self.actor,
                "instance_id": self.instance_id,
                "details": details,
                "at": self.now,
            },
        )

    def _department_of(self, owner: str | None) -> int | None:
        if owner is None:
            return None
        return self.session.scalar(select(UserAccount.department_id).where(UserAccount.username == owner))

    def _state(self, kind: str, row: Any) -> dict[str, Any]:
        state = {name: _snapshot(getattr(row, name)) for name in FIELDS[kind]}
        state["department_id"] = row.department_id
        if kind in ("contract", "payment"):
            state["status"] = row.status
        if kind == "contract":
            state["amount"] = _snapshot(row.amount)
            state["items"] = [
                _snapshot({"product": i.product, "quantity": i.quantity, "unit_price": i.unit_price})
                for i in row.items
            ]
            state["plan"] = [_snapshot({"due_on": i.due_on, "amount": i.amount}) for i in row.plan]
        return state

    def _audit(self, action: str, kind: str, record_id: int, before: Any, after: Any, **extra: Any) -> None:
        details = {"record": reference(kind, record_id), "before": before, "after": after}
        details.update({k: v for k, v in extra.items() if v is not None})
        if self.via:
            details["via"] = self.via
        self.ctx.audit(
            self.session, action, actor=self.actor, instance_id=self.instance_id, details=details, at=self.now
        )


def _problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValidationError(
            f"{name} must be one of: {', '.join(choices)}",
            problems=[_problem(name, f"must be one of: {', '.join(choices)}")],
        )


def _lines(
    value: Any, parse: Callable[[Mapping[str, Any]], dict[str, Any]], name: str, problems: list
) -> list[dict[str, Any]] | None:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or len(value) > 500:
        problems.append(_problem(name, "must be a list (at most 500 lines)"))
        return None
    out = []
    for n, line in enumerate(value):
        try:
            if not isinstance(line, Mapping):
                raise ValueError("must be an object")
            out.append(parse(line))
        except ValueError as exc:
            problems.append(_problem(f"{name}.{n}", str(exc)))
    return out


def _item(line: Mapping[str, Any]) -> dict[str, Any]:
    product = str(line.get("product") or "").strip()
    if not product or len(product) > 200:
        raise ValueError("product is required (at most 200 characters)")
    description = str(line.get("description") or "").strip()[:500] or None
    try:
        quantity = to_money(line.get("quantity", 1), positive=True)
        unit_price = to_money(line.get("unit_price"))
    except ValueError as exc:
        raise ValueError(f"quantity and unit_price: {exc}") from exc
    amount = (quantity * unit_price).quantize(CENT, rounding=ROUND_HALF_UP)
    if amount > MAX_MONEY:
        raise ValueError("the line amount is too large")
    return {
        "product": product,
        "description": description,
        "quantity": quantity,
        "unit_price": unit_price,
        "amount": amount,
    }


def _instalment(line: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "due_on": to_date(line.get("due_on")),
        "amount": to_money(line.get("amount"), positive=True),
        "note": str(line.get("note") or "").strip()[:500] or None,
    }


# -- reading --------------------------------------------------------------------------------------------


class _Involvement(InstanceQuery):
    """The instances a user takes part in (``InstanceQuery.involving``), as a sub-select of their ids."""

    def ids(self) -> Select:
        return self._plain()


class RecordQuery(Query[Any]):
    def __init__(self, ctx: EngineContext, kind: str, to_result: Callable[[Any], Any]) -> None:
        self.kind = kind
        self.model = MODELS[kind]
        self._ctx = ctx
        super().__init__(ctx.db, select(self.model).options(*_EAGER[kind]), to_result)

    def visible_to(self, viewer: Viewer) -> Self:
        """Only what ``viewer`` may see (module doc)."""
        if viewer.is_admin:
            return self
        model, kind = self.model, self.kind
        involved = (
            _Involvement(self._ctx.db, select(ProcessInstance.id), lambda r: r)
            .involving(viewer.username, viewer.groups, starters=viewer.starters)
            .ids()
        )
        linked = select(CrmRecordLink.record_id).where(
            CrmRecordLink.record_type == kind, CrmRecordLink.instance_id.in_(involved)
        )
        # Not by business key alone: anyone may start an instance keyed "contract:42" and would
        # then read contract 42. A record is linked when a connector call of the process touched it.
        clauses = [model.owner == viewer.username, model.id.in_(linked)]
        if viewer.departments:
            clauses.append(model.department_id.in_(viewer.departments))
        if kind == "ticket":
            clauses.append(model.assignee == viewer.username)
        return self._where(or_(*clauses))

    def id(self, record_id: int) -> Self:
        return self._where(self.model.id == record_id)

    def owner(self, username: str) -> Self:
        return self._where(self.model.owner == username)

    def department(self, department_id: int) -> Self:
        return self._where(self.model.department_id == department_id)

    def search(self, text: str) -> Self:
        column = {"contract": CrmContract.title, "ticket": CrmTicket.subject}.get(self.kind)
        if self.kind == "payment":
            column = CrmPayment.reference
        column = column if column is not None else self.model.name
        return self._where(func.lower(column).contains(text.strip().lower(), autoescape=True))

    def customer(self, customer_id: int) -> Self:
        return self._where(self.model.customer_id == customer_id)

    def contract(self, contract_id: int) -> Self:
        return self._where(CrmPayment.contract_id == contract_id)

    def status(self, *statuses: str) -> Self:
        return self._where(self.model.status.in_(statuses))

    def type(self, *types: str) -> Self:
        return self._where(CrmTicket.type.in_(types))

    def priority(self, *priorities: str) -> Self:
        return self._where(CrmTicket.priority.in_(priorities))

    def assignee(self, username: str) -> Self:
        return self._where(CrmTicket.assignee == username)

    def overdue(self, today: date) -> Self:
        """Approved contracts with an instalment past due and not covered by the collected amount."""
        due = (
            select(func.coalesce(func.sum(CrmInstalment.amount), 0))
            .where(CrmInstalment.contract_id == CrmContract.id, CrmInstalment.due_on < today)
            .scalar_subquery()
        )
        return self._where(CrmContract.status == "approved", due > CrmContract.collected)

    def newest_first(self) -> Self:
        return self._order_by(self.model.updated_at.desc(), self.model.id.desc())


class RecordService:
    """``engine.records``: see the module doc."""

    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def today(self) -> date:
        return self._ctx.now().astimezone(self._ctx.calendar.hours.zone).date()

    def converter(self, kind: str) -> Callable[[Any], Any]:
        if kind == "contract":
            return lambda row: to_contract(row, self.today())
        return {
            "customer": to_customer,
            "contact": to_contact,
            "payment": to_payment,
            "ticket": to_ticket,
        }[kind]

    def query(self, kind: str) -> RecordQuery:
        if kind not in MODELS:
            raise NotFoundError(f"no record type {kind!r}")
        return RecordQuery(self._ctx, kind, self.converter(kind))

    def get(self, kind: str, record_id: int, *, viewer: Viewer | None = None) -> Any:
        """One record; NotFoundError when it does not exist or ``viewer`` may not see it."""
        query = self.query(kind).id(record_id)
        if viewer is not None:
            query.visible_to(viewer)
        found = query.first()
        if found is None:
            raise NotFoundError(f"{kind} {record_id} not found")
        return found

    def instances_of(self, kind: str, record_id: int) -> list[results.ProcessInstance]:
        """The process instances a record belongs to (linked, or named by business key), newest first."""
        linked = select(CrmRecordLink.instance_id).where(
            CrmRecordLink.record_type == kind, CrmRecordLink.record_id == record_id
        )
        stmt = (
            select(ProcessInstance)
            .options(joinedload(ProcessInstance.definition))
            .where(
                or_(
                    ProcessInstance.id.in_(linked),
                    ProcessInstance.business_key == reference(kind, record_id),
                )
            )
            .order_by(ProcessInstance.started_at.desc(), ProcessInstance.id)
            .limit(200)
        )
        with self._ctx.db.unit_of_work(write=False) as uow:
            return [to_instance(row) for row in uow.session.scalars(stmt)]

    def history(self, kind: str, record_id: int, *, limit: int = 200) -> list[results.AuditEvent]:
        """The record's audit entries, oldest first (a JSON look-up: fine for a record's page)."""
        stmt = (
            select(AuditEntry)
            .where(AuditEntry.details["record"].as_string() == reference(kind, record_id))
            .order_by(AuditEntry.id.desc())
            .limit(limit)
        )
        with self._ctx.db.unit_of_work(write=False) as uow:
            return [to_event(row) for row in reversed(uow.session.scalars(stmt).all())]

    # -- commands: one unit of work each --

    def create(self, kind: str, values: Mapping[str, Any], *, actor: str | None) -> Any:
        """Create a record (owner defaults to ``actor``). Raises ValidationError, ConflictError."""
        values = dict(values)
        if values.get("owner") in (None, "") and actor is not None:
            values["owner"] = actor
        return self._command(kind, actor, lambda w: w.create(kind, values))

    def update(
        self,
        kind: str,
        record_id: int,
        values: Mapping[str, Any],
        *,
        actor: str | None,
        version: int | None = None,
    ) -> Any:
        """Raises NotFoundError, ValidationError, ConflictError (stale version; frozen: audited)."""
        return self._command(kind, actor, lambda w: w.update(kind, record_id, values, version=version))

    def set_contract_status(
        self, contract_id: int, status: str, *, actor: str | None, reason: str | None = None
    ) -> Contract:
        return self._command(
            "contract", actor, lambda w: w.set_contract_status(contract_id, status, reason)[0]
        )

    def set_payment_status(
        self, payment_id: int, status: str, *, actor: str | None, reason: str | None = None
    ) -> Payment:
        return self._command("payment", actor, lambda w: w.set_payment_status(payment_id, status, reason)[0])

    def _command(self, kind: str, actor: str | None, change: Callable[[RecordWriter], Any]) -> Any:
        try:
            with _conflicts(kind), self._ctx.db.unit_of_work() as uow:
                row = change(RecordWriter(self._ctx, uow.session, actor=actor))
                record_id = row.id
                uow.commit()
        except RefusedChange as exc:
            with self._ctx.db.unit_of_work() as uow:  # the change rolled back; the attempt is on record
                self._ctx.audit(uow.session, **exc.audit)
                uow.commit()
            raise
        return self.get(kind, record_id)


@contextmanager
def _conflicts(kind: str) -> Iterator[None]:
    """Lost optimistic-lock races and unique-key clashes (a contract number) are ConflictErrors."""
    try:
        yield
    except StaleDataError as exc:
        raise ConflictError(f"someone else changed this {kind} first; reload and try again") from exc
    except IntegrityError as exc:
        raise ConflictError(f"conflicting {kind}: {exc.orig}") from exc
