"""engine.definition_diff: what changed between two versions of a process, element by element (no
database: bundles are plain bytes)."""

from __future__ import annotations

import pytest

from engine.definition_diff import (
    FIELDS,
    DefinitionDiff,
    FieldChange,
    FileChange,
    diff_bundles,
    find_process_file,
    shape_ids,
    snapshot,
)
from tests.conftest import process_bundle

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"
    xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="d" targetNamespace="t">
  <bpmn:message id="Message_paid" name="payment_received" />"""


def model(body: str, *, name: str = "Leave", lanes: str = "") -> bytes:
    return f"""{HEAD}
  <bpmn:process id="leave" name="{name}" isExecutable="true">{lanes}
{body}
  </bpmn:process>
</bpmn:definitions>""".encode()


V1 = """
    <bpmn:startEvent id="start" />
    <bpmn:userTask id="approve" name="Approve" camunda:formKey="decision.json"
        camunda:candidateGroups="managers" camunda:dueDate="P2D" />
    <bpmn:boundaryEvent id="remind" attachedToRef="approve" cancelActivity="false">
      <bpmn:timerEventDefinition id="T1">
        <bpmn:timeDuration>"PT4H"</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:exclusiveGateway id="ok" default="f_no" />
    <bpmn:scriptTask id="note" name="Note"><bpmn:script>x = 1</bpmn:script></bpmn:scriptTask>
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="approve" />
    <bpmn:sequenceFlow id="f2" sourceRef="approve" targetRef="ok" />
    <bpmn:sequenceFlow id="f_yes" sourceRef="ok" targetRef="end">
      <bpmn:conditionExpression>decision == "approve"</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f_no" sourceRef="ok" targetRef="note" />"""

V2 = """
    <bpmn:startEvent id="start" />
    <bpmn:userTask id="approve" name="Approve leave" camunda:formKey="decision2.json"
        camunda:candidateGroups="managers, hr" camunda:assignee="${boss}" camunda:dueDate="P2D" />
    <bpmn:boundaryEvent id="remind" attachedToRef="approve" cancelActivity="false">
      <bpmn:timerEventDefinition id="T1">
        <bpmn:timeDuration>"PT2H"</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:exclusiveGateway id="ok" default="f_no" />
    <bpmn:intermediateCatchEvent id="wait_pay" name="Paid">
      <bpmn:messageEventDefinition id="M1" messageRef="Message_paid" />
    </bpmn:intermediateCatchEvent>
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="approve" />
    <bpmn:sequenceFlow id="f2" sourceRef="approve" targetRef="ok" />
    <bpmn:sequenceFlow id="f_yes" sourceRef="ok" targetRef="wait_pay">
      <bpmn:conditionExpression>decision in ("approve", "ok")</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f_no" sourceRef="ok" targetRef="end" />
    <bpmn:sequenceFlow id="f3" sourceRef="wait_pay" targetRef="end" />"""

LANES = """
    <bpmn:laneSet id="ls">
      <bpmn:lane id="lane_mgr" name="{lane}"><bpmn:flowNodeRef>approve</bpmn:flowNodeRef></bpmn:lane>
    </bpmn:laneSet>"""


def bundle(body: str, **kw) -> dict[str, bytes]:
    return {"leave.bpmn": model(body, **kw), "decision.json": b"{}"}


class TestSnapshot:
    def test_reads_behaviour_not_layout(self):
        found = snapshot(bundle(V1, lanes=LANES.format(lane="Managers")), "leave")
        assert found is not None and (found.key, found.name, found.file) == ("leave", "Leave", "leave.bpmn")
        approve = found.element("approve")
        assert approve.type == "userTask" and approve.name == "Approve"
        assert dict(approve.properties) == {
            "lane": "Managers", "form": "decision.json", "candidate_groups": "managers", "due_date": "P2D"
        }
        remind = found.element("remind")
        assert remind.get("timer") == 'timeDuration: "PT4H"' and remind.get("trigger") == "timer"
        assert remind.get("attached_to") == "approve" and remind.get("interrupting") == "no"
        assert found.element("f_yes").get("condition") == 'decision == "approve"'
        assert found.element("ok").get("default_flow") == "f_no"
        assert found.element("note").get("script") == "x = 1"
        assert found.element("lane_mgr").type == "lane"
        assert found.element("T1") is None  # event definitions are folded into their event
        assert [e.id for e in found.human_tasks] == ["approve"]
        assert [p for e in found.elements for p, _v in e.properties if p not in FIELDS] == []

    def test_spiff_properties_count_as_assignment(self):
        body = """
    <bpmn:userTask id="fill"><bpmn:extensionElements><spiffworkflow:properties>
      <spiffworkflow:property name="formJsonSchemaFilename" value="claim.json" />
      <spiffworkflow:property name="candidateGroups" value="clerks" />
    </spiffworkflow:properties></bpmn:extensionElements></bpmn:userTask>"""
        fill = snapshot({"leave.bpmn": model(body)}, "leave").element("fill")
        assert fill.get("form") == "claim.json" and fill.get("candidate_groups") == "clerks"

    def test_unknown_key_or_unsafe_file(self):
        assert snapshot(bundle(V1), "other") is None
        evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
        assert snapshot({"evil.bpmn": evil}, "leave") is None
        assert find_process_file({"evil.bpmn": evil, **bundle(V1)}, "leave") == "leave.bpmn"
        assert find_process_file(bundle(V1), "other") is None


