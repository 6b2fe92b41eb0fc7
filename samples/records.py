"""Demo CRM records (演示客户数据): customers with contacts, contracts in each state and their payments, owned
by the sales people of the demo company (samples/company.py), so the CRM pages, the contract review and the
payment audit have something to show:

* 上海明远科技: contract HT-2026-0001, approved, three instalments: the first paid (an approved payment),
  the second overdue (the daily reminder mails zhangwei), the third due later; a second payment of it is
  pending: waiting for finance's audit when processes/payment_audit is deployed.
* 杭州青禾贸易: contract HT-2026-0002 of zhangwei, in review: at the legal review when
  processes/contract_review is deployed (else only its status says so).
* 北京华信医疗: contract HT-2026-0003 of lina, a draft.

Dates are relative to today, so the overdue instalment is overdue whenever the demo is loaded.
``load_records`` is idempotent: customers are found by name, contacts by customer and name, contracts by
number, payments by reference; what exists is left as it is. It needs no running mail server: no step
it drives sends e-mail.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from engine.facade import Engine
from samples.company import load_company

CUSTOMERS = [
    # name, owner, industry, phone, contacts (name, title, phone)
    (
        "上海明远科技",
        "zhangwei",
        "制造 Manufacturing",
        "021-5555 0101",
        [("陈立", "采购经理", "138 0000 0101")],
    ),
    ("杭州青禾贸易", "zhangwei", "贸易 Trade", "0571-5555 0202", [("吴静", "总经理", "139 0000 0202")]),
    ("北京华信医疗", "lina", "医疗 Healthcare", "010-5555 0303", [("赵磊", "IT 主管", "137 0000 0303")]),
]


def _contracts(today: date) -> list[dict[str, Any]]:
    return [
        {
            "number": "HT-2026-0001",
            "customer": "上海明远科技",
            "owner": "zhangwei",
            "title": "生产线监控系统 Production line monitoring",
            "signed_on": (today - timedelta(days=75)).isoformat(),
            "items": [
                {"product": "监控服务器 Server", "quantity": 2, "unit_price": "35000"},
                {"product": "传感器套件 Sensor kit", "quantity": 10, "unit_price": "4000"},
                {"product": "安装调试 Installation", "quantity": 1, "unit_price": "10000"},
            ],
            "plan": [
                {
                    "due_on": (today - timedelta(days=60)).isoformat(),
                    "amount": "48000",
                    "note": "预付款 Advance",
                },
                {
                    "due_on": (today - timedelta(days=10)).isoformat(),
                    "amount": "48000",
                    "note": "到货款 On delivery",
                },
                {
                    "due_on": (today + timedelta(days=45)).isoformat(),
                    "amount": "24000",
                    "note": "验收款 On acceptance",
                },
            ],
            "status": "approved",
        },
        {
            "number": "HT-2026-0002",
            "customer": "杭州青禾贸易",
            "owner": "zhangwei",
            "title": "仓储管理软件 Warehouse software",
            "items": [{"product": "软件许可 Licence", "quantity": 1, "unit_price": "60000"}],
            "plan": [
                {"due_on": (today + timedelta(days=30)).isoformat(), "amount": "30000", "note": "首付 First"},
                {"due_on": (today + timedelta(days=90)).isoformat(), "amount": "30000", "note": "尾款 Last"},
            ],
            "status": "in_review",
        },
        {
            "number": "HT-2026-0003",
            "customer": "北京华信医疗",
            "owner": "lina",
            "title": "影像存储扩容 Imaging storage",
            "items": [{"product": "存储阵列 Storage array", "quantity": 1, "unit_price": "220000"}],
            "plan": [{"due_on": today.isoformat(), "amount": "220000"}],
            "status": "draft",
        },
    ]


def load_records(engine: Engine) -> Iterator[str]:
    """Create what is missing; yields one line per new record (after the company's own lines)."""
    yield from load_company(engine)
    records = engine.records
    today = records.today()
    customers = {c.name: c for c in records.query("customer").list()}
    for name, owner, industry, phone, contacts in CUSTOMERS:
        if name not in customers:
            values = {"name": name, "owner": owner, "industry": industry, "phone": phone}
            customers[name] = records.create("customer", values, actor=owner)
            yield f"customer {name}"
        known = {c.name for c in records.query("contact").customer(customers[name].id).list()}
        for contact, title, mobile in contacts:
            if contact not in known:
                values = {"customer_id": customers[name].id, "name": contact, "title": title, "phone": mobile}
                records.create("contact", values, actor=owner)
                yield f"contact {contact} ({name})"
    contracts = {c.number: c for c in records.query("contract").list()}
    for spec in _contracts(today):
        if spec["number"] in contracts:
            continue
        fields = {k: v for k, v in spec.items() if k not in ("customer", "status")}
        created = records.create(
            "contract", {**fields, "customer_id": customers[spec["customer"]].id}, actor=spec["owner"]
        )
        if spec["status"] == "approved":
            records.set_contract_status(created.id, "in_review", actor=spec["owner"])
            records.set_contract_status(created.id, "approved", actor="zhaoming")
        elif spec["status"] == "in_review":
            _submit_for_review(engine, created.id, spec["owner"])
        contracts[spec["number"]] = records.get("contract", created.id)
        yield f"contract {spec['number']} ({contracts[spec['number']].status})"
    yield from _payments(engine, contracts["HT-2026-0001"].id, today)


def _deployed(engine: Engine, key: str) -> bool:
    return any(d.key == key for d in engine.repository.query().latest_only().list())


def _submit_for_review(engine: Engine, contract_id: int, owner: str) -> None:
    """Through processes/contract_review when it is deployed (the legal review waits), else the status."""
    if not _deployed(engine, "contract_review"):
        engine.records.set_contract_status(contract_id, "in_review", actor=owner)
        return
    instance = engine.runtime.start(
        "contract_review",
        business_key=f"contract:{contract_id}",
        started_by=owner,
        variables={"initiator": owner, "contract_id": contract_id},
    )
    shown = engine.runtime.get(instance.id, with_variables=True).variables
    draft = engine.tasks.query().instance(instance.id).open().first()
    form = ("customer_id", "title", "amount", "signed_on", "items_text", "plan_text")
    data = {name: shown[name] for name in form if shown.get(name) not in (None, "")}
    engine.tasks.complete(draft.id, actor=owner, data=data, from_json=True)


def _payments(engine: Engine, contract_id: int, today: date) -> Iterator[str]:
    """The first instalment paid (approved); a part of the second waiting for finance's audit."""
    records = engine.records
    paid = "MY-20260001"
    if not records.query("payment").search(paid).count():
        values = {
            "contract_id": contract_id,
            "amount": "48000",
            "received_on": (today - timedelta(days=58)).isoformat(),
            "method": "bank_transfer",
            "reference": paid,
        }
        payment = records.create("payment", values, actor="zhangwei")
        records.set_payment_status(payment.id, "approved", actor="chenjing")
        yield f"payment {paid} (approved)"
    pending = "MY-20260002"
    if records.query("payment").search(pending).count():
        return
    received = (today - timedelta(days=2)).isoformat()
    values = {"amount": "20000", "received_on": received, "method": "bank_transfer", "reference": pending}
    if not _deployed(engine, "payment_audit"):
        records.create("payment", {**values, "contract_id": contract_id}, actor="zhangwei")
        yield f"payment {pending} (pending)"
        return
    instance = engine.runtime.start(
        "payment_audit",
        business_key=f"contract:{contract_id}",
        started_by="zhangwei",
        variables={"initiator": "zhangwei", "contract_id": contract_id},
    )
    task = engine.tasks.query().instance(instance.id).open().first()
    data = {**values, "contract_id": contract_id, "instalment": 2}
    engine.tasks.complete(task.id, actor="zhangwei", data=data, from_json=True)
    yield f"payment {pending} (pending, waiting for finance's audit)"
