"""CRM records over the REST API and the pages, on SQLite and PostgreSQL: who sees and changes what
(404 for what one may not see, 403 for what one may not change), frozen contracts, collected amounts
that count approved payments only, the payment plan, and the audit trail."""

from __future__ import annotations

import re

import pytest

from tests import bpmn_builders as b
from tests.integration.web_support import PASSWORD, Api


@pytest.fixture
def eng(app):
    return app.extensions["baton.engine"]


@pytest.fixture
def org(eng):
    """Sales (manager wang; li and zhang), finance (manager qian), an administrator; amy reads English."""
    identity = eng.identity
    identity.create_department("销售部")
    identity.create_department("财务部")
    identity.create_user("admin", PASSWORD, role="admin")
    identity.create_user("wang", PASSWORD, role="manager", department="销售部")
    identity.create_user(
        "li", PASSWORD, role="employee", department="销售部", groups=["sales"], create_missing=True
    )
    identity.create_user("zhang", PASSWORD, role="employee", department="销售部")
    identity.create_user("qian", PASSWORD, role="manager", department="财务部")
    identity.create_user("amy", PASSWORD, role="employee", department="销售部", locale="en")
    identity.set_department_manager("销售部", "wang")
    identity.set_department_manager("财务部", "qian")
    return identity


@pytest.fixture
def api(client, org):
    return lambda username: Api(client, username)


def _customer(caller: Api, name: str = "星海贸易", **extra) -> dict:
    return caller.ok(caller.post("/customers", {"name": name, **extra}), 201)


def _contract(caller: Api, customer_id: int, **extra) -> dict:
    body = {
        "customer_id": customer_id,
        "title": "年度维保",
        "items": [
            {"product": "维保服务", "quantity": 2, "unit_price": "2500.00"},
            {"product": "配件", "quantity": "1", "unit_price": 1000},
        ],
        "plan": [{"due_on": "2020-01-31", "amount": "4000.00"}, {"due_on": "2099-06-30", "amount": "2000"}],
        **extra,
    }
    return caller.ok(caller.post("/contracts", body), 201)


def _approved_contract(api, customer_id: int) -> dict:
    li, wang = api("li"), api("wang")
    contract = _contract(li, customer_id)
    li.ok(li.post(f"/contracts/{contract['id']}/status", {"status": "in_review"}))
    return wang.ok(wang.post(f"/contracts/{contract['id']}/status", {"status": "approved"}))


class TestScoping:
    def test_owners_managers_and_admins_see_a_record_others_get_404(self, api, org):
        li = api("li")
        customer = _customer(li, phone="021-1234")
        assert (customer["owner"], customer["department_id"]) == ("li", org.get_department("销售部").id)
        for who, status in (("li", 200), ("wang", 200), ("admin", 200), ("zhang", 404), ("qian", 404)):
            assert api(who).get(f"/customers/{customer['id']}").status_code == status, who
        assert [c["name"] for c in api("wang").ok(api("wang").get("/customers"))["items"]] == ["星海贸易"]
        assert api("zhang").ok(api("zhang").get("/customers"))["items"] == []
        assert api("qian").ok(api("qian").get("/customers?count=true"))["total"] == 0
        assert li.get("/customers/999999").status_code == 404
        assert api("zhang").patch(f"/customers/{customer['id']}", {"name": "x"}).status_code == 404

    def test_a_business_key_alone_opens_nothing(self, api, eng):
        """Anyone may start an instance keyed "customer:<id>": that must not reveal the customer (a
        record is shared with an instance's people when a connector call of that instance touched it,
        see test_connectors). The owner still sees the instance listed on the record's page."""
        li, zhang = api("li"), api("zhang")
        customer = _customer(li)
        eng.repository.deploy({"visit.bpmn": b.linear("visit", ["user:report"])}, deployed_by="designer")
        instance = eng.runtime.start("visit", business_key=f"customer:{customer['id']}", started_by="zhang")
        assert zhang.get(f"/customers/{customer['id']}").status_code == 404
        assert zhang.patch(f"/customers/{customer['id']}", {"phone": "110"}).status_code == 404
        seen = li.ok(li.get(f"/customers/{customer['id']}"))
        assert [i["id"] for i in seen["instances"]] == [instance.id]

    def test_only_managers_give_records_to_someone_else(self, api):
        li, wang = api("li"), api("wang")
        assert li.post("/customers", {"name": "A", "owner": "zhang"}).status_code == 403
        given = wang.ok(wang.post("/customers", {"name": "B", "owner": "zhang"}), 201)
        assert given["owner"] == "zhang"
        assert api("zhang").get(f"/customers/{given['id']}").status_code == 200
        assert li.patch(f"/customers/{_customer(li)['id']}", {"owner": "zhang"}).status_code == 403

    def test_a_child_record_cannot_point_at_a_customer_one_cannot_see(self, api):
        customer = _customer(api("li"))
        zhang = api("zhang")
        assert zhang.post("/contacts", {"customer_id": customer["id"], "name": "王经理"}).status_code == 404
        assert (
            zhang.post(
                "/tickets", {"customer_id": customer["id"], "type": "repair", "subject": "x"}
            ).status_code
            == 404
        )


