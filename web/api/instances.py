"""/api/v1/process-instances: start, list, read, cancel, suspend, resume, SLA pause/resume."""

from __future__ import annotations

from flask import Blueprint, request

from web.access import instance_query, manageable_instance, visible_instance
from web.api.common import choice, load, paged
from web.api.schemas import InstanceDetailSchema, InstanceSchema, ReasonInput, StartInstanceInput, TaskSchema
from web.security import current_principal, engine, login_required

bp = Blueprint("api_instances", __name__, url_prefix="/api/v1/process-instances")
STATES = ("running", "suspended", "error", "completed", "cancelled")


@bp.post("")
@login_required
def start():
    body = load(StartInstanceInput())
    instance = engine().runtime.start(
        body["definition_key"],
        business_key=body["business_key"],
        variables={"initiator": current_principal().username, **body["variables"]},
        started_by=current_principal().username,
    )
    return InstanceSchema().dump(instance), 201


@bp.get("")
@login_required
def list_instances():
    query = instance_query(current_principal())
    state = choice("state", STATES)
    if state:
        query.state(state)
    if request.args.get("definition_key"):
        query.definition_key(request.args["definition_key"])
    if request.args.get("business_key"):
        query.business_key(request.args["business_key"])
    if request.args.get("started_by"):
        query.started_by(request.args["started_by"])
    return paged(query.order_by_started(), InstanceSchema())


@bp.get("/<instance_id>")
@login_required
def get_instance(instance_id: str):
    principal = current_principal()
    visible_instance(principal, instance_id)
    eng = engine()
    instance = eng.runtime.get(instance_id, with_variables=True)
    body = InstanceDetailSchema().dump(instance)
    body["active_tasks"] = TaskSchema().dump(eng.tasks.query().instance(instance_id).open().list(), many=True)
    body["history"] = (
        InstanceDetailSchema()
        .fields["history"]
        .serialize("history", {"history": eng.history.for_instance(instance_id)})
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
    return InstanceSchema().dump(result)


@bp.post("/<instance_id>/<any(cancel, suspend, resume, 'pause-sla', 'resume-sla'):action>")
@login_required
def control(instance_id: str, action: str):
    return _control(instance_id, action)
