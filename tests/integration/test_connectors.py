"""BPMN service tasks calling connectors, on SQLite and PostgreSQL: e-mail through a real SMTP server on
loopback (aiosmtpd), CRM operations writing records in the step's transaction, and failures that retry
with back-off, become an incident, and continue without losing the step once the cause is fixed."""

from __future__ import annotations

import email
import socket
import threading
from datetime import timedelta
from email.policy import default as email_policy
from xml.sax.saxutils import quoteattr

import pytest
from aiosmtpd.controller import Controller

from engine.connectors import ConnectorCall, ConnectorError, Connectors
from engine.context import EngineConfig
from engine.facade import Engine
from engine.records import RecordWriter
from engine.scheduler import JobRunner
from integrations import crm
from integrations.mail import Mailer, MailSettings
from tests.conftest import Clock

PASSWORD = "s3cret-pass"
SPIFF = "http://spiffworkflow.org/bpmn/schema/1.0/core"


def service_process(pid: str, steps: list[tuple[str, str, dict[str, str]]]) -> bytes:
    """start -> service tasks (element id, operation, {parameter: python expression}) -> user task -> end.

    Each task's result goes to the variable named like its element."""
    body = ['<bpmn:startEvent id="start" />']
    previous = "start"
    for index, (element_id, operation, params) in enumerate(steps):
        parameters = "".join(
            f'<spiffworkflow:parameter id="{name}" type="any" value={quoteattr(expression)}/>'
            for name, expression in params.items()
        )
        body.append(
            f'<bpmn:serviceTask id="{element_id}" name="{element_id}"><bpmn:extensionElements>'
            f'<spiffworkflow:serviceTaskOperator id="{operation}" resultVariable="{element_id}">'
            f"<spiffworkflow:parameters>{parameters}</spiffworkflow:parameters>"
            "</spiffworkflow:serviceTaskOperator></bpmn:extensionElements></bpmn:serviceTask>"
        )
        body.append(f'<bpmn:sequenceFlow id="f{index}" sourceRef="{previous}" targetRef="{element_id}" />')
        previous = element_id
    body += [
        '<bpmn:userTask id="wait" name="wait" />',
        f'<bpmn:sequenceFlow id="f_wait" sourceRef="{previous}" targetRef="wait" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:sequenceFlow id="f_end" sourceRef="wait" targetRef="end" />',
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
        f'xmlns:spiffworkflow="{SPIFF}" id="defs_{pid}" targetNamespace="http://baton.test">'
        f'<bpmn:process id="{pid}" isExecutable="true">'
        + "".join(body)
        + "</bpmn:process></bpmn:definitions>"
    ).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.received = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.original_content, policy=email_policy)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        self.received.set()
        return "250 OK"

    def to(self, address: str) -> email.message.EmailMessage:
        return next(m for m in self.messages if m["To"] == address)


