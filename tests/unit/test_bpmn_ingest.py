"""Upload safety and lint of BPMN/DMN/form bundles (engine.bpmn, engine.lint), on real XML, no mocks."""

from __future__ import annotations

import json
import time

import pytest
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.util.task import TaskState

from engine.bpmn import (
    SERIALIZER_CONFIG,
    FormFieldMeta,
    HumanTaskMeta,
    UnsafeXml,
    human_task_meta,
    load_workflow_spec,
    parse_xml,
)
from engine.lint import BundleInvalid, BundleReport, Problem, ProcessInfo, check_bundle

NS = (
    'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:camunda="http://camunda.org/schema/1.0/bpmn" '
    'xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"'
)


def definitions(*processes: str, extra: str = "") -> bytes:
    body = "\n".join(processes)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<bpmn:definitions {NS} id="Definitions_1" targetNamespace="http://bpmn.io/schema/bpmn">\n'
        f"{extra}{body}\n"
        "</bpmn:definitions>\n"
    ).encode()


def process(pid: str, body: str, executable: str = "true") -> str:
    return f'  <bpmn:process id="{pid}" isExecutable="{executable}">\n{body}\n  </bpmn:process>'


def linear(pid: str, *nodes: str) -> str:
    """start -> nodes... -> end; each node is an element string with id n1, n2... in order."""
    ids = ["start"] + [f"n{i + 1}" for i in range(len(nodes))] + ["end"]
    flows = "\n".join(
        f'    <bpmn:sequenceFlow id="f{i}" sourceRef="{a}" targetRef="{b}" />'
        for i, (a, b) in enumerate(zip(ids, ids[1:], strict=False))
    )
    start, end = '    <bpmn:startEvent id="start" />\n', '\n    <bpmn:endEvent id="end" />\n'
    body = start + "\n".join(nodes) + end + flows
    return process(pid, body)


def errors(report: BundleReport) -> list[Problem]:
    return [p for p in report.problems if p.severity == "error"]


def only_error(report: BundleReport, needle: str) -> Problem:
    found = [p for p in errors(report) if needle in p.message]
    assert found, f"no error containing {needle!r} in {report.problems}"
    return found[0]


SIMPLE = definitions(linear("simple", '    <bpmn:task id="n1" name="Do it" />'))
USER_TASK_CAMUNDA = '    <bpmn:userTask id="n1" name="Approve" camunda:formKey="{key}" />'


# ---------------------------------------------------------------------------------------------------
# Hardened parsing
# ---------------------------------------------------------------------------------------------------

