"""Measures pages for managers and administrators: one dashboard per process, a CSV export.

The dashboard shows, for a date range (days of the company's time zone, both ends included):
instances by state, cycle time, throughput per day or week, the SLA breach rate and, per step, how
long tasks wait there, as inline SVG charts (web/charts.py) and as a heat map on the process
diagram (bpmn-js overlays, web/static/heatmap.js; the per-step table says the same without it).
A manager's figures cover the instances started in the departments they manage (the starter's
department when it started, as in their instance list, web/manage.py); an administrator's cover
everybody's. The engine computes them (engine/measures.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from math import ceil
from typing import Any

from flask import Blueprint, Response, render_template, request, send_file, url_for
from flask_babel import gettext as _

from engine.errors import NotFoundError
from engine.measures import local_range, zone
from engine.results import ProcessMeasures
from web import pages
from web.charts import Series, bar_chart, line_chart
from web.i18n import company_zone
from web.inbox import label_of, process_diagram
from web.manage import managed_departments
from web.security import current_principal, engine, roles_required

bp = Blueprint("measures", __name__, url_prefix="/measures")
DEFAULT_DAYS = 30
HEAT_LEVELS = 5
BUCKETS = ("day", "week")


@dataclass(frozen=True)
class Filters:
    """The dashboard's date range (local days, both included), version and bucket."""

    first: date
    last: date
    version: int | None = None
    bucket: str | None = None

    def args(self) -> dict[str, str]:
        """The query string that asks for these filters again (links, the CSV export)."""
        found = {"from": self.first.isoformat(), "to": self.last.isoformat()}
        if self.version is not None:
            found["version"] = str(self.version)
        if self.bucket:
            found["bucket"] = self.bucket
        return found


def read_filters(args: Mapping[str, str]) -> tuple[Filters, list[str]]:
    """Filters from a query string, and what was wrong with it (bad values fall back to defaults)."""
    problems: list[str] = []
    today = engine().context.now().astimezone(zone(company_zone())).date()

    def day(name: str, default: date) -> date:
        raw = (args.get(name) or "").strip()
        if not raw:
            return default
        try:
            return date.fromisoformat(raw)
        except ValueError:
            problems.append(_("“%(value)s” is not a date (YYYY-MM-DD).", value=raw))
            return default

    last = day("to", today)
    first = day("from", last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        problems.append(
            _("The range ends before it starts: showing the %(days)s days up to its end.", days=DEFAULT_DAYS)
        )
        first = last - timedelta(days=DEFAULT_DAYS - 1)
    version = None
    raw_version = (args.get("version") or "").strip()
    if raw_version:
        if raw_version.isdigit():
            version = int(raw_version)
        else:
            problems.append(_("The version must be a whole number."))
    bucket = args.get("bucket") or None
    if bucket is not None and bucket not in BUCKETS:
        problems.append(_("Group by day or by week."))
        bucket = None
    return Filters(first, last, version, bucket), problems


def figures_for(key: str, filters: Filters) -> ProcessMeasures:
    """The engine's figures for the signed-in manager or administrator. Raises NotFoundError,
    ValidationError."""
    start, end = local_range(filters.first, filters.last, company_zone())
    return engine().measures.figures(
        key,
        start=start,
        end=end,
        version=filters.version,
        departments=managed_departments(current_principal()),
        time_zone=company_zone(),
        bucket=filters.bucket,
    )


def duration(seconds: float | None) -> str:
    """A short, translated duration: 2 d 3 h, 3 h 20 min, 45 min, 30 s."""
    if seconds is None:
        return "–"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return _("%(d)s d %(h)s h", d=days, h=hours) if hours else _("%(d)s d", d=days)
    if hours:
        return _("%(h)s h %(m)s min", h=hours, m=minutes) if minutes else _("%(h)s h", h=hours)
    if minutes:
        return _("%(m)s min", m=minutes)
    return _("%(s)s s", s=secs)


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f} %"


def heat_level(value: float | None, top: float | None) -> int:
    """0 (no completed task) or 1..HEAT_LEVELS: a step's average wait against the slowest step's."""
    if value is None or not top:
        return 0
    return max(1, min(HEAT_LEVELS, ceil(value / top * HEAT_LEVELS)))


def _process_name(key: str) -> str:
    found = engine().repository.query().key(key).latest_only().first()
    if found is None:
        raise NotFoundError(f"no process definition with key {key!r}")
    return found.name or key


@bp.get("/")
@roles_required("manager")
def index():
    definitions = engine().repository.query().latest_only().order_by_key().list()
    return render_template(
        "measures/index.html", definitions=definitions, scoped=managed_departments(current_principal())
    )


@bp.get("/<key>")
@roles_required("manager")
def dashboard(key: str):
    filters, problems = read_filters(request.args)
    name = _process_name(key)
    found = figures_for(key, filters)
    versions = [d.version for d in engine().repository.query().key(key).list()]
    top = max((s.average_dwell_seconds or 0 for s in found.steps), default=0)
    steps = [(s, heat_level(s.average_dwell_seconds, top)) for s in found.steps]
    viewer = pages.viewer_available()
    drawn = viewer and process_diagram(*_definition(key, filters.version)).filename is not None
    heat = [
        {"id": s.element_id, "level": level, "label": f"⌀ {duration(s.average_dwell_seconds)} · {s.entered}"}
        for s, level in steps
    ]
    return render_template(
        "measures/dashboard.html",
        key=key,
        name=name,
        filters=filters,
        problems=problems,
        m=found,
        versions=sorted(versions, reverse=True),
        steps=steps,
        charts=_charts(found),
        heat=heat,
        diagram_url=url_for(
            "measures.diagram", key=key, **({"version": filters.version} if filters.version else {})
        ),
        viewer=drawn,
        scoped=managed_departments(current_principal()) is not None,
        duration=duration,
        percent=percent,
        csv_url=url_for("measures.export", key=key, **filters.args()),
    )


