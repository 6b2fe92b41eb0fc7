"""/api/v1/auth/token: exchange a username and password for a bearer token (shown once)."""

from __future__ import annotations

import secrets

from flask import Blueprint, abort

from web.api.common import load
from web.api.schemas import TokenInput
from web.security import current_principal, engine, login_required

bp = Blueprint("api_auth", __name__, url_prefix="/api/v1/auth")


@bp.post("/token")
def token():
    body = load(TokenInput())
    identity = engine().identity
    user = identity.authenticate(body["username"], body["password"])
    if user is None:
        abort(401, description="wrong username or password, or the account is frozen or locked for a while")
    name = body["name"] or f"api-{secrets.token_hex(4)}"
    secret, info = identity.create_token(user.username, name, actor=user.username)
    return {"token": secret, "token_type": "Bearer", "id": info.id, "name": info.name}, 201


@bp.delete("/token/<int:token_id>")
@login_required
def revoke(token_id: int):
    principal = current_principal()
    owned = {t.id for t in engine().identity.tokens_of(principal.username)}
    if token_id not in owned and not principal.is_admin:
        abort(404, description=f"token {token_id} not found")
    engine().identity.revoke_token(token_id, actor=principal.username)
    return {"revoked": token_id}


@bp.get("/me")
@login_required
def me():
    user = current_principal().user
    return {
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "groups": list(user.groups),
        "department": user.department,
        "locale": user.locale,
    }
