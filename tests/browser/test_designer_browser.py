"""The process designer in real headless Chromium: a designer uploads a bundle whose reminder timer is an
unquoted ``PT2H``, sees the timer marked on the diagram, opens the file in the modeler, saves once
(refused, the element marked again), fixes the expression in the side panel and saves through the
page's button: version 2 is deployed. The side panel also edits a user task's people, a script task's
Python (a script the sandbox refuses is named on the page) and a call activity's called process (one
outside the bundle is refused). The list and upload pages fit a 375 px phone screen.
Screenshots: test-artifacts/screenshots/designer-*.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import DESKTOP, PASSWORD, PHONE
from tests.browser.conftest import Tab as BrowserTab
from tests.conftest import process_bundle
from tests.integration.test_designer import BPMN, CALLER, KEY, call_bundle, reminder_bundle

pytestmark = pytest.mark.slow


@pytest.fixture
def designer(live_server):
    eng = live_server.engine
    eng.identity.create_user("sun", PASSWORD, role="designer", display_name="孙设计")
    eng.repository.deploy(process_bundle(KEY), deployed_by="sun")
    return eng


@pytest.fixture
def modeler_files(live_server):
    static = Path(live_server.app.static_folder, "vendor")
    missing = [
        n
        for n in (
            "bpmn-modeler.production.min.js",
            "bpmn-navigated-viewer.production.min.js",
            "camunda-moddle.json",
        )
        if not (static / n).is_file()
    ]
    if missing:
        pytest.skip(f"bpmn-js is not vendored (run make install with npm): {missing}")


class Tab(BrowserTab):
    """One browser tab of a logged-in designer; console errors count too; screenshots designer-*.png."""

    prefix = "designer-"
    console_errors = True


def open_modeler(browser, live_server, screenshots, viewport, key: str, element: str) -> Tab:
    """A designer's tab on version 1 of ``key`` in the modeler, with ``element`` selected."""
    tab = Tab(browser, live_server.url, screenshots, viewport)
    tab.log_in("sun")
    tab.goto(f"/designer/processes/{key}/versions/1/modeler")
    tab.page.locator("#modeler.modeler-ready").wait_for()
    tab.page.click(f'#modeler-canvas [data-element-id="{element}"]')
    return tab


