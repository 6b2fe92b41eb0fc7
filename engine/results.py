"""Plain immutable values the engine facade returns: never ORM rows, never SpiffWorkflow objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
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
    starter_department_id: int | None = None  # the starter's department when it started


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


# -- measures (engine/measures.py) -------------------------------------------------------------


@dataclass(frozen=True)
class CycleTime:
    """Start-to-end time of the instances that completed in the range (cancelled ones are no cycle)."""

    count: int
    average_seconds: float | None
    p50_seconds: float | None
    p90_seconds: float | None


@dataclass(frozen=True)
class ThroughputPoint:
    """One day (or week, from its Monday) in the company's time zone."""

    day: date
    started: int
    finished: int


@dataclass(frozen=True)
class SlaFigures:
    with_due: int  # human tasks with a due date
    breached: int  # completed after their due date, or still open past it
    rate: float | None  # breached / with_due


@dataclass(frozen=True)
class StepMeasure:
    """One task element (``element_id``): the human tasks created in the range."""

    element_id: str
    name: str | None
    entered: int
    completed: int
    open: int
    cancelled: int
    average_dwell_seconds: float | None  # created -> completed, over the completed ones
    with_due: int
    breached: int


@dataclass(frozen=True)
class ProcessMeasures:
    key: str
    version: int | None  # None: every version
    start: datetime
    end: datetime  # exclusive
    bucket: str  # day | week
    time_zone: str
    states: dict[str, int]  # instances started in the range, by current state
    started: int
    finished: int  # instances that ended (completed or cancelled) in the range
    cycle_time: CycleTime
    throughput: tuple[ThroughputPoint, ...]
    sla: SlaFigures
    steps: tuple[StepMeasure, ...]


# -- history retention (engine/retention.py) ---------------------------------------------------


@dataclass(frozen=True)
class RetentionReport:
    """What one retention run did (or, with ``dry_run``, would do)."""

    days: int
    cutoff: datetime  # instances that ended before this
    mode: str  # archive (a gzip JSON file per instance) | purge
    archive_dir: str | None
    dry_run: bool
    instance_ids: tuple[str, ...]  # archived (or eligible, on a dry run)
    attachments_removed: int
    remaining: int  # eligible instances left for the next run (the run stops at its limit)


@dataclass(frozen=True)
class ArchivedState:
    """An instance whose engine state retention removed: when, how and where it went."""

    instance_id: str
    at: datetime
    mode: str  # archive | purge
    file: str | None
    attachments_removed: int


# -- instance tracking and intervention (engine/modification.py, engine/version_migration.py) ------


@dataclass(frozen=True)
class StepTarget:
    """A flow node a manager may move an instance to."""

    element_id: str
    name: str | None
    # userTask | manualTask | scriptTask | businessRuleTask | subProcess | multiInstance | task | event
    kind: str


@dataclass(frozen=True)
class InstancePath:
    """What an instance's diagram marks: element ids done, active and failed, and the flows taken
    as (source element, target element) pairs."""

    completed: tuple[str, ...]
    active: tuple[str, ...]
    errored: tuple[str, ...]
    taken: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MigrationCheck:
    """Whether one instance can move to another version of its definition, and if not, why."""

    instance_id: str
    business_key: str | None
    state: str
    from_version: int
    to_version: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class MigrationOutcome:
    """What a batch migration did to one instance: moved, or left where it was and why."""

    instance_id: str
    migrated: bool
    problems: tuple[str, ...] = ()
