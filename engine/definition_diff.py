"""What changed between two versions of a process, element by element, for the designer.

A designer deploying version 3 wants to know what the people working on version 2 will *not* see:
a step added, a lane renamed, a timer shortened, a form swapped, a condition rewritten. Line diffs of
BPMN XML drown that in diagram coordinates and generated ids, so both versions are read into a
``ProcessSnapshot`` (each element's id, type and the few properties that change behaviour) and
compared by element id.

Files are untrusted uploads: they are parsed only with ``engine.bpmn.parse_xml`` (no DOCTYPE, no
entities, no network). Also here: which bundle file holds a process, and which diagram shape a
validation problem belongs to (a problem on a ``timerEventDefinition`` is drawn on its event).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lxml import etree
from SpiffWorkflow.spiff.parser.task_spec import SpiffTaskParser

from engine.bpmn import BPMN_NS, UnsafeXml, _normalize_human_task, parse_xml

__all__ = [
    "DefinitionDiff",
    "ElementChange",
    "ElementSnapshot",
    "FieldChange",
    "FileChange",
    "ProcessSnapshot",
    "diff_bundles",
    "find_process_file",
    "shape_ids",
    "snapshot",
]

_B = "{" + BPMN_NS + "}"
_BPMNDI = "{http://www.omg.org/spec/BPMN/20100524/DI}"

_ACTIVITIES = frozenset(
    (
        "task", "userTask", "manualTask", "serviceTask", "scriptTask", "businessRuleTask", "sendTask",
        "receiveTask", "callActivity", "subProcess", "transaction", "adHocSubProcess",
    )
)
_EVENTS = frozenset(
    ("startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent")
)
_GATEWAYS = frozenset(
    ("exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway", "complexGateway")
)
#: The element types a snapshot lists (everything else is folded into one of these, or ignored).
ELEMENT_TYPES = _ACTIVITIES | _EVENTS | _GATEWAYS | {"sequenceFlow", "lane"}
_TIMER_KINDS = ("timeDuration", "timeDate", "timeCycle")
_TRIGGER_REFS = {  # event definition -> (attribute naming what it refers to, element type it refers to)
    "messageEventDefinition": ("messageRef", "message"),
    "signalEventDefinition": ("signalRef", "signal"),
    "errorEventDefinition": ("errorRef", "error"),
    "escalationEventDefinition": ("escalationRef", "escalation"),
}

#: The properties compared, in the order a change list shows them.
FIELDS = (
    "type",
    "name",
    "lane",
    "container",
    "trigger",
    "timer",
    "interrupting",
    "attached_to",
    "form",
    "form_fields",
    "assignee",
    "candidate_groups",
    "candidate_users",
    "due_date",
    "priority",
    "source",
    "target",
    "condition",
    "default_flow",
    "script",
    "called_element",
    "decision",
    "multi_instance",
)


@dataclass(frozen=True)
class ElementSnapshot:
    """One element of a process as far as behaviour goes. ``properties`` holds only non-empty values."""

    id: str
    type: str
    name: str | None
    properties: tuple[tuple[str, str], ...] = ()

    def get(self, field: str) -> str | None:
        return next((value for key, value in self.properties if key == field), None)


@dataclass(frozen=True)
class ProcessSnapshot:
    key: str
    name: str | None
    file: str
    elements: tuple[ElementSnapshot, ...]  # document order

    def element(self, element_id: str) -> ElementSnapshot | None:
        return next((e for e in self.elements if e.id == element_id), None)

    @property
    def human_tasks(self) -> tuple[ElementSnapshot, ...]:
        return tuple(e for e in self.elements if e.type in ("userTask", "manualTask"))


@dataclass(frozen=True)
class FieldChange:
    field: str  # one of FIELDS, or "process_name"
    before: str | None
    after: str | None


@dataclass(frozen=True)
class ElementChange:
    id: str
    type: str  # the type in the newer version
    name: str | None
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True)
class FileChange:
    filename: str
    change: str  # "added" | "removed" | "changed"


@dataclass(frozen=True)
class DefinitionDiff:
    key: str
    from_version: int
    to_version: int
    process: tuple[FieldChange, ...]  # the process's own name
    added: tuple[ElementSnapshot, ...]
    removed: tuple[ElementSnapshot, ...]
    changed: tuple[ElementChange, ...]
    files: tuple[FileChange, ...]  # bundle files (forms, decisions, other BPMN) added/removed/changed

    @property
    def empty(self) -> bool:
        return not (self.process or self.added or self.removed or self.changed or self.files)


# --------------------------------------------------------------------------------------------------
# Reading a process
# --------------------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _is_bpmn(name: str) -> bool:
    return name.lower().endswith((".bpmn", ".bpmn20.xml"))


def _roots(files: Mapping[str, bytes]) -> Iterable[tuple[str, etree._Element]]:
    for name in sorted(files):
        if not _is_bpmn(name):
            continue
        try:
            yield name, parse_xml(files[name])
        except UnsafeXml:
            continue


def _process(root: etree._Element, key: str) -> etree._Element | None:
    return next((p for p in root.iterfind(_B + "process") if p.get("id") == key), None)


def find_process_file(files: Mapping[str, bytes], key: str) -> str | None:
    """The name of the bundle's BPMN file that defines process ``key`` (None if none does)."""
    return next((name for name, root in _roots(files) if _process(root, key) is not None), None)