def test_upload_error_marked_then_fixed_in_the_modeler(
    browser, live_server, designer, modeler_files, screenshots, tmp_path
):
    faulty = tmp_path / "upload"
    faulty.mkdir()
    for name, content in reminder_bundle("PT2H").items():
        (faulty / name).write_bytes(content)

    phone = Tab(browser, live_server.url, screenshots, PHONE)
    page = phone.page
    phone.log_in("sun")
    page.click("nav a[href='/designer']")
    page.wait_for_url(f"{live_server.url}/designer")
    assert page.locator("h1").inner_text() == "流程设计"
    assert page.locator(".version-row").count() == 1
    phone.check("01-list-phone")

    page.click("a[href='/designer/upload']")
    page.set_input_files("#files", sorted(str(f) for f in faulty.iterdir()))
    page.click("button[name=action][value=deploy]")
    page.locator(".designer-diagram.diagram-ready").wait_for()
    assert "TimerEventDefinition_remind" in page.locator(".report").inner_text()
    marked = page.locator('.designer-diagram [data-element-id="remind"].designer-error')
    assert marked.count() == 1
    phone.check("02-upload-error-phone")
    assert designer.repository.latest(KEY).version == 1
    phone.close()

    desk = Tab(browser, live_server.url, screenshots, DESKTOP)
    page = desk.page
    desk.log_in("sun")
    desk.goto("/designer/upload")
    page.set_input_files("#files", sorted(str(f) for f in faulty.iterdir()))
    page.click("button[name=action][value=deploy]")
    page.locator(".designer-diagram.diagram-ready").wait_for()
    desk.check("03-upload-error-desktop")

    page.click("form.open-modeler button[type=submit]")
    page.locator("#modeler.modeler-ready").wait_for()
    canvas_mark = page.locator('#modeler-canvas [data-element-id="remind"].designer-error')
    assert canvas_mark.count() == 1  # the problems of the opened file are marked straight away
    desk.check("04-modeler-opened")

    # Saving unchanged is refused and marks the element again.
    page.click("#modeler-save")
    page.locator("#modeler-status.error").wait_for()
    assert canvas_mark.count() == 1
    assert "TimerEventDefinition_remind" in page.locator("#modeler-problems").inner_text()

    # Pick the timer from the problem list; fix its expression in the side panel.
    page.locator("#modeler-problems button").first.click()
    assert page.locator("#mp-timerKind").input_value() == "timeDuration"
    assert page.locator("#mp-timerExpression").input_value() == "PT2H"
    page.fill("#mp-timerExpression", '"PT2H"')
    page.press("#mp-timerExpression", "Enter")
    page.locator("#mp-name").fill("提醒主管 Remind the manager")
    page.locator("#mp-name").press("Tab")
    desk.check("05-modeler-fixed")

    page.click("#modeler-save")
    page.locator("#modeler-status.ok").wait_for()
    assert "第 2 版" in page.locator("#modeler-status").inner_text()
    assert canvas_mark.count() == 0
    desk.check("06-modeler-deployed")

    latest = designer.repository.latest(KEY)
    assert (latest.version, latest.deployed_by) == (2, "sun")
    name, content = designer.repository.process_file(KEY, 2)
    assert name == BPMN and b'"PT2H"' in content and "提醒主管 Remind the manager".encode() in content
    assert set(designer.repository.files(latest.id)) == set(reminder_bundle("PT2H"))
    assert designer.repository.diff(KEY, 1, 2).files == ()  # forms carried through the pages unchanged

    page.click("a.modeler-version-link")
    page.wait_for_url(f"{live_server.url}/designer/processes/{KEY}/versions/2")
    page.locator(".designer-diagram.diagram-ready").wait_for()
    page.click(".compare-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/designer/processes/{KEY}/diff?from=1&to=2")
    assert "提醒主管 Remind the manager" in page.locator(".diff-added").inner_text()
    desk.check("07-diff")
    desk.close()


def test_side_panel_edits_a_user_task_and_the_process_key(
    browser, live_server, designer, modeler_files, screenshots
):
    desk = open_modeler(browser, live_server, screenshots, DESKTOP, KEY, "manager_approval")
    page = desk.page
    assert page.locator("#mp-formKey").input_value() == "approval_decision.json"
    assert page.locator("#mp-candidateGroups").input_value() == "managers"
    page.fill("#mp-candidateGroups", "managers,gm")
    page.press("#mp-candidateGroups", "Enter")
    page.fill("#mp-dueDate", "P1D")
    page.press("#mp-dueDate", "Enter")
    desk.check("08-modeler-user-task")
    page.click("#modeler-save")
    page.locator("#modeler-status.ok").wait_for()
    diff = designer.repository.diff(KEY, 1, 2)
    [change] = diff.changed
    assert {c.field: (c.before, c.after) for c in change.changes} == {
        "candidate_groups": ("managers", "managers, gm"),
        "due_date": ("P2D", "P1D"),
    }
    desk.close()

    phone = Tab(browser, live_server.url, screenshots, PHONE)
    phone.log_in("sun")
    phone.goto(f"/designer/processes/{KEY}/versions/2")
    phone.page.locator(".designer-diagram.diagram-ready").wait_for()
    phone.check("10-version-phone")
    phone.goto(f"/designer/processes/{KEY}/diff?from=1&to=2")
    assert "managers, gm" in phone.page.locator(".diff-changed").inner_text()
    phone.check("11-diff-phone")
    phone.goto(f"/designer/processes/{KEY}/versions/2/forms/submit")
    assert phone.page.locator(".baton-form button[type=submit]").is_disabled()
    assert phone.page.locator("#f-amount").is_visible()
    phone.check("12-form-preview-phone")
    phone.goto("/designer/modeler")
    phone.page.locator("#modeler.modeler-ready").wait_for()
    phone.page.fill("#mp-processKey", "1 bad key")
    phone.page.press("#mp-processKey", "Enter")
    assert phone.page.locator("#mp-processKey-error").is_visible()
    phone.check("09-modeler-new-phone")
    phone.close()


