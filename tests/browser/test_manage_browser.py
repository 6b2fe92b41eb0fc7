"""A manager tracks and moves an instance in real headless Chromium: finds it by business key, sees
the active step highlighted on the diagram, moves it to another step, and the employees' inboxes
follow; the pages fit a 375 px phone. Screenshots: test-artifacts/screenshots/manage-*.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import PASSWORD, PHONE
from tests.browser.conftest import Tab as BrowserTab
from tests.conftest import process_bundle

pytestmark = pytest.mark.slow


@pytest.fixture
def company(live_server):
    """销售部: wang manages it; li raises expense claims; zhao approves them (group 'managers')."""
    eng = live_server.engine
    eng.identity.create_department("销售部")
    eng.identity.create_user(
        "wang", PASSWORD, role="manager", display_name="王经理", department="销售部", groups=["managers"],
        create_missing=True,
    )  # fmt: skip
    eng.identity.create_user("li", PASSWORD, role="employee", display_name="李四", department="销售部")
    eng.identity.create_user("zhao", PASSWORD, role="employee", display_name="赵六", groups=["managers"])
    eng.identity.set_department_manager("销售部", "wang")
    eng.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
    return eng


def raise_claim(eng, key: str, *, fill: bool):
    instance = eng.runtime.start(
        "expense_approval", business_key=key, started_by="li", variables={"initiator": "li"}
    )
    if fill:
        task = eng.tasks.query().instance(instance.id).open().first()
        eng.tasks.complete(
            task.id, actor="li", data={"amount": 99, "category": "meals", "reason": "午餐 lunch"}
        )
    return instance


class Tab(BrowserTab):
    """One person's browser tab; screenshots manage-*.png."""

    prefix = "manage-"

    def inbox_titles(self) -> list[str]:
        self.goto("/inbox")
        return self.page.locator("ul.task-list a.title").all_inner_texts()


def test_find_by_business_key_see_the_step_move_it_and_the_inboxes_follow(
    browser, live_server, company, screenshots
):
    raise_claim(company, "EXP-0001", fill=True)
    target = raise_claim(company, "EXP-0002", fill=False)  # waits at li's "fill in the claim"
    viewer = Path(
        live_server.app.static_folder, "vendor", "bpmn-navigated-viewer.production.min.js"
    ).is_file()

    li = Tab(browser, live_server.url, screenshots, PHONE)
    li.log_in("li")
    assert any("填写报销单" in t for t in li.inbox_titles())
    zhao = Tab(browser, live_server.url, screenshots, PHONE)
    zhao.log_in("zhao")
    assert sum("主管审批" in t for t in zhao.inbox_titles()) == 1  # EXP-0001 only

    wang = Tab(browser, live_server.url, screenshots)
    page = wang.page
    wang.log_in("wang")
    page.click("nav a[href='/manage/instances']")
    page.wait_for_url(f"{live_server.url}/manage/instances")
    assert page.locator("ul.instance-list li").count() == 2
    page.click(".filters-box summary")
    page.fill("input[name=business_key]", "EXP-0002")
    page.click("#instance-filters button[type=submit]")
    page.wait_for_url(f"{live_server.url}/manage/instances?business_key=EXP-0002")
    assert page.locator("ul.instance-list li").count() == 1
    wang.check("01-list-by-business-key")

    page.click("ul.instance-list a.title")
    page.wait_for_url(f"{live_server.url}/manage/instances/{target.id}")
    assert page.locator(".steps .step-current").inner_text().startswith("填写报销单")
    if viewer:
        page.locator("#diagram.diagram-ready").wait_for()
        assert page.locator('#diagram [data-element-id="submit"].current-step').count() == 1
        assert page.locator('#diagram [data-element-id="start"].done-step').count() == 1
        assert page.locator('#diagram [data-element-id="Flow_1"].taken-flow').count() == 1
    wang.check("02-instance-at-submit")

    page.select_option("#move-target", "manager_approval")
    page.fill("#move-reason", "收据已补 receipt attached")
    page.click("#move-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/manage/instances/{target.id}")
    assert page.locator(".notice").is_visible()
    assert page.locator(".steps .step-current").inner_text().startswith("主管审批")
    if viewer:
        page.locator("#diagram.diagram-ready").wait_for()
        assert page.locator('#diagram [data-element-id="manager_approval"].current-step').count() == 1
        assert page.locator('#diagram [data-element-id="submit"].current-step').count() == 0
    assert page.locator("#audit tr.audit-instance_moved").count() == 1
    wang.check("03-instance-moved")

    assert not any("填写报销单" in t for t in li.inbox_titles())  # gone from li's inbox
    li.check("04-employee-inbox-after-move")
    assert sum("主管审批" in t for t in zhao.inbox_titles()) == 2  # the new step appeared
    zhao.check("05-approver-inbox-after-move")

    phone = Tab(browser, live_server.url, screenshots, PHONE)
    phone.log_in("wang")
    phone.goto("/manage/instances?business_key=EXP-0002")
    phone.check("06-list-phone")
    phone.goto(f"/manage/instances/{target.id}")
    if viewer:
        phone.page.locator("#diagram.diagram-ready").wait_for()
    phone.check("07-instance-phone")
    phone.goto("/manage/migrations?process=expense_approval")
    phone.check("08-migrations-phone")
    for tab in (phone, wang, li, zhao):
        tab.close()
