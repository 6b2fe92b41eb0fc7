"""The customers' request form /support/new (web/support.py), on SQLite and PostgreSQL with the demo
company: a request becomes a ticket that waits where a registered one waits, checked like the
register form, guarded by CSRF, a honeypot, a per-address rate limit and a size limit, switched off
by BATON_SUPPORT_FORM=off, and acknowledged by mail in the customer's language."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from engine.errors import ConflictError, ValidationError
from tests.integration.test_process_ticket import beijing, crm_ticket, due_of, raise_ticket

if TYPE_CHECKING:
    from tests.integration.process_support import Callers

pytest_plugins = ["tests.integration.process_support"]  # its fixtures: callers, smtp, the databases

REQUEST = {
    "contact_name": "王小明",
    "customer_company": "杭州远望物流",
    "customer_email": "wang.xm@yuanwang.example",
    "customer_phone": "0571-8888 0101",
    "ticket_type": "complaint",
    "priority": "normal",
    "subject": "发票开错了 Wrong invoice",
    "description": "十一月的发票抬头写错了。\nThe November invoice has the wrong company name.",
}
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class Customer:
    """A browser without an account, from one IP address, in one language."""

    def __init__(self, callers: Callers, ip: str = "203.0.113.7", headers: dict | None = None) -> None:
        self.client = callers.app.test_client()
        self.environ = {"REMOTE_ADDR": ip}
        self.headers = headers or ZH

    def get(self, path: str = "/support/new") -> Any:
        return self.client.get(path, headers=self.headers, environ_base=self.environ)

    def form(self) -> str:
        page = self.get()
        assert page.status_code == 200, page.status_code
        return page.get_data(as_text=True)

    def send(self, *, token: bool = True, **fields: Any) -> Any:
        data = {**REQUEST, **fields}
        data = {name: value for name, value in data.items() if value is not None}
        if token:
            data["csrf_token"] = csrf(self.form())
        return self.client.post("/support/new", data=data, headers=self.headers, environ_base=self.environ)

    def submit(self, **fields: Any) -> str:
        """Send a valid request; the confirmation page."""
        sent = self.send(**fields)
        assert sent.status_code == 302, (sent.status_code, sent.get_data(as_text=True)[:3000])
        assert sent.headers["Location"] == "/support/done"
        done = self.get("/support/done")
        assert done.status_code == 200
        return done.get_data(as_text=True)


def tickets(callers: Callers) -> list:
    return callers.engine.runtime.query().definition_key("ticket").order_by_started().list()


def number_on(page: str) -> str:
    return re.search(r'id="ticket-number">(T\d+)<', page).group(1)


def instance_of(callers: Callers, number: str) -> dict:
    found = [
        i for i in tickets(callers) if callers.engine.runtime.variables(i.id).get("ticket_number") == number
    ]
    assert len(found) == 1, number
    return callers.instance(found[0].id)


class TestARequestBecomesATicket:
    def test_it_waits_in_the_agents_queue_like_a_registered_ticket(self, callers):
        customer = Customer(callers)
        form = customer.form()
        assert "提交工单" in form and 'name="website"' in form  # Chinese first; the honeypot is there
        assert 'value="urgent"' not in form  # staff decide what is urgent
        assert re.search(r'<option value="normal" selected>', form)
        page = customer.submit()
        assert "我们已收到您的工单" in page
        number = number_on(page)
        instance = instance_of(callers, number)
        assert (
            instance["state"] == "running" and instance["started_by"] == "customer:wang.xm@yuanwang.example"
        )
        # where a ticket a colleague registers without an agent waits: the agents' queue, same SLA
        staff = raise_ticket(callers, by="wuhao", agent=None, business_key="T-staff")
        assert callers.open_tasks(instance["id"]) == callers.open_tasks(staff) == [("handle", None)]
        handle = callers["zhouxin"].task(instance["id"], "handle")  # an agent claims it
        assert due_of(handle) == due_of(callers["zhouxin"].task(staff, "handle")) == beijing(24, 10)
        assert instance["variables"]["sla_due"] and instance["variables"]["sla_hours"] == 8
        assert callers["lina"].tasks(instance["id"], "all") == []  # not an agent
        ticket = crm_ticket(callers, instance["id"])
        assert (ticket["number"], ticket["status"], ticket["type"]) == (number, "open", "complaint")
        assert ticket["subject"] == REQUEST["subject"] and ticket["priority"] == "normal"
        customer_record = callers["admin"].ok("get", f"/customers/{ticket['customer_id']}")
        assert customer_record["name"] == "杭州远望物流"  # the company is the CRM customer
        assert customer_record["email"] == REQUEST["customer_email"]
        variables = instance["variables"]
        assert (variables["contact_name"], variables["channel"]) == ("王小明", "support_form")

    def test_the_audit_trail_says_who_and_from_where(self, callers):
        number = number_on(Customer(callers, ip="198.51.100.23").submit())
        instance = instance_of(callers, number)
        actor = "customer:wang.xm@yuanwang.example"
        actions = callers.actions(instance["id"])
        assert ("instance_started", actor, None) in actions
        assert ("task_completed", actor, "register") in actions
        request = next(e for e in instance["history"] if e["action"] == "support_request")
        assert request["actor"] == actor and request["element_id"] == "register"
        assert request["details"]["ip"] == "198.51.100.23"
        assert request["details"]["customer"]["contact_name"] == "王小明"
        register = callers["admin"].ok("get", f"/tasks/{request['task_id']}")
        assert (register["state"], register["completed_by"]) == ("completed", actor)
        comments = callers["admin"].ok("get", f"/tasks/{request['task_id']}/comments")["items"]
        assert comments[0]["author"] == actor and "王小明" in comments[0]["body"]
        assert "198.51.100.23" in comments[0]["body"]

    def test_the_service_managers_track_it_as_their_departments(self, callers):
        """A customer has no department: the configured one counts it, so the manager of customer
        service finds it in their instance list and figures; unset, only administrators do."""
        sunli = callers["sunli"]  # customer service's manager

        def in_sunlis_figures() -> int:
            return sunli.ok("get", "/measures/ticket")["started"]

        before = in_sunlis_figures()
        callers.app.config["SUPPORT_DEPARTMENT"] = "客服部"
        tracked = instance_of(callers, number_on(Customer(callers).submit()))
        assert in_sunlis_figures() == before + 1
        callers.app.config["SUPPORT_DEPARTMENT"] = ""
        untracked = instance_of(callers, number_on(Customer(callers, ip="198.51.100.9").submit()))
        assert in_sunlis_figures() == before + 1
        service = callers.engine.identity.get_department("客服部").id
        assert callers.engine.runtime.get(tracked["id"]).starter_department_id == service
        assert callers.engine.runtime.get(untracked["id"]).starter_department_id is None
        listed = {i.id for i in callers.engine.runtime.query().starter_departments([service]).list()}
        assert tracked["id"] in listed and untracked["id"] not in listed

    def test_an_e_mail_alone_or_a_phone_alone_will_do(self, callers):
        customer = Customer(callers)
        by_mail = number_on(customer.submit(customer_phone=None, customer_company=None))
        by_phone = number_on(customer.submit(customer_email=None, contact_name="李雷"))
        mail_ticket = instance_of(callers, by_mail)
        phone_ticket = instance_of(callers, by_phone)
        assert mail_ticket["variables"]["customer_phone"] is None
        assert phone_ticket["started_by"] == "customer:0571-8888 0101"
        for instance in (mail_ticket, phone_ticket):
            assert callers.open_tasks(instance["id"]) == [("handle", None)]
        named = callers["admin"].ok(
            "get", f"/customers/{crm_ticket(callers, mail_ticket['id'])['customer_id']}"
        )
        assert named["name"] == "王小明"  # no company: the person is the customer

    def test_a_returning_customer_is_found_by_e_mail(self, callers):
        customer = Customer(callers)
        first = instance_of(callers, number_on(customer.submit()))
        second = instance_of(
            callers, number_on(customer.submit(customer_company="远望 Yuanwang", customer_phone=None))
        )
        assert (
            crm_ticket(callers, first["id"])["customer_id"]
            == crm_ticket(callers, second["id"])["customer_id"]
        )

    def test_the_confirmation_shows_once(self, callers):
        customer = Customer(callers)
        customer.submit()
        again = customer.get("/support/done")
        assert again.status_code == 302 and again.headers["Location"] == "/support/new"

    def test_the_page_in_english(self, callers):
        customer = Customer(callers, headers=EN)
        form = customer.form()
        assert "Submit a request" in form and "Your name" in form and "Complaint" in form
        page = customer.submit()
        assert "Thank you: we received your request" in page and number_on(page)

    def test_headers_of_a_public_page(self, callers):
        page = Customer(callers).get()
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


class TestRefusedRequests:
    @pytest.mark.parametrize(
        ("fields", "refused"),
        [
            ({"contact_name": None}, ["contact_name"]),
            ({"customer_email": "not-an-address"}, ["customer_email"]),
            ({"customer_email": None, "customer_phone": None}, ["customer_email", "customer_phone"]),
            ({"customer_phone": "call me"}, ["customer_phone"]),
            ({"priority": "urgent"}, ["priority"]),
            ({"ticket_type": "praise"}, ["ticket_type"]),
            ({"subject": "x", "description": None}, ["subject", "description"]),
        ],
    )
    def test_invalid_input_comes_back_with_messages_and_nothing_starts(self, callers, fields, refused):
        before = len(tickets(callers))
        answer = Customer(callers).send(**fields)
        html = answer.get_data(as_text=True)
        assert answer.status_code == 422
        invalid = re.findall(r'name="(\w+)"[^>]*aria-invalid="true"', html)
        assert invalid == refused
        assert "请更正以下问题" in html  # the summary at the top, in the customer's language
        assert 'value="发票开错了 Wrong invoice"' in html or "subject" in refused  # input kept
        assert len(tickets(callers)) == before

    def test_messages_are_in_the_customers_language(self, callers):
        answer = Customer(callers, headers=EN).send(customer_email=None, customer_phone=None)
        html = answer.get_data(as_text=True)
        assert answer.status_code == 422
        assert "Give an e-mail address or a phone number (or both)" in html and "必填" not in html

    def test_without_the_csrf_token_400_and_nothing_starts(self, callers):
        before = len(tickets(callers))
        customer = Customer(callers)
        customer.form()  # the session has a token; the post does not carry it
        answer = customer.send(token=False)
        assert answer.status_code == 400
        assert 'value="王小明"' in answer.get_data(as_text=True)  # the input is kept for another try
        stranger = callers.app.test_client().post("/support/new", data=REQUEST)  # no session at all
        assert stranger.status_code == 400
        assert len(tickets(callers)) == before

    def test_the_honeypot_starts_nothing(self, callers):
        before = len(tickets(callers))
        customer = Customer(callers)
        sent = customer.send(website="http://spam.example")
        assert sent.status_code == 302
        page = customer.get("/support/done").get_data(as_text=True)
        assert "我们已收到您的工单" in page and 'id="ticket-number"' not in page
        assert len(tickets(callers)) == before

    def test_too_large_a_request_is_refused(self, callers):
        answer = Customer(callers).send(description="长" * 40_000)
        assert answer.status_code == 413
        assert len(tickets(callers)) == 0


class TestAbuse:
    def test_the_rate_limit_answers_429_per_address(self, callers):
        callers.app.config["SUPPORT_RATE_LIMIT"] = 3
        customer = Customer(callers, ip="192.0.2.50")
        for _ in range(3):
            customer.submit()
        refused = customer.send()
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "3600"
        assert "请过一小时再试" in refused.get_data(as_text=True)
        assert len(tickets(callers)) == 3
        assert Customer(callers, ip="192.0.2.51").send().status_code == 302  # another address may
        callers.clock.tick(3601)  # an hour later the first one may again
        assert customer.send().status_code == 302

    def test_switched_off_the_page_is_gone(self, callers):
        callers.app.config["SUPPORT_FORM"] = False
        customer = Customer(callers)
        assert customer.get().status_code == 404
        assert customer.client.post("/support/new", data=REQUEST).status_code == 404
        assert customer.get("/support/done").status_code == 404
        callers.app.config["SUPPORT_FORM"] = True
        assert customer.get().status_code == 200


class TestAcknowledgement:
    def test_the_customer_is_mailed_in_their_language(self, callers, smtp):
        chinese = number_on(Customer(callers).submit())
        english = number_on(Customer(callers, headers=EN).submit(customer_email="ann@example.org"))
        mail = smtp.inbox.to(REQUEST["customer_email"])
        assert mail["Subject"] == f"已收到您的工单 {chinese}：{REQUEST['subject']}"
        assert mail["Content-Language"] == "zh-CN" and "王小明，您好" in mail.get_content()
        mail = smtp.inbox.to("ann@example.org")
        assert mail["Subject"] == f"We received your request {english}: {REQUEST['subject']}"
        assert mail["Content-Language"] == "en" and "contact you soon" in mail.get_content()

    def test_no_e_mail_no_mail_and_a_failing_server_loses_no_ticket(self, callers, smtp):
        Customer(callers).submit(customer_email=None)
        assert smtp.inbox.messages == []
        smtp.stop()
        page = Customer(callers).submit()  # the SMTP server is down: logged, the ticket stands
        assert number_on(page) and len(tickets(callers)) == 2


class TestTheStaffRegisterForm:
    """The register step takes an e-mail address instead of a phone number now (the customers' form
    may give either); with neither it is refused."""

    def test_an_e_mail_instead_of_a_phone(self, callers):
        instance = raise_ticket(callers, customer_phone=None)
        assert callers.open_tasks(instance) == [("handle", "zhouxin")]
        assert callers.instance(instance)["variables"]["customer_phone"] is None

    def test_neither_is_refused(self, callers):
        agent = callers["zhouxin"]
        instance = agent.start("ticket", "T-9")["id"]
        task = agent.task(instance, "register")
        data = {
            "customer_name": "某公司",
            "ticket_type": "repair",
            "priority": "low",
            "subject": "坏了",
            "description": "打不开",
        }
        refused = agent.post(f"/tasks/{task['id']}/complete", json={"data": data})
        assert refused.status_code == 422
        problems = refused.get_json()["error"]["details"]
        assert {"field": "customer_phone", "message": "必填 / required"} in problems


class TestStartAndComplete:
    """The engine command behind the page: one transaction, or nothing at all."""

    def test_refused_data_or_a_step_it_does_not_wait_at_starts_nothing(self, callers):
        runtime = callers.engine.runtime
        data = {"customer_name": "某公司", "ticket_type": "repair", "priority": "low", "subject": "坏了"}
        with pytest.raises(ValidationError) as refused:
            runtime.start_and_complete("ticket", step="register", data=data, actor="customer:x@example.org")
        assert {p["field"] for p in refused.value.problems} == {"description", "customer_phone"}
        with pytest.raises(ConflictError):
            runtime.start_and_complete("ticket", step="handle", data={}, actor="customer:x@example.org")
        with pytest.raises(ValidationError):  # an audit action must be a name
            runtime.start_and_complete(
                "ticket", step="register", data={}, actor="customer:x", note=("Not An Action", {})
            )
        assert tickets(callers) == []
        assert callers.engine.history.query().actor("customer:x@example.org").count() == 0
