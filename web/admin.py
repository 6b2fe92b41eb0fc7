"""Administrators' pages: users (create, freeze with hand-over, reactivate), departments and groups."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import gettext as _

from engine.errors import BatonError
from web.errors import status_of
from web.security import ROLES, current_principal, engine, roles_required

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _page(message: str | None = None, status: int = 200):
    identity = engine().identity
    return render_template(
        "admin/people.html",
        users=identity.users().order_by_username().list(),
        departments=identity.departments().order_by_name().list(),
        groups=identity.groups().order_by_name().list(),
        roles=ROLES,
        message=message,
    ), status


@bp.get("/people")
@roles_required("admin")
def people():
    return _page(request.args.get("done"))


def _department(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _act(action) -> tuple | object:
    """Run an admin action; a refused one re-shows the page with the reason (and its status)."""
    try:
        action()
    except BatonError as exc:
        return _page(exc.message, status_of(exc))
    return redirect(url_for("admin.people", done=_("Saved.")))


@bp.post("/users")
@roles_required("admin")
def create_user():
    form = request.form
    return _act(
        lambda: engine().identity.create_user(
            form.get("username", "").strip(),
            form.get("password", ""),
            role=form.get("role", "employee"),
            display_name=form.get("display_name") or None,
            department=_department(form.get("department")),
            groups=[g for g in form.getlist("groups") if g],
            actor=current_principal().username,
        )
    )


@bp.post("/users/<username>/freeze")
@roles_required("admin")
def freeze(username: str):
    to = request.form.get("transfer_to", "").strip()
    return _act(
        lambda: engine().identity.freeze_user(username, transfer_to=to, actor=current_principal().username)
    )


@bp.post("/users/<username>/activate")
@roles_required("admin")
def activate(username: str):
    return _act(lambda: engine().identity.activate_user(username, actor=current_principal().username))


@bp.post("/departments")
@roles_required("admin")
def create_department():
    form = request.form
    return _act(
        lambda: engine().identity.create_department(
            form.get("name", "").strip(),
            _department(form.get("parent")),
            form.get("manager") or None,
            actor=current_principal().username,
        )
    )


@bp.post("/groups")
@roles_required("admin")
def create_group():
    form = request.form
    return _act(
        lambda: engine().identity.create_group(
            form.get("name", "").strip(), form.get("title") or None, actor=current_principal().username
        )
    )


@bp.post("/groups/<name>/members")
@roles_required("admin")
def add_member(name: str):
    username = request.form.get("username", "").strip()
    return _act(lambda: engine().identity.add_to_group(name, username, actor=current_principal().username))
