"""The REST API over real HTTP (Flask's client) and a real database: every endpoint, who may do what."""

from __future__ import annotations

import io
import threading

import pytest

from tests import bpmn_builders as b
from tests.conftest import process_bundle
from tests.integration.web_support import PASSWORD
from tests.integration.web_support import Api as JsonApi


@pytest.fixture
def org(app):
    """A small company: sales (manager wang, employee li, zhang), finance (manager qian), an admin,
    a designer; li and zhang are in the 'employee' lane group, qian in 'finance', wang in 'managers'."""
    identity = app.extensions["baton.engine"].identity
    identity.create_department("销售部")
    identity.create_department("财务部")
    identity.create_user("admin", PASSWORD, role="admin")
    identity.create_user("designer", PASSWORD, role="designer")
    identity.create_user(
        "wang", PASSWORD, role="manager", department="销售部", groups=["managers"], create_missing=True
    )
    identity.create_user(
        "li", PASSWORD, role="employee", department="销售部", groups=["employee"], create_missing=True
    )
    identity.create_user("zhang", PASSWORD, role="employee", department="销售部", groups=["employee"])
    identity.create_user(
        "qian", PASSWORD, role="manager", department="财务部", groups=["finance"], create_missing=True
    )
    identity.set_department_manager("销售部", "wang")
    identity.set_department_manager("财务部", "qian")
    return identity


class Api(JsonApi):
    """A logged-in API caller whose posts take the test client's own arguments (json=, data=)."""

    def post(self, path: str, **kw):
        return self.client.post(f"/api/v1{path}", headers=self.headers, **kw)


@pytest.fixture
def api(client, org):
    return lambda username: Api(client, username)


@pytest.fixture
def deployed(api):
    designer = api("designer")
    files = [(io.BytesIO(content), name) for name, content in process_bundle("expense_approval").items()]
    answer = designer.post("/process-definitions", data={"files": files}, content_type="multipart/form-data")
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def _start(caller, amount: float = 300):
    answer = caller.post(
        "/process-instances", json={"definition_key": "expense_approval", "business_key": "E-1"}
    )
    assert answer.status_code == 201, answer.get_json()
    instance = answer.get_json()
    task = caller.get(f"/tasks?scope=mine&instance_id={instance['id']}").get_json()["items"][0]
    done = caller.post(
        f"/tasks/{task['id']}/complete", json={"data": {"amount": amount, "reason": "client dinner"}}
    )
    assert done.status_code == 200, done.get_json()
    return instance


class TestAuthentication:
    def test_token_and_me(self, api):
        me = api("li").get("/auth/me").get_json()
        assert me["username"] == "li" and me["role"] == "employee" and "employee" in me["groups"]

    def test_wrong_password_and_no_token(self, client, org):
        assert (
            client.post("/api/v1/auth/token", json={"username": "li", "password": "nope"}).status_code == 401
        )
        answer = client.get("/api/v1/tasks")
        assert answer.status_code == 401 and answer.get_json()["error"]["code"] == "unauthorized"
        bad = client.get("/api/v1/tasks", headers={"Authorization": "Bearer forged"})
        assert bad.status_code == 401

    def test_frozen_user_token_stops_working(self, api, org):
        zhang = api("zhang")
        assert zhang.get("/tasks").status_code == 200
        org.freeze_user("zhang", transfer_to="li", actor="admin")
        assert zhang.get("/tasks").status_code == 401

    def test_revoked_token(self, client, org):
        answer = client.post("/api/v1/auth/token", json={"username": "li", "password": PASSWORD}).get_json()
        headers = {"Authorization": f"Bearer {answer['token']}"}
        assert client.delete(f"/api/v1/auth/token/{answer['id']}", headers=headers).status_code == 200
        assert client.get("/api/v1/tasks", headers=headers).status_code == 401


