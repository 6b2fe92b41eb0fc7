"""Messages and signals from outside: real engine, real database (SQLite and PostgreSQL), no mocks."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from engine.errors import ConflictError, NotFoundError, ValidationError
from engine.messaging import MessageResult, format_key
from engine.models import MessageSubscription
from tests import message_builders as mb
from web.cli import main


def _deploy(engine, **documents: bytes) -> None:
    for name, content in documents.items():
        engine.repository.deploy({f"{name}.bpmn": content}, deployed_by="designer")


def _open(engine, instance_id: str) -> list[str]:
    return sorted(t.element_id for t in engine.tasks.query().instance(instance_id).open().list())


def _subscriptions(engine, instance_id: str | None = None) -> list[tuple[str, str, str | None]]:
    m = MessageSubscription
    stmt = select(m.kind, m.message_name, m.correlation_key).order_by(m.id)
    if instance_id is not None:
        stmt = stmt.where(m.instance_id == instance_id)
    with engine.db.unit_of_work(write=False) as uow:
        return [tuple(row) for row in uow.session.execute(stmt).all()]


def _received(engine, instance_id: str, action: str = "message_received"):
    return engine.history.query().instance(instance_id).action(action).list()


class TestCorrelationKeys:
    def test_keys_are_sorted_pairs_of_strings(self):
        assert format_key({"region": "eu", "order_id": 42}) == "order_id=42,region=eu"
        assert format_key({"order_id": "42"}) == format_key({"order_id": 42})
        assert format_key({"a": "1,b=2"}) != format_key({"a": 1, "b": 2})
        assert format_key({}) is None and format_key(None) is None
        assert format_key({"k": "x" * 300}).startswith("#")


class TestCorrelatedMessages:
    def test_message_with_key_reaches_only_its_instance_and_its_variables_land(self, engine):
        _deploy(engine, orders=mb.message_catch())
        a = engine.runtime.start("order_payment", variables={"order_id": 42})
        b = engine.runtime.start("order_payment", variables={"order_id": 43})
        assert _subscriptions(engine, a.id) == [("message", "payment_received", "order_id=42")]
        assert _subscriptions(engine, b.id) == [("message", "payment_received", "order_id=43")]
        assert _open(engine, a.id) == [] and _open(engine, b.id) == []

        result = engine.messages.correlate(
            "payment_received", keys={"order_id": 42}, variables={"amount": 99.5, "payer": "li"}, actor="bank"
        )

        assert result == MessageResult(instance_id=a.id, started=False)
        assert _open(engine, a.id) == ["ship"]
        assert engine.runtime.variables(a.id) == {"order_id": 42, "amount": 99.5, "payer": "li"}
        assert _subscriptions(engine, a.id) == []
        assert _open(engine, b.id) == [] and "amount" not in engine.runtime.variables(b.id)
        assert _subscriptions(engine, b.id) == [("message", "payment_received", "order_id=43")]
        [entry] = _received(engine, a.id)
        assert entry.actor == "bank" and entry.element_id == "wait_payment"
        assert entry.details == {
            "name": "payment_received",
            "keys": {"order_id": 42},
            "variables": {"amount": 99.5, "payer": "li"},
        }

        # keys compare as strings: "43" reaches the instance whose order_id is the number 43
        second = engine.messages.correlate("payment_received", keys={"order_id": "43"}, actor="bank")
        assert second.instance_id == b.id and _open(engine, b.id) == ["ship"]
        assert engine.runtime.variables(b.id)["order_id"] == 43  # the instance keeps its own value

    def test_a_conversation_of_two_messages_on_one_key(self, engine):
        _deploy(engine, conversation=mb.conversation())
        a = engine.runtime.start("conversation", variables={"order_id": 42})
        b = engine.runtime.start("conversation", variables={"order_id": 43})
        engine.messages.correlate("payment_received", keys={"order_id": 42}, actor="bank")
        assert _subscriptions(engine, a.id) == [("message", "goods_shipped", "order_id=42")]
        # SpiffWorkflow now holds order_id=42 (a number) for the instance; a string key still fits
        result = engine.messages.correlate(
            "goods_shipped", keys={"order_id": "42"}, variables={"carrier": "sf"}, actor="depot"
        )
        assert result.instance_id == a.id and _open(engine, a.id) == ["close"]
        assert engine.runtime.variables(a.id)["carrier"] == "sf"
        with pytest.raises(NotFoundError):
            engine.messages.correlate("goods_shipped", keys={"order_id": 43}, actor="depot")
        assert _subscriptions(engine, b.id) == [("message", "payment_received", "order_id=43")]

    def test_message_variable_receives_the_whole_payload(self, engine):
        _deploy(engine, orders=mb.message_catch("with_var", variable="payment"))
        instance = engine.runtime.start("with_var", variables={"order_id": 7})
        engine.messages.correlate(
            "payment_received", keys={"order_id": 7}, variables={"paid": True}, actor="x"
        )
        variables = engine.runtime.variables(instance.id)
        assert variables["payment"] == {"order_id": 7, "paid": True}
        assert "paid" not in variables

    def test_no_waiting_instance_is_not_found(self, engine):
        _deploy(engine, orders=mb.message_catch())
        engine.runtime.start("order_payment", variables={"order_id": 1})
        with pytest.raises(
            NotFoundError, match="no instance waits for message 'payment_received' with key order_id=2"
        ):
            engine.messages.correlate("payment_received", keys={"order_id": 2}, actor="x")
        with pytest.raises(NotFoundError, match="without a correlation key"):
            engine.messages.correlate("payment_received", actor="x")  # the waiter needs a key
        with pytest.raises(NotFoundError, match="'nobody_listens'"):
            engine.messages.correlate("nobody_listens", actor="x")

    def test_two_waiters_without_keys_are_a_conflict(self, engine):
        _deploy(engine, receiver=mb.receive_task())
        first = engine.runtime.start("receiver")
        second = engine.runtime.start("receiver")
        with pytest.raises(ConflictError, match="2 receivers") as caught:
            engine.messages.correlate("goods_delivered", actor="x")
        assert first.id in caught.value.message and second.id in caught.value.message
        assert _open(engine, first.id) == [] and _open(engine, second.id) == []
        assert len(_subscriptions(engine)) == 2

    def test_a_key_the_instance_cannot_compute_yet_matches_nothing(self, engine):
        _deploy(engine, orders=mb.message_catch())
        instance = engine.runtime.start("order_payment")  # no order_id in its data
        assert instance.state == "running"
        [(_, _, key)] = _subscriptions(engine, instance.id)
        assert key is not None and key.startswith("!")
        with pytest.raises(NotFoundError):
            engine.messages.correlate("payment_received", actor="x")

    def test_retrieval_expression_must_be_readable_from_the_message(self, engine):
        _deploy(engine, orders=mb.message_catch("nested", expression="order['id']"))
        instance = engine.runtime.start("nested", variables={"order": {"id": 5}})
        assert _subscriptions(engine, instance.id) == [("message", "payment_received", "order_id=5")]
        with pytest.raises(ValidationError, match="order\\['id'\\]"):
            engine.messages.correlate("payment_received", keys={"order_id": 5}, actor="x")
        assert _open(engine, instance.id) == []  # nothing changed
        engine.messages.correlate(
            "payment_received", keys={"order_id": 5}, variables={"order": {"id": 5, "paid": 1}}, actor="x"
        )
        assert _open(engine, instance.id) == ["ship"]

    def test_bad_input_is_refused(self, engine):
        with pytest.raises(ValidationError):
            engine.messages.correlate("m", variables={"not a name": 1}, actor="x")
        with pytest.raises(ValidationError):
            engine.messages.correlate("m", keys={"a=b": 1}, actor="x")
        with pytest.raises(ValidationError):
            engine.messages.correlate("", actor="x")


class TestConcurrentMessages:
    def test_the_same_message_sent_eight_times_at_once_is_caught_once(self, engine):
        _deploy(engine, orders=mb.message_catch())
        instance = engine.runtime.start("order_payment", variables={"order_id": 5})
        barrier, lock = threading.Barrier(8), threading.Lock()
        outcomes: list[object] = []

        def send(index: int) -> None:
            barrier.wait()
            try:
                result = engine.messages.correlate(
                    "payment_received", keys={"order_id": 5}, variables={"n": index}, actor=f"s{index}"
                )
            except (ConflictError, NotFoundError) as exc:
                result = exc
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        delivered = [o for o in outcomes if isinstance(o, MessageResult)]
        assert len(outcomes) == 8 and delivered == [MessageResult(instance.id, False)], outcomes
        [entry] = _received(engine, instance.id)
        assert engine.runtime.variables(instance.id)["n"] == entry.details["variables"]["n"]
        assert _open(engine, instance.id) == ["ship"]


class TestMessageShapes:
    def test_message_start_event_starts_an_instance(self, engine):
        _deploy(engine, ticket=mb.message_start())
        result = engine.messages.correlate(
            "ticket_raised", keys={"customer": "c-1"}, variables={"title": "printer on fire"}, actor="mail"
        )
        assert result.started is True
        instance = engine.runtime.get(result.instance_id)
        assert instance.definition_key == "ticket" and instance.state == "running"
        assert instance.started_by == "mail"
        assert _open(engine, instance.id) == ["triage"]
        assert engine.runtime.variables(instance.id) == {"customer": "c-1", "title": "printer on fire"}
        [entry] = _received(engine, instance.id)
        assert entry.element_id == "raised" and entry.details["started"] == "ticket:1"
        again = engine.messages.correlate("ticket_raised", actor="mail")
        assert again.started and again.instance_id != instance.id

    def test_receive_task(self, engine):
        _deploy(engine, receiver=mb.receive_task())
        instance = engine.runtime.start("receiver")
        result = engine.messages.correlate("goods_delivered", variables={"pallets": 3}, actor="dock")
        assert result == MessageResult(instance.id, False)
        assert _open(engine, instance.id) == ["check"]
        assert engine.runtime.variables(instance.id)["pallets"] == 3
        assert _received(engine, instance.id)[0].element_id == "receive"

    def test_message_boundary_event_interrupts_the_user_task(self, engine):
        _deploy(engine, cancellable=mb.boundary_message())
        instance = engine.runtime.start("cancellable")
        [work] = engine.tasks.query().instance(instance.id).open().list()
        assert work.element_id == "work"
        engine.messages.correlate("order_cancelled", variables={"reason": "customer"}, actor="shop")
        assert engine.tasks.get(work.id).state == "cancelled"
        assert _open(engine, instance.id) == ["refund"]
        assert engine.runtime.variables(instance.id)["reason"] == "customer"
        assert _subscriptions(engine, instance.id) == []
        cancelled = engine.history.query().instance(instance.id).action("task_cancelled").list()
        assert [e.task_id for e in cancelled] == [work.id]

    def test_event_gateway_takes_the_message_path(self, engine):
        _deploy(engine, race=mb.event_gateway())
        instance = engine.runtime.start("race")
        assert engine.runtime.get(instance.id).next_timer_due is not None
        assert _subscriptions(engine, instance.id) == [("message", "reply_received", None)]
        engine.messages.correlate("reply_received", variables={"answer": "yes"}, actor="mail")
        assert _open(engine, instance.id) == ["handle_reply"]
        assert engine.runtime.variables(instance.id)["answer"] == "yes"
        assert engine.runtime.get(instance.id).next_timer_due is None  # the timer branch is gone
        assert engine.management.acquire_due_jobs("nobody") == []
        assert _subscriptions(engine, instance.id) == []

    def test_message_to_a_suspended_instance_is_a_conflict(self, engine):
        _deploy(engine, receiver=mb.receive_task())
        instance = engine.runtime.start("receiver")
        engine.runtime.suspend(instance.id, actor="admin")
        with pytest.raises(ConflictError, match="suspended"):
            engine.messages.correlate("goods_delivered", actor="x")
        engine.runtime.resume(instance.id, actor="admin")
        engine.messages.correlate("goods_delivered", actor="x")
        assert _open(engine, instance.id) == ["check"]


class TestSignals:
    def test_signal_reaches_every_waiter_and_starts_a_process(self, engine):
        _deploy(engine, waiter=mb.signal_catch(variable="closing"), starter=mb.signal_start())
        waiting = [engine.runtime.start("signal_waiter").id for _ in range(3)]
        reached = engine.messages.broadcast_signal("market_closed", variables={"at": "17:30"}, actor="clock")
        assert reached[:3] == waiting and len(reached) == 4
        started = engine.runtime.get(reached[3])
        assert started.definition_key == "signal_started" and _open(engine, started.id) == ["report"]
        assert engine.runtime.variables(started.id)["at"] == "17:30"  # no variableName: merged
        for instance_id in waiting:
            assert _open(engine, instance_id) == ["after_signal"]
            assert engine.runtime.variables(instance_id) == {"closing": {"at": "17:30"}}
            [entry] = _received(engine, instance_id, "signal_received")
            assert entry.details["name"] == "market_closed" and entry.actor == "clock"
        assert _subscriptions(engine) == []

    def test_nobody_listening_is_not_an_error(self, engine):
        assert engine.messages.broadcast_signal("into_the_void", actor="x") == []

    def test_one_failing_instance_does_not_stop_the_others(self, engine):
        _deploy(engine, waiter=mb.signal_catch())
        first, stuck, last = (engine.runtime.start("signal_waiter").id for _ in range(3))
        engine.runtime.suspend(stuck, actor="admin")
        reached = engine.messages.broadcast_signal("market_closed", actor="clock")
        assert reached == [first, last]
        assert _open(engine, stuck) == [] and _open(engine, last) == ["after_signal"]
        [failure] = engine.history.query().instance(stuck).action("signal_failed").list()
        assert "suspended" in failure.details["error"]
        assert _subscriptions(engine, stuck) == [("signal", "market_closed", None)]


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SECRET_KEY", "cli-test")
    monkeypatch.setenv("BATON_SCHEDULER", "off")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    assert invoke("init").exit_code == 0
    return invoke


class TestCli:
    def test_message_and_signal_commands(self, cli, tmp_path):
        for name, content in {"orders": mb.message_catch(), "waiter": mb.signal_catch()}.items():
            path = tmp_path / f"{name}.bpmn"
            path.write_bytes(content)
            assert cli("deploy", str(path)).exit_code == 0
        started = cli("start", "order_payment", "--var", "order_id=42")
        instance_id = started.output.split()[1]
        cli("start", "signal_waiter")

        sent = cli(
            "message", "payment_received", "--key", "order_id=42", "--var", "paid=true", "--as", "bank"
        )
        assert sent.exit_code == 0, sent.output
        assert f"delivered to {instance_id}" in sent.output and "running" in sent.output

        missing = cli("message", "payment_received", "--key", "order_id=42")
        assert missing.exit_code == 1
        assert "no instance waits for message 'payment_received' with key order_id=42" in missing.output

        signalled = cli("signal", "market_closed", "--var", "at=17")
        assert signalled.exit_code == 0 and "reached 1 instance(s)" in signalled.output
        assert cli("signal", "nothing").output.startswith("signal nothing: reached 0")
