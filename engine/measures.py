"""Measures of one process: instance counts, cycle time, throughput, SLA breaches, time per step.

Every figure comes from rows that history retention keeps (engine/retention.py): the
``process_instance`` summary columns (state, times, the starter's department) and the ``human_task``
rows, so archiving an instance's engine state changes no figure. Two ways, the same numbers (the
tests check it): ``_Tallies`` sums the hourly counts database triggers keep of those rows
(``measure_tally``, migration 0014; ``settle`` folds them), ``_Rows`` aggregates the rows
themselves (one version, zones with half-hour offsets, and always the cycle-time percentiles).

Time is read in whole milliseconds by ``epoch_ms`` (compiled per database), so SQLite and
PostgreSQL give the same numbers. Days and weeks are the company's (``time_zone``): where the
zone keeps one UTC offset over the range (China always does) the database groups by local day;
across a daylight-saving change it groups by hour (quarter hour in zones with such offsets) and
the hours are summed into local days here: exact either way. Percentiles interpolate linearly between
the two nearest values, as PostgreSQL's ``percentile_cont`` does: PostgreSQL computes them in one
aggregate, SQLite (no such aggregate) reads the two rows around each rank with ``LIMIT 2 OFFSET``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from math import floor
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import BigInteger, Select, and_, case, func, or_, select, text, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import FunctionElement

from engine import results
from engine.context import EngineContext
from engine.db import Database
from engine.errors import NotFoundError, ValidationError
from engine.execution import COMPLETED, FINISHED
from engine.models import EVERYONE, HumanTask, MeasureTally, ProcessDefinition, ProcessInstance

BUCKETS = ("day", "week")
MAX_DAYS = 731  # the longest range one request may ask for (two years of days)
WEEKLY_AFTER_DAYS = 92  # without an explicit bucket, longer ranges are shown by week
PERCENTILES = (0.5, 0.9)


class epoch_ms(FunctionElement):  # noqa: N801 - used like an SQL function
    """Milliseconds since 1970 of a UTC timestamp column, as an integer, on either database."""

    type = BigInteger()
    name = "epoch_ms"
    inherit_cache = True


@compiles(epoch_ms)
def _epoch_ms_sqlite(element: epoch_ms, compiler: Any, **kw: Any) -> str:
    # julianday() is a float of days: round to whole milliseconds (its error is ~0.03 ms)
    column = compiler.process(element.clauses, **kw)
    return f"CAST(round((julianday({column}) - 2440587.5) * 86400000.0) AS INTEGER)"


@compiles(epoch_ms, "postgresql")
def _epoch_ms_postgresql(element: epoch_ms, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"CAST(date_part('epoch', {column}) * 1000 AS BIGINT)"  # float8: cheaper than numeric


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``. Raises ValidationError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"unknown time zone {name!r}") from exc


def local_range(first: date, last: date, time_zone: str) -> tuple[datetime, datetime]:
    """The UTC instants from the start of day ``first`` to the end of day ``last`` (inclusive) in a zone."""
    tz = zone(time_zone)
    start = datetime.combine(first, datetime.min.time(), tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tz).astimezone(UTC)
    return start, end


class MeasureService:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def figures(
        self,
        key: str,
        *,
        start: datetime,
        end: datetime,
        version: int | None = None,
        departments: Iterable[int] | None = None,
        time_zone: str = "UTC",
        bucket: str | None = None,
    ) -> results.ProcessMeasures:
        """Every figure of process ``key`` between ``start`` and ``end`` (exclusive).

        ``departments`` limits the figures to instances started by people of those departments (the
        starter's department when the instance started, as the managers' instance list counts them;
        None: everybody's). Instances count where they started (states, started) or ended
        (finished, cycle time) in the range; tasks where they were created. Raises NotFoundError
        (no such process or version), ValidationError (a range that is empty, longer than two
        years or not timezone-aware; an unknown bucket or time zone).
        """
        tz = zone(time_zone)
        bucket = bucket or ("week" if end - start > timedelta(days=WEEKLY_AFTER_DAYS) else "day")
        _check_range(start, end, bucket)
        now = self._ctx.now()
        with _snapshot(self._ctx.db) as session:
            definition_id = _definition_id(session, key, version)
            scope = _Scope(key, definition_id, None if departments is None else tuple(departments))
            slots = _Slots.of(tz, start, end)
            counts = _Tallies if _Tallies.serve(scope, slots, start, end) else _Rows
            started_slots, states = counts.started(session, scope, start, end, slots)
            finished_slots = counts.finished(session, scope, start, end, slots)
            cycle = _cycle_time(session, scope, start, end)
            steps = _steps(session, scope, start, end, now, counts.steps(session, scope, start, end))
        throughput = _throughput(started_slots, finished_slots, slots, tz, start, end, bucket)
        with_due = sum(s.with_due for s in steps)
        breached = sum(s.breached for s in steps)
        return results.ProcessMeasures(
            key=key,
            version=version,
            start=start,
            end=end,
            bucket=bucket,
            time_zone=time_zone,
            states=states,
            started=sum(states.values()),
            finished=sum(p.finished for p in throughput),
            cycle_time=cycle,
            throughput=throughput,
            sla=results.SlaFigures(with_due, breached, round(breached / with_due, 4) if with_due else None),
            steps=steps,
        )

    def settle(self) -> int:
        """Fold the tally rows the triggers appended since the last time into one settled row per
        key (and drop keys that sum to nothing); returns how many rows were folded. Figures are the
        same before and after: it only keeps their reads short. The scheduler calls it every minute;
        any process may call it at any time (on PostgreSQL one at a time runs, others return 0)."""
        with self._ctx.db.unit_of_work() as uow:
            conn = uow.session.connection()
            if self._ctx.db.dialect == "postgresql":
                if not conn.scalar(text("SELECT pg_try_advisory_xact_lock(:lock)"), {"lock": _SETTLE_LOCK}):
                    return 0
                folded, zero = conn.execute(text(_FOLD_POSTGRESQL)).one()
                if zero:
                    conn.execute(text("DELETE FROM measure_tally WHERE id = ANY(:ids)"), {"ids": zero})
            else:  # the writer's lock (BEGIN IMMEDIATE) is held: nobody appends meanwhile
                folded = conn.scalar(text("SELECT count(*) FROM measure_tally WHERE NOT settled"))
                if folded:
                    for department in _DEPARTMENTS:
                        conn.execute(text(_merge(department, "measure_tally WHERE NOT settled")))
                    conn.execute(text("DELETE FROM measure_tally WHERE NOT settled"))
                    conn.execute(text(f"DELETE FROM measure_tally WHERE settled AND {_NOTHING}"))
            uow.commit()
        return int(folded or 0)


_SETTLE_LOCK = 0x62617431  # PostgreSQL advisory lock: one settle at a time
_KEY = "definition_key, kind, department_id, hour, element_id, state"
_TALLIES = ("n", "timed_n", "total_ms", "due_n", "late_n")
_NOTHING = " AND ".join(f"{column} = 0" for column in _TALLIES)
_DEPARTMENTS = ("department_id", str(EVERYONE))  # each department's rows, and everyone's


def _merge(department: str, source: str) -> str:
    """Add the sums of ``source``'s rows to the settled rows of their keys (per department, or
    everyone's: ``department`` is the column or the constant)."""
    key = _KEY.replace("department_id", department)
    group = _KEY.replace("department_id, ", "") if department != "department_id" else _KEY
    return (
        f"INSERT INTO measure_tally ({_KEY}, {', '.join(_TALLIES)}, settled) "
        f"SELECT {key}, {', '.join(f'sum({c})' for c in _TALLIES)}, true FROM {source} GROUP BY {group} "
        f"ON CONFLICT ({_KEY}) WHERE settled DO UPDATE SET "
        + ", ".join(f"{c} = measure_tally.{c} + excluded.{c}" for c in _TALLIES)
        + f" RETURNING id, {', '.join(_TALLIES)}"
    )


# one statement: exactly the rows it deletes are summed, whatever commits meanwhile
_FOLD_POSTGRESQL = (
    f"WITH gone AS (DELETE FROM measure_tally WHERE NOT settled RETURNING {_KEY}, {', '.join(_TALLIES)}), "
    + ", ".join(f"merged{n} AS ({_merge(d, 'gone')})" for n, d in enumerate(_DEPARTMENTS))
    + " SELECT (SELECT count(*) FROM gone), (SELECT array_agg(id) FROM ("
    + " UNION ALL ".join(f"SELECT * FROM merged{n}" for n in range(len(_DEPARTMENTS)))
    + f") AS merged WHERE {_NOTHING})"
)


@contextmanager
def _snapshot(db: Database) -> Iterator[Session]:
    """One read-only transaction for all the figures, so they describe the same moment (the engine's
    PostgreSQL reads are otherwise autocommit, statement by statement), with settings of its own."""
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            # plan every query for its own range and people: the generic plan PostgreSQL caches for
            # a prepared statement (psycopg prepares after five runs) took ten times longer; and these
            # sub-second aggregates never earn back a JIT compilation
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            conn.exec_driver_sql("SET LOCAL jit = off")
        with Session(bind=conn) as session:
            yield session


def _check_range(start: datetime, end: datetime, bucket: str) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError("the range needs timezone-aware times")
    if end <= start:
        raise ValidationError("the range ends before it starts")
    if end - start > timedelta(days=MAX_DAYS):
        raise ValidationError(f"the range may be {MAX_DAYS} days long at most")
    if bucket not in BUCKETS:
        raise ValidationError(f"bucket must be one of: {', '.join(BUCKETS)}")


def _definition_id(session: Session, key: str, version: int | None) -> int | None:
    """The definition of ``version`` (None: every version; the key must exist either way)."""
    stmt = select(ProcessDefinition.id).where(ProcessDefinition.key == key)
    if version is not None:
        stmt = stmt.where(ProcessDefinition.version == version)
    found = session.scalars(stmt.limit(1)).first()
    if found is None:
        what = f"version {version} of process {key!r}" if version is not None else f"process {key!r}"
        raise NotFoundError(f"no {what}")
    return found if version is not None else None


class _Scope:
    """Which instances count: one process (one version of it), started in some departments or any."""

    def __init__(self, key: str, definition_id: int | None, departments: tuple[int, ...] | None) -> None:
        self.key, self.definition_id, self.departments = key, definition_id, departments

    def instances(self) -> list[Any]:
        criteria = [ProcessInstance.definition_key == self.key]
        if self.definition_id is not None:
            criteria.append(ProcessInstance.definition_id == self.definition_id)
        if self.departments is not None:
            criteria.append(ProcessInstance.starter_department_id.in_(self.departments))
        return criteria

    def tasks(self) -> list[Any]:
        criteria = [HumanTask.definition_key == self.key]
        if self.definition_id is not None or self.departments is not None:
            criteria.append(HumanTask.instance_id.in_(select(ProcessInstance.id).where(*self.instances())))
        return criteria


class _Slots:
    """How the database groups times: slot ``(epoch_ms + shift) // size``. Local days when the zone
    keeps one offset over the range (fewest groups, the cheapest aggregate); else hours, or quarter
    hours where an offset is not whole hours (India, Nepal), which local days are sums of."""

    def __init__(self, shift: int, size: int) -> None:
        self.shift, self.size = shift, size

    @classmethod
    def of(cls, tz: ZoneInfo, start: datetime, end: datetime) -> _Slots:
        days = (end - start).days + 2
        offsets = {(start + timedelta(days=n)).astimezone(tz).utcoffset() for n in range(days)}
        offsets.add(end.astimezone(tz).utcoffset())
        seconds = [o.total_seconds() if o is not None else 0 for o in offsets]
        if len(seconds) == 1:
            return cls(int(seconds[0] * 1000), 86_400_000)
        return cls(0, 3_600_000 if all(s % 3600 == 0 for s in seconds) else 900_000)

    def of_column(self, column: Any) -> Any:
        return ((epoch_ms(column) + self.shift) // self.size).label("slot")

    def local_day(self, slot: int, tz: ZoneInfo) -> date:
        """The local day a slot lies in (it starts at this UTC instant)."""
        return datetime.fromtimestamp((slot * self.size - self.shift) / 1000, UTC).astimezone(tz).date()


def _cycle_time(session: Session, scope: _Scope, start: datetime, end: datetime) -> results.CycleTime:
    """Start to end of the instances that completed in the range: count, average, p50 and p90."""
    duration = (epoch_ms(ProcessInstance.ended_at) - epoch_ms(ProcessInstance.started_at)).label("ms")
    durations = select(duration).where(
        *scope.instances(),
        ProcessInstance.state == COMPLETED,
        ProcessInstance.ended_at >= start,
        ProcessInstance.ended_at < end,
    )
    count, average, cuts = summary(session, durations, PERCENTILES)
    return results.CycleTime(count, _seconds(average), *(_seconds(c) for c in cuts))


def summary(
    session: Session, values: Select, fractions: Iterable[float]
) -> tuple[int, Any, list[float | None]]:
    """Count, average and linearly interpolated percentiles of a one-column query's values."""
    fractions = list(fractions)
    column = values.subquery().c[0]
    totals = [func.count(), func.avg(column)]
    if session.get_bind().dialect.name == "postgresql":  # one pass: the percentiles are aggregates
        found = session.execute(
            select(*totals, *(func.percentile_cont(f).within_group(column) for f in fractions))
        ).one()
        return found[0], found[1], [None if v is None else float(v) for v in found[2:]]
    count, average = session.execute(select(*totals)).one()
    cuts: list[float | None] = []
    for fraction in fractions if count else ():
        rank = fraction * (count - 1)
        low = floor(rank)
        pair = session.scalars(select(column).order_by(column).limit(2).offset(low)).all()
        high = pair[1] if len(pair) > 1 else pair[0]
        cuts.append(float(pair[0] + (high - pair[0]) * (rank - low)))
    return count, average, cuts or [None] * len(fractions)


StepRow = tuple[str, int, int, int, int, Any, int, int]
"""element, entered, completed, open, cancelled, average time to completion (ms), with due, late"""


class _Rows:
    """The figures counted from the instance and task rows: any range, zone and version, exact.
    Each is a range scan of one measures index (models.py), so its cost grows with the range."""

    @staticmethod
    def started(
        session: Session, scope: _Scope, start: datetime, end: datetime, slots: _Slots
    ) -> tuple[dict[int, int], dict[str, int]]:
        """Instances started in the range: how many per time slot, and by their state now."""
        slot_of = slots.of_column(ProcessInstance.started_at)
        rows = session.execute(
            select(slot_of, ProcessInstance.state, func.count())
            .where(*scope.instances(), ProcessInstance.started_at >= start, ProcessInstance.started_at < end)
            .group_by(slot_of, ProcessInstance.state)
        ).all()
        return _per_slot_and_state(rows)

    @staticmethod
    def finished(
        session: Session, scope: _Scope, start: datetime, end: datetime, slots: _Slots
    ) -> dict[int, int]:
        """Instances that ended (completed or cancelled) in the range, per time slot."""
        slot_of = slots.of_column(ProcessInstance.ended_at)
        rows = session.execute(
            select(slot_of, func.count())
            .where(
                *scope.instances(),
                ProcessInstance.state.in_(FINISHED),
                ProcessInstance.ended_at >= start,
                ProcessInstance.ended_at < end,
            )
            .group_by(slot_of)
        ).all()
        return dict(rows)

    @staticmethod
    def steps(session: Session, scope: _Scope, start: datetime, end: datetime) -> list[StepRow]:
        """Per task element, the tasks created in the range, in the order the steps first came."""
        done = HumanTask.state == COMPLETED
        dwell = epoch_ms(HumanTask.completed_at) - epoch_ms(HumanTask.created_at)
        return [
            tuple(row)
            for row in session.execute(
                select(
                    HumanTask.element_id,
                    func.count(),
                    func.count().filter(done),
                    func.count().filter(HumanTask.state == "ready"),
                    func.count().filter(HumanTask.state == "cancelled"),
                    func.avg(case((done, dwell))),
                    func.count(HumanTask.due_at),
                    func.count().filter(HumanTask.completed_at > HumanTask.due_at),  # closed late
                )
                .where(*scope.tasks(), HumanTask.created_at >= start, HumanTask.created_at < end)
                .group_by(HumanTask.element_id)
                .order_by(func.min(HumanTask.created_at), HumanTask.element_id)
            )
        ]


_T = MeasureTally
HOUR_MS = 3_600_000


class _Tallies:
    """The same figures summed from ``measure_tally`` (hourly counts kept by triggers): one row per
    hour that had any, per state (and step), instead of every instance and task of the range; for
    an administrator the settled sums of all departments. Serves any range of whole UTC hours in a
    zone of whole-hour offsets, for every version together; else ``_Rows`` counts (one version,
    India's half hours, a range starting mid-hour)."""

    @staticmethod
    def serve(scope: _Scope, slots: _Slots, start: datetime, end: datetime) -> bool:
        whole = all(_utc_ms(t) % HOUR_MS == 0 for t in (start, end))
        return (
            scope.definition_id is None and slots.size % HOUR_MS == 0 and slots.shift % HOUR_MS == 0 and whole
        )

    @staticmethod
    def _where(scope: _Scope, kind: str, start: datetime, end: datetime) -> list[Any]:
        criteria = [
            _T.definition_key == scope.key,
            _T.kind == kind,
            _T.hour >= _utc_ms(start) // HOUR_MS,
            _T.hour < _utc_ms(end) // HOUR_MS,
        ]
        if scope.departments is None:  # everyone: all departments' settled sums, and what is not settled
            settled, unsettled = _T.department_id == EVERYONE, true()
        else:
            settled = unsettled = _T.department_id.in_(scope.departments)
        # each side in the words of its partial index (models.py), so each reads its own index
        criteria.append(or_(and_(_T.settled, settled), and_(~_T.settled, unsettled)))
        return criteria

    @staticmethod
    def _slot(slots: _Slots) -> Any:
        return ((_T.hour + slots.shift // HOUR_MS) // (slots.size // HOUR_MS)).label("slot")

    @classmethod
    def started(
        cls, session: Session, scope: _Scope, start: datetime, end: datetime, slots: _Slots
    ) -> tuple[dict[int, int], dict[str, int]]:
        slot = cls._slot(slots)
        rows = session.execute(
            select(slot, _T.state, func.sum(_T.n))
            .where(*cls._where(scope, "started", start, end))
            .group_by(slot, _T.state)
            .having(func.sum(_T.n) != 0)
        ).all()
        return _per_slot_and_state(rows)

    @classmethod
    def finished(
        cls, session: Session, scope: _Scope, start: datetime, end: datetime, slots: _Slots
    ) -> dict[int, int]:
        slot = cls._slot(slots)
        rows = session.execute(
            select(slot, func.sum(_T.n))
            .where(*cls._where(scope, "ended", start, end), _T.state.in_(FINISHED))
            .group_by(slot)
            .having(func.sum(_T.n) != 0)
        ).all()
        return {slot_number: int(count) for slot_number, count in rows}

    @classmethod
    def steps(cls, session: Session, scope: _Scope, start: datetime, end: datetime) -> list[StepRow]:
        def total(column: Any, state: str | None = None) -> Any:
            return func.coalesce(func.sum(column).filter(_T.state == state) if state else func.sum(column), 0)

        rows = session.execute(
            select(
                _T.element_id,
                total(_T.n),
                total(_T.n, COMPLETED),
                total(_T.n, "ready"),
                total(_T.n, "cancelled"),
                total(_T.total_ms, COMPLETED),
                total(_T.timed_n, COMPLETED),
                total(_T.due_n),
                total(_T.late_n),
            )
            .where(*cls._where(scope, "task", start, end))
            .group_by(_T.element_id)
            .having(func.sum(_T.n) != 0)
            .order_by(func.min(_T.hour).filter(_T.n > 0), _T.element_id)
        ).all()
        return [
            (
                element,
                int(n),
                int(done),
                int(ready),
                int(cancelled),
                ms / timed_n if timed_n else None,
                int(due),
                int(late),
            )
            for element, n, done, ready, cancelled, ms, timed_n, due, late in rows
        ]


def _per_slot_and_state(rows: Iterable[Any]) -> tuple[dict[int, int], dict[str, int]]:
    per_slot: dict[int, int] = defaultdict(int)
    states: dict[str, int] = defaultdict(int)
    for slot_number, state, count in rows:
        per_slot[slot_number] += int(count)
        states[state] += int(count)
    return per_slot, dict(sorted(states.items()))


def _utc_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _steps(
    session: Session, scope: _Scope, start: datetime, end: datetime, now: datetime, counted: list[StepRow]
) -> tuple[results.StepMeasure, ...]:
    """Per task element: tasks created in the range, how they stand, time to completion, breaches."""
    # still open past the due time, unless the instance's SLA clock stands still: a short index range
    # of open tasks (ix_human_task_state_due), so the instance is looked at for those only
    overdue = dict(
        session.execute(
            select(HumanTask.element_id, func.count())
            .join(ProcessInstance, ProcessInstance.id == HumanTask.instance_id)
            .where(
                HumanTask.state == "ready",
                HumanTask.due_at <= now,
                ProcessInstance.sla_paused_at.is_(None),
                *scope.tasks(),
                HumanTask.created_at >= start,
                HumanTask.created_at < end,
            )
            .group_by(HumanTask.element_id)
        ).all()
    )
    return tuple(
        results.StepMeasure(
            element_id=element_id,
            name=_step_name(session, scope.key, element_id),
            entered=entered,
            completed=completed,
            open=still_open,
            cancelled=cancelled,
            average_dwell_seconds=_seconds(average),
            with_due=with_due,
            breached=late + overdue.get(element_id, 0),
        )
        for element_id, entered, completed, still_open, cancelled, average, with_due, late in counted
    )


def _step_name(session: Session, key: str, element_id: str) -> str | None:
    """The step's name on its latest task (one row from the end of the measures index)."""
    return session.scalars(
        select(HumanTask.name)
        .where(HumanTask.definition_key == key, HumanTask.element_id == element_id)
        .order_by(HumanTask.created_at.desc())
        .limit(1)
    ).first()


def _seconds(milliseconds: Any) -> float | None:
    return None if milliseconds is None else round(float(milliseconds) / 1000, 3)


def _throughput(
    started: dict[int, int],
    finished: dict[int, int],
    slots: _Slots,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
    bucket: str,
) -> tuple[results.ThroughputPoint, ...]:
    """Every day (or week) of the range, in the zone, with the instances started and finished in it."""

    def period(day: date) -> date:
        return day - timedelta(days=day.weekday()) if bucket == "week" else day

    first = period(start.astimezone(tz).date())
    last = period((end - timedelta(microseconds=1)).astimezone(tz).date())
    step = timedelta(days=7 if bucket == "week" else 1)
    counts: dict[date, list[int]] = {}
    day = first
    while day <= last:
        counts[day] = [0, 0]
        day += step
    for which, per_slot in enumerate((started, finished)):
        for slot_number, count in per_slot.items():
            counts[period(slots.local_day(slot_number, tz))][which] += count
    return tuple(results.ThroughputPoint(day, s, f) for day, (s, f) in counts.items())
