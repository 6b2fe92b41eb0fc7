"""BPMN timers fired by the scheduler with short real timers (no poking at engine internals)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

from engine.scheduler import JobRunner
from tests import bpmn_builders as b


def _run_until(runner: JobRunner, condition, *, timeout: float = 10.0, interval: float = 0.1) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        runner.run_once()
        if condition():
            return time.monotonic() - began
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class TestBoundaryTimers:
    def test_interrupting_timer_moves_the_task_to_the_escalation_path(self, engine):
        engine.repository.deploy({"t.bpmn": b.boundary_timer("sla", '"PT1S"')}, deployed_by="d")
        instance = engine.runtime.start("sla")
        work = engine.tasks.query().instance(instance.id).open().first()
        assert work.element_id == "work"
        due = engine.runtime.get(instance.id).next_timer_due
        assert due is not None
        runner = JobRunner(engine, owner="test")
        assert runner.run_once() == []  # not due yet: nothing fires early

        def escalated() -> bool:
            return [t.element_id for t in engine.tasks.query().instance(instance.id).open().list()] == [
                "escalated"
            ]

        waited = _run_until(runner, escalated)
        assert 0.5 < waited < 5
        assert engine.tasks.get(work.id).state == "cancelled"
        assert engine.runtime.get(instance.id).next_timer_due is None
        fired = engine.history.query().instance(instance.id).action("timer_fired").list()
        assert [(e.element_id, e.actor) for e in fired] == [("timer", "scheduler")]

    def test_non_interrupting_cycle_fires_three_times_while_the_task_stays_open(self, engine):
        engine.repository.deploy(
            {"t.bpmn": b.boundary_timer("remind", '"R3/PT1S"', interrupting=False, timer="timeCycle")},
            deployed_by="d",
        )
        instance = engine.runtime.start("remind")
        work = engine.tasks.query().instance(instance.id).open().first()
        runner = JobRunner(engine, owner="test")

        def reminders() -> int:
            return engine.tasks.query().instance(instance.id).element("reminder").count()

        _run_until(runner, lambda: reminders() == 3, timeout=15)
        assert engine.tasks.get(work.id).state == "ready"
        time.sleep(1.5)
        runner.run_once()
        assert reminders() == 3  # R3: no fourth reminder
        assert engine.runtime.get(instance.id).next_timer_due is None
        engine.tasks.complete(work.id, actor="u")
        for task in engine.tasks.query().instance(instance.id).open().list():
            engine.tasks.complete(task.id, actor="u")
        assert engine.runtime.get(instance.id).state == "completed"


class TestTimerStartEvents:
    def test_cycle_starts_instances_on_schedule_until_replaced(self, engine):
        engine.repository.deploy({"daily.bpmn": b.timer_start("daily", '"R3/PT1S"')}, deployed_by="d")
        assert engine.runtime.query().definition_key("daily").count() == 0  # deploying starts nothing
        runner = JobRunner(engine, owner="test")

        def started() -> int:
            return engine.runtime.query().definition_key("daily").count()

        _run_until(runner, lambda: started() == 3, timeout=15)
        for instance in engine.runtime.query().definition_key("daily").list():
            assert instance.started_by == "scheduler" and instance.state == "running"
            assert engine.tasks.query().instance(instance.id).open().first().element_id == "handle"
        time.sleep(1.5)
        runner.run_once()
        assert started() == 3  # R3: three starts, no more
        fired = engine.history.query().action("start_timer_fired").list()
        assert len(fired) == 3 and fired[-1].details["next"] is None

    def test_a_new_version_takes_the_schedule_over(self, engine):
        engine.repository.deploy({"t.bpmn": b.timer_start("hourly", '"R/PT1H"')}, deployed_by="d")
        engine.repository.deploy({"t.bpmn": b.timer_start("hourly", '"R/PT1S"')}, deployed_by="d")
        runner = JobRunner(engine, owner="test")
        _run_until(runner, lambda: engine.runtime.query().definition_key("hourly").count() >= 1)
        versions = {i.definition_version for i in engine.runtime.query().definition_key("hourly").list()}
        assert versions == {2}


class TestCatchTimers:
    def test_date_timer_with_a_time_zone(self, engine):
        engine.repository.deploy({"d.bpmn": b.intermediate_timer("dated", "wake_at")}, deployed_by="d")
        wake = (datetime.now(UTC) + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=8)))
        instance = engine.runtime.start("dated", variables={"wake_at": wake.isoformat()})
        assert engine.runtime.get(instance.id).next_timer_due == wake.astimezone(UTC)
        assert engine.tasks.query().instance(instance.id).open().count() == 0
        runner = JobRunner(engine, owner="test")
        _run_until(runner, lambda: engine.tasks.query().instance(instance.id).open().count() == 1)

    def test_event_gateway_takes_the_timer_path_when_no_message_comes(self, engine):
        engine.repository.deploy({"g.bpmn": b.event_gateway_timer("chaser", '"PT1S"')}, deployed_by="d")
        instance = engine.runtime.start("chaser")
        assert engine.runtime.get(instance.id).next_timer_due is not None
        runner = JobRunner(engine, owner="test")
        _run_until(runner, lambda: engine.tasks.query().instance(instance.id).open().count() == 1)
        assert engine.tasks.query().instance(instance.id).open().first().element_id == "chase"
        fired = engine.history.query().instance(instance.id).action("timer_fired").list()
        assert len(fired) == 1
