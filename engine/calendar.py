"""Business calendar for SLA due dates: working hours, public holidays and 调休 make-up working days.

Why: an SLA of "8 working hours" must skip nights, the lunch break, weekends and public holidays, and
must count the Saturdays/Sundays that the State Council turns into working days (调休) around long
holidays. ``BusinessCalendar`` does that arithmetic in pure Python (no database), one day/period at a
time, never minute by minute.

Holiday data lives in JSON files, one per year, in the format of ``engine/data/cn-2026.json``::

    {"source": "...", "country": "CN", "year": 2026,
     "holidays": [{"name": "国庆节", "from": "2026-10-01", "to": "2026-10-07"}, ...],
     "make_up_workdays": [{"date": "2026-10-10", "weekday": "Saturday", "for": "国庆节"}, ...]}

``BusinessCalendar.default()`` loads every ``*.json`` file shipped in ``engine/data/``. The State Council
publishes next year's arrangement only in November or December, so no file exists for it before then:
once it is published, an administrator drops ``cn-<year>.json`` into ``engine/data/`` (or loads a
company's own files with ``BusinessCalendar.from_files(paths)``) and restarts. Years without a file fall
back to plain weekdays/weekends; ``has_data_for(year)`` tells callers so they can warn that a due date
in such a year ignores public holidays.

Every file is validated on load (``ValueError`` with the file and entry named): dates inside the
declared year, ``from`` <= ``to``, a make-up day is a Saturday/Sunday (matching its ``weekday`` field if
given) and not also a holiday, one file per year. One exception to "inside the declared year": dates in
the last week of the previous year are accepted, because real notices put the New Year bridge there
(the 2024 notice: 元旦 2023-12-30 to 2024-01-01; the 2019 notice: make-up workday 2018-12-29).

All datetimes must be timezone-aware (a naive one raises ``ValueError``: guessing the server's zone is
how due dates end up eight hours off). Working hours are interpreted in the calendar's zone (default
Asia/Shanghai) and results come back in the zone of the input. ``script_functions(calendar)`` returns
the vetted helpers exposed to BPMN expressions, which take and return ISO-8601 strings, e.g. a timer
``timeDate`` of ``add_working_hours(created_at, 8)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DATA_DIR",
    "STANDARD_DAY",
    "BusinessCalendar",
    "WorkingHours",
    "YearData",
    "load_year_data",
    "script_functions",
]

DATA_DIR = Path(__file__).resolve().parent / "data"

Period = tuple[time, time]
DayPeriods = tuple[Period, ...]

STANDARD_DAY: DayPeriods = ((time(9), time(12)), (time(13), time(18)))
"""09:00-12:00 and 13:00-18:00: eight working hours with a one-hour lunch break."""

_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ONE_DAY = timedelta(days=1)

# Bounds for the script helpers: they run inside the script sandbox's deadline, which cannot interrupt
# this module's loops, so absurd arguments are refused instead of iterating for seconds.
MAX_SCRIPT_HOURS = 100_000  # ~48 years of 8-hour days
MAX_SCRIPT_DAYS = 20_000
MAX_SCRIPT_SPAN = timedelta(days=366 * 60)


# ---------------------------------------------------------------------------------------------------------
# Working hours


def _as_time(value: Any, where: str) -> time:
    if isinstance(value, str):
        try:
            value = time.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not a time like '09:00'") from None
    if not isinstance(value, time):
        raise ValueError(f"{where}: expected a time or 'HH:MM' string, got {value!r}")
    if value.tzinfo is not None:
        raise ValueError(f"{where}: times must be naive, the zone is WorkingHours.timezone")
    return value


def _as_day(periods: Any, where: str) -> DayPeriods:
    if isinstance(periods, str | bytes) or not isinstance(periods, Iterable):
        raise ValueError(f"{where}: expected a list of (start, end) periods, got {periods!r}")
    result: list[Period] = []
    for i, period in enumerate(periods):
        if isinstance(period, str | bytes) or not isinstance(period, Sequence) or len(period) != 2:
            raise ValueError(f"{where}[{i}]: expected a (start, end) pair, got {period!r}")
        start, end = _as_time(period[0], f"{where}[{i}]"), _as_time(period[1], f"{where}[{i}]")
        if not start < end:
            raise ValueError(
                f"{where}[{i}]: start {start} must be before end {end} (periods stay in one day)"
            )
        if result and start < result[-1][1]:
            raise ValueError(f"{where}[{i}]: periods must be in order and must not overlap")
        result.append((start, end))
    return tuple(result)


@dataclass(frozen=True)
class WorkingHours:
    """Working periods per weekday (Monday first) in one time zone; immutable so calendars can share it.

    ``make_up_day`` is the schedule of a 调休 make-up working day; ``None`` means "the first weekday that
    has hours" (Monday under the default), i.e. a normal weekday. Periods accept ``time`` objects or
    ``'HH:MM'`` strings and are normalised to tuples of ``time``. A period cannot cross midnight.
    """

    weekdays: tuple[DayPeriods, ...] = (STANDARD_DAY,) * 5 + ((), ())
    timezone: str = "Asia/Shanghai"
    make_up_day: DayPeriods | None = None

    def __post_init__(self) -> None:
        days = tuple(self.weekdays)
        if len(days) != 7:
            raise ValueError(f"weekdays needs 7 entries (Monday..Sunday), got {len(days)}")
        days = tuple(_as_day(p, f"weekdays[{_WEEKDAY_NAMES[i]}]") for i, p in enumerate(days))
        if not any(days):
            raise ValueError("at least one weekday must have working hours")
        object.__setattr__(self, "weekdays", days)
        if self.make_up_day is not None:
            make_up = _as_day(self.make_up_day, "make_up_day")
            if not make_up:
                raise ValueError("make_up_day must have working hours (None means: like a normal weekday)")
            object.__setattr__(self, "make_up_day", make_up)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances per key

    @property
    def make_up_periods(self) -> DayPeriods:
        if self.make_up_day is not None:
            return self.make_up_day
        return next(day for day in self.weekdays if day)


# ---------------------------------------------------------------------------------------------------------
# Holiday data


@dataclass(frozen=True)
class YearData:
    """One year's holiday arrangement, validated; ``source`` says where the dates come from."""

    year: int
    holidays: frozenset[date]
    make_up_workdays: frozenset[date]
    source: str = ""


