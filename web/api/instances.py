"""/api/v1/process-instances: start, list, read, cancel, suspend, resume, SLA pause/resume; for managers
the tracking list, the path on the diagram, and the interventions: retry, move to another step,
reassign a task, migrate to another version (one, or a batch after a pre-check).

Interventions follow web/manage.py: a manager of the starter's department or an administrator may
act (403 for others who can see the instance, 404 for the rest); each is one audited engine command.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_babel import gettext as _
from marshmallow import EXCLUDE, Schema, fields, validate

from engine.errors import ConflictError, NotAllowedError, NotFoundError, ValidationError
from web.access import instance_query, manageable_instance, visible_instance
from web.api.common import choice, load, paged, paged_ahead
from web.api.schemas import (
    InstanceDetailSchema,
    InstanceSchema,
    ReasonInput,
    StartInstanceInput,
    TaskSchema,
    TransferInput,
)
from web.manage import InstanceFilter, filtered, managed_instance, tracked_instance
from web.security import current_principal, engine, login_required

bp = Blueprint("api_instances", __name__, url_prefix="/api/v1/process-instances")
STATES = ("running", "suspended", "error", "completed", "cancelled")
SORTS = ("started", "started_asc", "ended")
MAX_BATCH = 500
INSTANCE = InstanceSchema()
# API parameter -> the name InstanceFilter reads (the pages' query string)
LIST_FILTERS = {
    "definition_key": "process",
    "version": "version",
    "state": "state",
    "started_by": "starter",
    "department_id": "department",
    "business_key": "business_key",
    "started_from": "started_from",
    "started_to": "started_to",
    "ended_from": "ended_from",
    "ended_to": "ended_to",
    "element_id": "step",
    "sla": "sla",
    "sort": "sort",
}


class _Input(Schema):
    class Meta:
        unknown = EXCLUDE


class RetryInput(_Input):
    variables = fields.Dict(keys=fields.String(), load_default=dict)


class MoveInput(_Input):
    element_id = fields.String(load_default=None, validate=validate.Length(min=1, max=255))
    element_ids = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=list)
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))


class ReassignInput(TransferInput):
    task_id = fields.String(required=True, validate=validate.Length(min=1, max=36))


class MigrateInput(_Input):
    to_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class BatchMigrationInput(MigrateInput):
    instance_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=36)),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH),
    )


class StepTargetSchema(Schema):
    element_id = fields.String()
    name = fields.String(allow_none=True)
    kind = fields.String()


class InstancePathSchema(Schema):
    completed = fields.List(fields.String())
    active = fields.List(fields.String())
    errored = fields.List(fields.String())
    taken = fields.List(fields.List(fields.String()))  # [source element, target element]


class MigrationCheckSchema(Schema):
    instance_id = fields.String()
    business_key = fields.String(allow_none=True)
    state = fields.String()
    from_version = fields.Integer()
    to_version = fields.Integer()
    ok = fields.Boolean()
    problems = fields.List(fields.String())


class MigrationOutcomeSchema(Schema):
    instance_id = fields.String()
    migrated = fields.Boolean()
    problems = fields.List(fields.String())


@bp.post("")
@login_required
def start():
    body = load(StartInstanceInput())
    instance = engine().runtime.start(
        body["definition_key"],
        business_key=body["business_key"],
        variables={**body["variables"], "initiator": current_principal().username},  # not spoofable
        started_by=current_principal().username,
    )
    return INSTANCE.dump(instance), 201


def _list_filter() -> InstanceFilter:
    """The list's filters from the query string; a malformed value is a 422 (the pages drop it)."""
    choice("state", STATES)
    choice("sort", SORTS)
    choice("sla", ("breached",))
    flt = InstanceFilter.from_args({page: request.args.get(api, "") for api, page in LIST_FILTERS.items()})
    if flt.problems:
        raise ValidationError("; ".join(flt.problems))
    if flt.version is not None and not flt.process:
        raise ValidationError("version needs definition_key")
    return flt


@bp.get("")
@login_required
def list_instances():
    """Instances the caller may see (``scope=involved``, the default: answers ``total``), or, for
    managers and administrators, ``scope=managed``: the instances of the departments they manage
    (everything for an administrator), in pages with ``has_more`` (``total`` with ``count=true``)."""
    principal = current_principal()
    scope = choice("scope", ("involved", "managed"), "involved")
    flt = _list_filter()
    if scope == "involved":
        return paged(filtered(principal, flt, instance_query(principal)), INSTANCE)
    if principal.role != "manager" and not principal.is_admin:
        raise NotAllowedError("scope=managed is for managers and administrators")
    return paged_ahead(filtered(principal, flt), INSTANCE)


