"""Fluent read-only queries with one contract: ``count() / first() / list() / page(index, size)``.

A filter that says "any of these" (a user's inbox: assigned to them, or offered to them, or ...)
is kept apart with ``_any_of`` and run as a UNION of one query per branch rather than as one
``WHERE a OR b OR ...``: each branch then uses its own index, and for a page each branch stops
after ``offset + size`` rows in the page's order (the union's first ``offset + size`` rows are
among them), so with an index in page order behind each branch a page costs about the same with
100 or 100,000 matching rows. One big OR, by contrast, lets PostgreSQL use no index at all and
evaluate the candidate sub-selects per row. A query already narrowed by key (``_where_key``: one
id, one instance's tasks) runs the branches as that one OR: it only has a handful of rows to test.

A branch whose best wide shape depends on the data (``Lazy``: "offered to me" reads how many offers
there are, engine/tasks.py) is built only when the query runs, once it is known whether the query
is narrow: a visibility check of one task or instance then costs one statement, not two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Generic, Self, TypeVar

from sqlalchemy import Column, Select, func, or_, select, union
from sqlalchemy.sql import visitors
from sqlalchemy.sql.util import ClauseAdapter

from engine.db import Database

T = TypeVar("T")


class Lazy:
    """An "any of" branch built by ``build(wide)`` when its query runs: ``wide`` is False for a
    query narrowed by key (the branch is then checked on a handful of rows), True otherwise. Each
    shape is built once, so a page and its count share whatever the build reads."""

    def __init__(self, build: Callable[[bool], Any]) -> None:
        self._build = cache(build)

    def shape(self, wide: bool) -> Any:
        return self._build(wide)


def _shaped(branches: Sequence[Any], wide: bool) -> list[Any]:
    return [b.shape(wide) if isinstance(b, Lazy) else b for b in branches]


class Query(Generic[T]):
    """Collects filters; runs them in a short read transaction when a terminal method is called."""

    def __init__(self, db: Database, stmt: Select, to_result: Callable[[Any], T]) -> None:
        self._db = db
        self._stmt = stmt
        self._order: list[Any] = []
        self._to_result = to_result
        self._branches: list[Any] | None = None  # "any of": one UNION member each, see module doc
        self._narrow = False  # a filter already picks a handful of rows by key: no UNION needed

    def _where(self, *criteria: Any) -> Self:
        self._stmt = self._stmt.where(*criteria)
        return self

    def _any_of(self, *branches: Any) -> Self:
        """Rows matching at least one branch. A second call narrows the first (AND, as ``_where``;
        its lazy branches are built now, in their wide shape, which suits either form)."""
        if self._branches is None:
            self._branches = list(branches)
            return self
        return self._where(or_(*_shaped(branches, wide=True)))

    def _where_key(self, *criteria: Any) -> Self:
        """A filter on a key that leaves a handful of rows (one id, one instance's tasks): the
        "any of" branches are then checked on those rows (one OR), not run as a UNION."""
        self._narrow = True
        return self._where(*criteria)

    def _order_by(self, *columns: Any) -> Self:
        self._order.extend(columns)
        return self

    def _plain(self) -> Select:
        """The statement with the branches as one OR (what runs when there are none or it is narrow)."""
        if not self._branches:
            return self._stmt
        return self._stmt.where(or_(*_shaped(self._branches, wide=not self._narrow)))

    # -- the UNION form ---------------------------------------------------------------------------

    def _table(self) -> Any:
        return self._stmt.column_descriptions[0]["entity"].__table__

    def _ordering(self) -> list[Any]:
        """The order, made total with the primary key (the members and the union must agree)."""
        order = [o.__clause_element__() if hasattr(o, "__clause_element__") else o for o in self._order]
        keys = [k for k in self._table().primary_key.columns if not any(k.compare(o) for o in order)]
        return [*order, *keys]

    def _member(self, branch: Any, columns: Sequence[Column], limit: int | None, ordered: bool) -> Select:
        criteria = [c for c in (self._stmt.whereclause, branch) if c is not None]
        member = select(*columns).where(*criteria)
        if limit is not None:  # SQLite wants a member with LIMIT wrapped in a sub-select
            member = member.order_by(*self._ordering()) if ordered else member
            member = select(*member.limit(limit).subquery().c)
        return member

    def _union(self, limit: int | None, *, ordered: bool = True) -> Any:
        """The key (and order columns) of the rows matching any branch: at most ``limit`` per branch."""
        table = self._table()
        names = [c.name for c in table.primary_key.columns]
        for expression in self._ordering() if ordered else ():
            for element in visitors.iterate(expression):
                if isinstance(element, Column) and element.table is table and element.name not in names:
                    names.append(element.name)
        columns = [table.c[name] for name in names]
        members = [self._member(b, columns, limit, ordered) for b in _shaped(self._branches, wide=True)]
        return (union(*members) if len(members) > 1 else members[0]).subquery("any_of")

    def _statement(self, limit: int | None, offset: int) -> Select:
        if self._branches is None or self._narrow:
            stmt = self._plain().order_by(*self._order)
            if limit is not None:
                stmt = stmt.limit(limit)
            return stmt.offset(offset) if offset else stmt
        matched = self._union(None if limit is None else limit + offset)
        if limit is None and not offset:
            ids = select(*(matched.c[c.name] for c in self._table().primary_key.columns))
        else:
            adapt = ClauseAdapter(matched).traverse
            ids = select(*(matched.c[c.name] for c in self._table().primary_key.columns))
            ids = ids.order_by(*(adapt(o) for o in self._ordering())).limit(limit).offset(offset or None)
        (key,) = self._table().primary_key.columns
        return self._stmt.where(key.in_(ids)).order_by(*self._ordering())

    # -- terminal methods ---------------------------------------------------------------------------

    def count(self, cap: int | None = None) -> int:
        """How many rows match; with ``cap``, at most ``cap + 1`` (an inbox badge shows "1000+"):
        counting stops there, so a 100,000-row inbox costs what a 1,000-row one does."""
        limit = None if cap is None else cap + 1
        if self._branches is None or self._narrow:
            counted = self._plain().order_by(None)
            counted = (counted.limit(limit) if limit is not None else counted).subquery()
        else:
            # each member stops after cap + 1 rows: if any reaches it, so does the union
            counted = self._union(limit, ordered=False)  # UNION: each row once
            if limit is not None:
                counted = select(*counted.c).limit(limit).subquery()
        with self._db.unit_of_work(write=False) as uow:
            return uow.session.scalar(select(func.count()).select_from(counted))

    def list(self, limit: int | None = None, offset: int = 0) -> list[T]:
        stmt = self._statement(limit, offset)
        with self._db.unit_of_work(write=False) as uow:
            return [self._to_result(row) for row in uow.session.scalars(stmt).unique()]

    def first(self) -> T | None:
        found = self.list(limit=1)
        return found[0] if found else None

    def page(self, index: int, size: int = 50) -> list[T]:
        return self.list(limit=size, offset=max(index, 0) * size)
