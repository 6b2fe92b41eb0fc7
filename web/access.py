"""What a principal may see and do: the one place the web layer decides authorization.

- An employee sees tasks assigned to them, offered to them or their groups, or that they handled,
  and the instances they started or took part in; they act only on tasks assigned to them or
  offered to them while unassigned.
- A manager also sees what was started by the people of the departments they manage.
- An administrator sees and acts on everything.
Something that exists but is not visible answers 404 (its existence is not revealed); something
visible that the principal may not change answers 403.
"""

from __future__ import annotations

from flask import g

from engine.errors import ConflictError, NotAllowedError, NotFoundError
from engine.results import ProcessInstance, UserTask
from engine.runtime import InstanceQuery
from engine.tasks import TaskQuery
from web.security import Principal, engine

SCOPES = ("mine", "group", "all")


def managed_starters(principal: Principal) -> tuple[str, ...]:
    """Usernames in the departments (and sub-departments) a manager manages."""
    if principal.role != "manager":
        return ()
    if "managed_starters" not in g:
        identity = engine().identity
        names: set[str] = set()
        for department in identity.departments_managed_by(principal.username):
            names.update(
                u.username for u in identity.users().department(department.id, include_sub=True).list()
            )
        g.managed_starters = tuple(sorted(names - {principal.username}))
    return g.managed_starters


def task_query(principal: Principal, scope: str = "all") -> TaskQuery:
    query = engine().tasks.query()
    if scope == "mine":
        return query.assignee(principal.username)
    if scope == "group":
        return query.group_pool(principal.username, principal.groups)
    if principal.is_admin:
        return query
    return query.visible_to(principal.username, principal.groups, starters=managed_starters(principal))


def instance_query(principal: Principal) -> InstanceQuery:
    query = engine().runtime.query()
    if principal.is_admin:
        return query
    return query.involving(principal.username, principal.groups, starters=managed_starters(principal))


def visible_task(principal: Principal, task_id: str) -> UserTask:
    task = engine().tasks.get(task_id)  # NotFoundError for unknown ids
    me = principal.username
    if principal.is_admin or me in (task.assignee, task.claimed_by, task.completed_by):
        return task  # the common cases, decided on the row already read
    if was_offered(principal, task) or task_query(principal).id(task_id).count():
        return task
    raise NotFoundError(f"task {task_id} not found")


def actionable_task(principal: Principal, task_id: str) -> UserTask:
    """A task the principal may claim, complete or hand over (403 if visible but not theirs)."""
    task = visible_task(principal, task_id)
    if task.state != "ready":
        raise ConflictError("this task is no longer open: someone handled it first")
    if principal.is_admin or may_act(principal, task):
        return task
    raise NotAllowedError("this task is not assigned or offered to you")


def was_offered(principal: Principal, task: UserTask) -> bool:
    """Offered to the principal or one of their groups while nobody holds it, or once it closed: a
    colleague who opens a task someone of the group already completed learns so (409), not 404."""
    return (task.assignee is None or task.state != "ready") and _offered(principal, task)


def may_act(principal: Principal, task: UserTask) -> bool:
    if task.assignee is not None:
        return task.assignee == principal.username
    return _offered(principal, task)


def _offered(principal: Principal, task: UserTask) -> bool:
    return principal.username in task.candidate_users or bool(
        set(principal.groups) & set(task.candidate_groups)
    )


def visible_instance(principal: Principal, instance_id: str) -> ProcessInstance:
    instance = engine().runtime.get(instance_id)
    if principal.is_admin or instance_query(principal).id(instance_id).count():
        return instance
    raise NotFoundError(f"process instance {instance_id} not found")


def manageable_instance(principal: Principal, instance_id: str) -> ProcessInstance:
    """Cancel/suspend/resume: administrators, the instance's managers, and its starter (cancel only
    is checked by the caller)."""
    instance = visible_instance(principal, instance_id)
    if principal.is_admin or instance.started_by in managed_starters(principal):
        return instance
    if instance.started_by == principal.username:
        return instance
    raise NotAllowedError("only its starter, their manager or an administrator may change this instance")
