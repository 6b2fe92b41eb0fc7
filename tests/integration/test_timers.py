"""BPMN timers fired by the scheduler with short real timers (no poking at engine internals)."""

from __future__ import annotations

import time

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
