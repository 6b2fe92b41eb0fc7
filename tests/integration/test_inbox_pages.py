"""The employee's pages over Flask's client and a real database (SQLite and PostgreSQL): to-do, done,
started by me, the task page (form, summary, timeline, diagram), bulk approval, claim / give back /
transfer / comment, saved filters, and the language each user chose."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

import engine.tasks
import web.inbox
import web.pages
from engine.errors import NotFoundError
from tests import bpmn_builders as b
from tests.conftest import ROOT, process_bundle
from tests.integration.web_support import PASSWORD, Session

REVIEW_FORM = b"""{
  "title": "Review", "type": "object", "required": ["decision", "reason"],
  "properties": {
    "decision": {"type": "string", "title": "Decision", "enum": ["approve", "reject"]},
    "reason": {"type": "string", "title": "Reason", "minLength": 2}
  }
}"""
REVIEW_BPMN = b"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs_review" targetNamespace="http://baton.test">
  <bpmn:process id="review" name="Review" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:userTask id="check" name="Check it" camunda:formKey="review.json" camunda:candidateGroups="managers"
        camunda:priority="80" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="check" />
    <bpmn:sequenceFlow id="f2" sourceRef="check" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>"""


@pytest.fixture
def eng(app):
    return app.extensions["baton.engine"]


@pytest.fixture
def org(eng):
    """li and zhang (employees, group 'employee', Chinese), wang (manager, group 'managers', English),
    zhao (employee, also in 'managers'), qian (manager in 'finance')."""
    identity = eng.identity
    identity.create_user(
        "li", PASSWORD, role="employee", display_name="李四", groups=["employee"], create_missing=True
    )
    identity.create_user("zhang", PASSWORD, role="employee", groups=["employee"])
    identity.create_user(
        "wang",
        PASSWORD,
        role="manager",
        display_name="Wang",
        groups=["managers"],
        locale="en",
        create_missing=True,
    )
    identity.create_user("zhao", PASSWORD, role="employee", groups=["managers"])
    identity.create_user("qian", PASSWORD, role="manager", groups=["finance"], create_missing=True)
    eng.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
    return identity


@pytest.fixture
def login(app, org):
    return lambda username=None: Session(app, username)


def start_claim(eng, *, amount: float | None = 300, key: str = "EXP-1", by: str = "li"):
    """li raises an expense claim; with ``amount`` she also fills it in (it then waits for managers)."""
    instance = eng.runtime.start(
        "expense_approval", business_key=key, started_by=by, variables={"initiator": by}
    )
    task = eng.tasks.query().instance(instance.id).open().first()
    if amount is not None:
        eng.tasks.complete(task.id, actor=by, data={"amount": amount, "reason": "client dinner"})
        task = eng.tasks.query().instance(instance.id).open().first()
    return instance, task


def test_walk_invalid_form_keeps_input_then_valid_lands_under_done(eng, login):
    instance, task = start_claim(eng, amount=None)
    li = login("li")
    inbox = li.html("/inbox")
    assert "待办" in inbox and "填写报销单 Fill in the claim" in inbox and "EXP-1" in inbox
    assert f'href="/tasks/{task.id}"' in inbox

    page = li.html(f"/tasks/{task.id}")
    assert 'name="amount"' in page and "处理记录" in page and "流程进度" in page

    refused = li.post(
        f"/tasks/{task.id}/complete", {"amount": "-5", "category": "meals", "reason": "午餐和客户"}
    )
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert 'id="f-amount-error"' in html and 'aria-invalid="true"' in html  # the error is next to its field
    assert 'value="-5"' in html and "午餐和客户" in html  # what was typed is kept
    assert re.search(r'<option value="meals"\s+selected>', html)
    assert eng.tasks.get(task.id).state == "ready"

    done = li.post(
        f"/tasks/{task.id}/complete", {"amount": "300", "category": "meals", "reason": "client dinner"}
    )
    assert done.status_code == 302 and done.headers["Location"] == "/inbox"
    assert "已提交" in li.html(done.headers["Location"])
    listed = li.html("/inbox/done")
    assert f'href="/tasks/{task.id}"' in listed and "EXP-1" in listed
    assert f'href="/tasks/{task.id}"' not in li.html("/inbox")

    readonly = li.html(f"/tasks/{task.id}")  # the done task shows what was submitted, read-only
    assert (
        "baton-form-readonly" in readonly and "client dinner" in readonly and 'name="amount"' not in readonly
    )

    started = li.html("/inbox/started")
    assert "EXP-1" in started and "主管审批 Manager approval" in started and "进行中" in started