def _parse_date(value: Any, where: str) -> date:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an ISO date string like '2026-10-01', got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not an ISO date like '2026-10-01'") from None


def _entries(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    if key not in data:
        raise ValueError(f"missing {key!r} (use an empty list if there are none)")
    entries = data[key]
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ValueError(f"{key!r} must be a list of objects")
    return entries


def load_year_data(data: Mapping[str, Any]) -> YearData:
    """Validate one year's JSON (the shipped file format) and return its dates; ``ValueError`` if wrong."""
    if not isinstance(data, Mapping):
        raise ValueError("holiday data must be a JSON object")
    year = data.get("year")
    if not isinstance(year, int) or isinstance(year, bool) or not 1 < year <= 9999:
        raise ValueError(f"'year' must be an integer year, got {year!r}")
    # the last week of the previous year is allowed for the New Year bridge (see module docstring)
    first, last = date(year - 1, 12, 25), date(year, 12, 31)

    def check_inside(day: date, where: str) -> None:
        if not first <= day <= last:
            raise ValueError(
                f"{where}: {day} is outside the declared year {year} "
                f"(only {year} and {first}..{year - 1}-12-31 for a New Year bridge are allowed)"
            )

    holidays: set[date] = set()
    for i, entry in enumerate(_entries(data, "holidays")):
        where = f"holidays[{i}]" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        start = _parse_date(entry.get("from"), f"{where} 'from'")
        end = _parse_date(entry.get("to"), f"{where} 'to'")
        if start > end:
            raise ValueError(f"{where}: 'from' {start} is after 'to' {end}")
        check_inside(start, where)
        check_inside(end, where)
        holidays.update(start + timedelta(days=n) for n in range((end - start).days + 1))

    make_up: set[date] = set()
    for i, entry in enumerate(_entries(data, "make_up_workdays")):
        where = f"make_up_workdays[{i}]"
        day = _parse_date(entry.get("date"), f"{where} 'date'")
        check_inside(day, where)
        actual = _WEEKDAY_NAMES[day.weekday()]
        stated = entry.get("weekday")
        if stated is not None and (not isinstance(stated, str) or stated.strip().lower() != actual):
            raise ValueError(f"{where}: {day} is a {actual.title()}, but the file says {stated!r}")
        if day.weekday() < 5:
            raise ValueError(
                f"{where}: {day} is a {actual.title()}; a make-up workday is a Saturday or Sunday"
            )
        if day in holidays:
            raise ValueError(f"{where}: {day} is both a holiday and a make-up workday")
        make_up.add(day)

    source = data.get("source", "")
    return YearData(year, frozenset(holidays), frozenset(make_up), source if isinstance(source, str) else "")


# ---------------------------------------------------------------------------------------------------------
# Calendar


def _require_aware(dt: Any, name: str) -> datetime:
    if not isinstance(dt, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware (got naive {dt.isoformat()}); attach a zone or offset"
        )
    return dt


class BusinessCalendar:
    """Working-time arithmetic over ``WorkingHours`` plus holiday and 调休 make-up dates; immutable.

    Periods are half-open: with the default hours 09:00 is working time, 12:00 and 18:00 are not. An
    addition that uses up its time exactly at the end of a period returns that end (Monday 09:00 plus
    8 hours is Monday 18:00, not Tuesday 09:00).
    """

    def __init__(
        self,
        hours: WorkingHours | None = None,
        *,
        holidays: Iterable[date] = (),
        make_up_workdays: Iterable[date] = (),
        data_years: Iterable[int] = (),
    ) -> None:
        self.hours = hours if hours is not None else WorkingHours()
        self._zone = self.hours.zone
        self._holidays = frozenset(holidays)
        self._make_up = frozenset(make_up_workdays)
        clash = sorted(self._holidays & self._make_up)
        if clash:
            raise ValueError(f"dates both holiday and make-up workday: {', '.join(map(str, clash))}")
        self._data_years = frozenset(data_years)

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_year_data(cls, years: Iterable[YearData], hours: WorkingHours | None = None) -> BusinessCalendar:
        """Combine validated years; two entries for the same year are refused (which one would win?)."""
        seen: set[int] = set()
        holidays: set[date] = set()
        make_up: set[date] = set()
        for item in years:
            if item.year in seen:
                raise ValueError(f"holiday data for {item.year} given twice")
            seen.add(item.year)
            holidays |= item.holidays
            make_up |= item.make_up_workdays
        return cls(hours, holidays=holidays, make_up_workdays=make_up, data_years=seen)

    @classmethod
    def from_files(
        cls, paths: Iterable[str | os.PathLike[str]], hours: WorkingHours | None = None
    ) -> BusinessCalendar:
        """Load one JSON file per year; a bad file raises ``ValueError`` naming the file."""
        years: list[YearData] = []
        origin: dict[int, Path] = {}
        for raw in paths:
            path = Path(raw)
            try:
                item = load_year_data(json.loads(path.read_text(encoding="utf-8")))
            except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
                raise ValueError(f"{path}: {exc}") from exc
            if item.year in origin:
                raise ValueError(
                    f"{path}: holiday data for {item.year} already loaded from {origin[item.year]}"
                )
            origin[item.year] = path
            years.append(item)
        return cls.from_year_data(years, hours)

    @classmethod
    def default(cls, hours: WorkingHours | None = None) -> BusinessCalendar:
        """Calendar with every ``engine/data/*.json`` file: drop next year's file there once published."""
        return cls.from_files(sorted(DATA_DIR.glob("*.json")), hours)

    # -- data -----------------------------------------------------------------------------------------

    @property
    def holidays(self) -> frozenset[date]:
        return self._holidays

    @property
    def make_up_workdays(self) -> frozenset[date]:
        return self._make_up

    @property
    def data_years(self) -> frozenset[int]:
        return self._data_years

    def has_data_for(self, year: int) -> bool:
        """False means dates in ``year`` only know weekends: callers should warn about holidays."""
        return year in self._data_years

    def __repr__(self) -> str:
        years = ", ".join(map(str, sorted(self._data_years))) or "none"
        return f"BusinessCalendar(timezone={self.hours.timezone!r}, data_years=[{years}])"

    # -- internals ------------------------------------------------------------------------------------

    def _local_periods(self, day: date) -> DayPeriods:
        if day in self._make_up:
            return self.hours.make_up_periods
        if day in self._holidays:
            return ()
        return self.hours.weekdays[day.weekday()]

    def _utc_periods(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's working periods as UTC instants, so durations are real even across a DST change."""
        zone = self._zone
        result = []
        for start, end in self._local_periods(day):
            s = datetime.combine(day, start, zone).astimezone(UTC)
            e = datetime.combine(day, end, zone).astimezone(UTC)
            if e > s:
                result.append((s, e))
        return result

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self._zone).date()

    # -- queries --------------------------------------------------------------------------------------

    def is_working_day(self, day: date) -> bool:
        """Whether ``day`` has working hours; an aware datetime is first converted to the calendar's zone."""
        if isinstance(day, datetime):
            day = self._local_date(_require_aware(day, "day"))
        elif not isinstance(day, date):
            raise TypeError(f"day must be a date, got {type(day).__name__}")
        return bool(self._local_periods(day))

    def is_working_time(self, dt: datetime) -> bool:
        instant = _require_aware(dt, "dt").astimezone(UTC)
        return any(s <= instant < e for s, e in self._utc_periods(self._local_date(instant)))

    def next_working_time(self, dt: datetime) -> datetime:
        """``dt`` itself inside working hours, else the start of the next working period."""
        _require_aware(dt, "dt")
        instant = dt.astimezone(UTC)
        day = self._local_date(instant)
        while True:
            for s, e in self._utc_periods(day):
                if e > instant:
                    return dt if s <= instant else s.astimezone(dt.tzinfo)
            day += _ONE_DAY

    def add_working_time(self, start: datetime, delta: timedelta) -> datetime:
        """``start`` moved by ``delta`` of working time (negative goes back); zero returns ``start``.

        A start outside working hours begins counting at the next (or, going back, previous) working
        instant. Iterates per working period, so 200 hours is about 35 days of work, not 12,000 minutes.
        """
        _require_aware(start, "start")
        if not isinstance(delta, timedelta):
            raise TypeError(f"delta must be a timedelta, got {type(delta).__name__}")
        if not delta:
            return start
        instant = start.astimezone(UTC)
        day = self._local_date(instant)
        if delta > timedelta(0):
            remaining = delta
            while True:
                for s, e in self._utc_periods(day):
                    if e <= instant:
                        continue
                    s = max(s, instant)
                    if remaining <= e - s:
                        return (s + remaining).astimezone(start.tzinfo)
                    remaining -= e - s
                day += _ONE_DAY
        remaining = -delta
        while True:
            for s, e in reversed(self._utc_periods(day)):
                if s >= instant:
                    continue
                e = min(e, instant)
                if remaining <= e - s:
                    return (e - remaining).astimezone(start.tzinfo)
                remaining -= e - s
            day -= _ONE_DAY

    def add_working_days(self, start: datetime, n: int) -> datetime:
        """The same local time of day on the ``n``-th working day after (or before) ``start``'s date.

        That time is clamped into the day's working hours: before opening -> opening; in a break or after
        closing -> the end of the preceding period (the latest working instant not after that time), so
        Friday 20:00 plus one working day is Monday 18:00. ``n == 0`` returns ``start`` unchanged.
        """
        _require_aware(start, "start")
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an int number of working days, got {n!r}")
        if n == 0:
            return start
        local = start.astimezone(self._zone)
        day, step, remaining = local.date(), (_ONE_DAY if n > 0 else -_ONE_DAY), abs(n)
        while remaining:
            day += step
            if self._local_periods(day):
                remaining -= 1
        periods = self._local_periods(day)
        wanted = local.time()
        clamped = periods[0][0]
        for period_start, period_end in periods:
            if wanted < period_start:
                break
            clamped = min(wanted, period_end)
        return datetime.combine(day, clamped, self._zone).astimezone(start.tzinfo)

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time from ``a`` to ``b``; negative when ``b`` is before ``a`` (SLA overshoot maths)."""
        _require_aware(a, "a")
        _require_aware(b, "b")
        start, end = a.astimezone(UTC), b.astimezone(UTC)
        if start > end:
            return -self.working_time_between(b, a)
        total = timedelta(0)
        day, last = self._local_date(start), self._local_date(end)
        while day <= last:
            for s, e in self._utc_periods(day):
                s, e = max(s, start), min(e, end)
                if e > s:
                    total += e - s
            day += _ONE_DAY
        return total


# ---------------------------------------------------------------------------------------------------------
# Script helpers


def _script_datetime(value: Any, name: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an ISO-8601 date-time") from None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be an ISO-8601 string or a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name}: {value.isoformat()} has no offset; store date-times like 2026-10-08T15:00:00+08:00"
        )
    return value


def _script_number(value: Any, name: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or abs(value) > limit:
        raise ValueError(f"{name} must be a finite number of at most {limit:g}, got {value!r}")
    return value


def script_functions(calendar: BusinessCalendar) -> dict[str, Callable[..., Any]]:
    """Vetted helpers for BPMN scripts/expressions, bound to ``calendar``; plain values in and out.

    Date-times are accepted as ISO-8601 strings with an offset (what task data holds) or aware datetimes,
    and returned as ISO-8601 strings in the input's offset, which SpiffWorkflow's timer ``timeDate``
    parses directly: ``add_working_hours(created_at, 8)``.
    """

    def add_working_hours(start: Any, hours: Any) -> str:
        """ISO date-time ``hours`` working hours after ``start`` (negative: before)."""
        amount = _script_number(hours, "hours", MAX_SCRIPT_HOURS)
        return calendar.add_working_time(
            _script_datetime(start, "start"), timedelta(hours=amount)
        ).isoformat()

    def add_working_days(start: Any, days: Any) -> str:
        """ISO date-time ``days`` working days after ``start``, same time of day clamped into hours."""
        amount = _script_number(days, "days", MAX_SCRIPT_DAYS)
        if amount != int(amount):
            raise ValueError(f"days must be a whole number, got {days!r}")
        return calendar.add_working_days(_script_datetime(start, "start"), int(amount)).isoformat()

    def working_hours_between(a: Any, b: Any) -> float:
        """Working hours from ``a`` to ``b`` as a float; negative when ``b`` is earlier."""
        start, end = _script_datetime(a, "a"), _script_datetime(b, "b")
        if abs(end - start) > MAX_SCRIPT_SPAN:
            raise ValueError(f"a and b are more than {MAX_SCRIPT_SPAN.days} days apart")
        return calendar.working_time_between(start, end).total_seconds() / 3600

    def is_working_day(day: Any) -> bool:
        """Whether a date ('2026-10-10') or an ISO date-time with offset falls on a working day."""
        if isinstance(day, str):
            try:
                return calendar.is_working_day(date.fromisoformat(day.strip()))
            except ValueError:
                pass  # not a plain date: parse it as a date-time below
        elif isinstance(day, date) and not isinstance(day, datetime):
            return calendar.is_working_day(day)
        return calendar.is_working_day(_script_datetime(day, "day"))

    def next_working_time(dt: Any) -> str:
        """``dt`` if inside working hours, else the start of the next working period, as ISO."""
        return calendar.next_working_time(_script_datetime(dt, "dt")).isoformat()

    return {
        "add_working_hours": add_working_hours,
        "add_working_days": add_working_days,
        "working_hours_between": working_hours_between,
        "is_working_day": is_working_day,
        "next_working_time": next_working_time,
    }