AUDIT = "payment_audit"
NOTE_SCRIPT = 'returned_comment = "无法登记 Cannot record: " + problem'


@pytest.fixture
def audit(designer):
    designer.repository.deploy(process_bundle(AUDIT), deployed_by="sun")
    return designer


def test_side_panel_edits_a_script_task(browser, live_server, audit, modeler_files, screenshots):
    desk = open_modeler(browser, live_server, screenshots, DESKTOP, AUDIT, "note_problem")
    page = desk.page
    script = page.locator("#mp-script")
    assert script.evaluate("e => e.tagName") == "TEXTAREA"
    assert "monospace" in script.evaluate("e => getComputedStyle(e).fontFamily")
    assert script.input_value() == NOTE_SCRIPT
    edited = 'reason = problem.strip()\nreturned_comment = "无法登记 Cannot record: " + reason\n'
    script.fill(edited)
    script.press("Tab")  # the panel applies an edit when the field is left
    desk.check("13-modeler-script")
    page.click("#modeler-save")
    page.locator("#modeler-status.ok").wait_for()
    assert "第 2 版" in page.locator("#modeler-status").inner_text()

    answer = page.request.get(f"{live_server.url}/api/v1/process-definitions/{AUDIT}/versions/2/xml")
    assert answer.status == 200
    xml = answer.text()
    assert "reason = problem.strip()" in xml and '"无法登记 Cannot record: " + reason' in xml
    assert NOTE_SCRIPT not in xml
    [change] = audit.repository.diff(AUDIT, 1, 2).changed
    assert change.id == "note_problem" and [c.field for c in change.changes] == ["script"]
    desk.close()


def test_a_script_the_sandbox_refuses_is_named_on_the_page(
    browser, live_server, audit, modeler_files, screenshots
):
    phone = open_modeler(browser, live_server, screenshots, PHONE, AUDIT, "note_problem")
    page = phone.page
    page.fill("#mp-script", "import os\n" + NOTE_SCRIPT)
    page.locator("#mp-script").press("Tab")
    page.click("#modeler-save")
    page.locator("#modeler-status.error").wait_for()
    problems = page.locator("#modeler-problems").inner_text()
    assert "note_problem" in problems and "说明问题 Note the problem" in problems
    assert "refused by the script sandbox" in problems and "import" in problems
    assert page.locator('#modeler-canvas [data-element-id="note_problem"].designer-error').count() == 1
    phone.check("14-modeler-script-refused-phone")
    assert audit.repository.latest(AUDIT).version == 1
    phone.close()


def test_side_panel_edits_a_call_activity(browser, live_server, designer, modeler_files, screenshots):
    designer.repository.deploy(call_bundle("purchase_payment"), deployed_by="sun")
    phone = open_modeler(browser, live_server, screenshots, PHONE, CALLER, "pay")
    page = phone.page
    called = page.locator("#mp-calledElement")
    assert called.input_value() == "purchase_payment"
    offered = page.locator("#modeler-processes option").evaluate_all("os => os.map(o => o.value)")
    assert offered == ["purchase_payment"]
    assert page.locator("#mp-calledElement-error").is_hidden()

    called.fill(KEY)  # deployed, but in another bundle
    called.press("Enter")
    assert page.locator("#mp-calledElement-error").is_visible()
    assert KEY in page.locator("#mp-calledElement-error").inner_text()
    phone.check("15-modeler-call-phone")
    page.click("#modeler-save")
    page.locator("#modeler-status.error").wait_for()
    problems = page.locator("#modeler-problems").inner_text()
    assert f"called process '{KEY}' is not in this bundle" in problems and "付款 Pay" in problems
    assert designer.repository.latest(CALLER).version == 1

    page.locator("#mp-calledElement").fill("purchase_payment")
    page.locator("#mp-calledElement").press("Enter")
    page.click("#modeler-save")
    page.locator("#modeler-status.ok").wait_for()
    assert "第 2 版" in page.locator("#modeler-status").inner_text()  # the modeler rewrote the XML
    assert b'calledElement="purchase_payment"' in designer.repository.process_file(CALLER, 2)[1]
    phone.close()