XXE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE bpmn:definitions [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="x">
  <bpmn:process id="leak" isExecutable="true">
    <bpmn:documentation>&xxe;</bpmn:documentation>
    <bpmn:startEvent id="start" />
  </bpmn:process>
</bpmn:definitions>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="x">
  <bpmn:process id="lolz" isExecutable="true"><bpmn:documentation>&lol9;</bpmn:documentation></bpmn:process>
</bpmn:definitions>
"""


def test_xxe_is_refused_and_never_reads_the_file() -> None:
    report = check_bundle({"leak.bpmn": XXE})
    assert not report.ok
    problem = only_error(report, "DOCTYPE")
    assert problem.file == "leak.bpmn"
    assert all("root:" not in p.message for p in report.problems)
    with pytest.raises(UnsafeXml):
        parse_xml(XXE)
    with pytest.raises(BundleInvalid) as caught:
        load_workflow_spec({"leak.bpmn": XXE}, "leak")
    assert any("DOCTYPE" in p.message for p in caught.value.problems)


def test_billion_laughs_is_refused_fast() -> None:
    started = time.perf_counter()
    report = check_bundle({"lolz.bpmn": BILLION_LAUGHS})
    assert time.perf_counter() - started < 1.0
    assert not report.ok
    only_error(report, "DOCTYPE")


def test_doctype_without_entities_is_refused() -> None:
    data = SIMPLE.replace(b"<bpmn:definitions", b"<!DOCTYPE bpmn:definitions>\n<bpmn:definitions", 1)
    report = check_bundle({"plain.bpmn": data})
    assert only_error(report, "DOCTYPE").file == "plain.bpmn"


def test_malformed_xml_reports_the_line() -> None:
    data = b'<?xml version="1.0"?>\n<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">\n'
    data += b'  <bpmn:process id="p">\n    <bpmn:task id="t">\n  </bpmn:process>\n</bpmn:definitions>\n'
    report = check_bundle({"broken.bpmn": data})
    problem = only_error(report, "malformed XML")
    assert problem.file == "broken.bpmn"
    assert problem.line == 5  # </bpmn:process> closes the unclosed <bpmn:task>


def test_oversized_file_is_refused_before_parsing() -> None:
    padding = b"<!-- " + b"x" * (5 * 1024 * 1024) + b" -->\n"
    big = SIMPLE.replace(b"</bpmn:definitions>", padding + b"</bpmn:definitions>")
    report = check_bundle({"big.bpmn": big})
    assert "larger than the limit" in only_error(report, "bytes").message
    small_limit = check_bundle({"simple.bpmn": SIMPLE}, max_file_bytes=100)
    assert not small_limit.ok
    assert check_bundle({"simple.bpmn": SIMPLE}).ok


def test_work_an_upload_can_cause_is_bounded() -> None:
    tasks = "\n".join(f'    <bpmn:task id="t{i}" />' for i in range(10_001))
    started = time.perf_counter()
    report = check_bundle({"huge.bpmn": definitions(process("huge", tasks))})
    assert "more than the limit" in only_error(report, "BPMN elements").message
    form = {"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(12_000)}}
    data = definitions(linear("formy", USER_TASK_CAMUNDA.format(key="big.json")))
    report = check_bundle({"formy.bpmn": data, "big.json": json.dumps(form).encode()})
    assert only_error(report, "too large").file == "big.json"
    assert time.perf_counter() - started < 2.0


def test_garbage_never_raises() -> None:
    bundles: list[dict] = [
        {},
        {"x.bpmn": b""},
        {"x.bpmn": b"\x00\xff\xfe garbage"},
        {"x.bpmn": b"<notbpmn/>"},
        {"x.dmn": b"<definitions/>"},
        {"x.json": b"[" * 100_000},
        {"x.bpmn": 42},
        {"../../etc/passwd.bpmn": SIMPLE},
        {"notes.txt": b"hello"},
        {"forms.json": b"{}", "d.dmn": b"<x/>"},
    ]
    for files in bundles:
        report = check_bundle(files)
        assert isinstance(report, BundleReport)
        assert not report.ok, files.keys()
        assert all(p.message and not p.message.startswith("internal error") for p in report.problems)


def test_unsupported_file_type() -> None:
    report = check_bundle({"simple.bpmn": SIMPLE, "readme.txt": b"hi"})
    assert only_error(report, "unsupported file type").file == "readme.txt"


# ---------------------------------------------------------------------------------------------------
# Lint
# ---------------------------------------------------------------------------------------------------


def timer_bundle(expression: str) -> bytes:
    return definitions(
        linear(
            "timed",
            '    <bpmn:intermediateCatchEvent id="n1" name="Wait">\n'
            f"      <bpmn:timerEventDefinition><bpmn:timeDuration>{expression}</bpmn:timeDuration>"
            "</bpmn:timerEventDefinition>\n    </bpmn:intermediateCatchEvent>",
        )
    )


def test_unquoted_iso_timer_is_an_error_quoted_is_fine() -> None:
    report = check_bundle({"timer.bpmn": timer_bundle("PT2S")})
    problem = only_error(report, "quote the ISO 8601 literal")
    assert problem.element_id == "n1"
    assert problem.line is not None
    assert check_bundle({"timer.bpmn": timer_bundle('"PT2S"')}).ok
    assert check_bundle({"timer.bpmn": timer_bundle("sla_duration")}).ok
    assert not check_bundle({"timer.bpmn": timer_bundle("R3/PT10M")}).ok
    broken = check_bundle({"t.bpmn": timer_bundle('"PT2S" +')})
    assert "not valid Python" in only_error(broken, "Python").message


def test_process_without_id() -> None:
    data = definitions('  <bpmn:process isExecutable="true"><bpmn:startEvent id="s" /></bpmn:process>')
    report = check_bundle({"noid.bpmn": data})
    problem = only_error(report, "without id")
    assert problem.line == 3


def test_duplicate_ids_in_a_file_and_process_ids_across_files() -> None:
    data = definitions(linear("dup", '    <bpmn:task id="n1" />\n    <bpmn:task id="n1" />'))
    report = check_bundle({"dup.bpmn": data})
    problem = only_error(report, "duplicate id 'n1'")
    assert problem.element_id == "n1"
    assert problem.line is not None

    report = check_bundle({"a.bpmn": SIMPLE, "b.bpmn": SIMPLE})
    problem = only_error(report, "duplicate process id 'simple'")
    assert problem.file == "b.bpmn"
    assert "a.bpmn" in problem.message


def test_non_executable_process_is_a_warning_unless_nothing_is_executable() -> None:
    helper = process("pool", '    <bpmn:startEvent id="ps" />', executable="false")
    report = check_bundle({"two.bpmn": definitions(linear("main", '    <bpmn:task id="n1" />'), helper)})
    assert report.ok
    assert [p.id for p in report.processes] == ["main"]
    assert any(p.severity == "warning" and p.element_id == "pool" for p in report.problems)

    report = check_bundle({"pool.bpmn": definitions(helper)})
    assert not report.ok
    only_error(report, "no executable process")


def test_missing_form_file() -> None:
    data = definitions(linear("formy", USER_TASK_CAMUNDA.format(key="leave.json")))
    report = check_bundle({"formy.bpmn": data})
    problem = only_error(report, "form 'leave.json' is not in this bundle")
    assert problem.element_id == "n1"
    ok = check_bundle({"formy.bpmn": data, "leave.json": b'{"type": "object"}'})
    assert ok.ok, ok.problems
    # a Camunda web-app form cannot be rendered but does not block deployment
    embedded = definitions(linear("formy", USER_TASK_CAMUNDA.format(key="embedded:app:forms/x.html")))
    report = check_bundle({"formy.bpmn": embedded})
    assert report.ok
    assert any(p.severity == "warning" for p in report.problems)


def test_missing_spiff_form_file() -> None:
    task = (
        '    <bpmn:userTask id="n1"><bpmn:extensionElements><spiffworkflow:properties>'
        '<spiffworkflow:property name="formJsonSchemaFilename" value="order.json" />'
        "</spiffworkflow:properties></bpmn:extensionElements></bpmn:userTask>"
    )
    report = check_bundle({"order.bpmn": definitions(linear("order", task))})
    assert only_error(report, "'order.json'").element_id == "n1"


def test_invalid_json_schema_form() -> None:
    data = definitions(linear("formy", USER_TASK_CAMUNDA.format(key="leave.json")))
    report = check_bundle({"formy.bpmn": data, "leave.json": b'{"type": "objekt", "required": "x"}'})
    problem = only_error(report, "not a valid JSON Schema")
    assert problem.file == "leave.json"

    report = check_bundle({"formy.bpmn": data, "leave.json": b'{\n  "type": "object",\n  oops\n}'})
    problem = only_error(report, "not valid JSON")
    assert (problem.file, problem.line) == ("leave.json", 3)


def test_unknown_called_process() -> None:
    call = '    <bpmn:callActivity id="n1" calledElement="billing" />'
    data = definitions(linear("caller", call))
    report = check_bundle({"caller.bpmn": data})
    problem = only_error(report, "'billing'")
    assert (problem.element_id, problem.file) == ("n1", "caller.bpmn")
    assert check_bundle({"caller.bpmn": data}, available_process_ids={"billing"}).ok
    billing = definitions(linear("billing", '    <bpmn:task id="n1" />'))
    both = {"caller.bpmn": data, "billing.bpmn": billing}
    assert check_bundle(both).ok
    spec, subprocess_specs = load_workflow_spec(both, "caller")
    assert spec.name == "caller"
    assert set(subprocess_specs) == {"billing"}


def test_script_syntax_error_reports_file_line_and_element() -> None:
    script = (
        '    <bpmn:scriptTask id="n1" name="Compute" scriptFormat="python">\n'
        "      <bpmn:script>total = 1\n"
        "if total &gt; 0\n"
        "    total = 2</bpmn:script>\n"
        "    </bpmn:scriptTask>"
    )
    data = definitions(linear("scripted", script))
    report = check_bundle({"scripted.bpmn": data})
    problem = only_error(report, "script is not valid Python")
    lines = data.decode().splitlines()
    assert problem.element_id == "n1"
    assert problem.line is not None
    assert lines[problem.line - 1] == "if total &gt; 0"
    assert "line 2 of the script" in problem.message


def test_sandbox_refusals_are_upload_errors() -> None:
    script = '    <bpmn:scriptTask id="n1"><bpmn:script>import os</bpmn:script></bpmn:scriptTask>'
    report = check_bundle({"evil.bpmn": definitions(linear("evil", script))})
    assert only_error(report, "refused by the script sandbox").element_id == "n1"
    report = check_bundle({"evil.bpmn": timer_bundle("__import__('os').system('id')")})
    assert only_error(report, "refused by the script sandbox").element_id == "n1"


def test_condition_and_juel_expressions() -> None:
    body = """    <bpmn:startEvent id="start" />
    <bpmn:exclusiveGateway id="gw" default="f_no" />
    <bpmn:task id="yes" />
    <bpmn:task id="no" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="gw" />
    <bpmn:sequenceFlow id="f_yes" sourceRef="gw" targetRef="yes">
      <bpmn:conditionExpression>${approved}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f_no" sourceRef="gw" targetRef="no" />
    <bpmn:sequenceFlow id="f1" sourceRef="yes" targetRef="end" />
    <bpmn:sequenceFlow id="f2" sourceRef="no" targetRef="end" />"""
    report = check_bundle({"gw.bpmn": definitions(process("decide", body))})
    problem = only_error(report, "JUEL")
    assert problem.element_id == "f_yes"
    fixed = body.replace("${approved}", "approved == True")
    assert check_bundle({"gw.bpmn": definitions(process("decide", fixed))}).ok


def test_unreachable_unsupported_element_is_reported() -> None:
    body = linear("cg", '    <bpmn:task id="n1" />').replace(
        '<bpmn:endEvent id="end" />', '<bpmn:endEvent id="end" />\n    <bpmn:complexGateway id="island" />'
    )
    report = check_bundle({"cg.bpmn": definitions(body)})
    problem = only_error(report, "complexGateway")
    assert problem.element_id == "island"


def test_xsd_violation_has_a_line() -> None:
    data = definitions(linear("bad", '    <bpmn:task id="n1" />\n    <bpmn:frobnicate id="x" />'))
    report = check_bundle({"bad.bpmn": data})
    problem = only_error(report, "XSD")
    assert problem.line is not None


def test_no_start_event() -> None:
    data = definitions(process("nostart", '    <bpmn:task id="t" />'))
    problem = only_error(check_bundle({"nostart.bpmn": data}), "no start event")
    assert problem.element_id == "nostart"


DMN = b"""<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="defs" name="d" namespace="x">
  <decision id="discount" name="Discount">
    <decisionTable id="table">
      <input id="in1" label="Amount"><inputExpression id="ie1" typeRef="integer"><text>amount</text>
      </inputExpression></input>
      <output id="out1" name="discount" typeRef="integer" />
      <rule id="r1">
        <inputEntry id="e1"><text>{cell}</text></inputEntry>
        <outputEntry id="o1"><text>10</text></outputEntry>
      </rule>
    </decisionTable>
  </decision>
</definitions>
"""


def rule_bundle(ref: str) -> bytes:
    task = (
        '    <bpmn:businessRuleTask id="n1"><bpmn:extensionElements>'
        f"<spiffworkflow:calledDecisionId>{ref}</spiffworkflow:calledDecisionId>"
        "</bpmn:extensionElements></bpmn:businessRuleTask>"
    )
    return definitions(linear("rules", task))


def test_business_rule_task_decisions() -> None:
    dmn = DMN.replace(b"{cell}", b"&gt; 100")
    assert check_bundle({"rules.bpmn": rule_bundle("discount"), "discount.dmn": dmn}).ok
    report = check_bundle({"rules.bpmn": rule_bundle("rebate"), "discount.dmn": dmn})
    assert only_error(report, "'rebate'").element_id == "n1"
    camunda = rule_bundle("x").replace(
        b'<bpmn:businessRuleTask id="n1">', b'<bpmn:businessRuleTask id="n1" camunda:decisionRef="discount">'
    ).replace(b"<spiffworkflow:calledDecisionId>x</spiffworkflow:calledDecisionId>", b"")
    assert check_bundle({"rules.bpmn": camunda, "discount.dmn": dmn}).ok
    bare_in = DMN.replace(b"{cell}", b'in [1, 2]')
    only_error(check_bundle({"rules.bpmn": rule_bundle("discount"), "discount.dmn": bare_in}), "? in [")


# ---------------------------------------------------------------------------------------------------
# A valid bundle with both human-task flavours, run mid-way through the serializer
# ---------------------------------------------------------------------------------------------------

FORM = {
    "type": "object",
    "required": ["amount"],
    "properties": {"amount": {"type": "number"}, "reason": {"type": "string"}},
}
UI_SCHEMA = {"reason": {"ui:widget": "textarea"}}

APPROVAL = definitions(
    """  <bpmn:process id="approval" name="Leave approval" isExecutable="true">
    <bpmn:laneSet id="lanes">
      <bpmn:lane id="lane_staff" name="Staff"><bpmn:flowNodeRef>request</bpmn:flowNodeRef></bpmn:lane>
      <bpmn:lane id="lane_mgr" name="Managers"><bpmn:flowNodeRef>approve</bpmn:flowNodeRef></bpmn:lane>
    </bpmn:laneSet>
    <bpmn:startEvent id="start" />
    <bpmn:userTask id="request" name="Request leave">
      <bpmn:documentation>Ask for days off</bpmn:documentation>
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="formJsonSchemaFilename" value="request.json" />
          <spiffworkflow:property name="formUiSchemaFilename" value="request-uischema.json" />
          <spiffworkflow:property name="candidateGroups" value="staff" />
        </spiffworkflow:properties>
        <spiffworkflow:instructionsForEndUser>Fill in **the form**</spiffworkflow:instructionsForEndUser>
      </bpmn:extensionElements>
    </bpmn:userTask>
    <bpmn:userTask id="approve" name="Approve" camunda:formKey="approve.json"
        camunda:candidateGroups="managers, hr" camunda:candidateUsers="alice,bob" camunda:assignee="carol"
        camunda:dueDate="${due_at}" camunda:priority="70">
      <bpmn:extensionElements>
        <camunda:formData>
          <camunda:formField id="decision" label="Decision" type="enum" defaultValue="yes">
            <camunda:validation><camunda:constraint name="required" /></camunda:validation>
            <camunda:value id="yes" name="Approve" />
            <camunda:value id="no" name="Reject" />
          </camunda:formField>
        </camunda:formData>
      </bpmn:extensionElements>
    </bpmn:userTask>
    <bpmn:intermediateCatchEvent id="pause">
      <bpmn:timerEventDefinition><bpmn:timeDuration>"PT0S"</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>
    <bpmn:scriptTask id="record" scriptFormat="python"><bpmn:script>recorded = decision == "yes"</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="request" />
    <bpmn:sequenceFlow id="f2" sourceRef="request" targetRef="approve" />
    <bpmn:sequenceFlow id="f3" sourceRef="approve" targetRef="pause" />
    <bpmn:sequenceFlow id="f5" sourceRef="pause" targetRef="record" />
    <bpmn:sequenceFlow id="f4" sourceRef="record" targetRef="end" />
  </bpmn:process>"""
)
BUNDLE = {
    "approval.bpmn": APPROVAL,
    "request.json": json.dumps(FORM).encode(),
    "request-uischema.json": json.dumps(UI_SCHEMA).encode(),
    "approve.json": json.dumps({"properties": {"decision": {"enum": ["yes", "no"]}}}).encode(),
}


def test_valid_bundle_report() -> None:
    report = check_bundle(BUNDLE)
    assert report.ok, report.problems
    assert report.problems == ()
    assert report.processes == (ProcessInfo("approval", "Leave approval", "approval.bpmn"),)


def test_human_task_meta_reads_both_flavours() -> None:
    spec, _ = load_workflow_spec(BUNDLE, "approval")
    spiff = human_task_meta(spec.task_specs["request"])
    assert spiff == HumanTaskMeta(
        form_key="request.json",
        form_ui_schema="request-uischema.json",
        candidate_groups=("staff",),
        lane="Staff",
        documentation="Ask for days off",
        instructions="Fill in **the form**",
    )
    camunda = human_task_meta(spec.task_specs["approve"])
    assert camunda.form_key == "approve.json"
    assert camunda.candidate_groups == ("managers", "hr")
    assert camunda.candidate_users == ("alice", "bob")
    assert camunda.assignee == "carol"
    assert camunda.due_date == "${due_at}"
    assert camunda.priority == "70"
    assert camunda.lane == "Managers"
    assert camunda.form_fields == (
        FormFieldMeta(
            id="decision",
            label="Decision",
            type="enum",
            default_value="yes",
            options=(("yes", "Approve"), ("no", "Reject")),
            validation=(("required", None),),
        ),
    )
    assert human_task_meta(spec.task_specs["record"]) == HumanTaskMeta()


def test_workflow_round_trips_through_the_serializer_mid_run() -> None:
    spec, subprocess_specs = load_workflow_spec(BUNDLE, "approval")
    serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SERIALIZER_CONFIG))
    workflow = BpmnWorkflow(spec, subprocess_specs)
    workflow.do_engine_steps()
    [request] = workflow.get_tasks(state=TaskState.READY, manual=True)
    assert request.task_spec.bpmn_id == "request"
    request.data.update({"amount": 3})
    request.run()
    workflow.do_engine_steps()

    state = serializer.serialize_json(workflow)
    restored = serializer.deserialize_json(state)
    [approve] = restored.get_tasks(state=TaskState.READY, manual=True)
    assert approve.task_spec.bpmn_id == "approve"
    meta = human_task_meta(approve.task_spec)  # extensions survive serialization
    assert meta.candidate_groups == ("managers", "hr")
    assert meta.form_fields[0].id == "decision"
    approve.data.update({"decision": "yes"})
    approve.run()
    restored.refresh_timers()
    restored.do_engine_steps()
    for _ in range(20):  # the zero-length timer fires on the next refresh
        if restored.is_completed():
            break
        time.sleep(0.01)
        restored.refresh_timers()
        restored.do_engine_steps()
    assert restored.is_completed()
    assert restored.data["recorded"] is True
    assert restored.data["amount"] == 3


def test_unusable_due_date_and_priority_are_warnings() -> None:
    task = '    <bpmn:userTask id="n1" camunda:dueDate="{due}" camunda:priority="{priority}" />'
    bad = check_bundle({"t.bpmn": definitions(linear("t", task.format(due="tomorrow", priority="high")))})
    assert bad.ok
    assert {(p.severity, p.element_id) for p in bad.problems} == {("warning", "n1")}
    assert len(bad.problems) == 2
    good = task.format(due="P2D", priority="${prio}")
    assert check_bundle({"t.bpmn": definitions(linear("t", good))}).problems == ()


def test_load_workflow_spec_refuses_what_cannot_be_built() -> None:
    with pytest.raises(BundleInvalid) as caught:
        load_workflow_spec(BUNDLE, "nope")
    assert "process 'nope' cannot be loaded" in caught.value.problems[-1].message
    assert "approval" in caught.value.problems[-1].message

    no_start = {"nostart.bpmn": definitions(process("nostart", '    <bpmn:task id="t" />'))}
    with pytest.raises(BundleInvalid) as caught:
        load_workflow_spec(no_start, "nostart")
    assert any(p.element_id == "nostart" and p.file == "nostart.bpmn" for p in caught.value.problems)
    assert "nostart.bpmn" in str(caught.value)


def test_load_workflow_spec_tolerates_lint_only_errors() -> None:
    """A definition deployed before a lint rule got stricter must still load for its instances."""
    lax = dict(BUNDLE)
    lax["request.json"] = b"not json"
    assert not check_bundle(lax).ok
    spec, _ = load_workflow_spec(lax, "approval")
    assert spec.name == "approval"