class TestDefinitions:
    def test_deploy_list_get_and_download(self, api, deployed):
        assert deployed["new_versions"] == ["expense_approval"]
        li = api("li")
        listed = li.get("/process-definitions").get_json()
        assert [d["key"] for d in listed["items"]] == ["expense_approval"] and listed["total"] == 1
        detail = li.get("/process-definitions/expense_approval").get_json()
        assert detail["version"] == 1 and "expense_claim.json" in detail["files"]
        xml = li.get("/process-definitions/expense_approval/versions/1/files/expense_approval.bpmn")
        assert xml.status_code == 200 and b"<bpmn:definitions" in xml.data
        assert li.get("/process-definitions/nope").status_code == 404

    def test_only_designers_deploy_and_errors_come_back_as_a_report(self, api):
        def bad():
            return {"files": [(io.BytesIO(b"<bpmn:definitions"), "broken.bpmn")]}

        employee = api("li").post("/process-definitions", data=bad(), content_type="multipart/form-data")
        assert employee.status_code == 403
        answer = api("designer").post("/process-definitions", data=bad(), content_type="multipart/form-data")
        assert answer.status_code == 422
        problem = answer.get_json()["error"]["details"][0]
        assert problem["file"] == "broken.bpmn" and problem["line"] == 1

    def test_redeploying_the_same_bundle_is_200_unchanged(self, api, deployed):
        files = [(io.BytesIO(c), n) for n, c in process_bundle("expense_approval").items()]
        again = api("designer").post(
            "/process-definitions", data={"files": files}, content_type="multipart/form-data"
        )
        assert again.status_code == 200 and again.get_json()["unchanged"] == ["expense_approval"]


class TestInstances:
    def test_start_read_and_list_with_filters(self, api, deployed):
        li = api("li")
        instance = _start(li)
        detail = li.get(f"/process-instances/{instance['id']}").get_json()
        assert detail["variables"]["amount"] == 300 and detail["started_by"] == "li"
        assert [t["element_id"] for t in detail["active_tasks"]] == ["manager_approval"]
        assert [h["action"] for h in detail["history"]][:2] == ["instance_started", "task_created"]
        listed = li.get("/process-instances?state=running&business_key=E-1").get_json()
        assert [i["id"] for i in listed["items"]] == [instance["id"]]
        assert li.get("/process-instances?state=bogus").status_code == 422

    def test_other_employees_do_not_see_it_but_the_manager_does(self, api, deployed):
        instance = _start(api("li"))
        assert api("zhang").get(f"/process-instances/{instance['id']}").status_code == 404
        assert api("zhang").get("/process-instances").get_json()["total"] == 0
        assert api("wang").get(f"/process-instances/{instance['id']}").status_code == 200  # li's manager
        assert api("admin").get(f"/process-instances/{instance['id']}").status_code == 200

    def test_cancel_suspend_resume_and_sla(self, api, deployed):
        li = api("li")
        instance = _start(li)
        assert api("zhang").post(f"/process-instances/{instance['id']}/cancel", json={}).status_code == 404
        assert (
            li.post(f"/process-instances/{instance['id']}/suspend", json={}).get_json()["state"]
            == "suspended"
        )
        assert li.post(f"/process-instances/{instance['id']}/suspend", json={}).status_code == 409
        assert (
            li.post(f"/process-instances/{instance['id']}/resume", json={}).get_json()["state"] == "running"
        )
        paused = li.post(f"/process-instances/{instance['id']}/pause-sla", json={"reason": "customer"})
        assert paused.get_json()["sla_paused_at"] is not None
        li.post(f"/process-instances/{instance['id']}/resume-sla", json={})
        cancelled = api("wang").post(f"/process-instances/{instance['id']}/cancel", json={"reason": "dup"})
        assert cancelled.get_json()["state"] == "cancelled"

    def test_invalid_start_requests(self, api, deployed):
        li = api("li")
        assert li.post("/process-instances", json={}).status_code == 422
        assert li.post("/process-instances", json={"definition_key": "nope"}).status_code == 404
        assert (
            li.post(
                "/process-instances",
                json={"definition_key": "expense_approval", "variables": {"__class__": 1}},
            ).status_code
            == 422
        )
        assert (
            li.post("/process-instances", data="not json", content_type="application/json").status_code == 422
        )