@bp.get("/<instance_id>")
@login_required
def get_instance(instance_id: str):
    principal = current_principal()
    visible_instance(principal, instance_id)
    eng = engine()
    instance = eng.runtime.get(instance_id, with_variables=True)
    detail = InstanceDetailSchema()
    body = detail.dump(instance)
    body["active_tasks"] = TaskSchema().dump(eng.tasks.query().instance(instance_id).open().list(), many=True)
    body["history"] = detail.fields["history"].serialize(
        "history", {"history": eng.history.for_instance(instance_id)}
    )
    return body


def _control(instance_id: str, action: str):
    principal = current_principal()
    manageable_instance(principal, instance_id)
    reason = load(ReasonInput())["reason"]
    runtime = engine().runtime
    actor = principal.username
    result = {
        "cancel": lambda: runtime.cancel(instance_id, actor=actor, reason=reason),
        "suspend": lambda: runtime.suspend(instance_id, actor=actor),
        "resume": lambda: runtime.resume(instance_id, actor=actor),
        "pause-sla": lambda: runtime.pause_sla(instance_id, actor=actor, reason=reason),
        "resume-sla": lambda: runtime.resume_sla(instance_id, actor=actor, reason=reason),
    }[action]()
    return INSTANCE.dump(result)


@bp.post("/<instance_id>/<any(cancel, suspend, resume, 'pause-sla', 'resume-sla'):action>")
@login_required
def control(instance_id: str, action: str):
    return _control(instance_id, action)


@bp.post("/<instance_id>/withdraw")
@login_required
def withdraw(instance_id: str):
    """The starter takes a request back while nobody else has acted on it (撤回); 409 once someone has.
    The "started by me" page posts its button here as a form: it gets a redirect back with a message."""
    principal = current_principal()
    visible_instance(principal, instance_id)
    if not request.form:
        reason = load(ReasonInput())["reason"]
        return INSTANCE.dump(engine().runtime.withdraw(instance_id, actor=principal.username, reason=reason))
    try:
        engine().runtime.withdraw(instance_id, actor=principal.username)
        flash(_("Withdrawn: the request is cancelled."), "done")
    except NotAllowedError:
        flash(_("Only the person who started a request may withdraw it."), "error")
    except ConflictError:
        flash(_("Someone has already acted on this request: it can no longer be withdrawn."), "error")
    return redirect(url_for("inbox.started"))


# -- tracking and interventions ----------------------------------------------------------------------


@bp.get("/<instance_id>/path")
@login_required
def path(instance_id: str):
    """Element ids done, active and failed, and the flows taken ([source, target] element pairs)."""
    tracked_instance(current_principal(), instance_id)
    return InstancePathSchema().dump(engine().runtime.path(instance_id))


@bp.get("/<instance_id>/move-targets")
@login_required
def move_targets(instance_id: str):
    managed_instance(current_principal(), instance_id)
    return {"items": StepTargetSchema().dump(engine().runtime.move_targets(instance_id), many=True)}


@bp.post("/<instance_id>/retry")
@login_required
def retry(instance_id: str):
    principal = current_principal()
    managed_instance(principal, instance_id)
    variables = load(RetryInput())["variables"]
    return INSTANCE.dump(engine().runtime.retry(instance_id, actor=principal.username, variables=variables))


@bp.post("/<instance_id>/move")
@login_required
def move(instance_id: str):
    """Cancel the active steps and activate ``element_id`` (or all of ``element_ids``)."""
    principal = current_principal()
    managed_instance(principal, instance_id)
    body = load(MoveInput())
    targets = [*([body["element_id"]] if body["element_id"] else []), *body["element_ids"]]
    result = engine().runtime.move(instance_id, targets, actor=principal.username, reason=body["reason"])
    return INSTANCE.dump(result)


@bp.post("/<instance_id>/reassign")
@login_required
def reassign(instance_id: str):
    """Hand any open task of the instance to another user (audited as a transfer)."""
    principal = current_principal()
    managed_instance(principal, instance_id)
    eng = engine()
    body = load(ReassignInput())
    task_id = body["task_id"]
    if eng.tasks.get(task_id).instance_id != instance_id:
        raise NotFoundError(f"task {task_id} not found")
    user = eng.identity.get_user(body["to_user"])
    if not user.is_active:
        raise ValidationError(f"user {user.username} is frozen")
    task = eng.tasks.transfer(
        task_id, to_user=user.username, actor=principal.username, comment=body["comment"]
    )
    return TaskSchema().dump(task)


