"""The employee's pages in real headless Chromium: log in, open the inbox and a task, submit an invalid
form (errors next to the fields, input kept), then a valid one, and find it under done; every page
fits a 375 x 812 phone screen without horizontal scrolling. Screenshots: test-artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import DESKTOP, PASSWORD, PHONE, Tab
from tests.conftest import process_bundle

pytestmark = pytest.mark.slow


@pytest.fixture
def company(live_server):
    """li raises expense claims; wang approves them (group 'managers'); both read Chinese."""
    eng = live_server.engine
    eng.identity.create_user(
        "li", PASSWORD, role="employee", display_name="李四", groups=["employee"], create_missing=True
    )
    eng.identity.create_user(
        "wang", PASSWORD, role="manager", display_name="王经理", groups=["managers"], create_missing=True
    )
    eng.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
    return eng


def raise_claim(eng, key: str, *, fill: bool = True):
    instance = eng.runtime.start(
        "expense_approval", business_key=key, started_by="li", variables={"initiator": "li"}
    )
    task = eng.tasks.query().instance(instance.id).open().first()
    if fill:
        data = {
            "amount": 1288.5,
            "category": "travel",
            "reason": "上海客户拜访差旅费 travel to the Shanghai client",
        }
        eng.tasks.complete(task.id, actor="li", data=data)
        task = eng.tasks.query().instance(instance.id).open().first()
    return task


class Phone(Tab):
    """A tab on a phone unless told otherwise; console errors count too."""

    console_errors = True

    def __init__(self, browser, base: str, shots: Path, viewport=PHONE) -> None:
        super().__init__(browser, base, shots, viewport)


def test_walk_from_login_to_done_on_a_phone(browser, live_server, company, screenshots):
    task = raise_claim(company, "EXP-2024-0001", fill=False)
    li = Phone(browser, live_server.url, screenshots)
    page = li.page
    li.goto("/login")
    assert page.locator("h1").inner_text() == "登录"
    li.check("01-login")

    li.log_in("li")
    item = page.locator("a.title", has_text="填写报销单")
    assert item.is_visible()
    li.check("02-inbox")

    item.click()
    page.wait_for_url(f"{live_server.url}/tasks/{task.id}")
    assert page.locator("#f-amount").is_visible()
    li.check("03-task-form")

    # Invalid: the amount must be above zero (the browser lets -5 through; the server refuses it).
    page.fill("#f-amount", "-5")
    page.select_option("#f-category", "meals")
    page.fill("#f-reason", "客户午餐 lunch with the client")
    page.click(".baton-form button[type=submit]")
    error = page.locator(".field.has-error", has=page.locator("#f-amount")).locator("#f-amount-error")
    error.wait_for()
    assert error.is_visible() and error.inner_text().strip()
    assert page.locator(".form-errors").is_visible()
    assert page.input_value("#f-amount") == "-5"  # what was typed is kept
    assert page.input_value("#f-category") == "meals"
    assert page.input_value("#f-reason") == "客户午餐 lunch with the client"
    li.check("04-task-errors")

    page.fill("#f-amount", "86.5")
    page.click(".baton-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/inbox")
    assert "已提交" in page.locator(".notice").inner_text()
    assert page.locator("a.title", has_text="填写报销单").count() == 0
    li.check("05-inbox-after-submit")

    page.click("nav a[href='/inbox/done']")
    page.wait_for_url(f"{live_server.url}/inbox/done")
    assert page.locator(f"a.title[href='/tasks/{task.id}']").is_visible()
    li.check("06-done")

    li.goto("/inbox/started")
    assert page.locator("text=主管审批 Manager approval").first.is_visible()
    li.check("07-started")
    li.close()


def test_manager_pages_fit_a_phone_bulk_approve_and_diagram(browser, live_server, company, screenshots):
    tasks = [raise_claim(company, f"EXP-2024-{n:04d}") for n in range(1, 4)]
    wang = Phone(browser, live_server.url, screenshots)
    page = wang.page
    wang.log_in("wang")
    wang.goto("/inbox?sla=on_track&sort=priority")  # the filter box opens when a filter is set
    assert page.locator("input[name=task]").count() == 3
    if hasattr(company.identity, "save_filter"):  # saved filters, once the identity service keeps them
        page.fill(".save-filter input[name=name]", "按优先级")
        page.click(".save-filter button[type=submit]")
        page.wait_for_url(f"{live_server.url}/inbox?sla=on_track&sort=priority")
        assert page.locator(".chips .chip a", has_text="按优先级").is_visible()
    wang.check("08-inbox-manager-filters")

    wang.goto(f"/tasks/{tasks[0].id}")
    assert page.locator(".steps .step-this").inner_text().startswith("主管审批")
    viewer = Path(live_server.app.static_folder, "vendor", "bpmn-navigated-viewer.production.min.js")
    if viewer.is_file():
        page.locator("#diagram.diagram-ready").wait_for()
        marked = page.locator('#diagram [data-element-id="manager_approval"].current-step')
        assert marked.count() == 1
    wang.check("09-task-approval")

    wang.goto("/inbox")
    page.check(f"input[name=task][value='{tasks[1].id}']")
    page.check(f"input[name=task][value='{tasks[2].id}']")
    page.click(".bulk-bar button[type=submit]")
    page.wait_for_url(f"{live_server.url}/inbox/bulk")
    assert page.locator(".outcome-ok").count() == 2
    wang.check("10-bulk-result")
    for task in tasks[1:]:
        assert company.tasks.get(task.id).state == "completed"

    wang.goto("/inbox")
    page.click("header .lang button[value=en]")
    page.wait_for_url(f"{live_server.url}/inbox")
    assert page.locator("h1").inner_text().startswith("To do")
    wang.check("11-inbox-english")
    wang.close()

    desk = Phone(browser, live_server.url, screenshots, viewport=DESKTOP)
    desk.log_in("wang")
    desk.goto(f"/tasks/{tasks[0].id}")
    if viewer.is_file():
        desk.page.locator("#diagram.diagram-ready").wait_for()
    desk.check("12-task-desktop")
    desk.close()
