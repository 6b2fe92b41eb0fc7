"""The process designer's pages and API over Flask's client and a real database (SQLite and PostgreSQL):
the definitions list, upload (validation report per file, line and element; deploy as a new version),
version page (files, XML, forms), comparison of versions, form preview, the modeler's save, and who
may see any of it (designers and administrators; employees and managers get 403)."""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from pathlib import Path

import pytest

from tests.conftest import process_bundle
from tests.integration.web_support import PASSWORD
from tests.integration.web_support import Session as BaseSession

KEY = "expense_approval"
BPMN = "expense_approval.bpmn"


def reminder_bundle(expression: str) -> dict[str, bytes]:
    """The expense claim with a non-interrupting reminder timer on the manager's approval (drawn)."""
    files = process_bundle(KEY)
    xml = files[BPMN].decode()
    gateway = '    <bpmn:exclusiveGateway id="approved_gateway"'
    xml = xml.replace(
        gateway,
        f"""    <bpmn:boundaryEvent id="remind" name="提醒 Remind" attachedToRef="manager_approval"
        cancelActivity="false">
      <bpmn:outgoing>Flow_remind</bpmn:outgoing>
      <bpmn:timerEventDefinition id="TimerEventDefinition_remind">
        <bpmn:timeDuration>{expression}</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:endEvent id="reminded_end" name="已提醒 Reminded">
      <bpmn:incoming>Flow_remind</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="Flow_remind" sourceRef="remind" targetRef="reminded_end" />
{gateway}""",
        1,
    )
    xml = xml.replace(
        "        <bpmn:flowNodeRef>rejected_end</bpmn:flowNodeRef>",
        """        <bpmn:flowNodeRef>rejected_end</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>remind</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>reminded_end</bpmn:flowNodeRef>""",
        1,
    )
    xml = xml.replace(
        "    </bpmndi:BPMNPlane>",
        """      <bpmndi:BPMNShape id="remind_di" bpmnElement="remind">
        <dc:Bounds x="332" y="277" width="36" height="36" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="reminded_end_di" bpmnElement="reminded_end">
        <dc:Bounds x="378" y="280" width="36" height="36" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="Flow_remind_di" bpmnElement="Flow_remind">
        <di:waypoint x="368" y="300" /><di:waypoint x="378" y="298" />
      </bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>""",
        1,
    )
    assert "remind_di" in xml and 'id="remind"' in xml
    return {**files, BPMN: xml.encode()}


CALLER = "purchase"


def call_bundle(called: str) -> dict[str, bytes]:
    """A purchase (start, call activity ``pay``, end; drawn) calling ``called``, and in its own file the
    ``purchase_payment`` process of the same bundle, which it may call."""
    caller = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"
                  xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
                  xmlns:di="http://www.omg.org/spec/DD/20100524/DI"
                  id="Definitions_purchase" targetNamespace="http://baton.test">
  <bpmn:process id="{CALLER}" name="采购 Purchase" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="pay" />
    <bpmn:callActivity id="pay" name="付款 Pay" calledElement="{called}" />
    <bpmn:sequenceFlow id="f2" sourceRef="pay" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
  <bpmndi:BPMNDiagram id="BPMNDiagram_purchase">
    <bpmndi:BPMNPlane id="BPMNPlane_purchase" bpmnElement="{CALLER}">
      <bpmndi:BPMNShape id="start_di" bpmnElement="start">
        <dc:Bounds x="152" y="102" width="36" height="36" /></bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="pay_di" bpmnElement="pay">
        <dc:Bounds x="240" y="80" width="100" height="80" /></bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="end_di" bpmnElement="end">
        <dc:Bounds x="392" y="102" width="36" height="36" /></bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="f1_di" bpmnElement="f1">
        <di:waypoint x="188" y="120" /><di:waypoint x="240" y="120" /></bpmndi:BPMNEdge>
      <bpmndi:BPMNEdge id="f2_di" bpmnElement="f2">
        <di:waypoint x="340" y="120" /><di:waypoint x="392" y="120" /></bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>
"""
    payment = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="Definitions_payment"
                  targetNamespace="http://baton.test">
  <bpmn:process id="purchase_payment" name="采购付款 Purchase payment" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""
    return {f"{CALLER}.bpmn": caller.encode(), "purchase_payment.bpmn": payment.encode()}


def modeler_save(session, files: dict[str, bytes], filename: str):
    """Post a bundle as the modeler's "save as new version" does: the modelled file and, base64, the rest."""
    data = {"xml": files[filename].decode(), "filename": filename, "companion_name": [], "companion": []}
    for name, content in files.items():
        if name != filename:
            data["companion_name"].append(name)
            data["companion"].append(base64.b64encode(content).decode())
    return session.post("/designer/modeler/deploy", data)