def _text(node: etree._Element | None) -> str | None:
    if node is None:
        return None
    text = " ".join((node.text or "").split())
    return text or None


def _lanes(process: etree._Element) -> dict[str, str]:
    """flow node id -> name of the innermost lane holding it."""
    found: dict[str, str] = {}
    for lane in process.iter(_B + "lane"):  # outer lanes come first, inner ones overwrite
        label = (lane.get("name") or "").strip() or lane.get("id") or ""
        for ref in lane.iterfind(_B + "flowNodeRef"):
            if ref.text and ref.text.strip():
                found[ref.text.strip()] = label
    return found


def _names_of(root: etree._Element) -> dict[str, str]:
    """Root-level messages, signals, errors and escalations: id -> name (a trigger shows its name)."""
    names = {}
    for kind in ("message", "signal", "error", "escalation"):
        for node in root.iterfind(_B + kind):
            if node.get("id"):
                names[node.get("id")] = (node.get("name") or node.get("errorCode") or node.get("id")).strip()
    return names


def _trigger(node: etree._Element, names: Mapping[str, str]) -> str | None:
    triggers = []
    for child in node:
        kind = _local(child.tag)
        if not kind.endswith("EventDefinition"):
            continue
        label = kind[: -len("EventDefinition")]
        ref = _TRIGGER_REFS.get(kind)
        if ref and child.get(ref[0]):
            label += f" {names.get(child.get(ref[0]), child.get(ref[0]))}"
        triggers.append(label)
    return ", ".join(triggers) or None


def _timer(node: etree._Element) -> str | None:
    definition = node.find(_B + "timerEventDefinition")
    if definition is None:
        return None
    parts = []
    for kind in _TIMER_KINDS:
        expression = definition.find(_B + kind)
        if expression is not None:
            parts.append(f"{kind}: {_text(expression) or ''}".strip())
    return "; ".join(parts) or None


def _multi_instance(node: etree._Element) -> str | None:
    loop = node.find(_B + "multiInstanceLoopCharacteristics")
    if loop is None:
        return "loop" if node.find(_B + "standardLoopCharacteristics") is not None else None
    parts = ["sequential" if loop.get("isSequential") == "true" else "parallel"]
    for child, label in (
        ("loopCardinality", "cardinality"),
        ("loopDataInputRef", "input"),
        ("completionCondition", "completion"),
    ):
        text = _text(loop.find(_B + child))
        if text:
            parts.append(f"{label} {text}")
    return ", ".join(parts)


def _human_task(node: etree._Element) -> dict[str, str]:
    try:
        extensions = SpiffTaskParser._parse_extensions(node)
    except Exception:  # noqa: BLE001 - unreadable extensions: compare what Camunda attributes say
        extensions = {}
    meta = _normalize_human_task(node, extensions)
    values = {
        "form": meta.get("form_key"),
        "form_fields": ", ".join(f["id"] for f in meta.get("form_fields") or ()),
        "assignee": meta.get("assignee"),
        "candidate_groups": ", ".join(meta.get("candidate_groups") or ()),
        "candidate_users": ", ".join(meta.get("candidate_users") or ()),
        "due_date": meta.get("due_date"),
        "priority": meta.get("priority"),
    }
    return {k: str(v) for k, v in values.items() if v}


def _decision(node: etree._Element) -> str | None:
    for child in node.iter():
        if _local(child.tag) == "calledDecisionId" and _text(child):
            return _text(child)
    ref = next((v for k, v in node.attrib.items() if _local(k) == "decisionRef"), None)
    return ref.strip() if ref and ref.strip() else None


def _element(
    node: etree._Element, process: etree._Element, lanes: Mapping[str, str], names: Mapping[str, str]
) -> ElementSnapshot:
    kind = _local(node.tag)
    element_id = node.get("id") or ""
    props: dict[str, str | None] = {"lane": lanes.get(element_id)}
    parent = node.getparent()
    if kind != "lane" and parent is not None and parent is not process and parent.get("id"):
        props["container"] = parent.get("id")
    if kind in _EVENTS:
        props["trigger"] = _trigger(node, names)
        props["timer"] = _timer(node)
        if kind == "boundaryEvent":
            props["attached_to"] = node.get("attachedToRef")
            props["interrupting"] = "no" if node.get("cancelActivity") == "false" else "yes"
        elif kind == "startEvent" and parent is not process:
            props["interrupting"] = "no" if node.get("isInterrupting") == "false" else "yes"
    if kind in ("userTask", "manualTask"):
        props.update(_human_task(node))
    if kind in _GATEWAYS or kind in _ACTIVITIES:
        props["default_flow"] = node.get("default")
    if kind == "scriptTask":
        props["script"] = _text(node.find(_B + "script"))
    if kind == "callActivity":
        props["called_element"] = node.get("calledElement")
    if kind == "businessRuleTask":
        props["decision"] = _decision(node)
    if kind in _ACTIVITIES:
        props["multi_instance"] = _multi_instance(node)
    if kind == "sequenceFlow":
        props["source"] = node.get("sourceRef")
        props["target"] = node.get("targetRef")
        props["condition"] = _text(node.find(_B + "conditionExpression"))
    name = (node.get("name") or "").strip() or None
    properties = tuple((f, str(props[f])) for f in FIELDS if props.get(f))
    return ElementSnapshot(element_id, kind, name, properties)


