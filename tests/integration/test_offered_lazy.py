"""The "offered to me" branch is built when its query runs (engine/query.py ``Lazy``): a visibility
check of one task or instance, narrowed by key, is one statement with the candidates probed inside
it; only a wide query (an inbox page, a count) reads the user's offers first, once, to choose its
shape. SQLite and PostgreSQL, statements counted on the engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from engine.errors import NotFoundError
from tests import bpmn_builders as b
from tests.integration.web_support import PASSWORD
from web.access import instance_query, task_query, visible_instance, visible_task
from web.security import Principal


@pytest.fixture
def eng(app):
    return app.extensions["baton.engine"]


@pytest.fixture
def offered(eng):
    """li starts a process whose "left" step is offered to the group legal (zhao is in it, zhang
    is not). Returns the instance id, the task id and the principals li, zhao and zhang."""
    identity = eng.identity
    people = {
        name: Principal(
            identity.create_user(name, PASSWORD, role="employee", groups=[group], create_missing=True), False
        )
        for name, group in (("li", "staff"), ("zhao", "legal"), ("zhang", "sales"))
    }
    eng.repository.deploy({"p.bpmn": b.parallel_users()}, deployed_by="designer")
    instance = eng.runtime.start("parallel", started_by="li")
    (task,) = eng.tasks.query().instance(instance.id).element("left").list()
    assert task.candidate_groups == ("legal",) and task.assignee is None
    return instance.id, task.id, people


@contextmanager
def selects(eng) -> Iterator[list[str]]:
    """The SELECT statements run meanwhile (SQLite's BEGIN and the like left out)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(eng.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(eng.db.engine, "before_cursor_execute", record)


def probes(statements: list[str]) -> list[str]:
    """The separate reads of a user's offers (what a wide "offered to me" runs first)."""
    return [s for s in statements if " ".join(s.split()).startswith("SELECT task_candidate.task_id FROM")]


class TestNarrowVisibilityChecks:
    def test_one_instance_is_checked_in_one_statement(self, app, eng, offered):
        instance_id, _task_id, people = offered
        with app.test_request_context():
            for name, visible in (("zhao", 1), ("zhang", 0)):
                with selects(eng) as seen:
                    assert instance_query(people[name]).id(instance_id).count() == visible
                assert len(seen) == 1 and not probes(seen)

            with selects(eng) as seen:
                assert visible_instance(people["zhao"], instance_id).id == instance_id
            assert not probes(seen)
            with pytest.raises(NotFoundError):
                visible_instance(people["zhang"], instance_id)

    def test_one_task_is_checked_in_one_statement(self, app, eng, offered):
        _instance_id, task_id, people = offered
        with app.test_request_context():
            for name, visible in (("zhao", 1), ("zhang", 0)):
                with selects(eng) as seen:
                    assert task_query(people[name]).id(task_id).count() == visible
                assert len(seen) == 1 and not probes(seen)

            assert visible_task(people["zhao"], task_id).id == task_id  # offered: decided on the row
            with selects(eng) as seen, pytest.raises(NotFoundError):
                visible_task(people["zhang"], task_id)
            assert len(seen) == 2 and not probes(seen)  # the task read, then the check


class TestWideQueries:
    def test_a_page_and_its_count_share_one_read_of_the_offers(self, app, eng, offered):
        instance_id, task_id, people = offered
        with app.test_request_context():
            for scope in ("group", "all"):
                query = task_query(people["zhao"], scope).open()
                with selects(eng) as seen:
                    assert [t.id for t in query.list(limit=10)] == [task_id]
                    assert query.count(cap=100) == 1
                assert len(seen) == 3 and len(probes(seen)) == 1
                assert task_query(people["zhang"], scope).open().list() == []

            with selects(eng) as seen:
                assert [i.id for i in instance_query(people["zhao"]).list()] == [instance_id]
            assert len(seen) == 2 and len(probes(seen)) == 1
            assert instance_query(people["zhang"]).list() == []
