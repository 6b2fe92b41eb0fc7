"""The process designer's pages: definitions and their versions, upload, differences, modeler, form preview.

- List: every process key with its versions, who deployed each and when, running instances per version.
- Upload: a bundle (BPMN + DMN + form JSON) is validated and deployed; a refused one shows the report
  (file, line, element, message) and the faulty diagram with its elements marked (bpmn-js viewer,
  optional), with a button that opens the file in the modeler to fix it.
- Version: the files (download), the process XML, the diagram, the forms of its human tasks (preview
  exactly as the inbox renders them) and a comparison with another version (engine.definition_diff).
- Modeler: bpmn-js Modeler plus a side panel of our own (web/static/designer-modeler.js); "save as new
  version" posts the XML and the bundle's other files here and deploys them. Without the vendored
  bpmn-js files (``make install`` with npm) the page says so and points to the upload.
Only designers and administrators get here (``roles_required("designer")``); deployments are audited by
the repository service.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    get_flashed_messages,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _

from engine.bpmn import BPMN_NS, UnsafeXml, parse_xml
from engine.definition_diff import shape_ids, snapshot
from engine.errors import NotFoundError, ValidationError
from engine.forms import form_values
from engine.lint import BundleReport, Problem
from engine.repository import file_kind
from engine.results import DeploymentResult, ProcessDefinition
from web import pages
from web.pages import display_names
from web.security import current_principal, engine, roles_required

bp = Blueprint("designer", __name__, url_prefix="/designer")

MODELER_JS = "vendor/bpmn-modeler.production.min.js"
CAMUNDA_MODDLE = "vendor/camunda-moddle.json"
NEW_PROCESS = Path(__file__).with_name("templates") / "designer" / "new_process.bpmn"  # the modeler's start


def _static(name: str) -> Path:
    return Path(current_app.static_folder or "", name)


def _modeler_available() -> bool:
    return _static(MODELER_JS).is_file() and _static(CAMUNDA_MODDLE).is_file()


def _field_labels() -> dict[str, str]:
    """What the comparison calls each compared property (engine.definition_diff.FIELDS)."""
    labels = {
        "type": _("Type"),
        "name": _("Name"),
        "lane": _("Lane"),
        "container": _("Inside"),
        "trigger": _("Trigger"),
        "timer": _("Timer"),
        "interrupting": _("Interrupting"),
        "attached_to": _("Attached to"),
        "form": _("Form"),
        "form_fields": _("Form fields"),
        "assignee": _("Assignee"),
        "candidate_groups": _("Candidate groups"),
        "candidate_users": _("Candidate users"),
        "due_date": _("Due date"),
        "priority": _("Priority"),
        "source": _("From"),
        "target": _("To"),
        "condition": _("Condition"),
        "default_flow": _("Default flow"),
        "script": _("Script"),
        "called_element": _("Calls process"),
        "decision": _("Decision"),
        "multi_instance": _("Multi-instance"),
        "process_name": _("Process name"),
    }
    return labels


# --------------------------------------------------------------------------------------------------
# List


@bp.get("")
@roles_required("designer")
def index():
    repository = engine().repository
    processes: dict[str, list[ProcessDefinition]] = {}
    for definition in repository.query().order_by_key().list(limit=10_000):
        processes.setdefault(definition.key, []).append(definition)
    counts = {key: repository.instance_counts(key) for key in processes}
    people = display_names(d.deployed_by for versions in processes.values() for d in versions)
    return render_template(
        "designer/index.html",
        processes=processes,
        counts=counts,
        people=people,
        messages=get_flashed_messages(with_categories=True),
        modeler=_modeler_available(),
    )


@bp.get("/processes/<key>")
@roles_required("designer")
def process(key: str):
    latest = engine().repository.latest(key)
    return redirect(url_for("designer.version", key=key, version=latest.version))


# --------------------------------------------------------------------------------------------------
# Upload


def _uploaded_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for upload in request.files.getlist("files"):
        name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        if name:
            files[name] = upload.read()
    return files


def _text(content: bytes) -> str | None:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _marked(problems: Iterable[Problem], shapes: Mapping[str, str], *, errors: bool) -> str:
    """The diagram ids the problems of one severity are drawn on, space-separated (for data-errors)."""
    return " ".join(
        sorted(
            {
                shapes[p.element_id]
                for p in problems
                if p.element_id in shapes and (p.severity == "error") == errors
            }
        )
    )


def _report_files(files: Mapping[str, bytes], report: BundleReport) -> list[dict[str, Any]]:
    """The report grouped by file, in upload order, with what the page needs to draw each BPMN file."""
    by_file: dict[str, list[Problem]] = {}
    for problem in report.problems:
        by_file.setdefault(problem.file, []).append(problem)
    entries = []
    for index, name in enumerate([*files, *(n for n in by_file if n not in files)]):
        problems = sorted(by_file.get(name, []), key=lambda p: (p.severity != "error", p.line or 0))
        if not problems:
            continue
        content = files.get(name)
        text = _text(content) if content is not None and file_kind(name) == "bpmn" else None
        shapes = shape_ids(content, (p.element_id for p in problems)) if text is not None else {}
        entries.append(
            {
                "index": index,
                "name": name,
                "problems": problems,
                "xml": text,
                "errors": _marked(problems, shapes, errors=True),
                "warnings": _marked(problems, shapes, errors=False),
                "companions": _carried([(other, data) for other, data in files.items() if other != name]),
            }
        )
    return entries


def _deployed_message(result: DeploymentResult) -> list[str]:
    """One flash line per process: the version it was deployed as, or the version it is identical to."""
    lines = []
    for definition in result.definitions:
        if definition.key in result.new_versions:
            lines.append(
                _(
                    "%(process)s deployed as version %(version)s.",
                    process=definition.name or definition.key,
                    version=definition.version,
                )
            )
        else:
            lines.append(
                _(
                    "%(process)s is identical to version %(version)s: nothing new was deployed.",
                    process=definition.name or definition.key,
                    version=definition.version,
                )
            )
    for warning in result.warnings:
        lines.append(_("Warning: %(file)s: %(message)s", file=warning.file, message=warning.message))
    return lines


@bp.route("/upload", methods=["GET", "POST"])
@roles_required("designer")
def upload():
    if request.method == "GET":
        return render_template("designer/upload.html", report=None, entries=[], files=[])
    files = _uploaded_files()
    if not files:
        message = _("Choose the bundle's files: BPMN, and the DMN and form JSON files it uses.")
        return render_template("designer/upload.html", report=None, entries=[], files=[], error=message), 422
    repository = engine().repository
    report = repository.validate(files)
    if not report.ok or not report.processes or request.form.get("action") == "validate":
        status = 200 if report.ok and report.processes else 422
        return render_template(
            "designer/upload.html",
            report=report,
            entries=_report_files(files, report),
            files=list(files),
            viewer=pages.viewer_available(),
            modeler=_modeler_available(),
            no_process=report.ok and not report.processes,
        ), status
    result = repository.deploy(
        files, deployed_by=current_principal().username, name=request.form.get("name") or None
    )
    for line in _deployed_message(result):
        flash(line, "deployed")
    first = result.definitions[0]
    return redirect(url_for("designer.version", key=first.key, version=first.version))


# --------------------------------------------------------------------------------------------------
# A version: files, diagram, forms, comparison


@bp.get("/processes/<key>/versions/<int:version>")
@roles_required("designer")
def version(key: str, version: int):
    repository = engine().repository
    definition = repository.version(key, version)
    versions = repository.query().key(key).order_by_key().list(limit=10_000)
    files = repository.files(definition.id)
    process = snapshot(files, key)
    process_file = process.file if process is not None else None
    return render_template(
        "designer/version.html",
        definition=definition,
        versions=versions,
        files=sorted(files),
        kinds={name: file_kind(name) for name in files},
        process_file=process_file,
        xml=(_text(files[process_file]) or "") if process_file else "",
        human_tasks=process.human_tasks if process is not None else (),
        running=repository.instance_counts(key).get(version, 0),
        people=display_names([definition.deployed_by]),
        viewer=pages.viewer_available(),
        modeler=_modeler_available(),
        messages=get_flashed_messages(with_categories=True),
    )


def _version_arg(name: str) -> int:
    raw = (request.args.get(name) or "").strip()
    if not raw.isdigit():
        raise ValidationError(_("Choose two versions to compare."))
    return int(raw)


@bp.get("/processes/<key>/diff")
@roles_required("designer")
def diff(key: str):
    repository = engine().repository
    result = repository.diff(key, _version_arg("from"), _version_arg("to"))
    return render_template(
        "designer/diff.html",
        key=key,
        diff=result,
        name=repository.latest(key).name or key,
        versions=repository.query().key(key).order_by_key().list(limit=10_000),
        labels=_field_labels(),
    )


@bp.get("/processes/<key>/versions/<int:version>/forms/<element_id>")
@roles_required("designer")
def form_preview(key: str, version: int, element_id: str):
    """A human task's form exactly as the inbox renders it, with every control disabled."""
    repository = engine().repository
    definition = repository.version(key, version)
    task = repository.snapshot(key, version).element(element_id)
    if task is None or task.type not in ("userTask", "manualTask"):
        raise NotFoundError(f"{key} v{version} has no human task {element_id!r}")
    problem = None
    try:
        form = repository.form(definition.id, element_id)
    except (NotFoundError, ValidationError) as exc:
        form, problem = None, exc.message
    return render_template(
        "designer/form_preview.html",
        definition=definition,
        task=task,
        form=form,
        values=form_values(form, data={}) if form is not None else {},
        problem=problem,
        users=[(u.username, u.name) for u in engine().identity.users().active().list(limit=500)],
    )


