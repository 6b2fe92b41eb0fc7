"""Repository service: deploy bundles of BPMN, DMN and form files as versioned definitions."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from sqlalchemy import String, cast, func, or_, select

from engine import results
from engine.bpmn import load_workflow_spec
from engine.context import EngineContext
from engine.definition_diff import DefinitionDiff, ProcessSnapshot, diff_bundles, find_process_file, snapshot
from engine.errors import NotFoundError, ValidationError
from engine.forms import Form
from engine.lint import BundleReport, check_bundle
from engine.models import Deployment, DeploymentFile, ProcessDefinition, ProcessInstance
from engine.query import Query
from engine.start_events import describe_start_events, schedule_start_timers

KINDS = {".bpmn": "bpmn", ".bpmn20.xml": "bpmn", ".dmn": "dmn", ".json": "form"}


def file_kind(filename: str) -> str | None:
    lower = filename.lower()
    return next((kind for suffix, kind in KINDS.items() if lower.endswith(suffix)), None)


def bundle_hash(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def to_definition(row: ProcessDefinition) -> results.ProcessDefinition:
    return results.ProcessDefinition(
        id=row.id,
        key=row.key,
        version=row.version,
        name=row.name,
        content_hash=row.content_hash,
        deployment_id=row.deployment_id,
        deployed_by=row.deployed_by,
        deployed_at=row.deployed_at,
    )


class DefinitionQuery(Query[results.ProcessDefinition]):
    def key(self, key: str) -> DefinitionQuery:
        return self._where(ProcessDefinition.key == key)

    def version(self, version: int) -> DefinitionQuery:
        return self._where(ProcessDefinition.version == version)

    def latest_only(self) -> DefinitionQuery:
        latest = (
            select(ProcessDefinition.key, func.max(ProcessDefinition.version).label("v"))
            .group_by(ProcessDefinition.key)
            .subquery()
        )
        self._stmt = self._stmt.join(
            latest, (latest.c.key == ProcessDefinition.key) & (latest.c.v == ProcessDefinition.version)
        )
        return self

    def started_by_hand(self) -> DefinitionQuery:
        """Processes a person starts: a plain start event only (one started by a timer, message or
        signal has typed start events, engine/start_events.py)."""
        events = cast(ProcessDefinition.start_events, String)
        return self._where(or_(ProcessDefinition.start_events.is_(None), events.in_(("[]", "null"))))

    def order_by_key(self) -> DefinitionQuery:
        return self._order_by(ProcessDefinition.key, ProcessDefinition.version.desc())


class RepositoryService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def validate(self, files: Mapping[str, bytes]) -> BundleReport:
        """The validation report for a bundle, without deploying it."""
        return check_bundle(files, max_file_bytes=self._ctx.config.max_file_bytes)

    def deploy(
        self, files: Mapping[str, bytes], *, deployed_by: str, name: str | None = None
    ) -> results.DeploymentResult:
        """Deploy a bundle. Raises ValidationError (with the problem list) if any file is invalid.

        Each executable process becomes a new version of its key unless the latest version of that
        key was deployed from identical content; running instances stay on their version.
        """
        report = self.validate(files)
        if not report.ok:
            raise ValidationError("the bundle has errors; nothing was deployed", problems=report.problems)
        if not report.processes:
            raise ValidationError("the bundle holds no executable process; nothing was deployed")
        content_hash = bundle_hash(files)
        warnings = tuple(p for p in report.problems if p.severity != "error")
        now = self._ctx.now()
        with self._ctx.db.unit_of_work() as uow:
            session = uow.session
            changed, unchanged, touched = [], [], []
            for process in report.processes:
                latest = session.scalars(
                    select(ProcessDefinition)
                    .where(ProcessDefinition.key == process.id)
                    .order_by(ProcessDefinition.version.desc())
                    .limit(1)
                ).first()
                if latest is not None and latest.content_hash == content_hash:
                    unchanged.append(process.id)
                    touched.append(latest)
                else:
                    changed.append((process, (latest.version if latest else 0) + 1))
            if not changed:
                return results.DeploymentResult(
                    None, tuple(map(to_definition, touched)), (), tuple(unchanged), warnings
                )
            deployment = Deployment(
                name=name or next(iter(sorted(files))),
                content_hash=content_hash,
                deployed_by=deployed_by,
                deployed_at=now,
                files=[
                    DeploymentFile(filename=f, kind=file_kind(f) or "other", content=c)
                    for f, c in sorted(files.items())
                ],
            )
            session.add(deployment)
            session.flush()
            for process, version in changed:
                spec, _ = load_workflow_spec(
                    files, process.id, max_file_bytes=self._ctx.config.max_file_bytes
                )
                definition = ProcessDefinition(
                    key=process.id,
                    version=version,
                    name=process.name,
                    content_hash=content_hash,
                    deployment_id=deployment.id,
                    deployed_by=deployed_by,
                    deployed_at=now,
                    start_events=describe_start_events(spec),
                )
                session.add(definition)
                session.flush()
                schedule_start_timers(self._ctx, session, definition, now)
                touched.append(definition)
            session.flush()
            self._ctx.audit(
                session,
                "deployed",
                actor=deployed_by,
                details={
                    "deployment_id": deployment.id,
                    "files": sorted(files),
                    "versions": {p.id: v for p, v in changed},
                    "unchanged": unchanged,
                },
                at=now,
            )
            result = results.DeploymentResult(
                deployment.id,
                tuple(map(to_definition, touched)),
                tuple(p.id for p, _ in changed),
                tuple(unchanged),
                warnings,
            )
            uow.commit()
        return result

    def query(self) -> DefinitionQuery:
        return DefinitionQuery(self._ctx.db, select(ProcessDefinition), to_definition)

    def latest(self, key: str) -> results.ProcessDefinition:
        found = self.query().key(key).order_by_key().first()
        if found is None:
            raise NotFoundError(f"no process definition with key {key!r}")
        return found

    def get(self, definition_id: int) -> results.ProcessDefinition:
        with self._ctx.db.unit_of_work(write=False) as uow:
            row = uow.session.get(ProcessDefinition, definition_id)
            if row is None:
                raise NotFoundError(f"process definition {definition_id} not found")
            return to_definition(row)

    def files(self, definition_id: int) -> dict[str, bytes]:
        """The files of the deployment a definition came from (download, diff, re-validation)."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            row = uow.session.get(ProcessDefinition, definition_id)
            if row is None:
                raise NotFoundError(f"process definition {definition_id} not found")
            return {f.filename: bytes(f.content) for f in row.deployment.files}

    def instance_counts(self, key: str) -> dict[int, int]:
        """Running (not finished) instances per version of a key."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            rows = uow.session.execute(
                select(ProcessDefinition.version, func.count(ProcessInstance.id))
                .join(ProcessInstance, ProcessInstance.definition_id == ProcessDefinition.id)
                .where(
                    ProcessDefinition.key == key, ProcessInstance.state.in_(("running", "suspended", "error"))
                )
                .group_by(ProcessDefinition.version)
            ).all()
            return {version: count for version, count in rows}

    # -- designer: versions, their files, differences, form previews --------------------------------

    def version(self, key: str, version: int) -> results.ProcessDefinition:
        """One version of a process. Raises NotFoundError."""
        found = self.query().key(key).version(version).first()
        if found is None:
            raise NotFoundError(f"{key} has no version {version}")
        return found

    def process_file(self, key: str, version: int) -> tuple[str, bytes]:
        """``(file name, content)`` of the BPMN file defining a version of a process. Raises NotFoundError."""
        files = self.files(self.version(key, version).id)
        name = find_process_file(files, key)
        if name is None:
            raise NotFoundError(f"{key} v{version}: no BPMN file defines the process")
        return name, files[name]

    def snapshot(self, key: str, version: int) -> ProcessSnapshot:
        """The elements of a version (its human tasks, for the form preview). Raises NotFoundError."""
        found = snapshot(self.files(self.version(key, version).id), key)
        if found is None:
            raise NotFoundError(f"{key} v{version}: no BPMN file defines the process")
        return found

    def diff(self, key: str, from_version: int, to_version: int) -> DefinitionDiff:
        """Elements added, removed and changed from one version of a process to another (either order).

        Raises NotFoundError when either version does not exist.
        """
        old = self.files(self.version(key, from_version).id)
        new = self.files(self.version(key, to_version).id)
        return diff_bundles(key, from_version, old, to_version, new)

    def form(self, definition_id: int, element_id: str) -> Form | None:
        """The form a human task of a definition shows (None: it takes none), as the inbox renders it.

        Raises NotFoundError (unknown definition, or a form key naming no form) and ValidationError
        (a form file that is not a JSON Schema).
        """
        with self._ctx.db.unit_of_work(write=False) as uow:
            return self._ctx.forms.get(uow.session, definition_id, element_id)
