"""Workflow state <-> JSON, storing a reference to the spec instead of the spec itself.

SpiffWorkflow's serializer embeds the whole parsed spec in every instance (over half of an
approval's state). Baton keeps specs per definition version in a cache, so an instance stores only
its tasks and data, and deserializing it skips rebuilding the spec objects (about 2x cheaper,
see ENGINE-NOTES and docs/benchmarks.md).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, TaskConverter
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.task import Task

from engine.bpmn import SERIALIZER_CONFIG
from engine.errors import ValidationError

FORMAT = "baton-1"  # bump with a migration in engine/state_migrations when the layout changes


class SpecReferenceWorkflowConverter(BpmnWorkflowConverter):
    """Like SpiffWorkflow's converter, minus ``spec`` and ``subprocess_specs`` (given on restore)."""

    def to_dict(self, workflow: BpmnWorkflow) -> dict[str, Any]:
        dct = super(BpmnWorkflowConverter, self).to_dict(workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(
        self, dct: dict[str, Any], spec: BpmnProcessSpec, subprocess_specs: dict[str, BpmnProcessSpec]
    ) -> BpmnWorkflow:
        workflow = self.target_class(spec, subprocess_specs, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


class TypedDataTaskConverter(TaskConverter):
    """SpiffWorkflow 3.2.0 stores a task's data as a delta from its parent's WITHOUT the registry's
    conversion (restoring it does convert): a Decimal (money) in task data made every save fail
    with "Decimal is not JSON serializable". Convert both the root's data and the delta here."""

    def to_dict(self, task: Task) -> dict[str, Any]:
        dct = super().to_dict(task)
        dct["data"] = self.registry.convert(self.registry.clean(dct["data"]))
        if dct["delta"]:
            dct["delta"]["updates"] = self.registry.convert(self.registry.clean(dct["delta"]["updates"]))
        return dct


def _registry():
    config = dict(SERIALIZER_CONFIG)
    config[BpmnWorkflow] = SpecReferenceWorkflowConverter
    config[Task] = TypedDataTaskConverter
    registry = BpmnWorkflowSerializer.configure(config)
    # Task data from forms may carry Decimal (money): keep it exact.
    registry.register(Decimal, lambda v: {"value": str(v)}, lambda v: Decimal(v["value"]))
    return registry


class StateSerializer:
    """Turns a live workflow into a JSON string and back, given its cached specs."""

    def __init__(self) -> None:
        self._registry = _registry()
        self._full = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SERIALIZER_CONFIG))

    def dumps(self, workflow: BpmnWorkflow) -> str:
        return json.dumps(self._registry.convert(workflow), separators=(",", ":"), ensure_ascii=False)

    def loads(
        self, state: str, spec: BpmnProcessSpec, subprocess_specs: dict[str, BpmnProcessSpec]
    ) -> BpmnWorkflow:
        return self._registry.restore(json.loads(state), spec=spec, subprocess_specs=subprocess_specs)

    def dumps_with_spec(self, workflow: BpmnWorkflow) -> str:
        """SpiffWorkflow's own format with the embedded spec (export, and the raw-engine benchmark)."""
        return self._full.serialize_json(workflow)

    def loads_with_spec(self, state: str) -> BpmnWorkflow:
        return self._full.deserialize_json(state)


def check_variables(variables: Any) -> dict[str, Any]:
    """Variables going into task data: an object whose names are identifiers (scripts read them)."""
    if variables is None:
        return {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and k.isidentifier() and not k.startswith("_") for k in variables
    ):
        raise ValidationError("variables must be an object whose names are identifiers not starting with '_'")
    return dict(variables)


def data_to_json(value: Any) -> Any:
    """Plain-JSON copy of task data (for the audit log and the API): Decimal -> str, sets -> lists."""
    return json.loads(json.dumps(value, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return repr(value)
