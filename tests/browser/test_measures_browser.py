"""The measures dashboard in real headless Chromium: a manager opens it from the navigation, the
charts and the heat map on the diagram are drawn, and the page fits a desktop and a 375 px phone
without horizontal scrolling. Screenshots: test-artifacts/screenshots/measures-*.png."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.context import utcnow
from tests.browser.conftest import DESKTOP, PASSWORD, PHONE, Tab
from tests.conftest import Clock, process_bundle

pytestmark = pytest.mark.slow


@pytest.fixture
def history(live_server):
    """Two weeks of expense claims by li (销售部, managed by wang): approved, rejected, some open."""
    eng = live_server.engine
    identity = eng.identity
    identity.create_user(
        "wang", PASSWORD, role="manager", display_name="王经理", department="销售部", create_missing=True
    )
    identity.create_user("li", PASSWORD, role="employee", display_name="李四", department="销售部")
    identity.set_department_manager("销售部", "wang")
    eng.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
    clock, rng = Clock(), random.Random(7)
    eng.context.config.clock = clock
    now = datetime.now(UTC)

    def step(instance_id: str, who: str, data: dict, hours: float) -> bool:
        clock.now += timedelta(hours=hours)
        if clock.now > now:
            return False
        task = eng.tasks.query().instance(instance_id).open().first()
        eng.tasks.complete(task.id, actor=who, data=data)
        return True

    for n in range(16):
        clock.now = now - timedelta(days=14) + timedelta(hours=n * 21 + rng.uniform(0, 5))
        started = eng.runtime.start(
            "expense_approval", business_key=f"EXP-{n:03d}", started_by="li", variables={"initiator": "li"}
        )
        decision = "reject" if n % 5 == 0 else "approve"
        if not step(started.id, "li", {"amount": 100 + n, "reason": "差旅 travel"}, rng.uniform(0.2, 2)):
            continue
        if step(started.id, "wang", {"decision": decision}, rng.uniform(6, 72)) and decision == "approve":
            step(started.id, "qian", {"decision": "approve"}, rng.uniform(2, 30))
    eng.context.config.clock = utcnow
    return eng


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_dashboard_with_heat_map(browser, live_server, history, screenshots, viewport):
    tab = Tab(browser, live_server.url, screenshots, viewport)
    page = tab.page
    tab.log_in("wang")
    page.click("nav a[href='/measures/']")
    page.click("a.title[href='/measures/expense_approval']")
    page.wait_for_url(f"{live_server.url}/measures/expense_approval")
    assert page.locator("h1").inner_text() == "费用报销 Expense claim"
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.line-chart > title").text_content() == "每天发起与结束的流程数"
    assert page.locator(".tile dd").first.inner_text() == "16"
    viewer = Path(live_server.app.static_folder, "vendor", "bpmn-navigated-viewer.production.min.js")
    if viewer.is_file():
        page.locator("#heatmap.diagram-ready").wait_for()
        hot = page.locator('#heatmap [data-element-id="manager_approval"].heat-marker')
        assert hot.count() == 1
        assert page.locator("#heatmap .heat-badge").count() == 3
    name = "measures-dashboard-" + ("desktop" if viewport is DESKTOP else "phone")
    tab.check(name)
    tab.close()