@pytest.fixture
def eng(app):
    return app.extensions["baton.engine"]


@pytest.fixture
def org(eng):
    """sun designs processes (English), admin administers, li is an employee, wang a manager."""
    identity = eng.identity
    identity.create_user("sun", PASSWORD, role="designer", display_name="Sun Designer", locale="en")
    identity.create_user("admin", PASSWORD, role="admin", locale="en")
    identity.create_user(
        "li", PASSWORD, role="employee", display_name="李四", groups=["employee"], create_missing=True
    )
    identity.create_user("wang", PASSWORD, role="manager", groups=["managers"], create_missing=True)
    eng.repository.deploy(process_bundle(KEY), deployed_by="sun")
    return identity


class Session(BaseSession):
    """A logged-in designer's session, which can upload bundles."""

    def upload(self, files: dict[str, bytes], action: str = "deploy", **kw):
        from io import BytesIO

        data = {"files": [(BytesIO(content), name) for name, content in files.items()], "action": action}
        return self.post("/designer/upload", data, content_type="multipart/form-data", **kw)


@pytest.fixture
def login(app, org):
    return lambda username: Session(app, username)


def bearer(client, username: str) -> dict[str, str]:
    answer = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
    return {"Authorization": f"Bearer {answer.get_json()['token']}"}


