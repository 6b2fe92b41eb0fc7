"""/api/v1/measures/{key}: the figures of one process's dashboard, as JSON (managers, administrators).

Query parameters as on the page: ``from`` and ``to`` (days, YYYY-MM-DD, in the company's time zone,
both included; default the last 30 days), ``version`` and ``bucket`` (day | week). A bad value is a
422 here, where the page falls back to the default and says so.
"""

from __future__ import annotations

from flask import Blueprint, request
from marshmallow import Schema, fields

from engine.errors import ValidationError
from web.measures import figures_for, read_filters
from web.security import roles_required

bp = Blueprint("api_measures", __name__, url_prefix="/api/v1/measures")


class CycleTimeSchema(Schema):
    count = fields.Integer()
    average_seconds = fields.Float(allow_none=True)
    p50_seconds = fields.Float(allow_none=True)
    p90_seconds = fields.Float(allow_none=True)


class ThroughputPointSchema(Schema):
    day = fields.Date(metadata={"description": "the day, or the Monday of the week"})
    started = fields.Integer()
    finished = fields.Integer()


class SlaFiguresSchema(Schema):
    with_due = fields.Integer(metadata={"description": "human tasks with a due date"})
    breached = fields.Integer(metadata={"description": "completed after their due date, or open past it"})
    rate = fields.Float(allow_none=True)


class StepMeasureSchema(Schema):
    element_id = fields.String()
    name = fields.String(allow_none=True)
    entered = fields.Integer()
    completed = fields.Integer()
    open = fields.Integer()
    cancelled = fields.Integer()
    average_dwell_seconds = fields.Float(allow_none=True)
    with_due = fields.Integer()
    breached = fields.Integer()


class MeasuresSchema(Schema):
    key = fields.String()
    version = fields.Integer(allow_none=True, metadata={"description": "null: every version"})
    start = fields.AwareDateTime()
    end = fields.AwareDateTime(metadata={"description": "exclusive"})
    bucket = fields.String()
    time_zone = fields.String()
    states = fields.Dict(keys=fields.String(), values=fields.Integer())
    started = fields.Integer()
    finished = fields.Integer()
    cycle_time = fields.Nested(CycleTimeSchema)
    throughput = fields.List(fields.Nested(ThroughputPointSchema))
    sla = fields.Nested(SlaFiguresSchema)
    steps = fields.List(fields.Nested(StepMeasureSchema))


@bp.get("/<key>")
@roles_required("manager")
def process_measures(key: str):
    filters, problems = read_filters(request.args)
    if problems:
        raise ValidationError("the filters are invalid", problems=[{"message": p} for p in problems])
    return MeasuresSchema().dump(figures_for(key, filters))
