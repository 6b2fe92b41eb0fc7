"""Identity service: users, the department tree, groups, API tokens and sign-in (``engine.identity``).

Everything here returns plain frozen values (``User``, ``Department``, ``Group``, ``TokenInfo``),
never ORM rows, and every change runs in one unit of work with its audit entries. BPMN assignment
expressions (``${manager(initiator)}``, ``${department_head('财务部')}``) reach the org chart through
``SessionOrgChart``, which answers from the session of the command that opens the task.

Departments are named by id, by name when the name is unique, or by path (``总部/销售部``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import case, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.security import check_password_hash, generate_password_hash

from engine.errors import ConflictError, NotFoundError, ValidationError
from engine.models import (
    ApiToken,
    GroupMember,
    HumanTask,
    LoginThrottle,
    SavedFilter,
    TaskCandidate,
    UserAccount,
    UserGroup,
)
from engine.models import Department as DepartmentRow
from engine.query import Query

if TYPE_CHECKING:
    from engine.context import EngineContext

ROLES: Final = ("admin", "designer", "manager", "employee")
STATES: Final = ("active", "frozen")
LOCALES: Final = ("zh_CN", "en")
MIN_PASSWORD_LENGTH: Final = 8
MAX_FAILURES: Final = 5  # failed sign-ins in a row before the username is locked
LOCK_TIME: Final = timedelta(minutes=15)
TOKEN_TOUCH_INTERVAL: Final = timedelta(minutes=1)  # last_used_at is written at most this often
TOKEN_PREFIX: Final = "bt_"

# Names appear in BPMN attributes (comma-separated lists, ``manager(name)``): letters (any script),
# digits and ``. _ @ -``; no spaces, commas, quotes or parentheses.
_NAME = re.compile(r"^[\w.@-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

DepartmentRef = int | str


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()  # "leave as is" for update_user's optional fields (None clears them)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str | None
    email: str | None
    role: str
    state: str
    locale: str
    department_id: int | None
    department: str | None  # the department's path, e.g. "总部/销售部"
    groups: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def name(self) -> str:
        """What to show: the display name, or the username."""
        return self.display_name or self.username

    @property
    def is_active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class Department:
    id: int
    name: str
    path: str  # names from the root, joined by "/"
    parent_id: int | None
    manager: str | None  # username
    created_at: datetime
    version: int


@dataclass(frozen=True)
class Group:
    id: int
    name: str
    title: str | None
    created_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    """An API token without its secret (only a hash of it is stored)."""

    id: int
    username: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class SavedInboxFilter:
    id: int
    name: str
    query: str
    created_at: datetime


@dataclass(frozen=True)
class FrozenUser:
    """What freezing did: the user, the open tasks handed over, departments still managed by them."""

    user: User
    transferred_tasks: tuple[str, ...]
    still_manages: tuple[str, ...]  # department paths: set a new manager (approvals skip frozen ones)


def _path(row: DepartmentRow | None) -> str | None:
    names: list[str] = []
    seen: set[int] = set()
    while row is not None and row.id not in seen:
        seen.add(row.id)
        names.append(row.name)
        row = row.parent
    return "/".join(reversed(names)) or None


def to_user(row: UserAccount) -> User:
    return User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        email=row.email,
        role=row.role,
        state=row.state,
        locale=row.locale,
        department_id=row.department_id,
        department=_path(row.department),
        groups=tuple(sorted(g.name for g in row.groups)),
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def to_department(row: DepartmentRow) -> Department:
    return Department(
        id=row.id,
        name=row.name,
        path=_path(row) or row.name,
        parent_id=row.parent_id,
        manager=row.manager.username if row.manager is not None else None,
        created_at=row.created_at,
        version=row.version,
    )


def to_group(row: UserGroup) -> Group:
    return Group(id=row.id, name=row.name, title=row.title, created_at=row.created_at)


def to_token(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        username=row.user.username,
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


# ---------------------------------------------------------------------------------------------
# Queries


class UserQuery(Query[User]):
    def username(self, *usernames: str) -> UserQuery:
        return self._where(UserAccount.username.in_(usernames))

    def role(self, *roles: str) -> UserQuery:
        return self._where(UserAccount.role.in_(roles))

    def state(self, state: str) -> UserQuery:
        return self._where(UserAccount.state == state)

    def active(self) -> UserQuery:
        return self.state("active")

    def department(self, department_id: int, *, include_sub: bool = False) -> UserQuery:
        """Members of a department (by id: ``identity.get_department(ref).id``), or of its subtree."""
        if include_sub:
            return self._where(UserAccount.department_id.in_(_subtree_ids(department_id)))
        return self._where(UserAccount.department_id == department_id)

    def group(self, name: str) -> UserQuery:
        members = (select(GroupMember.user_id).join(UserGroup, UserGroup.id == GroupMember.group_id)).where(
            UserGroup.name == name
        )
        return self._where(UserAccount.id.in_(members))

    def search(self, text: str) -> UserQuery:
        """Username, display name or e-mail contains ``text`` (case-insensitive)."""
        pattern = f"%{_escape_like(text.strip())}%"
        return self._where(
            or_(
                UserAccount.username.ilike(pattern, escape="\\"),
                UserAccount.display_name.ilike(pattern, escape="\\"),
                UserAccount.email.ilike(pattern, escape="\\"),
            )
        )

    def order_by_username(self) -> UserQuery:
        return self._order_by(UserAccount.username)


class DepartmentQuery(Query[Department]):
    def roots(self) -> DepartmentQuery:
        return self._where(DepartmentRow.parent_id.is_(None))

    def children_of(self, department_id: int) -> DepartmentQuery:
        return self._where(DepartmentRow.parent_id == department_id)

    def subtree_of(self, department_id: int) -> DepartmentQuery:
        """The department and everything below it."""
        return self._where(DepartmentRow.id.in_(_subtree_ids(department_id)))

    def name(self, name: str) -> DepartmentQuery:
        return self._where(DepartmentRow.name == name)

    def order_by_name(self) -> DepartmentQuery:
        return self._order_by(DepartmentRow.name, DepartmentRow.id)


class GroupQuery(Query[Group]):
    def name(self, *names: str) -> GroupQuery:
        return self._where(UserGroup.name.in_(names))

    def member(self, username: str) -> GroupQuery:
        mine = (
            select(GroupMember.group_id)
            .join(UserAccount, UserAccount.id == GroupMember.user_id)
            .where(UserAccount.username == username)
        )
        return self._where(UserGroup.id.in_(mine))

    def order_by_name(self) -> GroupQuery:
        return self._order_by(UserGroup.name)


def _subtree_ids(department_id: int) -> Any:
    """The ids of a department and of all departments below it."""
    return _subtrees(DepartmentRow.id == department_id)


def _subtrees(start: Any) -> Any:
    """A recursive CTE: the ids of the departments matching ``start`` and all below them."""
    tree = select(DepartmentRow.id).where(start).cte("subtree", recursive=True)
    tree = tree.union_all(select(DepartmentRow.id).where(DepartmentRow.parent_id == tree.c.id))
    return select(tree.c.id)


def _child(session: Session, parent: DepartmentRow | None, name: str) -> DepartmentRow | None:
    """The department called ``name`` directly under ``parent`` (None: at the top level)."""
    under = DepartmentRow.parent_id.is_(None) if parent is None else DepartmentRow.parent_id == parent.id
    return session.scalar(select(DepartmentRow).where(DepartmentRow.name == name, under))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---------------------------------------------------------------------------------------------
# The org chart, answered from one session (used while a task opens, and by the service)


def _active_manager(row: DepartmentRow | None, *, skip: int | None = None) -> UserAccount | None:
    """The first active manager from ``row`` upwards (skipping user ``skip``): empty or frozen posts
    pass the question up the tree, the way an approval escalates when a manager is missing."""
    seen: set[int] = set()
    while row is not None and row.id not in seen:
        seen.add(row.id)
        manager = row.manager
        if manager is not None and manager.state == "active" and manager.id != skip:
            return manager
        row = row.parent
    return None


def manager_of_user(user: UserAccount) -> UserAccount | None:
    """The manager of the user's department; for its own manager, the manager above (see above)."""
    return _active_manager(user.department, skip=user.id)


