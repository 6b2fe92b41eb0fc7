"""Turn a user task's assignment attributes into concrete values when the task opens.

BPMN files name people literally (``alice``, ``finance``), through a variable (``${approver}``,
Camunda style, or a bare ``=approver``), or by a comma-separated list. Org-chart expressions ask
the identity service, through an ``OrgChart`` the execution layer passes in (``org_chart()``):

* ``${manager(initiator)}`` / ``=manager(applicant)`` / ``manager('li.ming')``: the manager of a
  user named literally or by a variable; ``initiator`` is whoever started the instance unless the
  data has a variable of that name. Calls nest: ``${manager(manager(initiator))}`` (skip level).
* ``${department_head('财务部')}``: a department's head (a name or a path ``总部/财务部``).
* ``${group('finance')}``: the group's name, for candidate groups.
* ``${members('purchase_review')}``: the active members of a group, one username each (a countersign's
  multi-instance collection, or ``candidateUsers`` offering a task to each member by name).

A function's argument is a quoted literal, a variable, or a bare name taken literally when no
variable has it. An expression that cannot be resolved (no org chart, unknown user, syntax error)
names nobody; ``check_people_expression`` reports the syntax errors a linter should show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.identity import SessionOrgChart
from engine.models import GroupMember, UserAccount, UserGroup

_VARIABLE = re.compile(r"^\$\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}$|^=\s*([A-Za-z_][A-Za-z0-9_.]*)$")


def _lookup(path: str, data: Mapping[str, Any]) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def resolve_value(raw: str | None, data: Mapping[str, Any]) -> Any:
    """A literal, or the task-data value a ``${name}`` / ``=name`` reference points at."""
    if raw is None:
        return None
    match = _VARIABLE.match(raw.strip())
    if match:
        return _lookup(match.group(1) or match.group(2), data)
    return raw.strip()


class OrgChart(Protocol):
    """What assignment expressions need from the org chart (``engine.identity.SessionOrgChart``)."""

    initiator: str | None  # who started the instance

    def manager_of(self, username: str) -> str | None: ...

    def department_head(self, department: str) -> str | None: ...

    # optional: ``members_of(group) -> list[str]`` (active members, for ``members('group')``)


class _SessionPeople(SessionOrgChart):
    """The session's org chart, also answering ``members('group')``."""

    def __init__(self, session: Session, initiator: str | None = None) -> None:
        super().__init__(session, initiator)
        self._members_session = session
        self._members: dict[str, list[str]] = {}

    def members_of(self, group: str) -> list[str]:
        if group not in self._members:
            self._members[group] = list(
                self._members_session.scalars(
                    select(UserAccount.username)
                    .join(GroupMember, GroupMember.user_id == UserAccount.id)
                    .join(UserGroup, UserGroup.id == GroupMember.group_id)
                    .where(UserGroup.name == group, UserAccount.state == "active")
                    .order_by(UserAccount.username)
                )
            )
        return self._members[group]


def org_chart(session: Session, *, initiator: str | None = None) -> OrgChart:
    """The org chart for tasks opening in ``session``'s transaction (lookups run only when used)."""
    return _SessionPeople(session, initiator)


FUNCTIONS = ("manager", "department_head", "group", "members")
_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'[^']*'|"[^"]*")|(?P<name>[^\W\d]\w*(?:\.[^\W\d]\w*)*)|(?P<op>[(),]))"""
)
_WRAPPED = re.compile(r"^\$\{(?P<braced>.*)\}$|^=(?P<bare>.*)$", re.DOTALL)
_CALL_START = re.compile(r"^(?:" + "|".join(FUNCTIONS) + r")\s*\(")

# A parsed expression: ("str", text) | ("name", dotted.path) | ("call", function, argument)
Node = tuple[Any, ...]


class ExpressionError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"unexpected {text[pos:].strip()[:20]!r} in {text.strip()!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


@lru_cache(maxsize=1024)
def parse_expression(text: str) -> Node:
    """Parse the inside of ``${...}``: a call, a quoted string or a (dotted) name."""
    tokens = _tokens(text)
    node, rest = _parse(tokens, 0, text)
    if rest != len(tokens):
        raise ExpressionError(f"unexpected {tokens[rest][1]!r} in {text.strip()!r}")
    return node


