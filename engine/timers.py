"""Reading and adjusting the timers a live workflow waits on (SpiffWorkflow keeps no clock of ours).

A waiting timer's due time is in the task's ``internal_data['event_value']``: an ISO string for
durations and dates, ``{'cycles', 'next', 'duration'}`` for cycles (see ENGINE-NOTES).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def is_cycle(task: Task) -> bool:
    return isinstance(getattr(task.task_spec, "event_definition", None), CycleTimerEventDefinition)


def timer_due(task: Task) -> datetime | None:
    """When a waiting timer task is next due (its earliest timer); None when nothing is pending."""
    times = _due_times(task.internal_data.get("event_value"))
    return min(times) if times else None


def due_timers(workflow: BpmnWorkflow, now: datetime) -> list[tuple[datetime, Task]]:
    """The waiting timer tasks due at ``now`` or before, earliest first."""
    found = [(due, task) for task in _timer_tasks(workflow) if (due := timer_due(task)) and due <= now]
    return sorted(found, key=lambda pair: pair[0])


def skip_cycles(task: Task, until: datetime, *, keep_due: bool = True) -> int:
    """Skip occurrences of a cycle timer due at ``until`` or before; returns how many were skipped.

    With ``keep_due`` the latest occurrence up to ``until`` stays due (the one that fires for all the
    missed ones); without it every occurrence up to ``until`` is skipped (the cycle already fired).
    Skipping uses up the cycle's remaining repetitions as firing would (``R3``: three in all).
    """
    value = task.internal_data.get("event_value")
    if not is_cycle(task) or not isinstance(value, dict) or not value.get("duration"):
        return 0
    step = timedelta(seconds=value["duration"])
    due = _aware(datetime.fromisoformat(value["next"]))
    cycles = value.get("cycles", 0)
    missed = 0
    while cycles != 0 and (due + step <= until if keep_due else due <= until):
        if keep_due and cycles == 1:
            break  # the last repetition: it fires, it is not skipped
        due += step
        cycles = cycles - 1 if cycles > 0 else cycles
        missed += 1
    if missed:
        value["next"], value["cycles"] = due.isoformat(), cycles
    return missed


def next_timer_due(workflow: BpmnWorkflow) -> datetime | None:
    """Earliest due time of the timers the workflow waits on (what its timer job is due at)."""
    return min((due for task in _timer_tasks(workflow) if (due := timer_due(task))), default=None)


def collapse_missed_cycles(workflow: BpmnWorkflow, now: datetime) -> dict[str, int]:
    """Skip the occurrences of cycle timers that were missed, keeping the latest one due.

    Returns task id -> number of occurrences skipped (each one fewer remaining cycle).
    """
    skipped: dict[str, int] = {}
    for task in _timer_tasks(workflow):
        if missed := skip_cycles(task, now):
            skipped[str(task.id)] = missed
    return skipped


def _due_times(value: Any) -> list[datetime]:
    if isinstance(value, dict):
        if value.get("cycles", 1) == 0:
            return []
        return _due_times(value.get("next"))
    if isinstance(value, list | tuple):
        return [d for item in value for d in _due_times(item)]
    if isinstance(value, datetime):
        return [_aware(value)]
    if isinstance(value, str):
        try:
            return [_aware(TimerEventDefinition.get_datetime(value))]
        except (ValueError, TypeError):
            return []
    return []


def _aware(value: datetime) -> datetime:
    """SpiffWorkflow treats naive timer dates as server local time; compare everything in UTC."""
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(UTC)


@contextmanager
def timers_held(workflow: BpmnWorkflow) -> Iterator[None]:
    """Run engine steps without SpiffWorkflow's closing ``refresh_timers``.

    ``do_engine_steps`` ends by updating every waiting timer against the wall clock: a timer that
    is due turns READY there and is left unrun until the next engine steps. The scheduler fires
    timers one at a time, in due order, so it holds the others while it runs the steps of one.
    """
    if "refresh_timers" in vars(workflow):  # already held by an enclosing command
        yield
        return
    workflow.refresh_timers = lambda: None
    try:
        yield
    finally:
        del workflow.refresh_timers


def shift_timers(workflow: BpmnWorkflow, move: Callable[[datetime], datetime]) -> int:
    """Move every waiting timer to ``move(when it was due)`` (an SLA clock paused: later by the pause)."""
    moved = 0
    for task in _timer_tasks(workflow):
        value = task.internal_data.get("event_value")
        if isinstance(value, dict) and value.get("next"):
            value["next"] = move(datetime.fromisoformat(value["next"])).isoformat()
        elif isinstance(value, str):
            moment = TimerEventDefinition.get_datetime(value)
            if moment.tzinfo is None:
                moment = moment.astimezone()
            task.internal_data["event_value"] = move(moment.astimezone(UTC)).isoformat()
        else:
            continue
        moved += 1
    return moved
