"""Benchmark: due→fired latency of BPMN timers with 10,000 pending, under a steady stream of firings.

For each database (SQLite file, PostgreSQL):
  1. creates ``--idle`` instances waiting on a user task with no timer at all, then ``--timers``
     instances waiting on a user task with an interrupting timer boundary event (``timeDate`` from a
     variable), due evenly over ``--window`` seconds: a steady rate of ``timers / window`` per second;
  2. runs one scheduler as ``baton scheduler`` does (``JobRunner`` polled by APScheduler every
     ``--interval`` seconds, in this process but with an engine of its own: an empty live cache, as a
     separate process would have), until every timer has fired;
  3. reads the lateness of every firing from the audit log (``timer_fired.at`` minus the timer's due
     time) and prints p50/p95/p99/max, with what shows that idle instances cost nothing: how many
     workflows the scheduler deserialized and whether any idle one was among them, the time of a
     poll that finds nothing due, and the query plan of the lease query.

    python -m bench.timers [--timers 10000] [--idle 10000] [--window 100] [--postgres URL]
                           [--no-sqlite] [--no-postgres] [--interval 0.25] [--workers N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from engine import execution
from engine.context import EngineConfig
from engine.facade import Engine
from engine.management import due_jobs_query
from engine.migrate import upgrade
from engine.models import AuditEntry, Job
from engine.runtime import latest_definition, start_instance
from engine.scheduler import DEFAULT_INTERVAL, JobRunner

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_DB = "baton_bench_timers"
NS = (
    '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d_{pid}" '
    'targetNamespace="http://baton.bench"><bpmn:process id="{pid}" isExecutable="true">{body}'
    "</bpmn:process></bpmn:definitions>"
)
TIMED = NS.format(
    pid="timed",
    body=(
        '<bpmn:startEvent id="start" /><bpmn:userTask id="work" name="work" />'
        '<bpmn:boundaryEvent id="sla" attachedToRef="work" cancelActivity="true"><bpmn:timerEventDefinition>'
        "<bpmn:timeDate>due_at</bpmn:timeDate></bpmn:timerEventDefinition></bpmn:boundaryEvent>"
        '<bpmn:userTask id="escalated" name="escalated" />'
        '<bpmn:endEvent id="end" /><bpmn:endEvent id="end2" />'
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />'
        '<bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />'
        '<bpmn:sequenceFlow id="f3" sourceRef="sla" targetRef="escalated" />'
        '<bpmn:sequenceFlow id="f4" sourceRef="escalated" targetRef="end2" />'
    ),
)
IDLE = NS.format(
    pid="idle",
    body=(
        '<bpmn:startEvent id="start" /><bpmn:userTask id="wait" name="wait" /><bpmn:endEvent id="end" />'
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait" />'
        '<bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="end" />'
    ),
)
CHUNK = 200  # instances created per transaction


def create(engine: Engine, key: str, count: int, due: Callable[[int], datetime] | None = None):
    """Start ``count`` instances, ``CHUNK`` per transaction, each due at ``due(i)`` (a ``due_at``
    variable) but never sooner than a second after its creation. Returns ids and seconds taken."""
    began, ids = time.perf_counter(), []
    for offset in range(0, count, CHUNK):
        with engine.db.unit_of_work() as uow:
            definition = latest_definition(uow.session, key)
            for i in range(offset, min(offset + CHUNK, count)):
                data = {}
                if due is not None:
                    data["due_at"] = max(due(i), datetime.now(UTC) + timedelta(seconds=1)).isoformat()
                ids.append(
                    start_instance(engine.context, uow, definition, variables=data, started_by="bench").id
                )
            uow.commit()
    return ids, time.perf_counter() - began


class Loads:
    """Which instances the scheduler loaded, and how many workflows it deserialized."""

    def __init__(self, engine: Engine) -> None:
        self.instances: set[str] = set()
        self.deserialized = 0
        self._lock = threading.Lock()
        serializer, loads = engine.context.serializer, engine.context.serializer.loads
        original = execution.load_instance
        ctx = engine.context

        def counted_loads(*args, **kwargs):
            with self._lock:
                self.deserialized += 1
            return loads(*args, **kwargs)

        def recorded_load(c, session, instance_id, **kwargs):
            row = original(c, session, instance_id, **kwargs)
            if c is ctx:
                with self._lock:
                    self.instances.add(row.id)
            return row

        serializer.loads = counted_loads
        execution.load_instance = recorded_load
        self.undo: Callable[[], None] = lambda: setattr(execution, "load_instance", original)


def explain(engine: Engine) -> str:
    """The plan of the query that finds due jobs, with this database's statistics."""
    stmt = due_jobs_query()
    params = {"now": datetime.now(UTC), "limit": 50}
    with engine.db.unit_of_work(write=False) as uow:
        conn = uow.session.connection()
        if engine.db.dialect == "postgresql":
            conn.execute(text("ANALYZE job"))
            compiled = stmt.compile(dialect=conn.dialect)
            sql, values = str(compiled), {**compiled.params, **params}
            rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}", values)
            return "\n".join(r[0] for r in rows)
        compiled = stmt.compile(dialect=conn.dialect)
        values = {**compiled.params, **params}
        ordered = tuple(_sqlite_param(values[name]) for name in compiled.positiontup)
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", ordered)
        return "\n".join(r[-1] for r in rows)


