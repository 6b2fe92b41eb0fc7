"""The managers' instance tracking and interventions (web/manage.py, web/api/instances.py,
engine/modification.py) over Flask's client and a real database (SQLite and PostgreSQL): the list and
its filters, who sees and changes what, each intervention audited, moving an instance to another
step (the inbox follows), and the engine side of a move (boundary timers, parallel branches, errors).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from engine.context import EngineConfig
from engine.errors import ConflictError, ValidationError
from engine.facade import Engine
from tests import bpmn_builders as b
from tests.conftest import process_bundle
from tests.integration.web_support import PASSWORD, Api
from tests.integration.web_support import Session as Browser


@pytest.fixture
def eng(app):
    return app.extensions["baton.engine"]


@pytest.fixture
def org(eng):
    """销售部 (manager wang; li and zhang raise claims), 财务部 (manager qian, also in group 'finance';
    zhao raises claims there), an administrator; wang and zhao approve (group 'managers')."""
    identity = eng.identity
    identity.create_department("销售部")
    identity.create_department("财务部")
    identity.create_user("admin", PASSWORD, role="admin")
    identity.create_user(
        "wang", PASSWORD, role="manager", department="销售部", groups=["managers"], create_missing=True
    )
    identity.create_user("li", PASSWORD, role="employee", department="销售部", display_name="李四")
    identity.create_user("zhang", PASSWORD, role="employee", department="销售部")
    identity.create_user(
        "qian", PASSWORD, role="manager", department="财务部", groups=["finance"], create_missing=True
    )
    identity.create_user("zhao", PASSWORD, role="employee", department="财务部", groups=["managers"])
    identity.set_department_manager("销售部", "wang")
    identity.set_department_manager("财务部", "qian")
    eng.repository.deploy(process_bundle("expense_approval"), deployed_by="admin")
    return identity


@pytest.fixture
def login(app, org):
    return lambda username: Browser(app, username)


@pytest.fixture
def api(client, org):
    return lambda username: Api(client, username)


def claim(eng, key: str, *, by: str = "li", fill: bool = True, amount: float = 300):
    """``by`` raises an expense claim; filled in, it waits for the managers' approval."""
    instance = eng.runtime.start(
        "expense_approval", business_key=key, started_by=by, variables={"initiator": by}
    )
    if fill:
        task = eng.tasks.query().instance(instance.id).open().first()
        eng.tasks.complete(
            task.id, actor=by, data={"amount": amount, "category": "meals", "reason": "dinner"}
        )
    return eng.runtime.get(instance.id)


def open_steps(eng, instance_id: str) -> list[str]:
    return [t.element_id for t in eng.tasks.query().instance(instance_id).open().list()]


def actions(eng, instance_id: str) -> list[str]:
    return [e.action for e in eng.history.for_instance(instance_id)]


