"""Who is asking: session login for pages, bearer tokens for the API, CSRF for forms.

Every request resolves at most one ``Principal`` (cached on ``g``). Views declare what they need
with ``login_required`` / ``roles_required``; what a principal may see or do with a task or an
instance is decided in web/access.py, in one place.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import abort, current_app, g, redirect, request, session, url_for

from engine.facade import Engine
from engine.identity import User

ROLES = ("admin", "designer", "manager", "employee")
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Principal:
    user: User
    via_token: bool

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def groups(self) -> tuple[str, ...]:
        return self.user.groups

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"


def engine() -> Engine:
    return current_app.extensions["baton.engine"]


def _is_api() -> bool:
    return request.path.startswith("/api/")


def current_principal() -> Principal | None:
    if "principal" in g:
        return g.principal
    principal = None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = engine().identity.user_for_token(header[7:].strip())
        principal = Principal(user, True) if user is not None and user.is_active else None
    elif session.get("user"):
        try:
            user = engine().identity.get_user(session["user"])
        except Exception:  # noqa: BLE001 - a deleted or renamed user simply is not logged in any more
            user = None
        if user is not None and user.is_active:
            principal = Principal(user, False)
        else:
            session.clear()
    g.principal = principal
    return principal


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_principal() is None:
            if _is_api():
                abort(401, description="log in first: send 'Authorization: Bearer <token>'")
            return redirect(url_for("auth.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapped


def roles_required(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal is None or (principal.role not in roles and not principal.is_admin):
                abort(403, description=f"this needs one of the roles: {', '.join(roles)}")
            return view(*args, **kwargs)

        return wrapped

    return decorator


def log_in(user: User) -> None:
    session.clear()
    session["user"] = user.username
    session.permanent = True
    g.pop("principal", None)


def log_out() -> None:
    session.clear()
    g.pop("principal", None)


def csrf_token() -> str:
    """The session's CSRF token, made on first use; pages put it in every form."""
    token = session.get(CSRF_FIELD)
    if token is None:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Refuse state-changing page requests without the session's token (API calls use bearer tokens)."""
    if request.method in ("GET", "HEAD", "OPTIONS") or current_app.config.get("CSRF_DISABLED"):
        return
    if _is_api() and (
        request.headers.get("Authorization", "").lower().startswith("bearer ") or not session.get("user")
    ):
        return  # the API without a session cookie cannot be forged cross-site
    sent = request.form.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token") or ""
    expected = session.get(CSRF_FIELD) or ""
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, description="the form expired or came from elsewhere (CSRF check failed): reload the page")
