"""Demo data: a few expense claims in different states, so every page has content on first start.

Idempotent: instances are keyed by business key and only created once.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.facade import Engine

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
]


def load_samples(engine: Engine) -> Iterator[str]:
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
            ("manager", manager and {"decision": manager}),
            ("finance", finance and {"decision": finance}),
        ]
        for actor, data in steps:
            if not data:
                break
            task = engine.tasks.query().instance(instance.id).open().first()
            if task is None:
                break
            engine.tasks.complete(task.id, actor=actor, data=data)
        state = engine.runtime.get(instance.id).state
        yield f"sample {business_key}: {state}"