def test_another_employee_gets_404_on_someone_elses_task(eng, login):
    _instance, task = start_claim(eng, amount=None)  # assigned to li
    zhang = login("zhang")
    for path in (f"/tasks/{task.id}", f"/tasks/{task.id}/diagram.bpmn"):
        assert zhang.get(path).status_code == 404
    assert zhang.post(f"/tasks/{task.id}/complete", {"amount": "1", "reason": "xx"}).status_code == 404
    assert zhang.post(f"/tasks/{task.id}/comment", {"body": "hello"}).status_code == 404
    assert zhang.post(f"/tasks/{task.id}/transfer", {"to_user": "zhang"}).status_code == 404
    assert zhang.post("/inbox/bulk", {"decision": "approve", "task": task.id}).status_code == 200
    assert eng.tasks.get(task.id).state == "ready"
    assert login().get(f"/tasks/{task.id}").status_code == 302  # not logged in: to the login page


def test_task_page_summary_timeline_steps_and_diagram(eng, login, monkeypatch):
    instance, task = start_claim(eng, amount=1234.5)
    wang = login("wang")
    page = wang.html(f"/tasks/{task.id}")
    # summary: starter (display name), business key, state, the data as entered
    assert "李四" in page and "EXP-1" in page and "In progress" in page
    assert "金额 Amount (CNY)" in page and "client dinner" in page
    # timeline: who did what, translated
    assert "started the process" in page and "completed" in page and "Step opened" in page
    # the steps, current one marked
    current = re.search(
        r'<li class="step step-this[^"]*"[^>]*aria-current="step">\s*<span class="step-name">([^<]+)', page
    )
    assert current and current.group(1) == "主管审批 Manager approval"
    assert 'class="step step-done step-task"' in page
    # the diagram: the BPMN of the instance's version, served with a sandboxing CSP
    xml = wang.get(f"/tasks/{task.id}/diagram.bpmn")
    assert xml.status_code == 200 and xml.mimetype == "application/xml" and b"manager_approval" in xml.data
    assert "sandbox" in xml.headers["Content-Security-Policy"]
    monkeypatch.setattr(web.pages, "viewer_available", lambda: True)
    with_viewer = wang.html(f"/tasks/{task.id}")
    assert 'id="diagram"' in with_viewer and 'data-current="manager_approval"' in with_viewer
    assert "diagram.js" in with_viewer and "<script>" not in with_viewer  # no inline scripts
    monkeypatch.setattr(web.pages, "viewer_available", lambda: False)
    assert 'id="diagram"' not in wang.html(f"/tasks/{task.id}")


def test_claim_give_back_and_a_directly_assigned_task_cannot_be_given_back(eng, login):
    _instance, task = start_claim(eng)
    wang, zhao = login("wang"), login("zhao")
    assert f"/tasks/{task.id}" in zhao.html("/inbox")
    assert wang.post(f"/tasks/{task.id}/claim").status_code == 302
    assert eng.tasks.get(task.id).assignee == "wang"
    assert f"/tasks/{task.id}" in wang.html("/inbox?scope=mine")
    assert f"/tasks/{task.id}" not in zhao.html("/inbox")  # taken
    assert zhao.post(f"/tasks/{task.id}/claim").status_code == 404
    page = wang.html(f"/tasks/{task.id}")
    assert "Give back" in page and "claimed" in page
    assert wang.post(f"/tasks/{task.id}/unclaim").status_code == 302
    assert eng.tasks.get(task.id).assignee is None
    assert f"/tasks/{task.id}" in zhao.html("/inbox?scope=group")

    _other, own = start_claim(eng, amount=None, key="EXP-2")  # assigned to li directly: no pool to return to
    li = login("li")
    assert "退回任务池" not in li.html(f"/tasks/{own.id}")
    refused = li.post(f"/tasks/{own.id}/unclaim")
    assert refused.status_code == 403 and "转交给同事" in refused.get_data(as_text=True)
    assert eng.tasks.get(own.id).assignee == "li"