class TestTasks:
    def test_group_task_flow_claim_complete_done(self, api, deployed):
        instance = _start(api("li"))
        wang = api("wang")
        group = wang.get("/tasks?scope=group").get_json()
        assert [t["element_id"] for t in group["items"]] == ["manager_approval"]
        task_id = group["items"][0]["id"]
        detail = wang.get(f"/tasks/{task_id}").get_json()
        assert detail["form"]["properties"]["decision"]["enum"] == ["approve", "reject"]
        assert wang.post(f"/tasks/{task_id}/claim").get_json()["assignee"] == "wang"
        assert wang.get("/tasks?scope=mine&count=true").get_json()["total"] == 1
        assert (
            wang.post(f"/tasks/{task_id}/complete", json={"data": {"decision": "approve"}}).status_code == 200
        )
        done = wang.get("/tasks?state=completed&scope=all").get_json()["items"]
        assert task_id in [t["id"] for t in done]
        finance = api("qian").get("/tasks?scope=group").get_json()["items"]
        assert [t["instance_id"] for t in finance] == [instance["id"]]

    def test_foreign_tasks_are_invisible_and_not_actionable(self, api, deployed):
        _start(api("li"))
        task = api("wang").get("/tasks?scope=group").get_json()["items"][0]
        zhang = api("zhang")
        assert zhang.get(f"/tasks/{task['id']}").status_code == 404
        assert (
            zhang.post(f"/tasks/{task['id']}/complete", json={"data": {"decision": "approve"}}).status_code
            == 404
        )
        assert all(t["id"] != task["id"] for t in zhang.get("/tasks").get_json()["items"])
        li = api("li")  # the starter sees the task of their instance but may not approve it
        assert li.get(f"/tasks/{task['id']}").status_code == 200
        assert (
            li.post(f"/tasks/{task['id']}/complete", json={"data": {"decision": "approve"}}).status_code
            == 403
        )
        assert api("wang").get("/tasks/does-not-exist").status_code == 404

    def test_invalid_form_data_is_422_with_field_errors(self, api, deployed):
        li = api("li")
        answer = li.post("/process-instances", json={"definition_key": "expense_approval"}).get_json()
        task = li.get(f"/tasks?scope=mine&instance_id={answer['id']}").get_json()["items"][0]
        bad = li.post(f"/tasks/{task['id']}/complete", json={"data": {"amount": "lots", "category": "yacht"}})
        assert bad.status_code == 422
        fields = {d["field"] for d in bad.get_json()["error"]["details"]}
        assert {"amount", "reason", "category"} <= fields
        assert li.get(f"/tasks/{task['id']}").get_json()["state"] == "ready"

    def test_concurrent_completions_one_wins_the_rest_409(self, api, deployed):
        _start(api("li"))
        wang = api("wang")
        task_id = wang.get("/tasks?scope=group").get_json()["items"][0]["id"]
        wang.post(f"/tasks/{task_id}/claim")
        first = wang.post(f"/tasks/{task_id}/complete", json={"data": {"decision": "approve"}})
        second = wang.post(f"/tasks/{task_id}/complete", json={"data": {"decision": "reject"}})
        assert (first.status_code, second.status_code) == (200, 409)
        assert second.get_json()["error"]["code"] == "conflict"

    def test_parallel_http_completions(self, app, api, deployed):
        _start(api("li"))
        wang = api("wang")
        task_id = wang.get("/tasks?scope=group").get_json()["items"][0]["id"]
        codes: list[int] = []
        barrier = threading.Barrier(6)

        def worker() -> None:
            client = app.test_client()
            barrier.wait()
            answer = client.post(
                f"/api/v1/tasks/{task_id}/complete",
                headers=wang.headers,
                json={"data": {"decision": "approve"}},
            )
            codes.append(answer.status_code)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [200] + [409] * 5

    def test_transfer_comments_and_unclaim(self, api, deployed):
        _start(api("li"))
        wang = api("wang")
        task_id = wang.get("/tasks?scope=group").get_json()["items"][0]["id"]
        wang.post(f"/tasks/{task_id}/claim")
        assert wang.post(f"/tasks/{task_id}/transfer", json={"to_user": "nobody"}).status_code == 404
        moved = wang.post(f"/tasks/{task_id}/transfer", json={"to_user": "qian", "comment": "请财务看看"})
        assert moved.get_json()["assignee"] == "qian"
        qian = api("qian")
        assert qian.get("/tasks?scope=mine").get_json()["items"][0]["id"] == task_id
        posted = qian.post(f"/tasks/{task_id}/comments", json={"body": "收到"})
        assert posted.status_code == 201 and posted.get_json()["author"] == "qian"
        assert [c["body"] for c in qian.get(f"/tasks/{task_id}/comments").get_json()["items"]] == ["收到"]
        assert qian.post(f"/tasks/{task_id}/comments", json={"body": ""}).status_code == 422
        assert qian.post(f"/tasks/{task_id}/unclaim").get_json()["assignee"] is None

    def test_list_filters_and_bad_parameters(self, api, deployed):
        _start(api("li"))
        wang = api("wang")
        assert wang.get("/tasks?sla=breached&count=true").get_json()["total"] == 0
        assert wang.get("/tasks?sla=on_track&count=true").get_json()["total"] == 1
        listed = wang.get("/tasks?sort=priority&definition_key=expense_approval&count=true").get_json()
        assert listed["total"] == 1 and listed["has_more"] is False
        assert "total" not in wang.get("/tasks").get_json()  # counting every match is asked for
        assert wang.get("/tasks?scope=everything").status_code == 422
        assert wang.get("/tasks?size=abc").status_code == 422


