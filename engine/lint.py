"""Upload-time validation of a deployment bundle (BPMN, DMN and JSON-Schema form files).

SpiffWorkflow accepts a lot silently and fails later, at run time, in front of a user: an unquoted
``PT2S`` timer, a ``<process>`` without id, an unsupported element off the reachable path, a form file
that was never uploaded. ``check_bundle`` finds these before deployment and reports every problem with
file, line and element id, so the web layer can answer 422 instead of an instance failing next week.

Severity policy: errors block deployment, warnings do not. Decisions worth knowing:

* ``isExecutable="false"`` is a *warning* (pools of external participants are commonly drawn that
  way); it becomes an *error* when the bundle has no executable process at all or when a call activity
  calls the non-executable process.
* A Camunda ``formKey`` must name one of the bundle's ``.json`` forms, unless it is a Camunda web-app
  reference (``embedded:``/``camunda-forms:``/``app:``, a warning: Baton cannot render it) or the task
  carries ``camunda:formData`` fields (then the key only names the generated form).
* ``scriptFormat`` other than Python is a warning: SpiffWorkflow runs every script as Python anyway,
  and a script that does not compile as Python is an error.
* Due date and priority follow ``engine.people`` (literals or ``${variable}``, not Python): one it
  cannot use is a warning (the task opens without a due date / with the default priority).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonschema
from lxml import etree
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.dmn.parser.BpmnDmnParser import SCHEMAS as DMN_SCHEMAS
from SpiffWorkflow.spiff.parser.process import VALIDATOR
from SpiffWorkflow.spiff.parser.task_spec import SpiffTaskParser

from engine.bpmn import (
    BPMN_NS,
    CAMUNDA_NS,
    DEFAULT_MAX_FILE_BYTES,
    SERIALIZER_CONFIG,
    SPIFF_NS,
    BatonBusinessRuleTaskParser,
    BatonParser,
    UnsafeXml,
    _normalize_human_task,
    collect_subprocess_specs,
    is_external_form_key,
    parse_xml,
    resolve_form_file,
)
from engine.errors import ValidationError

__all__ = [
    "BundleAnalysis",
    "BundleInvalid",
    "BundleReport",
    "Problem",
    "ProcessInfo",
    "analyse_bundle",
    "check_bundle",
]


@dataclass(frozen=True)
class Problem:
    """One finding. ``line`` is 1-based in ``file``; ``element_id`` is the BPMN/DMN id at fault."""

    file: str
    line: int | None
    element_id: str | None
    message: str
    severity: str = "error"  # "error" blocks deployment, "warning" does not


@dataclass(frozen=True)
class ProcessInfo:
    """An executable top-level ``<process>`` SpiffWorkflow parsed (with everything it calls).

    Listed even when other problems make the report not ok: ``load_workflow_spec`` can load it.
    """

    id: str
    name: str
    file: str


@dataclass(frozen=True)
class BundleReport:
    problems: tuple[Problem, ...]
    processes: tuple[ProcessInfo, ...]

    @property
    def ok(self) -> bool:
        """True when nothing blocks deployment (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity != "error")


class BundleInvalid(ValidationError):
    """A bundle that cannot be deployed or loaded; ``.problems`` says why (HTTP 422)."""

    def __init__(self, report: BundleReport | Iterable[Problem]) -> None:
        if isinstance(report, BundleReport):
            problems = report.problems
        else:
            problems = tuple(report)
            report = BundleReport(problems=problems, processes=())
        errors = [p for p in problems if p.severity == "error"] or list(problems)
        first = errors[0] if errors else None
        summary = f"{first.file}: {first.message}" if first else "invalid bundle"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"bundle refused: {summary}{more}", problems=problems)
        self.problems: tuple[Problem, ...] = tuple(problems)  # type: ignore[assignment]
        self.report = report


@dataclass
class BundleAnalysis:
    """The report plus the parser that produced it (``load_workflow_spec`` reuses its parsed specs)."""

    report: BundleReport
    parser: BatonParser | None = None


