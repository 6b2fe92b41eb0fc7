"""Reading and adjusting the timers a live workflow waits on (SpiffWorkflow keeps no clock of ours).

A waiting timer's due time is in the task's ``internal_data['event_value']``: an ISO string for
durations and dates, ``{'cycles', 'next', 'duration'}`` for cycles (see ENGINE-NOTES).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import CycleTimerEventDefinition, TimerEventDefinition
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.task import Task


def _timer_tasks(workflow: BpmnWorkflow) -> list[Task]:
    return [
        task
        for task in workflow.event_manager.tasks.values()
        if isinstance(
            getattr(task.task_spec, "event_definition", None), TimerEventDefinition | MultipleEventDefinition
        )
    ]


def waiting_timers(workflow: BpmnWorkflow) -> dict[str, tuple[str, Any]]:
    """Waiting timer tasks: id -> (element id, a copy of its event value)."""
    found = {}
    for task in _timer_tasks(workflow):
        value = task.internal_data.get("event_value")
        found[str(task.id)] = (task.task_spec.bpmn_id, dict(value) if isinstance(value, dict) else value)
    return found


def collapse_missed_cycles(workflow: BpmnWorkflow, now: datetime) -> dict[str, int]:
    """Skip the occurrences of cycle timers that were missed, keeping the latest one due.

    Returns task id -> number of occurrences skipped (each one fewer remaining cycle).
    """
    skipped: dict[str, int] = {}
    for task in _timer_tasks(workflow):
        if not isinstance(task.task_spec.event_definition, CycleTimerEventDefinition):
            continue
        value = task.internal_data.get("event_value")
        if not isinstance(value, dict) or value.get("cycles", 0) == 0 or not value.get("duration"):
            continue
        step = timedelta(seconds=value["duration"])
        due = datetime.fromisoformat(value["next"])
        missed = 0
        while due + step <= now and value["cycles"] - missed != 1:
            due += step
            missed += 1
        if missed:
            value["next"] = due.isoformat()
            if value["cycles"] > 0:
                value["cycles"] -= missed
            skipped[str(task.id)] = missed
    return skipped


def shift_timers(workflow: BpmnWorkflow, delta: timedelta) -> int:
    """Move every waiting timer later by ``delta`` (an SLA clock paused for that long)."""
    moved = 0
    for task in _timer_tasks(workflow):
        value = task.internal_data.get("event_value")
        if isinstance(value, dict) and value.get("next"):
            value["next"] = (datetime.fromisoformat(value["next"]) + delta).isoformat()
        elif isinstance(value, str):
            moment = TimerEventDefinition.get_datetime(value)
            if moment.tzinfo is None:
                moment = moment.astimezone()
            task.internal_data["event_value"] = (moment.astimezone(UTC) + delta).isoformat()
        else:
            continue
        moved += 1
    return moved