def _definition(key: str, version: int | None) -> tuple[int, str]:
    repository = engine().repository
    found = repository.query().key(key).version(version).first() if version else repository.latest(key)
    if found is None:
        raise NotFoundError(f"no version {version} of process {key!r}")
    return found.id, key


def _charts(m: ProcessMeasures) -> dict[str, Any]:
    labels = [p.day.isoformat()[5:] if m.bucket == "day" else p.day.isoformat() for p in m.throughput]
    return {
        "throughput": line_chart(
            labels,
            [
                Series(_("Instances started"), [p.started for p in m.throughput]),
                Series(_("Instances finished"), [p.finished for p in m.throughput]),
            ],
            chart_id="chart-throughput",
            title=_("Started and finished per day")
            if m.bucket == "day"
            else _("Started and finished per week"),
            description=_(
                "%(started)s started and %(finished)s finished between %(first)s and %(last)s.",
                started=m.started,
                finished=m.finished,
                first=labels[0] if labels else "",
                last=labels[-1] if labels else "",
            ),
        ),
        "states": bar_chart(
            [(label_of("instance", state), count) for state, count in m.states.items()],
            chart_id="chart-states",
            title=_("Instances started in the range, by state"),
            description=", ".join(f"{label_of('instance', s)}: {c}" for s, c in m.states.items()),
        ),
        "dwell": bar_chart(
            [(s.name or s.element_id, s.average_dwell_seconds) for s in m.steps],
            chart_id="chart-dwell",
            title=_("Average time a task waits at each step"),
            description=", ".join(
                f"{s.name or s.element_id}: {duration(s.average_dwell_seconds)}" for s in m.steps
            ),
            value_label=duration,
            color="#d97706",
        ),
    }


@bp.get("/<key>/export.csv")
@roles_required("manager")
def export(key: str):
    """The dashboard's figures and per-step table as CSV: UTF-8 with a BOM, so Excel reads Chinese."""
    filters, _problems = read_filters(request.args)
    name = _process_name(key)
    m = figures_for(key, filters)
    out = io.StringIO()
    writer = csv.writer(out)
    rows: list[list[Any]] = [
        [_("Process"), name],
        [_("Process key"), key],
        [_("Version"), m.version if m.version is not None else _("All versions")],
        [_("From"), filters.first.isoformat()],
        [_("To"), filters.last.isoformat()],
        [_("Time zone"), m.time_zone],
        [],
        [_("Figure"), _("Value")],
        [_("Instances started"), m.started],
        *([label_of("instance", state), count] for state, count in m.states.items()),
        [_("Instances finished"), m.finished],
        [_("Completed in the range"), m.cycle_time.count],
        [_("Cycle time, average (hours)"), _hours(m.cycle_time.average_seconds)],
        [_("Cycle time, median (hours)"), _hours(m.cycle_time.p50_seconds)],
        [_("Cycle time, 90th percentile (hours)"), _hours(m.cycle_time.p90_seconds)],
        [_("Tasks with a due date"), m.sla.with_due],
        [_("Tasks overdue"), m.sla.breached],
        [_("Overdue rate (%)"), "" if m.sla.rate is None else round(m.sla.rate * 100, 2)],
        [],
        [_("Day") if m.bucket == "day" else _("Week from"), _("Instances started"), _("Instances finished")],
        *([p.day.isoformat(), p.started, p.finished] for p in m.throughput),
        [],
        [
            _("Step"),
            _("Element id"),
            _("Entered"),
            _("Completed"),
            _("Open"),
            _("Cancelled"),
            _("Average wait (hours)"),
            _("With a due date"),
            _("Overdue"),
        ],
        *(
            [
                s.name or s.element_id,
                s.element_id,
                s.entered,
                s.completed,
                s.open,
                s.cancelled,
                _hours(s.average_dwell_seconds),
                s.with_due,
                s.breached,
            ]
            for s in m.steps
        ),
    ]
    writer.writerows([[_cell(v) for v in row] for row in rows])
    body = ("\ufeff" + out.getvalue()).encode("utf-8")
    filename = f"measures-{key}-{filters.first.isoformat()}-{filters.last.isoformat()}.csv"
    response: Response = send_file(
        io.BytesIO(body), mimetype="text/csv", as_attachment=True, download_name=filename, max_age=0
    )
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.2f}"


def _cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula (names come from BPMN)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@bp.get("/<key>/diagram.bpmn")
@roles_required("manager")
def diagram(key: str):
    """The BPMN XML of the process (the heat map's diagram)."""
    version = request.args.get("version", type=int)
    found = process_diagram(*_definition(key, version))
    if found.filename is None:
        raise NotFoundError(f"no diagram for process {key}")
    response = Response(found.content, mimetype="application/xml")
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