class TestMessages:
    def test_message_start_and_missing_receiver(self, api, app):
        engine = app.extensions["baton.engine"]
        from tests.message_builders import message_start

        engine.repository.deploy({"m.bpmn": message_start()}, deployed_by="designer")
        admin = api("admin")
        started = admin.post("/messages", json={"name": "ticket_raised", "variables": {"order": 7}})
        assert started.status_code == 201 and started.get_json()["started"] is True
        missing = admin.post("/messages", json={"name": "nobody_waits", "correlation_keys": {"id": 1}})
        assert missing.status_code == 404
        assert admin.post("/signals", json={"name": "nothing"}).get_json() == {"instance_ids": []}


def test_openapi_document_lists_every_endpoint(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    for path in (
        "/tasks",
        "/tasks/{id}/complete",
        "/process-instances",
        "/process-definitions",
        "/messages",
        "/auth/token",
        "/process-instances/{id}/cancel",
    ):
        assert path in document["paths"], path
    assert "Task" in document["components"]["schemas"]


def test_linear_process_without_form_accepts_identifier_keys(api, app):
    app.extensions["baton.engine"].repository.deploy({"a.bpmn": b.approval()}, deployed_by="designer")
    admin = api("admin")
    instance = admin.post("/process-instances", json={"definition_key": "approval3"}).get_json()
    task = admin.get(f"/tasks?scope=all&instance_id={instance['id']}").get_json()["items"][0]
    assert admin.post(f"/tasks/{task['id']}/complete", json={"data": {"bad key": 1}}).status_code == 422
    assert admin.post(f"/tasks/{task['id']}/complete", json={"data": {"ok": 1}}).status_code == 200


class TestAttachments:
    def test_uploaded_receipt_is_stored_and_visible_only_to_those_who_see_the_instance(
        self, api, app, deployed
    ):
        from engine.tasks import Upload

        engine = app.extensions["baton.engine"]
        li = api("li")
        instance = li.post("/process-instances", json={"definition_key": "expense_approval"}).get_json()
        task = li.get(f"/tasks?scope=mine&instance_id={instance['id']}").get_json()["items"][0]
        too_big = Upload("big.pdf", "application/pdf", b"x" * (5 * 1024 * 1024 + 1))
        with pytest.raises(Exception) as refused:
            engine.tasks.complete(
                task["id"],
                actor="li",
                data={"amount": "5", "reason": "taxi"},
                from_json=False,
                uploads={"receipt": too_big},
            )
        assert "receipt" in str(getattr(refused.value, "problems", ""))
        receipt = Upload("发票.pdf", "application/pdf", b"%PDF-1.4 receipt")
        engine.tasks.complete(
            task["id"],
            actor="li",
            data={"amount": "5", "reason": "taxi"},
            from_json=False,
            uploads={"receipt": receipt},
        )
        stored = engine.runtime.variables(instance["id"])["receipt"]
        assert stored["filename"] == "发票.pdf" and stored["size"] == len(receipt.content)
        url = f"/attachments/{stored['attachment_id']}"
        download = li.client.get(url, headers=li.headers)
        assert download.status_code == 200 and download.data == receipt.content
        assert api("wang").client.get(url, headers=api("wang").headers).status_code == 200  # li's manager
        zhang = api("zhang")
        assert zhang.client.get(url, headers=zhang.headers).status_code == 404
