"""What a BPMN user task asks for with ``spiffworkflow:properties``, done when it opens or closes.

```xml
<bpmn:userTask id="vendor_work" name="厂商处理 Vendor works on it">
  <bpmn:extensionElements>
    <spiffworkflow:properties>
      <spiffworkflow:property name="sla" value="pause" />
    </spiffworkflow:properties>
  </bpmn:extensionElements>
</bpmn:userTask>
```

* ``sla`` = ``pause``: the instance's SLA clock stands still while the task is open (a ticket waiting on
  the customer or on a vendor). It stops when such a task opens and starts again when the last one
  closes, exactly as ``RuntimeService.pause_sla``/``resume_sla`` do (``engine.sla_clock``), audited with
  the actor of the command. A clock paused by hand is left alone until a pausing task closes.
* ``sla_time`` = ``working`` (on a pausing task): the deadlines are counted in working hours, so when
  the clock restarts they move by the pause's working time along the business calendar (a weekend
  or a holiday inside the pause gives nothing back); default ``wall``: by the time it stood still.
* ``cc`` = people (``${cc}``, ``lina, wangfang``, ``department_head('法务部')``): when the task opens,
  those users are copied on the instance (抄送): they may read it from then on (``cc_instances``). A
  variable may hold a list or a comma-separated text (a form's text field); unknown users are skipped.
* ``people.<name>`` = a people expression: when the task opens, the usernames it names are stored in the
  task's data under ``<name>``: one username (or None) for a ``manager(...)``/``department_head(...)``
  call, a list for anything else (``members('finance')``). Scripts, gateway conditions, multi-instance
  collections and service-task parameters cannot ask the org chart themselves; this answers for them.

``apply`` runs inside ``engine.execution.persist`` before the workflow is serialized, for the tasks that
opened or closed in the command, so what it writes commits (or rolls back) with the command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from SpiffWorkflow.task import Task
from sqlalchemy import Select, insert, select
from sqlalchemy.orm import Session

from engine.models import InstanceCc, UserAccount
from engine.people import OrgChart, names_one_person, org_chart, resolve_people
from engine.sla_clock import restart_clock, stop_clock

if TYPE_CHECKING:
    from engine.context import EngineContext
    from engine.execution import LiveInstance, Waits

SLA = "sla"
SLA_TIME = "sla_time"
CC = "cc"
PEOPLE = "people."
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEPARATORS = re.compile(r"[\s,，;；、]+")


def properties_of(task: Task) -> Mapping[str, str]:
    """The task's ``spiffworkflow:properties`` (name -> value)."""
    extensions = getattr(task.task_spec, "extensions", None)
    found = extensions.get("properties") if isinstance(extensions, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def pauses_sla(task: Task) -> bool:
    return str(properties_of(task).get(SLA, "")).strip().lower() == "pause"


def counts_working_time(task: Task) -> bool:
    return str(properties_of(task).get(SLA_TIME, "")).strip().lower() == "working"


def apply(
    ctx: EngineContext,
    session: Session,
    live: LiveInstance,
    after: Waits,
    *,
    actor: str | None,
    now: datetime,
) -> None:
    """Carry out the properties of the tasks that opened or closed in this command."""
    before = live.before.ready
    opened = [task for task_id, task in after.ready.items() if task_id not in before]
    closed = [task for task_id, task in before.items() if task_id not in after.ready]
    if not any(properties_of(task) for task in (*opened, *closed)):
        return  # the common case: one dictionary lookup per task that changed
    org = org_chart(session, initiator=live.row.started_by)
    for task in opened:
        properties = properties_of(task)
        for name, value in properties.items():
            variable = name[len(PEOPLE) :]
            if name.startswith(PEOPLE) and _NAME.match(variable):
                task.data[variable] = _people_value(str(value), task.data, org)
        if properties.get(CC):
            _copy(ctx, session, live.row.id, task, str(properties[CC]), org, actor=actor, now=now)
    _run_sla_clock(ctx, session, live, after, opened, closed, actor=actor, now=now)


def _people_value(raw: str, data: Mapping[str, Any], org: OrgChart) -> str | list[str] | None:
    names = list(resolve_people([raw], data, org))
    if names_one_person(raw):
        return names[0] if names else None
    return names


def _run_sla_clock(
    ctx: EngineContext,
    session: Session,
    live: LiveInstance,
    after: Waits,
    opened: list[Task],
    closed: list[Task],
    *,
    actor: str | None,
    now: datetime,
) -> None:
    waiting = next((task for task in after.ready.values() if pauses_sla(task)), None)
    if waiting is not None and live.row.sla_paused_at is None:
        if waiting in opened:
            stop_clock(ctx, session, live, now, actor=actor, reason=f"waiting: {_name(waiting)}")
    elif waiting is None and live.row.sla_paused_at is not None:
        ended = next((task for task in closed if pauses_sla(task)), None)
        if ended is not None:
            restart_clock(
                ctx,
                session,
                live,
                now,
                actor=actor,
                reason=f"done: {_name(ended)}",
                working=counts_working_time(ended),
            )


def _name(task: Task) -> str:
    return task.task_spec.bpmn_name or task.task_spec.bpmn_id or task.task_spec.name


def _copy(
    ctx: EngineContext,
    session: Session,
    instance_id: str,
    task: Task,
    raw: str,
    org: OrgChart,
    *,
    actor: str | None,
    now: datetime,
) -> None:
    """Copy the named users on the instance (each once); audited."""
    wanted = list(dict.fromkeys(_split(resolve_people([raw], task.data, org))))
    if not wanted:
        return
    known = set(
        session.scalars(
            select(UserAccount.username).where(
                UserAccount.username.in_(wanted), UserAccount.state == "active"
            )
        )
    )
    present = set(
        session.scalars(
            select(InstanceCc.username).where(
                InstanceCc.instance_id == instance_id, InstanceCc.username.in_(wanted)
            )
        )
    )
    new = [name for name in wanted if name in known and name not in present]
    unknown = [name for name in wanted if name not in known]
    if not new and not unknown:
        return  # the task opened again (a request sent back): everybody is copied already
    if new:
        session.execute(
            insert(InstanceCc),
            [
                {
                    "instance_id": instance_id,
                    "username": name,
                    "element_id": task.task_spec.bpmn_id,
                    "added_by": actor,
                    "added_at": now,
                }
                for name in new
            ],
        )
    ctx.audit(
        session,
        "instance_cc",
        actor=actor,
        instance_id=instance_id,
        task_id=str(task.id),
        element_id=task.task_spec.bpmn_id,
        details={"added": new, "unknown": unknown},
        at=now,
    )


def _split(names: Iterable[str]) -> list[str]:
    """``"lina, wangfang"`` (one form field) is two people."""
    return [part for name in names for part in _SEPARATORS.split(name) if part]


def cc_instances(user: str) -> Select:
    """Ids of the instances ``user`` is copied on: for ``InstanceQuery.involving`` (read-only access)."""
    return select(InstanceCc.instance_id).where(InstanceCc.username == user)