def _parse(tokens: list[tuple[str, str]], pos: int, text: str) -> tuple[Node, int]:
    if pos >= len(tokens):
        raise ExpressionError(f"incomplete expression {text.strip()!r}")
    kind, value = tokens[pos]
    if kind == "str":
        return ("str", value[1:-1]), pos + 1
    if kind != "name":
        raise ExpressionError(f"unexpected {value!r} in {text.strip()!r}")
    if pos + 1 < len(tokens) and tokens[pos + 1] == ("op", "("):
        if value not in FUNCTIONS:
            raise ExpressionError(f"unknown function {value!r}: one of {', '.join(FUNCTIONS)}")
        argument, pos = _parse(tokens, pos + 2, text)
        if pos >= len(tokens) or tokens[pos] != ("op", ")"):
            raise ExpressionError(f"{value}() takes one argument, then ')': {text.strip()!r}")
        return ("call", value, argument), pos + 1
    return ("name", value), pos + 1


def _expression_of(item: str) -> str | None:
    """The expression inside ``${...}`` / ``=...`` / a bare function call; None for a literal."""
    wrapped = _WRAPPED.match(item)
    if wrapped:
        return wrapped.group("braced") if wrapped.group("braced") is not None else wrapped.group("bare")
    return item if _CALL_START.match(item) else None


def check_people_expression(raw: str) -> list[str]:
    """Syntax errors in an assignment attribute (for the deployment linter); empty when fine."""
    problems = []
    for item in split_people(raw):
        expression = _expression_of(item)
        if expression is not None:
            try:
                parse_expression(expression)
            except ExpressionError as exc:
                problems.append(str(exc))
    return problems


def names_one_person(raw: str) -> bool:
    """Whether an attribute is a single ``manager(...)``/``department_head(...)`` call: it names one
    person at most (anything else may name several)."""
    items = split_people(raw)
    expression = _expression_of(items[0]) if len(items) == 1 else None
    try:
        node = parse_expression(expression) if expression is not None else None
    except ExpressionError:
        return False
    return node is not None and node[0] == "call" and node[1] in ("manager", "department_head")


def split_people(raw: str | None) -> list[str]:
    """Split a comma-separated attribute, keeping commas inside quotes and parentheses."""
    items, current, depth, quote = [], [], 0, ""
    for char in raw or "":
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "({":
            depth += 1
        elif char in ")}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _flatten(value: Any) -> list[str]:
    values = value if isinstance(value, list | tuple | set) else [value]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _evaluate(node: Node, data: Mapping[str, Any], org: OrgChart | None, *, argument: bool) -> list[str]:
    kind = node[0]
    if kind == "str":
        return _flatten(node[1])
    if kind == "name":
        value = _lookup(node[1], data)
        if value is None and node[1] == "initiator" and org is not None:
            value = org.initiator
        if value is None:
            return [node[1]] if argument else []  # a bare argument not in the data is a literal name
        return _flatten(value)
    _, function, argument_node = node
    values = _evaluate(argument_node, data, org, argument=True)
    if function == "group":
        return values
    if org is None:
        return []
    if function == "members":
        members_of = getattr(org, "members_of", None)
        return [name for value in values for name in (members_of(value) if members_of else ())]
    lookup = org.manager_of if function == "manager" else org.department_head
    return _flatten([lookup(value) for value in values])


def resolve_person_item(item: str, data: Mapping[str, Any], org: OrgChart | None = None) -> list[str]:
    """The names one list item stands for: a literal, a variable's value(s) or an expression's."""
    item = item.strip()
    expression = _expression_of(item)
    if expression is None:
        return _flatten(item)
    try:
        node = parse_expression(expression)
    except ExpressionError:
        return []
    return _evaluate(node, data, org, argument=False)


def resolve_people(
    raws: Iterable[str], data: Mapping[str, Any], org: OrgChart | None = None
) -> tuple[str, ...]:
    """Usernames or group names (deduplicated, in order) from assignment attributes.

    Without ``org``, org-chart functions (``manager``, ``department_head``) name nobody.
    """
    names: list[str] = []
    for raw in raws:
        for item in split_people(raw):
            names += resolve_person_item(item, data, org)
    return tuple(dict.fromkeys(names))


def resolve_due(raw: str | None, data: Mapping[str, Any], now: datetime) -> datetime | None:
    """ISO duration (``P2D``, ``PT4H``) from now, ISO date-time, or a variable holding either."""
    value = resolve_value(raw, data)
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.astimezone()
    text = str(value).strip()
    try:
        if text.upper().startswith("P"):
            return now + TimerEventDefinition.get_timedelta_from_start(
                TimerEventDefinition.parse_iso_duration(text), now
            )
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.astimezone()
    except (ValueError, TypeError, AttributeError):
        return None


def resolve_priority(raw: str | None, data: Mapping[str, Any], default: int = 50) -> int:
    value = resolve_value(raw, data)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


__all__ = [
    "FUNCTIONS",
    "ExpressionError",
    "OrgChart",
    "check_people_expression",
    "names_one_person",
    "org_chart",
    "parse_expression",
    "resolve_due",
    "resolve_people",
    "resolve_priority",
    "resolve_value",
    "split_people",
]