def test_transfer_and_comment(eng, login):
    _instance, task = start_claim(eng)
    wang = login("wang")
    unknown = wang.post(f"/tasks/{task.id}/transfer", {"to_user": "nobody", "comment": "pls"})
    assert unknown.status_code == 422
    html = unknown.get_data(as_text=True)
    assert "Choose an active colleague" in html and 'value="nobody"' in html
    assert wang.post(f"/tasks/{task.id}/transfer", {"to_user": "wang"}).status_code == 422  # not to yourself

    moved = wang.post(f"/tasks/{task.id}/transfer", {"to_user": "qian", "comment": "财务先看"})
    assert moved.status_code == 302
    assert "was transferred to qian" in wang.html(moved.headers["Location"])
    assert eng.tasks.get(task.id).assignee == "qian"
    qian = login("qian")
    assert f"/tasks/{task.id}" in qian.html("/inbox")
    page = qian.html(f"/tasks/{task.id}")
    assert "转交" in page and "给 qian" in page and "财务先看" in page

    assert qian.post(f"/tasks/{task.id}/comment", {"body": "   "}).status_code == 422
    said = qian.post(f"/tasks/{task.id}/comment", {"body": "发票已收到"})
    assert said.status_code == 302 and said.headers["Location"].endswith("#comments")
    assert "发票已收到" in qian.html(f"/tasks/{task.id}")
    li = login("li")  # the starter follows her claim and may comment, but not act
    page = li.html(f"/tasks/{task.id}")
    assert "发票已收到" in page and "此任务未指派给您" in page and 'name="decision"' not in page
    assert li.post(f"/tasks/{task.id}/comment", {"body": "谢谢"}).status_code == 302
    assert li.post(f"/tasks/{task.id}/claim").status_code == 403


def test_bulk_approve_only_plain_decisions_each_reported(eng, login):
    eng.repository.deploy({"review.bpmn": REVIEW_BPMN, "review.json": REVIEW_FORM}, deployed_by="designer")
    claims = [start_claim(eng, key=f"EXP-{n}")[1] for n in range(3)]
    review = eng.runtime.start("review", started_by="li")
    other = eng.tasks.query().instance(review.id).open().first()
    _own, foreign = start_claim(eng, amount=None, key="EXP-9")  # li's, not visible to wang

    wang = login("wang")
    inbox = wang.html("/inbox")
    for task in claims:
        assert f'name="task" value="{task.id}"' in inbox
    assert f'name="task" value="{other.id}"' not in inbox  # two required fields: open it instead
    assert "Approve selected" in inbox

    eng.tasks.complete(claims[2].id, actor="zhao", data={"decision": "reject"})  # someone was faster
    answer = wang.post(
        "/inbox/bulk",
        {
            "decision": "approve",
            "task": [claims[0].id, claims[1].id, claims[2].id, other.id, foreign.id, "nope"],
        },
    )
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "Approved: 2. Not approved: 4." in html
    assert html.count("outcome-ok") == 2 and html.count("outcome-failed") == 4
    assert "cannot be approved in bulk" in html and "Someone handled it first" in html
    for task in claims[:2]:
        done = eng.tasks.get(task.id)
        assert done.state == "completed" and done.completed_by == "wang"
        assert eng.runtime.variables(task.instance_id)["decision"] == "approve"
        assert eng.tasks.query().instance(task.instance_id).open().first().element_id == "finance_review"
    assert eng.tasks.get(other.id).state == "ready" and eng.tasks.get(foreign.id).state == "ready"
    assert wang.post("/inbox/bulk", {"decision": "reject", "task": other.id}).status_code == 422