def text_of(html: str) -> str:
    """The page's text without tags and with single spaces (what a reader sees)."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


class TestDefinitionsList:
    def test_lists_every_version_with_deployer_date_and_running_instances(self, eng, login):
        for n in range(2):
            eng.runtime.start(KEY, business_key=f"EXP-{n}", started_by="li", variables={"initiator": "li"})
        eng.repository.deploy(reminder_bundle('"PT2H"'), deployed_by="admin")
        eng.runtime.start(KEY, business_key="EXP-9", started_by="li", variables={"initiator": "li"})
        page = text_of(login("sun").html("/designer"))
        assert "费用报销 Expense claim" in page and "Versions: 2" in page
        when = r"\d{4}-\d\d-\d\d \d\d:\d\d"
        assert re.search(rf"Version 2 Deployed by admin {when} Running: 1", page), page
        assert re.search(rf"Version 1 Deployed by Sun Designer {when} Running: 2", page), page
        assert "Changes from version 1" in page

    def test_in_chinese_with_the_nav_link(self, eng, login):
        eng.identity.update_user("sun", locale="zh_CN", actor="sun")
        html = login("sun").html("/designer")
        assert "流程设计" in html and "上传流程包" in html and 'href="/designer"' in html

    def test_process_key_redirects_to_its_latest_version(self, login):
        answer = login("sun").get(f"/designer/processes/{KEY}")
        assert answer.status_code == 302
        assert answer.headers["Location"].endswith(f"/processes/{KEY}/versions/1")
        assert login("sun").get("/designer/processes/nope").status_code == 404


class TestUpload:
    def test_an_error_is_reported_with_file_line_element_and_the_marked_diagram(self, eng, login):
        answer = login("sun").upload(reminder_bundle("PT2H"))
        assert answer.status_code == 422
        html = answer.get_data(as_text=True)
        page = text_of(html)
        assert "Not deployed: 1 error(s) to fix." in page
        assert "expense_approval.bpmn" in page and "line 44" in page
        assert "TimerEventDefinition_remind" in page and 'quote the ISO 8601 literal (write "PT2H")' in page
        # the diagram draws the uploaded file and marks the timer event (not its definition)
        assert 'data-errors="remind"' in html and "designer-diagram" in html
        assert "&lt;bpmn:timeDuration&gt;PT2H&lt;/bpmn:timeDuration&gt;" in html
        # ... and the modeler can open it with the bundle's forms
        assert 'action="/designer/modeler"' in html
        assert html.count('name="companion_name"') == 2 and 'value="expense_claim.json"' in html
        assert eng.repository.latest(KEY).version == 1

    def test_a_valid_bundle_is_deployed_as_the_next_version(self, eng, login):
        sun = login("sun")
        answer = sun.upload(reminder_bundle('"PT2H"'))
        assert answer.status_code == 302
        assert answer.headers["Location"].endswith(f"/designer/processes/{KEY}/versions/2")
        page = text_of(sun.html(answer.headers["Location"]))
        assert "费用报销 Expense claim deployed as version 2." in page
        latest = eng.repository.latest(KEY)
        assert (latest.version, latest.deployed_by) == (2, "sun")
        assert eng.history.query().action("deployed").actor("sun").count() == 2  # v1 (fixture) and v2

    def test_identical_content_deploys_nothing(self, eng, login):
        sun = login("sun")
        answer = sun.upload(process_bundle(KEY))
        assert answer.status_code == 302
        assert "identical to version 1" in text_of(sun.html(answer.headers["Location"]))
        assert eng.repository.latest(KEY).version == 1

    def test_validate_only_deploys_nothing(self, eng, login):
        answer = login("sun").upload(reminder_bundle('"PT2H"'), action="validate")
        assert answer.status_code == 200
        assert "No errors: the bundle can be deployed." in answer.get_data(as_text=True)
        assert eng.repository.latest(KEY).version == 1

    def test_missing_form_and_no_files(self, login):
        files = process_bundle(KEY)
        del files["approval_decision.json"]
        sun = login("sun")
        page = text_of(sun.upload(files).get_data(as_text=True))
        assert "manager_approval" in page and "approval_decision.json" in page
        assert "is not in this bundle" in page
        answer = sun.post("/designer/upload", {}, content_type="multipart/form-data")
        assert answer.status_code == 422 and "Choose the bundle" in answer.get_data(as_text=True)

    def test_without_csrf_token_nothing_is_deployed(self, app, eng, login):
        sun = login("sun")
        from io import BytesIO

        data = {"files": [(BytesIO(c), n) for n, c in reminder_bundle('"PT2H"').items()]}
        answer = sun.client.post("/designer/upload", data=data, content_type="multipart/form-data")
        assert answer.status_code == 400
        assert eng.repository.latest(KEY).version == 1


class TestVersionPages:
    @pytest.fixture
    def two_versions(self, eng, org):
        eng.repository.deploy(reminder_bundle('"PT2H"'), deployed_by="sun")

    def test_version_page_lists_files_forms_and_compares(self, login, two_versions):
        html = login("sun").html(f"/designer/processes/{KEY}/versions/2")
        for name in ("approval_decision.json", "expense_approval.bpmn", "expense_claim.json"):
            assert f'href="/api/v1/process-definitions/{KEY}/versions/2/files/{name}"' in html
        assert f'href="/api/v1/process-definitions/{KEY}/versions/2/xml"' in html
        assert f'href="/designer/processes/{KEY}/versions/2/forms/manager_approval"' in html
        assert f'href="/designer/processes/{KEY}/versions/2/modeler"' in html
        assert '<option value="1" selected>' in html  # compare with the previous version by default

    def test_diff_page_shows_added_and_changed_elements(self, login, two_versions):
        page = text_of(login("sun").html(f"/designer/processes/{KEY}/diff?from=1&to=2"))
        assert "Changes from version 1 to version 2" in page
        assert "Added (3)" in page and "提醒 Remind boundaryEvent remind" in page
        assert 'Timer timeDuration: "PT2H"' in page and "Attached to manager_approval" in page
        assert "Removed" not in page
        assert "Changed" not in page  # lane membership lists grow, but no existing element changed
        back = text_of(login("sun").html(f"/designer/processes/{KEY}/diff?from=2&to=1"))
        assert "Removed (3)" in back and "Added" not in back

    def test_diff_page_refuses_nonsense(self, login, two_versions):
        sun = login("sun")
        assert sun.get(f"/designer/processes/{KEY}/diff?from=1&to=7").status_code == 404
        assert sun.get(f"/designer/processes/{KEY}/diff?from=x&to=2").status_code == 422

    def test_form_preview_renders_the_inbox_form_disabled(self, login, two_versions):
        html = login("sun").html(f"/designer/processes/{KEY}/versions/1/forms/submit")
        assert '<fieldset disabled class="preview-fieldset">' in html
        assert 'id="f-amount"' in html and 'id="f-category"' in html and 'id="f-reason"' in html
        assert "It cannot be submitted here." in html
        gateway = login("sun").get(f"/designer/processes/{KEY}/versions/1/forms/approved_gateway")
        assert gateway.status_code == 404


class TestModelerSave:
    def test_modeler_pages_embed_the_xml_and_the_bundle_files(self, login):
        sun = login("sun")
        html = sun.html(f"/designer/processes/{KEY}/versions/1/modeler")
        assert 'id="modeler-xml"' in html and "manager_approval" in html
        assert 'data-filename="expense_approval.bpmn"' in html
        assert html.count('class="modeler-companion"') == 2
        assert 'id="camunda-moddle"' in html and "http://camunda.org/schema/1.0/bpmn" in html
        new = sun.html("/designer/modeler")
        assert 'id="new_process"' in unescape(new) and "vendor/bpmn-modeler.production.min.js" in new

    def save(self, session: Session, files: dict[str, bytes]):
        return modeler_save(session, files, BPMN)

    def test_refused_save_names_the_shape_then_a_fixed_one_deploys_version_2(self, eng, login):
        sun = login("sun")
        answer = self.save(sun, reminder_bundle("PT2H"))
        assert answer.status_code == 422
        body = answer.get_json()
        assert body["deployed"] is False and body["filename"] == BPMN
        [problem] = body["problems"]
        assert problem["element_id"] == "TimerEventDefinition_remind" and problem["shape_id"] == "remind"
        assert problem["line"] == 44 and problem["file"] == BPMN
        answer = self.save(sun, reminder_bundle('"PT2H"'))
        assert answer.status_code == 201
        assert answer.get_json()["version"] == 2 and answer.get_json()["key"] == KEY
        assert answer.get_json()["url"] == f"/designer/processes/{KEY}/versions/2"
        assert eng.repository.diff(KEY, 1, 2).files == ()  # the forms came back byte for byte
        again = self.save(sun, reminder_bundle('"PT2H"'))
        assert again.status_code == 200 and again.get_json()["deployed"] is False

    def test_a_new_process_is_named_after_its_id(self, eng, login):
        sun = login("sun")
        xml = (Path(__file__).resolve().parents[2] / "web/templates/designer/new_process.bpmn").read_text()
        xml = xml.replace("new_process", "leave_request").replace(
            '<bpmn:startEvent id="start" name="Start" />',
            '<bpmn:startEvent id="start" name="Start" /><bpmn:endEvent id="end" />'
            '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end" />',
        )
        answer = sun.post("/designer/modeler/deploy", {"xml": xml, "filename": ""})
        assert answer.status_code == 201, answer.get_json()
        assert eng.repository.process_file("leave_request", 1)[0] == "leave_request.bpmn"

    def test_posted_xml_opens_in_the_modeler(self, login):
        html = (
            login("sun")
            .post(
                "/designer/modeler",
                {"xml": "<x>PT2H</x>", "filename": BPMN, "companion_name": "a.json", "companion": "e30="},
            )
            .get_data(as_text=True)
        )
        assert "&lt;x&gt;PT2H&lt;/x&gt;" in html and 'data-filename="a.json" value="e30="' in html
        assert "not a BPMN 2.0 document" in unescape(html)  # its problems are listed (and marked) at once
        refused = login("sun").post(
            "/designer/modeler/deploy",
            {"xml": "<x/>", "companion_name": "a.json", "companion": "not base64!"},
        )
        assert refused.status_code == 422

    def test_without_the_vendored_modeler_the_page_says_so(self, app, login, tmp_path):
        app.static_folder = str(tmp_path)
        sun = login("sun")
        html = sun.html("/designer/modeler")
        assert "The modeler is not installed on this server" in html and "bpmn-modeler" not in html
        version = sun.html(f"/designer/processes/{KEY}/versions/1")
        assert "/modeler" not in version and "designer-diagram" not in version


class TestModelerScriptsAndCalls:
    """What the side panel edits on script tasks and call activities, refused or deployed at save."""

    def test_a_script_the_sandbox_refuses_names_its_element(self, eng, login):
        files = process_bundle("payment_audit")
        eng.repository.deploy(files, deployed_by="sun")
        script = '<bpmn:script>returned_comment = "无法登记 Cannot record: " + problem</bpmn:script>'
        xml = files["payment_audit.bpmn"].decode()
        assert xml.count(script) == 1
        hostile = script.replace("<bpmn:script>", "<bpmn:script>import os\n")
        hostile_files = {**files, "payment_audit.bpmn": xml.replace(script, hostile).encode()}
        answer = modeler_save(login("sun"), hostile_files, "payment_audit.bpmn")
        assert answer.status_code == 422
        [problem] = answer.get_json()["problems"]
        assert (problem["element_id"], problem["shape_id"]) == ("note_problem", "note_problem")
        assert "refused by the script sandbox" in problem["message"] and "import" in problem["message"]
        assert eng.repository.latest("payment_audit").version == 1

    def test_modeler_page_offers_the_processes_of_the_bundle(self, eng, login):
        eng.repository.deploy(call_bundle("purchase_payment"), deployed_by="sun")
        html = login("sun").html(f"/designer/processes/{CALLER}/versions/1/modeler")
        offered = re.search(r'id="modeler-bundle-processes">(.*?)</script>', html).group(1)
        assert json.loads(offered) == [
            {"id": "purchase_payment", "name": "采购付款 Purchase payment", "file": "purchase_payment.bpmn"}
        ]
        assert "Called process (process key)" in html

    def test_a_call_outside_the_bundle_is_refused_with_a_clear_message(self, eng, login):
        sun = login("sun")
        for called in ("no_such_process", KEY):  # unknown, and deployed but in another bundle
            answer = modeler_save(sun, call_bundle(called), f"{CALLER}.bpmn")
            assert answer.status_code == 422
            [problem] = answer.get_json()["problems"]
            assert (problem["element_id"], problem["shape_id"]) == ("pay", "pay")
            assert problem["message"].startswith(
                f"called process {called!r} is not in this bundle (its processes: purchase, "
                "purchase_payment); a call activity can only call a process deployed with it"
            )
        answer = modeler_save(sun, call_bundle("purchase_payment"), f"{CALLER}.bpmn")
        assert answer.status_code == 201, answer.get_json()
        assert b'calledElement="purchase_payment"' in eng.repository.process_file(CALLER, 1)[1]


class TestApi:
    def test_diff_and_xml(self, app, eng, org):
        eng.repository.deploy(reminder_bundle('"PT2H"'), deployed_by="sun")
        client = app.test_client()
        headers = bearer(client, "sun")
        body = client.get(f"/api/v1/process-definitions/{KEY}/diff?from=1&to=2", headers=headers).get_json()
        assert (body["key"], body["from_version"], body["to_version"], body["empty"]) == (KEY, 1, 2, False)
        added = {e["id"]: e for e in body["added"]}
        assert set(added) == {"remind", "reminded_end", "Flow_remind"}
        assert added["remind"]["properties"]["timer"] == 'timeDuration: "PT2H"'
        assert added["Flow_remind"]["properties"] == {"source": "remind", "target": "reminded_end"}
        assert body["removed"] == [] and body["changed"] == [] and body["files"] == []
        xml = client.get(f"/api/v1/process-definitions/{KEY}/versions/2/xml", headers=headers)
        assert xml.status_code == 200 and xml.mimetype == "application/xml"
        assert xml.data == reminder_bundle('"PT2H"')[BPMN]
        assert "expense_approval.bpmn" in xml.headers["Content-Disposition"]

    def test_errors(self, app, org):
        client = app.test_client()
        headers = bearer(client, "admin")
        base = "/api/v1/process-definitions"
        assert client.get(f"{base}/{KEY}/diff?from=1&to=3", headers=headers).status_code == 404
        answer = client.get(f"{base}/{KEY}/diff?from=1", headers=headers)
        assert answer.status_code == 422 and answer.get_json()["error"]["code"] == "invalid"
        assert client.get(f"{base}/{KEY}/versions/9/xml", headers=headers).status_code == 404
        assert client.get(f"{base}/nope/versions/1/xml", headers=headers).status_code == 404

    def test_described_in_openapi(self, client):
        paths = client.get("/api/v1/openapi.json").get_json()["paths"]
        assert "/process-definitions/{key}/diff" in paths
        xml = paths["/process-definitions/{key}/versions/{version}/xml"]["get"]
        assert {(p["name"], p["in"]) for p in xml["parameters"]} == {("key", "path"), ("version", "path")}


class TestAccess:
    PAGES = (
        "/designer",
        "/designer/upload",
        f"/designer/processes/{KEY}/versions/1",
        f"/designer/processes/{KEY}/diff?from=1&to=1",
        f"/designer/processes/{KEY}/versions/1/forms/submit",
        f"/designer/processes/{KEY}/versions/1/modeler",
        "/designer/modeler",
    )

    @pytest.mark.parametrize("username", ["li", "wang"])
    def test_employees_and_managers_get_403(self, app, eng, login, username):
        person = login(username)
        for path in self.PAGES:
            assert person.get(path).status_code == 403, path
        assert person.upload(reminder_bundle('"PT2H"')).status_code == 403
        assert person.post("/designer/modeler/deploy", {"xml": "<x/>"}).status_code == 403
        assert 'href="/designer"' not in person.html("/inbox")
        client = app.test_client()
        headers = bearer(client, username)
        base = f"/api/v1/process-definitions/{KEY}"
        assert client.get(f"{base}/diff?from=1&to=1", headers=headers).status_code == 403
        assert client.get(f"{base}/versions/1/xml", headers=headers).status_code == 403
        assert eng.repository.latest(KEY).version == 1

    def test_admins_and_designers_see_the_pages(self, login):
        for username in ("sun", "admin"):
            person = login(username)
            for path in self.PAGES:
                assert person.get(path).status_code == 200, (username, path)

    def test_anonymous_is_sent_to_log_in(self, app, org):
        answer = app.test_client().get("/designer")
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]
