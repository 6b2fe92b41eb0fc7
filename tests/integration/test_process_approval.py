"""processes/approval end to end over the REST API, as the demo company's people (samples/company.py),
on SQLite and PostgreSQL: who approves what, countersign (会签), any-one (或签), send back, withdraw,
CC, and the reminder and escalation timers (docs/processes/approval.md)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from samples.company import DEMO_PASSWORD, email_of

if TYPE_CHECKING:
    from tests.integration.process_support import Callers

pytest_plugins = ["tests.integration.process_support"]  # its fixtures: callers, smtp, the databases

APPROVE = {"decision": "approve"}


def submit(callers: Callers, starter: str, business_key: str = "A-1", variables=None, **form) -> str:
    """``starter`` raises a request and fills in the form; the instance id."""
    caller = callers[starter]
    instance = caller.start("approval", business_key, **(variables or {}))
    caller.complete(
        instance["id"], "request", **{"title": "申请 Request", "reason": "工作需要 For work", **form}
    )
    return instance["id"]


def leave(days: float) -> dict:
    return {"request_type": "leave", "days": days, "leave_type": "annual"}


def expense(amount: float) -> dict:
    return {"request_type": "expense", "amount": amount}


def purchase(amount: float) -> dict:
    return {"request_type": "purchase", "amount": amount}


def state(callers: Callers, instance_id: str) -> str:
    return callers.instance(instance_id)["state"]


class TestWhoApproves:
    def test_short_leave_needs_the_starters_manager_only(self, callers):
        instance = submit(callers, "zhangwei", **leave(2))
        assert callers.open_tasks(instance) == [("manager_approval", "wangqiang")]
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        assert state(callers, instance) == "completed"
        variables = callers.instance(instance)["variables"]
        assert variables["manager_review"] == APPROVE and not variables["needs_gm"]

    def test_long_leave_also_needs_the_general_manager(self, callers):
        instance = submit(callers, "lina", **leave(5))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        assert callers.open_tasks(instance) == [("gm_approval", "zhaoming")]
        callers["zhaoming"].complete(instance, "gm_approval", **APPROVE)
        assert state(callers, instance) == "completed"

    def test_a_department_manager_is_approved_by_the_manager_above(self, callers):
        instance = submit(callers, "sunli", **leave(1))
        assert callers.open_tasks(instance) == [("manager_approval", "zhaoming")]

    @pytest.mark.parametrize(
        ("amount", "steps"),
        [
            (3000, []),
            (8000, ["finance_approval"]),
            (60000, ["finance_approval", "gm_approval"]),
        ],
    )
    def test_expense_amounts_pick_finance_and_the_general_manager(self, callers, amount, steps):
        instance = submit(callers, "zhangwei", **expense(amount))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        approvers = {"finance_approval": "chenjing", "gm_approval": "zhaoming"}
        for step in steps:
            assert callers.open_tasks(instance) == [(step, approvers[step])]
            callers[approvers[step]].complete(instance, step, **APPROVE)
        # every expense claim ends with one finance clerk's check (或签): chenjing and huangmin are asked
        assert sorted(callers.open_tasks(instance)) == [
            ("payment_check", "chenjing"),
            ("payment_check", "huangmin"),
        ]
        callers["huangmin"].complete(instance, "payment_check", **APPROVE)
        assert state(callers, instance) == "completed"

    def test_a_start_variable_lowers_a_threshold_but_cannot_raise_it(self, callers):
        lowered = submit(callers, "zhangwei", "A-low", {"finance_threshold": 1000}, **expense(3000))
        raised = submit(callers, "lina", "A-high", {"finance_threshold": 1_000_000}, **expense(8000))
        for instance in (lowered, raised):
            callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
            assert callers.open_tasks(instance) == [("finance_approval", "chenjing")]
        assert callers.instance(raised)["variables"]["finance_threshold"] == 5000

    def test_expense_and_purchase_need_an_amount_leave_needs_days(self, callers):
        caller = callers["zhangwei"]
        instance = caller.start("approval")["id"]
        task = caller.task(instance, "request")
        for form, field in ((expense(1) | {"amount": None}, "amount"), (leave(1) | {"days": None}, "days")):
            data = {k: v for k, v in form.items() if v is not None} | {"title": "申请", "reason": "为了工作"}
            answer = caller.post(f"/tasks/{task['id']}/complete", json={"data": data})
            assert answer.status_code == 422, answer.get_json()
            assert field in str(answer.get_json()["error"]["details"])


class TestCountersign:
    """Purchases: every member of purchase_review (gaofeng, huangmin, lihua) must approve (会签)."""

    def test_all_members_approve(self, callers):
        instance = submit(callers, "liuyang", **purchase(2000))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        assert sorted(callers.open_tasks(instance)) == [
            ("countersign", "gaofeng"),
            ("countersign", "huangmin"),
            ("countersign", "lihua"),
        ]
        for member in ("huangmin", "gaofeng", "lihua"):
            callers[member].complete(instance, "countersign", **APPROVE)
        assert state(callers, instance) == "completed"
        reviews = callers.instance(instance)["variables"]["countersign_reviews"]
        assert reviews == [APPROVE, APPROVE, APPROVE]

    def test_one_rejection_rejects_and_closes_the_other_tasks(self, callers):
        instance = submit(callers, "liuyang", **purchase(20000))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        callers["huangmin"].complete(instance, "countersign", **APPROVE)
        callers["lihua"].complete(
            instance, "countersign", decision="reject", comment="合同条款有风险 Risky terms"
        )
        assert state(callers, instance) == "completed"
        assert callers.open_tasks(instance) == []  # no finance step although 20000 is above 5000
        gaofeng = callers["admin"].ok("get", f"/tasks?scope=all&state=cancelled&instance_id={instance}")[
            "items"
        ]
        assert [(t["element_id"], t["assignee"]) for t in gaofeng] == [("countersign", "gaofeng")]
        actions = callers.actions(instance)
        assert ("task_cancelled", "lihua", "countersign") in actions

    def test_a_member_who_sends_it_back_reopens_the_request(self, callers):
        instance = submit(callers, "liuyang", **purchase(2000))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        callers["gaofeng"].complete(
            instance, "countersign", decision="return", comment="请附报价单 Attach a quote"
        )
        assert callers.open_tasks(instance) == [("request", "liuyang")]
        assert callers.instance(instance)["variables"]["returned_comment"] == "请附报价单 Attach a quote"


class TestAnyOneApproves:
    """Expense claims: any one finance clerk's answer decides (或签); the others' tasks close."""

    def test_the_first_answer_decides_even_a_rejection(self, callers):
        instance = submit(callers, "zhangwei", **expense(300))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        callers["chenjing"].complete(
            instance, "payment_check", decision="reject", comment="发票不合规 Bad invoice"
        )
        assert state(callers, instance) == "completed"
        assert callers.open_tasks(instance) == []
        huangmin = callers["huangmin"]
        assert huangmin.tasks(instance) == []
        assert callers.instance(instance)["variables"]["clerk_reviews"][0]["decision"] == "reject"


class TestSendBackAndResubmit:
    def test_the_manager_sends_back_with_a_comment_and_the_starter_resubmits(self, callers):
        instance = submit(callers, "zhangwei", **expense(9000))
        manager = callers["wangqiang"]
        task = manager.task(instance, "manager_approval")
        without_comment = manager.post(f"/tasks/{task['id']}/complete", json={"data": {"decision": "return"}})
        assert without_comment.status_code == 422  # sending back needs a comment
        manager.complete(instance, "manager_approval", decision="return", comment="金额太高，请拆分 Split it")
        assert callers.open_tasks(instance) == [("request", "zhangwei")]
        variables = callers.instance(instance)["variables"]
        assert variables["returned_comment"] == "金额太高，请拆分 Split it"
        # resubmitted for less: back to the manager, and this time no finance step
        callers["zhangwei"].complete(
            instance, "request", title="申请", reason="已拆分 Split", **expense(4000)
        )
        assert callers.open_tasks(instance) == [("manager_approval", "wangqiang")]
        assert callers.instance(instance)["variables"]["returned_comment"] == ""
        manager.complete(instance, "manager_approval", **APPROVE)
        assert [step for step, _ in callers.open_tasks(instance)] == ["payment_check", "payment_check"]

    def test_a_later_step_sends_back_to_the_starter_too(self, callers):
        instance = submit(callers, "zhangwei", **expense(8000))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        callers["chenjing"].complete(
            instance, "finance_approval", decision="return", comment="缺发票 Invoice?"
        )
        assert callers.open_tasks(instance) == [("request", "zhangwei")]
        callers["zhangwei"].complete(instance, "request", title="申请", reason="补发票", **expense(8000))
        assert callers.open_tasks(instance) == [("manager_approval", "wangqiang")]  # from the start again


class TestWithdraw:
    def test_the_starter_withdraws_while_nobody_has_acted(self, callers):
        instance = submit(callers, "zhangwei", **expense(8000))
        answer = callers["zhangwei"].ok(
            "post", f"/process-instances/{instance}/withdraw", json={"reason": "不需要了"}
        )
        assert answer["state"] == "cancelled"
        assert callers.open_tasks(instance) == []
        assert ("instance_withdrawn", "zhangwei", None) in callers.actions(instance)

    def test_refused_once_someone_else_has_acted(self, callers):
        instance = submit(callers, "zhangwei", **expense(8000))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        refused = callers["zhangwei"].post(f"/process-instances/{instance}/withdraw")
        assert refused.status_code == 409 and "wangqiang" in refused.get_json()["error"]["message"]
        assert state(callers, instance) == "running"

    def test_only_the_starter_may_withdraw(self, callers):
        instance = submit(callers, "zhangwei", **expense(8000))
        assert callers["wangqiang"].post(f"/process-instances/{instance}/withdraw").status_code == 403
        assert callers["admin"].post(f"/process-instances/{instance}/withdraw").status_code == 403
        assert callers["lina"].post(f"/process-instances/{instance}/withdraw").status_code == 404
        done = submit(callers, "zhangwei", "A-2", **leave(1))
        callers["wangqiang"].complete(done, "manager_approval", **APPROVE)
        assert callers["zhangwei"].post(f"/process-instances/{done}/withdraw").status_code == 409

    def test_the_started_by_me_page_has_the_button(self, callers):
        instance = submit(callers, "zhangwei", **leave(1))
        client = callers.client
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        login = {"username": "zhangwei", "password": DEMO_PASSWORD, "csrf_token": token}
        assert client.post("/login", data=login).status_code == 302
        started = client.get("/inbox/started").get_data(as_text=True)
        action = f"/api/v1/process-instances/{instance}/withdraw"
        assert f'action="{action}"' in started
        token = re.search(r'name="csrf_token" value="([^"]+)"', started).group(1)  # a new session
        withdrawn = client.post(action, data={"csrf_token": token}, follow_redirects=True)
        assert withdrawn.status_code == 200 and 'class="notice"' in withdrawn.get_data(as_text=True)
        assert state(callers, instance) == "cancelled"


class TestCc:
    def test_the_people_named_are_copied_unknown_names_are_skipped(self, callers):
        instance = submit(callers, "zhangwei", cc="lina， wangfang,nobody", **expense(300))
        copied = [e for e in callers.instance(instance)["history"] if e["action"] == "instance_cc"]
        assert len(copied) == 1
        assert copied[0]["details"] == {"added": ["lina", "wangfang"], "unknown": ["nobody"]}
        assert copied[0]["element_id"] == "manager_approval" and copied[0]["actor"] == "zhangwei"
        # copied people act on nothing: the manager's task is not theirs
        task = callers["wangqiang"].task(instance, "manager_approval")
        lina = callers["lina"]
        assert lina.post(f"/tasks/{task['id']}/complete", json={"data": APPROVE}).status_code in (403, 404)
        assert lina.post(f"/process-instances/{instance}/withdraw").status_code in (403, 404)

    def test_copied_people_read_the_instance(self, callers):
        instance = submit(callers, "zhangwei", cc="lina", **expense(300))
        assert callers["lina"].get(f"/process-instances/{instance}").status_code == 200
        assert callers["liuyang"].get(f"/process-instances/{instance}").status_code == 404

    def test_resubmitting_copies_nobody_twice(self, callers):
        instance = submit(callers, "zhangwei", cc="lina", **expense(300))
        callers["wangqiang"].complete(instance, "manager_approval", decision="return", comment="再看看")
        callers["zhangwei"].complete(
            instance, "request", title="申请", reason="改了", cc="lina, wangfang", **expense(200)
        )
        copied = [e["details"] for e in callers.instance(instance)["history"] if e["action"] == "instance_cc"]
        assert copied == [{"added": ["lina"], "unknown": []}, {"added": ["wangfang"], "unknown": []}]


def beijing(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of the test week (Monday 23 November 2026 is day 23) in Beijing time, as UTC."""
    return datetime.fromisoformat(f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00+08:00")


class TestReminderAndEscalation:
    """Each approver has 16 working hours; the reminder goes out 4 working hours before the deadline.
    Submitted Monday 10:00 (Beijing): reminder Tuesday 15:00, deadline Wednesday 10:00."""

    def test_the_approver_is_reminded_before_the_deadline(self, callers, smtp):
        instance = submit(callers, "zhangwei", **leave(1))
        task = callers["wangqiang"].task(instance, "manager_approval")
        assert datetime.fromisoformat(task["due_at"]) == beijing(25, 10)
        callers.fire_timers(until=beijing(24, 14, 59))
        assert smtp.inbox.messages == []
        callers.fire_timers(until=beijing(24, 15, 1))
        mail = smtp.inbox.to(email_of("wangqiang"))
        assert mail["Subject"] == "即将超时：主管审批 Manager approval"
        assert callers.open_tasks(instance) == [("manager_approval", "wangqiang")]  # still theirs
        assert ("timer_fired", "scheduler", "manager_reminder") in callers.actions(instance)

    def test_after_the_deadline_the_approvers_manager_decides(self, callers):
        instance = submit(callers, "zhangwei", **expense(8000))
        callers.fire_timers(until=beijing(25, 10, 1))
        assert callers.open_tasks(instance) == [("manager_escalated", "zhaoming")]
        callers["zhaoming"].complete(instance, "manager_escalated", **APPROVE)
        # the next step (finance) starts its own clock: escalated to the finance head's manager in turn
        assert callers.open_tasks(instance) == [("finance_approval", "chenjing")]
        finance = callers["chenjing"].task(instance, "finance_approval")
        callers.fire_timers(until=datetime.fromisoformat(finance["due_at"]) + timedelta(minutes=1))
        assert callers.open_tasks(instance) == [("finance_escalated", "zhaoming")]
        callers["zhaoming"].complete(
            instance, "finance_escalated", decision="reject", comment="预算不足 No budget"
        )
        assert state(callers, instance) == "completed"

    def test_an_answer_in_time_stops_the_timers(self, callers, smtp):
        instance = submit(callers, "zhangwei", **leave(1))
        callers["wangqiang"].complete(instance, "manager_approval", **APPROVE)
        assert callers.instance(instance)["next_timer_due"] is None
        callers.fire_timers(until=beijing(26, 10))
        assert smtp.inbox.messages == [] and state(callers, instance) == "completed"
