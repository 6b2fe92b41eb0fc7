"""The customers' request form in real headless Chromium on a 375 x 812 phone, without an account: a
request without a way to reach the customer comes back with the message next to the fields and the
input kept, a complete one shows the ticket number, the language switch turns the page English, and
the form works with JavaScript switched off. No page scrolls sideways. Screenshots: support-*.png in
test-artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import PHONE, Tab
from tests.conftest import process_bundle

pytestmark = pytest.mark.slow


class Customer(Tab):
    prefix = "support-"
    console_errors = True


@pytest.fixture
def tickets(live_server):
    eng = live_server.engine
    eng.repository.deploy(process_bundle("ticket"), deployed_by="designer")
    return eng


def fill(page, **fields: str) -> None:
    for name, value in fields.items():
        page.fill(f"#f-{name}", value)


def test_a_customer_sends_a_request_from_a_phone(browser, live_server, tickets, screenshots):
    customer = Customer(browser, live_server.url, screenshots, PHONE)
    page = customer.page
    customer.goto("/support/new")
    assert page.locator("h1").inner_text() == "提交工单"
    assert page.locator("#f-priority").input_value() == "normal"
    trap = page.locator("#f-website").bounding_box()  # the honeypot is for bots: off the screen
    assert trap["x"] + trap["width"] <= 0
    customer.check("01-form")

    # No e-mail and no phone: the browser lets it through, the server asks for one of them.
    fill(page, contact_name="王小明", customer_company="杭州远望物流", subject="发票开错了")
    fill(page, description="十一月的发票抬头写错了，请重开。")
    page.select_option("#f-ticket_type", "complaint")
    page.click(".baton-form button[type=submit]")
    page.locator("#f-customer_email-error").wait_for()
    assert "至少填写电子邮箱或电话号码之一" in page.locator("#form-errors").inner_text()
    assert page.locator("#f-contact_name").input_value() == "王小明"  # the input is kept
    assert page.locator("#f-ticket_type").input_value() == "complaint"
    customer.check("02-refused")

    fill(page, customer_phone="0571-8888 0101", customer_email="wang.xm@yuanwang.example")
    page.click(".baton-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/support/done")
    number = page.locator("#ticket-number").inner_text()
    assert re.fullmatch(r"T\d{6}", number)
    assert "客服人员会尽快" in page.locator("main").inner_text()
    customer.check("03-received")

    instances = tickets.runtime.query().definition_key("ticket").list()
    assert len(instances) == 1
    waiting = tickets.tasks.query().instance(instances[0].id).open().list()
    assert [(t.element_id, t.assignee, t.candidate_groups) for t in waiting] == [
        ("handle", None, ("agents",))
    ]
    assert waiting[0].due_at is not None
    customer.close()


def test_the_page_in_english_and_without_javascript(browser, live_server, tickets, screenshots):
    customer = Customer(browser, live_server.url, screenshots, PHONE)
    customer.goto("/support/new")
    customer.page.click("header .lang button[value=en]")
    customer.page.wait_for_url(f"{live_server.url}/support/new")
    assert customer.page.locator("h1").inner_text() == "Submit a request"
    customer.check("04-english")
    customer.close()

    context = browser.new_context(viewport=PHONE, locale="en-US", java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}/support/new")
    page.fill("#f-contact_name", "Ann Lee")
    page.fill("#f-customer_email", "ann@example.org")
    page.select_option("#f-ticket_type", "consultation")
    page.select_option("#f-priority", "low")
    page.fill("#f-subject", "Opening hours")
    page.fill("#f-description", "Are you open on public holidays?")
    page.click(".baton-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/support/done")
    assert "Thank you: we received your request" in page.locator("h1").inner_text()
    page.screenshot(path=str(screenshots / "support-05-received-without-javascript.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    context.close()
