"""processes/contract_review end to end over the REST API, as the demo company's people (samples/company.py),
on SQLite and PostgreSQL: legal → finance → general manager above the threshold, send back with a comment
and resubmit, rejection (archived with the reason), approval (frozen), the owner's mails received by a real
SMTP server on loopback, in the owner's language (docs/processes/contract_review.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from samples.company import email_of

if TYPE_CHECKING:
    from tests.integration.process_support import Callers

pytest_plugins = ["tests.integration.process_support"]  # its fixtures: callers, smtp, the databases

APPROVE = {"decision": "approve"}
# zhangwei (销售部) drafts; lihua heads 法务部, chenjing 财务部, zhaoming is the general manager
DRAFT = {
    "title": "服务器采购合同 Server purchase",
    "amount": "95000.00",
    "signed_on": "2026-11-20",
    "items_text": "服务器, 2, 45000\n安装调试，1，5000，含培训",
    "plan_text": "2026-12-15, 30000, 预付款\n2027-01-31 | 65000 | 验收款",
}
FORM_FIELDS = ("customer_id", "title", "amount", "items_text", "plan_text")


@pytest.fixture
def reviews(callers: Callers) -> Callers:
    callers.deploy("contract_review")
    return callers


def new_customer(callers: Callers, owner: str = "zhangwei", name: str = "上海明远科技") -> int:
    return callers[owner].ok("post", "/customers", 201, json={"name": name})["id"]


def draft(callers: Callers, starter: str, contract_id: int | None = None, variables=None, **form) -> str:
    """``starter`` starts a review (of a new contract, or of ``contract_id``) and submits the draft form."""
    caller = callers[starter]
    start = {**({"contract_id": contract_id} if contract_id else {}), **(variables or {})}
    key = f"contract:{contract_id}" if contract_id else None
    instance = caller.start("contract_review", key, **start)["id"]
    caller.complete(instance, "draft", **form)
    return instance


def submit_new(callers: Callers, starter: str = "zhangwei", variables=None, **changes) -> tuple[str, int]:
    """A new contract for a new customer of ``starter``, submitted: (instance id, contract id)."""
    customer_id = new_customer(callers, starter)
    instance = draft(callers, starter, variables=variables, customer_id=customer_id, **{**DRAFT, **changes})
    return instance, variables_of(callers, instance)["contract_id"]


def variables_of(callers: Callers, instance_id: str) -> dict:
    return callers.instance(instance_id)["variables"]


def contract(callers: Callers, contract_id: int, as_user: str = "admin") -> dict:
    return callers[as_user].ok("get", f"/contracts/{contract_id}")


def state(callers: Callers, instance_id: str) -> str:
    return callers.instance(instance_id)["state"]


class TestReview:
    def test_below_the_threshold_legal_then_finance_approve_and_the_contract_is_frozen(self, reviews, smtp):
        instance, contract_id = submit_new(reviews)
        created = contract(reviews, contract_id, "zhangwei")
        assert created["status"] == "in_review" and created["owner"] == "zhangwei"
        assert created["amount"] == "95000.00" and created["signed_on"] == "2026-11-20"
        assert [
            (i["product"], i["quantity"], i["unit_price"], i["description"]) for i in created["items"]
        ] == [
            ("服务器", "2.00", "45000.00", None),
            ("安装调试", "1.00", "5000.00", "含培训"),
        ]
        assert [(p["due_on"], p["amount"], p["note"]) for p in created["plan"]] == [
            ("2026-12-15", "30000.00", "预付款"),
            ("2027-01-31", "65000.00", "验收款"),
        ]
        assert [i["id"] for i in created["instances"]] == [instance]
        # in review: the owner cannot edit it; the reviewers can read it, other people cannot
        in_review = reviews["zhangwei"].client.patch(
            f"/api/v1/contracts/{contract_id}", headers=reviews["zhangwei"].headers, json={"title": "改"}
        )
        assert in_review.status_code == 409
        assert reviews["lina"].get(f"/contracts/{contract_id}").status_code == 404

        assert reviews.open_tasks(instance) == [("legal_review", "lihua")]
        task = reviews["lihua"].ok("get", f"/tasks/{reviews['lihua'].task(instance, 'legal_review')['id']}")
        assert "decision" in task["form"]["properties"]
        assert contract(reviews, contract_id, "lihua")["status"] == "in_review"
        assert "服务器 × 2.00 @ 45000.00" in variables_of(reviews, instance)["contract_summary"]
        reviews["lihua"].complete(instance, "legal_review", **APPROVE)
        assert reviews.open_tasks(instance) == [("finance_review", "chenjing")]
        reviews["chenjing"].complete(instance, "finance_review", decision="approve", comment="条款清楚")
        assert state(reviews, instance) == "completed"
        assert not variables_of(reviews, instance)["needs_gm"]

        approved = contract(reviews, contract_id, "zhangwei")
        assert approved["status"] == "approved" and approved["decided_by"] == "chenjing"
        mail = smtp.inbox.to(email_of("zhangwei"))
        assert mail["Subject"] == f"合同已批准：{approved['number']} 服务器采购合同 Server purchase"
        assert f"/crm/contracts/{contract_id}" in mail.get_content()
        assert len(smtp.inbox.messages) == 1

        # frozen: a change answers 409 and the attempt is on record
        zhangwei = reviews["zhangwei"]
        patched = zhangwei.client.patch(
            f"/api/v1/contracts/{contract_id}", headers=zhangwei.headers, json={"amount": "1.00"}
        )
        assert patched.status_code == 409, patched.get_json()
        refused = zhangwei.post(f"/contracts/{contract_id}/status", json={"status": "draft"})
        assert refused.status_code in (403, 409)
        history = reviews.engine.records.history("contract", contract_id)
        assert [e.details["attempt"] for e in history if e.action == "contract_change_refused"][0] == "edit"
        statuses = [
            (e.details["after"]["status"], e.actor) for e in history if e.action == "contract_status_changed"
        ]
        assert statuses == [("in_review", "zhangwei"), ("approved", "chenjing")]

    def test_above_the_threshold_the_general_manager_decides_too(self, reviews):
        big = {"amount": "150000", "items_text": "", "plan_text": "2026-12-31, 50000\n2027-03-31, 100000"}
        instance, contract_id = submit_new(reviews, **big)
        reviews["lihua"].complete(instance, "legal_review", **APPROVE)
        reviews["chenjing"].complete(instance, "finance_review", **APPROVE)
        assert reviews.open_tasks(instance) == [("gm_review", "zhaoming")]
        assert contract(reviews, contract_id)["status"] == "in_review"
        reviews["zhaoming"].complete(instance, "gm_review", **APPROVE)
        assert contract(reviews, contract_id)["status"] == "approved"
        assert contract(reviews, contract_id)["decided_by"] == "zhaoming"

    def test_a_start_variable_lowers_the_threshold_but_cannot_raise_it(self, reviews):
        lowered, _ = submit_new(reviews, variables={"gm_threshold": 50000})
        big = {"amount": "150000", "items_text": "", "plan_text": "2026-12-31, 150000"}
        raised, _ = submit_new(reviews, "lina", variables={"gm_threshold": 10_000_000}, **big)
        for instance in (lowered, raised):
            reviews["lihua"].complete(instance, "legal_review", **APPROVE)
            reviews["chenjing"].complete(instance, "finance_review", **APPROVE)
            assert reviews.open_tasks(instance) == [("gm_review", "zhaoming")]
        assert variables_of(reviews, raised)["gm_threshold"] == 100000

    def test_an_existing_draft_is_reviewed_with_its_own_values(self, reviews):
        zhangwei = reviews["zhangwei"]
        customer_id = new_customer(reviews)
        body = {
            "customer_id": customer_id,
            "title": "年度维保 Annual maintenance",
            "items": [{"product": "维保服务", "quantity": 12, "unit_price": "2000"}],
            "plan": [{"due_on": "2026-12-31", "amount": "24000"}],
        }
        contract_id = zhangwei.ok("post", "/contracts", 201, json=body)["id"]
        instance = zhangwei.start("contract_review", f"contract:{contract_id}", contract_id=contract_id)["id"]
        shown = variables_of(reviews, instance)
        assert (shown["title"], shown["amount"], shown["customer_id"]) == (
            body["title"],
            "24000.00",
            customer_id,
        )
        assert (
            shown["items_text"] == "维保服务, 12.00, 2000.00" and shown["plan_text"] == "2026-12-31, 24000.00"
        )
        task = zhangwei.task(instance, "draft")
        form = zhangwei.ok("get", f"/tasks/{task['id']}")["form"]
        assert form["properties"]["plan_text"]["title"] == "付款条件（回款计划） Payment terms (instalments)"
        kept = {k: shown[k] for k in ("customer_id", "title", "amount", "items_text")}
        zhangwei.complete(instance, "draft", **kept, plan_text="2026-12-15, 12000\n2027-01-15, 12000")
        assert variables_of(reviews, instance)["contract_id"] == contract_id
        reviewed = contract(reviews, contract_id)
        assert reviewed["status"] == "in_review" and len(reviewed["plan"]) == 2
        assert [i["id"] for i in reviewed["instances"]] == [instance]
        assert reviews.open_tasks(instance) == [("legal_review", "lihua")]

    def test_only_the_owner_of_a_draft_starts_its_review(self, reviews):
        instance, contract_id = submit_new(reviews)  # in review
        again = reviews["zhangwei"].start(
            "contract_review", f"contract:{contract_id}", contract_id=contract_id
        )
        assert again["state"] == "completed" and "in_review" in variables_of(reviews, again["id"])["refused"]
        customer_id = new_customer(reviews)
        mine = reviews["zhangwei"].ok(
            "post", "/contracts", 201, json={"customer_id": customer_id, "title": "草稿", "amount": "100"}
        )
        foreign = reviews["lina"].start("contract_review", f"contract:{mine['id']}", contract_id=mine["id"])
        assert foreign["state"] == "completed" and reviews.open_tasks(foreign["id"]) == []
        assert contract(reviews, mine["id"])["status"] == "draft"


class TestDraftForm:
    def test_a_malformed_line_is_refused_by_the_form(self, reviews):
        zhangwei = reviews["zhangwei"]
        instance = zhangwei.start("contract_review")["id"]
        task = zhangwei.task(instance, "draft")
        data = {**DRAFT, "customer_id": new_customer(reviews), "items_text": "服务器 2 45000"}
        answer = zhangwei.post(f"/tasks/{task['id']}/complete", json={"data": data})
        assert answer.status_code == 422 and "items_text" in str(answer.get_json()["error"]["details"])
        for missing in ("title", "amount", "plan_text", "customer_id"):
            partial = {k: v for k, v in data.items() if k != missing} | {"items_text": DRAFT["items_text"]}
            answer = zhangwei.post(f"/tasks/{task['id']}/complete", json={"data": partial})
            assert answer.status_code == 422, missing

    def test_what_the_record_refuses_comes_back_to_the_author_and_nothing_is_saved(self, reviews):
        customer_id = new_customer(reviews)
        # the plan adds up to 90000, not 95000; customer 999 does not exist
        instance = draft(reviews, "zhangwei", customer_id=999, **{**DRAFT, "plan_text": "2026-12-15, 90000"})
        assert reviews.open_tasks(instance) == [("draft", "zhangwei")]
        comment = variables_of(reviews, instance)["returned_comment"]
        assert comment.startswith("请修改 Please correct: ") and "customer_id: no customer 999" in comment
        assert reviews["zhangwei"].ok("get", "/contracts?count=true")["total"] == 0
        smaller = {**DRAFT, "amount": "90000", "items_text": ""}
        reviews["zhangwei"].complete(instance, "draft", customer_id=customer_id, **smaller)
        comment = variables_of(reviews, instance)["returned_comment"]
        assert "plan: instalments add up to 95000.00, not 90000.00" in comment
        reviews["zhangwei"].complete(instance, "draft", customer_id=customer_id, **DRAFT)
        assert reviews.open_tasks(instance) == [("legal_review", "lihua")]
        assert variables_of(reviews, instance)["returned_comment"] == ""
        assert reviews["zhangwei"].ok("get", "/contracts?count=true")["total"] == 1

    def test_an_item_line_the_record_refuses_is_named_by_its_number(self, reviews):
        customer_id = new_customer(reviews)
        items = "服务器, 2, 45000\n安装调试, 0, 5000"  # a quantity of 0
        instance = draft(reviews, "zhangwei", customer_id=customer_id, **{**DRAFT, "items_text": items})
        assert "items line 2: quantity and unit_price" in variables_of(reviews, instance)["returned_comment"]


class TestSendBack:
    def test_legal_sends_back_the_owner_edits_the_draft_and_resubmits(self, reviews, smtp):
        instance, contract_id = submit_new(reviews)
        lihua = reviews["lihua"]
        task = lihua.task(instance, "legal_review")
        answer = lihua.post(f"/tasks/{task['id']}/complete", json={"data": {"decision": "return"}})
        assert answer.status_code == 422  # sending back needs a comment
        lihua.complete(
            instance, "legal_review", decision="return", comment="违约条款缺失 Add a penalty clause"
        )
        assert reviews.open_tasks(instance) == [("draft", "zhangwei")]
        assert contract(reviews, contract_id)["status"] == "draft"
        comment = variables_of(reviews, instance)["returned_comment"]
        assert comment == "法务 Legal: 违约条款缺失 Add a penalty clause"
        mail = smtp.inbox.to(email_of("zhangwei"))
        number = contract(reviews, contract_id)["number"]
        assert mail["Subject"] == f"合同被退回修改：{number} 服务器采购合同 Server purchase"
        assert "违约条款缺失 Add a penalty clause" in mail.get_content()

        # sent back: a draft again, editable on its page; the form, filled before that edit, is refused once
        zhangwei = reviews["zhangwei"]
        edited = zhangwei.client.patch(
            f"/api/v1/contracts/{contract_id}",
            headers=zhangwei.headers,
            json={"title": "服务器合同（含违约条款）"},
        )
        assert edited.status_code == 200, edited.get_json()
        form = variables_of(reviews, instance)
        zhangwei.complete(instance, "draft", **{k: form[k] for k in FORM_FIELDS})
        assert reviews.open_tasks(instance) == [("draft", "zhangwei")]
        form = variables_of(reviews, instance)
        assert form["title"] == "服务器合同（含违约条款）"  # the form shows the contract as it is now
        assert form["returned_comment"].startswith("合同已在别处修改")
        assert contract(reviews, contract_id)["title"] == "服务器合同（含违约条款）"

        zhangwei.complete(instance, "draft", **{k: form[k] for k in FORM_FIELDS})
        assert reviews.open_tasks(instance) == [("legal_review", "lihua")]  # from the start again
        assert contract(reviews, contract_id)["status"] == "in_review"
        lihua.complete(instance, "legal_review", **APPROVE)
        reviews["chenjing"].complete(instance, "finance_review", **APPROVE)
        assert contract(reviews, contract_id)["status"] == "approved"
        assert [m["Subject"].split("：")[0] for m in smtp.inbox.messages] == ["合同被退回修改", "合同已批准"]

    def test_finance_and_the_general_manager_send_back_too(self, reviews):
        big = {"amount": "150000", "items_text": "", "plan_text": "2026-12-31, 150000"}
        instance, contract_id = submit_new(reviews, **big)
        reviews["lihua"].complete(instance, "legal_review", **APPROVE)
        reviews["chenjing"].complete(
            instance, "finance_review", decision="return", comment="请分两期 Two instalments"
        )
        assert reviews.open_tasks(instance) == [("draft", "zhangwei")]
        assert variables_of(reviews, instance)["returned_comment"] == "财务 Finance: 请分两期 Two instalments"
        form = {**big, "plan_text": "2026-12-31, 50000\n2027-03-31, 100000"}
        customer_id = variables_of(reviews, instance)["customer_id"]
        reviews["zhangwei"].complete(instance, "draft", customer_id=customer_id, title=DRAFT["title"], **form)
        reviews["lihua"].complete(instance, "legal_review", **APPROVE)
        reviews["chenjing"].complete(instance, "finance_review", **APPROVE)
        reviews["zhaoming"].complete(
            instance, "gm_review", decision="return", comment="价格再谈 Negotiate the price"
        )
        assert reviews.open_tasks(instance) == [("draft", "zhangwei")]
        assert (
            variables_of(reviews, instance)["returned_comment"]
            == "总经理 General manager: 价格再谈 Negotiate the price"
        )
        assert contract(reviews, contract_id)["status"] == "draft"

    def test_the_owner_may_withdraw_a_sent_back_review_the_contract_stays_a_draft(self, reviews):
        instance, contract_id = submit_new(reviews)
        reviews["lihua"].complete(instance, "legal_review", decision="return", comment="再看看")
        reviews["zhangwei"].complete(instance, "draft", action="withdraw")
        assert state(reviews, instance) == "completed" and reviews.open_tasks(instance) == []
        assert contract(reviews, contract_id)["status"] == "draft"
        editable = reviews["zhangwei"].client.patch(
            f"/api/v1/contracts/{contract_id}",
            headers=reviews["zhangwei"].headers,
            json={"title": "以后再说"},
        )
        assert editable.status_code == 200


class TestReject:
    def test_a_rejected_contract_is_archived_with_the_reason_and_the_owner_told_in_english(
        self, reviews, smtp
    ):
        reviews.engine.identity.update_user("zhangwei", locale="en", actor="admin")
        instance, contract_id = submit_new(reviews)
        reviews["lihua"].complete(instance, "legal_review", **APPROVE)
        reviews["chenjing"].complete(
            instance, "finance_review", decision="reject", comment="客户信用不足 Poor credit"
        )
        assert state(reviews, instance) == "completed" and reviews.open_tasks(instance) == []
        archived = contract(reviews, contract_id, "zhangwei")
        assert (
            archived["status"] == "rejected"
            and archived["reject_reason"] == "财务 Finance: 客户信用不足 Poor credit"
        )
        mail = smtp.inbox.to(email_of("zhangwei"))
        assert mail["Subject"] == f"Contract rejected: {archived['number']} 服务器采购合同 Server purchase"
        assert "Reason: 财务 Finance: 客户信用不足 Poor credit" in mail.get_content()
        zhangwei = reviews["zhangwei"]
        patched = zhangwei.client.patch(
            f"/api/v1/contracts/{contract_id}", headers=zhangwei.headers, json={"title": "再试一次"}
        )
        assert patched.status_code == 409
        history = reviews.engine.records.history("contract", contract_id)
        rejected = [e for e in history if e.action == "contract_status_changed"][-1]
        assert rejected.details["reason"] == archived["reject_reason"] and rejected.actor == "chenjing"
        assert rejected.instance_id == instance and rejected.details["via"] == "crm_set_contract_status"

    def test_legal_may_reject_at_once(self, reviews):
        instance, contract_id = submit_new(reviews)
        reviews["lihua"].complete(
            instance, "legal_review", decision="reject", comment="主体不合规 Wrong party"
        )
        assert contract(reviews, contract_id)["status"] == "rejected"
        assert reviews.open_tasks(instance) == []


class TestPages:
    def test_the_draft_and_review_forms_work_as_web_pages(self, reviews):
        """The same steps through the task pages a browser shows (no JavaScript needed)."""
        customer_id = new_customer(reviews)
        instance = reviews["zhangwei"].start("contract_review")["id"]
        browser = reviews.browser("zhangwei")
        draft_task = reviews["zhangwei"].task(instance, "draft")
        page = browser.get(f"/tasks/{draft_task['id']}")
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and 'name="items_text"' in html and 'name="plan_text"' in html
        assert "付款条件（回款计划） Payment terms (instalments)" in html
        form = {
            "csrf_token": reviews.csrf(html),
            "action": "submit",
            "customer_id": str(customer_id),
            "title": "网页合同 From the page",
            "amount": "95,000.00",
            "items_text": DRAFT["items_text"],
            "plan_text": "2026-12-15, 30000\r\n2027-01-31, 65000",
        }
        done = browser.post(f"/tasks/{draft_task['id']}/complete", data=form)
        assert done.status_code == 302, done.get_data(as_text=True)[-2000:]
        contract_id = variables_of(reviews, instance)["contract_id"]
        assert contract(reviews, contract_id)["amount"] == "95000.00"
        lihua = reviews.browser("lihua")
        review_task = reviews["lihua"].task(instance, "legal_review")
        html = lihua.get(f"/tasks/{review_task['id']}").get_data(as_text=True)
        assert "网页合同 From the page" in html and 'name="decision"' in html
        refused = lihua.post(
            f"/tasks/{review_task['id']}/complete",
            data={"csrf_token": reviews.csrf(html), "decision": "reject"},
        )
        assert refused.status_code == 422  # a rejection needs a comment
        assert (
            lihua.post(
                f"/tasks/{review_task['id']}/complete",
                data={"csrf_token": reviews.csrf(html), "decision": "return", "comment": "补充交付日期"},
            ).status_code
            == 302
        )
        html = browser.get(f"/tasks/{reviews['zhangwei'].task(instance, 'draft')['id']}").get_data(
            as_text=True
        )
        assert "法务 Legal: 补充交付日期" in html and "服务器, 2.00, 45000.00" in html