class SmtpServer:
    """A real SMTP server on loopback that a test starts (and stops) when it wants."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp():
    server = SmtpServer(free_port())
    yield server
    server.stop()


def flaky(failures: int):
    """A test operation that writes a customer, then fails ``failures`` times before it succeeds."""
    calls = {"n": 0}

    def operation(params: dict, call: ConnectorCall) -> dict:
        calls["n"] += 1
        writer = RecordWriter(call.ctx, call.session, actor=call.actor, instance_id=call.instance_id)
        row = writer.create("customer", {"name": params["name"]})
        if calls["n"] <= failures:
            raise ConnectorError(f"remote system unavailable (call {calls['n']})")
        return {"customer_id": row.id, "calls": calls["n"]}

    return operation, calls


@pytest.fixture
def make_engine(db_url, smtp):
    """An engine on a hand-set clock with the CRM and mail connectors (SMTP at ``smtp.port``)."""
    made: list[Engine] = []

    def make(**extra_operations) -> tuple[Engine, Clock]:
        clock = Clock()
        connectors = Connectors(crm.OPERATIONS)
        connectors.register("send_mail", Mailer(MailSettings(host="127.0.0.1", port=smtp.port, timeout=5)))
        for name, operation in extra_operations.items():
            connectors.register(name, operation)
        engine = Engine.from_url(db_url, EngineConfig(clock=clock, connectors=connectors))
        made.append(engine)
        engine.identity.create_user("li", PASSWORD, role="employee", email="li@example.com", locale="zh_CN")
        engine.identity.create_user("amy", PASSWORD, role="employee", email="amy@example.com", locale="en")
        return engine, clock

    yield make
    for engine in made:
        engine.close()


def audit_actions(engine: Engine, instance_id: str) -> list[str]:
    return [e.action for e in engine.history.for_instance(instance_id)]


class TestMail:
    def test_a_service_task_mails_each_recipient_in_their_language(self, make_engine, smtp):
        engine, _ = make_engine()
        smtp.start()
        engine.repository.deploy(
            {
                "notify.bpmn": service_process(
                    "notify",
                    [
                        (
                            "mail",
                            "send_mail",
                            {
                                "to": "['li', 'amy', 'vendor@example.com']",
                                "template": "'ticket_escalated'",
                                "values": "{'number': number, 'subject': subject, 'description': 'no power'}",
                                "locale": "'en'",
                            },
                        )
                    ],
                )
            },
            deployed_by="designer",
        )
        instance = engine.runtime.start(
            "notify", variables={"number": "T000007", "subject": "打印机卡纸"}, started_by="li"
        )
        assert instance.state == "running", instance.error_message
        assert engine.runtime.variables(instance.id)["mail"] == {
            "sent": 3,
            "recipients": ["li@example.com", "amy@example.com", "vendor@example.com"],
        }
        chinese, english = smtp.inbox.to("li@example.com"), smtp.inbox.to("amy@example.com")
        assert chinese["Subject"] == "请协助处理工单 T000007：打印机卡纸"
        assert "需要贵司协助处理" in chinese.get_content() and "no power" in chinese.get_content()
        assert english["Subject"] == "Please handle ticket T000007: 打印机卡纸"
        assert "needs your help" in english.get_content()
        assert smtp.inbox.to("vendor@example.com")["Subject"].startswith("Please handle ticket")  # locale=en
        assert chinese["X-Baton-Instance"] == instance.id

    def test_own_subject_and_body_by_language(self, make_engine, smtp):
        engine, _ = make_engine()
        smtp.start()
        engine.repository.deploy(
            {
                "own.bpmn": service_process(
                    "own",
                    [
                        (
                            "mail",
                            "send_mail",
                            {
                                "to": "['li', 'amy']",
                                "subject": "{'zh_CN': '报销 ${amount} 元已批准', "
                                "'en': 'Expense of ${amount} approved'}",
                                "body": "{'zh': '您好 ${name}', 'en': 'Hello ${name}'}",
                                "values": "{'amount': amount, 'name': 'Li'}",
                            },
                        )
                    ],
                )
            },
            deployed_by="designer",
        )
        engine.runtime.start("own", variables={"amount": "1200.50"}, started_by="li")
        assert smtp.inbox.to("li@example.com")["Subject"] == "报销 1200.50 元已批准"
        assert smtp.inbox.to("li@example.com").get_content().strip() == "您好 Li"
        assert smtp.inbox.to("amy@example.com")["Subject"] == "Expense of 1200.50 approved"

    def test_a_user_without_an_address_fails_the_step_at_once(self, make_engine, smtp):
        engine, _ = make_engine()
        smtp.start()
        engine.identity.create_user("noaddr", PASSWORD, role="employee")
        engine.repository.deploy(
            {
                "m.bpmn": service_process(
                    "m", [("mail", "send_mail", {"to": "'noaddr'", "template": "'task_waiting'"})]
                )
            },
            deployed_by="designer",
        )
        instance = engine.runtime.start("m", started_by="li")
        assert (instance.state, instance.error_element) == ("error", "mail")
        assert "no e-mail address" in instance.error_message
        assert engine.management.failed_jobs() == [] and _retry_jobs(engine) == []  # nothing to retry


class TestCrmOperations:
    def test_a_process_opens_and_updates_a_ticket_linked_to_it(self, make_engine):
        engine, _ = make_engine()
        engine.repository.deploy(
            {
                "ticket.bpmn": service_process(
                    "ticket",
                    [
                        (
                            "opened",
                            "crm_open_ticket",
                            {
                                "customer_name": "customer",
                                "customer_phone": "'13800000000'",
                                "type": "'repair'",
                                "priority": "'high'",
                                "subject": "'空调不制冷'",
                            },
                        ),
                        (
                            "escalate",
                            "crm_update_ticket",
                            {
                                "ticket_id": "opened['ticket_id']",
                                "status": "'escalated'",
                                "vendor": "'格力售后'",
                            },
                        ),
                    ],
                )
            },
            deployed_by="designer",
        )
        first = engine.runtime.start("ticket", variables={"customer": "星海贸易"}, started_by="li")
        assert first.state == "running", first.error_message
        data = engine.runtime.variables(first.id)
        ticket = engine.records.get("ticket", data["opened"]["ticket_id"])
        assert (ticket.status, ticket.vendor, ticket.priority, ticket.owner) == (
            "escalated",
            "格力售后",
            "high",
            "li",
        )
        assert data["escalate"]["status"] == "escalated"
        assert [i.id for i in engine.records.instances_of("ticket", ticket.id)] == [first.id]
        history = engine.records.history("ticket", ticket.id)
        assert [(e.action, e.instance_id, e.actor) for e in history] == [
            ("record_created", first.id, "li"),
            ("record_updated", first.id, "li"),
        ]
        assert history[1].details["before"] == {"status": "open", "vendor": None}
        # a second ticket from the same phone number finds the customer instead of creating one
        second = engine.runtime.start("ticket", variables={"customer": "星海"}, started_by="li")
        assert engine.runtime.variables(second.id)["opened"]["customer_id"] == ticket.customer_id
        assert engine.records.query("customer").count() == 1

    def test_payments_approved_by_a_process_count_as_collected(self, make_engine):
        engine, _ = make_engine()
        customer = engine.records.create("customer", {"name": "ACME"}, actor="li")
        contract = engine.records.create(
            "contract",
            {
                "customer_id": customer.id,
                "title": "Service",
                "items": [{"product": "A", "unit_price": "5000"}],
            },
            actor="li",
        )
        engine.records.set_contract_status(contract.id, "in_review", actor="li")
        engine.repository.deploy(
            {
                "audit.bpmn": service_process(
                    "audit",
                    [
                        ("pay", "crm_record_payment", {"contract_id": "contract_id", "amount": "'3000.00'"}),
                        (
                            "check",
                            "crm_set_payment_status",
                            {"payment_id": "pay['payment_id']", "status": "'approved'"},
                        ),
                        ("read", "crm_get_contract", {"contract_id": "contract_id"}),
                    ],
                )
            },
            deployed_by="designer",
        )
        refused = engine.runtime.start("audit", variables={"contract_id": contract.id}, started_by="li")
        assert (refused.state, refused.error_element) == ("error", "pay")  # not approved yet: no payments
        assert "approved contracts" in refused.error_message
        engine.records.set_contract_status(contract.id, "approved", actor="wang")
        instance = engine.runtime.start("audit", variables={"contract_id": contract.id}, started_by="li")
        assert instance.state == "running", instance.error_message
        data = engine.runtime.variables(instance.id)
        assert data["check"]["collected"] == "3000.00"
        assert (data["read"]["collected"], data["read"]["outstanding"], data["read"]["amount"]) == (
            "3000.00",
            "2000.00",
            "5000.00",
        )
        assert engine.records.get("contract", contract.id).collected == 3000

    def test_a_frozen_contract_refuses_the_process_and_the_attempt_is_audited(self, make_engine):
        engine, _ = make_engine()
        customer = engine.records.create("customer", {"name": "ACME"}, actor="li")
        contract = engine.records.create(
            "contract", {"customer_id": customer.id, "title": "T", "amount": 10}, actor="li"
        )
        engine.records.set_contract_status(contract.id, "in_review", actor="li")
        engine.records.set_contract_status(contract.id, "approved", actor="wang")
        engine.repository.deploy(
            {
                "back.bpmn": service_process(
                    "back",
                    [("set", "crm_set_contract_status", {"contract_id": "contract_id", "status": "'draft'"})],
                )
            },
            deployed_by="designer",
        )
        instance = engine.runtime.start("back", variables={"contract_id": contract.id}, started_by="li")
        assert (instance.state, instance.error_element) == ("error", "set")
        assert "frozen" in instance.error_message
        assert engine.records.get("contract", contract.id).status == "approved"
        assert _retry_jobs(engine) == []  # a rule, not an outage: no automatic retry
        refused = [
            e
            for e in engine.records.history("contract", contract.id)
            if e.action == "contract_change_refused"
        ]
        assert [(e.instance_id, e.details["attempt"]) for e in refused] == [
            (instance.id, "status approved -> draft")
        ]


def _retry_jobs(engine: Engine) -> list[tuple]:
    from sqlalchemy import select

    from engine.models import Job

    with engine.db.unit_of_work(write=False) as uow:
        rows = uow.session.execute(
            select(Job.instance_id, Job.state, Job.attempts, Job.due_at).where(Job.kind == "retry")
        ).all()
    return [tuple(r) for r in rows]


class TestFailures:
    def test_smtp_down_retries_with_back_off_then_an_incident_and_a_retry_continues(self, make_engine, smtp):
        engine, clock = make_engine()
        engine.repository.deploy(
            {
                "notify.bpmn": service_process(
                    "notify",
                    [
                        (
                            "mail",
                            "send_mail",
                            {"to": "'amy'", "template": "'task_waiting'", "values": "{'task': 'X'}"},
                        )
                    ],
                )
            },
            deployed_by="designer",
        )
        started = clock.now
        instance = engine.runtime.start("notify", started_by="li")  # nothing listens on smtp.port yet
        assert (instance.state, instance.error_element) == ("error", "mail")
        assert "SMTP server" in instance.error_message
        assert _retry_jobs(engine) == [(instance.id, "pending", 0, started + timedelta(seconds=5))]

        runner = JobRunner(engine, owner="test")
        assert runner.run_once() == []  # not due before its back-off
        waits = []
        for _attempt in range(5):
            due = _retry_jobs(engine)[0][3]
            waits.append(due - clock.now)
            clock.now = due
            outcomes = runner.run_once()
            assert len(outcomes) == 1 and not outcomes[0].ok
        assert waits == [timedelta(seconds=s) for s in (5, 10, 20, 40, 80)]  # back-off between attempts
        assert _retry_jobs(engine)[0][:3] == (instance.id, "failed", 5)
        incidents = engine.management.failed_jobs()
        assert [(i["instance_id"], i["kind"], i["attempts"]) for i in incidents] == [
            (instance.id, "retry", 5)
        ]
        assert "incident" in audit_actions(engine, instance.id)
        assert engine.runtime.get(instance.id).state == "error"
        assert smtp.inbox.messages == []

        smtp.start()  # the cause is fixed: a retry continues the instance from the failed step
        retried = engine.runtime.retry(instance.id, actor="wang")
        assert retried.state == "running", retried.error_message
        assert [t.element_id for t in engine.tasks.query().instance(instance.id).open().list()] == ["wait"]
        assert len(smtp.inbox.messages) == 1 and smtp.inbox.messages[0]["Subject"] == "To do: X"
        assert engine.runtime.variables(instance.id)["mail"]["sent"] == 1
        assert _retry_jobs(engine) == [] and engine.management.failed_jobs() == []

    def test_a_flaky_operation_recovers_on_the_scheduled_retries_without_losing_the_step(self, make_engine):
        operation, calls = flaky(failures=2)
        engine, clock = make_engine(flaky=operation)
        engine.repository.deploy(
            {"f.bpmn": service_process("f", [("sync", "flaky", {"name": "'ERP 客户'"})])},
            deployed_by="designer",
        )
        instance = engine.runtime.start("f", started_by="li")
        assert instance.state == "error"
        assert engine.records.query("customer").count() == 0  # the failed call's write rolled back
        runner = JobRunner(engine, owner="test")
        clock.now += timedelta(seconds=5)
        assert [o.ok for o in runner.run_once()] == [False]  # second call fails too
        assert engine.runtime.get(instance.id).state == "error"
        clock.now += timedelta(seconds=10)
        assert [o.ok for o in runner.run_once()] == [True]  # third call works
        assert calls["n"] == 3
        found = engine.runtime.get(instance.id)
        assert found.state == "running" and found.error_element is None
        assert engine.runtime.variables(instance.id)["sync"]["calls"] == 3
        assert [c.name for c in engine.records.query("customer").list()] == ["ERP 客户"]  # written once
        assert [t.element_id for t in engine.tasks.query().instance(instance.id).open().list()] == ["wait"]
        assert _retry_jobs(engine) == []
        actions = audit_actions(engine, instance.id)
        assert actions.count("instance_error") == 2 and actions.count("instance_retried") == 2

    def test_an_unknown_operation_is_an_error_without_retry(self, make_engine):
        engine, _ = make_engine()
        engine.repository.deploy(
            {"u.bpmn": service_process("u", [("x", "no_such_operation", {})])}, deployed_by="designer"
        )
        instance = engine.runtime.start("u", started_by="li")
        assert (instance.state, instance.error_element) == ("error", "x")
        assert "unknown operation" in instance.error_message
        assert _retry_jobs(engine) == []
