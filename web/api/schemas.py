"""Marshmallow schemas of the REST API: what each resource looks like, in and out.

Output schemas dump the engine's plain dataclasses; input schemas load request bodies and turn
malformed input into 422 answers with field errors (see web/errors.py).
"""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate


class ProblemSchema(Schema):
    file = fields.String()
    line = fields.Integer(allow_none=True)
    element_id = fields.String(allow_none=True)
    message = fields.String()
    severity = fields.String()


class DefinitionSchema(Schema):
    id = fields.Integer()
    key = fields.String()
    version = fields.Integer()
    name = fields.String(allow_none=True)
    content_hash = fields.String()
    deployment_id = fields.Integer()
    deployed_by = fields.String()
    deployed_at = fields.AwareDateTime()


class DefinitionDetailSchema(DefinitionSchema):
    versions = fields.List(fields.Nested(DefinitionSchema))
    running_instances = fields.Dict(keys=fields.String(), values=fields.Integer())
    files = fields.List(fields.String())


class DeploymentSchema(Schema):
    deployment_id = fields.Integer(allow_none=True)
    definitions = fields.List(fields.Nested(DefinitionSchema))
    new_versions = fields.List(fields.String())
    unchanged = fields.List(fields.String())
    warnings = fields.List(fields.Nested(ProblemSchema))


class TaskSchema(Schema):
    id = fields.String()
    instance_id = fields.String()
    definition_key = fields.String()
    element_id = fields.String()
    name = fields.String(allow_none=True)
    lane = fields.String(allow_none=True)
    assignee = fields.String(allow_none=True)
    candidate_users = fields.List(fields.String())
    candidate_groups = fields.List(fields.String())
    due_at = fields.AwareDateTime(allow_none=True)
    sla_state = fields.String(allow_none=True)
    priority = fields.Integer()
    form_key = fields.String(allow_none=True)
    state = fields.String()
    created_at = fields.AwareDateTime()
    claimed_by = fields.String(allow_none=True)
    completed_by = fields.String(allow_none=True)
    completed_at = fields.AwareDateTime(allow_none=True)
    version = fields.Integer()


class TaskDetailSchema(TaskSchema):
    form = fields.Dict(allow_none=True)  # the JSON Schema the completion is validated against


class AuditEventSchema(Schema):
    id = fields.Integer()
    at = fields.AwareDateTime()
    actor = fields.String(allow_none=True)
    action = fields.String()
    task_id = fields.String(allow_none=True)
    element_id = fields.String(allow_none=True)
    details = fields.Dict(allow_none=True)


class InstanceSchema(Schema):
    id = fields.String()
    definition_key = fields.String()
    definition_version = fields.Integer()
    business_key = fields.String(allow_none=True)
    state = fields.String()
    started_by = fields.String(allow_none=True)
    started_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    ended_at = fields.AwareDateTime(allow_none=True)
    next_timer_due = fields.AwareDateTime(allow_none=True)
    error_element = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    sla_paused_at = fields.AwareDateTime(allow_none=True)
    version = fields.Integer()


class InstanceDetailSchema(InstanceSchema):
    variables = fields.Dict()
    active_tasks = fields.List(fields.Nested(TaskSchema))
    history = fields.List(fields.Nested(AuditEventSchema))


class _Input(Schema):
    class Meta:
        unknown = EXCLUDE


class StartInstanceInput(_Input):
    definition_key = fields.String(required=True, validate=validate.Length(min=1, max=255))
    business_key = fields.String(load_default=None, validate=validate.Length(max=255))
    variables = fields.Dict(keys=fields.String(), load_default=dict)


class CompleteTaskInput(_Input):
    data = fields.Dict(keys=fields.String(), load_default=dict)


class TransferInput(_Input):
    to_user = fields.String(required=True, validate=validate.Length(min=1, max=150))
    comment = fields.String(load_default=None, validate=validate.Length(max=2000))


class CommentInput(_Input):
    body = fields.String(required=True, validate=validate.Length(min=1, max=5000))


class ReasonInput(_Input):
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))


class MessageInput(_Input):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    correlation_keys = fields.Dict(keys=fields.String(), load_default=None)
    variables = fields.Dict(keys=fields.String(), load_default=dict)


class TokenInput(_Input):
    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=100))


class CommentSchema(Schema):
    id = fields.Integer()
    instance_id = fields.String()
    task_id = fields.String(allow_none=True)
    author = fields.String()
    body = fields.String()
    created_at = fields.AwareDateTime()
