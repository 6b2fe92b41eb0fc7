"""Fluent read-only queries with one contract: ``count() / first() / list() / page(index, size)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

from sqlalchemy import Select, func, select

from engine.db import Database

T = TypeVar("T")


class Query(Generic[T]):
    """Collects filters; runs them in a short read transaction when a terminal method is called."""

    def __init__(self, db: Database, stmt: Select, to_result: Callable[[Any], T]) -> None:
        self._db = db
        self._stmt = stmt
        self._order: list[Any] = []
        self._to_result = to_result

    def _where(self, *criteria: Any) -> Self:
        self._stmt = self._stmt.where(*criteria)
        return self

    def _order_by(self, *columns: Any) -> Self:
        self._order.extend(columns)
        return self

    def count(self) -> int:
        with self._db.unit_of_work(write=False) as uow:
            return uow.session.scalar(select(func.count()).select_from(self._stmt.order_by(None).subquery()))

    def list(self, limit: int | None = None, offset: int = 0) -> list[T]:
        stmt = self._stmt.order_by(*self._order)
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        with self._db.unit_of_work(write=False) as uow:
            return [self._to_result(row) for row in uow.session.scalars(stmt)]

    def first(self) -> T | None:
        found = self.list(limit=1)
        return found[0] if found else None

    def page(self, index: int, size: int = 50) -> list[T]:
        return self.list(limit=size, offset=max(index, 0) * size)
