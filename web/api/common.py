"""Shared plumbing of the API blueprints: input loading, pagination, the list envelope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request
from marshmallow import Schema
from marshmallow import ValidationError as SchemaError

from engine.errors import ValidationError
from engine.query import Query

MAX_PAGE_SIZE = 200


def load(schema: Schema) -> dict[str, Any]:
    """The request's JSON body through an input schema; malformed input is a 422 with field errors."""
    body = request.get_json(silent=True)
    if body is None:
        body = {} if not request.data else None
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object")
    try:
        return schema.load(body)
    except SchemaError as exc:
        problems = [
            {
                "field": field,
                "message": "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages),
            }
            for field, messages in exc.normalized_messages().items()
        ]
        raise ValidationError("the request is invalid", problems=problems) from exc


def page_args() -> tuple[int, int]:
    try:
        page = max(int(request.args.get("page", 0)), 0)
        size = min(max(int(request.args.get("size", 50)), 1), MAX_PAGE_SIZE)
    except ValueError as exc:
        raise ValidationError("page and size must be whole numbers") from exc
    return page, size


def paged(query: Query, schema: Schema, *, count: bool = True) -> dict[str, Any]:
    page, size = page_args()
    items = query.page(page, size)
    body: dict[str, Any] = {"items": schema.dump(items, many=True), "page": page, "size": size}
    if count:
        body["total"] = query.count()
    return body


def paged_ahead(query: Query, schema: Schema) -> dict[str, Any]:
    """One page of ``query`` read one row past its end: ``has_more`` says whether another page follows
    without counting (a count over a large table costs more than the page); ``total`` only with
    ``count=true``."""
    page, size = page_args()
    found = query.list(limit=size + 1, offset=page * size)
    body: dict[str, Any] = {
        "items": schema.dump(found[:size], many=True),
        "page": page,
        "size": size,
        "has_more": len(found) > size,
    }
    if request.args.get("count", "").lower() in ("1", "true", "yes"):
        body["total"] = query.count()
    return body


def choice(name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    value = request.args.get(name, default)
    if value is not None and value not in allowed:
        raise ValidationError(f"{name} must be one of: {', '.join(allowed)}")
    return value


def apply_filters(query: Query, filters: dict[str, Callable[[str], Query]]) -> Query:
    for name, apply in filters.items():
        value = request.args.get(name)
        if value:
            query = apply(value)
    return query
