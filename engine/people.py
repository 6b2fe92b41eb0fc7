"""Turn a user task's assignment attributes into concrete values when the task opens.

BPMN files name people literally (``alice``, ``finance``), through a variable (``${approver}``,
Camunda style, or a bare ``=approver``), or by a comma-separated list. Org-chart expressions
(the starter's manager, a department head) plug in here once the identity service exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition

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


def resolve_people(raws: Iterable[str], data: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for raw in raws:
        for part in (raw or "").split(","):
            value = resolve_value(part, data) if part.strip() else None
            values = value if isinstance(value, list | tuple | set) else [value]
            names += [str(v).strip() for v in values if v is not None and str(v).strip()]
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


__all__ = ["resolve_due", "resolve_people", "resolve_priority", "resolve_value"]
