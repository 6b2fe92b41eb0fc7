"""Moving running instances to another version of their definition (SpiffWorkflow's diff + migrate).

Not to be confused with engine/migrate.py (the database schema, Alembic).

``SpiffWorkflow.bpmn.util.diff.diff_workflow`` aligns every task of an instance with the new
version's specs (by element id, then by position for renamed elements); ``migrate_workflow`` swaps
the specs and resets the ready and waiting tasks, which re-predicts what follows them from the new
version. What cannot move, and why (the pre-check lists it, nothing is changed):

- a task the instance waits at, or will surely reach (not under a task that is reset), whose
  element the new version no longer has: Baton stores instances with a reference to their spec
  (engine/serialization.py), so every task of the tree must name an element of it;
- a step it went through that the new version no longer has, unless that step was a plain activity
  in a straight line (its predecessor led to it alone, it led to one task, no boundary event, no
  loop): such a step is taken out of the task tree, its successor hung under its predecessor, as if
  the new version's flow had always run that way. Its task rows, comments and audit entries stay
  (the history is the database's, not the tree's). A finished gateway, event, sub-process or loop
  that went away still blocks: a join or an event-based choice may read it;
- a sub-process or called process the new version no longer has.

Resetting a waiting timer restarts it; a timer whose element did not change keeps the due time it
had (its task keeps its id across the reset, so the old value is put back). The instance row then
points at the new definition, and the live-workflow cache (keyed by row version) picks the migrated
workflow up once the command commits, like any other change.
"""

from __future__ import annotations

from collections.abc import Iterable
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from SpiffWorkflow.bpmn.specs.mixins.manual_task import ManualTask
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask
from SpiffWorkflow.bpmn.specs.mixins.none_task import NoneTask
from SpiffWorkflow.bpmn.specs.mixins.script_task import ScriptEngineTask
from SpiffWorkflow.bpmn.specs.mixins.user_task import UserTask
from SpiffWorkflow.bpmn.util.diff import WorkflowDiff, diff_workflow, migrate_workflow
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.dmn.specs.business_rule_task_mixin import BusinessRuleTaskMixin
from SpiffWorkflow.task import Task, TaskState
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import results
from engine.bpmn import SERIALIZER_CONFIG, human_task_meta
from engine.context import EngineContext
from engine.errors import BatonError, ConflictError, NotFoundError
from engine.execution import (
    ERROR,
    RUNNING,
    SUSPENDED,
    Failure,
    LiveInstance,
    Mutation,
    advance,
    load_instance,
    mutate_instance,
    task_by_id,
)
from engine.models import HumanTask, ProcessDefinition, ProcessInstance
from engine.serialization import StateSerializer
from engine.timers import waiting_timers

MOVABLE = (RUNNING, SUSPENDED, ERROR)  # instance states that may change version
RESET = TaskState.READY | TaskState.WAITING  # what migrate_workflow resets (its default mask)
ACTIVE = RESET | TaskState.STARTED | TaskState.ERROR
_REGISTRY = BpmnWorkflowSerializer.configure(SERIALIZER_CONFIG)  # diff compares specs in this form


