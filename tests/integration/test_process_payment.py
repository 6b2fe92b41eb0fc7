"""processes/payment_audit end to end over the REST API, as the demo company's people (samples/company.py),
on SQLite and PostgreSQL: sales records a payment against an approved contract, finance audits it against
the payment plan, a mismatch goes back to sales who corrects or withdraws it, only approved payments count
as collected; and the daily overdue-instalment reminder, mailed once per instalment to the contract's owner
in their language, received by a real SMTP server on loopback (docs/processes/payment_audit.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from samples.company import email_of

if TYPE_CHECKING:
    from tests.integration.process_support import Callers

pytest_plugins = ["tests.integration.process_support"]  # its fixtures: callers, smtp, the databases

# the clock stands at Monday 23 November 2026, 10:00 in Beijing: the first instalment is 13 days overdue
PLAN = (("2026-11-10", "30000"), ("2026-12-31", "70000"))
PAYMENT = {
    "instalment": 1,
    "amount": "30000",
    "received_on": "2026-11-20",
    "method": "bank_transfer",
    "reference": "ICBC-20261120-001",
}


@pytest.fixture
def payments(callers: Callers) -> Callers:
    callers.deploy("payment_audit")
    return callers


def approved_contract(callers: Callers, owner: str = "zhangwei", plan=PLAN, title: str = "服务器采购") -> int:
    """A contract of ``owner`` with a payment plan, approved by the sales manager over the API."""
    caller = callers[owner]
    customer = caller.ok("post", "/customers", 201, json={"name": f"{title}客户"})["id"]
    body = {
        "customer_id": customer,
        "title": title,
        "amount": str(sum(int(amount) for _, amount in plan)),
        "plan": [{"due_on": due, "amount": amount} for due, amount in plan],
    }
    contract_id = caller.ok("post", "/contracts", 201, json=body)["id"]
    caller.ok("post", f"/contracts/{contract_id}/status", json={"status": "in_review"})
    callers["wangqiang"].ok("post", f"/contracts/{contract_id}/status", json={"status": "approved"})
    return contract_id


def record(callers: Callers, starter: str, contract_id: int, **form) -> str:
    """``starter`` starts a payment audit from the contract and submits the payment form."""
    caller = callers[starter]
    instance = caller.start("payment_audit", f"contract:{contract_id}", contract_id=contract_id)["id"]
    caller.complete(instance, "record", **{"contract_id": contract_id, **PAYMENT, **form})
    return instance


def contract(callers: Callers, contract_id: int) -> dict:
    return callers["admin"].ok("get", f"/contracts/{contract_id}")


def payments_of(callers: Callers, contract_id: int) -> list[dict]:
    return callers["admin"].ok("get", f"/payments?contract_id={contract_id}")["items"]


def variables_of(callers: Callers, instance_id: str) -> dict:
    return callers.instance(instance_id)["variables"]


class TestAudit:
    def test_a_matching_payment_counts_once_finance_approves_it(self, payments, smtp):
        contract_id = approved_contract(payments)
        assert contract(payments, contract_id)["overdue"] is True
        instance = record(payments, "zhangwei", contract_id)
        [payment] = payments_of(payments, contract_id)
        assert (payment["status"], payment["amount"], payment["owner"]) == ("pending", "30000.00", "zhangwei")
        assert contract(payments, contract_id)["collected"] == "0.00"  # pending payments do not count
        assert payments.open_tasks(instance) == [("audit", None)]  # offered to the finance group
        found = variables_of(payments, instance)
        assert found["plan_matches"] is True and "相符 matches" in found["plan_check"]
        assert "第 1 期 2026-11-10  30000.00  overdue" in found["contract_summary"]
        huangmin = payments["huangmin"]
        task = huangmin.ok("get", f"/tasks/{huangmin.task(instance, 'audit')['id']}")
        assert task["form"]["properties"]["decision"]["x-labels"]["mismatch"].startswith("不符")
        assert (
            payments["huangmin"].get(f"/payments/{payment['id']}").status_code == 200
        )  # an auditor reads it

        huangmin.complete(instance, "audit", decision="approve")
        assert payments.instance(instance)["state"] == "completed"
        [payment] = payments_of(payments, contract_id)
        assert (payment["status"], payment["reviewed_by"]) == ("approved", "huangmin")
        counted = contract(payments, contract_id)
        assert (counted["collected"], counted["outstanding"], counted["overdue"]) == (
            "30000.00",
            "70000.00",
            False,
        )
        assert [p["state"] for p in counted["plan"]] == ["paid", "due"]
        number = counted["number"]
        mail = smtp.inbox.to(email_of("zhangwei"))
        assert mail["Subject"] == f"回款已确认：{number} 30000.00"
        assert "合计已收 30000.00" in mail.get_content()
        linked = payments["zhangwei"].ok("get", f"/payments/{payment['id']}")["instances"]
        assert [i["id"] for i in linked] == [instance]

        # an approved payment is final; a second one counts only once it is approved in turn
        frozen = payments["zhangwei"].client.patch(
            f"/api/v1/payments/{payment['id']}", headers=payments["zhangwei"].headers, json={"amount": "1"}
        )
        assert frozen.status_code == 409
        second = record(payments, "zhangwei", contract_id, instalment=2, amount="20000", reference="ICBC-2")
        assert "少 short by 50000.00" in variables_of(payments, second)["plan_check"]  # a partial payment
        assert contract(payments, contract_id)["collected"] == "30000.00"
        payments["chenjing"].complete(second, "audit", decision="approve")
        assert contract(payments, contract_id)["collected"] == "50000.00"
        assert [p["state"] for p in contract(payments, contract_id)["plan"]] == ["paid", "partly_paid"]

    def test_a_mismatch_goes_back_to_sales_who_corrects_it(self, payments, smtp):
        contract_id = approved_contract(payments)
        instance = record(payments, "zhangwei", contract_id, amount="25000")
        assert variables_of(payments, instance)["plan_matches"] is False
        assert "少 short by 5000.00" in variables_of(payments, instance)["plan_check"]
        chenjing = payments["chenjing"]
        task = chenjing.task(instance, "audit")
        without = chenjing.post(f"/tasks/{task['id']}/complete", json={"data": {"decision": "mismatch"}})
        assert without.status_code == 422  # a mismatch needs a comment
        chenjing.complete(
            instance, "audit", decision="mismatch", comment="银行到账是 30000 The bank shows 30000"
        )
        [payment] = payments_of(payments, contract_id)
        assert (payment["status"], payment["review_note"]) == (
            "rejected",
            "银行到账是 30000 The bank shows 30000",
        )
        assert payments.open_tasks(instance) == [("record", "zhangwei")]
        comment = variables_of(payments, instance)["returned_comment"]
        assert comment == "财务退回 Finance sent it back: 银行到账是 30000 The bank shows 30000"
        number = contract(payments, contract_id)["number"]
        mail = smtp.inbox.to(email_of("zhangwei"))
        assert mail["Subject"] == f"回款审核未通过：{number}"
        assert "25000.00" in mail.get_content() and "The bank shows 30000" in mail.get_content()
        assert contract(payments, contract_id)["collected"] == "0.00"

        payments["zhangwei"].complete(instance, "record", contract_id=contract_id, **PAYMENT)  # corrected
        [corrected] = payments_of(payments, contract_id)  # the same payment, not a second one
        assert corrected["id"] == payment["id"]
        assert (corrected["status"], corrected["amount"]) == ("pending", "30000.00")
        assert variables_of(payments, instance)["plan_matches"] is True
        payments["huangmin"].complete(instance, "audit", decision="approve")
        assert contract(payments, contract_id)["collected"] == "30000.00"
        history = payments.engine.records.history("payment", payment["id"])
        changes = [(e.action, e.actor) for e in history]
        assert changes == [
            ("record_created", "zhangwei"),
            ("payment_status_changed", "chenjing"),
            ("record_updated", "zhangwei"),
            ("payment_status_changed", "zhangwei"),
            ("payment_status_changed", "huangmin"),
        ]
        assert history[2].details["before"] == {"amount": "25000.00"}

    def test_sales_may_withdraw_a_payment_sent_back(self, payments):
        contract_id = approved_contract(payments)
        instance = record(payments, "zhangwei", contract_id, amount="3000")
        payments["chenjing"].complete(instance, "audit", decision="mismatch", comment="查无此款 Not received")
        payments["zhangwei"].complete(instance, "record", action="withdraw")
        assert payments.instance(instance)["state"] == "completed"
        assert [p["status"] for p in payments_of(payments, contract_id)] == ["rejected"]
        assert contract(payments, contract_id)["collected"] == "0.00"

    def test_what_cannot_be_recorded_goes_back_at_once(self, payments):
        mine = approved_contract(payments)
        linas = approved_contract(payments, "lina", title="李娜的合同")
        zhangwei = payments["zhangwei"]
        draft = {"customer_id": contract(payments, mine)["customer_id"], "title": "草稿", "amount": "100"}
        draft_id = zhangwei.ok("post", "/contracts", 201, json=draft)["id"]
        instance = zhangwei.start("payment_audit")["id"]  # no contract given: the form asks for it
        attempts = [
            ({"contract_id": 999}, "没有这份合同 No such contract: 999"),
            ({"contract_id": linas}, "不属于您 is not yours"),
            ({"contract_id": draft_id}, "未批准，不能登记回款 is not approved (draft)"),
            ({"contract_id": mine, "instalment": 3}, "回款计划只有 2 期"),
            ({"contract_id": mine, "amount": "100000.01"}, "金额超过合同未收金额"),
        ]
        for form, problem in attempts:
            zhangwei.complete(instance, "record", **{**PAYMENT, **form})
            assert payments.open_tasks(instance) == [("record", "zhangwei")], form
            assert problem in variables_of(payments, instance)["returned_comment"], form
        assert payments["admin"].ok("get", "/payments?count=true")["total"] == 0
        zhangwei.complete(instance, "record", **{**PAYMENT, "contract_id": mine})
        assert payments.open_tasks(instance) == [("audit", None)]

    def test_the_form_wants_the_payment_details(self, payments):
        contract_id = approved_contract(payments)
        zhangwei = payments["zhangwei"]
        instance = zhangwei.start("payment_audit", f"contract:{contract_id}", contract_id=contract_id)["id"]
        task = zhangwei.task(instance, "record")
        for missing in ("amount", "received_on"):
            data = {k: v for k, v in PAYMENT.items() if k != missing} | {"contract_id": contract_id}
            answer = zhangwei.post(f"/tasks/{task['id']}/complete", json={"data": data})
            assert answer.status_code == 422 and missing in str(answer.get_json()["error"]["details"])
        answer = zhangwei.post(f"/tasks/{task['id']}/complete", json={"data": {**PAYMENT, "amount": "1.234"}})
        assert answer.status_code == 422


def beijing(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(f"2026-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00+08:00")


class TestOverdueReminder:
    def test_each_overdue_instalment_is_mailed_once_to_its_owner_in_their_language(self, payments, smtp):
        payments.engine.identity.update_user("lina", locale="en", actor="admin")
        zhangweis = approved_contract(payments)  # 30000 due 10 Nov: overdue
        linas = approved_contract(
            payments, "lina", (("2026-11-01", "5000"), ("2026-11-30", "5000")), "年度维保"
        )
        paid = approved_contract(payments, "wangfang", (("2026-11-05", "8000"),), "已付合同")
        payment = payments["wangfang"].ok(
            "post",
            "/payments",
            201,
            json={"contract_id": paid, "amount": "8000", "received_on": "2026-11-05"},
        )
        payments["wangqiang"].ok("post", f"/payments/{payment['id']}/status", json={"status": "approved"})
        customer = payments["liuyang"].ok("post", "/customers", 201, json={"name": "草稿客户"})["id"]
        payments["liuyang"].ok(
            "post",
            "/contracts",
            201,
            json={
                "customer_id": customer,
                "title": "未批准",
                "amount": "100",
                "plan": [{"due_on": "2026-10-01", "amount": "100"}],
            },
        )  # a draft: not reminded

        payments.fire_timers()  # the daily start timer was due (its cycle began on 1 January)
        runs = payments["admin"].ok("get", "/process-instances?definition_key=payment_overdue_reminder")[
            "items"
        ]
        assert [(r["state"], r["started_by"]) for r in runs] == [("completed", "scheduler")]
        assert sorted(m["To"] for m in smtp.inbox.messages) == [email_of("lina"), email_of("zhangwei")]
        chinese = smtp.inbox.to(email_of("zhangwei"))
        number = contract(payments, zhangweis)["number"]
        assert chinese["Subject"] == f"回款逾期：{number} 第 1 期"
        assert (
            "第 1 期回款 30000.00 已于 2026-11-10 到期，尚欠 30000.00 CNY，已逾期 13 天"
            in chinese.get_content()
        )
        english = smtp.inbox.to(email_of("lina"))
        assert english["Subject"] == f"Payment overdue: {contract(payments, linas)['number']} instalment 1"
        assert "5000.00 CNY is still unpaid, 22 days late" in english.get_content()

        payments.fire_timers(after=timedelta(days=1))  # the next morning: nothing new
        runs = payments["admin"].ok("get", "/process-instances?definition_key=payment_overdue_reminder")[
            "items"
        ]
        assert len(runs) == 2 and len(smtp.inbox.messages) == 2

        payments.fire_timers(until=beijing(12, 2, 9, 1))  # lina's second instalment fell due on 30 November
        assert len(smtp.inbox.messages) == 3
        assert (
            smtp.inbox.messages[-1]["Subject"]
            == f"Payment overdue: {contract(payments, linas)['number']} instalment 2"
        )
        reminded = [
            (e.actor, e.details["instalment"], e.details["due_on"])
            for e in payments.engine.records.history("contract", linas)
            if e.action == "instalment_overdue_reminded"
        ]
        assert reminded == [("scheduler", 1, "2026-11-01"), ("scheduler", 2, "2026-11-30")]

    def test_a_mail_server_outage_delays_the_reminder_without_doubling_it(self, payments, smtp):
        zhangweis = approved_contract(payments)
        smtp.stop()
        payments.fire_timers()
        [run] = payments["admin"].ok("get", "/process-instances?definition_key=payment_overdue_reminder")[
            "items"
        ]
        assert run["state"] == "error" and run["error_element"] == "remind"
        payments.fire_timers(after=timedelta(days=1))  # the next day's run: the instalment is claimed already
        assert smtp.inbox.messages == []
        smtp.start()
        payments.fire_timers(after=timedelta(seconds=10))  # the retry job, due 5 s after the failed run
        assert payments.instance(run["id"])["state"] == "completed"
        [mail] = smtp.inbox.messages
        assert mail["Subject"] == f"回款逾期：{contract(payments, zhangweis)['number']} 第 1 期"
        payments.fire_timers(after=timedelta(days=1))
        assert len(smtp.inbox.messages) == 1


class TestDemoRecords:
    def test_load_records_is_idempotent_and_feeds_both_processes(self, payments, smtp):
        from samples.records import load_records

        payments.deploy("contract_review")
        created = list(load_records(payments.engine))
        assert len([line for line in created if line.startswith("contract ")]) == 3
        assert list(load_records(payments.engine)) == []  # the second time: nothing new
        by_number = {c["number"]: c for c in payments["admin"].ok("get", "/contracts")["items"]}
        approved, in_review, draft = (by_number[f"HT-2026-000{n}"] for n in (1, 2, 3))
        assert (approved["status"], approved["owner"], approved["collected"]) == (
            "approved",
            "zhangwei",
            "48000.00",
        )
        assert approved["overdue"] is True
        assert [p["state"] for p in contract(payments, approved["id"])["plan"]] == ["paid", "overdue", "due"]
        assert (in_review["status"], draft["status"], draft["owner"]) == ("in_review", "draft", "lina")
        [review] = contract(payments, in_review["id"])["instances"]
        assert payments.open_tasks(review["id"]) == [("legal_review", "lihua")]
        statuses = sorted(p["status"] for p in payments_of(payments, approved["id"]))
        assert statuses == ["approved", "pending"]
        [audit] = [
            i
            for i in contract(payments, approved["id"])["instances"]
            if i["definition_key"] == "payment_audit"
        ]
        assert payments.open_tasks(audit["id"]) == [("audit", None)]
        assert len(payments["zhangwei"].ok("get", "/customers")["items"]) == 2
        payments.fire_timers()
        [mail] = smtp.inbox.messages
        assert mail["To"] == email_of("zhangwei") and mail["Subject"] == "回款逾期：HT-2026-0001 第 2 期"
