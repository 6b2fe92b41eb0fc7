"""Demo data: the demo company (samples/company.py) and requests in different states, so every page
has content: expense claims (processes/expense_approval), approval requests (processes/approval),
tickets (processes/ticket) and a contract draft (processes/contract_review). The README's ten-minute tour
(docs/tour.md) starts at APR-2026-0004 (a blank request in zhangwei's inbox), TCK-2026-0001 (a ticket
at zhouxin's "handle" step) and CR-2026-0001 (a blank contract draft in zhangwei's inbox).

Idempotent: users, departments and instances are only created once (instances by business key). The
demo passwords are printed by ``baton demo``; they are for trying Baton out, never for production.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.facade import Engine
from engine.results import UserTask
from samples.company import DEMO_PASSWORD, VENDOR, VENDOR_EMAIL
from samples.records import load_records

__all__ = ["DEMO_PASSWORD", "load_samples"]

# business key, process, starter, then (actor, form data) for each task completed in turn
Steps = list[tuple[str, dict[str, Any]]]
SAMPLES: list[tuple[str, str, str, Steps]] = [
    (
        "EXP-2026-0001",
        "expense_approval",
        "zhangwei",
        [
            ("zhangwei", {"amount": 320.5, "category": "meals", "reason": "客户午餐"}),
        ],
    ),
    (
        "EXP-2026-0002",
        "expense_approval",
        "lina",
        [
            ("lina", {"amount": 1880, "category": "travel", "reason": "上海出差高铁"}),
            ("wangqiang", {"decision": "approve"}),
        ],
    ),
    (
        "EXP-2026-0003",
        "expense_approval",
        "wangfang",
        [
            ("wangfang", {"amount": 96, "category": "office", "reason": "打印纸"}),
            ("wangqiang", {"decision": "approve"}),
            ("chenjing", {"decision": "approve"}),
        ],
    ),
    (
        "EXP-2026-0004",
        "expense_approval",
        "liuyang",
        [
            ("liuyang", {"amount": 45000, "category": "other", "reason": "团建"}),
            ("wangqiang", {"decision": "reject"}),
        ],
    ),
    ("EXP-2026-0005", "expense_approval", "zhangwei", []),
    (
        "APR-2026-0001",
        "approval",
        "zhangwei",
        [
            (
                "zhangwei",
                {
                    "request_type": "leave",
                    "title": "年假 Annual leave",
                    "days": 2,
                    "leave_type": "annual",
                    "start_date": "2026-12-03",
                    "end_date": "2026-12-04",
                    "reason": "回老家 Family visit",
                },
            ),
        ],
    ),
    (
        "APR-2026-0002",
        "approval",
        "lina",
        [
            (
                "lina",
                {
                    "request_type": "expense",
                    "title": "展会差旅 Trade fair travel",
                    "amount": 8600,
                    "reason": "深圳展会机票和酒店 Flights and hotel for the Shenzhen fair",
                    "cc": "wangfang",
                },
            ),
            ("wangqiang", {"decision": "approve", "comment": "同意 OK"}),
        ],
    ),
    (
        "APR-2026-0003",
        "approval",
        "liuyang",
        [
            (
                "liuyang",
                {
                    "request_type": "purchase",
                    "title": "笔记本电脑 Laptop",
                    "amount": 7999,
                    "reason": "旧电脑损坏 The old one broke",
                },
            ),
            ("wangqiang", {"decision": "approve"}),
        ],
    ),
    (
        "TCK-2026-0001",
        "ticket",
        "zhouxin",
        [
            (
                "zhouxin",
                {
                    "customer_name": "上海明远科技",
                    "customer_phone": "021-5555 0101",
                    "ticket_type": "repair",
                    "priority": "high",
                    "subject": "打印机卡纸 Printer jams",
                    "description": "三楼打印机每天卡纸 The 3rd-floor printer jams daily",
                    "agent": "zhouxin",
                },
            ),
        ],
    ),
    (
        "TCK-2026-0002",
        "ticket",
        "wuhao",
        [
            (
                "wuhao",
                {
                    "customer_name": "杭州青禾贸易",
                    "customer_phone": "0571-5555 0202",
                    "ticket_type": "complaint",
                    "priority": "normal",
                    "subject": "发票开错 Wrong invoice",
                    "description": "发票抬头写错了 The invoice has the wrong company name",
                },
            ),
        ],
    ),
    ("APR-2026-0004", "approval", "zhangwei", []),  # the tour's blank request (docs/tour.md)
    ("CR-2026-0001", "contract_review", "zhangwei", []),  # the tour's blank contract draft
    (
        "APR-2026-0005",
        "approval",
        "wangfang",
        [
            (
                "wangfang",
                {
                    "request_type": "leave",
                    "title": "事假 Personal leave",
                    "days": 1,
                    "leave_type": "personal",
                    "start_date": "2026-12-10",
                    "end_date": "2026-12-10",
                    "reason": "搬家 Moving house",
                },
            ),
        ],
    ),
    (
        "TCK-2026-0003",
        "ticket",
        "wuhao",
        [
            (
                "wuhao",
                {
                    "customer_name": "苏州恒通物流",
                    "customer_phone": "0512-5555 0303",
                    "ticket_type": "repair",
                    "priority": "normal",
                    "subject": "扫码枪无法连接 Scanner does not pair",
                    "description": "仓库扫码枪连不上平板 The warehouse scanner will not pair with the tablet",
                    "agent": "wuhao",
                },
            ),
            (
                "wuhao",
                {
                    "action": "escalate_vendor",
                    "vendor": VENDOR,
                    "vendor_email": VENDOR_EMAIL,
                    "vendor_brief": "请检查扫码枪固件 Please check the scanner's firmware",
                },
            ),
        ],
    ),
    (
        "TCK-2026-0004",
        "ticket",
        "zhouxin",
        [
            (
                "zhouxin",
                {
                    "customer_name": "上海明远科技",
                    "customer_phone": "021-5555 0101",
                    "ticket_type": "consultation",
                    "priority": "normal",
                    "subject": "如何导出发票 How to export invoices",
                    "description": "客户想按月导出发票 The customer wants a monthly invoice export",
                    "agent": "zhouxin",
                },
            ),
            ("zhouxin", {"action": "resolve", "resolution": "已发送操作说明 Sent the how-to"}),
            ("zhouxin", {"fixed": "yes", "satisfaction": 5, "customer_feedback": "很清楚 Clear, thanks"}),
        ],
    ),
]
# business key -> why its starter withdrew it (撤回) after the steps above
WITHDRAWN = {"APR-2026-0005": "计划有变 Plans changed"}


def load_samples(engine: Engine) -> Iterator[str]:
    """The company and its CRM records first (a ticket finds its customer there, by phone), then the
    instances; yields one line per thing created."""
    yield from load_records(engine)  # it loads the company first
    deployed = {d.key for d in engine.repository.query().latest_only().list()}
    for business_key, process, starter, steps in SAMPLES:
        if process not in deployed or engine.runtime.query().business_key(business_key).count():
            continue
        instance = engine.runtime.start(
            process, business_key=business_key, started_by=starter, variables={"initiator": starter}
        )
        for actor, data in steps:
            task = _next_task(engine, instance.id, actor)
            if task is None:
                break
            engine.tasks.complete(task.id, actor=actor, data=data)
        if business_key in WITHDRAWN:
            engine.runtime.withdraw(instance.id, actor=starter, reason=WITHDRAWN[business_key])
        yield f"sample {business_key} ({process}): {engine.runtime.get(instance.id).state}"


def _next_task(engine: Engine, instance_id: str, actor: str) -> UserTask | None:
    """The open task ``actor`` takes next: the one assigned to them, else the first open one."""
    tasks = engine.tasks.query().instance(instance_id).open().order_by_created().list()
    return next((t for t in tasks if t.assignee == actor), tasks[0] if tasks else None)
