"""Parsed specs cached per definition version: parsing costs far more than a task completion."""

from __future__ import annotations

import threading
from collections import OrderedDict

from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.bpmn import load_workflow_spec
from engine.errors import NotFoundError
from engine.models import DeploymentFile, ProcessDefinition

Specs = tuple[BpmnProcessSpec, dict[str, BpmnProcessSpec]]


class SpecCache:
    """LRU of (spec, subprocess_specs) by definition id. Definitions never change once deployed."""

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: OrderedDict[int, Specs] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, session: Session, definition_id: int) -> Specs:
        with self._lock:
            specs = self._entries.get(definition_id)
            if specs is not None:
                self._entries.move_to_end(definition_id)
                return specs
        specs = self._load(session, definition_id)
        with self._lock:
            self._entries[definition_id] = specs
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return specs

    @staticmethod
    def _load(session: Session, definition_id: int) -> Specs:
        definition = session.get(ProcessDefinition, definition_id)
        if definition is None:
            raise NotFoundError(f"process definition {definition_id} not found")
        rows = session.execute(
            select(DeploymentFile.filename, DeploymentFile.content).where(
                DeploymentFile.deployment_id == definition.deployment_id
            )
        ).all()
        return load_workflow_spec({name: bytes(content) for name, content in rows}, definition.key)
