"""Instance modification: move a running instance to other steps, and read the path it has taken.

SpiffWorkflow 3.2.0 can only rewind: ``BpmnWorkflow.reset_from_task_id`` re-runs a task that is
already in the tree, and replaces the data with what that task saw then. A manager's "move" goes
anywhere (back, forward, onto a branch never taken) and keeps the data as it is now, so it works on
the task tree directly, with the same primitives the library's reset uses:

1. every active task of the top-level process (ready, waiting, started, failed) is cancelled, with
   its boundary events and its sub-process (``Task.cancel`` runs each spec's ``_on_cancel``, which
   also takes waiting events out of the event manager, so no timer or message subscription is left
   behind);
2. for each target a new task is attached under the completed task the first active one hung from
   (the point where the process left its path), marked ``triggered`` (the library's word for a
   child that is not an output of its parent's spec: kept when the parent's children are synced,
   and serialized), given the current data, predicted and updated exactly as ``Task.reset_branch``
   does, so it becomes ready (or waiting, for an event) and the engine steps run on from there.

The caller runs this through ``engine.execution.mutate_instance``: the human-task projection, the
message subscriptions and the timer job follow from the before/after comparison in ``persist``.

Targets are activities and intermediate or end events (not gateways, start or boundary events) of
the top-level process, or of a sub-process (embedded or called) the instance is inside: then the
move happens within that sub-process, as above with its tree and its active tasks, and the rest of
the instance waits on as it was. Moving out of a sub-process is a top-level move (the sub-process
task is what is cancelled); moving INTO a sub-process that is not running is not offered (it would
have to be started around the target). A parallel join counts the branches that reach it: moving
into ONE branch of a parallel block leaves the join waiting for the others; move to every branch at
once (several targets) or past the join.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from SpiffWorkflow.bpmn.specs.control import BoundaryEventSplit
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent, ThrowingEvent
from SpiffWorkflow.bpmn.specs.mixins.events.intermediate_event import BoundaryEvent, EventBasedGateway
from SpiffWorkflow.bpmn.specs.mixins.events.start_event import StartEvent
from SpiffWorkflow.bpmn.specs.mixins.manual_task import ManualTask
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask
from SpiffWorkflow.bpmn.specs.mixins.none_task import NoneTask
from SpiffWorkflow.bpmn.specs.mixins.script_task import ScriptEngineTask
from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import SubWorkflowTask
from SpiffWorkflow.bpmn.specs.mixins.user_task import UserTask
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.dmn.specs.business_rule_task_mixin import BusinessRuleTaskMixin
from SpiffWorkflow.specs.base import TaskSpec
from SpiffWorkflow.task import Task, TaskState
from sqlalchemy.orm import Session

from engine.context import EngineContext
from engine.errors import ConflictError, ValidationError
from engine.execution import (
    ERROR,
    RUNNING,
    LiveInstance,
    Mutation,
    advance,
    load_instance,
    mutate_instance,
    task_by_id,
)
from engine.results import InstancePath, StepTarget

ACTIVE = TaskState.READY | TaskState.WAITING | TaskState.STARTED | TaskState.ERROR
_ACTIVITIES = (
    UserTask,
    ManualTask,
    NoneTask,
    ScriptEngineTask,
    BusinessRuleTaskMixin,
    SubWorkflowTask,
    LoopTask,
)
_KINDS = (
    (UserTask, "userTask"),
    (ManualTask, "manualTask"),
    (ScriptEngineTask, "scriptTask"),
    (BusinessRuleTaskMixin, "businessRuleTask"),
    (SubWorkflowTask, "subProcess"),
    (LoopTask, "multiInstance"),
    (NoneTask, "task"),
    (ThrowingEvent, "event"),
    (CatchingEvent, "event"),
)


@dataclass(frozen=True)
class Move:
    """What a move did: the element ids it left and the ones it activated."""

    left: tuple[str, ...]
    activated: tuple[str, ...]


def _movable(spec: TaskSpec) -> bool:
    if getattr(spec, "bpmn_id", None) is None or spec.name != spec.bpmn_id:
        return False  # engine-internal specs, and the inner spec of a multi-instance activity
    if isinstance(spec, StartEvent | BoundaryEvent | EventBasedGateway):
        return False
    return isinstance(spec, _ACTIVITIES) or isinstance(spec, CatchingEvent | ThrowingEvent)


def _kind(spec: TaskSpec) -> str:
    return next((kind for cls, kind in _KINDS if isinstance(spec, cls)), "task")


def targets(spec: BpmnProcessSpec) -> list[StepTarget]:
    """The flow nodes of one process an instance may be moved to, in document order."""
    found = [s for s in spec.task_specs.values() if _movable(s)]
    return [StepTarget(s.bpmn_id, getattr(s, "bpmn_name", None), _kind(s)) for s in found]


def active_tasks(workflow: Any) -> list[Task]:
    """Active tasks of one process (the top level or a sub-process), in tree order (a running
    sub-process shows as its STARTED task: cancelling that cancels everything inside)."""
    return [t for t in workflow.get_tasks(skip_subprocesses=True) if t.has_state(ACTIVE)]


def scopes(workflow: BpmnWorkflow) -> list[Any]:
    """Where a move can happen: the top level, then every sub-process the instance is inside."""
    running = [
        sub
        for task_id, sub in workflow.subprocesses.items()
        if (task := task_by_id(workflow, str(task_id))) is not None and task.has_state(ACTIVE)
    ]
    return [workflow, *running]


def _scope_of(workflow: BpmnWorkflow, element_ids: Sequence[str]) -> Any:
    """The one process all targets belong to (the top level first). Raises ValidationError."""
    for scope in scopes(workflow):
        if all(element_id in scope.spec.task_specs for element_id in element_ids):
            return scope
    raise ValidationError(
        "choose steps of the same process: the top level, or one sub-process the instance is inside"
        if len(element_ids) > 1
        else f"{element_ids[0]!r} is not a step of this process one can move to"
    )


def move(workflow: BpmnWorkflow, element_ids: Sequence[str]) -> Move:
    """Cancel where the instance is and activate ``element_ids`` instead (see the module doc).

    Raises ValidationError (unknown or unsuitable target), ConflictError (nothing active to move).
    The caller runs the engine steps afterwards (``engine.execution.advance``).
    """
    wanted = list(dict.fromkeys(e for e in element_ids if e))
    if not wanted:
        raise ValidationError("choose the step to move to")
    scope = _scope_of(workflow, wanted)
    specs = []
    for element_id in wanted:
        spec = scope.spec.task_specs[element_id]
        if not _movable(spec):
            raise ValidationError(f"{element_id!r} is not a step of this process one can move to")
        specs.append(_entry_spec(spec))
    active = active_tasks(scope)
    if not active:
        raise ConflictError("the instance waits nowhere: nothing to move")
    anchor = _branch_root(active[0]).parent
    if anchor is None or not anchor.has_state(TaskState.COMPLETED):
        raise ConflictError("the instance's current step cannot be left (no completed step before it)")
    data = deepcopy(active[0].data)
    left = _cancel(active)
    for spec in specs:
        task = anchor._add_child(spec, TaskState.FUTURE)
        task.triggered = True
        task.data = deepcopy(data)
        spec._predict(task, mask=TaskState.PREDICTED_MASK | TaskState.FUTURE)
        spec._update(task)
    return Move(left=left, activated=tuple(wanted))


def _entry_spec(spec: TaskSpec) -> TaskSpec:
    """A task with boundary events is entered through its split (which arms the events)."""
    split = next((s for s in spec.inputs if isinstance(s, BoundaryEventSplit)), None)
    return split or spec


def _branch_root(task: Task) -> Task:
    """The task itself, or the boundary-event split it sits under (cancelled together)."""
    while task.parent is not None and isinstance(task.parent.task_spec, BoundaryEventSplit):
        task = task.parent
    return task


def _cancel(active: Iterable[Task]) -> tuple[str, ...]:
    left: dict[str, None] = {}
    for task in active:
        if task.state == TaskState.ERROR:  # finished as far as the library goes: cancel() skips it
            task._set_state(TaskState.CANCELLED)
            task._drop_children(force=True)
        root = _branch_root(task)
        if task.task_spec.bpmn_id and not isinstance(task.task_spec, BoundaryEvent):
            left[task.task_spec.bpmn_id] = None
        if root is not task:
            root.cancel()  # a completed split: cancels its children (the task and its boundary events)
        elif not task.has_state(TaskState.FINISHED_MASK):
            task.cancel()
    return tuple(left)


def path(workflow: BpmnWorkflow) -> InstancePath:
    """What the diagram marks: steps done, steps active, steps failed, and the flows taken (each as
    the element a step was reached from, found through the tree, sub-processes included)."""
    completed: dict[str, None] = {}
    active: dict[str, None] = {}
    errored: dict[str, None] = {}
    taken: dict[tuple[str, str], None] = {}
    for task in workflow.get_tasks():
        element = task.task_spec.bpmn_id
        if element is None:
            continue
        if task.state == TaskState.COMPLETED:
            completed[element] = None
        elif task.state == TaskState.ERROR:
            errored[element] = None
        elif task.has_state(ACTIVE):
            active[element] = None
        else:
            continue
        source = _reached_from(task)
        if source is not None:
            taken[(source, element)] = None
    return InstancePath(tuple(completed), tuple(active), tuple(errored), tuple(taken))


def _reached_from(task: Task) -> str | None:
    if task.triggered:
        return None  # activated by a move: no flow was taken
    parent = task.parent
    while parent is not None and parent.task_spec.bpmn_id is None:
        if parent.triggered:
            return None
        parent = parent.parent
    if parent is None or not parent.has_state(TaskState.COMPLETED):
        return None
    return parent.task_spec.bpmn_id


# -- commands and reads on stored instances (exposed by engine.runtime.RuntimeService) -------------


def move_instance(
    ctx: EngineContext, instance_id: str, element_ids: Sequence[str], *, actor: str | None, reason: str | None
) -> None:
    """Move a running or failed instance (one command, audited as ``instance_moved``; the closed and
    opened human tasks are audited by ``persist`` as for any step)."""

    def change(session: Session, live: LiveInstance, now: datetime) -> Mutation:
        moved = move(live.workflow, element_ids)
        ctx.audit(
            session,
            "instance_moved",
            actor=actor,
            instance_id=instance_id,
            element_id=moved.activated[0],
            details={"before": list(moved.left), "after": list(moved.activated), "reason": reason},
            at=now,
        )
        return Mutation(failure=advance(live.workflow))

    mutate_instance(ctx, instance_id, change, actor=actor, allowed_states=(RUNNING, ERROR))


def _stored_workflow(ctx: EngineContext, session: Session, instance_id: str) -> BpmnWorkflow | None:
    """A private copy of an instance's workflow (None once its state is archived)."""
    row = load_instance(ctx, session, instance_id, lock=False)
    if row.engine_state is None:
        return None
    spec, subprocess_specs = ctx.specs.get(session, row.definition_id)
    return ctx.serializer.loads(row.engine_state, spec, subprocess_specs)


def instance_path(ctx: EngineContext, instance_id: str) -> InstancePath:
    """Raises NotFoundError. An archived instance has no path left to show (all empty)."""
    with ctx.db.unit_of_work(write=False) as uow:
        workflow = _stored_workflow(ctx, uow.session, instance_id)
    return path(workflow) if workflow is not None else InstancePath((), (), (), ())


def instance_targets(ctx: EngineContext, instance_id: str) -> list[StepTarget]:
    """The steps an instance may be moved to: its process's, then those of the sub-processes it is
    inside. Raises NotFoundError."""
    with ctx.db.unit_of_work(write=False) as uow:
        workflow = _stored_workflow(ctx, uow.session, instance_id)
        if workflow is None:  # archived: only the definition is left to say it
            row = load_instance(ctx, uow.session, instance_id, lock=False)
            return targets(ctx.specs.get(uow.session, row.definition_id)[0])
    found = {t.element_id: t for scope in scopes(workflow) for t in targets(scope.spec)}
    return list(found.values())
