"""SLA clocks: due dates and SLA states on human tasks, pausing and resuming, business-time timers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.errors import ConflictError
from engine.scheduler import JobRunner
from tests import bpmn_builders as b


def _due_task(pid: str, due: str) -> bytes:
    return (
        b.linear(pid, ["user:answer"])
        .decode()
        .replace(
            '<bpmn:userTask id="answer" name="answer" />',
            f'<bpmn:userTask id="answer" name="answer" camunda:dueDate="{due}" />',
        )
        .encode()
    )


class TestSlaStates:
    def test_task_moves_from_on_track_to_warning_to_breached(self, clocked):
        engine, clock = clocked
        engine.repository.deploy({"s.bpmn": _due_task("ticket", "PT10H")}, deployed_by="d")
        instance = engine.runtime.start("ticket")
        task = engine.tasks.query().instance(instance.id).open().first()
        assert task.due_at == clock.now + timedelta(hours=10)
        assert task.warn_at == clock.now + timedelta(hours=8)

        def state_now() -> tuple[str, list[str]]:
            found = engine.tasks.get(task.id).sla_state
            listed = [
                s
                for s in ("on_track", "warning", "breached")
                if engine.tasks.query().open().sla(s, clock.now).count()
            ]
            return found, listed

        assert state_now() == ("on_track", ["on_track"])
        clock.now += timedelta(hours=8, minutes=1)
        assert state_now() == ("warning", ["warning"])
        clock.now += timedelta(hours=2)
        assert state_now() == ("breached", ["breached"])

    def test_pause_and_resume_moves_the_due_date_by_the_pause(self, clocked):
        engine, clock = clocked
        engine.repository.deploy({"s.bpmn": _due_task("ticket2", "PT4H")}, deployed_by="d")
        instance = engine.runtime.start("ticket2")
        task = engine.tasks.query().instance(instance.id).open().first()
        clock.now += timedelta(hours=1)
        engine.runtime.pause_sla(instance.id, actor="agent", reason="waiting on customer")
        assert engine.tasks.get(task.id).sla_state == "paused"
        with pytest.raises(ConflictError):
            engine.runtime.pause_sla(instance.id, actor="agent")
        clock.now += timedelta(hours=30)  # the customer took a day to answer
        resumed = engine.runtime.resume_sla(instance.id, actor="agent", reason="customer replied")
        assert resumed.sla_paused_at is None
        moved = engine.tasks.get(task.id)
        assert moved.due_at == task.due_at + timedelta(hours=30) and moved.sla_state == "on_track"
        actions = [(e.action, e.actor) for e in engine.history.for_instance(instance.id)]
        assert ("sla_paused", "agent") in actions and ("sla_resumed", "agent") in actions
        paused = engine.history.query().instance(instance.id).action("sla_resumed").first()
        assert paused.details["paused_seconds"] == 30 * 3600


class TestPausedTimers:
    def test_paused_sla_timer_does_not_fire_and_resumes_later(self, engine):
        engine.repository.deploy({"t.bpmn": b.boundary_timer("paused_sla", '"PT1S"')}, deployed_by="d")
        instance = engine.runtime.start("paused_sla")
        first_due = engine.runtime.get(instance.id).next_timer_due
        engine.runtime.pause_sla(instance.id, actor="agent")
        runner = JobRunner(engine, owner="test")
        time.sleep(1.5)
        assert runner.run_once() == []  # paused: no job to fire
        assert engine.tasks.query().instance(instance.id).open().first().element_id == "work"
        engine.runtime.resume_sla(instance.id, actor="agent")
        new_due = engine.runtime.get(instance.id).next_timer_due
        assert new_due - first_due >= timedelta(seconds=1.4)
        deadline = time.monotonic() + 10
        while engine.tasks.query().instance(instance.id).element("escalated").count() == 0:
            assert time.monotonic() < deadline, "the resumed timer never fired"
            runner.run_once()
            time.sleep(0.1)


class TestBusinessTime:
    def test_timer_due_in_working_hours_across_a_weekend(self, engine):
        bpmn = b.boundary_timer("biz", "add_working_hours(raised_at, 8)", timer="timeDate")
        engine.repository.deploy({"t.bpmn": bpmn}, deployed_by="d")
        instance = engine.runtime.start("biz", variables={"raised_at": "2027-01-08T17:00:00+08:00"})
        # Friday 17:00 + 8 working hours (09-12, 13-18) -> Monday 11 Jan 17:00 Beijing time.
        assert engine.runtime.get(instance.id).next_timer_due == datetime(2027, 1, 11, 9, 0, tzinfo=UTC)
        assert engine.tasks.query().instance(instance.id).open().first().element_id == "work"

    def test_scripts_compute_due_dates_across_national_day_and_make_up_saturday(self, engine):
        script = (
            "after_holiday = add_working_hours(raised_at, 8)\non_make_up_day = add_working_hours(friday, 8)"
        )
        engine.repository.deploy(
            {"c.bpmn": b.linear("cal", [f"script:due:{script}", "user:wait"])}, deployed_by="d"
        )
        instance = engine.runtime.start(
            "cal",
            variables={"raised_at": "2026-09-30T15:00:00+08:00", "friday": "2026-10-09T17:00:00+08:00"},
        )
        data = engine.runtime.variables(instance.id)
        # 1-7 Oct are 国庆 holidays: Wed 30 Sep 15:00 + 8 h -> Thu 8 Oct 15:00.
        assert datetime.fromisoformat(data["after_holiday"]) == datetime(2026, 10, 8, 15, 0, tzinfo=_CST)
        # Sat 10 Oct is a make-up working day (调休): Fri 9 Oct 17:00 + 8 h -> Sat 10 Oct 17:00.
        assert datetime.fromisoformat(data["on_make_up_day"]) == datetime(2026, 10, 10, 17, 0, tzinfo=_CST)


_CST = timezone(timedelta(hours=8))
