"""/api/v1 CRM records: customers, contacts, contracts (+ items, + payment plan), payments, tickets.

List (filters, pages as /tasks: ``items``, ``page``, ``size``, ``has_more``, ``total`` with
``count=true``), read (with the process instances the record belongs to), create, update (PATCH, with an
optional ``version`` for optimistic locking), and the reviews: a contract's and a payment's status.
Money is a decimal string (``"12500.00"``) both ways; a JSON number is accepted on input.
Who may see and change what: web/records.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from marshmallow import EXCLUDE, Schema, fields, validate

from engine.errors import NotAllowedError, ValidationError
from engine.records import (
    CONTRACT_STATUSES,
    PAYMENT_STATUSES,
    TICKET_PRIORITIES,
    TICKET_STATUSES,
    TICKET_TYPES,
)
from web.api.common import load, paged_ahead
from web.api.schemas import InstanceSchema
from web.records import (
    RESOURCES,
    editable_record,
    may_assign,
    may_edit,
    may_review,
    record_viewer,
    visible_record,
)
from web.security import current_principal, engine, login_required

bp = Blueprint("api_records", __name__, url_prefix="/api/v1")
RESOURCE = "<any(customers, contacts, contracts, payments, tickets):resource>"

# -- output ----------------------------------------------------------------------------------------------


class _RecordSchema(Schema):
    id = fields.Integer()
    owner = fields.String(allow_none=True)
    department_id = fields.Integer(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class CustomerSchema(_RecordSchema):
    name = fields.String()
    industry = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    notes = fields.String(allow_none=True)


class ContactSchema(_RecordSchema):
    customer_id = fields.Integer()
    customer_name = fields.String()
    name = fields.String()
    title = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    notes = fields.String(allow_none=True)


class ContractItemSchema(Schema):
    product = fields.String()
    description = fields.String(allow_none=True)
    quantity = fields.Decimal(as_string=True)
    unit_price = fields.Decimal(as_string=True)
    amount = fields.Decimal(as_string=True)


class InstalmentSchema(Schema):
    due_on = fields.Date()
    amount = fields.Decimal(as_string=True)
    note = fields.String(allow_none=True)
    paid = fields.Decimal(as_string=True)
    state = fields.String(metadata={"description": "paid | partly_paid | due | overdue"})


class ContractSchema(_RecordSchema):
    number = fields.String(allow_none=True)
    title = fields.String()
    customer_id = fields.Integer()
    customer_name = fields.String()
    status = fields.String(metadata={"description": " | ".join(CONTRACT_STATUSES)})
    amount = fields.Decimal(as_string=True)
    currency = fields.String()
    collected = fields.Decimal(as_string=True, metadata={"description": "sum of the approved payments"})
    outstanding = fields.Decimal(as_string=True)
    overdue = fields.Boolean()
    signed_on = fields.Date(allow_none=True)
    reject_reason = fields.String(allow_none=True)
    decided_by = fields.String(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    items = fields.List(fields.Nested(ContractItemSchema))
    plan = fields.List(fields.Nested(InstalmentSchema))


class PaymentSchema(_RecordSchema):
    contract_id = fields.Integer()
    contract_number = fields.String(allow_none=True)
    amount = fields.Decimal(as_string=True)
    received_on = fields.Date()
    method = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    status = fields.String(metadata={"description": " | ".join(PAYMENT_STATUSES)})
    review_note = fields.String(allow_none=True)
    reviewed_by = fields.String(allow_none=True)
    reviewed_at = fields.AwareDateTime(allow_none=True)


class TicketSchema(_RecordSchema):
    number = fields.String()
    customer_id = fields.Integer(allow_none=True)
    customer_name = fields.String(allow_none=True)
    contact_id = fields.Integer(allow_none=True)
    type = fields.String(metadata={"description": " | ".join(TICKET_TYPES)})
    priority = fields.String(metadata={"description": " | ".join(TICKET_PRIORITIES)})
    status = fields.String(metadata={"description": " | ".join(TICKET_STATUSES)})
    subject = fields.String()
    description = fields.String(allow_none=True)
    assignee = fields.String(allow_none=True)
    vendor = fields.String(allow_none=True)
    rating = fields.Integer(allow_none=True)
    resolution = fields.String(allow_none=True)
    closed_at = fields.AwareDateTime(allow_none=True)


# -- input -----------------------------------------------------------------------------------------------


def _text(size: int, **kw: Any) -> fields.String:
    return fields.String(validate=validate.Length(max=size), allow_none=not kw.get("required"), **kw)


class _Input(Schema):
    class Meta:
        unknown = EXCLUDE

    owner = fields.String(allow_none=True, validate=validate.Length(max=150))
    version = fields.Integer(load_only=True, metadata={"description": "updates: the version you read"})


class CustomerInput(_Input):
    name = _text(200, required=True)
    industry = _text(100)
    phone = _text(50)
    email = _text(255)
    address = _text(500)
    notes = _text(10_000)


class ContactInput(_Input):
    customer_id = fields.Integer(required=True)
    name = _text(200, required=True)
    title = _text(100)
    phone = _text(50)
    email = _text(255)
    notes = _text(10_000)


class ContractItemInput(Schema):
    product = _text(200, required=True)
    description = _text(500)
    quantity = fields.Decimal(load_default=1)
    unit_price = fields.Decimal(required=True)


class InstalmentInput(Schema):
    due_on = fields.Date(required=True)
    amount = fields.Decimal(required=True)
    note = _text(500)


class ContractInput(_Input):
    customer_id = fields.Integer(required=True)
    number = _text(50)
    title = _text(200, required=True)
    amount = fields.Decimal(
        allow_none=True, metadata={"description": "the sum of the items when there are any"}
    )
    currency = _text(3)
    signed_on = fields.Date(allow_none=True)
    items = fields.List(fields.Nested(ContractItemInput), validate=validate.Length(max=500))
    plan = fields.List(
        fields.Nested(InstalmentInput),
        validate=validate.Length(max=500),
        metadata={"description": "instalments; they must add up to the contract amount"},
    )


class PaymentInput(_Input):
    contract_id = fields.Integer(required=True)
    amount = fields.Decimal(required=True)
    received_on = fields.Date(required=True)
    method = _text(50)
    reference = _text(100)


class TicketInput(_Input):
    customer_id = fields.Integer(allow_none=True)
    contact_id = fields.Integer(allow_none=True)
    type = fields.String(required=True, validate=validate.OneOf(TICKET_TYPES))
    priority = fields.String(validate=validate.OneOf(TICKET_PRIORITIES))
    status = fields.String(validate=validate.OneOf(TICKET_STATUSES))
    subject = _text(200, required=True)
    description = _text(10_000)
    assignee = fields.String(allow_none=True, validate=validate.Length(max=150))
    vendor = _text(200)
    rating = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=5))
    resolution = _text(10_000)


class StatusInput(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(required=True)
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))


OUTPUT = {
    "customer": CustomerSchema(),
    "contact": ContactSchema(),
    "contract": ContractSchema(),
    "payment": PaymentSchema(),
    "ticket": TicketSchema(),
}
INPUT = {
    "customer": CustomerInput,
    "contact": ContactInput,
    "contract": ContractInput,
    "payment": PaymentInput,
    "ticket": TicketInput,
}
PARENTS = {"contact": "customer", "contract": "customer", "payment": "contract", "ticket": "customer"}
INSTANCES = InstanceSchema(many=True)

# list filters: query parameter -> (query method, allowed values or None for an id)
FILTERS: dict[str, dict[str, tuple[str, tuple[str, ...] | None]]] = {
    "customer": {},
    "contact": {"customer_id": ("customer", None)},
    "contract": {"customer_id": ("customer", None), "status": ("status", CONTRACT_STATUSES)},
    "payment": {"contract_id": ("contract", None), "status": ("status", PAYMENT_STATUSES)},
    "ticket": {
        "customer_id": ("customer", None),
        "status": ("status", TICKET_STATUSES),
        "type": ("type", TICKET_TYPES),
        "priority": ("priority", TICKET_PRIORITIES),
        "assignee": ("assignee", ()),
    },
}


def _dump(kind: str, record: Any, *, detail: bool = False) -> dict[str, Any]:
    body = OUTPUT[kind].dump(record)
    if detail:
        body["instances"] = INSTANCES.dump(engine().records.instances_of(kind, record.id))
    return body


def _body(kind: str, *, partial: bool) -> dict[str, Any]:
    """The request body through the kind's input schema, with the principal's right to set ``owner``."""
    body = load(INPUT[kind](partial=partial))
    principal = current_principal()
    owner = body.get("owner")
    if owner not in (None, principal.username) and not may_assign(record_viewer(principal)):
        raise NotAllowedError("only managers and administrators may give a record to somebody else")
    return body


def _check_parent(kind: str, body: dict[str, Any]) -> None:
    """A record may only point at a customer (or contract) the caller can see: 404 otherwise."""
    parent = PARENTS.get(kind)
    field = f"{parent}_id"
    if parent and body.get(field) is not None:
        visible_record(current_principal(), parent, body[field])
    if kind == "ticket" and body.get("contact_id") is not None:
        visible_record(current_principal(), "contact", body["contact_id"])


# -- routes ----------------------------------------------------------------------------------------------


@bp.get(f"/{RESOURCE}")
@login_required
def list_records(resource: str):
    """Records the caller may see; ``q`` searches names (titles, subjects), ``owner`` and per-type filters."""
    kind = RESOURCES[resource]
    records = engine().records
    query = records.query(kind).visible_to(record_viewer(current_principal()))
    for name, (method, allowed) in FILTERS[kind].items():
        value = request.args.get(name)
        if not value:
            continue
        if allowed is None:
            if not value.isdigit():
                raise ValidationError(f"{name} must be a record id")
            getattr(query, method)(int(value))
        elif allowed and value not in allowed:
            raise ValidationError(f"{name} must be one of: {', '.join(allowed)}")
        else:
            getattr(query, method)(value)
    if kind == "contract" and request.args.get("overdue", "").lower() in ("1", "true", "yes"):
        query.overdue(records.today())
    if request.args.get("q"):
        query.search(request.args["q"][:100])
    if request.args.get("owner"):
        query.owner(request.args["owner"])
    return paged_ahead(query.newest_first(), OUTPUT[kind])


@bp.post(f"/{RESOURCE}")
@login_required
def create_record(resource: str):
    kind = RESOURCES[resource]
    principal = current_principal()
    body = _body(kind, partial=False)
    body.pop("version", None)
    _check_parent(kind, body)
    if kind == "payment":
        contract = visible_record(principal, "contract", body["contract_id"])
        if not may_edit(record_viewer(principal), contract):
            raise NotAllowedError(
                "only the contract's owner, their manager or an administrator may record payments"
            )
    record = engine().records.create(kind, body, actor=principal.username)
    return _dump(kind, record, detail=True), 201


@bp.get(f"/{RESOURCE}/<int:record_id>")
@login_required
def get_record(resource: str, record_id: int):
    kind = RESOURCES[resource]
    return _dump(kind, visible_record(current_principal(), kind, record_id), detail=True)


@bp.patch(f"/{RESOURCE}/<int:record_id>")
@login_required
def update_record(resource: str, record_id: int):
    """Change some fields (a contract: while it is a draft; ``items``/``plan`` replace the lists)."""
    kind = RESOURCES[resource]
    principal = current_principal()
    editable_record(principal, kind, record_id)
    body = _body(kind, partial=True)
    version = body.pop("version", None)
    _check_parent(kind, body)
    record = engine().records.update(kind, record_id, body, actor=principal.username, version=version)
    return _dump(kind, record, detail=True)


@bp.post("/contracts/<int:record_id>/status")
@login_required
def contract_status(record_id: int):
    """Submit (``in_review``), send back (``draft``), approve or reject (with a ``reason``)."""
    principal = current_principal()
    contract = visible_record(principal, "contract", record_id)
    body = load(StatusInput())
    viewer = record_viewer(principal)
    reviewing = contract.status == "in_review" and body["status"] in ("approved", "rejected", "draft")
    allowed = may_review(viewer, contract) if reviewing else may_edit(viewer, contract)
    if not allowed:
        raise NotAllowedError(
            "reviewing a contract is for the managers of its department and administrators, not its owner"
            if reviewing
            else "only the contract's owner, their manager or an administrator may change it"
        )
    record = engine().records.set_contract_status(
        record_id, body["status"], actor=principal.username, reason=body["reason"]
    )
    return _dump("contract", record, detail=True)


@bp.post("/payments/<int:record_id>/status")
@login_required
def payment_status(record_id: int):
    """Approve or reject (with a ``reason``) a pending payment; ``pending`` resubmits a rejected one."""
    principal = current_principal()
    payment = visible_record(principal, "payment", record_id)
    body = load(StatusInput())
    viewer = record_viewer(principal)
    reviewing = body["status"] in ("approved", "rejected")
    if not (may_review(viewer, payment) if reviewing else may_edit(viewer, payment)):
        raise NotAllowedError(
            "reviewing a payment is for the managers of its department and administrators, not its owner"
            if reviewing
            else "only the payment's owner, their manager or an administrator may resubmit it"
        )
    record = engine().records.set_payment_status(
        record_id, body["status"], actor=principal.username, reason=body["reason"]
    )
    return _dump("payment", record, detail=True)


# -- OpenAPI (registered in web/openapi.py) ----------------------------------------------------------

_LIST = {"page": "page number from 0", "size": "items per page (max 200)", "count": "true: add total",
         "q": "text search", "owner": "username"}  # fmt: skip
_SCHEMAS = {"customer": "Customer", "contact": "Contact", "contract": "Contract", "payment": "Payment",
            "ticket": "Ticket"}  # fmt: skip
SCHEMAS = {
    **{f"{name}": OUTPUT[kind].__class__ for kind, name in _SCHEMAS.items()},
    **{f"{name}Input": INPUT[kind] for kind, name in _SCHEMAS.items()},
    "StatusInput": StatusInput,
}


def _list_params(kind: str) -> dict[str, str]:
    params = dict(_LIST)
    for name, (_method, allowed) in FILTERS[kind].items():
        params[name] = "|".join(allowed) if allowed else ("record id" if allowed is None else "username")
    if kind == "contract":
        params["overdue"] = "true: approved contracts with an unpaid instalment past due"
    return params


OPERATIONS: dict[str, dict[str, tuple]] = {}
for _resource, _kind in RESOURCES.items():
    _name = _SCHEMAS[_kind]
    OPERATIONS[f"/{_resource}"] = {
        "get": (f"{_name} records the caller may see", None, _name, _list_params(_kind), [200, 422]),
        "post": (f"Create a {_kind}", f"{_name}Input", _name, {}, [201, 403, 404, 409, 422]),
    }
    OPERATIONS[f"/{_resource}/{{id}}"] = {
        "get": (f"A {_kind} with the process instances it belongs to", None, _name, {}, [200, 404]),
        "patch": (f"Change a {_kind}", f"{_name}Input", _name, {}, [200, 403, 404, 409, 422]),
    }
OPERATIONS["/contracts/{id}/status"] = {
    "post": (
        "Move a contract: in_review (submit), draft (send back), approved (frozen), rejected (with a reason)",
        "StatusInput",
        "Contract",
        {},
        [200, 403, 404, 409, 422],
    )
}
OPERATIONS["/payments/{id}/status"] = {
    "post": (
        "Review a payment: approved (counts as collected), rejected (with a reason), pending (resubmit)",
        "StatusInput",
        "Payment",
        {},
        [200, 403, 404, 409, 422],
    )
}
