"""Start events that are not a person clicking "start": timers (daily jobs), messages and signals.

A SpiffWorkflow timer start event only delays an instance that already exists, so Baton runs them
itself: each deployed version with a timer start event gets a ``start_timer`` job; when it fires,
the scheduler starts a new instance of that version (its start event primed to fire at once) and
re-schedules the job for the next cycle in the same transaction, so a crash can neither lose nor
double a start. Deploying a new version moves the schedule to it; cycles missed while no scheduler
ran collapse into one start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from SpiffWorkflow.bpmn.specs.event_definitions.item_aware_event import SignalEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    DurationTimerEventDefinition,
    TimeDateEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.context import EngineContext
from engine.errors import ValidationError
from engine.models import Job, ProcessDefinition

TIMER_KINDS = {
    TimeDateEventDefinition: "date",
    DurationTimerEventDefinition: "duration",
    CycleTimerEventDefinition: "cycle",
}


def describe_start_events(spec: BpmnProcessSpec) -> list[dict[str, Any]]:
    """The typed start events of a process, as stored on its definition."""
    found = []
    for task_spec in spec.bpmn_start_events:
        definition = task_spec.event_definition
        element_id = task_spec.bpmn_id
        timer = TIMER_KINDS.get(type(definition))
        if timer is not None:
            found.append(
                {
                    "element_id": element_id,
                    "kind": "timer",
                    "timer": timer,
                    "expression": definition.expression,
                }
            )
        elif isinstance(definition, MessageEventDefinition):
            found.append({"element_id": element_id, "kind": "message", "name": definition.name})
        elif isinstance(definition, SignalEventDefinition):
            found.append({"element_id": element_id, "kind": "signal", "name": definition.name})
    return found


def _evaluate(ctx: EngineContext, expression: str) -> Any:
    try:
        return ctx.script_engine.environment.evaluate(expression, {})
    except Exception as exc:  # noqa: BLE001 - any failure is the designer's expression being wrong
        raise ValidationError(f"timer start expression {expression!r} failed: {exc}") from exc


def _as_utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else TimerEventDefinition.get_datetime(str(value))
    if moment.tzinfo is None:
        moment = moment.astimezone()  # SpiffWorkflow's rule: naive dates are server local time
    return moment.astimezone(UTC)


def first_run(ctx: EngineContext, event: dict[str, Any], now: datetime) -> tuple[datetime, dict[str, Any]]:
    """When a timer start event first fires, and the job payload that carries its cycle."""
    value = _evaluate(ctx, event["expression"])
    payload: dict[str, Any] = {"element_id": event["element_id"]}
    if event["timer"] == "date":
        return _as_utc(value), payload
    if event["timer"] == "duration":
        parsed = TimerEventDefinition.parse_iso_duration(str(value))
        return now + TimerEventDefinition.get_timedelta_from_start(parsed, now), payload
    cycles, start, duration = TimerEventDefinition.parse_iso_recurring_interval(str(value))
    payload.update(cycles=cycles, seconds=duration.total_seconds())
    return start.astimezone(UTC), payload


def schedule_start_timers(
    ctx: EngineContext, session: Session, definition: ProcessDefinition, now: datetime
) -> list[datetime]:
    """Move the start-timer schedule of ``definition.key`` to this version (called by deploy)."""
    older = select(ProcessDefinition.id).where(
        ProcessDefinition.key == definition.key, ProcessDefinition.id != definition.id
    )
    session.execute(delete(Job).where(Job.kind == "start_timer", Job.definition_id.in_(older)))
    dues = []
    for event in definition.start_events or []:
        if event["kind"] != "timer":
            continue
        due, payload = first_run(ctx, event, now)
        session.add(
            Job(
                kind="start_timer",
                definition_id=definition.id,
                due_at=due,
                state="pending",
                attempts=0,
                max_attempts=5,
                payload=payload,
                created_at=now,
            )
        )
        dues.append(due)
    return dues


def prime_timer_start(workflow: BpmnWorkflow, element_id: str, now: datetime) -> None:
    """Make the timer start event of a fresh instance fire at once (the schedule was ours)."""
    past = (now - timedelta(microseconds=1)).isoformat()
    for task in workflow.get_tasks():
        if task.task_spec.bpmn_id != element_id:
            continue
        if isinstance(task.task_spec.event_definition, CycleTimerEventDefinition):
            task.internal_data["event_value"] = {"cycles": 1, "next": past, "duration": 0}
        else:
            task.internal_data["event_value"] = past


def next_run(job_due: datetime, payload: dict[str, Any], now: datetime) -> tuple[datetime | None, int]:
    """The next due time after a firing, and how many cycles were skipped because they were missed.

    ``cycles`` counts the runs still to come including this one (-1: unbounded).
    """
    cycles = payload.get("cycles")
    if cycles is None:
        return None, 0  # date and duration start timers fire once
    remaining = cycles - 1 if cycles > 0 else cycles
    if remaining == 0:
        return None, 0
    step = timedelta(seconds=payload["seconds"])
    due, skipped = job_due + step, 0
    while due <= now and remaining != 0:
        due += step
        skipped += 1
        remaining = remaining - 1 if remaining > 0 else remaining
    if remaining == 0:
        return None, skipped
    payload["cycles"] = remaining
    return due, skipped