@bp.post("/<instance_id>/migrate")
@login_required
def migrate(instance_id: str):
    """Move the instance to another version of its process (409 with the reasons if it cannot)."""
    principal = current_principal()
    managed_instance(principal, instance_id)
    version = load(MigrateInput())["to_version"]
    return INSTANCE.dump(engine().runtime.migrate(instance_id, to_version=version, actor=principal.username))


def _batch() -> tuple[int, list[str], dict[str, tuple[str, ...]]]:
    """The batch's version, the instances the caller may change, and the refused ones with why."""
    body = load(BatchMigrationInput())
    principal = current_principal()
    allowed, refused = [], {}
    for instance_id in dict.fromkeys(body["instance_ids"]):
        try:
            managed_instance(principal, instance_id)
        except NotFoundError:
            refused[instance_id] = ("not found",)
        except NotAllowedError as exc:
            refused[instance_id] = (exc.message,)
        else:
            allowed.append(instance_id)
    return body["to_version"], allowed, refused


@bp.post("/migrations/check")
@login_required
def check_migrations():
    """The pre-check: for each instance whether it can move to ``to_version``, and if not, why."""
    version, allowed, refused = _batch()
    checks = MigrationCheckSchema().dump(
        engine().runtime.check_migration(allowed, to_version=version), many=True
    )
    checks += [
        {"instance_id": i, "ok": False, "problems": list(p), "to_version": version}
        for i, p in refused.items()
    ]
    return {"items": checks}


@bp.post("/migrations")
@login_required
def migrate_batch():
    """Migrate each instance in its own transaction; those that cannot move stay, with reasons."""
    version, allowed, refused = _batch()
    principal = current_principal()
    outcomes = engine().runtime.migrate_all(allowed, to_version=version, actor=principal.username)
    items = MigrationOutcomeSchema().dump(outcomes, many=True)
    items += [{"instance_id": i, "migrated": False, "problems": list(p)} for i, p in refused.items()]
    return {"items": items, "migrated": sum(1 for o in outcomes if o.migrated)}


# -- the OpenAPI description of the endpoints above that web/openapi.py does not list itself ----------

SCHEMAS = {
    "StepTarget": StepTargetSchema,
    "InstancePath": InstancePathSchema,
    "MigrationCheck": MigrationCheckSchema,
    "MigrationOutcome": MigrationOutcomeSchema,
    "RetryInput": RetryInput,
    "MoveInput": MoveInput,
    "ReassignInput": ReassignInput,
    "MigrateInput": MigrateInput,
    "BatchMigrationInput": BatchMigrationInput,
}
LIST_PARAMETERS = {
    "scope": "involved (default: answers total) | managed (managers and administrators: has_more)",
    "definition_key": "",
    "version": "with definition_key",
    "state": "|".join(STATES),
    "started_by": "",
    "department_id": "the starter's department (with the departments below it)",
    "business_key": "",
    "started_from": "YYYY-MM-DD (company time zone)",
    "started_to": "YYYY-MM-DD, included",
    "ended_from": "YYYY-MM-DD",
    "ended_to": "YYYY-MM-DD, included",
    "element_id": "waiting at this step (an open task's element)",
    "sla": "breached: an open task is past its due date",
    "sort": "|".join(SORTS),
    "count": "true: also answer total (scope=managed)",
}
_ACT = [200, 403, 404, 409, 422]
OPERATIONS = {
    "/process-instances/{id}/path": {
        "get": ("Steps done, active and failed; flows taken", None, "InstancePath", {}, [200, 404])
    },
    "/process-instances/{id}/move-targets": {
        "get": ("Steps the instance may be moved to (managers)", None, "StepTarget", {}, [200, 403, 404])
    },
    "/process-instances/{id}/retry": {
        "post": ("Run the failed step again", "RetryInput", "Instance", {}, _ACT)
    },
    "/process-instances/{id}/move": {
        "post": ("Cancel the active steps, activate others", "MoveInput", "Instance", {}, _ACT)
    },
    "/process-instances/{id}/reassign": {
        "post": ("Hand an open task to another user", "ReassignInput", "Task", {}, _ACT)
    },
    "/process-instances/{id}/migrate": {
        "post": ("Move to another version (409: why not)", "MigrateInput", "Instance", {}, _ACT)
    },
    "/process-instances/migrations/check": {
        "post": ("Pre-check a migration", "BatchMigrationInput", "MigrationCheck", {}, [200, 422])
    },
    "/process-instances/migrations": {
        "post": ("Migrate a batch (each alone)", "BatchMigrationInput", "MigrationOutcome", {}, [200, 422])
    },
}
