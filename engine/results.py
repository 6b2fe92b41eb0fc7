"""Plain immutable values the engine facade returns: never ORM rows, never SpiffWorkflow objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ProcessDefinition:
    id: int
    key: str
    version: int
    name: str | None
    content_hash: str
    deployment_id: int
    deployed_by: str
    deployed_at: datetime


@dataclass(frozen=True)
class DeploymentResult:
    """What a deploy did: the definitions it touched and whether each is a new version."""

    deployment_id: int | None
    definitions: tuple[ProcessDefinition, ...]
    new_versions: tuple[str, ...]  # keys that got a new version
    unchanged: tuple[str, ...]  # keys whose latest version already has this exact content
    warnings: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ProcessInstance:
    id: str
    definition_id: int
    definition_key: str
    definition_version: int
    business_key: str | None
    state: str
    started_by: str | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    next_timer_due: datetime | None
    error_element: str | None
    error_message: str | None
    version: int
    variables: dict[str, Any] | None = None
    sla_paused_at: datetime | None = None


@dataclass(frozen=True)
class UserTask:
    id: str
    instance_id: str
    definition_key: str
    element_id: str
    name: str | None
    lane: str | None
    assignee: str | None
    candidate_users: tuple[str, ...]
    candidate_groups: tuple[str, ...]
    due_at: datetime | None
    warn_at: datetime | None
    sla_state: str | None  # on_track | warning | breached | paused; None without a due date
    priority: int
    form_key: str | None
    state: str
    created_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    completed_by: str | None
    completed_at: datetime | None
    version: int


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str | None
    action: str
    instance_id: str | None
    task_id: str | None
    element_id: str | None
    details: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Comment:
    id: int
    instance_id: str
    task_id: str | None
    author: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class Attachment:
    id: int
    instance_id: str
    task_id: str | None
    field: str
    filename: str
    content_type: str | None
    size: int
    uploaded_by: str
    created_at: datetime