class SessionOrgChart:
    """``engine.people.OrgChart`` on a live session: lookups are cached for the command's duration.

    Unknown users and departments resolve to None (the task opens without that person) rather than
    failing the process: the process designer sees the empty assignment in the task's audit entry.
    """

    def __init__(self, session: Session, initiator: str | None = None) -> None:
        self._session = session
        self.initiator = initiator
        self._managers: dict[str, str | None] = {}
        self._heads: dict[str, str | None] = {}

    def manager_of(self, username: str) -> str | None:
        if username not in self._managers:
            user = self._session.scalar(select(UserAccount).where(UserAccount.username == username))
            manager = manager_of_user(user) if user is not None else None
            self._managers[username] = manager.username if manager is not None else None
        return self._managers[username]

    def department_head(self, department: str) -> str | None:
        if department not in self._heads:
            try:
                row = find_department(self._session, department)
            except (NotFoundError, ValidationError):
                row = None
            head = _active_manager(row)
            self._heads[department] = head.username if head is not None else None
        return self._heads[department]


def find_department(session: Session, ref: DepartmentRef) -> DepartmentRow:
    """A department by id, unique name or path (``总部/销售部``). Raises NotFoundError, ValidationError."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        row = session.get(DepartmentRow, ref)
        if row is None:
            raise NotFoundError(f"department {ref} not found")
        return row
    parts = [p.strip() for p in str(ref).split("/") if p.strip()]
    if not parts:
        raise ValidationError("a department name is required")
    if len(parts) == 1:
        rows = session.scalars(select(DepartmentRow).where(DepartmentRow.name == parts[0])).all()
        if not rows:
            raise NotFoundError(f"department {parts[0]!r} not found")
        if len(rows) > 1:
            paths = sorted(_path(r) or r.name for r in rows)
            raise ValidationError(f"department name {parts[0]!r} is ambiguous: use its path", problems=paths)
        return rows[0]
    row = None
    for name in parts:
        row = _child(session, row, name)
        if row is None:
            raise NotFoundError(f"department {'/'.join(parts)!r} not found")
    return row


# ---------------------------------------------------------------------------------------------
# Passwords and tokens


@cache
def _dummy_hash() -> str:
    """Checked against when the username is unknown, so both cases cost the same time."""
    return generate_password_hash(secrets.token_urlsafe(16))


def _check_password(password: str) -> None:
    if not password or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() == "":
        raise ValidationError("the password cannot be only spaces")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(kind: str, name: str, max_length: int) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError(f"a {kind} name is required")
    if len(name) > max_length:
        raise ValidationError(f"the {kind} name is longer than {max_length} characters")
    if not _NAME.match(name):
        raise ValidationError(
            f"{kind} name {name!r} may only use letters, digits and . _ @ - "
            "(no spaces, commas, quotes or parentheses)"
        )
    return name


def _check_choice(kind: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(f"unknown {kind} {value!r}: one of {', '.join(allowed)}")
    return value


def _check_email(email: str | None) -> str | None:
    email = (email or "").strip() or None
    if email is not None and (len(email) > 255 or not _EMAIL.match(email)):
        raise ValidationError(f"{email!r} is not an e-mail address")
    return email


@contextmanager
def _conflicts(what: str) -> Iterator[None]:
    """Lost optimistic-lock races and unique-key races surface as ConflictError."""
    try:
        yield
    except StaleDataError as exc:
        raise ConflictError(f"someone else changed {what} first; reload and try again") from exc
    except IntegrityError as exc:
        raise ConflictError(f"conflicting change to {what}: {exc.orig}") from exc


# ---------------------------------------------------------------------------------------------
# The service


class IdentityService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx
        # token hash -> (monotonic expiry, user, token id, last used): see user_for_token
        self._tokens: dict[str, tuple[float, User, int, datetime | None]] = {}

    def _forget_tokens(self) -> None:
        """A user, membership or token changed: this process stops trusting its cached answers."""
        self._tokens.clear()

    # -- reads ----------------------------------------------------------------------------------

    def users(self) -> UserQuery:
        stmt = select(UserAccount).options(
            selectinload(UserAccount.groups), joinedload(UserAccount.department)
        )
        return UserQuery(self._ctx.db, stmt, to_user).order_by_username()

    def departments(self) -> DepartmentQuery:
        stmt = select(DepartmentRow).options(joinedload(DepartmentRow.manager))
        return DepartmentQuery(self._ctx.db, stmt, to_department)

    def groups(self) -> GroupQuery:
        return GroupQuery(self._ctx.db, select(UserGroup), to_group).order_by_name()

    def get_user(self, username: str) -> User:
        """Raises NotFoundError."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            return to_user(_user(uow.session, username))

    def get_department(self, department: DepartmentRef) -> Department:
        """Raises NotFoundError, ValidationError (an ambiguous name)."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            return to_department(find_department(uow.session, department))

    def get_group(self, name: str) -> Group:
        """Raises NotFoundError."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            return to_group(_group(uow.session, name))

    # -- users ----------------------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        password: str,
        *,
        role: str,
        display_name: str | None = None,
        email: str | None = None,
        department: DepartmentRef | None = None,
        groups: Iterable[str] = (),
        locale: str = "zh_CN",
        create_missing: bool = False,
        actor: str | None = None,
    ) -> User:
        """Create an active user. ``create_missing`` creates unknown groups and departments (a path
        creates each missing level) in the same transaction.

        Raises ValidationError (name, password, role, locale, e-mail), ConflictError (the username
        is taken), NotFoundError (an unknown group or department without ``create_missing``).
        """
        username = _check_name("user", username, 150)
        _check_password(password)
        _check_choice("role", role, ROLES)
        _check_choice("locale", locale, LOCALES)
        email = _check_email(email)
        group_names = [_check_name("group", g, 100) for g in groups]
        password_hash = generate_password_hash(password)  # slow on purpose: before the transaction
        with _conflicts(f"user {username}"), self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            if session.scalar(select(UserAccount.id).where(UserAccount.username == username)) is not None:
                raise ConflictError(f"user {username!r} already exists")
            dept = None
            if department is not None and department != "":
                dept = (
                    self._ensure_department(session, department, actor=actor, now=now)
                    if create_missing
                    else find_department(session, department)
                )
            member_of = [
                self._ensure_group(session, g, actor=actor, now=now) if create_missing else _group(session, g)
                for g in dict.fromkeys(group_names)
            ]
            row = UserAccount(
                username=username,
                display_name=(display_name or "").strip() or None,
                email=email,
                password_hash=password_hash,
                role=role,
                state="active",
                locale=locale,
                department=dept,
                created_at=now,
                updated_at=now,
            )
            row.groups = member_of
            session.add(row)
            session.flush()
            details = {"user": username, "after": _snapshot(row)}
            self._ctx.audit(session, "user_created", actor=actor, details=details, at=now)
            result = to_user(row)
            uow.commit()
        return result

    def update_user(
        self,
        username: str,
        *,
        display_name: str | None | _Unset = UNSET,
        email: str | None | _Unset = UNSET,
        role: str | None = None,
        locale: str | None = None,
        department: DepartmentRef | None | _Unset = UNSET,
        groups: Iterable[str] | None = None,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> User:
        """Change a user's profile; fields left out stay as they are (None clears the optional ones,
        ``groups`` replaces the memberships). ``expected_version`` is the version the caller saw.

        Raises NotFoundError, ValidationError, ConflictError (someone changed the user first).
        """
        if role is not None:
            _check_choice("role", role, ROLES)
        if locale is not None:
            _check_choice("locale", locale, LOCALES)
        checked_email = _check_email(email) if not isinstance(email, _Unset) else email
        group_names = None if groups is None else [_check_name("group", g, 100) for g in groups]

        def change(session: Session, row: UserAccount, now: datetime) -> None:
            if not isinstance(display_name, _Unset):
                row.display_name = (display_name or "").strip() or None
            if not isinstance(checked_email, _Unset):
                row.email = checked_email
            if role is not None:
                row.role = role
            if locale is not None:
                row.locale = locale
            if not isinstance(department, _Unset):
                row.department = None if department in (None, "") else find_department(session, department)
            if group_names is not None:
                row.groups = [_group(session, g) for g in dict.fromkeys(group_names)]

        return self._change_user(
            username, change, "user_updated", actor=actor, expected_version=expected_version
        )

    def set_password(self, username: str, password: str, *, actor: str | None = None) -> User:
        """Set a new password (and lift a sign-in lock). Raises NotFoundError, ValidationError."""
        _check_password(password)
        password_hash = generate_password_hash(password)

        def change(session: Session, row: UserAccount, now: datetime) -> None:
            row.password_hash = password_hash
            session.execute(delete(LoginThrottle).where(LoginThrottle.username == row.username))

        return self._change_user(username, change, "password_changed", actor=actor)

    def activate_user(self, username: str, *, actor: str | None = None) -> User:
        """Let a frozen user sign in again. Raises NotFoundError, ConflictError (already active)."""

        def change(session: Session, row: UserAccount, now: datetime) -> None:
            if row.state == "active":
                raise ConflictError(f"user {username!r} is already active")
            row.state = "active"

        return self._change_user(username, change, "user_activated", actor=actor)

    def freeze_user(self, username: str, *, transfer_to: str, actor: str | None) -> FrozenUser:
        """Freeze a user (no sign-in, no API tokens) and hand every open task assigned to or claimed
        by them to ``transfer_to``; tasks offered to them as a candidate user are offered to
        ``transfer_to`` instead. One transaction; each task gets a ``task_transferred`` entry.

        Raises NotFoundError (either user), ValidationError (transfer to themselves, or to a frozen
        user), ConflictError (already frozen, or a task changed meanwhile).
        """
        transferred: list[str] = []
        managed: list[str] = []

        def change(session: Session, row: UserAccount, now: datetime) -> dict[str, Any]:
            if row.state == "frozen":
                raise ConflictError(f"user {username!r} is already frozen")
            heir = _user(session, transfer_to)
            if heir.id == row.id:
                raise ValidationError("a frozen user's tasks must go to someone else")
            if heir.state != "active":
                raise ValidationError(f"user {transfer_to!r} is frozen and cannot take over tasks")
            row.state = "frozen"
            moved = self._transfer_open_tasks(session, username, transfer_to, actor=actor, now=now)
            transferred.extend(moved)
            posts = session.scalars(select(DepartmentRow).where(DepartmentRow.manager_id == row.id))
            managed.extend(sorted(_path(d) or d.name for d in posts))
            return {"transfer_to": transfer_to, "tasks": list(transferred), "still_manages": list(managed)}

        user = self._change_user(username, change, "user_frozen", actor=actor)
        return FrozenUser(user=user, transferred_tasks=tuple(transferred), still_manages=tuple(managed))

    def _transfer_open_tasks(
        self, session: Session, username: str, to_user: str, *, actor: str | None, now: datetime
    ) -> list[str]:
        """``TaskService.transfer`` for every open task of ``username``, in the caller's transaction."""
        moved: list[str] = []
        held = session.scalars(
            select(HumanTask)
            .where(
                HumanTask.state == "ready",
                or_(HumanTask.assignee == username, HumanTask.claimed_by == username),
            )
            .order_by(HumanTask.created_at, HumanTask.id)
        ).all()
        comment = f"user {username} was frozen"
        for task in held:
            before = task.assignee
            task.assignee, task.claimed_by, task.claimed_at = to_user, to_user, now
            self._ctx.audit(
                session,
                "task_transferred",
                actor=actor,
                instance_id=task.instance_id,
                task_id=task.id,
                element_id=task.element_id,
                details={"before": before, "after": to_user, "comment": comment},
                at=now,
            )
            moved.append(task.id)
        offered = session.scalars(
            select(HumanTask)
            .join(TaskCandidate, TaskCandidate.task_id == HumanTask.id)
            .where(HumanTask.state == "ready", TaskCandidate.kind == "user", TaskCandidate.name == username)
            .options(selectinload(HumanTask.candidates))
            .order_by(HumanTask.created_at, HumanTask.id)
        ).all()
        for task in offered:
            names = [c.name for c in task.candidates if c.kind == "user"]
            task.candidates = [c for c in task.candidates if not (c.kind == "user" and c.name == username)]
            if to_user not in names:
                task.candidates.append(TaskCandidate(kind="user", name=to_user))
            offers = dict(task.offers or {})
            offers["users"] = [n for n in names if n != username] + ([] if to_user in names else [to_user])
            task.offers = offers
            self._ctx.audit(
                session,
                "task_candidates_changed",
                actor=actor,
                instance_id=task.instance_id,
                task_id=task.id,
                element_id=task.element_id,
                details={"removed": [username], "added": [to_user], "comment": comment},
                at=now,
            )
        session.flush()
        return moved

    def _change_user(
        self,
        username: str,
        change: Callable[[Session, UserAccount, datetime], dict[str, Any] | None],
        action: str,
        *,
        actor: str | None,
        expected_version: int | None = None,
    ) -> User:
        self._forget_tokens()
        with _conflicts(f"user {username}"), self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            row = _user(session, username)
            if expected_version is not None and row.version != expected_version:
                raise ConflictError(
                    f"user {username!r} changed since version {expected_version} (now {row.version}); "
                    "reload and try again"
                )
            with session.no_autoflush:  # one UPDATE (one version step) per command
                before = _snapshot(row)
                extra = change(session, row, now) or {}
                after = _snapshot(row)
            changed = [k for k in after if before[k] != after[k]]
            if not (changed or extra or session.is_modified(row)):
                return to_user(row)  # nothing to change, nothing to audit
            row.updated_at = now  # also makes a group-only change bump the version
            session.flush()
            details = {
                "user": row.username,
                "before": {k: before[k] for k in changed},
                "after": {k: after[k] for k in changed},
                **extra,
            }
            if action == "password_changed":
                details = {"user": row.username}  # never a hash in the audit trail
            self._ctx.audit(session, action, actor=actor, details=details, at=now)
            result = to_user(row)
            uow.commit()
        return result

    # -- sign-in --------------------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password is right and they may sign in, else None (never says why).

        Unknown and known usernames take the same time. After ``MAX_FAILURES`` failures in a row
        the username is locked for ``LOCK_TIME`` (even the right password fails until then); a
        success clears the count. Frozen users cannot sign in. Every attempt is audited.
        """
        username = (username or "").strip()[:150]
        found: User | None = None
        stored_hash = None
        if username:
            with self._ctx.db.unit_of_work(write=False) as uow:
                row = uow.session.scalar(select(UserAccount).where(UserAccount.username == username))
                if row is not None:
                    found, stored_hash = to_user(row), row.password_hash
        # Hash outside the write transaction (scrypt is slow on purpose), and always: the answer
        # must not come faster for unknown users.
        matches = check_password_hash(stored_hash or _dummy_hash(), password or "")
        with self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            throttle = session.get(LoginThrottle, username) if username else None
            locked_until = throttle.locked_until if throttle is not None else None
            if locked_until is not None and now < locked_until:
                reason: str | None = "locked"
            elif found is None:
                reason = "unknown_user"
            elif not matches:
                reason = "bad_password"
            elif not found.is_active:
                reason = "frozen"
            else:
                reason = None
            if reason is None:
                if throttle is not None:
                    session.delete(throttle)
                self._ctx.audit(
                    session, "login_succeeded", actor=username, details={"user": username}, at=now
                )
            else:
                details: dict[str, Any] = {"user": username, "reason": reason}
                if reason in ("unknown_user", "bad_password") and username:
                    lock = self._count_failure(session, username, now)
                    if lock is not None:
                        details["locked_until"] = lock.isoformat()
                self._ctx.audit(session, "login_failed", actor=None, details=details, at=now)
            uow.commit()
        return found if reason is None else None

    def _count_failure(self, session: Session, username: str, now: datetime) -> datetime | None:
        """Add one failure (an atomic upsert); at ``MAX_FAILURES`` lock the name. Returns the lock end."""
        table = LoginThrottle.__table__
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        stale = now - LOCK_TIME  # a failure long ago does not count towards a lock
        stmt = insert(table).values(username=username, failures=1, last_failure_at=now, locked_until=None)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.username],
            set_={
                "failures": case(
                    (table.c.last_failure_at < stale, 1),
                    (table.c.locked_until.is_not(None), 1),
                    else_=table.c.failures + 1,
                ),
                "last_failure_at": excluded.last_failure_at,
                "locked_until": None,
            },
        ).returning(table.c.failures)
        failures = session.execute(stmt).scalar_one()
        if failures < MAX_FAILURES:
            return None
        until = now + LOCK_TIME
        session.execute(
            table.update().where(table.c.username == username).values(locked_until=until, failures=failures)
        )
        return until

    # -- departments ------------------------------------------------------------------------------

    def create_department(
        self,
        name: str,
        parent: DepartmentRef | None = None,
        manager: str | None = None,
        *,
        actor: str | None = None,
    ) -> Department:
        """Raises ValidationError (a name with "/"), NotFoundError (parent, manager),
        ConflictError (the parent already has a department of that name)."""
        name = _check_department_name(name)
        with _conflicts(f"department {name}"), self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            parent_row = find_department(session, parent) if parent not in (None, "") else None
            manager_row = _user(session, manager) if manager else None
            row = self._new_department(session, name, parent_row, manager_row, actor=actor, now=now)
            result = to_department(row)
            uow.commit()
        return result

    def set_department_manager(
        self, department: DepartmentRef, manager: str | None, *, actor: str | None = None
    ) -> Department:
        """Make ``manager`` the department's manager (None: no manager). Raises NotFoundError,
        ValidationError (a frozen manager), ConflictError."""
        with _conflicts(f"department {department}"), self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            row = find_department(session, department)
            new = _user(session, manager) if manager else None
            if new is not None and new.state != "active":
                raise ValidationError(f"user {manager!r} is frozen and cannot manage a department")
            before = row.manager.username if row.manager is not None else None
            row.manager = new
            session.flush()
            self._ctx.audit(
                session,
                "department_manager_set",
                actor=actor,
                details={"department": _path(row), "before": before, "after": manager or None},
                at=now,
            )
            result = to_department(row)
            uow.commit()
        return result

    def _new_department(
        self,
        session: Session,
        name: str,
        parent: DepartmentRow | None,
        manager: UserAccount | None,
        *,
        actor: str | None,
        now: datetime,
    ) -> DepartmentRow:
        if _child(session, parent, name) is not None:
            where = f"under {_path(parent)!r}" if parent is not None else "at the top level"
            raise ConflictError(f"department {name!r} already exists {where}")
        row = DepartmentRow(name=name, parent=parent, manager=manager, created_at=now)
        session.add(row)
        session.flush()
        self._ctx.audit(
            session,
            "department_created",
            actor=actor,
            details={"after": {"path": _path(row), "manager": manager.username if manager else None}},
            at=now,
        )
        return row

    def _ensure_department(
        self, session: Session, ref: DepartmentRef, *, actor: str | None, now: datetime
    ) -> DepartmentRow:
        if isinstance(ref, int):
            return find_department(session, ref)
        parts = [p.strip() for p in ref.split("/") if p.strip()]
        if len(parts) == 1:  # a lone name may live anywhere in the tree; a new one goes to the top
            try:
                return find_department(session, parts[0])
            except NotFoundError:
                pass
        row: DepartmentRow | None = None
        for name in parts:
            row = _child(session, row, name) or self._new_department(
                session, _check_department_name(name), row, None, actor=actor, now=now
            )
        assert row is not None
        return row

    def departments_managed_by(self, username: str) -> list[Department]:
        """The departments ``username`` manages and every department below them, by path.
        Raises NotFoundError."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            session = uow.session
            user = _user(session, username)
            rows = session.scalars(
                select(DepartmentRow)
                .where(DepartmentRow.id.in_(_subtrees(DepartmentRow.manager_id == user.id)))
                .options(joinedload(DepartmentRow.manager))
            ).all()
            return sorted((to_department(r) for r in rows), key=lambda d: d.path)

    # -- groups ---------------------------------------------------------------------------------

    def create_group(self, name: str, title: str | None = None, *, actor: str | None = None) -> Group:
        """Raises ValidationError, ConflictError (the name is taken)."""
        name = _check_name("group", name, 100)
        with _conflicts(f"group {name}"), self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            if session.scalar(select(UserGroup.id).where(UserGroup.name == name)) is not None:
                raise ConflictError(f"group {name!r} already exists")
            row = self._new_group(session, name, title, actor=actor, now=now)
            result = to_group(row)
            uow.commit()
        return result

    def add_to_group(self, group: str, username: str, *, actor: str | None = None) -> None:
        """Raises NotFoundError (group or user). Adding a member twice changes nothing."""
        self._membership(group, username, add=True, actor=actor)

    def remove_from_group(self, group: str, username: str, *, actor: str | None = None) -> None:
        """Raises NotFoundError (group or user). Removing a non-member changes nothing."""
        self._membership(group, username, add=False, actor=actor)

    def _membership(self, group: str, username: str, *, add: bool, actor: str | None) -> None:
        self._forget_tokens()
        with _conflicts(f"group {group}"), self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            group_row, user = _group(session, group), _user(session, username)
            key = {"group_id": group_row.id, "user_id": user.id}
            member = session.get(GroupMember, key)
            if add == (member is not None):
                return
            if add:
                session.add(GroupMember(**key))
            else:
                session.delete(member)
            session.flush()
            self._ctx.audit(
                session,
                "group_member_added" if add else "group_member_removed",
                actor=actor,
                details={"group": group_row.name, "user": user.username},
                at=now,
            )
            uow.commit()

    def _new_group(
        self, session: Session, name: str, title: str | None, *, actor: str | None, now: datetime
    ) -> UserGroup:
        row = UserGroup(name=name, title=(title or "").strip() or None, created_at=now)
        session.add(row)
        session.flush()
        details = {"after": {"name": name, "title": row.title}}
        self._ctx.audit(session, "group_created", actor=actor, details=details, at=now)
        return row

    def _ensure_group(self, session: Session, name: str, *, actor: str | None, now: datetime) -> UserGroup:
        row = session.scalar(select(UserGroup).where(UserGroup.name == name))
        return row or self._new_group(session, name, None, actor=actor, now=now)

    def members_of_group(self, name: str) -> tuple[str, ...]:
        """Usernames of the group's members (frozen ones too), sorted. Raises NotFoundError."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            group = _group(uow.session, name)
            return tuple(sorted(u.username for u in group.members))

    def groups_of(self, username: str) -> tuple[str, ...]:
        """Names of the user's groups, sorted. Raises NotFoundError."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            return tuple(sorted(g.name for g in _user(uow.session, username).groups))

    # -- org chart ------------------------------------------------------------------------------

    def manager_of(self, username: str) -> str | None:
        """The active manager of the user's department; when the user manages it themselves (or the
        post is empty or frozen), the manager above. None at the top. Raises NotFoundError."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            manager = manager_of_user(_user(uow.session, username))
            return manager.username if manager is not None else None

    def department_head(self, department: DepartmentRef) -> str | None:
        """The department's active manager (an empty or frozen post: the one above).
        Raises NotFoundError, ValidationError (an ambiguous name)."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            head = _active_manager(find_department(uow.session, department))
            return head.username if head is not None else None

    # -- API tokens -----------------------------------------------------------------------------

    def create_token(self, username: str, name: str, *, actor: str | None = None) -> tuple[str, TokenInfo]:
        """A new API token for an active user: ``(token, info)``. The token is shown this once; only
        its SHA-256 is stored. Raises NotFoundError, ValidationError, ConflictError (a live token
        of that name exists)."""
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise ValidationError("a token needs a name of 1 to 100 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with _conflicts(f"token {name}"), self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            user = _user(session, username)
            if user.state != "active":
                raise ValidationError(f"user {username!r} is frozen")
            live = select(ApiToken.id).where(
                ApiToken.user_id == user.id, ApiToken.name == name, ApiToken.revoked_at.is_(None)
            )
            if session.scalar(live) is not None:
                raise ConflictError(f"{username} already has a token named {name!r}")
            row = ApiToken(user=user, name=name, token_hash=hash_token(token), created_at=now)
            session.add(row)
            session.flush()
            self._ctx.audit(
                session,
                "token_created",
                actor=actor or username,
                details={"user": username, "token_id": row.id, "name": name},
                at=now,
            )
            info = to_token(row)
            uow.commit()
        return token, info

    def revoke_token(self, token_id: int, *, actor: str | None = None) -> TokenInfo:
        """Raises NotFoundError, ConflictError (already revoked)."""
        self._forget_tokens()
        with self._ctx.db.unit_of_work() as uow:
            session, now = uow.session, self._ctx.now()
            row = session.get(ApiToken, token_id)
            if row is None:
                raise NotFoundError(f"API token {token_id} not found")
            if row.revoked_at is not None:
                raise ConflictError(f"API token {token_id} is already revoked")
            row.revoked_at = now
            session.flush()
            self._ctx.audit(
                session,
                "token_revoked",
                actor=actor,
                details={"user": row.user.username, "token_id": row.id, "name": row.name},
                at=now,
            )
            info = to_token(row)
            uow.commit()
        return info

    # -- saved inbox filters -------------------------------------------------------------------------

    def saved_filters(self, username: str, *, kind: str = "inbox") -> list[SavedInboxFilter]:
        """The user's saved filters of one list (``kind``: inbox, instances), by name."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            rows = uow.session.scalars(
                select(SavedFilter)
                .where(SavedFilter.username == username, SavedFilter.kind == kind)
                .order_by(SavedFilter.name)
            )
            return [SavedInboxFilter(r.id, r.name, r.query, r.created_at) for r in rows]

    def save_filter(self, username: str, name: str, query: str, *, kind: str = "inbox") -> SavedInboxFilter:
        """Keep (or replace, by name) a filter of one of ``username``'s lists: a query string."""
        name = (name or "").strip()
        if not 1 <= len(name) <= 100 or not name.isprintable():
            raise ValidationError("a saved filter needs a name of 1 to 100 characters")
        if len(query) > 2000:
            raise ValidationError("a saved filter's query must be at most 2000 characters")
        with self._ctx.db.unit_of_work() as uow:
            session = uow.session
            now = self._ctx.now()
            row = session.scalars(
                select(SavedFilter).where(
                    SavedFilter.username == username, SavedFilter.kind == kind, SavedFilter.name == name
                )
            ).first()
            if row is None:
                row = SavedFilter(username=username, kind=kind, name=name, query=query, created_at=now)
                session.add(row)
            else:
                row.query = query
            session.flush()
            self._ctx.audit(
                session,
                "filter_saved",
                actor=username,
                details={"kind": kind, "name": name, "query": query},
                at=now,
            )
            result = SavedInboxFilter(row.id, row.name, row.query, row.created_at)
            uow.commit()
        return result

    def delete_filter(self, username: str, filter_id: int) -> None:
        with self._ctx.db.unit_of_work() as uow:
            row = uow.session.get(SavedFilter, filter_id)
            if row is None or row.username != username:
                raise NotFoundError(f"saved filter {filter_id} not found")
            uow.session.delete(row)
            self._ctx.audit(uow.session, "filter_deleted", actor=username, details={"name": row.name})
            uow.commit()

    def tokens_of(self, username: str) -> list[TokenInfo]:
        """The user's tokens, newest first (revoked ones too). Raises NotFoundError."""
        with self._ctx.db.unit_of_work(write=False) as uow:
            user = _user(uow.session, username)
            rows = uow.session.scalars(
                select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
            ).all()
            return [to_token(r) for r in rows]

    def user_for_token(self, token: str) -> User | None:
        """The active user a live token belongs to, else None. Marks the token used (at most once a
        minute, so API calls do not each write; the bookkeeping is not audited).

        Answers are kept ``token_cache_seconds`` per process: authentication was a fifth of an API
        request's CPU (docs/benchmarks.md). Revocation and user changes clear this process's copies;
        other processes follow within the TTL."""
        if not token or not token.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(token)
        now = self._ctx.now()
        cached = self._tokens.get(digest)
        if cached is None or cached[0] <= time.monotonic():
            with self._ctx.db.unit_of_work(write=False) as uow:
                row = uow.session.scalar(
                    select(ApiToken)
                    .where(ApiToken.token_hash == digest)
                    .options(joinedload(ApiToken.user).selectinload(UserAccount.groups))
                )
                if row is None or row.revoked_at is not None or row.user.state != "active":
                    return None
                expires = time.monotonic() + self._ctx.config.token_cache_seconds
                cached = (expires, to_user(row.user), row.id, row.last_used_at)
        expires, user, token_id, last_used = cached
        stale = last_used is None or now - last_used >= TOKEN_TOUCH_INTERVAL
        if self._ctx.config.token_cache_seconds > 0:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[digest] = (expires, user, token_id, now if stale else last_used)
        if stale:
            with self._ctx.db.unit_of_work() as uow:
                uow.session.execute(
                    ApiToken.__table__.update()
                    .where(ApiToken.__table__.c.id == token_id)
                    .values(last_used_at=now)
                )
                uow.commit()
        return user


def _user(session: Session, username: str | None) -> UserAccount:
    row = session.scalar(select(UserAccount).where(UserAccount.username == username)) if username else None
    if row is None:
        raise NotFoundError(f"user {username!r} not found")
    return row


def _group(session: Session, name: str) -> UserGroup:
    row = session.scalar(select(UserGroup).where(UserGroup.name == name))
    if row is None:
        raise NotFoundError(f"group {name!r} not found")
    return row


def _check_department_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError("a department needs a name of 1 to 100 characters")
    if "/" in name or "," in name or "'" in name or '"' in name:
        raise ValidationError(f"department name {name!r} cannot contain / , or quotes")
    return name


def _snapshot(row: UserAccount) -> dict[str, Any]:
    """The audited fields of a user (never the password hash)."""
    return {
        "display_name": row.display_name,
        "email": row.email,
        "role": row.role,
        "state": row.state,
        "locale": row.locale,
        "department": _path(row.department),
        "groups": sorted(g.name for g in row.groups),
    }


__all__ = [
    "Department",
    "DepartmentQuery",
    "FrozenUser",
    "Group",
    "GroupQuery",
    "IdentityService",
    "SessionOrgChart",
    "TokenInfo",
    "UNSET",
    "User",
    "UserQuery",
    "find_department",
    "hash_token",
]
