"""/api/v1/process-definitions: list, read, deploy (multipart bundle), download files; for designers the
process XML of a version and the difference between two versions."""

from __future__ import annotations

from dataclasses import asdict
from urllib.parse import quote

from flask import Blueprint, Response, request

from engine.errors import NotFoundError, ValidationError
from web.api.common import paged
from web.api.schemas import DefinitionDetailSchema, DefinitionSchema, DeploymentSchema
from web.security import current_principal, engine, login_required, roles_required

bp = Blueprint("api_definitions", __name__, url_prefix="/api/v1/process-definitions")


@bp.get("")
@login_required
def list_definitions():
    """Latest version of every process (everyone may see what they can start)."""
    query = engine().repository.query().latest_only().order_by_key()
    return paged(query, DefinitionSchema())


@bp.post("")
@roles_required("designer")
def deploy():
    """Deploy a bundle sent as multipart files: 201 with new versions, 200 if nothing changed, 422 with
    the validation report (file, line, element id, message) otherwise."""
    uploads = request.files.getlist("files") or list(request.files.values())
    if not uploads:
        raise ValidationError("send the bundle's BPMN, DMN and form files as multipart field 'files'")
    files: dict[str, bytes] = {}
    for upload in uploads:
        name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        if not name:
            raise ValidationError("every uploaded file needs a file name")
        files[name] = upload.read()
    result = engine().repository.deploy(
        files, deployed_by=current_principal().username, name=request.form.get("name")
    )
    return DeploymentSchema().dump(result), 201 if result.new_versions else 200


@bp.get("/<key>")
@login_required
def get_definition(key: str):
    repository = engine().repository
    latest = repository.latest(key)
    body = DefinitionDetailSchema().dump(latest)
    body["versions"] = DefinitionSchema().dump(repository.query().key(key).order_by_key().list(), many=True)
    body["running_instances"] = {str(v): n for v, n in repository.instance_counts(key).items()}
    body["files"] = sorted(repository.files(latest.id))
    return body


@bp.get("/<key>/versions/<int:version>/files/<path:filename>")
@login_required
def download(key: str, version: int, filename: str):
    repository = engine().repository
    definition = repository.query().key(key).version(version).first()
    if definition is None:
        raise NotFoundError(f"{key} has no version {version}")
    files = repository.files(definition.id)
    if filename not in files:
        raise NotFoundError(f"{key} v{version} has no file {filename!r}")
    mimetype = "application/json" if filename.endswith(".json") else "application/xml"
    return Response(
        files[filename],
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _version_param(name: str) -> int:
    raw = (request.args.get(name) or "").strip()
    if not raw.isdigit():
        raise ValidationError(f"query parameter {name!r} must be a version number")
    return int(raw)


@bp.get("/<key>/diff")
@roles_required("designer")
def diff(key: str):
    """Elements added, removed and changed between ``?from=`` and ``?to=`` versions (404: unknown version)."""
    result = engine().repository.diff(key, _version_param("from"), _version_param("to"))
    body = asdict(result)
    for element in (*body["added"], *body["removed"]):
        element["properties"] = dict(element["properties"])
    body["empty"] = result.empty
    return body


@bp.get("/<key>/versions/<int:version>/xml")
@roles_required("designer")
def process_xml(key: str, version: int):
    """The BPMN file that defines a version of the process, as deployed."""
    filename, content = engine().repository.process_file(key, version)
    return Response(
        content,
        mimetype="application/xml",
        headers={
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
        },
    )
