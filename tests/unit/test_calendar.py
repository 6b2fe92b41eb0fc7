"""Business calendar (engine.calendar) with the real 2026 State Council data: due dates, 调休, time zones."""

from __future__ import annotations

import json
import sys
import time as clock
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the project is not installed in the venv: make `engine` importable
    sys.path.insert(0, str(ROOT))

from SpiffWorkflow.bpmn.script_engine import TaskDataEnvironment  # noqa: E402
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition  # noqa: E402

from engine.calendar import (  # noqa: E402
    DATA_DIR,
    BusinessCalendar,
    WorkingHours,
    load_year_data,
    script_functions,
)

SH = ZoneInfo("Asia/Shanghai")
H = timedelta(hours=1)


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SH)


@pytest.fixture(scope="module")
def cal() -> BusinessCalendar:
    return BusinessCalendar.default()


def year_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "year": 2026,
        "holidays": [{"name": "国庆节", "from": "2026-10-01", "to": "2026-10-07"}],
        "make_up_workdays": [{"date": "2026-10-10", "weekday": "Saturday"}],
    }
    data.update(overrides)
    return data


# ---------------------------------------------------------------------------------------------------------
# shipped data


def test_default_loads_shipped_2026_file(cal: BusinessCalendar) -> None:
    assert (DATA_DIR / "cn-2026.json").is_file()
    assert cal.has_data_for(2026)
    assert not cal.has_data_for(2027)  # not published yet: callers warn, weekends still count
    assert cal.hours.timezone == "Asia/Shanghai"
    assert len(cal.make_up_workdays) == 6
    assert date(2026, 10, 1) in cal.holidays and date(2026, 10, 10) in cal.make_up_workdays
    source = json.loads((DATA_DIR / "cn-2026.json").read_text(encoding="utf-8"))["source"]
    assert "State Council" in source


def test_working_days_in_2026(cal: BusinessCalendar) -> None:
    assert all(not cal.is_working_day(date(2026, 10, d)) for d in range(1, 8))  # 国庆 Thu..Wed
    assert cal.is_working_day(date(2026, 10, 8))
    assert cal.is_working_day(date(2026, 10, 10))  # Saturday 调休
    assert not cal.is_working_day(date(2026, 10, 11))  # ordinary Sunday
    assert cal.is_working_day(date(2026, 9, 20))  # Sunday 调休
    assert not cal.is_working_day(date(2026, 9, 25))  # 中秋 Friday
    assert cal.is_working_day(date(2026, 1, 4))  # Sunday 调休 for 元旦
    assert not cal.is_working_day(date(2026, 1, 1))


def test_years_without_data_fall_back_to_weekdays(cal: BusinessCalendar) -> None:
    assert cal.is_working_day(date(2027, 10, 1))  # a Friday: no 2027 notice loaded
    assert not cal.is_working_day(date(2027, 10, 2))  # Saturday
    bare = BusinessCalendar()
    assert not bare.has_data_for(2026)
    assert bare.is_working_day(date(2026, 10, 1))
    assert not bare.is_working_day(date(2026, 10, 10))
    assert bare.add_working_time(sh(2026, 9, 30, 15), 8 * H) == sh(2026, 10, 1, 15)


# ---------------------------------------------------------------------------------------------------------
# add_working_time


def test_normal_weekend(cal: BusinessCalendar) -> None:
    # 8 working hours are one full working day: Friday 17:00 -> Monday 17:00 (1 h Friday + 3 h + 4 h Monday)
    assert cal.add_working_time(sh(2026, 3, 6, 17), 8 * H) == sh(2026, 3, 9, 17)
    assert cal.add_working_time(sh(2026, 3, 6, 16), 3 * H) == sh(2026, 3, 9, 10)
    assert cal.add_working_time(sh(2026, 3, 9, 9), 40 * H) == sh(2026, 3, 13, 18)  # one working week


def test_national_day_2026(cal: BusinessCalendar) -> None:
    # 3 h on Wed 09-30, Oct 1-7 off, then 3 h + 2 h on Thu 10-08
    assert cal.add_working_time(sh(2026, 9, 30, 15), 8 * H) == sh(2026, 10, 8, 15)
    # Friday 10-09 afternoon runs into the 调休 Saturday 10-10
    assert cal.add_working_time(sh(2026, 10, 9, 16), 4 * H) == sh(2026, 10, 10, 11)
    assert cal.add_working_time(sh(2026, 10, 9, 14), 8 * H) == sh(2026, 10, 10, 14)
    # ... and past it the ordinary Sunday 10-11 is skipped
    assert cal.add_working_time(sh(2026, 10, 10, 17), 2 * H) == sh(2026, 10, 12, 10)