def test_filters_sort_and_paging(eng, login, monkeypatch):
    eng.repository.deploy({"review.bpmn": REVIEW_BPMN, "review.json": REVIEW_FORM}, deployed_by="designer")
    _i, claim = start_claim(eng)
    _j, zhangs = start_claim(eng, key="EXP-Z", by="zhang")
    review = eng.runtime.start("review", started_by="li")
    urgent = eng.tasks.query().instance(review.id).open().first()
    wang = login("wang")

    def listed(query: str) -> list[str]:
        return re.findall(r'<a class="title" href="/tasks/([^"]+)"', wang.html(f"/inbox?{query}"))

    assert set(listed("")) == {claim.id, zhangs.id, urgent.id}
    assert listed("process=review") == [urgent.id]
    assert set(listed("process=expense_approval")) == {claim.id, zhangs.id}
    assert listed("starter=zhang") == [zhangs.id]
    assert listed("min_priority=60") == [urgent.id]
    assert listed("sort=priority")[0] == urgent.id
    assert listed("sort=due")[-1] == urgent.id  # no due date: last
    assert set(listed("sla=on_track")) == {claim.id, zhangs.id, urgent.id}
    assert listed("sla=breached") == []
    bad = wang.html("/inbox?min_priority=high&sort=sideways")
    assert "Minimum priority must be a whole number." in bad and bad.count('class="title"') == 3

    huge = "9" * 40
    assert wang.get(f"/inbox?min_priority={huge}&page={huge}").status_code == 200  # no database overflow

    monkeypatch.setattr(web.inbox, "PAGE_SIZE", 2)
    first, second = listed("sort=created"), listed("sort=created&page=2")
    assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
    page = wang.html("/inbox?sort=created")
    assert "Page 1 of 2" in page and "sort=created&amp;page=2" in page

    # past the badge's cap the inbox stops counting: "2+", and pages go on by "Next" alone
    monkeypatch.setattr(web.inbox, "COUNT_CAP", 2)
    page = wang.html("/inbox?sort=created")
    assert '<span class="badge">2+</span>' in page and "Page 1</span>" in page and 'rel="next"' in page
    last = wang.html("/inbox?sort=created&page=2")
    assert "Page 2</span>" in last and 'rel="next"' not in last and 'rel="prev"' in last
    visible = eng.tasks.query().visible_to("wang", ("managers",)).open()
    assert [visible.count(cap=n) for n in (None, 1, 2, 3, 10)] == [3, 2, 3, 3, 3]

    # "offered to my groups" as an id list (few open offers) and as EXISTS (many): same answers
    def pool() -> list[str]:
        query = eng.tasks.query().group_pool("wang", ("managers",)).open().order_by_created()
        return [t.id for t in query.list()]

    few = pool()
    monkeypatch.setattr(engine.tasks, "FEW_OFFERS", 0)
    assert pool() == few and len(few) == 3
    assert {i.id for i in eng.runtime.query().involving("wang", ("managers",)).list()} == {
        t.instance_id for t in (claim, zhangs, urgent)
    }


@dataclass(frozen=True)
class Saved:
    id: int
    username: str
    name: str
    query: str
    created_at: datetime


class FakeSavedFilters:
    """Stands in for the identity service's saved filters until it has them."""

    def __init__(self) -> None:
        self.rows: list[Saved] = []

    def saved_filters(self, username: str) -> list[Saved]:
        return sorted((r for r in self.rows if r.username == username), key=lambda r: r.name)

    def save_filter(self, username: str, name: str, query: str) -> Saved:
        self.rows = [r for r in self.rows if not (r.username == username and r.name == name)]
        row = Saved(len(self.rows) + 1, username, name, query, datetime.now(UTC))
        self.rows.append(row)
        return row

    def delete_filter(self, username: str, filter_id: int) -> None:
        if not any(r.username == username and r.id == filter_id for r in self.rows):
            raise NotFoundError(f"saved filter {filter_id} not found")
        self.rows = [r for r in self.rows if not (r.username == username and r.id == filter_id)]


def test_saved_filters_hidden_without_the_service_and_kept_with_it(eng, login, monkeypatch):
    wang = login("wang")
    store = eng.identity
    if not hasattr(store, "saved_filters"):  # until the identity service keeps them: hidden, then a stand-in
        assert "Save this filter as" not in wang.html("/inbox")
        assert wang.post("/inbox/filters", {"name": "x", "query": ""}).status_code == 404
        store = FakeSavedFilters()
        for name in ("saved_filters", "save_filter", "delete_filter"):
            monkeypatch.setattr(eng.identity, name, getattr(store, name), raising=False)
    assert "Save this filter as" in wang.html("/inbox?sla=breached&sort=priority")
    saved = wang.post(
        "/inbox/filters", {"name": "超时", "query": "sort=priority&sla=breached&bogus=1&page=3"}
    )
    assert saved.status_code == 302 and saved.headers["Location"] == "/inbox?sla=breached&sort=priority"
    kept = store.saved_filters("wang")
    assert [(f.name, f.query) for f in kept] == [("超时", "sla=breached&sort=priority")]
    assert store.saved_filters("li") == []
    assert "Filter saved: 超时." in wang.html(saved.headers["Location"])
    page = wang.html("/inbox")
    assert 'href="/inbox?sla=breached&amp;sort=priority">超时</a>' in page
    refused = wang.post("/inbox/filters", {"name": " ", "query": ""})
    assert refused.status_code == 302 and "Could not save the filter" in wang.html(
        refused.headers["Location"]
    )
    assert login("li").post(f"/inbox/filters/{kept[0].id}/delete").status_code == 404  # not hers
    assert wang.post(f"/inbox/filters/{kept[0].id}/delete").status_code == 302
    assert store.saved_filters("wang") == []