class TestContracts:
    def test_amount_follows_the_items_and_money_is_a_decimal_string(self, api):
        li = api("li")
        contract = _contract(li, _customer(li)["id"])
        assert contract["amount"] == "6000.00" and contract["collected"] == "0.00"
        assert contract["number"].startswith("C") and contract["status"] == "draft"
        assert [i["amount"] for i in contract["items"]] == ["5000.00", "1000.00"]
        assert [p["state"] for p in contract["plan"]] == ["overdue", "due"]
        assert contract["overdue"] is False  # only approved contracts can be overdue

    def test_bad_money_and_a_plan_that_does_not_add_up_are_422(self, api):
        li = api("li")
        customer = _customer(li)
        answer = li.post("/contracts", {"customer_id": customer["id"], "title": "x", "amount": "12.345"})
        assert answer.status_code == 422
        assert answer.get_json()["error"]["details"][0]["field"] == "amount"
        answer = li.post(
            "/contracts",
            {
                "customer_id": customer["id"],
                "title": "x",
                "amount": "100",
                "plan": [{"due_on": "2030-01-01", "amount": 60}],
            },
        )
        assert answer.status_code == 422 and "add up to 60.00" in str(answer.get_json())

    def test_review_moves_and_an_approved_contract_is_frozen_and_the_attempt_audited(self, api, eng):
        li, wang = api("li"), api("wang")
        contract = _contract(li, _customer(li)["id"])
        path = f"/contracts/{contract['id']}"
        li.ok(li.patch(path, {"title": "年度维保 2027", "version": contract["version"]}))
        assert li.patch(path, {"title": "stale", "version": contract["version"]}).status_code == 409
        li.ok(li.post(f"{path}/status", {"status": "in_review"}))
        assert li.patch(path, {"title": "during review"}).status_code == 409
        assert li.post(f"{path}/status", {"status": "approved"}).status_code == 403  # not one's own
        assert wang.post(f"{path}/status", {"status": "rejected"}).status_code == 422  # needs a reason
        approved = wang.ok(wang.post(f"{path}/status", {"status": "approved"}))
        assert (approved["status"], approved["decided_by"]) == ("approved", "wang")

        answer = li.patch(path, {"title": "changed after approval"})
        assert answer.status_code == 409 and "frozen" in answer.get_json()["error"]["message"]
        assert wang.patch(path, {"items": []}).status_code == 409
        assert wang.post(f"{path}/status", {"status": "draft"}).status_code == 409
        assert li.ok(li.get(path))["title"] == "年度维保 2027"
        history = eng.records.history("contract", contract["id"])
        refused = [(e.actor, e.details["attempt"]) for e in history if e.action == "contract_change_refused"]
        assert refused == [("li", "edit"), ("wang", "edit"), ("wang", "status approved -> draft")]
        assert [e.action for e in history][:4] == [
            "record_created",
            "record_updated",
            "contract_status_changed",
            "contract_status_changed",
        ]
        updated = history[1]
        assert (updated.actor, updated.details["before"], updated.details["after"]) == (
            "li",
            {"title": "年度维保"},
            {"title": "年度维保 2027"},
        )

    def test_a_rejected_contract_is_archived_with_its_reason(self, api):
        li, wang = api("li"), api("wang")
        contract = _contract(li, _customer(li)["id"])
        li.ok(li.post(f"/contracts/{contract['id']}/status", {"status": "in_review"}))
        rejected = wang.ok(
            wang.post(f"/contracts/{contract['id']}/status", {"status": "rejected", "reason": "价格过低"})
        )
        assert (rejected["status"], rejected["reject_reason"]) == ("rejected", "价格过低")
        assert li.patch(f"/contracts/{contract['id']}", {"title": "again"}).status_code == 409
        assert [c["id"] for c in li.ok(li.get("/contracts?status=rejected"))["items"]] == [contract["id"]]