def _sqlite_param(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores it
    return value


def empty_poll_ms(runner: JobRunner, until: datetime, polls: int = 50) -> float:
    """Median time of a poll that finds nothing due (idle instances and future timers only)."""
    times = []
    while len(times) < polls and datetime.now(UTC) < until - timedelta(seconds=1):
        t0 = time.perf_counter()
        if runner.run_once():
            break  # something came due after all: not an empty poll
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 if times else float("nan")


def run(url: str, args: argparse.Namespace, label: str) -> dict:
    engine = Engine.from_url(url, EngineConfig(live_cache_size=0))
    upgrade(engine.db.engine)
    engine.repository.deploy({"timed.bpmn": TIMED.encode(), "idle.bpmn": IDLE.encode()}, deployed_by="bench")
    idle_ids, idle_seconds = create(engine, "idle", args.idle)
    per_instance = idle_seconds / args.idle if args.idle else 0.005
    margin = 5 + per_instance * args.timers * 3  # a timer instance costs ~2.5 idle ones to create
    first_due = datetime.now(UTC) + timedelta(seconds=margin)
    step = args.window / args.timers
    timed_ids, timed_seconds = create(
        engine, "timed", args.timers, lambda i: first_due + i * timedelta(seconds=step)
    )
    ahead = (first_due - datetime.now(UTC)).total_seconds()
    print(
        f"{label}: created {args.idle} idle instances in {idle_seconds:.1f} s and {args.timers} with a timer "
        f"in {timed_seconds:.1f} s; first timer due in {ahead:.1f} s"
        + (" (creation overran: the first timers are due sooner than planned)" if ahead < 0 else ""),
        flush=True,
    )

    scheduler_engine = Engine.from_url(url, EngineConfig())
    loads = Loads(scheduler_engine)
    runner = JobRunner(scheduler_engine, owner=f"bench-{label}", workers=args.workers)
    plan = explain(engine)
    idle_poll = empty_poll_ms(runner, first_due)
    with engine.db.unit_of_work(write=False) as uow:
        jobs = uow.session.scalar(select(func.count(Job.id)))
    scheduler = runner.start_background(args.interval)
    try:
        deadline = time.monotonic() + margin + args.window + 120
        while True:
            with engine.db.unit_of_work(write=False) as uow:
                left = uow.session.scalar(select(func.count(Job.id)))
            if not left:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{label}: {left} timers still pending long after their due time")
            time.sleep(1)
    finally:
        scheduler.shutdown(wait=True)
        runner.close()
        loads.undo()

    with engine.db.unit_of_work(write=False) as uow:
        fired = uow.session.execute(
            select(AuditEntry.instance_id, AuditEntry.at, AuditEntry.details).where(
                AuditEntry.action == "timer_fired"
            )
        ).all()
    engine.close()
    scheduler_engine.close()
    late = sorted((row.at - datetime.fromisoformat(row.details["due"])).total_seconds() for row in fired)
    stamps = sorted(row.at for row in fired)
    idle_loaded = len(loads.instances & set(idle_ids))
    assert len(fired) == args.timers == len({row.instance_id for row in fired}), (
        "a timer fired twice or never"
    )
    assert idle_loaded == 0 and loads.instances <= set(timed_ids)
    return {
        "db": label,
        "fired": len(fired),
        "jobs": jobs,
        "rate": args.timers / args.window,
        "span": (stamps[-1] - stamps[0]).total_seconds(),
        "p50": _pct(late, 0.50),
        "p95": _pct(late, 0.95),
        "p99": _pct(late, 0.99),
        "max": late[-1],
        "min": late[0],
        "loaded": len(loads.instances),
        "deserialized": loads.deserialized,
        "idle_loaded": idle_loaded,
        "idle_poll_ms": idle_poll,
        "workers": runner.workers,
        "plan": plan,
    }


def _pct(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _fresh_postgres(admin_url: str) -> str | None:
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {PG_DB}"))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on without PostgreSQL
        print(f"postgres: skipped ({exc.__class__.__name__}: {exc})")
        return None
    return make_url(admin_url).set(database=PG_DB).render_as_string(hide_password=False)


def _drop_postgres(admin_url: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
    admin.dispose()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=10_000, help="instances waiting on a timer")
    parser.add_argument("--idle", type=int, default=10_000, help="instances waiting without any timer")
    parser.add_argument("--window", type=float, default=100.0, help="seconds over which the timers come due")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL, help="poll interval (`baton scheduler` default)"
    )
    parser.add_argument("--workers", type=int, default=None, help="firing threads (default: per database)")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="admin URL; a scratch database is created")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)

    results = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run(f"sqlite:///{tmp}/bench.db", args, "sqlite"))
    if not args.no_postgres and (pg := _fresh_postgres(args.postgres)):
        try:
            results.append(run(pg, args, "postgres"))
        finally:
            _drop_postgres(args.postgres)
    _print(results, args)
    return results


def _print(results: list[dict], args: argparse.Namespace) -> None:
    machine = f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}"
    print(
        f"\n{args.timers} timers due over {args.window:.0f} s ({args.timers / args.window:.0f}/s), "
        f"{args.idle} idle instances, one scheduler polling every {args.interval} s ({machine})\n"
    )
    print(
        "| db | firing threads | fired | p50 (s) | p95 (s) | p99 (s) | max (s) | workflows loaded "
        "| idle loaded | empty poll (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['db']} | {r['workers']} | {r['fired']} | {r['p50']:.3f} | {r['p95']:.3f} | {r['p99']:.3f} "
            f"| {r['max']:.3f} | {r['deserialized']} | {r['idle_loaded']} | {r['idle_poll_ms']:.2f} |"
        )
    for r in results:
        print(f"\nlease query plan, {r['db']} ({r['jobs']} pending jobs, {args.idle} idle instances):")
        print("\n".join(f"    {line}" for line in r["plan"].splitlines()))


if __name__ == "__main__":
    main()
