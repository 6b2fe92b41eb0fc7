"""Measures of a process on a known data set built through the engine on a hand-set clock, on SQLite
and PostgreSQL (the same literal numbers on both): states, cycle time, throughput by local day,
SLA breaches, per-step time; a manager's figures cover their departments only; the dashboard, the
CSV export (UTF-8 with BOM) and GET /api/v1/measures/{key}."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from engine.errors import NotFoundError, ValidationError
from engine.measures import local_range
from tests import bpmn_builders as b
from tests.conftest import Clock

PASSWORD = "s3cret-pass"
HOUR = 3600.0
RESOLVE = "处理工单 Resolve"


def ticket_bpmn(pid: str = "ticket", *, extra_step: bool = False) -> bytes:
    """triage (offered to the group agents) then resolve (due 4 hours after it opens); v2 adds a
    review step."""
    steps = ["user:triage", "user:resolve"] + (["user:review"] if extra_step else [])
    return (
        b.linear(pid, steps, name="工单 Ticket")
        .decode()
        .replace(
            '<bpmn:userTask id="triage" name="triage" />',
            '<bpmn:userTask id="triage" name="triage" camunda:candidateGroups="agents" />',
        )
        .replace(
            '<bpmn:userTask id="resolve" name="resolve" />',
            f'<bpmn:userTask id="resolve" name="{RESOLVE}" camunda:dueDate="PT4H" />',
        )
        .encode()
    )


@dataclass
class DataSet:
    """Four tickets (times in UTC; the company's zone is Asia/Shanghai, UTC+8):

    ==  =======  ======================  ============================  ==========================
    i   starter  started                 triage -> resolve              end
    ==  =======  ======================  ============================  ==========================
    1   ann      11-23 09:00             1 h, resolve 2 h (in time)     completed 11-23 12:00 (3 h)
    2   bob      11-23 09:30             2 h, resolve open past due     cancelled 11-24 10:00
    3   cat      11-24 09:00             2 h, resolve 9 h (late)        completed 11-24 20:00 (11 h)
    4   ann      11-25 09:00             0.5 h, resolve open past due   running (now: 11-25 15:00)
    ==  =======  ======================  ============================  ==========================

    ann and bob work in Sales (managed by mgr_sales), cat in Support (mgr_support).
    """

    engine: object
    clock: Clock
    ids: list[str]


def build(engine, clock: Clock) -> DataSet:
    clock.now = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    identity = engine.identity
    for user, department, role in (
        ("mgr_sales", "Sales", "manager"),
        ("ann", "Sales", "employee"),
        ("bob", "Sales", "employee"),
        ("mgr_support", "Support", "manager"),
        ("cat", "Support", "employee"),
        ("boss", None, "admin"),
        ("emp", "Sales", "employee"),
    ):
        identity.create_user(
            user, PASSWORD, role=role, department=department, create_missing=True, locale="en"
        )
    identity.set_department_manager("Sales", "mgr_sales")
    identity.set_department_manager("Support", "mgr_support")
    engine.repository.deploy({"ticket.bpmn": ticket_bpmn()}, deployed_by="designer")

    def at(day: int, hour: float) -> None:
        clock.now = datetime(2026, 11, day, tzinfo=UTC) + timedelta(hours=hour)

    def complete(instance_id: str, who: str) -> None:
        task = engine.tasks.query().instance(instance_id).open().first()
        engine.tasks.complete(task.id, actor=who)

    at(23, 9)
    i1 = engine.runtime.start("ticket", started_by="ann").id
    at(23, 9.5)
    i2 = engine.runtime.start("ticket", started_by="bob").id
    at(23, 10)
    complete(i1, "ann")
    at(23, 11.5)
    complete(i2, "bob")
    at(23, 12)
    complete(i1, "ann")
    at(24, 9)
    i3 = engine.runtime.start("ticket", started_by="cat").id
    at(24, 10)
    engine.runtime.cancel(i2, actor="bob", reason="duplicate")
    at(24, 11)
    complete(i3, "cat")
    at(24, 20)
    complete(i3, "cat")
    at(25, 9)
    i4 = engine.runtime.start("ticket", started_by="ann").id
    at(25, 9.5)
    complete(i4, "ann")
    at(25, 15)
    return DataSet(engine, clock, [i1, i2, i3, i4])


@pytest.fixture
def data(clocked) -> DataSet:
    return build(*clocked)


WEEK = (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC))


def figures(data: DataSet, **kw):
    start, end = kw.pop("range", WEEK)
    return data.engine.measures.figures("ticket", start=start, end=end, **kw)


class TestFigures:
    def test_every_figure_of_the_known_data_set(self, data):
        m = figures(data)
        assert m.states == {"cancelled": 1, "completed": 2, "running": 1}
        assert (m.started, m.finished, m.bucket, m.version) == (4, 3, "day", None)
        cycle = m.cycle_time
        assert (cycle.count, cycle.average_seconds) == (2, 7 * HOUR)
        assert cycle.p50_seconds == 7 * HOUR  # halfway between 3 h and 11 h
        assert cycle.p90_seconds == 3 * HOUR + 0.9 * 8 * HOUR
        assert [(p.day, p.started, p.finished) for p in m.throughput] == [
            (date(2026, 11, 23), 2, 1),
            (date(2026, 11, 24), 1, 2),
            (date(2026, 11, 25), 1, 0),
        ]
        assert (m.sla.with_due, m.sla.breached, m.sla.rate) == (4, 3, 0.75)
        triage, resolve = m.steps
        assert (triage.element_id, triage.entered, triage.completed, triage.open, triage.cancelled) == (
            "triage", 4, 4, 0, 0,
        )  # fmt: skip
        assert triage.average_dwell_seconds == (1 + 2 + 2 + 0.5) / 4 * HOUR
        assert (triage.with_due, triage.breached) == (0, 0)
        assert (resolve.name, resolve.entered, resolve.completed, resolve.open, resolve.cancelled) == (
            RESOLVE, 4, 2, 1, 1,
        )  # fmt: skip
        assert resolve.average_dwell_seconds == (2 + 9) / 2 * HOUR
        # late: i2 (cancelled after its due time), i3 (completed after it), i4 (still open past it)
        assert (resolve.with_due, resolve.breached) == (4, 3)

    def test_days_are_the_company_days(self, data):
        """In Shanghai (UTC+8) ticket 3 ended on the 25th (04:00 local), not the 24th."""
        start, end = local_range(date(2026, 11, 23), date(2026, 11, 25), "Asia/Shanghai")
        assert start == datetime(2026, 11, 22, 16, tzinfo=UTC)
        m = figures(data, range=(start, end), time_zone="Asia/Shanghai")
        assert [(p.day.day, p.started, p.finished) for p in m.throughput] == [
            (23, 2, 1),
            (24, 1, 1),
            (25, 1, 1),
        ]

    def test_days_across_a_daylight_saving_change(self, data):
        """Auckland moved to UTC+13 on 2026-09-27: ticket 1 ended at 01:00 on the 24th there."""
        start, end = local_range(date(2026, 9, 1), date(2026, 11, 25), "Pacific/Auckland")
        m = figures(data, range=(start, end), time_zone="Pacific/Auckland", bucket="day")
        assert [(p.day.day, p.started, p.finished) for p in m.throughput[-3:]] == [
            (23, 2, 0),
            (24, 1, 2),
            (25, 1, 1),
        ]
        assert len(m.throughput) == 86 and sum(p.started for p in m.throughput) == 4
        # Adelaide (UTC+10:30 since 2026-10-04): quarter hours; ticket 3 ended at 06:30 on the 25th
        start, end = local_range(date(2026, 9, 1), date(2026, 11, 25), "Australia/Adelaide")
        m = figures(data, range=(start, end), time_zone="Australia/Adelaide", bucket="day")
        assert [(p.day.day, p.started, p.finished) for p in m.throughput[-3:]] == [
            (23, 2, 1),
            (24, 1, 1),
            (25, 1, 1),
        ]

    def test_weeks_and_the_range_edges(self, data):
        m = figures(data, range=(datetime(2026, 11, 16, tzinfo=UTC), WEEK[1]), bucket="week")
        assert [(p.day, p.started, p.finished) for p in m.throughput] == [
            (date(2026, 11, 16), 0, 0),  # Monday of the week before
            (date(2026, 11, 23), 4, 3),
        ]
        # the range starts at 11-24 08:30: tickets 1 and 2 started before it, ticket 2 ended inside
        inside = figures(data, range=(datetime(2026, 11, 24, 8, 30, tzinfo=UTC), WEEK[1]))
        assert inside.states == {"completed": 1, "running": 1}
        assert (inside.finished, inside.cycle_time.count) == (2, 1)
        assert inside.cycle_time.p90_seconds == 11 * HOUR  # one value: every percentile is it
        assert [s.entered for s in inside.steps] == [2, 2]

    def test_an_empty_range_has_no_cycle_time_and_no_rate(self, data):
        m = figures(data, range=(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC)))
        assert (m.started, m.finished, m.states, m.steps) == (0, 0, {}, ())
        assert m.cycle_time.p50_seconds is None and m.sla.rate is None
        assert [p.started for p in m.throughput] == [0, 0]

    def test_departments_limit_the_figures_to_a_managers(self, data):
        ids = {d.name: d.id for d in data.engine.identity.departments().list()}
        sales = figures(data, departments=[ids["Sales"]])
        assert sales.states == {"cancelled": 1, "completed": 1, "running": 1}
        assert (sales.cycle_time.count, sales.cycle_time.p50_seconds) == (1, 3 * HOUR)
        assert [(s.element_id, s.entered, s.breached) for s in sales.steps] == [
            ("triage", 3, 0),
            ("resolve", 3, 2),
        ]
        support = figures(data, departments=[ids["Support"]])
        assert (support.states, support.sla.breached) == ({"completed": 1}, 1)
        assert figures(data, departments=()).started == 0

    def test_one_version(self, data):
        engine, clock = data.engine, data.clock
        engine.repository.deploy({"ticket.bpmn": ticket_bpmn(extra_step=True)}, deployed_by="designer")
        engine.runtime.start("ticket", started_by="cat")
        clock.now += timedelta(hours=1)
        assert figures(data).started == 5
        assert figures(data, version=1).started == 4
        v2 = figures(data, version=2)
        assert (v2.started, v2.version, [s.element_id for s in v2.steps]) == (1, 2, ["triage"])
        with pytest.raises(NotFoundError):
            figures(data, version=3)
        with pytest.raises(NotFoundError):
            data.engine.measures.figures("nope", start=WEEK[0], end=WEEK[1])

    def test_bad_ranges_are_refused(self, data):
        with pytest.raises(ValidationError):
            figures(data, range=(WEEK[1], WEEK[0]))
        with pytest.raises(ValidationError):
            figures(data, range=(datetime(2020, 1, 1, tzinfo=UTC), WEEK[1]))
        with pytest.raises(ValidationError):
            figures(data, time_zone="Mars/Olympus")
        with pytest.raises(ValidationError):
            figures(data, bucket="month")


# -- pages, CSV and API ---------------------------------------------------------------------------


def build_on(app) -> DataSet:
    """The data set built through the app's own engine, on a hand-set clock."""
    app.config["CSRF_DISABLED"] = True
    engine = app.extensions["baton.engine"]
    clock = Clock()
    engine.context.config.clock = clock
    return build(engine, clock)


@pytest.fixture
def site(app) -> DataSet:
    return build_on(app)


def logged_in(app, username: str):
    client = app.test_client()
    answer = client.post("/login", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


RANGE = "from=2026-11-23&to=2026-11-25"


class TestPages:
    def test_dashboard_with_charts_heat_map_and_steps(self, app, site):
        page = logged_in(app, "boss").get(f"/measures/ticket?{RANGE}")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert html.count('role="img"') >= 3 and '<title id="chart-throughput-title">' in html
        assert "75.0 %" in html and "3 of 4" in html  # overdue tasks
        assert "7 h" in html  # median cycle time
        assert RESOLVE in html and "heat-5" in html  # resolve is the slowest step
        assert 'id="heatmap-data"' in html and 'data-url="/measures/ticket/diagram.bpmn"' in html
        assert 'href="/measures/ticket/export.csv?from=2026-11-23&amp;to=2026-11-25"' in html
        nav = logged_in(app, "boss").get("/measures/").get_data(as_text=True)
        assert 'href="/measures/ticket"' in nav and 'href="/measures/"' in nav

    def test_default_range_is_the_last_30_days_and_bad_input_is_reported(self, app, site):
        client = logged_in(app, "boss")
        html = client.get("/measures/ticket").get_data(as_text=True)
        assert 'value="2026-10-27"' in html and 'value="2026-11-25"' in html
        answer = client.get("/measures/ticket?from=yesterday&bucket=month")
        assert answer.status_code == 200 and "is not a date" in answer.get_data(as_text=True)
        assert client.get("/measures/nope").status_code == 404

    def test_only_managers_and_administrators(self, app, site):
        employee = logged_in(app, "emp")
        assert employee.get("/measures/").status_code == 403
        assert employee.get(f"/measures/ticket?{RANGE}").status_code == 403
        assert employee.get(f"/measures/ticket/export.csv?{RANGE}").status_code == 403
        assert "/measures/" not in employee.get("/inbox").get_data(as_text=True)
        assert app.test_client().get("/measures/").status_code == 302  # to the login page

    def test_a_manager_sees_their_departments_only(self, app, site):
        sales = logged_in(app, "mgr_sales").get(f"/measures/ticket?{RANGE}").get_data(as_text=True)
        assert "2 of 3" in sales and "Your departments only" in sales
        support = logged_in(app, "mgr_support").get(f"/api/v1/measures/ticket?{RANGE}")
        assert support.status_code == 200
        assert support.get_json()["states"] == {"completed": 1}

    def test_csv_export(self, app, site):
        answer = logged_in(app, "boss").get(f"/measures/ticket/export.csv?{RANGE}")
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
        disposition = answer.headers["Content-Disposition"]
        assert (
            disposition.startswith("attachment;")
            and "measures-ticket-2026-11-23-2026-11-25.csv" in disposition
        )
        raw = answer.get_data()
        assert raw.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads UTF-8 (Chinese) correctly
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
        assert rows[0] == ["Process", "工单 Ticket"]
        figures = {r[0]: r[1] for r in rows if len(r) == 2}
        assert figures["Instances started"] == "4" and figures["Instances finished"] == "3"
        assert figures["Cycle time, median (hours)"] == "7.00"
        assert figures["Cycle time, 90th percentile (hours)"] == "10.20"
        assert figures["Overdue rate (%)"] == "75.0"
        days = rows.index(["Day", "Instances started", "Instances finished"])
        assert rows[days + 1 : days + 4] == [
            ["2026-11-23", "2", "1"],
            ["2026-11-24", "1", "1"],
            ["2026-11-25", "1", "1"],
        ]
        header = next(i for i, r in enumerate(rows) if r[:1] == ["Step"])
        assert rows[header + 1] == ["triage", "triage", "4", "4", "0", "0", "1.38", "0", "0"]
        assert rows[header + 2] == [RESOLVE, "resolve", "4", "2", "1", "1", "5.50", "4", "3"]

    def test_csv_in_chinese(self, app, site):
        client = logged_in(app, "boss")
        client.post("/locale", data={"locale": "zh_CN", "next": "/inbox"})
        rows = list(
            csv.reader(
                io.StringIO(client.get(f"/measures/ticket/export.csv?{RANGE}").get_data().decode("utf-8-sig"))
            )
        )
        assert rows[0][0] == "流程"

    def test_diagram_for_the_heat_map(self, app, site):
        client = logged_in(app, "mgr_sales")
        answer = client.get("/measures/ticket/diagram.bpmn")
        assert answer.status_code == 200 and b'<bpmn:userTask id="resolve"' in answer.get_data()
        assert client.get("/measures/ticket/diagram.bpmn?version=7").status_code == 404


class TestApi:
    def test_figures_as_json(self, app, site):
        client = app.test_client()
        token = client.post("/api/v1/auth/token", json={"username": "boss", "password": PASSWORD}).get_json()
        headers = {"Authorization": f"Bearer {token['token']}"}
        body = client.get(f"/api/v1/measures/ticket?{RANGE}", headers=headers).get_json()
        assert body["start"] == "2026-11-22T16:00:00+00:00" and body["time_zone"] == "Asia/Shanghai"
        assert (body["started"], body["finished"], body["sla"]["rate"]) == (4, 3, 0.75)
        assert body["cycle_time"]["p50_seconds"] == 7 * HOUR
        assert [p["day"] for p in body["throughput"]] == ["2026-11-23", "2026-11-24", "2026-11-25"]
        assert body["steps"][1]["element_id"] == "resolve" and body["steps"][1]["breached"] == 3
        bad = client.get("/api/v1/measures/ticket?from=2026-11-25&to=2026-11-01", headers=headers)
        assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid"
        assert client.get("/api/v1/measures/nope", headers=headers).status_code == 404
        assert client.get("/api/v1/measures/ticket").status_code == 401

    def test_employees_are_refused_and_the_path_is_documented(self, app, site):
        client = app.test_client()
        token = client.post("/api/v1/auth/token", json={"username": "emp", "password": PASSWORD}).get_json()
        answer = client.get("/api/v1/measures/ticket", headers={"Authorization": f"Bearer {token['token']}"})
        assert answer.status_code == 403
        spec = client.get("/api/v1/openapi.json").get_json()
        assert "/measures/{key}" in spec["paths"] and "Measures" in spec["components"]["schemas"]