class TestPayments:
    def test_collected_counts_approved_payments_only(self, api):
        li, wang, zhang = api("li"), api("wang"), api("zhang")
        customer = _customer(li)
        draft = _contract(li, customer["id"])
        answer = li.post(
            "/payments", {"contract_id": draft["id"], "amount": "10", "received_on": "2026-01-05"}
        )
        assert answer.status_code == 409  # a draft collects nothing
        contract = _approved_contract(api, customer["id"])
        assert contract["overdue"] is True  # 4000 were due in 2020
        first = li.ok(
            li.post(
                "/payments", {"contract_id": contract["id"], "amount": 3000, "received_on": "2026-01-05"}
            ),
            201,
        )
        second = li.ok(
            li.post(
                "/payments", {"contract_id": contract["id"], "amount": "1500.50", "received_on": "2026-02-01"}
            ),
            201,
        )
        assert first["status"] == "pending" and first["amount"] == "3000.00"
        assert li.ok(li.get(f"/contracts/{contract['id']}"))["collected"] == "0.00"  # pending counts nothing

        assert li.post(f"/payments/{first['id']}/status", {"status": "approved"}).status_code == 403  # own
        assert zhang.post(f"/payments/{first['id']}/status", {"status": "approved"}).status_code == 404
        wang.ok(wang.post(f"/payments/{first['id']}/status", {"status": "approved"}))
        assert wang.post(f"/payments/{second['id']}/status", {"status": "rejected"}).status_code == 422
        wang.ok(wang.post(f"/payments/{second['id']}/status", {"status": "rejected", "reason": "金额不符"}))
        seen = li.ok(li.get(f"/contracts/{contract['id']}"))
        assert (seen["collected"], seen["outstanding"]) == ("3000.00", "3000.00")
        assert [(p["paid"], p["state"]) for p in seen["plan"]] == [("3000.00", "overdue"), ("0.00", "due")]
        assert [c["id"] for c in li.ok(li.get("/contracts?overdue=true"))["items"]] == [contract["id"]]

        # the rejected payment is corrected and resubmitted; once approved the first instalment is paid
        li.ok(li.patch(f"/payments/{second['id']}", {"amount": "1000.00"}))
        li.ok(li.post(f"/payments/{second['id']}/status", {"status": "pending"}))
        wang.ok(wang.post(f"/payments/{second['id']}/status", {"status": "approved"}))
        seen = li.ok(li.get(f"/contracts/{contract['id']}"))
        assert seen["collected"] == "4000.00" and seen["overdue"] is False
        assert [p["state"] for p in seen["plan"]] == ["paid", "due"]
        assert li.get("/contracts?overdue=true").get_json()["items"] == []
        answer = li.patch(f"/payments/{first['id']}", {"amount": "1"})  # approved payments are final
        assert answer.status_code == 409
        listed = li.ok(li.get(f"/payments?contract_id={contract['id']}&status=approved&count=1"))
        assert listed["total"] == 2