# --------------------------------------------------------------------------------------------------
# Modeler


def _bundle_processes(files: Iterable[tuple[str, bytes]]) -> list[dict[str, str]]:
    """The executable processes of the bundle's other BPMN files: what a call activity may call (a
    definition loads from its own bundle only); the page adds the processes of the modelled file."""
    found = []
    for name, content in files:
        if file_kind(name) != "bpmn":
            continue
        try:
            root = parse_xml(content)
        except UnsafeXml:
            continue
        for process in root.iterfind(f"{{{BPMN_NS}}}process"):
            if process.get("id") and process.get("isExecutable") != "false":
                found.append({"id": process.get("id"), "name": process.get("name") or "", "file": name})
    return found


def _modeler_page(
    *,
    xml: str,
    filename: str,
    companions: list[tuple[str, bytes]],
    title: str,
    base: ProcessDefinition | None = None,
    problems: list[dict[str, Any]] | None = None,
):
    camunda = {}
    if _modeler_available():
        camunda = json.loads(_static(CAMUNDA_MODDLE).read_text(encoding="utf-8"))
    texts = {
        "process": _("Process"),
        "processKey": _("Process key"),
        "processKeyHint": _("Letters, digits, _ . and -; a new key starts a new process."),
        "name": _("Name"),
        "id": _("Id"),
        "form": _("Form (JSON file of the bundle)"),
        "assignee": _("Assignee"),
        "assigneeHint": _("A username, or an expression such as ${initiator}."),
        "candidateGroups": _("Candidate groups (comma-separated)"),
        "candidateUsers": _("Candidate users (comma-separated)"),
        "dueDate": _("Due date (e.g. P2D)"),
        "timer": _("Timer"),
        "timerKind": _("Kind"),
        "timeDuration": _("Duration"),
        "timeDate": _("Date"),
        "timeCycle": _("Cycle"),
        "timerExpression": _("Expression"),
        "timerHint": _('A Python expression: quote literals, e.g. "PT2H", "P2D" or "R3/PT1H".'),
        "condition": _("Condition (Python expression)"),
        "script": _("Script (Python)"),
        "scriptHint": _(
            "Runs in a sandbox: no import, no names starting with _, no open() or eval(). "
            "Checked when you save."
        ),
        "calledElement": _("Called process (process key)"),
        "calledElementHint": _(
            "A process of this bundle (this file or its other BPMN files): a process deployed in "
            "another bundle cannot be called."
        ),
        "calledUnknown": _(
            "%(process)s is not a process of this bundle: saving will be refused.", process="{process}"
        ),
        "nothing": _("Select an element to edit it."),
        "saving": _("Validating and deploying..."),
        "deployed": _("Deployed as version %(version)s.", version="{version}"),
        "unchanged": _("Identical to version %(version)s: nothing new was deployed.", version="{version}"),
        "refused": _("Not deployed: fix the marked elements."),
        "failed": _("Could not save: %(reason)s", reason="{reason}"),
        "openVersion": _("Open the version"),
        "importFailed": _("This file cannot be drawn: %(reason)s", reason="{reason}"),
        "line": _("line %(line)s", line="{line}"),
    }
    return render_template(
        "designer/modeler.html",
        modeler=_modeler_available(),
        xml=xml,
        filename=filename,
        companions=_carried(companions),
        bundle_processes=_bundle_processes(companions),
        title=title,
        base=base,
        camunda=camunda,
        texts=texts,
        deploy_url=url_for("designer.modeler_deploy"),
        problems=problems or [],
    )