class TestDiff:
    def test_added_removed_and_changed_by_element_id(self):
        old = bundle(V1, lanes=LANES.format(lane="Managers"))
        new = bundle(V2, name="Leave request", lanes=LANES.format(lane="Line managers"))
        new["decision2.json"] = b"{}"
        diff = diff_bundles("leave", 1, old, 2, new)
        assert isinstance(diff, DefinitionDiff) and not diff.empty
        assert diff.process == (FieldChange("process_name", "Leave", "Leave request"),)
        assert [e.id for e in diff.added] == ["wait_pay", "f3"]
        assert diff.added[0].get("trigger") == "message payment_received"
        assert [e.id for e in diff.removed] == ["note"]
        changed = {c.id: {f.field: (f.before, f.after) for f in c.changes} for c in diff.changed}
        assert changed["approve"] == {
            "name": ("Approve", "Approve leave"),
            "lane": ("Managers", "Line managers"),
            "form": ("decision.json", "decision2.json"),
            "assignee": (None, "${boss}"),
            "candidate_groups": ("managers", "managers, hr"),
        }
        assert changed["remind"] == {"timer": ('timeDuration: "PT4H"', 'timeDuration: "PT2H"')}
        assert changed["f_yes"] == {
            "target": ("end", "wait_pay"),
            "condition": ('decision == "approve"', 'decision in ("approve", "ok")'),
        }
        assert changed["f_no"] == {"target": ("note", "end")}
        assert changed["lane_mgr"] == {"name": ("Managers", "Line managers")}
        assert set(changed) == {"approve", "remind", "f_yes", "f_no", "lane_mgr"}
        assert diff.files == (FileChange("decision2.json", "added"),)

    def test_type_change_keeps_the_id(self):
        v2 = V1.replace("scriptTask", "userTask").replace("<bpmn:script>x = 1</bpmn:script>", "")
        diff = diff_bundles("leave", 1, bundle(V1), 2, bundle(v2))
        [change] = diff.changed
        assert change.id == "note" and change.type == "userTask"
        assert {f.field: (f.before, f.after) for f in change.changes} == {
            "type": ("scriptTask", "userTask"), "script": ("x = 1", None)
        }

    def test_same_content_and_layout_only_changes_are_empty(self):
        start = b'<bpmn:startEvent id="start" />'
        moved = model(V1).replace(start, b'<bpmn:startEvent id="start">\n</bpmn:startEvent>')
        assert diff_bundles("leave", 1, bundle(V1), 1, bundle(V1)).empty
        assert diff_bundles("leave", 1, bundle(V1), 2, {**bundle(V1), "leave.bpmn": moved}).empty

    def test_other_files_are_compared_by_content(self):
        new = {**bundle(V1), "decision.json": b'{"type": "object"}', "rules.dmn": b"<x/>"}
        diff = diff_bundles("leave", 1, {**bundle(V1), "old.json": b"{}"}, 2, new)
        assert diff.files == (
            FileChange("decision.json", "changed"),
            FileChange("old.json", "removed"),
            FileChange("rules.dmn", "added"),
        )

    def test_shipped_process_against_itself(self):
        files = process_bundle("expense_approval")
        assert diff_bundles("expense_approval", 1, files, 2, files).empty


class TestShapeIds:
    def test_problems_are_drawn_on_the_nearest_shape(self):
        xml = model(V1).replace(b"</bpmn:definitions>", b"""<bpmndi:BPMNDiagram id="dg">
<bpmndi:BPMNPlane id="pl" bpmnElement="leave">
  <bpmndi:BPMNShape id="remind_di" bpmnElement="remind"><dc:Bounds x="1" y="1" width="36" height="36" />
  </bpmndi:BPMNShape>
  <bpmndi:BPMNEdge id="f_yes_di" bpmnElement="f_yes" />
</bpmndi:BPMNPlane></bpmndi:BPMNDiagram></bpmn:definitions>""")
        assert shape_ids(xml, ["T1", "remind", "f_yes", "approve", None, "nope"]) == {
            "T1": "remind", "remind": "remind", "f_yes": "f_yes"
        }

    @pytest.mark.parametrize("content", [b"", b"<not xml", b'<!DOCTYPE x []><x id="T1"/>'])
    def test_unreadable_files_mark_nothing(self, content):
        assert shape_ids(content, ["T1"]) == {}