class TestInstanceList:
    def test_filters_and_department_scope(self, eng, login, api):
        e1 = claim(eng, "E-1")
        e2 = claim(eng, "E-2", by="zhang", fill=False)
        f1 = claim(eng, "F-1", by="zhao")
        wang, admin = login("wang"), login("admin")

        def found(who: Browser, query: str = "") -> set[str]:
            return set(
                re.findall(r'href="/manage/instances/([0-9a-f-]{36})"', who.html(f"/manage/instances{query}"))
            )

        assert found(wang) == {e1.id, e2.id}  # only 销售部's instances
        assert found(admin) == {e1.id, e2.id, f1.id}
        assert found(wang, "?business_key=E-2") == {e2.id}
        assert found(wang, "?business_key=F-1") == set()  # out of scope, even by key

        finance = eng.identity.get_department("财务部").id
        assert found(admin, f"?department={finance}") == {f1.id}
        assert found(wang, f"?department={finance}") == set()  # not wang's department

        assert found(wang, "?process=expense_approval&step=submit") == {e2.id}
        assert found(wang, "?process=expense_approval&step=manager_approval") == {e1.id}
        assert found(wang, "?starter=li&state=running&version=1&process=expense_approval") == {e1.id}
        assert found(wang, "?process=expense_approval&version=2") == set()
        assert found(wang, "?state=completed") == set()
        today = datetime.now(
            ZoneInfo("Asia/Shanghai")
        ).date()  # dates are the company's (BABEL_DEFAULT_TIMEZONE)
        assert found(wang, f"?started_from={today}&started_to={today}") == {e1.id, e2.id}
        assert found(wang, f"?started_to={today - timedelta(days=2)}") == set()
        assert found(wang, f"?ended_from={today}") == set()
        assert "2026-12-31" in wang.html("/manage/instances?started_from=yesterday")  # says how to write it

        assert found(wang, "?sla=breached") == set()
        eng.context.config.clock = lambda: datetime.now(UTC) + timedelta(days=3)
        assert found(wang, "?sla=breached") == {e1.id}  # manager approval is due in 2 days, submit never
        assert found(wang, "?sort=started_asc") == {e1.id, e2.id} and found(wang, "?sort=ended") == set()
        eng.runtime.cancel(e2.id, actor="wang")
        assert found(wang, "?sort=ended") == {e2.id}  # the finished ones, most recently ended first

        listed = api("wang").get("/process-instances?scope=managed&size=1").get_json()
        assert len(listed["items"]) == 1 and listed["has_more"] is True and "total" not in listed
        by_key = api("wang").get("/process-instances?scope=managed&business_key=E-1&count=true").get_json()
        assert [i["id"] for i in by_key["items"]] == [e1.id] and by_key["total"] == 1
        assert api("qian").get("/process-instances?scope=managed&business_key=E-1").get_json()["items"] == []
        assert api("li").get("/process-instances?scope=managed").status_code == 403
        assert api("wang").get("/process-instances?scope=managed&sort=bogus").status_code == 422
        assert f1.id in {
            i["id"] for i in api("admin").get("/process-instances?scope=managed").get_json()["items"]
        }

    def test_pages_without_counting_and_saved_filters(self, eng, login):
        for n in range(27):
            claim(eng, f"P-{n:02}", fill=False)
        wang = login("wang")
        first = wang.html("/manage/instances")
        assert 'rel="next"' in first and "P-26" in first and "P-00" not in first
        second = wang.html("/manage/instances?page=2")
        assert "P-00" in second and 'rel="next"' not in second and 'rel="prev"' in second

        saved = wang.post(
            "/manage/instances/filters", {"name": "My claims", "query": "starter=li&state=running"}
        )
        assert saved.status_code == 302 and "starter=li" in saved.headers["Location"]
        assert "My claims" in wang.html("/manage/instances")
        assert [f.name for f in eng.identity.saved_filters("wang", kind="instances")] == ["My claims"]
        assert eng.identity.saved_filters("wang") == []  # the inbox keeps its own

    def test_only_managers_and_admins(self, eng, login):
        claim(eng, "E-1")
        assert login("li").get("/manage/instances").status_code == 403
        assert 'href="/manage/instances"' in login("wang").html("/inbox")
        assert 'href="/manage/instances"' not in login("li").html("/inbox")


class TestInstancePage:
    def test_diagram_timeline_variables_masked_comments_and_audit(self, eng, login, monkeypatch):
        import web.pages

        instance = claim(eng, "E-1")
        eng.tasks.add_comment(instance.id, "please hurry", author="li")
        monkeypatch.setattr(web.pages, "viewer_available", lambda: True)
        page = login("wang").html(f"/manage/instances/{instance.id}")
        assert 'data-current="manager_approval"' in page and "start" in re.search(
            r'data-done="([^"]*)"', page
        ).group(1)
        assert "Flow_1" in re.search(r'data-flows="([^"]*)"', page).group(1)
        assert 'class="step step-current"' in page and "manage.js" in page and "<script>" not in page
        assert "please hurry" in page and "dinner" in page  # comments, variables
        assert "started the process" in page or "发起了流程" in page  # the timeline
        diagram = login("wang").get(f"/manage/instances/{instance.id}/diagram.bpmn")
        assert diagram.status_code == 200 and b"manager_approval" in diagram.data

    def test_secrets_are_masked(self, eng, login, app):
        instance = eng.runtime.start(
            "expense_approval",
            business_key="S-1",
            started_by="li",
            variables={"initiator": "li", "api_token": "tok-123", "nested": {"password": "pw-456", "x": 1}},
        )
        page = login("admin").html(f"/manage/instances/{instance.id}")
        assert "tok-123" not in page and "pw-456" not in page and "••••••" in page
        app.config["SECRET_VARIABLE_NAMES"] = ["nothing"]
        assert "tok-123" in login("admin").html(f"/manage/instances/{instance.id}")