@dataclass(frozen=True)
class Plan:
    """The diffs of one instance against a new version, or why it cannot move; the finished steps
    the move takes out of the tree."""

    problems: tuple[str, ...]
    top: WorkflowDiff | None = None
    subprocesses: dict[UUID, WorkflowDiff | None] | None = None
    pruned: tuple[Task, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def plan(
    workflow: BpmnWorkflow, spec: BpmnProcessSpec, subprocess_specs: dict[str, BpmnProcessSpec], version: int
) -> Plan:
    """Compare an instance with a new version; the problems say what blocks the move, in words."""
    top, subs = diff_workflow(_REGISTRY, workflow, spec, subprocess_specs)
    problems: dict[str, None] = {}
    pruned: list[Task] = []
    for owner, diff in ((workflow, top), *((workflow.subprocesses[i], d) for i, d in subs.items())):
        if diff is None:
            problems[f"the sub-process {owner.spec.name!r} no longer exists in version {version}"] = None
            continue
        for task in _blocking(owner, diff.removed):
            if _prunable(task):
                pruned.append(task)
            else:
                problems[_problem(task, version)] = None
    return Plan(tuple(problems), top, subs, tuple(pruned))


def _blocking(workflow: Any, removed: Iterable[Task]) -> list[Task]:
    """Removed tasks that would stay in the tree: those not below a task the migration resets."""
    reset = [t for t in workflow.get_tasks(state=RESET, skip_subprocesses=True)]
    return [t for t in removed if not any(t is not r and t.is_descendant_of(r) for r in reset)]


_PLAIN = (
    UserTask,
    ManualTask,
    NoneTask,
    ScriptEngineTask,
    BusinessRuleTaskMixin,
)  # ServiceTask is a script task


def _prunable(task: Task) -> bool:
    """A finished plain activity in a straight line: nothing in the tree but its neighbours sees it."""
    spec, parent = task.task_spec, task.parent
    return (
        task.has_state(TaskState.FINISHED_MASK)
        and isinstance(spec, _PLAIN)
        and not isinstance(spec, LoopTask)
        and parent is not None
        and len(parent.children) == 1
        and len(task.children) == 1
    )


def _prune(task: Task) -> None:
    """Take a finished task out of its tree, its one child taking its place under its parent."""
    parent, [child] = task.parent, task.children
    parent.children = [child if c is task else c for c in parent.children]
    child.parent = parent
    task.children = []
    del task.workflow.tasks[task.id]


def _problem(task: Task, version: int) -> str:
    element = task.task_spec.bpmn_id or task.task_spec.name.split(".", 1)[0]
    if task.has_state(ACTIVE):
        return f"it is at step {element!r}, which version {version} no longer has"
    if task.has_state(TaskState.FINISHED_MASK):
        return f"it went through step {element!r}, which version {version} no longer has"
    return f"step {element!r} ahead of it no longer exists in version {version}"


def migrate(
    workflow: BpmnWorkflow,
    found: Plan,
    spec: BpmnProcessSpec,
    subprocess_specs: dict[str, BpmnProcessSpec],
) -> list[str]:
    """Apply a plan without problems to the live workflow; the ids of the tasks removed from the
    tree (pruned finished steps first, then what the reset of the open ones dropped)."""
    if not found.ok or found.top is None:
        raise ValueError("a plan with problems cannot be applied")
    timers = _unchanged_timers(found, waiting_timers(workflow))
    for task in found.pruned:
        _prune(task)
    removed = migrate_workflow(found.top, workflow, spec)
    for sp_id, diff in (found.subprocesses or {}).items():
        subprocess = workflow.subprocesses[sp_id]
        removed += migrate_workflow(diff, subprocess, subprocess_specs[subprocess.spec.name])
    workflow.subprocess_specs = subprocess_specs
    for task_id in waiting_timers(workflow):
        task = task_by_id(workflow, task_id)
        if task_id in timers and task is not None:
            task.internal_data["event_value"] = timers[task_id]
    return [str(t.id) for t in (*found.pruned, *removed)]


def _unchanged_timers(found: Plan, timers: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """Due times of waiting timers whose element the new version keeps unchanged, by task id."""
    diffs = [found.top, *(found.subprocesses or {}).values()]
    changed = {str(t.id) for diff in diffs if diff is not None for t in diff.changed}
    return {task_id: deepcopy(value) for task_id, (_e, value) in timers.items() if task_id not in changed}


def dry_run(
    serializer: StateSerializer,
    state: str,
    old: tuple[BpmnProcessSpec, dict[str, BpmnProcessSpec]],
    new: tuple[BpmnProcessSpec, dict[str, BpmnProcessSpec]],
    version: int,
) -> tuple[str, ...]:
    """The pre-check of one instance: plan on a private copy, migrate it and store/restore it
    against the new version (what the real migration will do); the problems, empty if it moves."""
    workflow = serializer.loads(state, *old)
    found = plan(workflow, *new, version)
    if not found.ok:
        return found.problems
    try:
        migrate(workflow, found, *new)
        serializer.loads(serializer.dumps(workflow), *new)
    except Exception as exc:  # noqa: BLE001 - whatever the library refuses is a reason not to move
        return (f"the engine refused the move: {exc.__class__.__name__}: {exc}"[:500],)
    return ()


# -- commands on stored instances (exposed by engine.runtime.RuntimeService) ------------------------


def _target(session: Session, key: str, version: int) -> ProcessDefinition:
    found = session.scalars(
        select(ProcessDefinition).where(ProcessDefinition.key == key, ProcessDefinition.version == version)
    ).first()
    if found is None:
        raise NotFoundError(f"process {key!r} has no version {version}")
    return found


def check_instances(
    ctx: EngineContext, instance_ids: Iterable[str], *, to_version: int
) -> list[results.MigrationCheck]:
    """The pre-check of a migration, instance by instance; changes nothing. Unknown ids are left
    out (the caller decides what a user may see)."""
    checks = []
    with ctx.db.unit_of_work(write=False) as uow:
        session = uow.session
        for instance_id in dict.fromkeys(instance_ids):
            try:
                row = load_instance(ctx, session, instance_id, lock=False)
            except NotFoundError:
                continue
            current = session.get(ProcessDefinition, row.definition_id)
            problems: tuple[str, ...]
            try:
                problems = _refusal(row.state, current.version, to_version, row.engine_state)
                if not problems:
                    new = _target(session, row.definition_key, to_version)
                    old_specs = ctx.specs.get(session, row.definition_id)
                    new_specs = ctx.specs.get(session, new.id)
                    problems = dry_run(ctx.serializer, row.engine_state, old_specs, new_specs, to_version)
            except BatonError as exc:
                problems = (exc.message,)
            checks.append(
                results.MigrationCheck(
                    row.id, row.business_key, row.state, current.version, to_version, problems
                )
            )
    return checks


def _refusal(state: str, version: int, to_version: int, engine_state: str | None) -> tuple[str, ...]:
    if state not in MOVABLE:
        return (f"it is {state}",)
    if version == to_version:
        return (f"it already runs on version {to_version}",)
    if engine_state is None:
        return ("its engine state was archived",)
    return ()


def migrate_instance(ctx: EngineContext, instance_id: str, *, to_version: int, actor: str | None) -> None:
    """Move one instance to ``to_version`` of its process (one command, audited as
    ``instance_migrated``). Raises NotFoundError, ConflictError (with the problems as details) when
    it cannot move; then nothing changed."""

    def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
        row = live.row
        current = session.get(ProcessDefinition, row.definition_id)
        refused = _refusal(row.state, current.version, to_version, row.engine_state)
        target = _target(session, row.definition_key, to_version)
        spec, subprocess_specs = ctx.specs.get(session, target.id)
        found = plan(live.workflow, spec, subprocess_specs, to_version) if not refused else Plan(refused)
        if not found.ok:
            raise ConflictError(
                f"process instance {row.id} cannot move to version {to_version}", details=list(found.problems)
            )
        removed = migrate(live.workflow, found, spec, subprocess_specs)
        row.definition_id = target.id
        session.execute(
            update(ProcessInstance)
            .where(ProcessInstance.id == row.id)
            .values(definition_id=target.id)
            .execution_options(synchronize_session=False)
        )
        _refresh_open_tasks(session, live)
        ctx.audit(
            session,
            "instance_migrated",
            actor=actor,
            instance_id=row.id,
            details={
                "before": f"{current.key}:{current.version}",
                "after": f"{target.key}:{target.version}",
                "removed_tasks": len(removed),
                "steps_taken_out": [t.task_spec.bpmn_id for t in found.pruned],
            },
            at=now,
        )
        if row.state == RUNNING:
            return Mutation(failure=advance(live.workflow))
        if row.state == ERROR:  # still failed where it was: a retry runs the new version's step
            return Mutation(failure=Failure(row.error_element, row.error_message or ""))
        return Mutation()

    mutate_instance(ctx, instance_id, change, actor=actor, allowed_states=MOVABLE)


def _refresh_open_tasks(session: Session, live: LiveInstance) -> None:
    """Open tasks keep their ids across a migration (so their assignees keep them); their element,
    name, form and lane come from the new version."""
    for task_id in live.before.ready:
        task = task_by_id(live.workflow, task_id)
        if task is None or task.state != TaskState.READY:
            continue  # closed by the migration: persist cancels its row
        spec = task.task_spec
        meta = human_task_meta(spec)
        session.execute(
            update(HumanTask)
            .where(HumanTask.id == task_id, HumanTask.state == "ready")
            .values(
                element_id=spec.bpmn_id,
                name=spec.bpmn_name or spec.bpmn_id,
                form_key=meta.form_key,
                lane=meta.lane,
                version=HumanTask.version + 1,
            )
            .execution_options(synchronize_session=False)
        )


def migrate_instances(
    ctx: EngineContext, instance_ids: Iterable[str], *, to_version: int, actor: str | None
) -> list[results.MigrationOutcome]:
    """A batch: each instance moves in its own transaction or stays where it was, with the reasons."""
    outcomes = []
    for instance_id in dict.fromkeys(instance_ids):
        try:
            migrate_instance(ctx, instance_id, to_version=to_version, actor=actor)
        except BatonError as exc:
            problems = tuple(exc.details or ()) if isinstance(exc, ConflictError) and exc.details else None
            outcomes.append(results.MigrationOutcome(instance_id, False, problems or (exc.message,)))
        else:
            outcomes.append(results.MigrationOutcome(instance_id, True))
    return outcomes
