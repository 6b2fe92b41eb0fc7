"""Forms per (definition, element), built once: definitions never change after deployment."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.bpmn import human_task_meta
from engine.forms import Form, form_for
from engine.models import DeploymentFile, ProcessDefinition
from engine.specs import SpecCache


class FormCache:
    def __init__(self, specs: SpecCache, shared_forms_dir: Path | None) -> None:
        self._specs = specs
        self._shared = shared_forms_dir
        self._forms: dict[tuple[int, str], Form | None] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, definition_id: int, element_id: str) -> Form | None:
        key = (definition_id, element_id)
        with self._lock:
            if key in self._forms:
                return self._forms[key]
        form = self._build(session, definition_id, element_id)
        with self._lock:
            self._forms[key] = form
        return form

    def _build(self, session: Session, definition_id: int, element_id: str) -> Form | None:
        spec, subprocess_specs = self._specs.get(session, definition_id)
        task_spec = next(
            (
                s.task_specs[element_id]
                for s in (spec, *subprocess_specs.values())
                if element_id in s.task_specs
            ),
            None,
        )
        if task_spec is None:
            return None
        deployment_id = select(ProcessDefinition.deployment_id).where(ProcessDefinition.id == definition_id)
        rows = session.execute(
            select(DeploymentFile.filename, DeploymentFile.content).where(
                DeploymentFile.deployment_id == deployment_id.scalar_subquery()
            )
        ).all()
        return form_for(human_task_meta(task_spec), {name: bytes(c) for name, c in rows}, self._shared)
