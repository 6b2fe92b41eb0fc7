"""processes/ticket end to end over the REST API and the vendor's signed link, as the demo company's
people, on SQLite and PostgreSQL: SLA by type and priority in working hours, the reminder at 80 %, the
team lead taking over on breach, the clock standing still while the customer or a vendor has the
ticket, and closing with a satisfaction rating (docs/processes/ticket.md)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from samples.company import email_of

if TYPE_CHECKING:
    from tests.integration.process_support import Callers

pytest_plugins = ["tests.integration.process_support"]  # its fixtures: callers, smtp, the databases

CUSTOMER = {
    "customer_name": "上海明远科技",
    "customer_phone": "021-5555 0101",
    "customer_email": "li.si@example.org",
}


def raise_ticket(
    callers: Callers, by: str = "zhouxin", business_key: str = "T-1", agent: str | None = "zhouxin", **fields
) -> str:
    """``by`` registers a customer's ticket (a complaint of normal priority unless told otherwise)."""
    caller = callers[by]
    instance = caller.start("ticket", business_key)["id"]
    form = {
        **CUSTOMER,
        "ticket_type": "complaint",
        "priority": "normal",
        "subject": "打印机卡纸 Printer jams",
        "description": "三楼打印机每天卡纸 The 3rd-floor printer jams daily",
        **({"agent": agent} if agent else {}),
        **fields,
    }
    caller.complete(
        instance, "register", **{name: value for name, value in form.items() if value is not None}
    )
    return instance


