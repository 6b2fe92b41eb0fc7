"""``baton user …``: accounts from the command line (add, freeze, activate, list).

Registered on ``baton`` by web/cli.py; it builds on that module's app helpers.
"""

from __future__ import annotations

import click

from engine.errors import BatonError, NotFoundError
from engine.identity import ROLES
from web.cli import _app, _engine, _fail


@click.group("user")
def user() -> None:
    """Manage user accounts: add, freeze (handing their open tasks over), activate, list."""


@user.command("add")
@click.argument("username")
@click.option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters."
)
@click.option("--role", default="employee", show_default=True, help=f"One of: {', '.join(ROLES)}.")
@click.option("--group", "groups", multiple=True, help="A group to join (created if missing); repeatable.")
@click.option("--department", default=None, help="Department name or path 总部/销售部 (created if missing).")
@click.option("--display-name", default=None)
@click.option("--email", default=None)
@click.option("--locale", default="zh_CN", show_default=True, help="zh_CN or en.")
@click.option("--as", "actor", default="cli", show_default=True, help="Who does it (audit log).")
def add(
    username: str,
    password: str,
    role: str,
    groups: tuple[str, ...],
    department: str | None,
    display_name: str | None,
    email: str | None,
    locale: str,
    actor: str,
) -> None:
    """Create user USERNAME (missing groups and departments are created on the way)."""
    try:
        with _app() as app:
            identity = _engine(app).identity
            new_groups = [g for g in dict.fromkeys(groups) if not identity.groups().name(g).count()]
            new_department = department is not None and not _department_exists(identity, department)
            created = identity.create_user(
                username,
                password,
                role=role,
                display_name=display_name,
                email=email,
                department=department,
                groups=groups,
                locale=locale,
                create_missing=True,
                actor=actor,
            )
    except BatonError as exc:
        _fail(f"cannot add user {username}: {_reason(exc)}")
    for name in new_groups:
        click.echo(f"created group {name}")
    if new_department:
        click.echo(f"created department {created.department}")
    where = f", department {created.department}" if created.department else ""
    member = f", groups {', '.join(created.groups)}" if created.groups else ""
    click.echo(f"added user {created.username} ({created.role}{where}{member})")


@user.command("freeze")
@click.argument("username")
@click.option("--transfer-to", required=True, help="Who takes over the user's open tasks.")
@click.option("--as", "actor", default="cli", show_default=True, help="Who does it (audit log).")
def freeze(username: str, transfer_to: str, actor: str) -> None:
    """Freeze USERNAME: no more sign-in; their open tasks go to --transfer-to."""
    try:
        with _app() as app:
            result = _engine(app).identity.freeze_user(username, transfer_to=transfer_to, actor=actor)
    except BatonError as exc:
        _fail(f"cannot freeze {username}: {_reason(exc)}")
    count = len(result.transferred_tasks)
    click.echo(f"froze user {username}; {count} open task(s) transferred to {transfer_to}")
    for path in result.still_manages:
        click.secho(f"  note: {username} still manages {path}; set a new manager", fg="yellow")


@user.command("activate")
@click.argument("username")
@click.option("--as", "actor", default="cli", show_default=True, help="Who does it (audit log).")
def activate(username: str, actor: str) -> None:
    """Let frozen user USERNAME sign in again."""
    try:
        with _app() as app:
            _engine(app).identity.activate_user(username, actor=actor)
    except BatonError as exc:
        _fail(f"cannot activate {username}: {_reason(exc)}")
    click.echo(f"activated user {username}")


@user.command("list")
@click.option("--state", type=click.Choice(["active", "frozen"]), default=None)
@click.option("--role", default=None)
def list_users(state: str | None, role: str | None) -> None:
    """List users: username, role, state, department, groups, display name."""
    with _app() as app:
        query = _engine(app).identity.users()
        if state:
            query = query.state(state)
        if role:
            query = query.role(role)
        users = query.list()
    if not users:
        click.echo("no users")
        return
    width = max(len(u.username) for u in users)
    for u in users:
        groups = ",".join(u.groups) or "-"
        click.echo(
            f"{u.username:<{width}}  {u.role:<8}  {u.state:<6}  {u.department or '-'}  {groups}"
            f"  {u.display_name or ''}".rstrip()
        )


def _department_exists(identity, department: str) -> bool:
    try:
        identity.get_department(department)
    except NotFoundError:
        return False
    except BatonError:
        return True  # ambiguous: create_user reports it
    return True


def _reason(exc: BatonError) -> str:
    problems = getattr(exc, "problems", None)
    return exc.message + (f" ({'; '.join(map(str, problems))})" if problems else "")


__all__ = ["user"]