def check_bundle(
    files: Mapping[str, bytes],
    *,
    available_process_ids: Collection[str] = (),
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> BundleReport:
    """Validate a bundle: ``files`` maps file name to content. Never raises.

    ``.bpmn``/``.bpmn20.xml`` are BPMN, ``.dmn`` DMN, ``.json`` JSON-Schema forms; anything else is a
    problem. ``available_process_ids`` are processes deployed elsewhere that call activities may call.
    """
    return analyse_bundle(
        files, available_process_ids=available_process_ids, max_file_bytes=max_file_bytes
    ).report


def analyse_bundle(
    files: Mapping[str, bytes],
    *,
    available_process_ids: Collection[str] = (),
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> BundleAnalysis:
    """Like ``check_bundle`` but also returns the BatonParser holding the parsed bundle. Never raises."""
    try:
        return _Analyser(files, available_process_ids, max_file_bytes).run()
    except Exception as exc:  # the contract is "never raise": report instead of a 500
        problem = Problem("<bundle>", None, None, f"internal error while checking the bundle: {exc!r}")
        return BundleAnalysis(BundleReport((problem,), ()))


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

_B = "{" + BPMN_NS + "}"
_C = "{" + CAMUNDA_NS + "}"
_S = "{" + SPIFF_NS + "}"
_OMG = "{http://www.omg.org/spec/"
_MAX_XSD_PROBLEMS = 20
_MAX_FORM_NODES = 20_000  # JSON values in one form file; a large real form has a few thousand
_MAX_FORM_DEPTH = 64
_MAX_BUNDLE_FORM_NODES = 60_000
# Bounds on the work one upload can cause (SpiffWorkflow's parser: ~0.1 ms per element; JSON Schema
# meta-validation: ~70 µs per value). Real models have < 2,000 bpmn: elements (diagram shapes not counted).
_MAX_MODEL_ELEMENTS = 10_000
_MAX_BUNDLE_MODEL_ELEMENTS = 30_000
_MAX_MESSAGE = 400

# Direct children of a process/sub-process that are not flow nodes (so need no parser class).
_NON_FLOW_CHILDREN = frozenset(
    _B + t
    for t in (
        "documentation", "extensionElements", "auditing", "monitoring", "categoryValueRef", "laneSet",
        "sequenceFlow", "dataObject", "dataObjectReference", "dataStoreReference", "textAnnotation",
        "association", "group", "artifact", "property", "ioSpecification", "ioBinding", "resourceRole",
        "performer", "humanPerformer", "potentialOwner", "correlationSubscription", "supports",
        "incoming", "outgoing", "dataInputAssociation", "dataOutputAssociation",
        "standardLoopCharacteristics", "multiInstanceLoopCharacteristics", "loopCharacteristics",
        "completionCondition", "lane", "flowNodeRef",
    )
)
_CONTAINERS = frozenset(_B + t for t in ("process", "subProcess", "transaction", "adHocSubProcess"))
_UNSUPPORTED_EVENT_DEFINITIONS = {
    _B + "linkEventDefinition": "link events",
    _B + "compensateEventDefinition": "compensation events",
}
_HUMAN_TASKS = frozenset((_B + "userTask", _B + "manualTask"))
_PYTHON_SCRIPT_FORMATS = frozenset(("python", "python3", "py", "text/x-python", "text/python", "spiff"))

# An ISO 8601 literal written without quotes: SpiffWorkflow would evaluate it as Python.
_ISO_LITERAL = re.compile(
    r"^(R\d*/)?"
    r"(P(?=[\dT])[\dYMWDTHS.,]*[YMWDHS]|\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+)?(?:Z|[+-]\d{2}:?\d{2})?)"
    r"(/\S*)?$",
    re.IGNORECASE,
)
_DMN_BARE_IN = re.compile(r"^\s*(not\s+)?in\s*[\[(]")

_schema_lock = threading.Lock()
_dmn_schemas: dict[str, etree.XMLSchema | None] = {}


def _short(message: str) -> str:
    message = re.sub(r"<Element (\S+) at 0x[0-9a-fA-F]+>", r"\1", message)
    message = message.replace(_B, "bpmn:").replace(_C, "camunda:").replace(_S, "spiffworkflow:")
    message = re.sub(r"\{[^{}\s]*DMN[^{}\s]*\}", "dmn:", message)
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else str(tag)


def _file_kind(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith((".bpmn", ".bpmn20.xml")):
        return "bpmn"
    if lower.endswith(".dmn"):
        return "dmn"
    if lower.endswith(".json"):
        return "json"
    return None


def _unsafe_name(name: str) -> bool:
    """Names end up in storage and in form references: only plain relative paths."""
    if not name or name.startswith("/") or any(c in name for c in "\\\x00") or not name.isprintable():
        return True
    return any(part in ("", ".", "..") for part in name.split("/"))


def _is_ui_schema_name(name: str) -> bool:
    stem = re.sub(r"[^a-z]", "", name.lower().rsplit("/", 1)[-1])
    return stem.endswith(("uischemajson", "uijson"))


def _dmn_schema(namespace: str) -> etree.XMLSchema | None:
    """XSD for a DMN namespace, built once (SpiffWorkflow rebuilds it for every file)."""
    path = DMN_SCHEMAS.get(namespace)
    if path is None:
        return None
    with _schema_lock:
        if namespace not in _dmn_schemas:
            try:
                _dmn_schemas[namespace] = etree.XMLSchema(etree.parse(path))
            except (etree.LxmlError, OSError):
                # SpiffWorkflow 3.2.0 ships an unloadable DMN 1.2 XSD (DMNDI import): parse unvalidated.
                _dmn_schemas[namespace] = None
        return _dmn_schemas[namespace]


_SANDBOX = "is refused by the script sandbox:"


@functools.cache
def _load_script_validator() -> Callable[..., str | None] | None:
    """``engine.scripts.validate_script`` (the sandbox's own compiler): upload refuses what it would."""
    try:
        from engine.scripts import validate_script
    except ImportError:  # pragma: no cover - the sandbox module is part of Baton
        return None
    return validate_script


def _python_error(source: str, mode: str) -> tuple[int | None, str] | None:
    """(line within source, message) when ``source`` is not valid sandboxed Python for ``mode``.

    ``eval`` mode mirrors builtin ``eval``, which is what SpiffWorkflow calls: it strips leading
    spaces and tabs (but not newlines). Plain syntax errors come from ``ast`` (precise line); then the
    sandbox (engine.scripts) refuses what it would refuse at run time (imports, ``_`` names...).
    """
    if mode == "eval":
        source = source.lstrip(" \t")
    try:
        ast.parse(source, mode=mode)
    except SyntaxError as exc:
        return (exc.lineno if isinstance(exc.lineno, int) else None, exc.msg or "invalid syntax")
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return None, str(exc) or type(exc).__name__
    validate = _load_script_validator()
    if validate is None:
        return None
    try:
        message = validate(source, mode=mode)
    except Exception as exc:  # the sandbox's compiler failing is still a refusal, never a crash
        message = f"{type(exc).__name__}: {exc}"
    if not message:
        return None
    message = str(message).removeprefix("Script refused: ")
    found = re.search(r"\bLine (\d+)\b", message)
    return (int(found.group(1)) if found else None, f"{_SANDBOX} {message}")


def _assignment_value_problem(key: str, raw: str) -> str | None:
    """Why engine.people cannot use a due date / priority (it takes literals or ${var} references)."""
    try:
        from engine.people import resolve_due, resolve_value
    except ImportError:
        return None
    if resolve_value(raw, {}) is None:
        return None  # a ${variable} / =variable reference: resolved when the task opens
    if key == "due_date":
        if resolve_due(raw, {}, datetime.now(UTC)) is None:
            return (
                f"due date {raw!r} is neither an ISO 8601 duration (P2D, PT4H), an ISO date-time nor a "
                "${variable} reference: it will be ignored"
            )
        return None
    try:
        int(raw.strip())
    except ValueError:
        return f"priority {raw!r} is neither an integer nor a ${{variable}} reference: the default is used"
    return None


def _json_shape(document: Any) -> tuple[int, int]:
    """(number of values, nesting depth) of parsed JSON, without recursion."""
    nodes, depth = 0, 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, level = stack.pop()
        nodes += 1
        depth = max(depth, level)
        if nodes > _MAX_FORM_NODES:
            break
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value)
    return nodes, depth


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text


def _owner_id(element: etree._Element) -> tuple[str | None, int | None]:
    """Id and line of the nearest ancestor-or-self with an id (the BPMN element a problem is about)."""
    node: etree._Element | None = element
    while node is not None:
        if isinstance(node.tag, str) and node.get("id"):
            return node.get("id"), node.sourceline
        node = node.getparent()
    return None, element.sourceline


# --------------------------------------------------------------------------------------------------
# The analyser
# --------------------------------------------------------------------------------------------------


@dataclass
class _BpmnFile:
    name: str
    root: etree._Element
    ids: dict[str, etree._Element] = field(default_factory=dict)
    duplicate_id_lines: set[int] = field(default_factory=set)
    processes: list[etree._Element] = field(default_factory=list)  # top-level <process> with an id
    added: bool = False


class _Analyser:
    def __init__(self, files: Mapping[str, bytes], available: Collection[str], max_bytes: int) -> None:
        self.files = files
        self.available = {str(p) for p in available}
        self.max_bytes = max_bytes
        self.order: dict[str, int] = {}
        self.problems: list[Problem] = []
        self.library_problems: list[Problem] = []
        self.bpmn: dict[str, _BpmnFile] = {}
        self.roots: dict[str, etree._Element] = {}
        self.ids: dict[str, dict[str, etree._Element]] = {}  # file -> element id -> element (BPMN, DMN)
        self.dmn_roots: dict[str, etree._Element] = {}
        self.json_names: list[str] = []
        self.json_contents: dict[str, bytes] = {}
        self.form_refs: dict[str, str] = {}  # json file -> "schema" | "ui"
        self.decisions: dict[str, str] = {}  # decision id -> dmn file
        self.process_files: dict[str, str] = {}  # top-level process id -> file (first one)
        self.executable: dict[str, etree._Element] = {}
        self.model_elements = 0
        self.form_nodes = 0
        self.parser = BatonParser()

    # -- reporting ---------------------------------------------------------------------------------

    def add(
        self,
        file: str,
        message: str,
        *,
        element: etree._Element | None = None,
        element_id: str | None = None,
        line: int | None = None,
        severity: str = "error",
    ) -> None:
        if element is not None:
            owner_id, owner_line = _owner_id(element)
            element_id = element_id or owner_id
            line = line or element.sourceline or owner_line
        self.problems.append(Problem(file, line, element_id, _short(message), severity))

    def add_exception(self, exc: BaseException, default_file: str) -> None:
        """Turn anything SpiffWorkflow raised into a problem, locating the element where possible."""
        if isinstance(exc, ValidationException):
            file = exc.file_name if exc.file_name in self.files else default_file
            element_id = exc.id or None
            message = str(exc.args[0]) if exc.args else str(exc)
            tag = getattr(exc, "tag", "")
            if tag and element_id:
                message = f"{tag} {element_id!r}: {message}"
            line = exc.line_number if isinstance(exc.line_number, int) and exc.line_number > 0 else None
        else:
            file, element_id, line = default_file, None, None
            message = f"{type(exc).__name__}: {exc}"
        if "RecursionError" in message or isinstance(exc, RecursionError):
            message = "the process is too long or too deeply nested for the parser (recursion limit)"
        if element_id and line is None:
            element = self.ids.get(file, {}).get(element_id)
            if element is None:
                for other, ids in self.ids.items():
                    if element_id in ids:
                        file, element = other, ids[element_id]
                        break
            if element is None and file in self.roots:  # e.g. an extension element the library tripped on
                element = next(iter(self.roots[file].xpath("//*[@id=$i]", i=element_id)), None)
            if element is not None:
                line = element.sourceline
        self.library_problems.append(Problem(file, line, element_id, _short(message)))

    # -- driver ------------------------------------------------------------------------------------

    def run(self) -> BundleAnalysis:
        if not self.files:
            self.add("<bundle>", "the bundle is empty")
            return self.finish(with_parser=False)
        xml_files: list[tuple[str, str, bytes]] = []
        for index, (name, data) in enumerate(self.files.items()):
            if not isinstance(name, str):
                self.add(repr(name), "file names must be strings")
                continue
            self.order[name] = index
            if _unsafe_name(name):
                self.add(name, "unsafe file name (absolute path, '..', backslash or empty segment)")
                continue
            kind = _file_kind(name)
            if kind is None:
                self.add(name, "unsupported file type: expected .bpmn, .bpmn20.xml, .dmn or .json")
                continue
            if isinstance(data, str):
                data = data.encode("utf-8")
            if not isinstance(data, bytes | bytearray | memoryview):
                self.add(name, f"file content must be bytes, not {type(data).__name__}")
                continue
            data = bytes(data)
            if len(data) > self.max_bytes:
                self.add(name, f"file is {len(data)} bytes, larger than the limit of {self.max_bytes} bytes")
                continue
            if kind == "json":
                self.json_names.append(name)
                self.json_contents[name] = data
            else:
                xml_files.append((name, kind, data))

        for name, kind, data in xml_files:
            try:
                root = parse_xml(data, max_bytes=self.max_bytes)
            except UnsafeXml as exc:
                self.add(name, exc.message, line=exc.line)
                continue
            self.roots[name] = root
            if kind == "bpmn":
                self.read_bpmn(name, root)
            else:
                self.read_dmn(name, root)

        self.check_duplicate_processes()
        for info in self.bpmn.values():
            self.lint_bpmn(info)
        self.check_forms()
        self.add_to_parser()
        processes = self.parse_specs()
        self.check_bundle_level(processes)
        return self.finish(processes=processes)

    def finish(self, processes: Iterable[ProcessInfo] = (), with_parser: bool = True) -> BundleAnalysis:
        lint_keys = {(p.file, p.element_id) for p in self.problems if p.severity == "error" and p.element_id}
        merged: list[Problem] = list(self.problems)
        for p in self.library_problems:
            if p.element_id and (p.file, p.element_id) in lint_keys:
                continue  # the lint already explained this element, more precisely
            merged.append(p)
        unique: dict[Problem, None] = dict.fromkeys(merged)
        ordered = sorted(
            unique,
            key=lambda p: (self.order.get(p.file, -1), p.line if p.line is not None else 1 << 30),
        )
        report = BundleReport(problems=tuple(ordered), processes=tuple(processes))
        return BundleAnalysis(report, self.parser if with_parser else None)

    # -- reading -----------------------------------------------------------------------------------

    def read_bpmn(self, name: str, root: etree._Element) -> None:
        if root.tag != _B + "definitions":
            self.add(
                name,
                f"not a BPMN 2.0 document: root element is {root.tag!r}, expected bpmn:definitions "
                f"in namespace {BPMN_NS}",
                line=root.sourceline,
            )
            return
        size = sum(1 for _ in root.iter(_B + "*"))
        if size > _MAX_MODEL_ELEMENTS:
            self.add(
                name,
                f"the model has {size} BPMN elements, more than the limit of {_MAX_MODEL_ELEMENTS}: "
                "split it into called processes",
                line=root.sourceline,
            )
            return
        self.model_elements += size
        if self.model_elements > _MAX_BUNDLE_MODEL_ELEMENTS:
            self.add(
                name,
                f"the bundle has more than {_MAX_BUNDLE_MODEL_ELEMENTS} BPMN elements in all: "
                "deploy it in parts",
                line=root.sourceline,
            )
            return
        info = _BpmnFile(name, root)
        for element in root.iter():
            # Only BPMN model/DI elements have ids of their own; camunda:property id="..." is not one.
            if not isinstance(element.tag, str) or not element.tag.startswith(_OMG):
                continue
            element_id = element.get("id")
            if element_id is None:
                continue
            if element_id in info.ids:
                first = info.ids[element_id]
                info.duplicate_id_lines.add(element.sourceline or 0)
                self.add(
                    name,
                    f"duplicate id {element_id!r} (already used by the {_local(first.tag)} on line "
                    f"{first.sourceline})",
                    element_id=element_id,
                    line=element.sourceline,
                )
            else:
                info.ids[element_id] = element
        self.ids[name] = info.ids
        self.validate_xsd(info)
        for process in root.iterfind(_B + "process"):
            if not (process.get("id") or "").strip():
                self.add(name, "<process> without id: give every process an id", line=process.sourceline)
                continue
            info.processes.append(process)
        self.bpmn[name] = info

    def validate_xsd(self, info: _BpmnFile) -> None:
        with _schema_lock:
            VALIDATOR.preprocess(info.root)
            valid = VALIDATOR.validator.validate(info.root)
            errors = [] if valid else list(VALIDATOR.validator.error_log)
        reported = 0
        for error in errors:
            if "'xs:ID'" in error.message and error.line in info.duplicate_id_lines:
                continue  # already reported as a duplicate id
            if reported == _MAX_XSD_PROBLEMS:
                self.add(info.name, f"... and {len(errors) - reported} more BPMN schema errors")
                break
            element = self._element_on_line(info, error.line)
            self.add(
                info.name,
                f"not valid BPMN 2.0 (XSD): {error.message}",
                element_id=element.get("id") if element is not None else None,
                line=error.line or None,
            )
            reported += 1

    @staticmethod
    def _element_on_line(info: _BpmnFile, line: int) -> etree._Element | None:
        for element in info.ids.values():
            if element.sourceline == line:
                return element
        return None

    def read_dmn(self, name: str, root: etree._Element) -> None:
        namespace = etree.QName(root).namespace or ""
        if etree.QName(root).localname != "definitions" or namespace not in DMN_SCHEMAS:
            known = ", ".join(DMN_SCHEMAS)
            self.add(
                name,
                f"not a supported DMN document: root element is {root.tag!r}; "
                f"supported DMN namespaces: {known}",
                line=root.sourceline,
            )
            return
        if root.nsmap.get(None) != namespace and root.nsmap.get("dmn") != namespace:
            self.add(
                name,
                "the DMN namespace must be the default namespace or use the prefix 'dmn' (SpiffWorkflow "
                "looks elements up that way)",
                line=root.sourceline,
            )
            return
        ids: dict[str, etree._Element] = {}
        for element in root.iter():
            if isinstance(element.tag, str) and element.get("id"):
                ids.setdefault(element.get("id"), element)
        self.ids[name] = ids
        schema = _dmn_schema(namespace)
        if schema is not None:
            with _schema_lock:
                valid = schema.validate(root)
                errors = [] if valid else list(schema.error_log)
            for error in errors[:_MAX_XSD_PROBLEMS]:
                self.add(name, f"not valid DMN (XSD): {error.message}", line=error.line or None)
            if errors:
                return
        decisions = root.findall(f"{{{namespace}}}decision")
        if not decisions:
            self.add(name, "no <decision> in this DMN file", line=root.sourceline)
            return
        if len(decisions) > 1:
            listed = ", ".join(repr(d.get("id")) for d in decisions)
            self.add(
                name,
                f"only one decision per DMN file is supported, found {len(decisions)} ({listed}): "
                "split them into separate files",
                element=decisions[1],
            )
            return
        decision = decisions[0]
        decision_id = decision.get("id")
        if not decision_id:
            self.add(name, "<decision> without id", line=decision.sourceline)
            return
        if decision_id in self.decisions:
            self.add(
                name,
                f"duplicate decision id {decision_id!r} (also in {self.decisions[decision_id]})",
                element=decision,
            )
            return
        for entry in decision.iter(f"{{{namespace}}}inputEntry"):
            text = _text(entry.find(f"{{{namespace}}}text")) or ""
            if _DMN_BARE_IN.match(text):
                self.add(
                    name,
                    f"input entry {text.strip()!r} does not work with SpiffWorkflow's Python DMN engine: "
                    "write '? in [...]'",
                    element=entry,
                )
        self.decisions[decision_id] = name
        self.dmn_roots[name] = root

    def check_duplicate_processes(self) -> None:
        for info in self.bpmn.values():
            kept = []
            for process in info.processes:
                pid = process.get("id")
                if pid in self.process_files:
                    other = self.process_files[pid]
                    where = "earlier in this file" if other == info.name else f"in {other}"
                    message = f"duplicate process id {pid!r} (also defined {where})"
                    self.add(info.name, message, element=process)
                    continue
                self.process_files[pid] = info.name
                kept.append(process)
                if process.get("isExecutable", "true") == "true":
                    self.executable[pid] = process
                else:
                    self.add(
                        info.name,
                        f"process {pid!r} has isExecutable=\"false\": it will not be deployed",
                        element=process,
                        severity="warning",
                    )
            info.processes = kept

    # -- BPMN lint ---------------------------------------------------------------------------------

    def lint_bpmn(self, info: _BpmnFile) -> None:
        name = info.name
        for element in self._lintable(info.root):
            tag = element.tag
            if not isinstance(tag, str):
                continue
            if tag in _CONTAINERS:
                self.lint_container(name, element)
            elif tag in _UNSUPPORTED_EVENT_DEFINITIONS:
                self.add(
                    name,
                    f"{_UNSUPPORTED_EVENT_DEFINITIONS[tag]} are not supported (SpiffWorkflow would silently "
                    "treat this event as a plain event)",
                    element=element.getparent(),
                )
            elif tag == _B + "timerEventDefinition":
                self.lint_timer(name, element)
            elif tag == _B + "scriptTask":
                self.lint_script_task(name, element)
            elif tag in (_S + "preScript", _S + "postScript"):
                self.lint_python(name, element, "exec", f"spiffworkflow:{_local(tag)}")
            elif tag == _B + "sequenceFlow":
                self.lint_sequence_flow(name, element, info)
            elif tag == _B + "conditionalEventDefinition":
                condition = element.find(_B + "condition")
                if condition is None or not (condition.text or "").strip():
                    self.add(name, "conditional event without a condition", element=element)
                else:
                    self.lint_python(name, condition, "eval", "condition")
            elif tag == _B + "multiInstanceLoopCharacteristics":
                self.lint_multi_instance(name, element)
            elif tag == _B + "standardLoopCharacteristics":
                condition = element.find(_B + "loopCondition")
                if condition is not None and (condition.text or "").strip():
                    self.lint_python(name, condition, "eval", "loop condition")
            elif tag == _B + "callActivity":
                self.lint_call_activity(name, element)
            elif tag == _B + "businessRuleTask":
                self.lint_business_rule(name, element)
            elif tag == _B + "dataObjectReference":
                self.lint_data_object_reference(name, element)
            elif tag == _B + "dataStore":
                self.add(
                    name,
                    f"data stores are not supported (no implementation for {element.get('name')!r})",
                    element=element,
                )
            elif tag == _B + "serviceTask":
                if element.find(f"{_B}extensionElements/{_S}serviceTaskOperator") is None:
                    self.add(
                        name,
                        "service task without spiffworkflow:serviceTaskOperator: Baton runs service tasks "
                        "through connectors (Camunda external tasks, camunda:class/expression are not "
                        "supported)",
                        element=element,
                    )
            if tag in _HUMAN_TASKS:
                self.lint_human_task(name, element)

    @staticmethod
    def _lintable(root: etree._Element) -> Iterable[etree._Element]:
        """All elements except those of non-executable processes (never deployed, often just a pool)."""
        for top in root:
            if top.tag == _B + "process" and top.get("isExecutable", "true") != "true":
                continue
            yield from top.iter()

    def lint_container(self, name: str, element: etree._Element) -> None:
        tag = element.tag
        for child in element:
            if not isinstance(child.tag, str) or not child.tag.startswith(_B):
                continue
            if child.tag in _NON_FLOW_CHILDREN:
                continue
            parser_class, _spec_class = self.parser._get_parser_class(child.tag)
            if parser_class is None:
                self.add(
                    name,
                    f"bpmn:{_local(child.tag)} is not supported by Baton's engine",
                    element=child,
                )
        starts = element.findall(_B + "startEvent")
        if tag == _B + "process":
            if element.get("isExecutable", "true") == "true" and element.get("id") and not starts:
                self.add(name, f"process {element.get('id')!r} has no start event", element=element)
        elif tag in (_B + "subProcess", _B + "transaction"):
            kind = "event sub-process" if element.get("triggeredByEvent") == "true" else _local(tag)
            if len(starts) != 1:
                self.add(name, f"{kind} needs exactly one start event, found {len(starts)}", element=element)
            if kind != "event sub-process" and not element.findall(_B + "endEvent"):
                self.add(name, f"{kind} needs an end event", element=element)

    def lint_data_object_reference(self, name: str, reference: etree._Element) -> None:
        target = reference.get("dataObjectRef")
        visible: set[str] = set()
        for container in reference.iterancestors(*_CONTAINERS):
            visible.update(d.get("id") for d in container.iterfind(_B + "dataObject") if d.get("id"))
        if not target:
            self.add(name, "data object reference without dataObjectRef", element=reference)
        elif target not in visible:
            self.add(
                name,
                f"data object reference points to {target!r}, which is not a data object of this process "
                "or an enclosing sub-process",
                element=reference,
            )

    def lint_python(self, name: str, element: etree._Element, mode: str, what: str) -> bool:
        """Compile the element's text as Python; report with the file line of the error. True if ok."""
        source = element.text or ""
        found = _python_error(source, mode)
        if found is None:
            return True
        rel_line, message = found
        base = element.sourceline
        line = base + rel_line - 1 if base and rel_line else base
        hint = ""
        if "${" in source or "#{" in source:
            hint = " (Camunda/JUEL ${...} expressions are not supported: write Python)"
        elif message.startswith("unexpected indent") or message.startswith("unindent"):
            hint = " (remove the leading indentation)"
        if message.startswith(_SANDBOX):
            self.add(name, f"{what} {message}", element=element, line=line)
            return False
        where = f" (line {rel_line} of the {what})" if rel_line and what == "script" else ""
        self.add(name, f"{what} is not valid Python: {message}{where}{hint}", element=element, line=line)
        return False

    def lint_timer(self, name: str, definition: etree._Element) -> None:
        kinds = (_B + "timeDate", _B + "timeDuration", _B + "timeCycle")
        expressions = [c for c in definition if c.tag in kinds]
        event = definition.getparent()
        if not expressions:
            self.add(name, "timer without timeDate, timeDuration or timeCycle", element=event)
            return
        for expression in expressions:
            kind = _local(expression.tag)
            text = (expression.text or "").strip()
            if not text:
                self.add(name, f"empty {kind} expression", element=expression)
            elif _ISO_LITERAL.match(text):
                self.add(
                    name,
                    f"{kind} {text!r} is evaluated as a Python expression: quote the ISO 8601 literal "
                    f"(write \"{text}\")",
                    element=expression,
                )
            else:
                self.lint_python(name, expression, "eval", f"{kind} expression")

    def lint_script_task(self, name: str, task: etree._Element) -> None:
        script_format = (task.get("scriptFormat") or "").strip()
        if script_format and script_format.lower() not in _PYTHON_SCRIPT_FORMATS:
            self.add(
                name,
                f"scriptFormat {script_format!r} is ignored: scripts always run as Python",
                element=task,
                severity="warning",
            )
        script = task.find(_B + "script")
        if script is None or not (script.text or "").strip():
            resource = task.get(_C + "resource")
            extra = " (external camunda:resource scripts are not supported)" if resource else ""
            self.add(name, f"script task without a script{extra}", element=task)
            return
        self.lint_python(name, script, "exec", "script")

    def lint_sequence_flow(self, name: str, flow: etree._Element, info: _BpmnFile) -> None:
        condition = flow.find(_B + "conditionExpression")
        if condition is None:
            return
        source = info.ids.get(flow.get("sourceRef") or "")
        gateway = source is not None and source.tag in (_B + "exclusiveGateway", _B + "inclusiveGateway")
        if not (condition.text or "").strip():
            if gateway:
                self.add(name, "empty condition on a gateway's outgoing flow", element=condition)
            return
        if self.lint_python(name, condition, "eval", "condition") and source is not None and not gateway:
            self.add(
                name,
                f"the condition on this flow is ignored: only flows leaving an exclusive or inclusive "
                f"gateway are conditional (source is a {_local(source.tag)})",
                element=flow,
                severity="warning",
            )

    def lint_multi_instance(self, name: str, loop: etree._Element) -> None:
        cardinality = loop.find(_B + "loopCardinality")
        loop_input = loop.find(_B + "loopDataInputRef")
        if cardinality is None and loop_input is None and loop.get(_C + "collection") is not None:
            self.add(
                name,
                "Camunda-style multi-instance (camunda:collection) is not supported: use loopCardinality "
                "or loopDataInputRef",
                element=loop.getparent(),
            )
        if cardinality is not None and (cardinality.text or "").strip():
            self.lint_python(name, cardinality, "eval", "loop cardinality")
        completion = loop.find(_B + "completionCondition")
        if completion is not None and (completion.text or "").strip():
            self.lint_python(name, completion, "eval", "completion condition")

    def lint_call_activity(self, name: str, task: etree._Element) -> None:
        called = (task.get("calledElement") or "").strip()
        if not called:
            self.add(name, "call activity without calledElement", element=task)
        elif "${" in called or "#{" in called:
            self.add(name, f"calledElement {called!r}: expressions are not supported, name a process id",
                     element=task)
        elif called in self.executable or called in self.available:
            return
        elif called in self.process_files:
            message = f"called process {called!r} is not executable (isExecutable=\"false\")"
            self.add(name, message, element=task)
        elif self.available:
            self.add(
                name,
                f"called process {called!r} is neither in this bundle nor deployed",
                element=task,
            )
        else:
            # Deployment (RepositoryService) passes no other deployments: a definition loads from its
            # own bundle only, so a process deployed separately cannot be called either.
            known = ", ".join(sorted(self.executable)) or "none"
            self.add(
                name,
                f"called process {called!r} is not in this bundle (its processes: {known}); a call "
                "activity can only call a process deployed with it: add that process's BPMN file to the "
                "bundle, even if it is deployed already",
                element=task,
            )

    def lint_business_rule(self, name: str, task: etree._Element) -> None:
        ref = BatonBusinessRuleTaskParser.get_decision_ref(task)
        if ref is None:
            self.add(
                name,
                "business rule task without a decision "
                "(spiffworkflow:calledDecisionId or camunda:decisionRef)",
                element=task,
            )
        elif ref not in self.decisions:
            known = ", ".join(sorted(self.decisions)) or "none"
            self.add(name, f"decision {ref!r} is not in this bundle's DMN files (decisions: {known})",
                     element=task)

    def lint_human_task(self, name: str, task: etree._Element) -> None:
        try:
            spiff_extensions = SpiffTaskParser._parse_extensions(task)
        except Exception as exc:
            self.add(name, f"unreadable spiffworkflow extensions: {exc!r}", element=task)
            return
        meta = _normalize_human_task(task, spiff_extensions)
        form_key = meta.get("form_key")
        if form_key:
            resolved = resolve_form_file(form_key, self.json_names)
            if resolved is not None:
                self.form_refs.setdefault(resolved, "schema")
            elif is_external_form_key(form_key):
                self.add(
                    name,
                    f"form {form_key!r} is a Camunda web-app form Baton cannot render; a generic form "
                    "will be shown",
                    element=task,
                    severity="warning",
                )
            elif not meta.get("form_fields"):
                forms = ", ".join(self.json_names) or "none"
                message = f"form {form_key!r} is not in this bundle (bundle forms: {forms})"
                self.add(name, message, element=task)
        ui_schema = meta.get("form_ui_schema")
        if ui_schema:
            resolved = resolve_form_file(ui_schema, self.json_names)
            if resolved is None:
                self.add(name, f"UI schema {ui_schema!r} is not in this bundle", element=task)
            elif self.form_refs.get(resolved) != "schema":
                self.form_refs[resolved] = "ui"
        for key in ("due_date", "priority"):
            if meta.get(key):
                message = _assignment_value_problem(key, meta[key])
                if message:
                    self.add(name, message, element=task, severity="warning")

    # -- forms -------------------------------------------------------------------------------------

    def check_forms(self) -> None:
        for name in self.json_names:
            data = self.json_contents[name]
            try:
                document = json.loads(data)
            except json.JSONDecodeError as exc:
                self.add(name, f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno)
                continue
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                self.add(name, f"not valid JSON: {type(exc).__name__}: {exc}")
                continue
            nodes, depth = _json_shape(document)
            self.form_nodes += nodes
            if self.form_nodes > _MAX_BUNDLE_FORM_NODES:
                self.add(name, f"the bundle's forms hold more than {_MAX_BUNDLE_FORM_NODES} values in all")
                continue
            if nodes > _MAX_FORM_NODES or depth > _MAX_FORM_DEPTH:
                self.add(
                    name,
                    f"form is too large to check ({nodes} values, nesting depth {depth}; limits "
                    f"{_MAX_FORM_NODES} and {_MAX_FORM_DEPTH})",
                )
                continue
            if self.form_refs.get(name) == "ui" or (name not in self.form_refs and _is_ui_schema_name(name)):
                if not isinstance(document, dict):
                    self.add(name, "a UI schema must be a JSON object")
                continue
            if not isinstance(document, dict):
                self.add(name, f"a form must be a JSON Schema object, not a JSON {type(document).__name__}")
                continue
            try:
                validator_class = jsonschema.validators.validator_for(
                    document, default=jsonschema.Draft202012Validator
                )
                validator_class.check_schema(document)
            except jsonschema.SchemaError as exc:
                path = exc.json_path if hasattr(exc, "json_path") else "$"
                self.add(name, f"not a valid JSON Schema at {path}: {exc.message}")
            except Exception as exc:
                self.add(name, f"not a valid JSON Schema: {type(exc).__name__}: {exc}")

    # -- SpiffWorkflow -----------------------------------------------------------------------------

    def add_to_parser(self) -> None:
        for name, root in self.dmn_roots.items():
            try:
                self.parser.add_dmn_xml(root, filename=name)
            except Exception as exc:
                self.add_exception(exc, name)
                continue
            dmn_parser = self.parser.dmn_parsers.get(root.find("{*}decision").get("id"))
            if dmn_parser is not None:
                try:
                    dmn_parser.parse()
                except Exception as exc:
                    self.add_exception(exc, name)
        added_ids: set[str] = set()
        for info in self.bpmn.values():
            own_ids = {p.get("id") for p in info.root.iterfind(_B + "process")}
            kept_ids = {p.get("id") for p in info.processes}
            if own_ids & added_ids or own_ids - kept_ids or info.root.find(f".//{_B}dataStore") is not None:
                continue  # duplicate/id-less process or data store: already reported, the library would raise
            try:
                self.parser.add_bpmn_xml(info.root, filename=info.name)
            except Exception as exc:
                self.add_exception(exc, info.name)
                continue
            info.added = True
            added_ids |= own_ids

    def parse_specs(self) -> list[ProcessInfo]:
        processes = []
        for info in self.bpmn.values():
            if not info.added:
                continue
            for process in info.processes:
                pid = process.get("id")
                if pid not in self.executable:
                    continue
                try:
                    spec = self.parser.get_spec(pid)
                    subprocess_specs = collect_subprocess_specs(self.parser, pid)
                except Exception as exc:
                    self.add_exception(exc, info.name)
                    continue
                if self.check_serializable(info.name, [spec, *subprocess_specs.values()]):
                    name = (process.get("name") or "").strip() or pid
                    processes.append(ProcessInfo(pid, name, info.name))
        return processes

    def check_serializable(self, name: str, specs: Iterable[Any]) -> bool:
        ok = True
        for spec in specs:
            if spec is None:
                continue
            for task_spec in spec.task_specs.values():
                types = [type(task_spec)]
                event_definition = getattr(task_spec, "event_definition", None)
                if event_definition is not None:
                    types.append(type(event_definition))
                    types.extend(type(d) for d in getattr(event_definition, "event_definitions", None) or ())
                for cls in types:
                    if cls not in SERIALIZER_CONFIG:
                        ok = False
                        self.add(
                            name,
                            f"{cls.__name__} cannot be stored by Baton's serializer",
                            element_id=getattr(task_spec, "bpmn_id", None),
                        )
        return ok

    def check_bundle_level(self, processes: list[ProcessInfo]) -> None:
        if not any(_file_kind(n) == "bpmn" for n in self.order):
            for name in self.order or ["<bundle>"]:
                self.add(name, "the bundle has no BPMN file: forms and decisions cannot be deployed alone")
            return
        if self.bpmn and not self.executable:
            for info in self.bpmn.values():
                self.add(info.name, "the bundle has no executable process", line=info.root.sourceline)
