"""BPMN/DMN ingestion: hardened XML parsing, Baton's parser flavour, human-task metadata, spec loading.

Uploaded files are untrusted. SpiffWorkflow parses with lxml's global default parser (XXE on some
lxml versions), so Baton parses every file itself with a locked-down parser, refuses any DOCTYPE and
hands the finished tree to the library. ``BatonParser`` is SpiffWorkflow's spiff flavour plus the
Camunda Modeler extensions for human tasks; ``human_task_meta`` is the only place the rest of Baton
reads those extensions from. Validation (the "lint") lives in ``engine.lint``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree
from SpiffWorkflow.bpmn.parser.util import full_tag
from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import SubWorkflowTask as SubWorkflowTaskMixin
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.spiff.parser.task_spec import BusinessRuleTaskParser as SpiffBusinessRuleTaskParser
from SpiffWorkflow.spiff.parser.task_spec import SpiffTaskParser
from SpiffWorkflow.spiff.parser.task_spec import UserTaskParser as SpiffUserTaskParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.spiff.specs.defaults import BusinessRuleTask, ManualTask, UserTask

if TYPE_CHECKING:
    from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec

__all__ = [
    "BPMN_NS",
    "CAMUNDA_NS",
    "DEFAULT_MAX_FILE_BYTES",
    "HUMAN_TASK_KEY",
    "SERIALIZER_CONFIG",
    "SPIFF_NS",
    "BatonParser",
    "FormFieldMeta",
    "HumanTaskMeta",
    "UnsafeXml",
    "collect_subprocess_specs",
    "human_task_meta",
    "is_external_form_key",
    "load_workflow_spec",
    "parse_xml",
    "resolve_form_file",
]

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
# Older Activiti/Flowable-based modelers write the same assignment attributes under their own namespace.
_ASSIGNMENT_NAMESPACES = (CAMUNDA_NS, "http://activiti.org/bpmn", "http://flowable.org/bpmn")

DEFAULT_MAX_FILE_BYTES = 5 * 1024 * 1024

#: Key under which BatonParser stores the normalized human-task metadata in ``task_spec.extensions``.
#: A colon cannot occur in a spiffworkflow extension's local name, so it never collides with one.
HUMAN_TASK_KEY = "baton:humanTask"


# --------------------------------------------------------------------------------------------------
# Hardened XML parsing
# --------------------------------------------------------------------------------------------------


class UnsafeXml(ValueError):
    """An uploaded XML file Baton refuses to parse (DOCTYPE, malformed, too big)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


