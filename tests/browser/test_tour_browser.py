"""The README's ten-minute tour (docs/tour.md), walked in real headless Chromium on the demo data that
``baton demo`` loads (the command itself runs), with the accounts and the password it prints.

Each person has their own browser (as a newcomer would use a private window per account), logs in on
the login page and only clicks the pages' own links and buttons. Every step is photographed at desktop
(1280 x 800) and phone (375 x 812) width into test-artifacts/screenshots/tour-*.png, and must fit the
phone without horizontal scrolling; with ``BATON_TOUR_DOCS=1`` the pictures are also written to
docs/tour/, which docs/tour.md shows.

SQLite only, like every browser test (tests/browser/conftest.py serves one SQLite file): the pages
and the engine calls behind them are the same on PostgreSQL, where tests/integration/ already drives
each process over HTTP; walking the tour twice would double the longest test for no new coverage.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from samples.company import DEMO_PASSWORD, PEOPLE, VENDOR
from tests.browser.conftest import Tab
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
DOCS = ROOT / "docs" / "tour"
WRITE_DOCS = os.environ.get("BATON_TOUR_DOCS") == "1"
SCROLL_TO_TOP = "e => window.scrollBy(0, e.getBoundingClientRect().top - 16)"


@pytest.fixture(scope="module")
def sqlite_template(sqlite_template, tmp_path_factory) -> Path:
    """The migrated database after ``baton demo --no-serve`` (the command itself, as ``make run`` runs
    it); loaded once, live_server serves a fresh copy of it to each test."""
    from click.testing import CliRunner

    from engine.db import create_db_engine
    from web.cli import main

    path = tmp_path_factory.mktemp("tour") / "demo.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    env = {"DATABASE_URL": url, "SECRET_KEY": "tour", "BATON_SCHEDULER": "off"}
    result = CliRunner().invoke(main, ["demo", "--no-serve"], env=env)
    assert result.exit_code == 0, result.output
    for line in ("sample APR-2026-0004 (approval): running", "sample TCK-2026-0001 (ticket): running",
                 "sample CR-2026-0001 (contract_review): running", f"password {DEMO_PASSWORD}"):  # fmt: skip
        assert line in result.output
    for person in PEOPLE:  # the accounts, with their roles, on every start
        assert re.search(rf"^  {person.username} +{person.role} ", result.output, re.MULTILINE)
    checkpoint = create_db_engine(url)
    with checkpoint.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # the copies take the file alone
    checkpoint.dispose()
    return path


class Person(Tab):
    """One demo user's own browser window (logged in with the demo password unless ``username`` is None),
    with the JavaScript errors it met."""

    def __init__(self, browser, server, shots: Path, username: str | None) -> None:
        super().__init__(browser, server.url, shots, DESKTOP)
        self.viewer = _has_viewer(server)
        if username:
            self.log_in(username, DEMO_PASSWORD)

    def click(self, locator, url: str) -> None:
        """Follow a link or press a button, and wait for the page it leads to (a regex or a path)."""
        locator.click()
        self.page.wait_for_url(re.compile(url) if url.startswith("^") else self.base + url)

    def nav(self, label: str, path: str) -> None:
        self.click(self.page.locator("header nav a", has_text=label), path)

    def open_item(self, business_key: str, title: str) -> None:
        """Open the list item (inbox, done, started, vendor links) of that request with that title."""
        item = self.page.locator("li.task-item", has_text=business_key).filter(has_text=title)
        self.click(item.locator("a.title").first, r"^.*/tasks/[0-9a-f-]+$")

    def submit(self, then: str = "/inbox") -> None:
        self.click(self.page.locator(".baton-form button[type=submit]"), then)

    def diagram(self) -> None:
        if self.viewer:
            self.page.locator("#diagram.diagram-ready").wait_for()

    def shot(self, name: str, focus: str | None = None) -> None:
        """Photograph the screen at desktop and at phone width; the phone must not scroll sideways."""
        page = self.page
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            page.evaluate("window.scrollTo(0, 0)")
            if focus:  # its top just below the top of the screen
                page.locator(focus).first.evaluate(SCROLL_TO_TOP)
            scroll = page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= viewport["width"], f"{name}: {scroll}px wide at {width} width"
            path = self.shots / f"tour-{name}-{width}.png"
            page.screenshot(path=str(path), animations="disabled", caret="hide")
            if WRITE_DOCS:
                DOCS.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, DOCS / f"{name}-{width}.png")
        page.set_viewport_size(DESKTOP)


def _has_viewer(server) -> bool:
    return Path(server.app.static_folder, "vendor", "bpmn-navigated-viewer.production.min.js").is_file()


def test_a_expense_request_approved_by_manager_and_finance(browser, live_server, screenshots):
    zhangwei = Person(browser, live_server, screenshots, "zhangwei")
    page = zhangwei.page
    assert page.locator("li.task-item", has_text="APR-2026-0004").count() == 1
    zhangwei.shot("a1-inbox")

    zhangwei.open_item("APR-2026-0004", "填写申请")
    page.select_option("#f-request_type", "expense")
    page.fill("#f-title", "客户拜访差旅 Client visit travel")
    page.fill("#f-amount", "6800")
    page.fill("#f-reason", "广州客户拜访：机票和酒店 Flights and hotel to visit the Guangzhou client")
    zhangwei.shot("a2-request", focus=".baton-form")
    zhangwei.submit()
    assert page.locator(".notice").is_visible()
    assert page.locator("li.task-item", has_text="APR-2026-0004").count() == 0

    wangqiang = Person(browser, live_server, screenshots, "wangqiang")
    wangqiang.open_item("APR-2026-0004", "主管审批")
    assert "6800" in wangqiang.page.locator("dl.summary").inner_text()
    wangqiang.page.select_option("#f-decision", "approve")
    wangqiang.page.fill("#f-comment", "同意 OK")
    wangqiang.shot("a3-manager", focus=".baton-form")
    wangqiang.submit()

    chenjing = Person(browser, live_server, screenshots, "chenjing")
    chenjing.open_item("APR-2026-0004", "财务负责人审批")
    chenjing.page.select_option("#f-decision", "approve")
    chenjing.submit()
    chenjing.open_item("APR-2026-0004", "财务复核")
    chenjing.page.select_option("#f-decision", "approve")
    chenjing.shot("a4-finance-check", focus=".baton-form")
    chenjing.submit()

    zhangwei.nav("已办", "/inbox/done")
    assert page.locator("li.task-item", has_text="APR-2026-0004").count() == 1
    zhangwei.nav("我发起的", "/inbox/started")
    started = page.locator("li.task-item", has_text="APR-2026-0004")
    assert "已完成" in started.inner_text()
    zhangwei.shot("a5-started")

    wangqiang.nav("流程实例", "/manage/instances")
    item = wangqiang.page.locator("ul.instance-list li", has_text="APR-2026-0004")
    wangqiang.click(item.locator("a.title"), r"^.*/manage/instances/[0-9a-f-]+$")
    instance = wangqiang.page
    assert "已完成" in instance.locator(".subtitle").inner_text()
    assert "财务复核" in instance.locator(".steps").inner_text()
    history = instance.locator("#audit").inner_text()
    assert all(name in history for name in ("张伟", "王强", "陈静"))
    wangqiang.diagram()
    if wangqiang.viewer:
        assert instance.locator('#diagram [data-element-id="payment_check"].done-step').count() == 1
    wangqiang.shot("a6-instance")
    for person in (zhangwei, wangqiang, chenjing):
        person.close()


def test_b_ticket_escalated_to_the_vendor_and_closed_with_a_rating(browser, live_server, screenshots):
    zhouxin = Person(browser, live_server, screenshots, "zhouxin")
    page = zhouxin.page
    zhouxin.open_item("TCK-2026-0001", "处理工单")
    page.select_option("#f-action", "escalate_vendor")
    page.fill("#f-vendor", VENDOR)
    page.fill("#f-vendor_brief", "请派工程师检修三楼打印机 Please send an engineer for the 3rd-floor printer")
    zhouxin.shot("b1-handle", focus=".baton-form")
    zhouxin.submit()

    zhouxin.nav("厂商链接", "/vendor/links")
    zhouxin.click(page.locator("a.button", has_text="生成厂商链接"), r"^.*/vendor/tasks/[0-9a-f-]+/link$")
    assert page.input_value("#vendor") == VENDOR
    zhouxin.click(page.locator("form.stack button[type=submit]"), r"^.*/vendor/tasks/[0-9a-f-]+/link$")
    link = page.input_value("#vendor-url")
    zhouxin.shot("b2-vendor-link")

    vendor = Person(browser, live_server, screenshots, None)
    vendor.page.goto(link)
    shown = vendor.page.locator("main").inner_text()
    assert "打印机卡纸" in shown and "T000001" in shown
    assert "上海明远科技" not in shown and "021-5555" not in shown  # the customer stays ours
    vendor.page.select_option("#f-vendor_result", "fixed")
    vendor.page.fill("#f-vendor_report", "已更换搓纸轮 Replaced the pick-up roller")
    vendor.shot("b3-vendor-answers", focus=".baton-form")
    vendor.click(vendor.page.locator(".baton-form button[type=submit]"), r"^.*/vendor/")
    assert vendor.page.locator(".notice").is_visible()

    zhouxin.nav("待办", "/inbox")
    zhouxin.open_item("TCK-2026-0001", "处理工单")
    assert "搓纸轮" in page.locator("dl.summary").inner_text()
    page.select_option("#f-action", "resolve")
    page.fill("#f-resolution", "厂商已更换搓纸轮 The vendor replaced the pick-up roller")
    zhouxin.submit()
    zhouxin.open_item("TCK-2026-0001", "与客户确认")
    page.select_option("#f-fixed", "yes")
    page.select_option("#f-satisfaction", "5")
    zhouxin.shot("b4-confirm", focus=".baton-form")
    zhouxin.submit()

    zhouxin.nav("客户", "/crm/customers")
    zhouxin.click(page.locator("nav.scopes a", has_text="工单"), r"^.*/crm/tickets")
    zhouxin.click(page.locator("a.title", has_text="T000001"), r"^.*/crm/tickets/\d+$")
    assert "已关闭" in page.locator(".subtitle").inner_text()
    assert "★★★★★" in page.locator("main").inner_text()
    zhouxin.shot("b5-crm-ticket")
    for person in (zhouxin, vendor):
        person.close()


def test_c_contract_drafted_reviewed_and_frozen(browser, live_server, screenshots):
    zhangwei = Person(browser, live_server, screenshots, "zhangwei")
    page = zhangwei.page
    zhangwei.nav("客户", "/crm/customers")
    zhangwei.click(page.locator("a.title", has_text="上海明远科技"), r"^.*/crm/customers/\d+$")
    customer_id = page.url.rsplit("/", 1)[1]
    zhangwei.shot("c1-customer")

    zhangwei.nav("待办", "/inbox")
    zhangwei.open_item("CR-2026-0001", "起草合同")
    page.fill("#f-customer_id", customer_id)
    page.fill("#f-title", "二期监控扩容 Monitoring, phase 2")
    page.fill("#f-amount", "120000")
    page.fill("#f-items_text", "数据采集网关 Gateway, 4, 30000")
    page.fill("#f-plan_text", "2027-01-15, 60000, 预付款 Advance\n2027-03-31, 60000, 验收款 On acceptance")
    zhangwei.shot("c2-draft", focus=".baton-form")
    zhangwei.submit()

    for username, step in (("lihua", "法务审核"), ("chenjing", "财务审核"), ("zhaoming", "总经理审批")):
        reviewer = Person(browser, live_server, screenshots, username)
        reviewer.open_item("CR-2026-0001", step)
        assert "120000" in reviewer.page.locator(".baton-form").inner_text().replace(",", "")
        reviewer.page.select_option("#f-decision", "approve")
        if username == "zhaoming":
            reviewer.shot("c3-general-manager", focus=".baton-form")
        reviewer.submit()
        reviewer.close()

    zhangwei.nav("客户", "/crm/customers")
    zhangwei.click(page.locator("nav.scopes a", has_text="合同"), r"^.*/crm/contracts")
    zhangwei.click(page.locator("a.title", has_text="二期监控扩容"), r"^.*/crm/contracts/\d+$")
    assert "已批准" in page.locator(".subtitle").inner_text()
    assert "不能再修改" in page.locator(".subtitle").inner_text()  # frozen
    instances = page.locator("#instances-title").locator("xpath=..")
    assert "已完成" in instances.inner_text()
    zhangwei.shot("c4-contract-approved")
    zhangwei.close()
