"""An instance's SLA clock: stopping it (a ticket waits on the customer or a vendor) and restarting it.

The clock is the instance row's ``sla_paused_at``: while it is set the instance has no timer job (its
timers stand still, ``engine.execution.timer_job_due``) and its tasks show the SLA state ``paused``.
Restarting moves every waiting timer and every open task's due date later by the time it stood still:
wall-clock time by default, or, for deadlines counted in working hours (``working=True``: a ticket's
SLA), the working time of the pause added along the business calendar, so a pause over a weekend or a
holiday gives back only the working hours it took (Friday 17:00 to Monday 09:00: one hour).
Both run inside an instance command (``engine.execution.mutate_instance``), on its live workflow and
session: ``RuntimeService.pause_sla``/``resume_sla`` call them, and so does a task with the property
``sla = pause`` when it opens and closes (``engine.task_properties``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.models import HumanTask
from engine.timers import shift_timers

if TYPE_CHECKING:
    from engine.context import EngineContext
    from engine.execution import LiveInstance


def stop_clock(
    ctx: EngineContext,
    session: Session,
    live: LiveInstance,
    now: datetime,
    *,
    actor: str | None,
    reason: str | None = None,
) -> None:
    """Stop a running clock (the caller checks that it runs) and audit it."""
    live.row.sla_paused_at = now
    ctx.audit(session, "sla_paused", actor=actor, instance_id=live.row.id, details={"reason": reason}, at=now)


def restart_clock(
    ctx: EngineContext,
    session: Session,
    live: LiveInstance,
    now: datetime,
    *,
    actor: str | None,
    reason: str | None = None,
    working: bool = False,
) -> timedelta:
    """Restart a stopped clock (the caller checks that it stands): timers and open tasks' due dates
    move later by the pause (its working time along the calendar when ``working``), which is returned."""
    row = live.row
    delta = now - row.sla_paused_at
    details: dict[str, object] = {"reason": reason, "paused_seconds": round(delta.total_seconds(), 3)}
    if working:
        calendar = ctx.calendar
        worked = calendar.working_time_between(row.sla_paused_at, now)
        details["paused_working_seconds"] = round(worked.total_seconds(), 3)

        def move(moment: datetime) -> datetime:
            return calendar.add_working_time(moment, worked)
    else:

        def move(moment: datetime) -> datetime:
            return moment + delta

    shift_timers(live.workflow, move)
    shift_open_task_dues(session, row.id, move)
    row.sla_paused_at = None
    ctx.audit(session, "sla_resumed", actor=actor, instance_id=row.id, details=details, at=now)
    return delta


def shift_open_task_dues(session: Session, instance_id: str, move: Callable[[datetime], datetime]) -> None:
    """Move the due and warning times of an instance's open tasks (a paused SLA clock)."""
    rows = session.execute(
        select(HumanTask.id, HumanTask.due_at, HumanTask.warn_at).where(
            HumanTask.instance_id == instance_id, HumanTask.state == "ready", HumanTask.due_at.is_not(None)
        )
    ).all()
    for task_id, due_at, warn_at in rows:
        session.execute(
            update(HumanTask)
            .where(HumanTask.id == task_id)
            .values(
                due_at=move(due_at),
                warn_at=move(warn_at) if warn_at else None,
                version=HumanTask.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