def test_sunday_make_up_day_and_mid_autumn(cal: BusinessCalendar) -> None:
    assert cal.add_working_time(sh(2026, 9, 18, 17), 2 * H) == sh(2026, 9, 20, 10)  # Sat off, Sun works
    assert cal.add_working_time(sh(2026, 9, 24, 17), 2 * H) == sh(2026, 9, 28, 10)  # 中秋 Fri-Sun off


def test_spring_festival(cal: BusinessCalendar) -> None:
    assert cal.add_working_time(sh(2026, 2, 13, 17), 2 * H) == sh(2026, 2, 14, 10)  # Saturday 调休
    assert cal.add_working_time(sh(2026, 2, 14, 17), 2 * H) == sh(2026, 2, 24, 10)  # Feb 15-23 off
    assert cal.working_time_between(sh(2026, 2, 14, 18), sh(2026, 2, 24, 9)) == timedelta(0)
    assert not any(cal.is_working_day(date(2026, 2, d)) for d in range(15, 24))
    assert cal.is_working_day(date(2026, 2, 28))  # Saturday 调休 after the festival
    assert cal.add_working_time(sh(2026, 2, 27, 17), 2 * H) == sh(2026, 2, 28, 10)


def test_lunch_break(cal: BusinessCalendar) -> None:
    monday = (2026, 3, 9)
    assert cal.add_working_time(sh(*monday, 11), 2 * H) == sh(*monday, 14)
    assert cal.add_working_time(sh(*monday, 11), H) == sh(*monday, 12)  # used up exactly at the break
    assert cal.add_working_time(sh(*monday, 12, 30), H) == sh(*monday, 14)
    assert cal.add_working_time(sh(*monday, 9), 8 * H) == sh(*monday, 18)
    assert cal.is_working_time(sh(*monday, 11, 59))
    assert not cal.is_working_time(sh(*monday, 12))
    assert not cal.is_working_time(sh(*monday, 12, 59))
    assert cal.is_working_time(sh(*monday, 13))
    assert cal.is_working_time(sh(*monday, 9)) and not cal.is_working_time(sh(*monday, 18))
    assert cal.working_time_between(sh(*monday, 11), sh(*monday, 14)) == 2 * H


def test_start_outside_working_hours(cal: BusinessCalendar) -> None:
    assert cal.add_working_time(sh(2026, 3, 10, 22), H) == sh(2026, 3, 11, 10)  # night
    assert cal.add_working_time(sh(2026, 3, 11, 3), H) == sh(2026, 3, 11, 10)  # early morning
    assert cal.add_working_time(sh(2026, 3, 7, 3), H) == sh(2026, 3, 9, 10)  # Saturday
    assert cal.add_working_time(sh(2026, 10, 3, 10), H) == sh(2026, 10, 8, 10)  # holiday
    assert cal.next_working_time(sh(2026, 10, 3, 10)) == sh(2026, 10, 8, 9)
    assert cal.next_working_time(sh(2026, 10, 9, 18)) == sh(2026, 10, 10, 9)  # 18:00 is closed already
    assert cal.next_working_time(sh(2026, 3, 9, 12, 15)) == sh(2026, 3, 9, 13)
    inside = sh(2026, 3, 9, 10, 17)
    assert cal.next_working_time(inside) is inside


def test_zero_and_negative_deltas(cal: BusinessCalendar) -> None:
    night = sh(2026, 10, 3, 23)
    assert cal.add_working_time(night, timedelta(0)) is night  # adding nothing changes nothing
    assert cal.add_working_time(sh(2026, 10, 8, 10), -2 * H) == sh(2026, 9, 30, 17)  # back over 国庆
    assert cal.add_working_time(sh(2026, 10, 8, 15), -8 * H) == sh(2026, 9, 30, 15)
    assert cal.add_working_time(sh(2026, 3, 9, 9), -H) == sh(2026, 3, 6, 17)  # Monday opening -> Friday
    assert cal.add_working_time(sh(2026, 3, 10, 10), -H) == sh(2026, 3, 10, 9)  # stays at opening
    assert cal.add_working_time(sh(2026, 3, 10, 14), -2 * H) == sh(2026, 3, 10, 11)  # back over lunch
    assert cal.add_working_time(sh(2026, 10, 12, 10), -2 * H) == sh(2026, 10, 10, 17)  # 调休 Saturday
    assert cal.add_working_time(sh(2026, 3, 8, 12), -H) == sh(2026, 3, 6, 17)  # from a Sunday