def test_language_is_chosen_per_user(eng, login):
    li, wang = login("li"), login("wang")
    chinese, english = li.html("/inbox"), wang.html("/inbox")
    assert "待办" in chinese and "已办" in chinese and "我发起的" in chinese and 'lang="zh-CN"' in chinese
    assert (
        "To do" in english
        and "Started by me" in english
        and "待办" not in english
        and '<html lang="en">' in english
    )

    switched = li.post("/locale", {"locale": "en", "next": "/inbox/done"})
    assert switched.status_code == 302 and switched.headers["Location"] == "/inbox/done"
    assert eng.identity.get_user("li").locale == "en"  # kept in her profile: follows her to other devices
    assert "No completed tasks yet." in li.html("/inbox/done")
    assert "To do" in login("li").html("/inbox")
    assert li.post("/locale", {"locale": "fr"}).status_code == 400
    assert (
        li.post("/locale", {"locale": "zh_CN", "next": "https://evil.example/"}).headers["Location"]
        == "/inbox"
    )

    anonymous = login()
    assert "登录" in anonymous.html("/login")  # Chinese first
    assert anonymous.post("/locale", {"locale": "en", "next": "/login"}).status_code == 302
    assert "Log in" in anonymous.html("/login")  # kept in the session
    assert "Log in" in login().get("/login", headers={"Accept-Language": "en-US,en"}).get_data(as_text=True)


def test_every_string_has_a_chinese_translation():
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    found = {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(str(ROOT / "web"), method_map)
    }
    po_path = Path(ROOT, "web", "translations", "zh_Hans_CN", "LC_MESSAGES", "messages.po")
    with po_path.open("rb") as f:
        catalog = read_po(f)
    translated = {}  # a plural entry is keyed by its singular, translated when every form is
    for m in catalog:
        if m.id:
            key = m.id[0] if isinstance(m.id, tuple) else m.id
            translated[key] = all(m.string) if isinstance(m.string, tuple) else m.string
    missing = sorted(m for m in found if not translated.get(m))
    assert not missing, f"run pybabel extract/update and translate: {missing}"
    fuzzy = sorted(m.id for m in catalog if m.id and m.fuzzy)
    assert not fuzzy, f"fuzzy translations to check: {fuzzy}"


class TestAdminPages:
    def test_admin_creates_and_freezes_users_employees_may_not(self, app):
        engine = app.extensions["baton.engine"]
        engine.identity.create_user("root", "password-1", role="admin")
        engine.identity.create_user("emp", "password-1", role="employee")
        client = app.test_client()
        _admin_login(client, "emp")
        assert client.get("/admin/people").status_code == 403
        client = app.test_client()
        token = _admin_login(client, "root")
        page = client.get("/admin/people")
        assert page.status_code == 200 and "emp" in page.get_data(as_text=True)
        created = client.post(
            "/admin/users",
            data={"username": "newbie", "password": "password-9", "role": "employee", "csrf_token": token},
        )
        assert created.status_code == 302 and engine.identity.get_user("newbie").role == "employee"
        again = client.post(
            "/admin/users",
            data={"username": "newbie", "password": "password-9", "role": "employee", "csrf_token": token},
        )
        assert again.status_code == 409
        frozen = client.post("/admin/users/newbie/freeze", data={"transfer_to": "emp", "csrf_token": token})
        assert frozen.status_code == 302 and engine.identity.get_user("newbie").state == "frozen"
        client.post("/admin/departments", data={"name": "研发部", "manager": "root", "csrf_token": token})
        assert engine.identity.department_head("研发部") == "root"


def _admin_login(client, username: str) -> str:
    import re

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/login", data={"username": username, "password": "password-1", "csrf_token": token})
    page = client.get("/inbox").get_data(as_text=True)  # logging in starts a new session: a new token
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_new_request_starts_a_process_and_opens_the_first_step(eng, login):
    eng.repository.deploy(
        {"daily.bpmn": b.timer_start("daily", '"R/2026-01-01T09:00:00+08:00/P1D"')}, deployed_by="designer"
    )
    li = login("li")
    page = li.html("/start")
    assert "expense_approval" in page and "daily" not in page  # a timer starts that one, not people
    started = li.post("/start/expense_approval")
    assert started.status_code == 302 and "/tasks/" in started.headers["Location"]
    task = eng.tasks.get(started.headers["Location"].rsplit("/", 1)[-1])
    instance = eng.runtime.get(task.instance_id)
    assert instance.started_by == "li" and task.assignee == "li"  # the claim form, hers to fill in
    assert eng.runtime.variables(instance.id)["initiator"] == "li"
    assert li.post("/start/daily").status_code == 404
    assert li.post("/start/nope").status_code == 404