def snapshot(files: Mapping[str, bytes], key: str) -> ProcessSnapshot | None:
    """The elements of process ``key`` (sub-processes included) in the first BPMN file defining it.

    None when no parseable BPMN file of the bundle defines ``key``.
    """
    for name, root in _roots(files):
        process = _process(root, key)
        if process is None:
            continue
        lanes, names = _lanes(process), _names_of(root)
        elements = tuple(
            _element(node, process, lanes, names)
            for node in process.iter()
            if isinstance(node.tag, str) and node.tag.startswith(_B)
            and _local(node.tag) in ELEMENT_TYPES and node.get("id")
        )
        process_name = (process.get("name") or "").strip() or None
        return ProcessSnapshot(key, process_name, name, elements)
    return None


# --------------------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------------------


def _compare(before: ElementSnapshot, after: ElementSnapshot) -> tuple[FieldChange, ...]:
    changes = []
    for field in FIELDS:
        if field == "type":
            old, new = before.type, after.type
        elif field == "name":
            old, new = before.name, after.name
        else:
            old, new = before.get(field), after.get(field)
        if old != new:
            changes.append(FieldChange(field, old, new))
    return tuple(changes)


def _file_changes(
    old_files: Mapping[str, bytes], new_files: Mapping[str, bytes], skip: Iterable[str]
) -> tuple[FileChange, ...]:
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    skipped = set(skip)
    found = []
    for name in sorted(set(old_files) | set(new_files)):
        if name in skipped:
            continue
        if name not in old_files:
            found.append(FileChange(name, "added"))
        elif name not in new_files:
            found.append(FileChange(name, "removed"))
        elif digest(old_files[name]) != digest(new_files[name]):
            found.append(FileChange(name, "changed"))
    return tuple(found)


def diff_bundles(
    key: str,
    old_version: int,
    old_files: Mapping[str, bytes],
    new_version: int,
    new_files: Mapping[str, bytes],
) -> DefinitionDiff:
    """Compare process ``key`` between two bundles by element id.

    Elements only in the newer bundle are ``added``, only in the older ``removed``, in both with a
    different property ``changed`` (listed in the newer version's document order). The files holding
    the process itself are left out of ``files`` (their changes are the element changes); other files
    are compared by content.
    """
    old = snapshot(old_files, key)
    new = snapshot(new_files, key)
    old_elements = {e.id: e for e in old.elements} if old else {}
    new_elements = {e.id: e for e in new.elements} if new else {}
    changed = []
    for element in new_elements.values():
        previous = old_elements.get(element.id)
        if previous is not None:
            changes = _compare(previous, element)
            if changes:
                changed.append(ElementChange(element.id, element.type, element.name, changes))
    process = ()
    old_name, new_name = (old.name if old else None), (new.name if new else None)
    if old_name != new_name:
        process = (FieldChange("process_name", old_name, new_name),)
    own_files = {s.file for s in (old, new) if s is not None}
    own_files = {name for name in own_files if name in old_files and name in new_files}
    return DefinitionDiff(
        key=key,
        from_version=old_version,
        to_version=new_version,
        process=process,
        added=tuple(e for i, e in new_elements.items() if i not in old_elements),
        removed=tuple(e for i, e in old_elements.items() if i not in new_elements),
        changed=tuple(changed),
        files=_file_changes(old_files, new_files, own_files),
    )


# --------------------------------------------------------------------------------------------------
# Problems on the diagram
# --------------------------------------------------------------------------------------------------


def shape_ids(content: bytes, element_ids: Iterable[str | None]) -> dict[str, str]:
    """For each element id, the id of the nearest element (itself or an ancestor) drawn on the diagram.

    Validation problems name the innermost element with an id (a ``timerEventDefinition``, a
    ``conditionExpression``); the diagram draws its event or flow. Ids with no drawn ancestor, and
    files that do not parse, are left out.
    """
    wanted = {i for i in element_ids if i}
    if not wanted:
        return {}
    try:
        root = parse_xml(content)
    except UnsafeXml:
        return {}
    drawn = {
        node.get("bpmnElement")
        for node in root.iter(_BPMNDI + "BPMNShape", _BPMNDI + "BPMNEdge")
        if node.get("bpmnElement")
    }
    found: dict[str, str] = {}
    for node in root.iter():
        element_id = node.get("id") if isinstance(node.tag, str) else None
        if element_id not in wanted or element_id in found:
            continue
        current: etree._Element | None = node
        while current is not None:
            if current.get("id") in drawn:
                found[element_id] = current.get("id")
                break
            current = current.getparent()
    return found
