"""/api/v1/messages and /api/v1/signals: events from other systems into waiting processes."""

from __future__ import annotations

from flask import Blueprint

from web.api.common import load
from web.api.schemas import MessageInput
from web.security import current_principal, engine, roles_required

bp = Blueprint("api_messages", __name__, url_prefix="/api/v1")


@bp.post("/messages")
@roles_required("admin", "designer", "manager", "employee")
def message():
    """Deliver a message to the one instance waiting for it (404 none, 409 several), or start a process
    that has a message start event of that name (201)."""
    body = load(MessageInput())
    result = engine().messages.correlate(
        body["name"],
        keys=body["correlation_keys"],
        variables=body["variables"],
        actor=current_principal().username,
    )
    return {"instance_id": result.instance_id, "started": result.started}, 201 if result.started else 200


@bp.post("/signals")
@roles_required("admin", "designer", "manager")
def signal():
    """Broadcast a signal to every waiting instance (and start processes with that signal start event)."""
    body = load(MessageInput())
    reached = engine().messages.broadcast_signal(
        body["name"], variables=body["variables"], actor=current_principal().username
    )
    return {"instance_ids": reached}
