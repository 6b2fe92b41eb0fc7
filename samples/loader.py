"""Demo data: a small company and expense claims in different states, so every page has content.

Idempotent: users, departments and instances are only created once. The demo passwords are
printed by ``baton demo``; they are for trying Baton out, never for production.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.errors import ConflictError
from engine.facade import Engine

DEMO_PASSWORD = "baton-demo"

DEPARTMENTS = ["总经理办公室", "销售部", "财务部"]
USERS = [
    # username, display name, role, department, groups
    ("admin", "系统管理员", "admin", "总经理办公室", []),
    ("designer", "流程设计 Designer", "designer", "总经理办公室", []),
    ("wangqiang", "王强 (销售经理)", "manager", "销售部", ["managers"]),
    ("zhangwei", "张伟", "employee", "销售部", ["employee"]),
    ("lina", "李娜", "employee", "销售部", ["employee"]),
    ("wangfang", "王芳", "employee", "销售部", ["employee"]),
    ("liuyang", "刘洋", "employee", "销售部", ["employee"]),
    ("chenjing", "陈静 (财务)", "manager", "财务部", ["finance"]),
]
MANAGERS = {"销售部": "wangqiang", "财务部": "chenjing", "总经理办公室": "admin"}

CLAIMS = [
    # business key, starter, claim, manager decision, finance decision
    ("EXP-2026-0001", "zhangwei", {"amount": 320.5, "category": "meals", "reason": "客户午餐"}, None, None),
    (
        "EXP-2026-0002",
        "lina",
        {"amount": 1880, "category": "travel", "reason": "上海出差高铁"},
        "approve",
        None,
    ),
    (
        "EXP-2026-0003",
        "wangfang",
        {"amount": 96, "category": "office", "reason": "打印纸"},
        "approve",
        "approve",
    ),
    ("EXP-2026-0004", "liuyang", {"amount": 45000, "category": "other", "reason": "团建"}, "reject", None),
    ("EXP-2026-0005", "zhangwei", None, None, None),
]


def load_people(engine: Engine) -> Iterator[str]:
    identity = engine.identity
    for name in DEPARTMENTS:
        if not identity.departments().name(name).count():
            identity.create_department(name, actor="demo")
    for username, display, role, department, groups in USERS:
        try:
            identity.create_user(
                username,
                DEMO_PASSWORD,
                role=role,
                display_name=display,
                department=department,
                groups=groups,
                create_missing=True,
                actor="demo",
            )
            yield f"user {username:<10} password {DEMO_PASSWORD}  ({display}, {role})"
        except ConflictError:
            continue
    for department, manager in MANAGERS.items():
        identity.set_department_manager(department, manager, actor="demo")


def load_samples(engine: Engine) -> Iterator[str]:
    yield from load_people(engine)
    for business_key, starter, claim, manager, finance in CLAIMS:
        if engine.runtime.query().business_key(business_key).count():
            continue
        instance = engine.runtime.start(
            "expense_approval",
            business_key=business_key,
            started_by=starter,
            variables={"initiator": starter},
        )
        steps = [
            (starter, claim),
            ("wangqiang", manager and {"decision": manager}),
            ("chenjing", finance and {"decision": finance}),
        ]
        for actor, data in steps:
            if not data:
                break
            task = engine.tasks.query().instance(instance.id).open().first()
            if task is None:
                break
            engine.tasks.complete(task.id, actor=actor, data=data)
        yield f"sample {business_key}: {engine.runtime.get(instance.id).state}"