class TestWhoMayDoWhat:
    def test_another_departments_manager_gets_404_then_403_once_involved(self, eng, login, api):
        instance = claim(eng, "E-1")
        qian = login("qian")
        assert qian.get(f"/manage/instances/{instance.id}").status_code == 404
        assert qian.get(f"/manage/instances/{instance.id}/diagram.bpmn").status_code == 404
        for action in ("cancel", "suspend", "retry", "move", "migrate", "reassign"):
            assert (
                qian.post(f"/manage/instances/{instance.id}/{action}", {"target": "submit"}).status_code
                == 404
            )
        assert (
            api("qian").post(f"/process-instances/{instance.id}/move", {"element_id": "submit"}).status_code
            == 404
        )
        assert api("qian").get(f"/process-instances/{instance.id}/path").status_code == 404

        # wang approves: finance review is offered to group 'finance', qian's: she sees it, may not change it
        task = eng.tasks.query().instance(instance.id).open().first()
        eng.tasks.complete(task.id, actor="wang", data={"decision": "approve", "comment": "ok"})
        assert open_steps(eng, instance.id) == ["finance_review"]
        page = qian.html(f"/manage/instances/{instance.id}")
        assert 'id="move-form"' not in page and "/cancel" not in page
        assert qian.post(f"/manage/instances/{instance.id}/cancel").status_code == 403
        assert (
            api("qian").post(f"/process-instances/{instance.id}/move", {"element_id": "submit"}).status_code
            == 403
        )
        assert eng.runtime.get(instance.id).state == "running" and open_steps(eng, instance.id) == [
            "finance_review"
        ]
        assert "instance_cancelled" not in actions(eng, instance.id)

    def test_an_employee_and_a_batch_with_foreign_ids(self, eng, login, api):
        mine, theirs = claim(eng, "E-1"), claim(eng, "F-1", by="zhao", fill=False)  # zhao's own step
        eng.repository.deploy(process_bundle("expense_approval") | {"note.json": b"{}"}, deployed_by="admin")
        answer = api("wang").post(
            "/process-instances/migrations", {"to_version": 2, "instance_ids": [mine.id, theirs.id]}
        )
        items = {i["instance_id"]: i for i in answer.get_json()["items"]}
        assert items[mine.id]["migrated"] is True and items[theirs.id] == {
            "instance_id": theirs.id,
            "migrated": False,
            "problems": ["not found"],
        }
        assert eng.runtime.get(theirs.id).definition_version == 1
        assert api("li").post(f"/process-instances/{mine.id}/retry").status_code == 403  # sees it, may not


