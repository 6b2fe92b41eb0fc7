"""GET /api/v1/openapi.json: the API described as OpenAPI 3, built from the marshmallow schemas."""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify

from web import vendor
from web.api import instances, schemas
from web.api import records as record_api
from web.api.measures import MeasuresSchema

bp = Blueprint("openapi", __name__)

ERROR = {"description": "error envelope {error: {code, message, details}}"}
_LIST = {"page": "page number from 0", "size": "items per page (max 200)"}

# path -> method -> (summary, request schema or None, response schema or None, query parameters, status codes)
OPERATIONS = {
    "/auth/token": {
        "post": ("Exchange username and password for a bearer token", "TokenInput", None, {}, [201, 401, 422])
    },
    "/auth/me": {"get": ("Who am I", None, None, {}, [200, 401])},
    "/process-definitions": {
        "get": ("Latest version of every process", None, "Definition", _LIST, [200, 401]),
        "post": (
            "Deploy a bundle (multipart 'files'): 201 new versions, 200 unchanged, 422 validation report",
            None,
            "Deployment",
            {},
            [200, 201, 403, 422],
        ),
    },
    "/process-definitions/{key}": {
        "get": ("A process: latest version, versions, files", None, "DefinitionDetail", {}, [200, 404])
    },
    "/process-definitions/{key}/diff": {  # designers: elements added, removed, changed
        "get": ("Difference between two versions", None, None, {"from": "version", "to": "version"},
                [200, 403, 404, 422])
    },
    "/process-definitions/{key}/versions/{version}/xml": {
        "get": ("The BPMN XML of a version (designers)", None, None, {}, [200, 403, 404])
    },
    "/process-instances": {
        "post": (
            "Start an instance of the latest version",
            "StartInstanceInput",
            "Instance",
            {},
            [201, 404, 422],
        ),
        "get": (
            "Instances the caller may see",
            None,
            "Instance",
            {**_LIST, **instances.LIST_PARAMETERS},
            [200, 403, 422],
        ),
    },
    "/process-instances/{id}": {
        "get": ("State, variables, active tasks and history", None, "InstanceDetail", {}, [200, 404])
    },
    **{
        f"/process-instances/{{id}}/{action}": {
            "post": (f"{action} the instance", "ReasonInput", "Instance", {}, [200, 403, 404, 409])
        }
        for action in ("cancel", "suspend", "resume", "pause-sla", "resume-sla")
    },
    "/process-instances/{id}/withdraw": {
        "post": (
            "The starter withdraws a request nobody else has acted on (409 once someone has)",
            "ReasonInput",
            "Instance",
            {},
            [200, 403, 404, 409],
        )
    },
    "/messages": {
        "post": (
            "Deliver a message (404 no receiver, 409 several)",
            "MessageInput",
            None,
            {},
            [200, 201, 404, 409, 422],
        )
    },
    "/signals": {"post": ("Broadcast a signal", "MessageInput", None, {}, [200])},
    "/tasks": {
        "get": (
            "The caller's tasks",
            None,
            "Task",
            {
                **_LIST,
                "scope": "mine|group|all",
                "state": "open|completed|cancelled",
                "sla": "on_track|warning|breached",
                "sort": "due|priority|created|completed",
                "definition_key": "",
                "instance_id": "",
                "started_by": "",
                "min_priority": "",
                "count": "true: also answer total (counts every match; pages answer has_more without it)",
            },
            [200],
        )
    },
    "/tasks/{id}": {"get": ("A task with its form (JSON Schema)", None, "TaskDetail", {}, [200, 404])},
    "/tasks/{id}/claim": {"post": ("Claim", None, "Task", {}, [200, 403, 404, 409])},
    "/tasks/{id}/unclaim": {"post": ("Give back", None, "Task", {}, [200, 403, 404, 409])},
    "/tasks/{id}/complete": {
        "post": (
            "Complete with form data (422 with field errors)",
            "CompleteTaskInput",
            "Task",
            {},
            [200, 403, 404, 409, 422],
        )
    },
    "/tasks/{id}/transfer": {
        "post": ("Hand over to a colleague", "TransferInput", "Task", {}, [200, 403, 404, 409])
    },
    "/tasks/{id}/comments": {
        "get": ("Comments on the task", None, "Comment", {}, [200, 404]),
        "post": ("Comment on the task", "CommentInput", "Comment", {}, [201, 404, 422]),
    },
    "/measures/{key}": {
        "get": (
            "A process's figures (managers: their departments' instances)",
            None,
            "Measures",
            {
                "from": "first day, YYYY-MM-DD (company time zone)",
                "to": "last day, included",
                "version": "one version (default: all)",
                "bucket": "day|week",
            },
            [200, 403, 404, 422],
        )
    },
}

OPERATIONS.update(instances.OPERATIONS)
OPERATIONS.update(record_api.OPERATIONS)
OPERATIONS.update(vendor.OPERATIONS)


def build_spec() -> dict:
    spec = APISpec(
        title="Baton API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Workflows, tasks and instances of Baton. Authenticate with "
            "'Authorization: Bearer <token>' from POST /auth/token."
        },
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name in (
        "Problem",
        "Definition",
        "DefinitionDetail",
        "Deployment",
        "Task",
        "TaskDetail",
        "AuditEvent",
        "Instance",
        "InstanceDetail",
        "Comment",
    ):
        spec.components.schema(name, schema=getattr(schemas, f"{name}Schema"))
    for name in (
        "StartInstanceInput",
        "CompleteTaskInput",
        "TransferInput",
        "CommentInput",
        "ReasonInput",
        "MessageInput",
        "TokenInput",
    ):
        spec.components.schema(name, schema=getattr(schemas, name))
    spec.components.schema("Measures", schema=MeasuresSchema)
    for name, schema in instances.SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for name, schema in record_api.SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for name, schema in vendor.SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for path, methods in OPERATIONS.items():
        operations = {}
        for method, (summary, body, result, params, codes) in methods.items():
            operation: dict = {"summary": summary, "security": [{"bearer": []}], "responses": {}}
            parameters = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in ("id", "key", "version")
                if "{" + p + "}" in path
            ]
            parameters += [
                {"name": n, "in": "query", "description": d, "schema": {"type": "string"}}
                for n, d in params.items()
            ]
            if parameters:
                operation["parameters"] = parameters
            if body:
                operation["requestBody"] = {"content": {"application/json": {"schema": body}}}
            for code in codes:
                ok = code < 300
                content = {"application/json": {"schema": result}} if ok and result else None
                response = {"description": "OK" if ok else ERROR["description"]}
                if content:
                    response["content"] = content
                operation["responses"][str(code)] = response
            operations[method] = operation
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    document["servers"] = [{"url": "/api/v1"}]
    return document


@bp.get("/api/v1/openapi.json")
def openapi():
    return jsonify(build_spec())