# ---------------------------------------------------------------------------------------------------------
# add_working_days


def test_add_working_days(cal: BusinessCalendar) -> None:
    assert cal.add_working_days(sh(2026, 9, 30, 10, 30), 1) == sh(2026, 10, 8, 10, 30)
    assert cal.add_working_days(sh(2026, 10, 9, 14), 1) == sh(2026, 10, 10, 14)  # 调休 Saturday counts
    assert cal.add_working_days(sh(2026, 10, 9, 14), 2) == sh(2026, 10, 12, 14)
    assert cal.add_working_days(sh(2026, 10, 8, 10), -1) == sh(2026, 9, 30, 10)
    assert cal.add_working_days(sh(2026, 3, 7, 10), 1) == sh(2026, 3, 9, 10)  # from a Saturday
    assert cal.add_working_days(sh(2026, 3, 9, 10), 5) == sh(2026, 3, 16, 10)
    start = sh(2026, 3, 7, 3)
    assert cal.add_working_days(start, 0) is start


def test_add_working_days_clamps_into_working_hours(cal: BusinessCalendar) -> None:
    assert cal.add_working_days(sh(2026, 3, 6, 20), 1) == sh(2026, 3, 9, 18)  # after closing
    assert cal.add_working_days(sh(2026, 3, 6, 7), 1) == sh(2026, 3, 9, 9)  # before opening
    assert cal.add_working_days(sh(2026, 3, 6, 12, 30), 1) == sh(2026, 3, 9, 12)  # lunch
    assert cal.add_working_days(sh(2026, 3, 6, 18), 1) == sh(2026, 3, 9, 18)
    with pytest.raises(TypeError):
        cal.add_working_days(sh(2026, 3, 6, 10), 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# working_time_between


def test_working_time_between_known_values(cal: BusinessCalendar) -> None:
    assert cal.working_time_between(sh(2026, 3, 9, 9), sh(2026, 3, 9, 18)) == 8 * H
    assert cal.working_time_between(sh(2026, 3, 6, 17), sh(2026, 3, 9, 10)) == 2 * H
    assert cal.working_time_between(sh(2026, 3, 9, 10), sh(2026, 3, 6, 17)) == -2 * H
    assert cal.working_time_between(sh(2026, 3, 9, 10), sh(2026, 3, 9, 10)) == timedelta(0)
    assert cal.working_time_between(sh(2026, 9, 30, 15), sh(2026, 10, 8, 15)) == 8 * H
    assert cal.working_time_between(sh(2026, 10, 1), sh(2026, 10, 8)) == timedelta(0)


START_DAYS = [
    (2026, 3, 9),  # Monday
    (2026, 3, 13),  # Friday
    (2026, 3, 14),  # Saturday
    (2026, 9, 18),  # Friday before the Sunday 调休
    (2026, 9, 30),  # before 国庆
    (2026, 10, 4),  # inside 国庆
    (2026, 10, 10),  # 调休 Saturday
    (2026, 2, 13),  # before 春节
    (2026, 12, 31),  # into 2027, no data
]
START_TIMES = [(0, 0), (8, 59), (9, 0), (10, 17), (12, 0), (12, 30), (13, 0), (17, 59), (18, 0), (23, 30)]
DELTAS = [
    timedelta(0),
    timedelta(microseconds=1),
    timedelta(minutes=1),
    timedelta(minutes=30),
    H,
    3 * H,
    timedelta(hours=4, minutes=45),
    8 * H,
    timedelta(hours=17, minutes=30),
    40 * H,
    200 * H,
]


@pytest.mark.parametrize("day", START_DAYS, ids=lambda d: "-".join(map(str, d)))
def test_working_time_between_inverts_add_working_time(
    cal: BusinessCalendar, day: tuple[int, int, int]
) -> None:
    for hour, minute in START_TIMES:
        a = sh(*day, hour, minute)
        for delta in DELTAS:
            for d in (delta, -delta):
                b = cal.add_working_time(a, d)
                assert cal.working_time_between(a, b) == d, (a, d, b)
                assert (b >= a) if d >= timedelta(0) else (b <= a)


def test_result_is_inside_or_at_the_edge_of_working_hours(cal: BusinessCalendar) -> None:
    tick = timedelta(microseconds=1)
    for day in START_DAYS:
        for hour, minute in START_TIMES:
            a = sh(*day, hour, minute)
            for delta in DELTAS[1:]:
                forward = cal.add_working_time(a, delta)
                assert cal.is_working_time(forward - tick)  # the last instant counted was working time
                backward = cal.add_working_time(a, -delta)
                assert cal.is_working_time(backward)  # going back ends on a working instant


# ---------------------------------------------------------------------------------------------------------
# time zones


def test_utc_in_utc_out_with_shanghai_semantics(cal: BusinessCalendar) -> None:
    start = datetime(2026, 9, 30, 7, 0, tzinfo=UTC)  # 15:00 in Shanghai
    due = cal.add_working_time(start, 8 * H)
    assert due == datetime(2026, 10, 8, 7, 0, tzinfo=UTC)
    assert due.tzinfo is UTC
    # Sunday 23:30 UTC is Monday 07:30 in Shanghai: a working day, but before opening
    early = datetime(2026, 3, 8, 23, 30, tzinfo=UTC)
    assert cal.is_working_day(early) and not cal.is_working_time(early)
    assert cal.next_working_time(early) == datetime(2026, 3, 9, 1, 0, tzinfo=UTC)
    # Friday 09:30 UTC is 17:30 in Shanghai: half an hour left that day
    assert cal.add_working_time(datetime(2026, 3, 6, 9, 30, tzinfo=UTC), H) == datetime(
        2026, 3, 9, 1, 30, tzinfo=UTC
    )
    # a fixed offset stays a fixed offset
    plus8 = timezone(timedelta(hours=8))
    result = cal.add_working_days(datetime(2026, 9, 30, 10, tzinfo=plus8), 1)
    assert result.utcoffset() == timedelta(hours=8) and result.replace(tzinfo=None) == datetime(
        2026, 10, 8, 10
    )
    assert cal.working_time_between(start, sh(2026, 10, 8, 15)) == 8 * H


def test_naive_datetimes_are_refused(cal: BusinessCalendar) -> None:
    naive = datetime(2026, 3, 9, 10)
    calls = [
        lambda: cal.is_working_time(naive),
        lambda: cal.is_working_day(naive),
        lambda: cal.next_working_time(naive),
        lambda: cal.add_working_time(naive, H),
        lambda: cal.add_working_days(naive, 1),
        lambda: cal.working_time_between(naive, sh(2026, 3, 9, 12)),
        lambda: cal.working_time_between(sh(2026, 3, 9, 12), naive),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="timezone-aware"):
            call()


def test_calendar_in_a_zone_with_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    cal = BusinessCalendar(WorkingHours(timezone="Europe/Berlin"))
    # DST starts Sunday 2026-03-29: Friday 17:00 + 2 h is Monday 10:00 local, two real hours of work
    start = datetime(2026, 3, 27, 17, tzinfo=berlin)
    due = cal.add_working_time(start, 2 * H)
    assert due == datetime(2026, 3, 30, 10, tzinfo=berlin)
    assert cal.working_time_between(start, due) == 2 * H
    assert due.utcoffset() == timedelta(hours=2)


def test_custom_working_hours() -> None:
    six_days = ((("08:30", "12:00"), ("13:30", "17:30")),) * 6 + ((),)
    hours = WorkingHours(weekdays=six_days)  # type: ignore[arg-type]
    assert hours.weekdays[5] == ((time(8, 30), time(12)), (time(13, 30), time(17, 30)))
    cal = BusinessCalendar(hours)
    assert cal.add_working_time(sh(2026, 3, 6, 17), 2 * H) == sh(2026, 3, 7, 10)  # Saturday works here
    assert cal.add_working_time(sh(2026, 3, 7, 17), 2 * H) == sh(2026, 3, 9, 10)
    assert hash(hours) == hash(WorkingHours(weekdays=six_days))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weekdays": (((),),) * 7}, "start, end"),
        ({"weekdays": ((("18:00", "09:00"),),) * 7}, "must be before"),
        ({"weekdays": ((("09:00", "12:00"), ("11:00", "13:00")),) * 7}, "overlap"),
        ({"weekdays": ((("9 am", "12:00"),),) * 7}, "not a time"),
        ({"weekdays": ((),) * 7}, "at least one weekday"),
        ({"weekdays": ((),) * 5}, "7 entries"),
        ({"timezone": "Asia/Peking"}, "unknown time zone"),
        ({"make_up_day": ()}, "make_up_day"),
    ],
)
def test_invalid_working_hours(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkingHours(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# data validation


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"year": "2026"}, "'year' must be an integer"),
        ({"holidays": [{"from": "2025-10-01", "to": "2025-10-07"}]}, "outside the declared year 2026"),
        ({"holidays": [{"from": "2026-12-30", "to": "2027-01-01"}]}, "outside the declared year 2026"),
        ({"holidays": [{"name": "国庆节", "from": "2026-10-07", "to": "2026-10-01"}]}, r"国庆节.*after 'to'"),
        ({"holidays": [{"from": "2026-10-01", "to": "2026-13-01"}]}, "not an ISO date"),
        ({"holidays": [{"from": "2026-10-01"}]}, "'to'"),
        ({"holidays": {"from": "2026-10-01", "to": "2026-10-07"}}, "must be a list"),
        ({"make_up_workdays": [{"date": "2026-10-03"}]}, "both a holiday and a make-up workday"),
        ({"make_up_workdays": [{"date": "2026-10-12"}]}, "Saturday or Sunday"),
        ({"make_up_workdays": [{"date": "2026-10-11", "weekday": "Saturday"}]}, "Sunday, but the file says"),
        ({"make_up_workdays": [{"date": "2027-01-09"}]}, "outside the declared year"),
    ],
)
def test_invalid_year_data(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_year_data(year_json(**overrides))


def test_missing_sections_are_refused() -> None:
    for key in ("holidays", "make_up_workdays"):
        data = year_json()
        del data[key]
        with pytest.raises(ValueError, match=f"missing '{key}'"):
            load_year_data(data)


def test_new_year_bridge_into_previous_december_is_accepted() -> None:
    # the 2024 notice: 元旦 2023-12-30 .. 2024-01-01 (and the 2019 one had a make-up workday on 2018-12-29)
    data = load_year_data(
        {
            "year": 2024,
            "holidays": [{"name": "元旦", "from": "2023-12-30", "to": "2024-01-01"}],
            "make_up_workdays": [],
        }
    )
    assert date(2023, 12, 30) in data.holidays and date(2024, 1, 1) in data.holidays


def test_from_files_rejects_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "cn-2026.json"
    good.write_text(json.dumps(year_json()), encoding="utf-8")
    bad = tmp_path / "cn-2027.json"
    bad.write_text(json.dumps(year_json(year=2027)), encoding="utf-8")  # 2026 dates in a 2027 file
    with pytest.raises(ValueError, match=r"cn-2027\.json: holidays\[0\].*outside the declared year 2027"):
        BusinessCalendar.from_files([good, bad])
    broken = tmp_path / "broken.json"
    broken.write_text('{"year": 2026, "holidays": [', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json"):
        BusinessCalendar.from_files([broken])
    twice = tmp_path / "copy.json"
    twice.write_text(good.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ValueError, match="2026 already loaded"):
        BusinessCalendar.from_files([good, twice])
    cal = BusinessCalendar.from_files([good])
    assert cal.has_data_for(2026) and cal.is_working_day(date(2026, 10, 10))


def test_company_file_for_next_year(tmp_path: Path) -> None:
    """What an administrator does once the 2027 notice is out: add a file, the calendar picks it up."""
    next_year = tmp_path / "cn-2027.json"
    next_year.write_text(
        json.dumps(
            {
                "year": 2027,
                "holidays": [{"from": "2027-10-01", "to": "2027-10-07"}],
                "make_up_workdays": [{"date": "2027-10-09", "weekday": "Saturday"}],
            }
        ),
        encoding="utf-8",
    )
    cal = BusinessCalendar.from_files([*sorted(DATA_DIR.glob("*.json")), next_year])
    assert cal.has_data_for(2026) and cal.has_data_for(2027)
    assert not cal.is_working_day(date(2027, 10, 1)) and cal.is_working_day(date(2027, 10, 9))


def test_constructor_refuses_clashing_dates() -> None:
    with pytest.raises(ValueError, match="both holiday and make-up"):
        BusinessCalendar(holidays=[date(2026, 10, 10)], make_up_workdays=[date(2026, 10, 10)])


# ---------------------------------------------------------------------------------------------------------
# speed


def test_200_working_hours_is_fast(cal: BusinessCalendar) -> None:
    start = sh(2026, 9, 1, 10)
    best = float("inf")
    for _ in range(5):
        t0 = clock.perf_counter()
        due = cal.add_working_time(start, 200 * H)
        best = min(best, clock.perf_counter() - t0)
    assert best < 0.010, f"200 working hours took {best * 1000:.1f} ms"
    # 25 working days after Tue 09-01 10:00: 21 more in September (with Sun 09-20, without 中秋 Fri 09-25),
    # then Thu 10-08, Fri 10-09, Sat 10-10 (调休) and Mon 10-12
    assert due == sh(2026, 10, 12, 10)
    assert cal.working_time_between(start, due) == 200 * H


# ---------------------------------------------------------------------------------------------------------
# script functions


def test_script_functions_take_and_return_iso_strings(cal: BusinessCalendar) -> None:
    fns = script_functions(cal)
    assert set(fns) == {
        "add_working_hours",
        "add_working_days",
        "working_hours_between",
        "is_working_day",
        "next_working_time",
    }
    assert fns["add_working_hours"]("2026-09-30T15:00:00+08:00", 8) == "2026-10-08T15:00:00+08:00"
    assert fns["add_working_hours"]("2026-09-30T07:00:00Z", 8) == "2026-10-08T07:00:00+00:00"
    assert fns["add_working_hours"](sh(2026, 10, 9, 16), 2.5) == "2026-10-10T09:30:00+08:00"
    assert fns["add_working_days"]("2026-09-30T10:30:00+08:00", 1) == "2026-10-08T10:30:00+08:00"
    assert fns["working_hours_between"]("2026-09-30T15:00:00+08:00", "2026-10-08T15:00:00+08:00") == 8.0
    assert fns["working_hours_between"]("2026-10-08T15:00:00+08:00", "2026-09-30T16:30:00+08:00") == -6.5
    assert fns["is_working_day"]("2026-10-10") is True
    assert fns["is_working_day"]("2026-10-03T10:00:00+08:00") is False
    assert fns["is_working_day"](date(2026, 9, 20)) is True
    assert fns["next_working_time"]("2026-10-03T10:00:00+08:00") == "2026-10-08T09:00:00+08:00"


def test_script_functions_refuse_ambiguous_or_absurd_input(cal: BusinessCalendar) -> None:
    fns = script_functions(cal)
    with pytest.raises(ValueError, match="no offset"):
        fns["add_working_hours"]("2026-09-30T15:00:00", 8)
    with pytest.raises(ValueError, match="not an ISO-8601"):
        fns["add_working_hours"]("yesterday", 8)
    with pytest.raises(TypeError):
        fns["add_working_hours"]("2026-09-30T15:00:00+08:00", True)
    with pytest.raises(TypeError):
        fns["add_working_hours"]("2026-09-30T15:00:00+08:00", "8")
    with pytest.raises(ValueError, match="finite"):
        fns["add_working_hours"]("2026-09-30T15:00:00+08:00", float("inf"))
    with pytest.raises(ValueError, match="at most"):
        fns["add_working_hours"]("2026-09-30T15:00:00+08:00", 10**9)
    with pytest.raises(ValueError, match="whole number"):
        fns["add_working_days"]("2026-09-30T15:00:00+08:00", 1.5)
    assert fns["add_working_days"]("2026-09-30T15:00:00+08:00", 1.0) == "2026-10-08T15:00:00+08:00"


def test_timer_time_date_expression_round_trip(cal: BusinessCalendar) -> None:
    """A timeDate expression evaluated with the helpers gives a value SpiffWorkflow's timer parses."""
    env = TaskDataEnvironment(script_functions(cal))
    value = env.evaluate("add_working_hours(created_at, 8)", {"created_at": "2026-09-30T15:00:00+08:00"})
    assert TimerEventDefinition.get_datetime(value) == datetime(2026, 10, 8, 7, 0, tzinfo=UTC)