class TestInterventions:
    def test_each_is_audited(self, eng, login, api):
        instance = claim(eng, "E-1")
        wang = login("wang")
        url = f"/manage/instances/{instance.id}"
        assert wang.post(f"{url}/suspend").status_code == 302
        assert eng.runtime.get(instance.id).state == "suspended"
        assert wang.post(f"{url}/resume").status_code == 302
        task = eng.tasks.query().instance(instance.id).open().first()
        assert (
            wang.post(
                f"{url}/reassign", {"task": task.id, "to_user": "zhang", "comment": "cover"}
            ).status_code
            == 302
        )
        assert eng.tasks.get(task.id).assignee == "zhang"
        assert wang.post(f"{url}/move", {"target": "submit", "reason": "missing receipt"}).status_code == 302
        assert open_steps(eng, instance.id) == ["submit"]
        assert wang.post(f"{url}/cancel", {"reason": "duplicate"}).status_code == 302
        assert eng.runtime.get(instance.id).state == "cancelled"
        history = eng.history.for_instance(instance.id)
        by_action = {e.action: e for e in history}
        for action in (
            "instance_suspended",
            "instance_resumed",
            "task_transferred",
            "instance_moved",
            "instance_cancelled",
        ):
            assert by_action[action].actor == "wang", action
        assert by_action["instance_moved"].details == {
            "before": ["manager_approval"],
            "after": ["submit"],
            "reason": "missing receipt",
        }
        assert by_action["task_transferred"].details["after"] == "zhang"
        audit = wang.html(url)
        assert "missing receipt" in audit and "duplicate" in audit
        assert "moved the process to another step" in audit or "将流程移到了另一步" in audit

    def test_retry_with_corrected_variables_over_the_api(self, eng, api, login):
        eng.repository.deploy(
            {"fragile.bpmn": b.linear("fragile", ["script:divide:x = 10 / divisor", "user:after"])},
            deployed_by="admin",
        )
        instance = eng.runtime.start("fragile", started_by="li", variables={"divisor": 0})
        assert eng.runtime.get(instance.id).state == "error"
        page = login("wang").html(f"/manage/instances/{instance.id}")
        assert 'class="step step-error"' in page  # marked on the diagram too (data-error), with the viewer
        assert f"/manage/instances/{instance.id}/retry" in page and "ZeroDivisionError" in page
        answer = api("wang").post(f"/process-instances/{instance.id}/retry", {"variables": {"divisor": 2}})
        assert answer.status_code == 200 and answer.get_json()["state"] == "running"
        assert open_steps(eng, instance.id) == ["after"]
        retried = [e for e in eng.history.for_instance(instance.id) if e.action == "instance_retried"]
        assert retried[0].actor == "wang" and retried[0].details == {"variables": {"divisor": 2}}

    def test_move_and_migrate_over_the_api(self, eng, api):
        instance = claim(eng, "E-1")
        wang = api("wang")
        targets = wang.get(f"/process-instances/{instance.id}/move-targets").get_json()["items"]
        assert {"submit", "manager_approval", "finance_review", "paid_end"} <= {
            t["element_id"] for t in targets
        }
        assert not {"start", "approved_gateway"} & {t["element_id"] for t in targets}
        assert (
            wang.post(
                f"/process-instances/{instance.id}/move", {"element_id": "approved_gateway"}
            ).status_code
            == 422
        )
        moved = wang.post(
            f"/process-instances/{instance.id}/move", {"element_id": "finance_review", "reason": "ok"}
        )
        assert moved.status_code == 200 and open_steps(eng, instance.id) == ["finance_review"]
        path = wang.get(f"/process-instances/{instance.id}/path").get_json()
        assert path["active"] == ["finance_review"] and "submit" in path["completed"]
        assert ["start", "submit"] in path["taken"]
        done = wang.post(f"/process-instances/{instance.id}/move", {"element_id": "paid_end"}).get_json()
        assert done["state"] == "completed"
        assert (
            wang.post(f"/process-instances/{instance.id}/move", {"element_id": "submit"}).status_code == 409
        )


class TestMoveChangesTheInbox:
    def test_the_task_leaves_its_holder_and_the_new_step_appears(self, eng, login, api):
        instance = claim(eng, "E-1", fill=False)  # waits at li's "fill in the claim"
        li, zhao, wang = login("li"), login("zhao"), login("wang")
        submit = eng.tasks.query().instance(instance.id).open().first()
        assert f"/tasks/{submit.id}" in li.html("/inbox")

        assert (
            wang.post(f"/manage/instances/{instance.id}/move", {"target": "manager_approval"}).status_code
            == 302
        )
        assert eng.tasks.get(submit.id).state == "cancelled"
        assert f"/tasks/{submit.id}" not in li.html("/inbox")
        approval = eng.tasks.query().instance(instance.id).open().first()
        assert approval.element_id == "manager_approval" and approval.candidate_groups == ("managers",)
        assert f"/tasks/{approval.id}" in zhao.html("/inbox")
        assert approval.due_at is not None  # the new step's SLA starts at the move

        # and back: li has the claim to fill in again, with the data kept
        api("wang").post(f"/process-instances/{instance.id}/move", {"element_id": "submit"})
        again = eng.tasks.query().instance(instance.id).open().first()
        assert again.element_id == "submit" and again.assignee == "li" and again.id != submit.id
        assert f"/tasks/{again.id}" in li.html("/inbox") and f"/tasks/{approval.id}" not in zhao.html(
            "/inbox"
        )
        assert actions(eng, instance.id).count("task_cancelled") == 2