_DOCTYPE_MESSAGE = (
    "XML documents with a DOCTYPE are refused (entity declarations can read server files "
    "or expand without bound); remove the <!DOCTYPE ...> declaration"
)
# A DOCTYPE can only stand in the prolog: XML declaration, comments, processing instructions.
_PROLOG_DOCTYPE = re.compile(
    r"^\ufeff?\s*(?:<\?xml[^>]*\?>)?(?:\s+|<!--.*?-->|<\?.*?\?>)*<!DOCTYPE", re.DOTALL
)
_UTF16_32 = (
    (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\xfe\xff", "utf-16"), (b"\xff\xfe", "utf-16"),
    (b"\x00<\x00?", "utf-16-be"), (b"<\x00?\x00", "utf-16-le"),
)


def _prolog_has_doctype(data: bytes) -> bool:
    """Cheap look for a DOCTYPE before the root element, in UTF-8 or a BOM-marked UTF-16/32."""
    head = data[:65536]
    encoding = next((enc for bom, enc in _UTF16_32 if head.startswith(bom)), "utf-8")
    return bool(_PROLOG_DOCTYPE.match(head.decode(encoding, errors="ignore")))


def _new_parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parser objects are not safe to share between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=False,
    )


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> etree._Element:
    """Parse untrusted XML bytes; refuse DOCTYPEs (XXE, billion laughs) and oversized input.

    Returns the root element (with ``sourceline`` kept, for problem reports). Raises ``UnsafeXml``.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > max_bytes:
        raise UnsafeXml(f"file is {len(data)} bytes, larger than the limit of {max_bytes} bytes")
    if not data.strip():
        raise UnsafeXml("file is empty", 1)
    if _prolog_has_doctype(data):  # refuse before libxml2 even reads the entity declarations
        raise UnsafeXml(_DOCTYPE_MESSAGE, 1)
    try:
        root = etree.fromstring(data, _new_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if isinstance(exc.lineno, int) and exc.lineno > 0 else None
        raise UnsafeXml(f"malformed XML: {exc.msg}", line) from None
    except (ValueError, etree.LxmlError) as exc:
        raise UnsafeXml(f"malformed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXml(_DOCTYPE_MESSAGE, 1)
    return root


# --------------------------------------------------------------------------------------------------
# Human task metadata (Camunda and spiff-arena flavours)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormFieldMeta:
    """One field of a Camunda generated form (``camunda:formData/camunda:formField``)."""

    id: str
    label: str | None = None
    type: str | None = None
    default_value: str | None = None
    options: tuple[tuple[str, str | None], ...] = ()  # enum values: (id, name)
    validation: tuple[tuple[str, str | None], ...] = ()  # constraints (name, config): ("required", None)
    properties: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def from_dict(cls, dct: Mapping[str, Any]) -> FormFieldMeta:
        return cls(
            id=str(dct.get("id") or ""),
            label=dct.get("label"),
            type=dct.get("type"),
            default_value=dct.get("default_value"),
            options=tuple((str(o[0]), o[1]) for o in dct.get("options") or ()),
            validation=tuple((str(v[0]), v[1]) for v in dct.get("validation") or ()),
            properties=tuple((str(p[0]), p[1]) for p in dct.get("properties") or ()),
        )


@dataclass(frozen=True)
class HumanTaskMeta:
    """Everything Baton needs to present and assign a user/manual task, whatever modeler wrote it."""

    form_key: str | None = None  # a bundle .json file, an ``embedded:`` key, or a generated-form name
    form_fields: tuple[FormFieldMeta, ...] = ()  # Camunda generated form
    form_ui_schema: str | None = None  # spiff-arena formUiSchemaFilename
    form_variable: str | None = None  # spiffworkflow:variableName: form data is stored under it
    candidate_groups: tuple[str, ...] = ()
    candidate_users: tuple[str, ...] = ()
    assignee: str | None = None
    due_date: str | None = None  # an expression, as written by the modeler
    priority: str | None = None
    lane: str | None = None  # the lane's name
    documentation: str | None = None
    instructions: str | None = None  # spiffworkflow:instructionsForEndUser (markdown)


# spiff-arena keeps these in spiffworkflow:properties; accept camelCase and snake_case spellings.
_SPIFF_PROPERTY_KEYS = {
    "formjsonschemafilename": "form_key",
    "formkey": "form_key",
    "formuischemafilename": "form_ui_schema",
    "candidategroups": "candidate_groups",
    "candidateusers": "candidate_users",
    "assignee": "assignee",
    "duedate": "due_date",
    "priority": "priority",
}
_CAMUNDA_ATTRIBUTES = {
    "formKey": "form_key",
    "candidateGroups": "candidate_groups",
    "candidateUsers": "candidate_users",
    "assignee": "assignee",
    "dueDate": "due_date",
    "priority": "priority",
}
_LIST_KEYS = ("candidate_groups", "candidate_users")


def _split_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        items: Iterable[Any] = value
    else:
        items = str(value).split(",")
    return [s for s in (str(i).strip() for i in items) if s]


def _camunda_form_fields(node: etree._Element) -> list[dict[str, Any]]:
    c = "{" + CAMUNDA_NS + "}"
    fields = []
    for xml_field in node.iterfind(f"{{{BPMN_NS}}}extensionElements/{c}formData/{c}formField"):
        options, validation, properties = [], [], []
        for child in xml_field:
            if child.tag == f"{c}value":
                options.append([child.get("id") or "", child.get("name")])
            elif child.tag == f"{c}validation":
                validation.extend([v.get("name") or "", v.get("config")] for v in child if v.get("name"))
            elif child.tag == f"{c}properties":
                properties.extend([p.get("id") or "", p.get("value")] for p in child if p.get("id"))
        fields.append(
            {
                "id": xml_field.get("id") or "",
                "label": xml_field.get("label"),
                "type": xml_field.get("type"),
                "default_value": xml_field.get("defaultValue"),
                "options": options,
                "validation": validation,
                "properties": properties,
            }
        )
    return fields


def _normalize_human_task(node: etree._Element, spiff_extensions: Mapping[str, Any]) -> dict[str, Any]:
    """Merge Camunda attributes and spiff-arena properties into one JSON-safe dict.

    Camunda attributes win over spiff properties when both are given.
    """
    meta: dict[str, Any] = {}
    for ns in _ASSIGNMENT_NAMESPACES:
        for attr, key in _CAMUNDA_ATTRIBUTES.items():
            value = node.get(f"{{{ns}}}{attr}")
            if value is not None and value.strip() and key not in meta:
                meta[key] = value.strip()
    properties = spiff_extensions.get("properties")
    if isinstance(properties, Mapping):
        for name, value in properties.items():
            key = _SPIFF_PROPERTY_KEYS.get(str(name).replace("_", "").lower())
            if key and key not in meta and value is not None and str(value).strip():
                meta[key] = str(value).strip()
    for key in _LIST_KEYS:
        meta[key] = _split_list(meta.get(key))
    fields = _camunda_form_fields(node)
    if fields:
        meta["form_fields"] = fields
    return meta


class _HumanTaskParserMixin:
    """Adds the normalized human-task dict (and camunda:properties) to the spiff extensions."""

    node: etree._Element

    def parse_extensions(self, node: etree._Element | None = None) -> dict[str, Any]:
        extensions = super().parse_extensions(node)  # type: ignore[misc]
        if node is None or node is self.node:
            c = "{" + CAMUNDA_NS + "}"
            camunda_props = {
                p.get("name"): p.get("value")
                for p in self.node.iterfind(f"{{{BPMN_NS}}}extensionElements/{c}properties/{c}property")
                if p.get("name")
            }
            if camunda_props:
                merged = dict(camunda_props)
                merged.update(extensions.get("properties") or {})
                extensions["properties"] = merged
            extensions[HUMAN_TASK_KEY] = _normalize_human_task(self.node, extensions)
        return extensions


class BatonUserTaskParser(_HumanTaskParserMixin, SpiffUserTaskParser):
    """spiff user task + Camunda form/assignment attributes."""


class BatonManualTaskParser(_HumanTaskParserMixin, SpiffTaskParser):
    """spiff manual task + Camunda assignment attributes."""


class BatonBusinessRuleTaskParser(SpiffBusinessRuleTaskParser):
    """Business rule task referencing its decision by spiff calledDecisionId or camunda:decisionRef."""

    @staticmethod
    def get_decision_ref(node: etree._Element) -> str | None:
        ref = SpiffBusinessRuleTaskParser.get_decision_ref(node)
        if not ref:
            ref = node.get(f"{{{CAMUNDA_NS}}}decisionRef")
        return ref.strip() if isinstance(ref, str) and ref.strip() else None


class _SafeDataObjectRefMixin:
    """Fixes an endless loop in SpiffWorkflow 3.2.0's ``NodeParser._resolve_data_object_ref``.

    The library walks ``current = self.process_parser.parent`` (not ``current.parent``): a data object
    reference inside a sub-process that names no data object hangs the parser forever (an upload
    could tie up a worker). This version walks the ancestors once and returns None when not found.
    """

    process_parser: Any

    def _resolve_data_object_ref(self, ref: etree._Element | None) -> Any:
        if ref is None:
            return None
        name = ref.get("dataObjectRef")
        current, seen = self.process_parser, set()
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            spec = getattr(current, "spec", None)
            data_object = spec.data_objects.get(name) if spec is not None else None
            if data_object is not None:
                return data_object
            current = getattr(current, "parent", None)
        return None


def _safe(parser_class: type) -> type:
    return type(f"Baton{parser_class.__name__}", (_SafeDataObjectRefMixin, parser_class), {})


_BATON_OVERRIDES = {
    **SpiffBpmnParser.PARSER_CLASSES,
    **SpiffBpmnParser.OVERRIDE_PARSER_CLASSES,
    full_tag("userTask"): (BatonUserTaskParser, UserTask),
    full_tag("manualTask"): (BatonManualTaskParser, ManualTask),
    full_tag("businessRuleTask"): (BatonBusinessRuleTaskParser, BusinessRuleTask),
}


class BatonParser(SpiffBpmnParser):
    """SpiffWorkflow's spiff parser, also understanding Camunda Modeler's human-task extensions.

    It produces only spiff/bpmn task spec classes that ``SERIALIZER_CONFIG`` knows. A plain
    ``bpmn:serviceTask`` without a ``spiffworkflow:serviceTaskOperator`` is refused by the spiff service
    task parser (Camunda external tasks are not supported), so bug 1 of ENGINE-NOTES cannot occur.
    Every task parser carries the data-object-reference fix above.
    """

    OVERRIDE_PARSER_CLASSES = {
        tag: (_safe(parser_class), spec_class) for tag, (parser_class, spec_class) in _BATON_OVERRIDES.items()
    }

    def __init__(self) -> None:
        # No validator: engine.lint validates the already-parsed trees itself (keeps line numbers).
        super().__init__(validator=None)


def _meta_dict_from_extensions(extensions: Mapping[str, Any]) -> dict[str, Any]:
    stored = extensions.get(HUMAN_TASK_KEY)
    if isinstance(stored, Mapping):
        return dict(stored)
    # A spec parsed by a plain SpiffBpmnParser: only the spiff-arena properties are available.
    meta: dict[str, Any] = {}
    properties = extensions.get("properties")
    if isinstance(properties, Mapping):
        for name, value in properties.items():
            key = _SPIFF_PROPERTY_KEYS.get(str(name).replace("_", "").lower())
            if key and key not in meta and value is not None and str(value).strip():
                meta[key] = str(value).strip()
    for key in _LIST_KEYS:
        meta[key] = _split_list(meta.get(key))
    return meta


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def human_task_meta(task_spec: Any) -> HumanTaskMeta:
    """Form, assignment and presentation data of a (user/manual) task spec, from either flavour.

    Works on any task spec (non-human tasks give an empty meta). For a multi-instance wrapper the
    child spec (the one that becomes READY) is read.
    """
    extensions = getattr(task_spec, "extensions", None)
    if not isinstance(extensions, Mapping) or not extensions:
        child_name = getattr(task_spec, "task_spec", None)
        wf_spec = getattr(task_spec, "_wf_spec", None)
        if isinstance(child_name, str) and wf_spec is not None:
            child = wf_spec.task_specs.get(child_name)
            if child is not None and child is not task_spec:
                return human_task_meta(child)
        extensions = {}
    meta = _meta_dict_from_extensions(extensions)
    variable = getattr(task_spec, "variable", None) or extensions.get("variableName")
    return HumanTaskMeta(
        form_key=_str_or_none(meta.get("form_key")),
        form_fields=tuple(FormFieldMeta.from_dict(f) for f in meta.get("form_fields") or ()),
        form_ui_schema=_str_or_none(meta.get("form_ui_schema")),
        form_variable=_str_or_none(variable),
        candidate_groups=tuple(meta.get("candidate_groups") or ()),
        candidate_users=tuple(meta.get("candidate_users") or ()),
        assignee=_str_or_none(meta.get("assignee")),
        due_date=_str_or_none(meta.get("due_date")),
        priority=_str_or_none(meta.get("priority")),
        lane=_str_or_none(getattr(task_spec, "lane", None)),
        documentation=_str_or_none(getattr(task_spec, "documentation", None)),
        instructions=_str_or_none(extensions.get("instructionsForEndUser")),
    )


_EXTERNAL_FORM_PREFIXES = ("embedded:", "camunda-forms:", "app:")


def resolve_form_file(form_key: str | None, filenames: Collection[str]) -> str | None:
    """Which bundle file a form key means: exact name, then ``key + '.json'``, then a unique basename.

    Returns None when the key does not name a file of the bundle. Used by the lint and when rendering.
    """
    if not form_key:
        return None
    key = form_key.strip()
    while key.startswith("./"):
        key = key[2:]
    names = [n for n in filenames if n.lower().endswith(".json")]
    for candidate in (key, key + ".json"):
        if candidate in names:
            return candidate
    base = key.rsplit("/", 1)[-1]
    matches = [n for n in names if n.rsplit("/", 1)[-1] in (base, base + ".json")]
    return matches[0] if len(matches) == 1 else None


def is_external_form_key(form_key: str) -> bool:
    """Camunda web-app form references (``embedded:app:...``, ``camunda-forms:...``): not a bundle file."""
    return form_key.strip().lower().startswith(_EXTERNAL_FORM_PREFIXES)


# --------------------------------------------------------------------------------------------------
# Serializer config and spec loading
# --------------------------------------------------------------------------------------------------

#: SpiffWorkflow's spiff serializer config. BatonParser creates only classes listed here (checked by
#: ``engine.lint`` for every parsed spec). The plain ``bpmn.specs.defaults.ServiceTask`` must NOT be
#: added: the registry keys converters by class *name*, so it would shadow the spiff ServiceTask.
SERIALIZER_CONFIG: dict = copy.deepcopy(SPIFF_CONFIG)


def load_workflow_spec(
    files: Mapping[str, bytes],
    process_id: str,
    *,
    available_process_ids: Collection[str] = (),
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> tuple[BpmnProcessSpec, dict[str, BpmnProcessSpec]]:
    """Parse a bundle (hardened) and return ``(spec, subprocess_specs)`` for ``process_id``.

    Raises ``engine.lint.BundleInvalid`` when the process cannot be built: unsafe or malformed XML,
    an error SpiffWorkflow raises while parsing it or what it calls, or no such executable process.
    Lint findings that do not stop parsing (a missing form, a script the sandbox refuses...) do NOT
    block loading: they block deployment (``check_bundle``), and a definition deployed before a rule
    got stricter must keep loading for its running instances (the run-time sandbox still applies).
    Called processes listed in ``available_process_ids`` (other deployments) are left out of
    ``subprocess_specs``: the caller adds their specs.
    """
    from engine.lint import BundleInvalid, Problem, analyse_bundle

    analysis = analyse_bundle(
        files, available_process_ids=available_process_ids, max_file_bytes=max_file_bytes
    )
    report, parser = analysis.report, analysis.parser
    if parser is not None and process_id in {p.id for p in report.processes}:
        return parser.get_spec(process_id), collect_subprocess_specs(parser, process_id)
    known = ", ".join(sorted(p.id for p in report.processes)) or "none"
    problem = Problem(
        file="<bundle>",
        line=None,
        element_id=process_id,
        message=f"process {process_id!r} cannot be loaded from this bundle (loadable processes: {known})",
    )
    raise BundleInvalid(report.problems + (problem,))


def collect_subprocess_specs(parser: BatonParser, process_id: str) -> dict[str, BpmnProcessSpec]:
    """Specs of every sub-process and call activity reachable from ``process_id`` that the parser has.

    Unlike ``BpmnParser.get_subprocess_specs`` this does not raise for a called process deployed
    elsewhere (at any depth) and is iterative (no recursion limit on deep call chains).
    """
    found: dict[str, BpmnProcessSpec] = {}
    missing: set[str] = set()
    pending = [process_id]
    while pending:
        spec = parser.get_spec(pending.pop(), required=False)
        if spec is None:
            continue
        for task_spec in spec.task_specs.values():
            if not isinstance(task_spec, SubWorkflowTaskMixin):
                continue
            name = task_spec.spec
            if name in found or name in missing:
                continue
            sub = parser.get_spec(name, required=False)
            if sub is None:
                missing.add(name)
            else:
                found[name] = sub
                pending.append(name)
    return found