class TestTickets:
    def test_tickets_filters_assignee_and_rating(self, api):
        li = api("li")
        customer = _customer(li)
        ticket = li.ok(
            li.post(
                "/tickets",
                {
                    "customer_id": customer["id"],
                    "type": "complaint",
                    "priority": "high",
                    "subject": "发票开错",
                },
            ),
            201,
        )
        assert (ticket["number"], ticket["status"], ticket["customer_name"]) == (
            f"T{ticket['id']:06d}",
            "open",
            "星海贸易",
        )
        li.ok(li.post("/tickets", {"type": "suggestion", "subject": "希望增加夜间服务"}), 201)
        assert [t["subject"] for t in li.ok(li.get("/tickets?type=complaint"))["items"]] == ["发票开错"]
        assert li.get("/tickets?type=praise").status_code == 422
        assert li.patch(f"/tickets/{ticket['id']}", {"rating": 6}).status_code == 422
        li.ok(li.patch(f"/tickets/{ticket['id']}", {"assignee": "zhang"}))
        zhang = api("zhang")
        closed = zhang.ok(zhang.patch(f"/tickets/{ticket['id']}", {"status": "closed", "rating": 5}))
        assert closed["closed_at"] and closed["rating"] == 5
        assert [t["id"] for t in zhang.ok(zhang.get("/tickets"))["items"]] == [ticket["id"]]


class TestPages:
    def login(self, client, username: str) -> None:
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
        assert answer.status_code == 302

    def test_lists_and_details_in_chinese_and_english(self, app, api, eng):
        li = api("li")
        customer = _customer(li)
        contract = _contract(li, customer["id"])
        li.ok(
            li.post("/tickets", {"customer_id": customer["id"], "type": "repair", "subject": "空调不制冷"}),
            201,
        )
        eng.repository.deploy({"visit.bpmn": b.linear("visit", ["user:report"])}, deployed_by="designer")
        eng.runtime.start("visit", business_key=f"contract:{contract['id']}", started_by="li")

        client = app.test_client()
        self.login(client, "li")
        assert client.get("/crm").headers["Location"].endswith("/crm/customers")
        page = client.get("/crm/customers").get_data(as_text=True)
        assert "星海贸易" in page and ">客户<" in page and 'name="viewport"' in page
        page = client.get(f"/crm/contracts/{contract['id']}").get_data(as_text=True)
        assert "6,000.00" in page and "已逾期" in page and "visit" in page and "进行中" in page
        for resource in ("contacts", "contracts", "payments", "tickets"):
            assert client.get(f"/crm/{resource}").status_code == 200
        assert client.get(f"/crm/customers/{customer['id']}").status_code == 200
        assert "空调不制冷" in client.get("/crm/tickets?type=repair").get_data(as_text=True)
        assert client.get("/crm/widgets").status_code == 404

        other = app.test_client()
        self.login(other, "zhang")
        assert other.get(f"/crm/contracts/{contract['id']}").status_code == 404
        english = app.test_client()
        self.login(english, "amy")
        english_page = english.get("/crm/tickets").get_data(as_text=True)
        assert ">CRM<" in english_page and "Tickets" in english_page

    def test_openapi_describes_the_records(self, client):
        paths = client.get("/api/v1/openapi.json").get_json()["paths"]
        assert {"/customers", "/contracts/{id}", "/contracts/{id}/status", "/payments/{id}/status"} <= set(
            paths
        )
        assert "patch" in paths["/tickets/{id}"]