def beijing(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of the test week (Monday 23 November 2026 is day 23) in Beijing time."""
    return datetime.fromisoformat(f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00+08:00")


def due_of(task: dict) -> datetime:
    return datetime.fromisoformat(task["due_at"])


def crm_ticket(callers: Callers, instance_id: str) -> dict:
    ticket_id = callers.instance(instance_id)["variables"]["ticket_id"]
    return callers["admin"].ok("get", f"/tickets/{ticket_id}")


def escalate(callers: Callers, instance: str, agent: str = "zhouxin") -> dict:
    """The agent hands the ticket to a vendor; the vendor step (in the agent's inbox)."""
    callers[agent].complete(
        instance,
        "handle",
        action="escalate_vendor",
        vendor="ACME 维修",
        vendor_email="service@acme.example",
        vendor_brief="请更换定影器 Please replace the fuser",
    )
    return callers[agent].task(instance, "vendor_work")


def vendor_link(callers: Callers, task: dict, hours: int = 72, agent: str = "zhouxin") -> str:
    body = callers[agent].ok(
        "post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME 维修", "hours": hours}
    )
    return urlsplit(body["url"]).path


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class TestSlaByTypeAndPriority:
    @pytest.mark.parametrize(
        ("ticket_type", "priority", "due"),
        [
            ("complaint", "urgent", beijing(23, 12)),  # 2 working hours
            ("complaint", "normal", beijing(24, 10)),  # 8: Monday 10-12, 13-18, Tuesday 9-10
            ("repair", "high", beijing(24, 10)),  # 8
            ("suggestion", "low", beijing(30, 10)),  # 40: a working week
        ],
    )
    def test_the_deadline_counts_working_hours(self, callers, ticket_type, priority, due):
        instance = raise_ticket(callers, ticket_type=ticket_type, priority=priority)
        task = callers["zhouxin"].task(instance, "handle")
        assert due_of(task) == due and task["sla_state"] == "on_track"
        assert crm_ticket(callers, instance)["type"] == ticket_type

    def test_a_ticket_without_an_agent_waits_in_the_agents_queue(self, callers):
        instance = raise_ticket(callers, by="wuhao", agent=None)
        assert callers.open_tasks(instance) == [("handle", None)]
        assert callers["zhouxin"].task(instance, "handle")["assignee"] == "zhouxin"  # claimed
        assert callers["lina"].tasks(instance, "all") == []  # not an agent


class TestResolveAndClose:
    def test_solved_confirmed_and_closed_with_a_rating(self, callers, smtp):
        instance = raise_ticket(callers)
        agent = callers["zhouxin"]
        agent.complete(instance, "handle", action="resolve", resolution="清理了进纸辊 Cleaned the rollers")
        assert crm_ticket(callers, instance)["status"] == "resolved"
        assert callers.open_tasks(instance) == [("confirm", "zhouxin")]
        agent.complete(instance, "confirm", fixed="yes", satisfaction=5, customer_feedback="很快 Quick")
        assert callers.instance(instance)["state"] == "completed"
        ticket = crm_ticket(callers, instance)
        assert (ticket["status"], ticket["rating"], ticket["assignee"]) == ("closed", 5, "zhouxin")
        mail = smtp.inbox.to("li.si@example.org")
        assert mail["Subject"].startswith(f"工单 {ticket['number']} 已解决")

    def test_not_fixed_goes_back_to_the_agent(self, callers):
        instance = raise_ticket(callers, customer_email=None)
        agent = callers["zhouxin"]
        agent.complete(instance, "handle", action="resolve", resolution="重启 Restarted")
        missing = agent.post(
            f"/tasks/{agent.task(instance, 'confirm')['id']}/complete", json={"data": {"fixed": "yes"}}
        )
        assert missing.status_code == 422  # a solved ticket needs the customer's rating
        agent.complete(instance, "confirm", fixed="no", customer_feedback="还是卡 Still jams")
        assert callers.open_tasks(instance) == [("handle", "zhouxin")]
        assert crm_ticket(callers, instance)["status"] == "in_progress"
        agent.complete(instance, "handle", action="resolve", resolution="换了搓纸轮 New pick roller")
        agent.complete(instance, "confirm", fixed="yes", satisfaction=4)
        assert callers.instance(instance)["state"] == "completed"


class TestSlaReminderAndBreach:
    """A normal complaint has 8 working hours from Monday 10:00: reminded at 80 % (Monday 17:24),
    breached Tuesday 10:00, when the team lead (sunli, head of 客服部) takes it over."""

    def test_reminder_at_80_percent_then_the_team_lead_takes_over(self, callers, smtp):
        instance = raise_ticket(callers)
        callers.fire_timers(until=beijing(23, 17, 23))
        assert smtp.inbox.messages == []
        callers.fire_timers(until=beijing(23, 17, 25))
        assert smtp.inbox.to(email_of("zhouxin"))["Subject"].startswith("即将超时：工单 Ticket")
        assert callers.open_tasks(instance) == [("handle", "zhouxin")]
        callers.fire_timers(until=beijing(24, 10, 1))
        assert callers.open_tasks(instance) == [("handle", "sunli")]
        assert smtp.inbox.to(email_of("sunli"))["Subject"].startswith("工单已超时")
        ticket = crm_ticket(callers, instance)
        assert (ticket["assignee"], ticket["status"]) == ("sunli", "escalated")
        lead = callers["sunli"].task(instance, "handle")
        assert due_of(lead) == beijing(24, 15, 1)  # 4 working hours of her own (lunch 12-13)
        assert ("task_cancelled", "scheduler", "handle") in callers.actions(instance)
        callers["sunli"].complete(instance, "handle", action="resolve", resolution="已处理 Done")
        callers["sunli"].complete(instance, "confirm", fixed="yes", satisfaction=3)
        assert callers.instance(instance)["state"] == "completed"


class TestSlaPause:
    def test_the_clock_stands_still_while_the_customer_answers(self, callers, smtp):
        instance = raise_ticket(callers)
        agent = callers["zhouxin"]
        first_due = due_of(agent.task(instance, "handle"))
        callers.fire_timers(after=timedelta(hours=1))
        agent.complete(instance, "handle", action="ask_customer", question="哪个型号? Which model?")
        waiting = agent.task(instance, "wait_customer")
        assert waiting["sla_state"] is None  # the waiting step has no due date of its own
        paused = callers.instance(instance)
        assert paused["sla_paused_at"] is not None and paused["next_timer_due"] is not None
        callers.fire_timers(after=timedelta(days=3))  # the breach would have come long ago
        assert smtp.inbox.messages == [] and callers.open_tasks(instance) == [("wait_customer", "zhouxin")]
        agent.complete(instance, "wait_customer", customer_reply="HP M404")
        handle = agent.task(instance, "handle")
        assert due_of(handle) == first_due + timedelta(days=3)
        assert callers.instance(instance)["sla_paused_at"] is None
        actions = callers.actions(instance)
        assert ("sla_paused", "zhouxin", None) in actions and ("sla_resumed", "zhouxin", None) in actions
        resumed = next(e for e in callers.instance(instance)["history"] if e["action"] == "sla_resumed")
        assert resumed["details"]["paused_seconds"] == 3 * 24 * 3600
        callers.fire_timers(until=due_of(handle) - timedelta(minutes=1))
        assert callers.open_tasks(instance) == [("handle", "zhouxin")]
        callers.fire_timers(until=due_of(handle) + timedelta(minutes=1))
        assert callers.open_tasks(instance) == [("handle", "sunli")]


    def test_a_pause_over_a_weekend_gives_back_its_working_hours_only(self, callers):
        instance = raise_ticket(callers)  # Monday 10:00: 8 working hours, lunch 12-13
        agent = callers["zhouxin"]
        assert due_of(agent.task(instance, "handle")) == beijing(24, 10)
        callers.fire_timers(until=beijing(23, 11))
        agent.complete(instance, "handle", action="ask_customer", question="哪个型号? Which model?")
        callers.fire_timers(until=beijing(28, 10))  # the customer answers on Saturday morning
        agent.complete(instance, "wait_customer", customer_reply="HP M404")
        # the 7 working hours left at Monday 11:00 run from the next working time: Monday 30th
        # 09:00-12:00 and 13:00-17:00 (the pause held 38 working hours, not five days)
        handle = agent.task(instance, "handle")
        assert due_of(handle) == beijing(30, 17)
        resumed = next(e for e in callers.instance(instance)["history"] if e["action"] == "sla_resumed")
        assert resumed["details"]["paused_working_seconds"] == 38 * 3600
        assert resumed["details"]["paused_seconds"] == (4 * 24 + 23) * 3600
        callers.fire_timers(until=beijing(30, 16, 59))
        assert callers.open_tasks(instance) == [("handle", "zhouxin")]
        callers.fire_timers(until=beijing(30, 17, 1))
        assert callers.open_tasks(instance) == [("handle", "sunli")]


class TestVendorLink:
    def test_the_vendor_answers_through_the_link_without_an_account(self, callers):
        instance = raise_ticket(callers)
        task = escalate(callers, instance)
        assert task["lane"] == "vendor" and callers.instance(instance)["sla_paused_at"] is not None
        assert crm_ticket(callers, instance)["vendor"] == "ACME 维修"
        path = vendor_link(callers, task)
        vendor = callers.app.test_client()  # no login, no token
        page = vendor.get(path)
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and page.headers["Referrer-Policy"] == "no-referrer"
        assert "请更换定影器 Please replace the fuser" in html and "打印机卡纸" in html
        assert CUSTOMER["customer_phone"] not in html and "li.si@example.org" not in html
        answer = vendor.post(
            path,
            data={
                "csrf_token": csrf(html),
                "vendor_result": "fixed",
                "vendor_report": "已换定影器 Fuser replaced",
            },
        )
        assert answer.status_code == 200
        done = callers["admin"].ok("get", f"/tasks/{task['id']}")
        assert (done["state"], done["completed_by"]) == ("completed", "vendor:ACME 维修")
        actions = callers.actions(instance)
        assert ("task_completed", "vendor:ACME 维修", "vendor_work") in actions
        assert ("sla_resumed", "vendor:ACME 维修", None) in actions
        assert callers.open_tasks(instance) == [("handle", "zhouxin")]  # the agent reviews the answer
        assert callers.instance(instance)["variables"]["vendor_result"] == "fixed"
        assert vendor.get(path).status_code == 410  # answered: the link is spent

    def test_a_refused_answer_shows_the_form_again(self, callers):
        instance = raise_ticket(callers)
        path = vendor_link(callers, escalate(callers, instance))
        vendor = callers.app.test_client()
        html = vendor.get(path).get_data(as_text=True)
        refused = vendor.post(path, data={"csrf_token": csrf(html), "vendor_result": "fixed"})
        assert refused.status_code == 422 and 'name="vendor_report"' in refused.get_data(as_text=True)
        assert callers.open_tasks(instance) == [("vendor_work", "zhouxin")]

    def test_an_expired_link_is_refused(self, callers):
        instance = raise_ticket(callers)
        path = vendor_link(callers, escalate(callers, instance), hours=1)
        vendor = callers.app.test_client()
        assert vendor.get(path).status_code == 200
        callers.fire_timers(after=timedelta(minutes=61))
        assert vendor.get(path).status_code == 410
        assert callers.open_tasks(instance) == [("vendor_work", "zhouxin")]

    def test_a_tampered_link_and_a_link_for_another_task_are_refused(self, callers):
        first = raise_ticket(callers)
        second = raise_ticket(callers, business_key="T-2")
        first_task, second_task = escalate(callers, first), escalate(callers, second)
        path = vendor_link(callers, first_task)
        vendor = callers.app.test_client()
        token = path.rsplit("/", 1)[1]
        # a signature character that carries only data bits (the last one also carries padding)
        head, signature = path.rsplit(".", 1)
        tampered = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
        assert vendor.get(tampered).status_code == 404
        assert vendor.get(f"/vendor/{second_task['id']}/{token}").status_code == 404
        html = vendor.get(path).get_data(as_text=True)
        foreign = vendor.post(
            f"/vendor/{second_task['id']}/{token}",
            data={"csrf_token": csrf(html), "vendor_result": "fixed", "vendor_report": "nope"},
        )
        assert foreign.status_code == 404
        assert callers.open_tasks(second) == [("vendor_work", "zhouxin")]

    def test_only_open_vendor_steps_of_ones_own_get_a_link(self, callers):
        instance = raise_ticket(callers)
        handle = callers["zhouxin"].task(instance, "handle")
        not_vendor = callers["zhouxin"].post(f"/tasks/{handle['id']}/vendor-link", json={"vendor": "ACME"})
        assert not_vendor.status_code == 422
        task = escalate(callers, instance)
        assert (
            callers["lina"].post(f"/tasks/{task['id']}/vendor-link", json={"vendor": "X"}).status_code == 404
        )
        assert (
            callers["wuhao"].post(f"/tasks/{task['id']}/vendor-link", json={"vendor": "X"}).status_code == 404
        )
        nameless = callers["zhouxin"].post(f"/tasks/{task['id']}/vendor-link", json={"vendor": "  "})
        assert nameless.status_code == 422

    def test_the_agent_issues_a_link_on_a_page(self, callers):
        instance = raise_ticket(callers)
        task = escalate(callers, instance)
        agent = callers["zhouxin"]
        listed = agent.client.get("/vendor/links", headers=agent.headers).get_data(as_text=True)
        assert f"/vendor/tasks/{task['id']}/link" in listed
        assert "T-1 · 打印机卡纸 Printer jams" in listed  # which ticket: its number and subject
        page = agent.client.get(f"/vendor/tasks/{task['id']}/link", headers=agent.headers)
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and 'value="ACME 维修"' in html
        issued = agent.client.post(
            f"/vendor/tasks/{task['id']}/link",
            headers=agent.headers,
            data={"csrf_token": csrf(html), "vendor": "ACME 维修", "hours": "24"},
        )
        link = re.search(r'id="vendor-url" readonly value="([^"]+)"', issued.get_data(as_text=True)).group(1)
        assert "mailto:service%40acme.example" in issued.get_data(as_text=True)
        assert callers.app.test_client().get(urlsplit(link).path).status_code == 200
        comments = agent.ok("get", f"/tasks/{task['id']}/comments")["items"]
        assert [c["author"] for c in comments] == ["zhouxin"] and "ACME 维修" in comments[0]["body"]


def revoke_form(html: str, link_id: str) -> str:
    """The action of the links page's revoke button for ``link_id``."""
    return re.search(rf'action="(/vendor/tasks/[^"]+/links/{re.escape(link_id)}/revoke)"', html).group(1)


def delete(caller, path: str) -> Any:
    return caller.client.delete(f"/api/v1{path}", headers=caller.headers)


def link_state(html: str, link_id: str) -> str:
    return re.search(rf'data-link="{re.escape(link_id)}" data-state="(\w+)"', html).group(1)


class TestRevokingAVendorLink:
    def test_a_revoked_link_is_gone_and_a_new_one_works(self, callers):
        instance = raise_ticket(callers)
        task = escalate(callers, instance)
        agent = callers["zhouxin"]
        first = agent.ok("post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME 维修"})
        second = agent.ok("post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME 维修"})
        paths = [urlsplit(first["url"]).path, urlsplit(second["url"]).path]
        vendor = callers.app.test_client()
        html = vendor.get(paths[0]).get_data(as_text=True)
        before = callers.instance(instance)["variables"]

        revoked = delete(agent, f"/tasks/{task['id']}/vendor-link")
        assert revoked.status_code == 200
        revoked = revoked.get_json()
        assert revoked["task_id"] == task["id"] and sorted(revoked["revoked"]) == sorted(
            [first["id"], second["id"]]
        )
        for path in paths:  # the link revoked, and every other issued until then
            gone = vendor.get(path)
            assert gone.status_code == 410 and "此链接已被撤销" in gone.get_data(as_text=True)
            assert gone.headers["Cache-Control"] == "no-store"
        english = vendor.get(paths[1], headers={"Accept-Language": "en"})
        assert "This link has been withdrawn" in english.get_data(as_text=True)
        refused = vendor.post(
            paths[0], data={"csrf_token": csrf(html), "vendor_result": "fixed", "vendor_report": "late"}
        )
        assert refused.status_code == 410
        assert callers.open_tasks(instance) == [("vendor_work", "zhouxin")]  # nothing changed
        assert callers.instance(instance)["variables"] == before
        history = callers.instance(instance)["history"]
        assert not [
            e for e in history if e["action"] == "task_completed" and e["element_id"] == "vendor_work"
        ]
        entry = next(e for e in history if e["action"] == "vendor_link_revoked")
        assert (entry["actor"], entry["task_id"]) == ("zhouxin", task["id"])
        assert sorted(entry["details"]["links"]) == sorted([first["id"], second["id"]])
        comments = agent.ok("get", f"/tasks/{task['id']}/comments")["items"]
        assert "revoked" in comments[-1]["body"] and comments[-1]["author"] == "zhouxin"

        fresh = urlsplit(
            agent.ok("post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME 维修"})["url"]
        ).path
        page = vendor.get(fresh)
        assert page.status_code == 200
        answer = vendor.post(
            fresh,
            data={
                "csrf_token": csrf(page.get_data(as_text=True)),
                "vendor_result": "fixed",
                "vendor_report": "已换定影器 Fuser replaced",
            },
        )
        assert answer.status_code == 200
        assert callers["admin"].ok("get", f"/tasks/{task['id']}")["completed_by"] == "vendor:ACME 维修"
        assert vendor.get(paths[0]).status_code == 410

    def test_the_agent_revokes_a_link_on_the_links_page(self, callers):
        instance = raise_ticket(callers)
        task = escalate(callers, instance)
        agent = callers["zhouxin"]
        issued = agent.ok("post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME 维修"})
        path = urlsplit(issued["url"]).path
        listed = agent.client.get("/vendor/links", headers=agent.headers).get_data(as_text=True)
        assert link_state(listed, issued["id"]) == "active"
        action = revoke_form(listed, issued["id"])
        assert agent.client.post(action, headers=agent.headers).status_code == 400  # no CSRF token
        assert callers.app.test_client().get(path).status_code == 200
        done = agent.client.post(action, headers=agent.headers, data={"csrf_token": csrf(listed)})
        assert done.status_code == 302 and done.headers["Location"].endswith("/vendor/links")
        assert callers.app.test_client().get(path).status_code == 410
        listed = agent.client.get("/vendor/links", headers=agent.headers).get_data(as_text=True)
        assert link_state(listed, issued["id"]) == "revoked" and f"/links/{issued['id']}/revoke" not in listed
        entry = next(e for e in callers.instance(instance)["history"] if e["action"] == "vendor_link_revoked")
        assert entry["actor"] == "zhouxin" and entry["details"] == {
            "link": issued["id"],
            "links": [issued["id"]],
        }
        unknown = agent.client.post(
            action.replace(issued["id"], "nope"), headers=agent.headers, data={"csrf_token": csrf(listed)}
        )
        assert unknown.status_code == 404

        fresh = agent.ok(
            "post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME 维修", "hours": 1}
        )
        callers.fire_timers(after=timedelta(minutes=61))
        listed = agent.client.get("/vendor/links", headers=agent.headers).get_data(as_text=True)
        assert link_state(listed, fresh["id"]) == "expired"
        answering = agent.ok("post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME 维修"})
        vendor = callers.app.test_client()
        page = vendor.get(urlsplit(answering["url"]).path).get_data(as_text=True)
        vendor.post(
            urlsplit(answering["url"]).path,
            data={"csrf_token": csrf(page), "vendor_result": "fixed", "vendor_report": "Fuser replaced"},
        )
        listed = agent.client.get("/vendor/links", headers=agent.headers).get_data(as_text=True)
        assert link_state(listed, answering["id"]) == "answered"  # the closed step, with its links
        assert link_state(listed, issued["id"]) == "revoked" and link_state(listed, fresh["id"]) == "expired"

    def test_only_who_may_issue_a_link_may_revoke_it(self, callers):
        instance = raise_ticket(callers)
        task = escalate(callers, instance)
        issued = callers["zhouxin"].ok(
            "post", f"/tasks/{task['id']}/vendor-link", 201, json={"vendor": "ACME"}
        )
        for name, status in (("lina", 404), ("wuhao", 404), ("sunli", 403)):  # sunli, the manager, sees it
            assert delete(callers[name], f"/tasks/{task['id']}/vendor-link").status_code == status, name
            caller = callers[name]
            page = caller.client.get("/vendor/links", headers=caller.headers).get_data(as_text=True)
            answer = caller.client.post(
                f"/vendor/tasks/{task['id']}/links/{issued['id']}/revoke",
                headers=caller.headers,
                data={"csrf_token": csrf(page)},
            )
            assert answer.status_code == status, name
        assert callers.app.test_client().get(urlsplit(issued["url"]).path).status_code == 200
        assert "vendor_link_revoked" not in [a for a, _actor, _element in callers.actions(instance)]
        assert (
            delete(callers["admin"], f"/tasks/{task['id']}/vendor-link").status_code == 200
        )  # may act on all
        handle = callers["zhouxin"].task(raise_ticket(callers, business_key="T-2"), "handle")
        assert delete(callers["zhouxin"], f"/tasks/{handle['id']}/vendor-link").status_code == 422

    def test_a_link_signed_before_links_had_ids_is_revoked_too(self, callers):
        from web.vendor import _serializer

        instance = raise_ticket(callers)
        task = escalate(callers, instance)
        with callers.app.app_context():
            token = _serializer().dumps({"t": task["id"], "v": "ACME 维修", "h": 72, "by": "zhouxin"})
        vendor = callers.app.test_client()
        assert vendor.get(f"/vendor/{task['id']}/{token}").status_code == 200
        callers.fire_timers(after=timedelta(seconds=5))
        assert delete(callers["zhouxin"], f"/tasks/{task['id']}/vendor-link").get_json()["revoked"] == []
        assert vendor.get(f"/vendor/{task['id']}/{token}").status_code == 410