@bp.get("/modeler")
@roles_required("designer")
def modeler_new():
    xml = NEW_PROCESS.read_text(encoding="utf-8")
    return _modeler_page(xml=xml, filename="", companions=[], title=_("New process"))


@bp.get("/processes/<key>/versions/<int:version>/modeler")
@roles_required("designer")
def modeler_version(key: str, version: int):
    repository = engine().repository
    definition = repository.version(key, version)
    files = repository.files(definition.id)
    filename, content = repository.process_file(key, version)
    companions = [(n, c) for n, c in sorted(files.items()) if n != filename]
    return _modeler_page(
        xml=_text(content) or "",
        filename=filename,
        companions=companions,
        title=_("%(process)s, from version %(version)s", process=definition.name or key, version=version),
        base=definition,
    )


def _carried(files: Iterable[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """The bundle's other files as the modeler page carries them: base64 (byte-exact, unlike textareas,
    whose line breaks browsers rewrite), so an unchanged form stays unchanged in the next version."""
    return [(name, base64.b64encode(content).decode("ascii")) for name, content in files]


def _posted_companions() -> list[tuple[str, bytes]]:
    names = request.form.getlist("companion_name")
    contents = request.form.getlist("companion")
    try:
        return [(n, base64.b64decode(c, validate=True)) for n, c in zip(names, contents, strict=False) if n]
    except (binascii.Error, ValueError):
        raise ValidationError("the bundle's other files must be sent base64-encoded") from None


@dataclass(frozen=True)
class _Model:
    """A bundle posted from the modeler (or a refused upload): the modelled BPMN and its other files."""

    filename: str
    files: dict[str, bytes]
    report: BundleReport

    @property
    def refused(self) -> bool:
        return not self.report.ok or not self.report.processes

    def problems(self) -> list[dict[str, Any]]:
        """The report as JSON, each problem of the modelled file with the ``shape_id`` to mark."""
        own = [p for p in self.report.problems if p.file == self.filename]
        shapes = shape_ids(self.files[self.filename], (p.element_id for p in own))
        return [
            {**asdict(p), "shape_id": shapes.get(p.element_id or "") if p.file == self.filename else None}
            for p in self.report.problems
        ]


def _posted_model() -> _Model:
    xml = request.form.get("xml", "").encode("utf-8")
    filename = _model_filename(xml, request.form.get("filename", ""))
    files = {n: c for n, c in _posted_companions() if n != filename}
    files[filename] = xml
    return _Model(filename, files, engine().repository.validate(files))


@bp.post("/modeler")
@roles_required("designer")
def modeler_open():
    """Open posted XML (a refused upload) in the modeler with the other files of its bundle, its
    problems listed and marked."""
    model = _posted_model()
    return _modeler_page(
        xml=request.form.get("xml", ""),
        filename=model.filename,
        companions=_posted_companions(),
        title=_("Fix %(file)s", file=model.filename),
        problems=model.problems(),
    )


def _model_filename(xml: bytes, requested: str) -> str:
    """The file name the modelled BPMN is kept under: the one it was opened from, else its process id."""
    name = requested.replace("\\", "/").rsplit("/", 1)[-1]
    if name and file_kind(name) == "bpmn":
        return name
    try:
        root = parse_xml(xml)
    except UnsafeXml:
        return "process.bpmn"
    process = next((p for p in root.iterfind(f"{{{BPMN_NS}}}process") if p.get("id")), None)
    return f"{process.get('id')}.bpmn" if process is not None else "process.bpmn"


@bp.post("/modeler/deploy")
@roles_required("designer")
def modeler_deploy():
    """Save as a new version: validate and deploy the modelled XML with the bundle's other files.

    Answers JSON: 201 deployed, 200 identical to the latest version, 422 with the problems (each with
    the ``shape_id`` the modeler marks).
    """
    model = _posted_model()
    if model.refused:
        message = (
            _("Not deployed: fix the marked elements.")
            if model.report.problems
            else _("Not deployed: the process is not executable.")
        )
        return jsonify(
            deployed=False, filename=model.filename, message=message, problems=model.problems()
        ), 422
    result = engine().repository.deploy(model.files, deployed_by=current_principal().username)
    modelled = {p.id for p in model.report.processes if p.file == model.filename}
    definition = next((d for d in result.definitions if d.key in modelled), result.definitions[0])
    return jsonify(
        deployed=bool(result.new_versions),
        filename=model.filename,
        key=definition.key,
        version=definition.version,
        message=" ".join(_deployed_message(result)),
        url=url_for("designer.version", key=definition.key, version=definition.version),
    ), (201 if result.new_versions else 200)
