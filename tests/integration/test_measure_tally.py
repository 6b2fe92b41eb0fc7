"""The measures' tallies (migration 0014, engine/measures.py ``_Tallies``): hourly counts kept by
database triggers give the same figures as counting the instance and task rows, in every zone,
range and department scope, before and after ``settle`` folds them, whatever wrote the rows
(the engine's commands, version migration, retention, a plain SQL DELETE), and while writers and a
settle run at the same time. SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from engine import measures
from engine.context import EngineConfig
from engine.facade import Engine
from engine.measures import local_range
from engine.models import MeasureTally
from engine.scheduler import JobRunner
from tests.conftest import Clock
from tests.integration.test_measures import PASSWORD, ticket_bpmn

DEPARTMENTS = ("Sales", "Support", "Legal")
ZONES = ("UTC", "Asia/Shanghai", "America/New_York")  # New York leaves summer time on 2026-11-01


def people(engine) -> list[str]:
    identity = engine.identity
    names = []
    for n, department in enumerate((*DEPARTMENTS, *DEPARTMENTS, None)):
        name = f"user{n}"
        identity.create_user(name, PASSWORD, role="employee", department=department, create_missing=True)
        names.append(name)
    return names


def busy_weeks(engine, clock, seed: int = 7, count: int = 36) -> list[str]:
    """``count`` tickets started over ten days around the summer-time change by people of three
    departments (and one of none), each moved on at random times: some done, some cancelled, some
    waiting (past their due time or not), interleaved."""
    rng = random.Random(seed)
    starters = people(engine)
    engine.repository.deploy({"ticket.bpmn": ticket_bpmn()}, deployed_by="designer")
    clock.now = datetime(2026, 10, 27, 3, 17, tzinfo=UTC)
    ids: list[str] = []
    for _ in range(count * 3):
        clock.now += timedelta(minutes=rng.randrange(5, 400), seconds=rng.randrange(60))
        roll = rng.random()
        waiting = [i for i in ids if engine.runtime.get(i).state == "running"]
        if roll < 0.4 or not waiting:
            if len(ids) < count:
                ids.append(engine.runtime.start("ticket", started_by=rng.choice(starters)).id)
        elif roll < 0.9:
            chosen = rng.choice(waiting)
            task = engine.tasks.query().instance(chosen).open().first()
            engine.tasks.complete(task.id, actor="user0")
        else:
            engine.runtime.cancel(rng.choice(waiting), actor="user0", reason="duplicate")
    return ids


def both_ways(engine, monkeypatch, **kw):
    """The figures from the tallies and counted from the rows."""
    assert measures._Tallies.serve(*_serve_args(engine, **kw)), "the tallies should serve this range"
    tallied = engine.measures.figures("ticket", **kw)
    with monkeypatch.context() as patch:
        patch.setattr(measures._Tallies, "serve", staticmethod(lambda *args: False))
        counted = engine.measures.figures("ticket", **kw)
    return tallied, counted


def _serve_args(engine, *, start, end, time_zone="UTC", departments=None, **_):
    scope = measures._Scope("ticket", None, departments)
    return scope, measures._Slots.of(measures.zone(time_zone), start, end), start, end


def agree(engine, monkeypatch, first=date(2026, 10, 26), last=date(2026, 11, 8)) -> int:
    """Every zone, every department scope: the same figures both ways. Returns the cases checked."""
    ids = {d.name: d.id for d in engine.identity.departments().list()}
    cases = 0
    for time_zone in ZONES:
        start, end = local_range(first, last, time_zone)
        for departments in (None, (ids["Sales"],), (ids["Support"], ids["Legal"]), ()):
            for bucket in ("day", "week"):
                kw = dict(start=start, end=end, time_zone=time_zone, departments=departments, bucket=bucket)
                tallied, counted = both_ways(engine, monkeypatch, **kw)
                steps = sorted(tallied.steps, key=lambda s: s.element_id)
                assert steps == sorted(counted.steps, key=lambda s: s.element_id), kw
                assert tallied == replace(counted, steps=tallied.steps), kw
                cases += 1
    return cases


def unsettled(engine) -> int:
    with engine.db.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(MeasureTally).where(~MeasureTally.settled))


class TestTheSameFigures:
    def test_tallies_agree_with_the_rows_before_and_after_settling(self, clocked, monkeypatch):
        engine, clock = clocked
        busy_weeks(engine, clock)
        assert unsettled(engine) > 0
        assert agree(engine, monkeypatch) == 24
        folded = engine.measures.settle()
        assert folded > 0 and unsettled(engine) == 0
        agree(engine, monkeypatch)
        assert engine.measures.settle() == 0  # nothing new: nothing to fold

    def test_settled_rows_are_one_per_key_and_keys_summing_to_nothing_go(self, clocked):
        engine, clock = clocked
        busy_weeks(engine, clock, count=12)
        engine.measures.settle()
        with engine.db.engine.connect() as conn:
            rows = conn.execute(select(MeasureTally)).all()
        keys = [(r.definition_key, r.kind, r.hour, r.department_id, r.element_id, r.state) for r in rows]
        assert len(keys) == len(set(keys)) and all(r.settled for r in rows)
        # a task that was open is now done: its "ready" key summed to nothing and is gone
        assert all(r.n != 0 or r.due_n or r.late_n or r.total_ms for r in rows)
        assert {r.state for r in rows if r.kind == "task"} <= {"ready", "completed", "cancelled"}

    def test_a_manager_scope_and_the_page_use_the_tallies(self, clocked, monkeypatch):
        engine, clock = clocked
        busy_weeks(engine, clock, count=12)
        start, end = local_range(date(2026, 10, 26), date(2026, 11, 8), "Asia/Shanghai")
        served = []
        original = measures._Tallies.serve

        def spy(*args):
            served.append(original(*args))
            return served[-1]

        monkeypatch.setattr(measures._Tallies, "serve", staticmethod(spy))
        engine.measures.figures("ticket", start=start, end=end, time_zone="Asia/Shanghai")
        engine.measures.figures("ticket", start=start, end=end, version=1)  # one version: the rows
        engine.measures.figures("ticket", start=start, end=end, time_zone="Asia/Kolkata")  # half hours
        engine.measures.figures("ticket", start=start + timedelta(minutes=30), end=end)  # mid-hour
        assert served == [True, False, False, False]


class TestEveryWriter:
    def test_suspend_resume_migrate_retention_and_a_plain_delete(self, clocked, monkeypatch):
        engine, clock = clocked
        ids = busy_weeks(engine, clock, count=16)
        engine.measures.settle()
        running = [i for i in ids if engine.runtime.get(i).state == "running"]
        engine.runtime.suspend(running[0], actor="user0")
        agree(engine, monkeypatch)
        engine.runtime.resume(running[0], actor="user0")
        engine.repository.deploy({"ticket.bpmn": ticket_bpmn(extra_step=True)}, deployed_by="designer")
        engine.runtime.migrate(running[1], to_version=2, actor="user0")
        clock.now += timedelta(days=40)
        engine.retention.run(days=30)
        agree(engine, monkeypatch)
        with engine.db.engine.begin() as conn:  # what no Baton command does, counted all the same
            conn.execute(text("DELETE FROM process_instance WHERE id = :id"), {"id": ids[0]})
            conn.execute(text("DELETE FROM human_task WHERE instance_id = :id"), {"id": ids[-1]})
        agree(engine, monkeypatch)
        engine.measures.settle()
        agree(engine, monkeypatch)

    def test_writers_and_settling_at_the_same_time(self, clocked, monkeypatch):
        """Eight threads complete tasks while another settles over and over: nothing counted twice
        or lost (PostgreSQL: the fold deletes and sums the same rows in one statement)."""
        engine, clock = clocked
        ids = busy_weeks(engine, clock, count=24)
        waiting = [i for i in ids if engine.runtime.get(i).state == "running"]
        assert len(waiting) >= 4
        done = threading.Event()
        errors: list[BaseException] = []

        def settle_all_along() -> None:
            while not done.is_set():
                try:
                    engine.measures.settle()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

        def work(instance_id: str) -> None:
            try:
                for _ in range(3):
                    task = engine.tasks.query().instance(instance_id).open().first()
                    if task is None:
                        return
                    engine.tasks.complete(task.id, actor="user0")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        settler = threading.Thread(target=settle_all_along)
        settler.start()
        workers = [threading.Thread(target=work, args=(i,)) for i in waiting[:8]]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        done.set()
        settler.join()
        assert errors == []
        agree(engine, monkeypatch)
        engine.measures.settle()
        assert unsettled(engine) == 0
        agree(engine, monkeypatch)


def test_the_scheduler_settles_once_a_minute(clocked, monkeypatch):
    engine, clock = clocked
    busy_weeks(engine, clock, count=6)
    runner = JobRunner(engine, workers=1)
    try:
        assert runner.settle_measures() > 0
        assert runner.settle_measures() is None  # not a minute yet
        monkeypatch.setattr("engine.scheduler.SETTLE_SECONDS", 0.0)
        assert runner.settle_measures() == 0
    finally:
        runner.close()
    assert unsettled(engine) == 0


@pytest.mark.parametrize(
    "first, last", [(date(2026, 10, 27), date(2026, 10, 27)), (date(2026, 11, 1), date(2026, 11, 2))]
)
def test_short_ranges_agree_too(clocked, monkeypatch, first, last):
    engine, clock = clocked
    busy_weeks(engine, clock, count=20)
    agree(engine, monkeypatch, first, last)


def test_the_command_line_settles(db_url, monkeypatch):
    from click.testing import CliRunner

    from web.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SECRET_KEY", "cli-test")
    monkeypatch.setenv("BATON_SCHEDULER", "off")
    engine = Engine.from_url(db_url, EngineConfig(clock=Clock()))
    busy_weeks(engine, engine.context.config.clock, count=4)
    waiting = unsettled(engine)
    assert waiting > 0
    done = CliRunner().invoke(main, ["settle-measures"], catch_exceptions=False)
    assert done.exit_code == 0 and f"folded {waiting} tally row(s)" in done.output
    assert unsettled(engine) == 0
    engine.close()