class TestMoveEngine:
    """The move itself, on shapes the expense claim does not have."""

    def test_a_boundary_timer_goes_with_its_task_and_comes_back_with_it(self, engine):
        engine.repository.deploy({"t.bpmn": b.boundary_timer("t", '"PT1H"')}, deployed_by="x")
        instance = engine.runtime.start("t", started_by="li")
        assert engine.runtime.get(instance.id).next_timer_due is not None
        engine.runtime.move(instance.id, ["escalated"], actor="boss")
        assert engine.runtime.get(instance.id).next_timer_due is None and open_steps(engine, instance.id) == [
            "escalated"
        ]
        engine.runtime.move(instance.id, ["work"], actor="boss")
        assert engine.runtime.get(instance.id).next_timer_due is not None and open_steps(
            engine, instance.id
        ) == ["work"]
        task = engine.tasks.query().instance(instance.id).open().first()
        engine.tasks.complete(task.id, actor="li")
        assert engine.runtime.get(instance.id).state == "completed"

    def test_parallel_branches_move_together(self, engine):
        engine.repository.deploy({"p.bpmn": b.parallel_users()}, deployed_by="x")
        instance = engine.runtime.start("parallel", started_by="li")
        left = next(
            t for t in engine.tasks.query().instance(instance.id).open().list() if t.element_id == "left"
        )
        engine.tasks.complete(left.id, actor="li")
        engine.runtime.move(instance.id, ["left", "right"], actor="boss")
        assert sorted(open_steps(engine, instance.id)) == ["left", "right"]
        for task in engine.tasks.query().instance(instance.id).open().list():
            engine.tasks.complete(task.id, actor="li")
        assert engine.runtime.get(instance.id).state == "completed"

    def test_inside_a_sub_process_the_move_stays_inside_it(self, engine, db_url):
        engine.repository.deploy({"n.bpmn": b.embedded_subprocess()}, deployed_by="x")
        instance = engine.runtime.start("nested", started_by="li")
        top_level = [t.element_id for t in engine.runtime.move_targets(instance.id)]
        assert "a" not in top_level and {"outer", "inner", "after"} <= set(top_level)
        engine.tasks.complete(engine.tasks.query().instance(instance.id).open().first().id, actor="li")
        assert open_steps(engine, instance.id) == ["a"]
        assert {"a", "b"} <= {t.element_id for t in engine.runtime.move_targets(instance.id)}

        engine.runtime.move(instance.id, ["b"], actor="boss")  # forward, within the sub-process
        assert open_steps(engine, instance.id) == ["b"]
        engine.runtime.move(instance.id, ["a"], actor="boss")  # and back
        assert open_steps(engine, instance.id) == ["a"]
        with pytest.raises(ValidationError):
            engine.runtime.move(instance.id, ["a", "after"], actor="boss")  # two processes at once
        # read back by another engine with cold caches: the moved tree was stored as it is
        other = Engine.from_url(db_url, EngineConfig(live_cache_size=0))
        try:
            went = []
            while (task := other.tasks.query().instance(instance.id).open().first()) is not None:
                went.append(task.element_id)
                other.tasks.complete(task.id, actor="li")
        finally:
            other.close()
        assert went == ["a", "b", "after"] and engine.runtime.get(instance.id).state == "completed"

    def test_out_of_a_sub_process_is_a_top_level_move(self, engine):
        engine.repository.deploy({"n.bpmn": b.embedded_subprocess()}, deployed_by="x")
        instance = engine.runtime.start("nested", started_by="li")
        engine.tasks.complete(engine.tasks.query().instance(instance.id).open().first().id, actor="li")
        engine.runtime.move(instance.id, ["after"], actor="boss")
        assert open_steps(engine, instance.id) == ["after"]
        assert "a" not in {t.element_id for t in engine.runtime.move_targets(instance.id)}
        engine.tasks.complete(engine.tasks.query().instance(instance.id).open().first().id, actor="li")
        assert engine.runtime.get(instance.id).state == "completed"

    def test_a_failed_instance_moves_past_its_error_and_bad_targets_change_nothing(self, engine):
        engine.repository.deploy(
            {"f.bpmn": b.linear("f", ["script:boom:x = 1 / 0", "user:after"])}, deployed_by="x"
        )
        instance = engine.runtime.start("f", started_by="li")
        assert engine.runtime.get(instance.id).state == "error"
        with pytest.raises(ValidationError):
            engine.runtime.move(instance.id, ["nope"], actor="boss")
        assert engine.runtime.get(instance.id).state == "error"
        moved = engine.runtime.move(instance.id, ["after"], actor="boss", reason="skip the broken script")
        assert moved.state == "running" and moved.error_element is None
        assert engine.runtime.path(instance.id).errored == ()
        engine.runtime.suspend(instance.id, actor="boss")
        with pytest.raises(ConflictError):
            engine.runtime.move(instance.id, ["boom"], actor="boss")
